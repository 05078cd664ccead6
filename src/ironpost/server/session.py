"""One SMTP session: asyncio bytes in, protocol events, policy, queue, replies out.

This is glue. The sans-I/O :mod:`ironpost.protocol` decides framing and grammar,
:mod:`ironpost.policy` decides who may do what, :mod:`ironpost.queue` makes a
message durable. The session owns what joins them:

- replies to pipelined commands are collected and written in one ``write()``;
- a handler that must wait (policy, queue commit, TLS handshake) pauses the
  pipeline, and nothing later is read until its reply is out, so replies stay in
  order;
- ``250 … queued as`` is written only after the store's commit returned;
- timers: ``smtpd_timeout`` between complete commands, a whole-session deadline,
  and ``smtpd_greet_pause`` before the banner for clients outside $mynetworks;
- error accounting: after ``smtpd_soft_error_limit`` errors every error reply is
  delayed, at ``smtpd_hard_error_limit`` the client is dropped with 421.

No exception escapes a callback: an unexpected one becomes ``451 4.3.0`` (or a
421 and close) and a log line, never a dead server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from ironpost.dns.hosts import HostsFile
from ironpost.metrics import registry as metrics
from ironpost.policy.client_names import ClientNames, lookup_client_names
from ironpost.protocol import replies as R
from ironpost.protocol.events import CLOSED, NEED_DATA, PAUSED
from ironpost.protocol.replies import Reply
from ironpost.protocol.server import ServerConnection
from ironpost.server.counters import SessionCounters
from ironpost.server.handlers import CommandHandlers

if TYPE_CHECKING:
    from ironpost.dns.types import Resolver
    from ironpost.server.context import ListenerContext


_HOSTS = HostsFile()


def names_from_hosts(address: str) -> ClientNames | None:
    """The client's name from /etc/hosts, as getnameinfo() finds it before DNS. The file
    maps the name back to the address by construction, so the name counts as verified."""
    names = _HOSTS.names(address)
    return ClientNames(names[0], names[0], "ok", "ok") if names else None


class SmtpSession(asyncio.Protocol, CommandHandlers):
    """An asyncio Protocol: one instance per connection."""

    def __init__(self, ctx: ListenerContext) -> None:
        CommandHandlers.__init__(self, ctx)
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._waiting = False
        self._closing = False
        self._errors = 0
        self._idle: asyncio.TimerHandle | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._greet_timer: asyncio.TimerHandle | None = None
        self._greeting: asyncio.Future[None] | None = None
        self.counters = SessionCounters()

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if peer else "unknown"
        ctx = self.ctx
        limit_reply = ctx.tracker.admit(address, exempt=ctx.mynetworks.contains(address))
        if limit_reply is not None:
            metrics.count_rejection("CONNECT", "connection_limit")
            ctx.maillog.emit(
                "smtpd", f"warning: Connection concurrency limit exceeded: unknown[{address}]"
            )
            transport.write(limit_reply.to_bytes())
            self._closing = True
            transport.close()
            return
        anvil = ctx.anvil
        if (
            anvil is not None
            and not ctx.event_exceptions.contains(address)
            and not anvil.connect(address)
        ):
            ctx.maillog.emit(
                "smtpd",
                f"warning: Connection rate limit exceeded from unknown[{address}]"
                f" for service {ctx.service}",
            )
            ctx.tracker.release(address)
            metrics.count_rejection("CONNECT", "connection_rate_limit")
            reply = Reply(
                421, "4.7.0", f"{ctx.options.hostname} Error: too many connections from {address}"
            )
            transport.write(reply.to_bytes())
            self._closing = True
            transport.close()
            return
        self._tracked: str | None = address
        metrics.connection_opened()
        sock = transport.get_extra_info("sockname")
        self.begin(
            address,
            tls=transport.get_extra_info("ssl_object"),
            port=int(peer[1]) if peer and len(peer) > 1 else 0,
            local=(str(sock[0]), int(sock[1])) if sock else None,
        )
        opts = ctx.options
        self.conn = ServerConnection(self.protocol_options())
        self._deadline = self._loop.call_later(opts.session_deadline, self._on_deadline)
        self._arm_idle()
        pause = opts.greet_pause if not self.policy_ctx.is_mynetworks else 0.0
        resolver = self.policy_ctx.resolver
        if opts.peername_lookup and resolver is not None:
            # The client's name (PTR, then forward-confirmed) is looked up during the
            # greet pause, as Postfix's smtpd does before its banner.
            self._greeting = asyncio.ensure_future(self._names_then_greet(resolver, pause))
            return
        ctx.maillog.emit("smtpd", f"connect from {self.client_label}")
        self._greet_after(pause)

    def _greet_after(self, pause: float) -> None:
        if pause > 0:
            self._greet_timer = self._loop.call_later(pause, self._greet)
        else:
            self._greet()

    async def _names_then_greet(self, resolver: Resolver, pause: float) -> None:
        started = self._loop.time()
        try:
            names = names_from_hosts(self.client_address) or await lookup_client_names(
                resolver,
                self.client_address,
                log_warning=lambda text: self.ctx.maillog.emit("smtpd", f"warning: {text}"),
            )
        except Exception as exc:  # a bug in the lookup must not cost the session
            self.ctx.log_exception("client name lookup", exc)
            names = None
        if self._closing:
            return
        if names is not None:
            self.set_client_names(names)
        self.ctx.maillog.emit("smtpd", f"connect from {self.client_label}")
        self._greet_after(pause - (self._loop.time() - started))

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        # Bytes before the banner are turned into EarlyTalker by the protocol.
        self.conn.receive_data(data)
        self._pump()

    def eof_received(self) -> bool | None:
        if not self._closing:
            self.conn.receive_data(b"")
            self._pump()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        for timer in (self._idle, self._deadline, self._greet_timer):
            if timer is not None:
                timer.cancel()
        if self._greeting is not None:
            self._greeting.cancel()
        tracked = getattr(self, "_tracked", None)
        if tracked is not None:
            self.ctx.tracker.release(tracked)
            metrics.connection_closed(self.ctx.service, self.tls_info is not None)
            self.ctx.maillog.emit(
                "smtpd", f"disconnect from {self.client_label} {self.counters.summary()}"
            )
            self._tracked = None
        self.abort_transaction()
        self._end_exchange()

    # -- the pump -----------------------------------------------------------------

    def _greet(self) -> None:
        self._greet_timer = None
        if self._closing:
            return
        banner = Reply(220, None, self.ctx.options.banner)
        self._out.append(self.conn.send_greeting(banner))
        self._pump()

    def _pump(self) -> None:
        """Process every complete command in the buffer, then write all replies at once."""
        if self._waiting or self._closing:
            return
        conn = self.conn
        progressed = False
        while not self._waiting:
            event = conn.next_event()
            if event is NEED_DATA or event is PAUSED:
                break
            if event is CLOSED:
                self._close()
                return
            progressed = True
            try:
                result = self.handle(event)
            except Exception as exc:  # a bug must not kill the session silently
                self.ctx.log_exception("session handler", exc)
                result = R.LOCAL_ERROR
            if result is None:
                continue
            if not isinstance(result, Reply):
                reply = self._start(result)
                if reply is None:
                    break  # suspended: _continue() picks up from here
                result = reply
            if not self._reply(result):
                return
        if progressed:
            self._arm_idle()
        self._flush()
        if conn.closed and not self._closing:
            self._close()

    # Handlers' coroutines run on this light driver rather than on an asyncio Task:
    # most complete without suspending (policy lookups answered from tables), so the
    # common case costs one coroutine step and no Task, no scheduling round trip.
    # When one does wait (the queue commit), it is resumed from the future's done
    # callback. A coroutine that needs asyncio.current_task() (asyncio.timeout) must
    # wrap that work in its own Task.

    def _start(self, coro: Coroutine[Any, Any, Reply]) -> Reply | None:
        """Run ``coro`` to its first suspension; its reply if it finished, else None."""
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            return cast(Reply, stop.value)
        except Exception as exc:
            self.ctx.log_exception("session handler", exc)
            return R.LOCAL_ERROR
        self._waiting = True
        self._flush()
        self._park(coro, yielded)
        return None

    def _park(self, coro: Coroutine[Any, Any, Reply], yielded: Any) -> None:
        if yielded is None:  # a bare yield: asyncio.sleep(0)
            self._loop.call_soon(self._continue, coro)
            return
        yielded._asyncio_future_blocking = False
        yielded.add_done_callback(lambda _f: self._continue(coro))

    def _continue(self, coro: Coroutine[Any, Any, Reply]) -> None:
        try:
            yielded = coro.send(None)
        except StopIteration as stop:
            reply = cast(Reply, stop.value)
        except Exception as exc:
            self.ctx.log_exception("session task", exc)
            reply = R.LOCAL_ERROR
        else:
            self._park(coro, yielded)
            return
        # Even when the client has gone, the coroutine ran to its end: a commit under
        # way is never abandoned halfway.
        self._waiting = False
        if self._closing:
            return
        if self._reply(reply):
            self._pump()

    def _reply(self, reply: Reply) -> bool:
        """Queue ``reply``; False when the session is over (limit reached or closed)."""
        self._out.append(self.conn.send(reply))
        if reply.code >= 400 and reply.code != 421:
            self._errors += 1
            if self._errors >= self.ctx.options.hard_error_limit:
                self.ctx.maillog.emit(
                    "smtpd", f"too many errors after {self.last_command} from {self.client_label}"
                )
                self._out.append(R.TOO_MANY_ERRORS.to_bytes())
                self._close()
                return False
            if self._errors > self.ctx.options.soft_error_limit:
                # Tarpit: hold every further error reply back by smtpd_error_sleep_time.
                self._waiting = True
                self._flush_later(self.ctx.options.error_sleep)
                return False
        if self.conn.closed:
            self._close()
            return False
        return True

    def _flush_later(self, delay: float) -> None:
        out, self._out = self._out, []

        def later() -> None:
            self._waiting = False
            if self._closing or self._transport is None:
                return
            self._transport.write(b"".join(out))
            self._pump()

        self._loop.call_later(delay, later)

    def _flush(self) -> None:
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out) if len(self._out) > 1 else self._out[0])
        self._out.clear()

    def _close(self) -> None:
        self._flush()
        self._closing = True
        if self._transport is not None:
            self._transport.close()

    # -- timers -------------------------------------------------------------------

    def _arm_idle(self) -> None:
        """Note activity; the single idle timer re-arms itself lazily (no cancel per command)."""
        self._last_activity = self._loop.time()
        if self._idle is None:
            self._idle = self._loop.call_later(self.ctx.options.timeout, self._check_idle)

    def _check_idle(self) -> None:
        remaining = self._last_activity + self.ctx.options.timeout - self._loop.time()
        if remaining > 0:
            self._idle = self._loop.call_later(remaining, self._check_idle)
            return
        self._idle = None
        self._drop(R.TIMEOUT, f"timeout after {self.last_command}")

    def _on_deadline(self) -> None:
        self._drop(R.TIMEOUT, f"session deadline exceeded after {self.last_command}")

    def _drop(self, reply: Reply, why: str) -> None:
        if self._closing:
            return
        self.ctx.maillog.emit("smtpd", f"{why} from {self.client_label}")
        self._out.append(reply.to_bytes())
        self._close()

    # -- STARTTLS -----------------------------------------------------------------

    def _queue_reply_and_start_tls(self, reply: Reply) -> None:
        """Called by the STARTTLS handler: write the 220, then hand the socket to TLS."""
        self._out.append(self.conn.send(reply))
        self._waiting = True
        self._flush()
        asyncio.ensure_future(self._handshake()).add_done_callback(lambda _t: None)

    async def _handshake(self) -> None:
        ctx = self.ctx
        assert ctx.ssl_context is not None and self._transport is not None
        try:
            transport = await self._loop.start_tls(
                self._transport,
                self,
                ctx.ssl_context,
                server_side=True,
                ssl_handshake_timeout=ctx.options.timeout,
            )
        except (TimeoutError, OSError, ConnectionError) as exc:
            ctx.maillog.emit(
                "smtpd", f"SSL_accept error from {self.client_label}: {exc or 'timeout'}"
            )
            self._closing = True
            if self._transport is not None:
                self._transport.close()
            return
        if transport is None:
            self._closing = True
            return
        self._transport = transport
        self.tls_established(transport.get_extra_info("ssl_object"))
        self._waiting = False
        self._pump()
