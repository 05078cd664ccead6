"""What the server does with each protocol event: a table of handlers that return replies.

A handler returns a :class:`Reply` (answered at once), ``None`` (no reply: body
bytes), or an awaitable of a Reply (policy lookups, the queue commit). The session
(:mod:`ironpost.server.session`) owns the I/O; this module owns the decisions of
the smtpd role: stages of policy, the transaction, the Received header, and the
``250 queued as`` that is only ever sent after the commit.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from ironpost.metrics import registry as metrics
from ironpost.policy.client_names import ClientNames
from ironpost.policy.client_names import apply as apply_client_names
from ironpost.policy.engine import Stage, Verdict
from ironpost.protocol import events as ev
from ironpost.protocol import replies as R
from ironpost.protocol.replies import Reply
from ironpost.protocol.session import ServerOptions
from ironpost.queue.ids import new_queue_id
from ironpost.queue.model import ClientInfo, QueueWriteError
from ironpost.routing import ExpansionLimitError
from ironpost.server import tls as tlsmod
from ironpost.server.authn import AUTH_REQUIRED, AuthHandlers
from ironpost.server.cleanup import Origin, prepare
from ironpost.server.received import count_received, received_header
from ironpost.server.transaction import AcceptedRecipient, Transaction

if TYPE_CHECKING:
    from ironpost.policy.engine import Decision
    from ironpost.protocol.server import ServerConnection
    from ironpost.server.context import ListenerContext
    from ironpost.server.counters import SessionCounters

HandlerResult = Reply | Coroutine[Any, Any, Reply] | None


class CommandHandlers(AuthHandlers):
    """Mixin for :class:`~ironpost.server.session.SmtpSession`: per-event decisions."""

    conn: ServerConnection
    counters: SessionCounters

    def __init__(self, ctx: ListenerContext) -> None:
        self.ctx = ctx
        self.tx: Transaction | None = None
        self.helo: str | None = None
        self.esmtp = False
        self.tls_info: str | None = None
        self.last_command = "CONNECT"
        self.client_label = "unknown[unknown]"
        self.client_port = 0
        self.local_address = ""
        self.local_port = 0
        self._rejected_by = ""  # the restriction behind the next _log_reject (metrics)
        self._init_auth()
        self._dispatch: dict[type, Callable[[Any], HandlerResult]] = {
            ev.EarlyTalker: self._on_early_talker,
            ev.Helo: self._on_helo,
            ev.Mail: self._on_mail,
            ev.Rcpt: self._on_rcpt,
            ev.Data: self._on_data,
            ev.MessageData: self._on_message_data,
            ev.MessageEnd: self._on_message_end,
            ev.BdatChunk: self._on_bdat_chunk,
            ev.StartTls: self._on_starttls,
            ev.Rset: self._on_rset,
            ev.Noop: self._on_noop,
            ev.Quit: self._on_quit,
            ev.Vrfy: self._on_vrfy,
            ev.Expn: self._on_vrfy,
            ev.Help: self._on_help,
            ev.Auth: self._on_auth,
            ev.AuthResponse: self._on_auth_response,
            ev.ProtocolError: self._on_protocol_error,
            ev.ConnectionClosed: self._on_closed,
        }

    # -- set-up --------------------------------------------------------------------

    def begin(
        self, address: str, *, tls: Any, port: int = 0, local: tuple[str, int] | None = None
    ) -> None:
        ctx = self.ctx
        self.client_address = address
        self.client_port = port
        if local is not None:
            self.local_address, self.local_port = local
        self.client_name = "unknown"
        self.client_label = f"unknown[{address}]"
        self.policy_ctx = ctx.policy.new_context(
            address, "unknown", log_warning=lambda text: ctx.maillog.emit("smtpd", text)
        )
        self.trusted_newlines = ctx.bare_newline_exclusions.contains(address)
        self.limits_exempt = ctx.event_exceptions.contains(address)
        if tls is not None:
            self.tls_info = tlsmod.describe(tls)

    def set_client_names(self, names: ClientNames) -> None:
        """The client's verified name and PTR name, once looked up (smtpd_peername_lookup)."""
        self.client_name = names.name
        self.client_label = f"{names.name}[{self.client_address}]"
        apply_client_names(self.policy_ctx, names)

    def protocol_options(self) -> ServerOptions:
        opts = self.ctx.options
        tls_possible = self.ctx.ssl_context is not None and opts.tls_level != "none"
        return ServerOptions(
            max_message_size=opts.max_message_size,
            max_recipients=opts.max_recipients,
            helo_required=opts.helo_required,
            tls_available=tls_possible,
            tls_active=self.tls_info is not None,
            forbid_bare_newline=opts.forbid_bare_newline and not self.trusted_newlines,
            auth_mechanisms=self._mechanisms(),
            auth_tls_only=opts.tls_auth_only,
        )

    def _mechanisms(self) -> tuple[str, ...]:
        """What EHLO offers: the back-end's mechanisms, filtered by Postfix's
        smtpd_sasl_(tls_)security_options (noplaintext drops PLAIN and LOGIN, noanonymous
        drops ANONYMOUS). Computed per session: TLS changes the answer."""
        opts = self.ctx.options
        sasl = self.ctx.sasl
        if sasl is None or not opts.sasl_enabled:
            return ()
        security = (
            opts.sasl_tls_security_options if self.tls_info is not None
            else opts.sasl_security_options
        )  # fmt: skip
        dropped = set()
        if "noplaintext" in security:
            dropped |= {"PLAIN", "LOGIN"}
        if "noanonymous" in security:
            dropped.add("ANONYMOUS")
        return tuple(m for m in sasl.mechanisms() if m not in dropped)

    def handle(self, event: ev.Event) -> HandlerResult:
        return self._dispatch[type(event)](event)

    def tls_established(self, ssl_object: Any) -> None:
        self.tls_info = tlsmod.describe(ssl_object)
        self.conn.tls_established()
        self.conn.options = self.protocol_options()  # AUTH mechanisms may differ under TLS
        self.helo = None
        self.abort_transaction()
        self._end_exchange()
        self.sasl_username = self.sasl_method = None
        self.policy_ctx.sasl_username = None
        self.policy_ctx.tls = True
        if self.ctx.options.tls_loglevel >= 1:
            self.ctx.maillog.emit(
                "smtpd",
                f"Anonymous TLS connection established from {self.client_label}: {self.tls_info}",
            )

    def abort_transaction(self) -> None:
        self.tx = None

    # -- connection-level ---------------------------------------------------------------

    def _on_early_talker(self, event: ev.EarlyTalker) -> Reply:
        self.ctx.maillog.emit("smtpd", f"reject: pregreet test failed from {self.client_label}")
        self.counters.count("unknown", False)
        return R.EARLY_TALKER

    def _on_protocol_error(self, event: ev.ProtocolError) -> Reply:
        self.counters.count("unknown", False)
        if event.close:
            self.ctx.maillog.emit(
                "smtpd", f"reject: {event.reply} from {self.client_label}; closing"
            )
        return event.reply

    def _on_closed(self, event: ev.ConnectionClosed) -> None:
        if self.tx is not None:
            self.ctx.maillog.emit(
                "smtpd", f"lost connection after {self.last_command} from {self.client_label}"
            )
        self.abort_transaction()
        self._end_exchange()
        return None

    def _on_starttls(self, event: ev.StartTls) -> Reply | None:
        self.last_command = "STARTTLS"
        if self.ctx.ssl_context is None or self.ctx.options.tls_level == "none":
            self.counters.count("starttls", False)
            return R.TLS_UNAVAILABLE
        if self.tls_info is not None:
            self.counters.count("starttls", False)
            return R.TLS_ALREADY
        self.counters.count("starttls", True)
        # The 220 is queued now; the pipelined plaintext behind it is discarded by the
        # protocol when it sends this reply. Then the handshake, then a fresh session.
        self._queue_reply_and_start_tls(R.READY_TLS)
        return None

    def _queue_reply_and_start_tls(self, reply: Reply) -> None:
        raise NotImplementedError  # provided by the session

    def _on_noop(self, event: ev.Noop) -> Reply:
        self.counters.count("noop", True)
        return R.NOOP_OK

    def _on_help(self, event: ev.Help) -> Reply:
        self.counters.count("help", True)
        return R.HELP

    def _on_vrfy(self, event: ev.Vrfy | ev.Expn) -> Reply:
        # VRFY/EXPN would let anyone harvest addresses (Postfix: disable_vrfy_command).
        self.counters.count("vrfy", False)
        return R.VRFY_DISABLED

    def _on_quit(self, event: ev.Quit) -> Reply:
        self.last_command = "QUIT"
        self.counters.count("quit", True)
        return R.BYE

    def _on_rset(self, event: ev.Rset) -> Reply:
        self.last_command = "RSET"
        self.counters.count("rset", True)
        self.abort_transaction()
        return R.RESET_OK

    # -- HELO -----------------------------------------------------------------------

    def _on_helo(self, event: ev.Helo) -> HandlerResult:
        verb = "ehlo" if event.extended else "helo"
        self.last_command = verb.upper()
        self.abort_transaction()
        self.helo = event.hostname
        self.esmtp = event.extended
        self.policy_ctx.set_helo(event.hostname)
        if self.ctx.options.delay_reject:  # checked at RCPT, as Postfix does
            return self._helo_reply(verb)
        check = self.ctx.policy.check(Stage.HELO, self.policy_ctx)
        return self._checked(check, verb, lambda: self._helo_reply(verb))

    def _helo_reply(self, verb: str) -> Reply:
        self.counters.count(verb, True)
        host = self.ctx.options.hostname
        if verb == "ehlo":
            return Reply(250, None, (host, *self.conn.ehlo_keywords()))
        return Reply(250, None, host)

    # -- MAIL -----------------------------------------------------------------------

    def _on_mail(self, event: ev.Mail) -> HandlerResult:
        self.last_command = "MAIL"
        ctx = self.ctx
        if ctx.options.tls_level == "encrypt" and self.tls_info is None:
            self.counters.count("mail", False)
            return R.TLS_REQUIRED
        if ctx.options.sasl_auth_required and self.sasl_username is None:
            self.counters.count("mail", False)
            self._log_reject("MAIL", AUTH_REQUIRED)
            return AUTH_REQUIRED
        limited = self._rate_limited("message")
        if limited is not None:
            self.counters.count("mail", False)
            return limited
        if not ctx.disk.has_room(ctx.options):
            self.counters.count("mail", False)
            metrics.count_rejection("MAIL", "queue_minfree")
            ctx.maillog.emit(
                "smtpd", f"NOQUEUE: reject: MAIL from {self.client_label}: {R.INSUFFICIENT_STORAGE}"
            )
            return R.INSUFFICIENT_STORAGE
        params = event.params
        sender = "" if event.path.null else event.path.address
        self.policy_ctx.set_sender(sender)
        tx = Transaction(
            sender=sender,
            size_hint=params.size,
            body_type=params.body,
            smtputf8=params.smtputf8,
            ret=params.ret,
            envid=params.envid,
        )

        def accept() -> Reply:
            self.tx = tx
            self.counters.count("mail", True)
            return R.SENDER_OK

        if ctx.options.delay_reject:
            return accept()
        return self._checked(ctx.policy.check(Stage.SENDER, self.policy_ctx), "mail", accept)

    # -- RCPT -----------------------------------------------------------------------

    def _on_rcpt(self, event: ev.Rcpt) -> HandlerResult:
        self.last_command = "RCPT"
        tx = self.tx
        if tx is None:  # the protocol already sequences MAIL before RCPT
            return R.NEED_MAIL
        path = event.path
        address = path.address
        limited = self._rate_limited("recipient")
        if limited is not None:
            tx.rejected += 1
            self._log_reject("RCPT", limited, to=address)
            return limited
        pctx = self.policy_ctx
        pctx.set_recipient(address, path.local, path.domain)
        pctx.pipelined = self.conn.has_pending_input()

        def accept() -> Reply:
            try:
                expanded = self.ctx.router.expand(address) or [address]
            except ExpansionLimitError as exc:
                self.ctx.maillog.emit("cleanup", f"warning: {exc}")
                return rejected(R.ALIAS_EXPANSION_FAILED)
            tx.recipients.append(
                AcceptedRecipient(address, expanded, event.params.notify, event.params.orcpt)
            )
            self.counters.count("rcpt", True)
            return R.RECIPIENT_OK

        def rejected(reply: Reply) -> Reply:
            tx.rejected += 1
            self._log_reject("RCPT", reply, to=address)
            return reply

        check = self.ctx.policy.check_recipient(pctx)
        return self._checked(check, "rcpt", accept, rejected)

    # -- DATA / BDAT ------------------------------------------------------------------

    def _on_data(self, event: ev.Data) -> HandlerResult:
        self.last_command = "DATA"
        tx = self.tx
        if tx is None or not tx.recipients:
            self.counters.count("data", False)
            return R.NEED_RCPT
        self.policy_ctx.pipelined = self.conn.has_pending_input()

        def accept() -> Reply:
            return R.START_DATA

        return self._checked(
            self.ctx.policy.check(Stage.DATA, self.policy_ctx), "data", accept, count_ok=False
        )

    def _on_message_data(self, event: ev.MessageData) -> None:
        if self.tx is not None:
            self.tx.add_chunk(event.chunk)
        return None

    def _on_bdat_chunk(self, event: ev.BdatChunk) -> Reply:
        self.last_command = "BDAT"
        self.counters.count("bdat", True)
        return Reply(250, "2.0.0", f"Ok: {event.size} octets")

    def _on_message_end(self, event: ev.MessageEnd) -> HandlerResult:
        verb = "bdat" if self.last_command == "BDAT" else "data"
        self.last_command = "END-OF-MESSAGE"
        tx, self.tx = self.tx, None
        if event.error is not None or tx is None or not tx.recipients:
            self.counters.count(verb, False)
            reply = event.error or R.NEED_RCPT
            self._log_reject("END-OF-MESSAGE", reply)
            return reply
        return self._commit(tx, verb)

    async def _commit(self, tx: Transaction, verb: str) -> Reply:
        ctx = self.ctx
        opts = ctx.options
        arrival = time.time()
        queue_id = new_queue_id()
        first = tx.recipients[0].address if len(tx.recipients) == 1 else None
        protocol = self._protocol_name()
        login = self.sasl_username
        header = received_header(
            helo=self.helo,
            client_name=self.client_name,
            client_address=self.client_address,
            tls=self.tls_info if opts.tls_received_header else None,
            hostname=opts.hostname,
            protocol=protocol,
            queue_id=queue_id,
            recipient=first,
            now=arrival,
            authenticated=login if opts.sasl_authenticated_header else None,
            hide_client=login is not None and opts.sasl_hide_client,
        )
        origin = Origin(
            client_address=self.client_address,
            client_label=self.client_label,
            helo=self.helo or "",
            login=login,
            own=login is not None or self.policy_ctx.is_mynetworks,
            spf=self.policy_ctx.spf,
        )
        prepared = await prepare(
            ctx, tx, origin, received=header, queue_id=queue_id, arrival=arrival
        )
        if prepared.refusal is not None:
            self.counters.count(verb, False)
            self._log_reject("END-OF-MESSAGE", prepared.refusal)
            return prepared.refusal
        content = prepared.content
        if count_received(content) > opts.hopcount_limit:
            self.counters.count(verb, False)
            self._log_reject("END-OF-MESSAGE", R.HOPS_EXCEEDED)
            return R.HOPS_EXCEEDED
        decision = await ctx.policy.check(Stage.END_OF_DATA, self.policy_ctx)
        if decision.verdict in (Verdict.REJECT, Verdict.DEFER) and decision.reply is not None:
            self.counters.count(verb, False)
            self._rejected_by = decision.restriction
            self._log_reject("END-OF-MESSAGE", decision.reply)
            return decision.reply
        client = ClientInfo(
            address=self.client_address,
            name=self.client_name,
            helo=self.helo or "",
            protocol=protocol,
            tls=self.tls_info,
            sasl_username=login,
        )
        envelope = tx.envelope(client, len(content), arrival)
        try:
            await ctx.store.submit(envelope, content, queue_id=queue_id)
        except QueueWriteError as exc:
            self.counters.count(verb, False)
            ctx.maillog.emit("smtpd", f"warning: queue file write error: {exc}")
            return R.LOCAL_ERROR
        self.counters.count(verb, True)
        metrics.message_received(ctx.service, len(content))
        ctx.on_queued(queue_id)
        log = ctx.maillog
        if login is not None:
            log.emit(
                "smtpd",
                f"{queue_id}: client={self.client_label}, sasl_method={self.sasl_method},"
                f" sasl_username={login}",
            )
        else:
            log.emit("smtpd", f"{queue_id}: client={self.client_label}")
        log.emit("cleanup", f"{queue_id}: message-id={_message_id(content)}")
        log.emit(
            "qmgr",
            f"{queue_id}: from=<{tx.sender}>, size={len(content)}, "
            f"nrcpt={len(envelope.recipients)} (queue active)",
        )
        return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")

    # -- helpers --------------------------------------------------------------------

    def _rate_limited(self, kind: str) -> Reply | None:
        """The anvil's answer to one more message or recipient: None, or the 450."""
        anvil = self.ctx.anvil
        if anvil is None:
            return None
        message = kind == "message"
        what = "too much mail" if message else "too many recipients"
        address = self.client_address
        if not self.limits_exempt and not (
            anvil.message(address) if message else anvil.recipient(address)
        ):
            self.ctx.maillog.emit(
                "smtpd",
                f"warning: {kind} rate limit exceeded from {self.client_label}"
                f" for service {self.ctx.service}",
            )
            return Reply(450, "4.7.1", f"Error: {what} from {address}")
        login = self.sasl_username
        if login is not None and not (
            anvil.user_message(login) if message else anvil.user_recipients(login)
        ):
            self.ctx.maillog.emit(
                "smtpd",
                f"warning: {kind} rate limit exceeded for sasl_username={login}"
                f" from {self.client_label}",
            )
            return Reply(450, "4.7.1", f"Error: {what} from user {login}")
        return None

    def _protocol_name(self) -> str:
        """SMTP/ESMTP, then S for TLS and A for AUTH (RFC 3848)."""
        name = "ESMTP" if self.esmtp else "SMTP"
        if self.tls_info is not None:
            name += "S"
        if self.sasl_username is not None:
            name += "A"
        return name

    def _checked(
        self,
        pending: Awaitable[Decision],
        verb: str,
        accept: Callable[[], Reply],
        rejected: Callable[[Reply], Reply] | None = None,
        *,
        count_ok: bool = True,
    ) -> Coroutine[Any, Any, Reply]:
        async def run() -> Reply:
            decision = await pending
            if decision.verdict in (Verdict.REJECT, Verdict.DEFER) and decision.reply:
                self.counters.count(verb, False)
                self._rejected_by = decision.restriction  # read by _log_reject, right below
                if rejected is not None:
                    return rejected(decision.reply)
                self._log_reject(verb.upper(), decision.reply)
                return decision.reply
            return accept()

        return run()

    def _log_reject(self, stage: str, reply: Reply, *, to: str | None = None) -> None:
        metrics.count_rejection(stage, self._rejected_by)
        self._rejected_by = ""
        tx = self.tx
        details = []
        if tx is not None:
            details.append(f"from=<{tx.sender}>")
        if to is not None:
            details.append(f"to=<{to}>")
        details.append(f"proto={self._protocol_name()}")
        if self.helo is not None:
            details.append(f"helo=<{self.helo}>")
        self.ctx.maillog.emit(
            "smtpd",
            f"NOQUEUE: reject: {stage} from {self.client_label}: {reply}; {' '.join(details)}",
        )


def _message_id(content: bytes) -> str:
    end = content.find(b"\r\n\r\n")
    head = content[: end if end >= 0 else len(content)]
    low = head.lower()
    at = low.find(b"\r\nmessage-id:")
    if at < 0:
        return "<>"
    start = at + len(b"\r\nmessage-id:")
    stop = head.find(b"\r\n", start)
    value = head[start : stop if stop >= 0 else len(head)].strip()
    return value[:200].decode("utf-8", "replace") or "<>"
