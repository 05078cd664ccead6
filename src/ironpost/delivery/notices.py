"""Queueing the notices a delivery attempt calls for: bounces, delay warnings, successes.

Owns the decision "which DSN does this attempt produce, to whom" (with the rules of
:mod:`ironpost.delivery.bounce`) and putting it in the queue as a new message, the way
Postfix's bounce(8) daemon does for qmgr.

Invariants:
- A recipient's notice follows its NOTIFY (RFC 3461): absent NOTIFY means FAILURE and
  DELAY; NEVER means none.
- A SENT recipient gets a success notice only when it asked NOTIFY=SUCCESS, as
  ``delivered`` for final delivery and ``relayed`` when the next hop does not speak DSN
  (otherwise the next hop takes over and reports itself).
- One delay warning per message: the caller's store keeps the ``warned`` flag.
- If a failure notice cannot be queued, the recipients it reports on are deferred (and
  retried soon) rather than recorded as bounced: a bounce is never lost silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ironpost.delivery.bounce import (
    Action,
    NoticeKind,
    RecipientReport,
    bounce_recipient_for,
    build_dsn,
    should_notify,
)
from ironpost.delivery.transport import Disposition, RecipientResult
from ironpost.queue.ids import new_queue_id
from ironpost.queue.model import (
    ClientInfo,
    Envelope,
    Outcome,
    QueuedMessage,
    RecipientSpec,
    RecipientStatus,
)
from ironpost.routing import ExpansionLimitError

if TYPE_CHECKING:
    from ironpost.delivery.bounce import SettingsLike
    from ironpost.maillog import MailLog
    from ironpost.queue.store import QueueStore
    from ironpost.routing import Router
    from ironpost.scheduler import Lifetime

__all__ = ["Attempt", "Notices"]

_RETRY_AFTER_NOTICE_FAILURE = 60.0
_SERVICE = "bounce"
_NOTICE_CLIENT = ClientInfo(address="127.0.0.1", name="localhost", helo="", protocol="local")
_LOG_NAMES = {
    NoticeKind.FAILURE: "sender non-delivery notification",
    NoticeKind.DELAY: "sender delay notification",
    NoticeKind.SUCCESS: "sender delivery status notification",
}


@dataclass(frozen=True, slots=True)
class Attempt:
    """One recipient's result in this pass, as the notices see it."""

    spec: RecipientSpec
    result: RecipientResult
    agent: str  # "smtp", "lmtp", "maildir", "discard", "error", …
    when: float


class Notices:
    """Builds and queues DSNs about a message's delivery attempt."""

    def __init__(
        self,
        store: QueueStore,
        router: Router,
        maillog: MailLog,
        settings: SettingsLike,
        lifetime: Lifetime,
        *,
        hostname: str,
        bounce_size_limit: int,
        on_queued: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._router = router
        self._log = maillog
        self._settings = settings
        self._lifetime = lifetime
        self._hostname = hostname
        self._bounce_size_limit = bounce_size_limit
        self._on_queued = on_queued
        self._clock = clock

    async def send(
        self,
        msg: QueuedMessage,
        attempts: Sequence[Attempt],
        outcomes: list[Outcome],
        content: bytes,
        now: float,
    ) -> tuple[list[Outcome], bool]:
        """Queue the notices for this pass; return the outcomes to record (bounced ones
        deferred if their notice could not be queued) and whether a delay warning went."""
        env = msg.envelope
        status = {o.index: o.status for o in outcomes}
        failed: list[RecipientReport] = []
        success: list[RecipientReport] = []
        delayed: list[RecipientReport] = []
        expiry = self._lifetime.expires_at(env.arrival, not env.sender)
        for a in attempts:
            final = status.get(a.result.index)
            if final is RecipientStatus.BOUNCED:
                if should_notify(a.spec.notify, Action.FAILED):
                    failed.append(_report(a, Action.FAILED))
            elif final is RecipientStatus.DELIVERED:
                action = _success_action(a)
                if action is not None and should_notify(a.spec.notify, action):
                    success.append(_report(a, action))
            elif final is RecipientStatus.DEFERRED and should_notify(a.spec.notify, Action.DELAYED):
                delayed.append(_report(a, Action.DELAYED, expiry))
        warned = False
        if failed and not await self._queue(msg, NoticeKind.FAILURE, failed, content, now):
            retry = now + _RETRY_AFTER_NOTICE_FAILURE
            indexes = {r.index for r in outcomes if r.status is RecipientStatus.BOUNCED}
            outcomes = [
                replace(o, status=RecipientStatus.DEFERRED, next_attempt=retry)
                if o.index in indexes
                else o
                for o in outcomes
            ]
        if success:
            await self._queue(msg, NoticeKind.SUCCESS, success, content, now)
        warned_before = msg.warned
        if delayed and self._lifetime.delay_warning_due(
            env.arrival, now, not env.sender, warned_before
        ):
            warned = await self._queue(msg, NoticeKind.DELAY, delayed, content, now)
        return outcomes, warned

    async def _queue(
        self,
        msg: QueuedMessage,
        kind: NoticeKind,
        reports: list[RecipientReport],
        content: bytes,
        now: float,
    ) -> bool:
        """Queue one DSN; True when it is queued or when the rules say to send none."""
        env = msg.envelope
        route = bounce_recipient_for(env.sender, self._settings, kind)
        if route.recipient is None:
            return True  # a notice about a notice: nobody to tell, by design
        notice_id = new_queue_id()
        try:
            body = build_dsn(
                envelope=env,
                queue_id=msg.id,
                reports=reports,
                content=content,
                hostname=self._hostname,
                bounce_size_limit=self._bounce_size_limit,
                now=now,
                message_id=lambda: f"<{notice_id}@{self._hostname}>",
                recipient=route.recipient,
                kind=kind,
            )
            recipients = tuple(
                RecipientSpec(address=a, original=route.recipient)
                for a in self._expand(route.recipient)
            )
            envelope = Envelope(
                sender=route.sender,
                recipients=recipients,
                size=len(body),
                body_type="8BITMIME" if not body.isascii() else None,
                smtputf8=env.smtputf8,
                ret=None,
                envid=None,
                client=_NOTICE_CLIENT,
                arrival=self._clock(),
            )
            await self._store.submit(envelope, body, queue_id=notice_id)
        except Exception as exc:  # QueueWriteError, or a bug: the caller defers instead
            self._log.emit(_SERVICE, f"warning: {msg.id}: cannot queue {kind} notice: {exc!r}")
            return False
        self._log.emit(_SERVICE, f"{msg.id}: {_LOG_NAMES[kind]}: {notice_id}")
        # As Postfix logs every new message, so that log tools know the notice's size.
        self._log.emit(
            "qmgr",
            f"{notice_id}: from=<{route.sender}>, size={len(body)}, "
            f"nrcpt={len(recipients)} (queue active)",
        )
        self._on_queued()
        return True

    def _expand(self, address: str) -> list[str]:
        try:
            expanded = self._router.expand(address)
        except ExpansionLimitError:
            return [address]
        return expanded or [address]


def _success_action(a: Attempt) -> Action | None:
    if a.agent in ("smtp",):
        return None if a.result.remote_dsn else Action.RELAYED
    if a.agent == "lmtp":
        return Action.DELIVERED
    return Action.DELIVERED


def _report(a: Attempt, action: Action, retry_until: float | None = None) -> RecipientReport:
    r = a.result
    remote, diagnostic = _remote(r)
    return RecipientReport(
        final_recipient=a.spec.address,
        action=action,
        status=r.dsn if r.disposition is not Disposition.SENT or r.dsn[:1] == "2" else "2.0.0",
        reason=r.reply,
        original_recipient=a.spec.original if a.spec.original != a.spec.address else None,
        orcpt=a.spec.orcpt,
        remote_mta=remote,
        diagnostic=diagnostic,
        last_attempt=a.when,
        will_retry_until=retry_until,
    )


def _remote(r: RecipientResult) -> tuple[str | None, str | None]:
    """``host mx.example[192.0.2.1] said: 550 5.1.1 text (in reply to …)`` ->
    (``mx.example``, ``550 5.1.1 text``)."""
    host: str | None = None
    if r.relay not in ("none", "maildir", "") and "[" in r.relay:
        host = r.relay.split("[", 1)[0] or None
    head, sep, said = r.reply.partition(" said: ")
    if not sep:
        return host, None
    if host is None and head.startswith("host "):
        host = head[5:].split("[", 1)[0] or None
    said = said.split(" (in reply to ", 1)[0]
    return host, said or None
