"""Blocking DNS for libraries that cannot await (pyspf, dkimpy), over ironpost's resolver.

Owns :class:`BlockingDns`: called from a worker thread, it runs the lookup on the event
loop's :class:`~ironpost.dns.types.Resolver` (same nameservers, same cache, same typed
results) and waits for it. The library's own DNS code is never used, so tests and
deployments point every lookup at ``dns_nameservers``. With an
:class:`~ironpost.auth.answers.AnswerCache`, an answer the resolver gave recently is
returned in the calling thread, without the two thread hand-offs of a loop round trip.

Invariant: never call it on the event loop's own thread (that would deadlock); it
raises ``RuntimeError`` instead (also for a cached answer, so misuse shows at once).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ironpost.auth.answers import AnswerCache
from ironpost.dns.types import MxRecord, Resolver, Result, Status

T = TypeVar("T")


class BlockingDns:
    def __init__(
        self,
        resolver: Resolver,
        loop: asyncio.AbstractEventLoop,
        timeout: float = 10.0,
        *,
        cache: AnswerCache | None = None,
    ) -> None:
        self.resolver = resolver
        self.loop = loop
        self.timeout = timeout
        self.cache = cache
        self._loop_thread: int | None = None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._loop_thread = threading.get_ident()  # made on the loop: no callback needed
        else:
            loop.call_soon_threadsafe(self._note_thread)

    def _note_thread(self) -> None:
        self._loop_thread = threading.get_ident()

    def _run(self, coro: Coroutine[Any, Any, Result[T]], timeout: float | None = None) -> Result[T]:
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise RuntimeError("BlockingDns used on the event loop thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except (concurrent.futures.TimeoutError, TimeoutError):
            future.cancel()
            return Result(Status.TEMPFAIL, error="timeout")

    def _ask(
        self,
        qtype: str,
        name: str,
        lookup: Callable[[str], Coroutine[Any, Any, Result[T]]],
        timeout: float | None,
    ) -> Result[T]:
        cache = self.cache
        if cache is None:
            return self._run(lookup(name), timeout)
        hit = cache.get(qtype, name)
        if hit is not None:
            if threading.get_ident() == self._loop_thread:
                raise RuntimeError("BlockingDns used on the event loop thread")
            return hit
        result = self._run(lookup(name), timeout)
        cache.put(qtype, name, result)
        return result

    def txt(self, name: str, timeout: float | None = None) -> Result[str]:
        """TXT records; ``timeout`` (at most this bridge's) bounds a lookup not cached."""
        return self._ask("TXT", name, self.resolver.txt, timeout)

    def a(self, name: str) -> Result[str]:
        return self._ask("A", name, self.resolver.a, None)

    def aaaa(self, name: str) -> Result[str]:
        return self._ask("AAAA", name, self.resolver.aaaa, None)

    def mx(self, name: str) -> Result[MxRecord]:
        return self._ask("MX", name, self.resolver.mx, None)

    def ptr(self, address: str) -> Result[str]:
        return self._ask("PTR", address, self.resolver.ptr, None)
