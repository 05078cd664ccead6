"""SMTP AUTH in the session (RFC 4954): base64 framing, replies, failure limits, logs.

Owns the server's half of an AUTH exchange. The mechanism and the credentials belong to
the back-end (:mod:`ironpost.sasl`); this module turns its outcomes into replies:
``334`` challenges, ``235 2.7.0`` on success, ``535 5.7.8`` on failure (held back by the
anvil's growing delay), ``454 4.7.0`` when the back-end cannot answer, and ``421 4.7.0``
(close) after ``smtpd_auth_failure_limit`` failures in one session or while the client
IP or the login is banned.

Invariants:

* nothing the client sends during an exchange is logged: not the lines, not the decoded
  credentials; a failure logs the claimed login name only (as Postfix does, so fail2ban
  filters keep working);
* a banned login gets the same 421 whether its password was right or wrong, so a ban
  is never an oracle;
* the reply to an unknown login and to a wrong password are identical, and the delay
  before both comes from the same anvil counters.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ironpost.metrics import registry as metrics
from ironpost.protocol import events as ev
from ironpost.protocol.replies import Reply
from ironpost.sasl.backend import Challenge, ClientMeta, Failure, SaslExchange, Success

if TYPE_CHECKING:
    from ironpost.policy.context import PolicyContext
    from ironpost.server.context import ListenerContext
    from ironpost.server.counters import SessionCounters

AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_FAILED = Reply(535, "5.7.8", "Error: authentication failed: authentication failure")
AUTH_TEMPFAIL = Reply(454, "4.7.0", "Temporary authentication failure")
AUTH_ABORTED = Reply(501, "5.7.0", "Authentication aborted")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")


def too_many_failures(address: str) -> Reply:
    return Reply(421, "4.7.0", f"Error: too many failed authentications from [{address}]")


def auth_rate_exceeded(address: str) -> Reply:
    return Reply(450, "4.7.1", f"Error: too many AUTH commands from {address}")


def decode_response(text: str) -> bytes | None:
    """A client line or initial response: ``=`` is empty, else strict base64."""
    if text == "=":
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


class AuthHandlers:
    """Mixin for :class:`~ironpost.server.handlers.CommandHandlers`: the AUTH exchange."""

    ctx: ListenerContext
    counters: SessionCounters
    policy_ctx: PolicyContext
    client_address: str
    client_label: str
    last_command: str
    local_address: str
    local_port: int
    client_port: int
    tls_info: str | None

    def _init_auth(self) -> None:
        self.sasl_username: str | None = None
        self.sasl_method: str | None = None
        self._exchange: SaslExchange | None = None
        self._exchange_mech = ""
        self._pending_success: Success | None = None
        self._auth_failures = 0

    # -- events ------------------------------------------------------------------------

    def _on_auth(self, event: ev.Auth) -> Reply | Coroutine[Any, Any, Reply]:
        self.last_command = "AUTH"
        ctx = self.ctx
        backend = ctx.sasl
        if backend is None:  # the protocol does not offer AUTH then; belt and braces
            self.counters.count("auth", False)
            return Reply(503, "5.5.1", "Error: authentication not enabled")
        anvil = ctx.anvil
        exempt = ctx.event_exceptions.contains(self.client_address)
        if anvil is not None:
            if anvil.ban_left(self.client_address) > 0:
                self.counters.count("auth", False)
                ctx.maillog.emit(
                    "smtpd", f"warning: {self.client_label}: AUTH refused: client is banned"
                )
                return too_many_failures(self.client_address)
            if not exempt and not anvil.auth(self.client_address):
                self.counters.count("auth", False)
                ctx.maillog.emit(
                    "smtpd",
                    f"warning: AUTH command rate limit exceeded from {self.client_label}"
                    f" for service {ctx.service}",
                )
                return auth_rate_exceeded(self.client_address)
        initial: bytes | None = None
        if event.initial is not None:
            initial = decode_response(event.initial)
            if initial is None:
                self.counters.count("auth", False)
                return AUTH_BAD_BASE64
        self._exchange = backend.begin(
            event.mechanism,
            ClientMeta(
                address=self.client_address,
                local_address=self.local_address,
                local_port=self.local_port,
                port=self.client_port,
                tls=self.tls_info is not None,
                service=ctx.options.sasl_service,
            ),
        )
        self._exchange_mech = event.mechanism
        return self._auth_step(initial)

    def _on_auth_response(self, event: ev.AuthResponse) -> Reply | Coroutine[Any, Any, Reply]:
        if event.line == "*":
            self._end_exchange()
            self.counters.count("auth", False)
            return AUTH_ABORTED
        pending = self._pending_success
        if pending is not None:  # the empty line after a 334 carrying SCRAM's final data
            self._pending_success = None
            self._exchange = None
            if event.line not in ("", "="):
                return self._fail_later(Failure(pending.username, reason="unexpected data"))
            return self._succeed(pending)
        data = decode_response(event.line)
        if data is None:
            self._end_exchange()
            self.counters.count("auth", False)
            return AUTH_BAD_BASE64
        return self._auth_step(data)

    # -- the exchange ------------------------------------------------------------------

    async def _auth_step(self, response: bytes | None) -> Reply:
        exchange = self._exchange
        if exchange is None:
            return AUTH_ABORTED
        try:
            outcome = await exchange.step(response)
        except Exception as exc:  # a back-end bug is a temporary failure, not a crash
            self.ctx.log_exception("SASL back-end", exc)
            outcome = Failure(None, temporary=True, reason="back-end error")
        if isinstance(outcome, Challenge):
            return Reply(334, None, base64.b64encode(outcome.data).decode("ascii"))
        self._exchange = None
        if isinstance(outcome, Success) and outcome.final is not None:
            self._pending_success = outcome
            return Reply(334, None, base64.b64encode(outcome.final).decode("ascii"))
        if isinstance(outcome, Success):
            return self._succeed(outcome)
        return await self._failed(outcome)

    def _succeed(self, outcome: Success) -> Reply:
        anvil = self.ctx.anvil
        if anvil is not None and anvil.ban_left(self.client_address, outcome.username) > 0:
            # Banned: the same answer as for a wrong password under a ban.
            return self._banned(outcome.username)
        if anvil is not None:
            anvil.auth_succeeded(self.client_address, outcome.username)
        self.sasl_username = outcome.username
        self.sasl_method = self._exchange_mech
        self.policy_ctx.sasl_username = outcome.username
        self.policy_ctx.list_cache.clear()
        self.counters.count("auth", True)
        return AUTH_OK

    async def _failed(self, outcome: Failure) -> Reply:
        if outcome.temporary:
            self.counters.count("auth", False)
            self._log_failure(outcome)
            return AUTH_TEMPFAIL
        return await self._fail_later(outcome)

    async def _fail_later(self, outcome: Failure) -> Reply:
        ctx = self.ctx
        self.counters.count("auth", False)
        self._auth_failures += 1
        self._log_failure(outcome)
        anvil = ctx.anvil
        delay = 0.0
        if anvil is not None:
            delay = anvil.auth_failed(self.client_address, outcome.username)
            if anvil.ban_left(self.client_address, outcome.username) > 0:
                return self._banned(outcome.username)
        if self._auth_failures >= ctx.options.auth_failure_limit:
            ctx.maillog.emit(
                "smtpd",
                f"too many failed AUTH attempts from {self.client_label}; closing",
            )
            return too_many_failures(self.client_address)
        if delay > 0:
            await asyncio.sleep(delay)
        return AUTH_FAILED

    def _banned(self, login: str | None) -> Reply:
        who = f", sasl_username={login}" if login else ""
        self.ctx.maillog.emit(
            "smtpd",
            f"warning: {self.client_label}: AUTH ban in force{who}; closing",
        )
        return too_many_failures(self.client_address)

    def _log_failure(self, outcome: Failure) -> None:
        metrics.count_auth_failure(self._exchange_mech, outcome.temporary)
        who = f", sasl_username={outcome.username}" if outcome.username else ""
        self.ctx.maillog.emit(
            "smtpd",
            f"warning: {self.client_label}: SASL {self._exchange_mech} authentication "
            f"failed: {outcome.reason}{who}",
        )

    def _end_exchange(self) -> None:
        exchange, self._exchange = self._exchange, None
        self._pending_success = None
        if exchange is not None:
            exchange.cancel()
