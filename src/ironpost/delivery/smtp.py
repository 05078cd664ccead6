"""The SMTP and LMTP delivery agents: :class:`SmtpTransport` implements ``Transport``.

Owns what happens per delivery: route selection (``mx.py``), trying MX hosts in order,
one transaction per session driven through the sans-I/O
:class:`~ironpost.protocol.client.ClientConnection`, the per-recipient results, and a small
cache of idle sessions. Opening a session (connect, EHLO, STARTTLS under the destination's
``tls_policy``) is ``smtp_session.py``'s.

Invariants:

* ``deliver()`` returns exactly one result per recipient and never raises for a delivery
  problem; a remote 2xx is SENT, 4xx DEFERRED, 5xx BOUNCED, and every local or network
  problem (timeout, lost connection, malformed reply, DNS TEMPFAIL) is DEFERRED;
* the next MX is tried after a connection failure, a 4xx/421 (or, with
  smtp_skip_5xx_greeting, 5xx) greeting, a TLS failure, a lost session, and for
  recipients that got a 4xx; ``destination_failed`` is set when no address accepted a
  TCP connection at all;
* TLS ``may`` falls back to plaintext (on a new connection) only when the handshake
  fails; mandatory levels never send mail in the clear;
* a failed AUTH (``smtp_auth``) defers the recipients (4.7.x; 5xx bounces only with
  ``smtp_sasl_auth_soft_bounce = no``) and the next MX is tried; a cached session was
  authenticated when it was opened, and is only reused for the same next hop;
* an idle session is cached per next hop for ``connection_cache_time`` seconds and reused
  with an RSET pipelined ahead of the next MAIL; a cached session that turns out dead is
  replaced by a fresh connection without counting as a failure. ``close()`` QUITs all.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from ironpost.delivery.mx import (
    Destination,
    NexthopError,
    RouteOptions,
    parse_nexthop,
    select_routes,
)
from ironpost.delivery.smtp_session import (
    Connector,
    Session,
    SessionFailure,
    SmtpOptions,
    StaleSession,
    dsn_of,
    format_reply,
    soften,
)
from ironpost.delivery.tls_policy import TlsPolicies
from ironpost.delivery.transport import DeliveryRequest, Disposition, RecipientResult
from ironpost.protocol.client import Command, Phase, Replied, Transaction, TxRecipient
from ironpost.protocol.errors import RemoteProtocolError
from ironpost.protocol.replies import Reply

if TYPE_CHECKING:
    from ironpost.dns.types import Resolver
    from ironpost.maillog import MailLog

__all__ = ["SmtpOptions", "SmtpTransport", "format_reply"]


@dataclass(slots=True)
class _Attempt:
    """Per-recipient results of one delivery, filled across MX hosts."""

    request: DeliveryRequest
    results: dict[int, RecipientResult] = field(default_factory=dict)

    def open(self) -> list[int]:
        """Positions (in request.recipients) still without a final result."""
        return [
            i
            for i, r in enumerate(self.request.recipients)
            if (res := self.results.get(r.index)) is None or res.disposition is Disposition.DEFERRED
        ]

    def set(
        self,
        pos: int,
        disposition: Disposition,
        dsn: str,
        reply: str,
        where: _Where | None = None,
        *,
        xfer_delay: float = 0.0,
        destination_failed: bool = False,
    ) -> None:
        index = self.request.recipients[pos].index
        w = where or _NOWHERE
        self.results[index] = RecipientResult(
            index=index,
            disposition=disposition,
            dsn=dsn,
            reply=reply,
            relay=w.relay,
            conn_delay=w.conn_delay,
            xfer_delay=xfer_delay,
            remote_dsn=w.remote_dsn,
            destination_failed=destination_failed,
        )


class _Where(NamedTuple):
    """Where a result came from: Postfix's relay=, and the connection setup time."""

    relay: str
    remote_dsn: bool = True
    conn_delay: float = 0.0


_NOWHERE = _Where("none")


class SmtpTransport:
    """``Transport`` for ``smtp:`` (and ``lmtp:`` with ``options.lmtp``) next hops."""

    def __init__(
        self,
        resolver: Resolver,
        options: SmtpOptions,
        *,
        maillog: MailLog | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._resolver = resolver
        self.options = options
        self._maillog = maillog
        self._rng = rng or random.Random()
        self._tls = TlsPolicies(options.tls_level, options.tls_policy_maps)
        ipv4, ipv6 = RouteOptions.protocols(options.inet_protocols)
        self._routing = RouteOptions(
            ipv4=ipv4,
            ipv6=ipv6,
            preference=options.address_preference,
            address_limit=options.mx_address_limit,
            my_names=options.my_names,
            my_addresses=options.my_addresses,
        )
        self._cache: dict[str, list[Session]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._connector = Connector(options, self._log)

    @property
    def connections(self) -> int:
        """Sessions opened so far (for tests and statistics)."""
        return self._connector.connections

    # --- public API ---------------------------------------------------------------

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        attempt = _Attempt(request)
        try:
            await self._deliver(attempt)
        except Exception as exc:  # a bug here must never lose a recipient's result
            self._log(f"warning: {request.queue_id}: smtp delivery failed: {exc!r}")
        for pos in attempt.open():
            if request.recipients[pos].index not in attempt.results:
                attempt.set(pos, Disposition.DEFERRED, "4.3.0", "mail system error")
        return [attempt.results[r.index] for r in request.recipients]

    async def close(self) -> None:
        sessions = [s for group in self._cache.values() for s in group]
        self._cache.clear()
        await asyncio.gather(*(s.quit() for s in sessions), return_exceptions=True)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # --- delivery -----------------------------------------------------------------

    async def _deliver(self, attempt: _Attempt) -> None:
        request = attempt.request
        start = time.monotonic()
        default_port = 24 if self.options.lmtp else 25
        try:
            dest = parse_nexthop(
                request.nexthop.nexthop, default_port=default_port, lmtp=self.options.lmtp
            )
        except NexthopError:
            self._log(f"warning: {request.queue_id}: bad next hop {request.nexthop}")
            return self._fail_all(
                attempt, Disposition.DEFERRED, "4.3.5", "mail system config error"
            )
        policy = self._tls.for_nexthop(request.nexthop.nexthop, dest.host)
        if policy.unsupported is not None:
            self._log(f"warning: TLS policy level {policy.unsupported!r} is not supported")
            return self._fail_all(
                attempt, Disposition.DEFERRED, "4.7.5", "TLS policy is not supported"
            )
        key = str(request.nexthop)

        # A cached session first: no DNS, no handshakes.
        while (cached := self._take(key)) is not None:
            try:
                await self._transact(cached, attempt, dest, start, reuse=True)
            except StaleSession:
                cached.abort()
                continue
            return

        routes, failure = await select_routes(self._resolver, dest, self._routing, self._rng)
        if failure is not None:
            return self._fail_all(attempt, failure.disposition, failure.dsn, failure.text)

        reached = False
        sessions = 0
        last: SessionFailure | None = None
        limit = self.options.mx_session_limit
        for n, route in enumerate(routes):
            if limit and sessions >= limit:
                break
            plain = False
            while True:
                try:
                    session = await self._connector.open(
                        route, dest, policy, plaintext=plain, nexthop=request.nexthop.nexthop
                    )
                except SessionFailure as f:
                    last = f
                    reached = reached or f.connected
                    if f.retry_plain and not plain:
                        plain = True
                        continue
                    if f.connected:
                        sessions += 1
                    if f.bounce:
                        return self._fail_all(attempt, Disposition.BOUNCED, f.dsn, f.text)
                    break
                reached = True
                sessions += 1
                final = n == len(routes) - 1 or bool(limit and sessions >= limit)
                try:
                    await self._transact(session, attempt, dest, start, reuse=False)
                except StaleSession:  # cannot happen for a fresh session; treat as lost
                    session.abort()
                if not attempt.open() or final:
                    return
                break
        if last is not None:
            # Recipients that a server answered with 4xx keep that answer; the others get
            # the last connection-level failure.
            where = _Where("none", conn_delay=time.monotonic() - start)
            for pos in attempt.open():
                if request.recipients[pos].index not in attempt.results:
                    attempt.set(
                        pos,
                        Disposition.DEFERRED,
                        soften(last.dsn),
                        last.text,
                        where,
                        destination_failed=not reached,
                    )

    def _fail_all(self, attempt: _Attempt, disposition: Disposition, dsn: str, text: str) -> None:
        for pos in attempt.open():
            attempt.set(pos, disposition, dsn, text)

    # --- sessions -----------------------------------------------------------------

    # --- one transaction ------------------------------------------------------------

    async def _transact(
        self, session: Session, attempt: _Attempt, dest: Destination, start: float, *, reuse: bool
    ) -> None:
        """Send the message to the open recipients over ``session``; cache it if healthy."""
        request, conn, peer = attempt.request, session.conn, session.route.peer
        positions = attempt.open()
        env = request.envelope
        tx = Transaction(
            sender=env.sender,
            recipients=tuple(
                TxRecipient(
                    request.recipients[p].spec.address,
                    request.recipients[p].spec.notify,
                    request.recipients[p].spec.orcpt,
                )
                for p in positions
            ),
            size=len(request.content),
            eight_bit=(env.body_type or "").upper() == "8BITMIME",
            smtputf8=env.smtputf8,
            ret=env.ret,
            envid=env.envid,
        )
        caps = conn.capabilities
        assert caps is not None
        where = _Where(session.route.relay, caps.dsn, 0.0 if reuse else time.monotonic() - start)
        xfer_start = time.monotonic()

        def done(i: int, reply: Reply, command: Command | None, text: str | None = None) -> None:
            code = reply.code // 100
            disposition = (
                Disposition.SENT
                if code == 2
                else Disposition.BOUNCED
                if code == 5
                else Disposition.DEFERRED
            )
            if text is None:
                text = format_reply(reply)
                if code != 2 or command is None:
                    text = f"host {peer} said: {text}"
                if code != 2 and command is not None:
                    text += f" (in reply to {command.value} command)"
            dsn = dsn_of(reply) if code != 2 or reply.enhanced else "2.0.0"
            if disposition is Disposition.DEFERRED:
                dsn = soften(dsn) if dsn[0] != "4" else dsn
            attempt.set(
                positions[i],
                disposition,
                dsn,
                text,
                where,
                xfer_delay=time.monotonic() - xfer_start,
            )

        refusal = conn.refusal(tx)
        if refusal is not None:
            # Postfix's words: "... was not offered by host X", "... size limit N of server X".
            joiner = " " if refusal.enhanced == "5.3.4" else " by host "
            text = f"{refusal.lines[0]}{joiner}{peer}"
            for i in range(len(positions)):
                done(i, refusal, None, text)
            self._put(str(request.nexthop), session)
            return

        answered = False
        finished: set[int] = set()
        mail_failed: Replied | None = None
        try:
            conn.begin(tx, reset_first=reuse)
            await session.flush()
            while True:
                if conn.phase is Phase.RECIPIENTS_DONE:
                    if conn.accepted:
                        conn.send_data()
                    else:
                        conn.rset()
                    await session.flush()
                awaiting = conn.awaiting
                ev = await session.event()
                first = not answered
                if not isinstance(ev, Replied):
                    if reuse and first:
                        raise StaleSession
                    raise session.lost(None, awaiting)
                answered = True
                cmd, reply = ev.command, ev.reply
                if reply.code == 421 or conn.phase is Phase.CLOSED:
                    for i in range(len(positions)):
                        if i not in finished:
                            done(i, reply, cmd)
                    session.abort()
                    return
                if cmd is Command.RSET and reuse and first and reply.code // 100 != 2:
                    raise StaleSession
                if cmd is Command.MAIL and reply.code // 100 != 2:
                    mail_failed = ev
                    for i in range(len(positions)):
                        done(i, reply, cmd)
                        finished.add(i)
                elif cmd is Command.RCPT and mail_failed is None:
                    assert ev.index is not None
                    if reply.code // 100 != 2:
                        done(ev.index, reply, cmd)
                        finished.add(ev.index)
                elif cmd is Command.DATA:
                    if reply.code == 354:
                        if conn.accepted:
                            conn.send_content(request.content)
                        else:
                            conn.abort_content()
                        await session.flush()
                    else:
                        for i in conn.accepted:
                            if i not in finished:
                                done(i, reply, cmd)
                                finished.add(i)
                elif cmd is Command.DOT:
                    targets = [ev.index] if ev.index is not None else list(conn.accepted)
                    for i in targets:
                        if i not in finished:
                            done(i, reply, cmd)
                            finished.add(i)
                if conn.awaiting is None and conn.phase in (Phase.READY, Phase.FAILED):
                    break
            if conn.phase is Phase.FAILED:
                conn.rset()
                await session.flush()
                reply = await session.reply()
                if reply.code // 100 != 2:
                    await session.quit()
                    return
        except SessionFailure as f:
            self._fail_open(attempt, positions, finished, f, where)
            session.abort()
            return
        except (TimeoutError, OSError, RemoteProtocolError) as exc:
            if reuse and not answered and not isinstance(exc, TimeoutError):
                raise StaleSession from None
            lost = session.lost(exc)
            self._fail_open(attempt, positions, finished, lost, where)
            session.abort()
            return
        self._put(str(request.nexthop), session)

    def _fail_open(
        self,
        attempt: _Attempt,
        positions: list[int],
        finished: set[int],
        failure: SessionFailure,
        where: _Where,
    ) -> None:
        for i, pos in enumerate(positions):
            if i not in finished:
                attempt.set(pos, Disposition.DEFERRED, soften(failure.dsn), failure.text, where)

    # --- the connection cache ---------------------------------------------------------

    def _take(self, key: str) -> Session | None:
        group = self._cache.get(key)
        while group:
            session = group.pop()
            if session.idle is not None:
                session.idle.cancel()
                session.idle = None
            if session.reader.at_eof() or session.writer.is_closing():
                session.abort()
                continue
            return session
        return None

    def _put(self, key: str, session: Session) -> None:
        limit = self.options.connection_cache_size
        group = self._cache.setdefault(key, [])
        if (
            self.options.connection_cache_time <= 0
            or len(group) >= limit
            or session.conn.phase is not Phase.READY
        ):
            self._quit_later(session)
            return
        group.append(session)
        loop = asyncio.get_running_loop()
        session.idle = loop.call_later(
            self.options.connection_cache_time, self._expire, key, session
        )

    def _expire(self, key: str, session: Session) -> None:
        group = self._cache.get(key, [])
        if session in group:
            group.remove(session)
            if not group:
                del self._cache[key]
            session.idle = None
            self._quit_later(session)

    def _quit_later(self, session: Session) -> None:
        task = asyncio.get_running_loop().create_task(session.quit())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _log(self, text: str) -> None:
        if self._maillog is not None:
            self._maillog.emit("lmtp" if self.options.lmtp else "smtp", text)
