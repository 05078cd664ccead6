"""The local delivery agent: claims due messages from the queue, delivers, records.

Owns one loop (claim a batch -> resolve each pending recipient -> deliver -> one
``record()`` per batch) and the Postfix-format delivery log lines. Maildir writes run in
a thread pool sized ``concurrency``, so several fsyncs proceed in parallel.

Invariants:
- A recipient is recorded DELIVERED only after its Maildir file is durable
  (:func:`deliver_to_maildir` returned). A crash between that and ``record()`` means the
  message is delivered again after restart: at-least-once, as in Postfix.
- Every claimed recipient gets exactly one outcome in the batch's ``record()`` call, also
  when content cannot be read or routing raises (both defer): nothing claimed is lost.
- Two pending recipients of one message that land in the same mailbox are written once.
- Replies stored in the queue (which a bounce may quote to the sender) never carry a
  path or a table name; the log lines may.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ironpost.delivery.maildir import deliver_lf_to_maildir, deliver_to_maildir, to_lf
from ironpost.queue.model import Outcome, QueuedMessage, QueuedRecipient, RecipientStatus

if TYPE_CHECKING:
    from ironpost.maillog import MailLog
    from ironpost.queue.store import QueueStore
    from ironpost.routing import Resolution, Router

__all__ = ["DeliveryRunner"]

DELIVERED_REPLY = "2.0.0 delivered to maildir"
REMOTE_DEFERRED_REPLY = "4.4.1 outbound SMTP delivery not yet available"
_DSN_RE = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?: |$)")
# Errnos that mean "this mailbox is full" rather than "the mail system has a problem".
_MAILBOX_FULL = frozenset({errno.EDQUOT, errno.EFBIG})


@dataclass(frozen=True, slots=True)
class _Timing:
    """When one recipient's delivery ran, for Postfix's delay= and delays=a/b/c/d."""

    arrival: float
    claimed: float
    start: float
    end: float

    def delays(self) -> tuple[float, tuple[float, float, float, float]]:
        # a: before the queue manager, b: in it, c: connection setup, d: transmission.
        a = max(0.0, self.claimed - self.arrival)
        b = max(0.0, self.start - self.claimed)
        d = max(0.0, self.end - self.start)
        return max(0.0, self.end - self.arrival), (a, b, 0.0, d)


def _split_reply(reply: str) -> tuple[str, str]:
    """``"4.3.0 text"`` -> ``("4.3.0", "text")``."""
    dsn, _, text = reply.partition(" ")
    return dsn, text


class DeliveryRunner:
    """Drives Maildir delivery from the queue. One instance per process."""

    def __init__(
        self,
        store: QueueStore,
        router: Router,
        maillog: MailLog,
        *,
        hostname: str,
        concurrency: int = 16,
        batch: int = 64,
        retry_delay: float = 300.0,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 5.0,
    ) -> None:
        if concurrency < 1 or batch < 1:
            raise ValueError("concurrency and batch must be at least 1")
        self._store = store
        self._router = router
        self._log = maillog
        self._hostname = hostname
        self._concurrency = concurrency
        self._batch = batch
        self._retry_delay = retry_delay
        self._clock = clock
        self._poll_interval = poll_interval
        self._pool: ThreadPoolExecutor | None = None
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._running: asyncio.Future[None] | None = None
        self._last_claimed = 0
        self._next_due: float | None = None  # earliest retry we scheduled ourselves

    # -- control -------------------------------------------------------------------

    def wake(self) -> None:
        """New mail was queued: run a pass now instead of at the next poll."""
        self._wakeup.set()

    async def run(self) -> None:
        """Deliver until :meth:`stop`: a pass, then wait for :meth:`wake` or a retry."""
        self._stopping = False
        self._running = asyncio.get_running_loop().create_future()
        try:
            while not self._stopping:
                # Clear before claiming: a wake() during the pass triggers the next one.
                self._wakeup.clear()
                try:
                    await self.run_once()
                except Exception as exc:  # the loop must survive a broken store
                    self._log.emit("qmgr", f"warning: delivery pass failed: {exc!r}")
                    self._last_claimed = 0
                if self._stopping:
                    break
                if self._last_claimed >= self._batch:
                    continue  # a full batch: more mail is probably due right now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._idle_timeout())
        finally:
            if not self._running.done():
                self._running.set_result(None)
            self._running = None

    async def stop(self) -> None:
        """Let the pass under way finish (deliver and record), then return."""
        self._stopping = True
        self._wakeup.set()
        running = self._running
        if running is not None:
            await asyncio.shield(running)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _idle_timeout(self) -> float:
        timeout = self._poll_interval
        if self._next_due is not None:
            until = self._next_due - self._clock()
            if until <= 0:
                self._next_due = None
                return 0.0
            timeout = min(timeout, until)
        return timeout

    # -- one pass ------------------------------------------------------------------

    async def run_once(self) -> int:
        """Claim due messages, deliver them, record; return the recipients handled."""
        claimed = self._clock()
        messages = await self._store.claim(now=claimed, limit=self._batch)
        self._last_claimed = len(messages)
        if not messages:
            return 0
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="maildir")
        per_message = await asyncio.gather(*(self._message(m, claimed) for m in messages))
        outcomes = [o for batch in per_message for o in batch]
        for o in outcomes:
            if o.next_attempt is not None and (
                self._next_due is None or o.next_attempt < self._next_due
            ):
                self._next_due = o.next_attempt
        for queue_id in await self._store.record(outcomes):
            self._log.emit("qmgr", f"{queue_id}: removed")
        return len(outcomes)

    async def _message(self, msg: QueuedMessage, claimed: float) -> list[Outcome]:
        env = msg.envelope
        pending = [r for r in msg.recipients if not r.status.is_final]
        try:
            content = await self._store.content(msg.id)
        except Exception as exc:
            return [
                self._defer_local(msg, r, None, claimed, "4.3.0 queue file read error", repr(exc))
                for r in pending
            ]
        outcomes: list[Outcome] = []
        # Resolve everything first: the mailboxes decide how the content is prepared.
        boxes: dict[Path, str] = {}  # mailbox -> Delivered-To of its first recipient
        waiting: list[tuple[QueuedRecipient, Resolution, Path]] = []
        for rcpt in pending:
            try:
                res = self._router.resolve(rcpt.spec.address)
            except Exception as exc:  # a table lookup failure defers, as in Postfix
                outcomes.append(
                    self._defer_local(
                        msg, rcpt, None, claimed, "4.3.0 address resolution failed", repr(exc)
                    )
                )
                continue
            if res.transport == "maildir" and res.mailbox is not None:
                # Duplicates (two addresses, one mailbox) share one write.
                box = Path(os.path.normpath(res.mailbox))
                boxes.setdefault(box, res.address)
                waiting.append((rcpt, res, box))
            elif res.transport == "smtp":
                outcomes.append(self._defer_remote(msg, rcpt, res, claimed))
            elif res.transport == "error":
                outcomes.append(self._bounce(msg, rcpt, res, claimed))
            else:  # "maildir" without a mailbox, or a transport this agent cannot run
                outcomes.append(
                    self._defer_local(
                        msg,
                        rcpt,
                        res,
                        claimed,
                        "4.3.5 mail system configuration error",
                        f"no delivery for transport {res.transport!r}",
                    )
                )
        if not boxes:
            return outcomes
        loop = asyncio.get_running_loop()
        body = content
        converted = False
        if len(boxes) > 1:
            # Convert CRLF -> LF once for all mailboxes, off the event loop.
            body = await loop.run_in_executor(self._pool, to_lf, content)
            converted = True
        writes = {
            box: loop.run_in_executor(
                self._pool, self._write, box, body, converted, env.sender, delivered_to
            )
            for box, delivered_to in boxes.items()
        }
        await asyncio.wait(writes.values())
        for rcpt, res, box in waiting:
            start, end, error = writes[box].result()
            outcomes.append(self._maildir_outcome(msg, rcpt, res, box, claimed, start, end, error))
        return outcomes

    def _write(
        self, box: Path, body: bytes, converted: bool, sender: str, rcpt: str
    ) -> tuple[float, float, Exception | None]:
        # Runs in a pool thread; the timestamps feed delays=…/…/…/d. Never raises: an
        # exception escaping here would leave the whole batch unrecorded.
        deliver = deliver_lf_to_maildir if converted else deliver_to_maildir
        start = self._clock()
        try:
            deliver(box, body, return_path=sender, delivered_to=rcpt, hostname=self._hostname)
        except Exception as exc:
            return start, self._clock(), exc
        return start, self._clock(), None

    # -- outcomes and their log lines ------------------------------------------------

    def _maildir_outcome(
        self,
        msg: QueuedMessage,
        rcpt: QueuedRecipient,
        res: Resolution,
        box: Path,
        claimed: float,
        start: float,
        end: float,
        error: Exception | None,
    ) -> Outcome:
        timing = _Timing(msg.envelope.arrival, claimed, start, end)
        if error is None:
            self._logline(
                "virtual",
                msg,
                rcpt,
                res.address,
                "maildir",
                timing,
                DELIVERED_REPLY,
                "sent",
                "delivered to maildir",
            )
            return Outcome(msg.id, rcpt.index, RecipientStatus.DELIVERED, DELIVERED_REPLY)
        if isinstance(error, OSError):
            reason = error.strerror or type(error).__name__
            dsn = "4.2.2" if error.errno in _MAILBOX_FULL else "4.3.0"
            where = error.filename if error.filename is not None else box
        else:  # a bug, not the disk: still defer, never lose the recipient
            reason, dsn, where = type(error).__name__, "4.3.0", box
        reply = f"{dsn} Maildir write failed: {reason}"
        self._logline(
            "virtual",
            msg,
            rcpt,
            res.address,
            "maildir",
            timing,
            reply,
            "deferred",
            f"maildir delivery failed: {where}: {reason}",
        )
        return Outcome(msg.id, rcpt.index, RecipientStatus.DEFERRED, reply, end + self._retry_delay)

    def _defer_remote(
        self, msg: QueuedMessage, rcpt: QueuedRecipient, res: Resolution, claimed: float
    ) -> Outcome:
        now = self._clock()
        timing = _Timing(msg.envelope.arrival, claimed, now, now)
        _, text = _split_reply(REMOTE_DEFERRED_REPLY)
        self._logline(
            "smtp", msg, rcpt, res.address, "none", timing, REMOTE_DEFERRED_REPLY, "deferred", text
        )
        return Outcome(
            msg.id,
            rcpt.index,
            RecipientStatus.DEFERRED,
            REMOTE_DEFERRED_REPLY,
            now + self._retry_delay,
        )

    def _bounce(
        self, msg: QueuedMessage, rcpt: QueuedRecipient, res: Resolution, claimed: float
    ) -> Outcome:
        now = self._clock()
        timing = _Timing(msg.envelope.arrival, claimed, now, now)
        text = res.error or "User unknown"
        reply = text if _DSN_RE.match(text) else f"5.1.1 {text}"
        _, detail = _split_reply(reply)
        self._logline("error", msg, rcpt, res.address, "none", timing, reply, "bounced", detail)
        return Outcome(msg.id, rcpt.index, RecipientStatus.BOUNCED, reply)

    def _defer_local(
        self,
        msg: QueuedMessage,
        rcpt: QueuedRecipient,
        res: Resolution | None,
        claimed: float,
        reply: str,
        detail: str,
    ) -> Outcome:
        now = self._clock()
        timing = _Timing(msg.envelope.arrival, claimed, now, now)
        to = res.address if res is not None else rcpt.spec.address
        _, text = _split_reply(reply)
        self._logline(
            "virtual", msg, rcpt, to, "none", timing, reply, "deferred", f"{text}: {detail}"
        )
        return Outcome(msg.id, rcpt.index, RecipientStatus.DEFERRED, reply, now + self._retry_delay)

    def _logline(
        self,
        service: str,
        msg: QueuedMessage,
        rcpt: QueuedRecipient,
        to: str,
        relay: str,
        timing: _Timing,
        reply: str,
        status: str,
        detail: str,
    ) -> None:
        delay, delays = timing.delays()
        dsn, _ = _split_reply(reply)
        self._log.delivery(
            service,
            msg.id,
            to=to,
            orig_to=rcpt.spec.original,
            relay=relay,
            delay=delay,
            delays=delays,
            dsn=dsn,
            status=status,
            detail=detail,
        )
