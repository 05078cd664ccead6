"""Delivery status notifications (RFC 3464): bounces, delay warnings, success notices.

Owns the bytes of a DSN and the rules of who gets one. Pure: no I/O, no clock (``now``
is an argument), no randomness (the Message-ID comes from the caller's generator).

Invariants:

- :func:`build_dsn` never raises on any original content (binary, NULs, bare CR/LF, no
  header/body separator, a MIME boundary look-alike): the result is always a well-formed
  ``multipart/report`` with CRLF line ends, whose boundary does not occur in the content;
- text that came from the network (addresses, remote replies, ENVID) is put in header
  fields only after CR, LF and other controls are removed, and lines are kept well under
  998 octets, so a hostile reply cannot inject a field or a MIME part;
- a non-SMTPUTF8 DSN is 7-bit in everything we write (only the returned original may be
  8-bit); an SMTPUTF8 message gets the RFC 6533 types (``message/global-delivery-status``,
  ``message/global``, ``message/global-headers``) and UTF-8 in its fields;
- the notice rules: the null sender never gets a notice; a failed bounce (a *double
  bounce*) goes to ``2bounce_notice_recipient`` from ``double_bounce_sender@$myorigin``,
  and a failed double bounce is discarded, so notices never loop (docs/bounces.md).
"""

from __future__ import annotations

import email.utils
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from ironpost.queue.model import Envelope


class Action(StrEnum):
    """RFC 3464 2.3.3 ``Action`` values."""

    FAILED = "failed"
    DELAYED = "delayed"
    DELIVERED = "delivered"
    RELAYED = "relayed"
    EXPANDED = "expanded"


class NoticeKind(StrEnum):
    """Which notice a DSN is; one DSN carries one kind (as Postfix sends them apart)."""

    FAILURE = "failure"
    DELAY = "delay"
    SUCCESS = "success"


_KIND_OF_ACTION = {
    Action.FAILED: NoticeKind.FAILURE,
    Action.DELAYED: NoticeKind.DELAY,
    Action.DELIVERED: NoticeKind.SUCCESS,
    Action.RELAYED: NoticeKind.SUCCESS,
    Action.EXPANDED: NoticeKind.SUCCESS,
}
_NOTIFY_OF_KIND = {
    NoticeKind.FAILURE: "FAILURE",
    NoticeKind.DELAY: "DELAY",
    NoticeKind.SUCCESS: "SUCCESS",
}
SUBJECTS = {
    NoticeKind.FAILURE: "Undelivered Mail Returned to Sender",
    NoticeKind.DELAY: "Delayed Mail (still being retried)",
    NoticeKind.SUCCESS: "Successful Mail Delivery Report",
}


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """One recipient's line in a DSN.

    ``reason`` is the human-readable text (as in the log's ``status=… (reason)``, e.g.
    ``host mx.example[192.0.2.1] said: 550 5.1.1 no such user (in reply to RCPT TO
    command)``). ``diagnostic`` is the remote server's reply itself (``550 5.1.1 no such
    user``) and becomes ``Diagnostic-Code: smtp; …``; without one, the reason is given as
    ``Diagnostic-Code: X-Ironpost; …`` (Postfix: ``X-Postfix``).
    """

    final_recipient: str
    action: Action
    status: str  # RFC 3463 code, e.g. "5.1.1"
    reason: str = ""
    original_recipient: str | None = None  # the address as received (orig_to)
    orcpt: str | None = None  # DSN ORCPT, "addr-type;address" (decoded), as the queue keeps it
    remote_mta: str | None = None  # host name of the remote MTA, without [address]
    diagnostic: str | None = None
    last_attempt: float | None = None
    will_retry_until: float | None = None  # delayed only


class SettingsLike(Protocol):
    def text(self, name: str) -> str: ...


# -- who gets a notice ----------------------------------------------------------------


def should_notify(notify: tuple[str, ...] | None, action: Action) -> bool:
    """Whether a recipient's NOTIFY asks for a notice about ``action`` (RFC 3461 4.1).

    No NOTIFY means FAILURE,DELAY, as Postfix (the delay notice also needs
    ``delay_warning_time`` > 0: the caller's business).
    """
    wanted = ("FAILURE", "DELAY") if notify is None else notify
    if "NEVER" in wanted:
        return False
    return _NOTIFY_OF_KIND[_KIND_OF_ACTION[action]] in wanted


def _qualify(address: str, myorigin: str) -> str:
    return address if "@" in address or not myorigin else f"{address}@{myorigin}"


def double_bounce_sender(settings: SettingsLike) -> str:
    """The envelope sender of a double bounce: ``double_bounce_sender@$myorigin``."""
    return _qualify(settings.text("double_bounce_sender"), settings.text("myorigin"))


@dataclass(frozen=True, slots=True)
class NoticeRoute:
    """Where a notice about a message goes, and with which envelope sender."""

    recipient: str | None  # None: send no notice (discard)
    sender: str  # "" for a notice to the original sender; double-bounce@… otherwise
    is_double_bounce: bool


def bounce_recipient_for(
    envelope_sender: str,
    settings: SettingsLike,
    kind: NoticeKind = NoticeKind.FAILURE,
) -> NoticeRoute:
    """Who gets the ``kind`` notice about a message from ``envelope_sender``.

    - a normal sender gets it, sent with the null sender ``<>``;
    - the null sender (the message is itself a notice): a FAILURE becomes a double
      bounce to ``2bounce_notice_recipient`` (qualified with ``@$myorigin``) sent from
      ``double_bounce_sender@$myorigin``; delay and success notices are not sent;
    - ``double_bounce_sender@$myorigin`` (a double bounce that failed): nothing, ever.
    """
    if envelope_sender and envelope_sender.lower() != double_bounce_sender(settings).lower():
        return NoticeRoute(envelope_sender, "", False)
    if envelope_sender or kind is not NoticeKind.FAILURE:
        return NoticeRoute(None, "", False)
    recipient = _qualify(settings.text("2bounce_notice_recipient"), settings.text("myorigin"))
    return NoticeRoute(recipient, double_bounce_sender(settings), True)


def notice_kind(reports: Sequence[RecipientReport]) -> NoticeKind:
    """The kind of a DSN about ``reports``: failure beats delay beats success."""
    kinds = {_KIND_OF_ACTION[r.action] for r in reports}
    for kind in (NoticeKind.FAILURE, NoticeKind.DELAY):
        if kind in kinds:
            return kind
    return NoticeKind.SUCCESS


# -- text hygiene -------------------------------------------------------------------------

_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_FIELD_MAX = 900  # characters of one field value; lines stay far below 998 octets
_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9.\-\[\]:_]")


def _clean(text: str, utf8: bool, limit: int = _FIELD_MAX) -> str:
    """One line of header text: controls become a space, surrogates and (unless
    ``utf8``) non-ASCII become ``?``."""
    text = _CONTROLS.sub(" ", text[: limit * 2]).strip()
    if utf8:
        text = text.encode("utf-8", "replace").decode("utf-8")
    elif not text.isascii():
        text = _NON_ASCII.sub("?", text)
    return text[:limit]


def _addr(address: str, utf8: bool) -> str:
    """``type; address`` for Final-Recipient (RFC 3464 2.3.2, RFC 6533 3)."""
    address = _clean(address, True)
    if address.isascii():
        return f"rfc822; {address}"
    if utf8:
        return f"utf-8; {address}"
    # RFC 6533 utf-8-addr-xtext: only ASCII may appear in a classic DSN.
    return "utf-8; " + "".join(c if c.isascii() else f"\\x{{{ord(c):X}}}" for c in address)


def _fold(name: str, value: str) -> str:
    """``Name: value`` folded at spaces near 78 columns (RFC 5322 2.2.3)."""
    line = f"{name}: {value}"
    if len(line) <= 78:
        return line
    out: list[str] = []
    current = ""
    for word in line.split(" "):
        if current and len(current) + 1 + len(word) > 78:
            out.append(current)
            current = " " + word
        else:
            current = f"{current} {word}" if current else word
    out.append(current)
    return "\r\n".join(out)


def _date(epoch: float) -> str:
    return email.utils.format_datetime(datetime.fromtimestamp(epoch, UTC))


# -- the parts -------------------------------------------------------------------------

_TRAILER = """\
For further assistance, please send mail to postmaster.

If you do so, please include this problem report. You can
delete your own text from the attached returned message.

                   The mail system
"""


def _intro(
    kind: NoticeKind,
    hostname: str,
    envelope: Envelope,
    reports: Sequence[RecipientReport],
    now: float,
) -> str:
    head = f"This is the mail system at host {hostname}.\n\n"
    if kind is NoticeKind.FAILURE:
        return (
            head + "I'm sorry to have to inform you that your message could not\n"
            "be delivered to one or more recipients. It's attached below.\n\n" + _TRAILER
        )
    if kind is NoticeKind.DELAY:
        hours = max(1, int((now - envelope.arrival) // 3600))
        until = max((r.will_retry_until or 0.0) for r in reports)
        text = (
            head + "####################################################################\n"
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
            "####################################################################\n\n"
            f"Your message could not be delivered for more than {hours} hour(s).\n"
        )
        if until > envelope.arrival:
            days = max(1, round((until - envelope.arrival) / 86400))
            text += f"It will be retried until it is {days} day(s) old.\n"
        return text + "\n" + _TRAILER
    return (
        head + "Your message was successfully delivered to the destination(s)\n"
        "listed below. If the message was delivered to mailbox you will\n"
        "receive no further notifications. Otherwise you may still receive\n"
        "notifications of mail delivery errors from other systems.\n\n"
        "                   The mail system\n"
    )


def _human_part(
    kind: NoticeKind,
    hostname: str,
    envelope: Envelope,
    reports: Sequence[RecipientReport],
    now: float,
    utf8: bool,
) -> str:
    lines = [_intro(kind, hostname, envelope, reports, now)]
    for r in reports:
        who = f"<{_clean(r.final_recipient, utf8)}>"
        original = r.original_recipient
        if original and original.lower() != r.final_recipient.lower():
            who += f" (expanded from <{_clean(original, utf8)}>)"
        reason = _clean(r.reason or r.diagnostic or r.action.value, utf8, 4000)
        lines.append(
            "\n"
            + textwrap.fill(
                f"{who}: {reason}",
                width=76,
                subsequent_indent="    ",
                break_long_words=True,
                break_on_hyphens=False,
            )
            + "\n"
        )
    return "".join(lines)


def _status_part(
    queue_id: str, hostname: str, envelope: Envelope, reports: Sequence[RecipientReport], utf8: bool
) -> str:
    fields = [
        f"Reporting-MTA: dns; {hostname}",
        f"X-Ironpost-Queue-ID: {_clean(queue_id, False, 64)}",
        _fold("X-Ironpost-Sender", _addr(envelope.sender, utf8)),
    ]
    if envelope.envid:
        fields.append(_fold("Original-Envelope-Id", _clean(envelope.envid, utf8, 100)))
    fields.append(f"Arrival-Date: {_date(envelope.arrival)}")
    out = ["\r\n".join(fields)]
    for r in reports:
        f = [_fold("Final-Recipient", _addr(r.final_recipient, utf8))]
        if r.orcpt:
            addr_type, _, addr = r.orcpt.partition(";")
            f.append(
                _fold("Original-Recipient", f"{_clean(addr_type, False, 32)};{_clean(addr, utf8)}")
            )
        elif r.original_recipient and r.original_recipient != r.final_recipient:
            # As Postfix: without ORCPT, the address as received (orig_to).
            f.append(_fold("Original-Recipient", _addr(r.original_recipient, utf8)))
        f.append(f"Action: {r.action.value}")
        f.append(f"Status: {_clean(r.status, False, 16)}")
        if r.remote_mta:
            f.append(_fold("Remote-MTA", f"dns; {_clean(r.remote_mta, utf8, 255)}"))
        if r.diagnostic:
            f.append(_fold("Diagnostic-Code", f"smtp; {_clean(r.diagnostic, utf8)}"))
        elif r.reason:
            f.append(_fold("Diagnostic-Code", f"X-Ironpost; {_clean(r.reason, utf8)}"))
        if r.last_attempt is not None:
            f.append(f"Last-Attempt-Date: {_date(r.last_attempt)}")
        if r.action is Action.DELAYED and r.will_retry_until is not None:
            f.append(f"Will-Retry-Until: {_date(r.will_retry_until)}")
        out.append("\r\n".join(f))
    return "\r\n\r\n".join(out) + "\r\n"


def to_crlf(data: bytes) -> bytes:
    """Every line end (CRLF, bare LF, bare CR) as CRLF: three C-level passes."""
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data.replace(b"\n", b"\r\n")


def header_section(content: bytes) -> bytes:
    """The original's header section (with its final CRLF, without the blank line); all of
    it when there is no blank line; empty when the content starts with one."""
    if content.startswith(b"\r\n"):
        return b""
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 2]


def _returned(content: bytes, full: bool, limit: int) -> bytes:
    data = to_crlf(content)
    if not full:
        data = header_section(data)
    if len(data) > limit:
        # Cut at a line end, as Postfix copies whole records: no half line is returned.
        cut = data.rfind(b"\r\n", 0, limit)
        # Without a line end in reach, a hard cut; never half of a CRLF.
        data = data[: cut + 2] if cut >= 0 else data[:limit].removesuffix(b"\r")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def _boundary(queue_id: str, now: float, hostname: str, content: bytes) -> str:
    base = _HOST_UNSAFE.sub("_", f"{queue_id}.{int(now)}/{hostname}")[:60]
    boundary, n = base, 0
    while boundary.encode() in content:
        n += 1
        boundary = f"{base}={n}"
    return boundary


# -- the DSN ------------------------------------------------------------------------------


def build_dsn(
    *,
    envelope: Envelope,
    queue_id: str,
    reports: Sequence[RecipientReport],
    content: bytes,
    hostname: str,
    bounce_size_limit: int,
    now: float,
    message_id: Callable[[], str],
    recipient: str | None = None,
    kind: NoticeKind | None = None,
) -> bytes:
    """The RFC 3464 notice about ``reports`` of message ``queue_id``, as CRLF bytes.

    ``recipient`` is the notice's To (default: the original sender; for a double bounce,
    the postmaster from :func:`bounce_recipient_for`). ``kind`` defaults to
    :func:`notice_kind`. The original is returned in full (up to ``bounce_size_limit``
    bytes) in a failure notice unless the sender asked RET=HDRS; delay and success
    notices return its headers only, unless RET=FULL.
    """
    if not reports:
        raise ValueError("a DSN needs at least one recipient report")
    kind = kind or notice_kind(reports)
    utf8 = envelope.smtputf8
    host = _clean(hostname, False, 255) or "localhost"
    to = recipient if recipient is not None else envelope.sender
    ret = (envelope.ret or "").upper()
    full = ret == "FULL" or (kind is NoticeKind.FAILURE and ret != "HDRS")
    original = _returned(content, full, max(0, bounce_size_limit))
    mid = _clean(message_id(), False, 250)
    if not mid.startswith("<"):
        mid = f"<{mid}>"

    human = _human_part(kind, host, envelope, reports, now, utf8)
    human_bytes = to_crlf(human.encode("utf-8" if utf8 else "ascii", "replace"))
    status = _status_part(queue_id, host, envelope, reports, utf8).encode("utf-8", "replace")
    boundary = _boundary(queue_id, now, host, b"\0".join((original, human_bytes, status)))
    if full:
        original_type = "message/global" if utf8 else "message/rfc822"
        description = "Undelivered Message" if kind is NoticeKind.FAILURE else "Message"
    else:
        original_type = "message/global-headers" if utf8 else "text/rfc822-headers"
        description = (
            "Undelivered Message Headers" if kind is NoticeKind.FAILURE else "Message Headers"
        )
    eight_bit = not original.isascii()
    top_cte = "8bit" if eight_bit or utf8 else "7bit"
    headers = [
        f"From: MAILER-DAEMON@{host} (Mail Delivery System)",
        _fold("To", f"<{_clean(to, utf8, 400)}>"),
        f"Subject: {SUBJECTS[kind]}",
        "Auto-Submitted: auto-replied",
        f"Date: {_date(now)}",
        f"Message-ID: {mid}",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        f"Content-Transfer-Encoding: {top_cte}",
    ]
    parts = [
        "\r\n".join(headers).encode("utf-8", "replace"),
        b"\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n",
        f"--{boundary}\r\n".encode(),
        b"Content-Description: Notification\r\n",
        b"Content-Type: text/plain; charset=" + (b"utf-8" if utf8 else b"us-ascii") + b"\r\n",
        b"Content-Transfer-Encoding: 8bit\r\n" if utf8 else b"",
        b"\r\n",
        human_bytes,
        f"\r\n--{boundary}\r\n".encode(),
        b"Content-Description: Delivery report\r\n",
        b"Content-Type: message/global-delivery-status\r\n"
        if utf8
        else b"Content-Type: message/delivery-status\r\n",
        b"Content-Transfer-Encoding: 8bit\r\n" if utf8 else b"",
        b"\r\n",
        status,
        f"\r\n--{boundary}\r\n".encode(),
        f"Content-Description: {description}\r\n".encode(),
        f"Content-Type: {original_type}\r\n".encode(),
        b"Content-Transfer-Encoding: 8bit\r\n" if eight_bit else b"",
        b"\r\n",
        original,
        f"--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)
