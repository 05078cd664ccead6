"""The local delivery agents as transports: Maildir, discard and error.

Owns the glue between the queue manager's :class:`~ironpost.delivery.transport.Transport`
contract and the on-disk Maildir writer (:mod:`ironpost.delivery.maildir`). Maildir
writes run in a thread pool, so several fsyncs proceed in parallel while the event loop
keeps serving SMTP.

Invariants:
- A recipient is reported SENT only after its Maildir file is durable.
- Two recipients of one request that land in the same mailbox are written once.
- Every recipient of a request gets exactly one result, also when routing raises.
- Reply texts (which a bounce may quote to the sender) never carry a path or a table
  name; the ``detail`` for the log may.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from ironpost.auth.results import QUARANTINE_HEADER
from ironpost.delivery.maildir import (
    deliver_lf_to_maildir,
    deliver_to_maildir,
    ensure_maildir,
    to_lf,
)
from ironpost.delivery.transport import (
    BatchRecipient,
    DeliveryRequest,
    Disposition,
    RecipientResult,
)

if TYPE_CHECKING:
    from ironpost.maillog import MailLog
    from ironpost.routing import Router

__all__ = ["DiscardTransport", "ErrorTransport", "MaildirTransport"]

DELIVERED = "delivered to maildir"
# Errnos that mean "this mailbox is full" rather than "the mail system has a problem".
_MAILBOX_FULL = frozenset({errno.EDQUOT, errno.EFBIG})
JUNK_FOLDER = ".Junk"
_MARKER = re.compile(rb"(?im)^" + re.escape(QUARANTINE_HEADER.encode()) + rb":")


def quarantined(content: bytes, limit: int = 65536) -> bool:
    """Does the header section carry the DMARC quarantine marker? (ironpost.auth.inbound
    adds it, and strips incoming copies, so a sender cannot file its own mail as junk.)
    Only the header section is searched, without copying the message."""
    end = content.find(b"\r\n\r\n", 0, limit)
    return _MARKER.search(content, 0, end if end >= 0 else min(len(content), limit)) is not None


class MaildirTransport:
    """Delivers to Maildirs under ``virtual_mailbox_base`` as the router resolves them."""

    def __init__(
        self,
        router: Router,
        *,
        hostname: str,
        maillog: MailLog | None = None,
        concurrency: int = 16,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._router = router
        self._hostname = hostname
        self._log = maillog
        self._clock = clock
        self._pool = ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="maildir")

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        results: list[RecipientResult] = []
        boxes: dict[Path, str] = {}  # mailbox -> Delivered-To of its first recipient
        waiting: list[tuple[BatchRecipient, Path]] = []
        junk = quarantined(request.content)
        for rcpt in request.recipients:
            try:
                res = self._router.resolve(rcpt.spec.address)
            except Exception:  # a table lookup failure defers, as in Postfix
                results.append(_local(rcpt, Disposition.DEFERRED, "4.3.0", "address lookup failed"))
                continue
            if res.transport != "maildir" or res.mailbox is None:
                # The route changed since the manager grouped it (a reload): retry later.
                results.append(
                    _local(rcpt, Disposition.DEFERRED, "4.3.5", "mail system configuration error")
                )
                continue
            box = Path(os.path.normpath(res.mailbox))
            if junk:  # DMARC quarantine: the Maildir++ Junk folder, as IMAP servers show it
                box = box / JUNK_FOLDER
            boxes.setdefault(box, res.address)
            waiting.append((rcpt, box))
        if not boxes:
            return results
        loop = asyncio.get_running_loop()
        body = request.content
        converted = False
        if len(boxes) > 1:
            # Convert CRLF -> LF once for all mailboxes, off the event loop.
            body = await loop.run_in_executor(self._pool, to_lf, body)
            converted = True
        sender = request.envelope.sender
        writes = {
            box: loop.run_in_executor(self._pool, self._write, box, body, converted, sender, to)
            for box, to in boxes.items()
        }
        if len(writes) == 1:  # the common case: no wait() bookkeeping
            await next(iter(writes.values()))
        else:
            await asyncio.wait(writes.values())
        for rcpt, box in waiting:
            elapsed, error = writes[box].result()
            if error is None:
                results.append(
                    RecipientResult(
                        rcpt.index, Disposition.SENT, "2.0.0", DELIVERED, "maildir", 0.0, elapsed
                    )
                )
                continue
            if isinstance(error, OSError):
                reason = error.strerror or type(error).__name__
                dsn = "4.2.2" if error.errno in _MAILBOX_FULL else "4.3.0"
                where = error.filename if error.filename is not None else box
            else:  # a bug, not the disk: still defer, never lose the recipient
                reason, dsn, where = type(error).__name__, "4.3.0", box
            if self._log is not None:  # the path goes to the log, never to the sender
                self._log.emit(
                    "virtual",
                    f"warning: {request.queue_id}: maildir delivery failed: {where}: {reason}",
                )
            results.append(
                RecipientResult(
                    rcpt.index,
                    Disposition.DEFERRED,
                    dsn,
                    f"Maildir write failed: {reason}",
                    "maildir",
                    0.0,
                    elapsed,
                )
            )
        return results

    def _write(
        self, box: Path, body: bytes, converted: bool, sender: str, rcpt: str
    ) -> tuple[float, Exception | None]:
        # Runs in a pool thread. Never raises: an exception escaping here would leave
        # the batch without results.
        deliver = deliver_lf_to_maildir if converted else deliver_to_maildir
        start = self._clock()
        try:
            if box.name == JUNK_FOLDER:
                ensure_maildir(box.parent)
                ensure_maildir(box)
                (box / "maildirfolder").touch(mode=0o600)
            deliver(box, body, return_path=sender, delivered_to=rcpt, hostname=self._hostname)
        except Exception as exc:
            return self._clock() - start, exc
        return self._clock() - start, None

    async def close(self) -> None:
        self._pool.shutdown(wait=True)


class DiscardTransport:
    """Postfix's discard(8): the recipient is done, nothing is written."""

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        text = request.nexthop.nexthop or "discarded"
        return [
            _local(r, Disposition.SENT, "2.0.0", text, relay="none") for r in request.recipients
        ]

    async def close(self) -> None:
        return None


class ErrorTransport:
    """Postfix's error(8): the recipient bounces with the configured text."""

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        text = request.nexthop.nexthop or "User unknown"
        dsn, _, rest = text.partition(" ")
        if not (len(dsn) >= 5 and dsn[0] == "5" and dsn[1] == "."):
            dsn, rest = "5.0.0", text
        return [_local(r, Disposition.BOUNCED, dsn, rest, relay="none") for r in request.recipients]

    async def close(self) -> None:
        return None


def _local(
    rcpt: BatchRecipient, disposition: Disposition, dsn: str, text: str, *, relay: str = "none"
) -> RecipientResult:
    return RecipientResult(rcpt.index, disposition, dsn, text, relay)
