"""Blocking DNS for libraries that cannot await (pyspf, dkimpy), over ironpost's resolver.

Owns :class:`BlockingDns`: called from a worker thread, it runs the lookup on the event
loop's :class:`~ironpost.dns.types.Resolver` (same nameservers, same cache, same typed
results) and waits for it. The library's own DNS code is never used, so tests and
deployments point every lookup at ``dns_nameservers``.

Invariant: never call it on the event loop's own thread (that would deadlock); it
raises ``RuntimeError`` instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ironpost.dns.types import MxRecord, Resolver, Result, Status

T = TypeVar("T")


class BlockingDns:
    def __init__(
        self, resolver: Resolver, loop: asyncio.AbstractEventLoop, timeout: float = 10.0
    ) -> None:
        self.resolver = resolver
        self.loop = loop
        self.timeout = timeout
        self._loop_thread: int | None = None
        loop.call_soon_threadsafe(self._note_thread)

    def _note_thread(self) -> None:
        self._loop_thread = threading.get_ident()

    def _run(self, coro: Coroutine[Any, Any, Result[T]]) -> Result[T]:
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise RuntimeError("BlockingDns used on the event loop thread")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(self.timeout)
        except (concurrent.futures.TimeoutError, TimeoutError):
            future.cancel()
            return Result(Status.TEMPFAIL, error="timeout")

    def txt(self, name: str) -> Result[str]:
        return self._run(self.resolver.txt(name))

    def a(self, name: str) -> Result[str]:
        return self._run(self.resolver.a(name))

    def aaaa(self, name: str) -> Result[str]:
        return self._run(self.resolver.aaaa(name))

    def mx(self, name: str) -> Result[MxRecord]:
        return self._run(self.resolver.mx(name))

    def ptr(self, address: str) -> Result[str]:
        return self._run(self.resolver.ptr(address))
