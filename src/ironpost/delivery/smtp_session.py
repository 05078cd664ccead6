"""SMTP/LMTP client sessions: options, opening a session (connect, greeting, EHLO, STARTTLS
under a :class:`TlsPolicy`, AUTH per ``smtp_auth``), reading replies with timeouts, and the
texts of failures.

Owns :class:`SmtpOptions`, :class:`Session` and :class:`Connector`; the delivery logic
(routes, transactions, the connection cache) is ``smtp.py``'s.

Invariants: every wait has the timeout of the command it waits for; a session that fails
to open raises :class:`SessionFailure` (with Postfix's words and a DSN code), never
anything else; a mandatory TLS level never yields a plaintext session; TLS is 1.2 or
later; the certificate name check of verify/secure is ``tls_policy.name_matches``; AUTH
comes after the last EHLO (after STARTTLS's), and a session whose AUTH failed is never
returned (the mail is not sent unauthenticated to a server we hold credentials for).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ironpost.delivery.mx import Destination, Route
from ironpost.delivery.smtp_auth import Defer, SaslOptions, Skip, decide, failure, lookup_keys
from ironpost.delivery.tls_policy import TlsLevel, TlsPolicy, certificate_names, name_matches
from ironpost.protocol.client import ClientConnection, ClientEvent, Command, Phase, Replied
from ironpost.protocol.errors import RemoteProtocolError
from ironpost.protocol.events import Sentinel
from ironpost.protocol.replies import Reply
from ironpost.server.tls import describe

if TYPE_CHECKING:
    from ironpost.config.settings import Settings
    from ironpost.config.tables import LookupTable

_READ = 65536
_WHILE = {
    Command.GREETING: "receiving the initial server greeting",
    Command.EHLO: "performing the EHLO handshake",
    Command.HELO: "performing the HELO handshake",
    Command.LHLO: "performing the LHLO handshake",
    Command.STARTTLS: "sending STARTTLS",
    Command.AUTH: "performing the AUTH handshake",
    Command.RSET: "sending RSET",
    Command.MAIL: "sending MAIL FROM",
    Command.RCPT: "sending RCPT TO",
    Command.DATA: "sending DATA command",
    Command.DOT: "sending end of data -- message may be sent more than once",
    Command.QUIT: "sending QUIT",
}


@dataclass(frozen=True, slots=True)
class SmtpOptions:
    helo_name: str
    lmtp: bool = False
    connect_timeout: float = 30.0
    helo_timeout: float = 300.0
    mail_timeout: float = 300.0
    rcpt_timeout: float = 300.0
    data_init_timeout: float = 120.0
    data_xfer_timeout: float = 180.0
    data_done_timeout: float = 600.0
    quit_timeout: float = 300.0
    rset_timeout: float = 20.0
    tls_level: str = "may"
    tls_cafile: str = ""
    tls_policy_maps: tuple[LookupTable, ...] = ()
    tls_loglevel: int = 0
    mx_address_limit: int = 5
    mx_session_limit: int = 2
    skip_5xx_greeting: bool = True
    inet_protocols: str = "all"
    address_preference: str = "any"
    bind_address: str = ""
    bind_address6: str = ""
    connection_cache_time: float = 2.0
    # Idle sessions kept per next hop: as many as deliveries may run to it at once
    # (default_destination_concurrency_limit), or reuse is lost under load.
    connection_cache_size: int = 20
    my_names: frozenset[str] = field(default_factory=frozenset)
    my_addresses: frozenset[str] = field(default_factory=frozenset)
    sasl: SaslOptions = field(default_factory=SaslOptions)

    @classmethod
    def from_settings(cls, s: Settings, *, lmtp: bool = False) -> SmtpOptions:
        """The smtp_* parameters (LMTP uses them too, but for lmtp_sasl_*)."""
        names = {s.text("myhostname").lower(), s.text("smtp_helo_name").lower()}
        return cls(
            helo_name=s.text("smtp_helo_name") or s.text("myhostname"),
            lmtp=lmtp,
            connect_timeout=s.seconds("smtp_connect_timeout"),
            helo_timeout=s.seconds("smtp_helo_timeout"),
            mail_timeout=s.seconds("smtp_mail_timeout"),
            rcpt_timeout=s.seconds("smtp_rcpt_timeout"),
            data_init_timeout=s.seconds("smtp_data_init_timeout"),
            data_xfer_timeout=s.seconds("smtp_data_xfer_timeout"),
            data_done_timeout=s.seconds("smtp_data_done_timeout"),
            quit_timeout=s.seconds("smtp_quit_timeout"),
            rset_timeout=s.seconds("smtp_rset_timeout"),
            connection_cache_time=s.seconds("smtp_connection_cache_time_limit"),
            connection_cache_size=max(1, s.integer("default_destination_concurrency_limit")),
            tls_level=s.text("smtp_tls_security_level"),
            tls_cafile=s.text("smtp_tls_CAfile"),
            tls_policy_maps=s.tables("smtp_tls_policy_maps"),
            tls_loglevel=s.integer("smtp_tls_loglevel"),
            mx_address_limit=s.integer("smtp_mx_address_limit"),
            mx_session_limit=s.integer("smtp_mx_session_limit"),
            skip_5xx_greeting=s.boolean("smtp_skip_5xx_greeting"),
            inet_protocols=s.text("inet_protocols"),
            address_preference=s.text("smtp_address_preference"),
            bind_address=s.text("smtp_bind_address"),
            bind_address6=s.text("smtp_bind_address6"),
            my_names=frozenset(n for n in names if n),
            sasl=SaslOptions.from_settings(s, "lmtp" if lmtp else "smtp"),
        )

    def timeout(self, command: Command | None) -> float:
        """The time limit for the reply to ``command`` (Postfix's smtp_*_timeout)."""
        return float(getattr(self, _TIMEOUTS.get(command, "helo_timeout")))


_TIMEOUTS: dict[Command | None, str] = {
    Command.MAIL: "mail_timeout",
    Command.RCPT: "rcpt_timeout",
    Command.DATA: "data_init_timeout",
    Command.DOT: "data_done_timeout",
    Command.RSET: "rset_timeout",
    Command.QUIT: "quit_timeout",
}  # greeting, EHLO/HELO/LHLO, STARTTLS and AUTH: helo_timeout


def format_reply(reply: Reply) -> str:
    """``550 5.1.1 text`` with the lines of a multi-line reply joined by spaces."""
    prefix = f"{reply.enhanced} " if reply.enhanced else ""
    return f"{reply.code} {prefix}{' '.join(line for line in reply.lines if line)}".rstrip()


def dsn_of(reply: Reply) -> str:
    return reply.enhanced or f"{min(max(reply.code // 100, 2), 5)}.0.0"


def soften(dsn: str) -> str:
    return "4" + dsn[1:] if dsn[:1] == "5" else dsn


class SessionFailure(Exception):
    """A session-level failure: the affected recipients get this, then the next MX."""

    def __init__(
        self,
        dsn: str,
        text: str,
        *,
        bounce: bool = False,
        retry_plain: bool = False,
        connected: bool = True,
    ) -> None:
        super().__init__(text)
        self.dsn = dsn
        self.text = text
        self.bounce = bounce
        self.retry_plain = retry_plain
        self.connected = connected


class StaleSession(Exception):
    """A cached session died before answering anything: use a fresh connection."""


@dataclass(slots=True)
class Session:
    route: Route
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    conn: ClientConnection
    options: SmtpOptions
    tls: str | None = None
    idle: asyncio.TimerHandle | None = None

    async def flush(self) -> None:
        out = self.conn.data_to_send()
        if out:
            self.writer.write(out)
            async with asyncio.timeout(self.options.data_xfer_timeout):
                await self.writer.drain()

    async def event(self) -> ClientEvent | Sentinel:
        """The next event, reading (with the awaited command's timeout) as needed."""
        while True:
            ev = self.conn.next_event()
            if ev is not Sentinel.NEED_DATA:
                return ev
            # Without PIPELINING the machine queues the next RCPT itself: send it first.
            await self.flush()
            async with asyncio.timeout(self.options.timeout(self.conn.awaiting)):
                data = await self.reader.read(_READ)
            self.conn.receive_data(data)

    async def quit(self) -> None:
        with contextlib.suppress(Exception):
            if self.conn.phase not in (Phase.CLOSED, Phase.TLS):
                self.conn.quit()
                await self.flush()
                async with asyncio.timeout(min(self.options.quit_timeout, 5.0)):
                    while isinstance(await self.event(), Replied):
                        pass
        self.abort()

    async def reply(self) -> Reply:
        awaiting = self.conn.awaiting
        ev = await self.event()
        if isinstance(ev, Replied):
            if ev.reply.code == 421:
                if ev.command is Command.GREETING:
                    said = f"host {self.route.peer} refused to talk to me: "
                    raise SessionFailure(soften(dsn_of(ev.reply)), said + format_reply(ev.reply))
                raise SessionFailure(
                    soften(dsn_of(ev.reply)),
                    f"host {self.route.peer} said: {format_reply(ev.reply)} "
                    f"(in reply to {ev.command.value} command)",
                )
            return ev.reply
        raise self.lost(None, awaiting)

    def lost(self, exc: BaseException | None, awaiting: Command | None = None) -> SessionFailure:
        awaiting = awaiting or self.conn.awaiting
        during = _WHILE.get(awaiting, "in session") if awaiting else "in session"
        peer = self.route.peer
        if isinstance(exc, TimeoutError):
            return SessionFailure("4.4.2", f"conversation with {peer} timed out while {during}")
        if isinstance(exc, RemoteProtocolError):
            detail = " ".join(exc.reply.lines)
            return SessionFailure(
                "4.5.0", f"host {peer} sent a bad reply ({detail}) while {during}"
            )
        if isinstance(exc, ssl.SSLError):
            return SessionFailure("4.7.5", f"TLS failure with {peer}: {exc.reason or exc}")
        return SessionFailure("4.4.2", f"lost connection with {peer} while {during}")

    def abort(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()


class Connector:
    """Opens READY sessions: connect, greeting, EHLO/HELO/LHLO, STARTTLS per policy."""

    def __init__(self, options: SmtpOptions, log: Callable[[str], None]) -> None:
        self.options = options
        self._log = log
        self._contexts: dict[bool, ssl.SSLContext] = {}
        self.connections = 0  # sessions opened (for tests and statistics)

    async def open(
        self,
        route: Route,
        dest: Destination,
        policy: TlsPolicy,
        *,
        plaintext: bool,
        nexthop: str = "",
    ) -> Session:
        """Connect, read the greeting, EHLO, STARTTLS per policy, AUTH: a READY session.

        ``nexthop`` is the next hop as written (``[smtp.example]:587``): a password-map key.
        """
        o = self.options
        try:
            async with asyncio.timeout(o.connect_timeout):
                if dest.unix is not None:
                    reader, writer = await asyncio.open_unix_connection(dest.unix)
                else:
                    bind = o.bind_address6 if ":" in route.address else o.bind_address
                    reader, writer = await asyncio.open_connection(
                        route.address,
                        route.port,
                        local_addr=(bind, 0) if bind else None,
                        limit=_READ,
                    )
        except TimeoutError:
            raise SessionFailure(
                "4.4.1", f"connect to {route.relay}: Connection timed out", connected=False
            ) from None
        except OSError as exc:
            # asyncio's message names the tuple; Postfix's words are the errno's.
            reason = os.strerror(exc.errno) if exc.errno else str(exc) or "connection failed"
            raise SessionFailure(
                "4.4.1", f"connect to {route.relay}: {reason}", connected=False
            ) from None
        self.connections += 1
        session = Session(route, reader, writer, ClientConnection(o.helo_name, lmtp=o.lmtp), o)
        try:
            await self._handshake(session, dest, policy, plaintext=plaintext)
            await self._authenticate(session, dest, nexthop)
        except SessionFailure:
            await session.quit()
            raise
        except (TimeoutError, OSError, RemoteProtocolError, ssl.SSLError) as exc:
            session.abort()
            raise session.lost(exc) from None
        return session

    async def _handshake(
        self, session: Session, dest: Destination, policy: TlsPolicy, *, plaintext: bool
    ) -> None:
        conn, route = session.conn, session.route
        reply = await session.reply()
        if reply.code // 100 != 2:
            refused = f"host {route.peer} refused to talk to me: {format_reply(reply)}"
            if reply.code >= 500 and not self.options.skip_5xx_greeting:
                raise SessionFailure(dsn_of(reply), refused, bounce=True)
            raise SessionFailure(soften(dsn_of(reply)), refused)
        await self._hello(session)
        caps = conn.capabilities
        assert caps is not None
        if policy.level is TlsLevel.NONE or plaintext or dest.unix is not None:
            return
        if not caps.starttls:
            if policy.mandatory:
                raise SessionFailure(
                    "4.7.4", f"TLS is required, but was not offered by host {route.peer}"
                )
            return
        conn.starttls()
        await session.flush()
        reply = await session.reply()
        if reply.code != 220:
            if policy.mandatory:
                raise SessionFailure(
                    "4.7.5",
                    f"TLS is required, but host {route.peer} refused to start TLS: "
                    f"{format_reply(reply)}",
                )
            return
        await self._start_tls(session, dest, policy)
        conn.tls_established()
        await self._hello(session)

    async def _authenticate(self, session: Session, dest: Destination, nexthop: str) -> None:
        """AUTH when enabled, offered, and we hold credentials for this server (Postfix's
        smtp_sasl_helo_login). Success logs nothing; failure raises SessionFailure."""
        sasl, conn, route = self.options.sasl, session.conn, session.route
        caps = conn.capabilities
        if not sasl.enable or caps is None or not caps.auth:
            return
        decision = decide(
            sasl,
            caps.auth,
            tls=conn.tls_active,
            keys=lookup_keys(route.host, nexthop, dest.host),
            peer=route.peer,
            relay=route.relay,
        )
        if decision.warning:
            self._log(decision.warning)
        if isinstance(decision, Skip):
            return
        if isinstance(decision, Defer):
            raise SessionFailure(decision.dsn, decision.text)
        conn.authenticate(decision.mechanism)
        await session.flush()
        while (reply := await session.reply()).code == 334:
            pass  # the machine queued the answer; session.event() sends it before reading
        if conn.authenticated:
            return
        dsn, text, bounce = failure(
            reply, conn.auth_error, peer=route.peer, soft_bounce=sasl.soft_bounce
        )
        raise SessionFailure(dsn, text, bounce=bounce)

    async def _hello(self, session: Session) -> None:
        conn = session.conn
        conn.hello()
        await session.flush()
        reply = await session.reply()
        if reply.code // 100 == 2:
            return
        if reply.code >= 500 and not conn.lmtp:
            conn.helo()
            await session.flush()
            reply = await session.reply()
            if reply.code // 100 == 2:
                return
        said = f"host {session.route.peer} said: {format_reply(reply)} (in reply to "
        said += f"{'LHLO' if conn.lmtp else 'HELO' if reply.code >= 500 else 'EHLO'} command)"
        raise SessionFailure(dsn_of(reply), said, bounce=reply.code >= 500)

    async def _start_tls(self, session: Session, dest: Destination, policy: TlsPolicy) -> None:
        route = session.route
        sni = None if _is_ip(route.host) else route.host
        try:
            async with asyncio.timeout(self.options.helo_timeout):
                await session.writer.start_tls(self._context(policy.verify), server_hostname=sni)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            session.abort()
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise SessionFailure(
                    "4.7.5", f"Server certificate not trusted for {route.peer}: {reason}"
                ) from None
            if policy.mandatory:
                raise SessionFailure(
                    "4.7.5", f"TLS handshake failed with {route.peer}: {reason}"
                ) from None
            self._log(
                f"warning: TLS handshake failed with {route.relay}: {reason}; trying in clear"
            )
            raise SessionFailure(
                "4.7.5", f"TLS handshake failed with {route.peer}", retry_plain=True
            ) from None
        sslobj = session.writer.get_extra_info("ssl_object")
        trust = "Anonymous"
        if policy.verify:
            names = certificate_names(sslobj.getpeercert() if sslobj else None)
            wanted = policy.names(route.host, dest.host)
            if not any(name_matches(p, n) for p in wanted for n in names):
                session.abort()
                raise SessionFailure(
                    "4.7.5",
                    f"Server certificate not verified: {route.peer} is not {' or '.join(wanted)}",
                )
            trust = "Verified"
        elif sslobj is not None and sslobj.getpeercert(binary_form=True):
            trust = "Untrusted"
        session.tls = describe(sslobj)  # the server's wording, as Postfix logs both
        if self.options.tls_loglevel >= 1:
            self._log(f"{trust} TLS connection established to {route.relay}: {session.tls}")

    def _context(self, verify: bool) -> ssl.SSLContext:
        ctx = self._contexts.get(verify)
        if ctx is None:
            if verify:
                ctx = ssl.create_default_context(cafile=self.options.tls_cafile or None)
                ctx.check_hostname = False  # names are matched per policy (_start_tls)
                ctx.verify_mode = ssl.CERT_REQUIRED
            else:
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE  # opportunistic: any certificate will do
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            self._contexts[verify] = ctx
        return ctx


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
