"""``ironpost queue``: list, show, delete, hold, release and count queued mail.

The Postfix tools it stands in for: ``mailq``/``postqueue -p`` (list), ``postqueue -j``
(list --json), ``postcat -q`` (show), ``postsuper -d/-h/-H`` (delete, hold, release).
Every subcommand opens the queue database with its own connection and a busy timeout,
so it works while the server runs. Formatting is done by pure functions of
:class:`~ironpost.queue.model.QueuedMessage` values, tested without a database.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ironpost.cli.common import add_config_option, load_or_exit
from ironpost.queue.model import QueuedMessage, QueueState, RecipientStatus
from ironpost.queue.sqlite import SqliteQueue, open_queue

EMPTY_SENDER = "MAILER-DAEMON"  # Postfix's empty_address_recipient, as mailq shows it
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# Postfix's showq_compat formats: short ids (<= 10 chars) and long ids. Ours are 16
# characters, so in practice the long layout is used, exactly as Postfix does with
# enable_long_queue_ids = yes; both keep the "recipient under sender" alignment.
_SHORT = ("%-11s %7s %-20s %s", "%-11s %7d %20.20s %s", 10)
_LONG = ("%-17s %8s %-19s %s", "%-17s %8d %19.19s %s", 16)
_SHORT_HEAD = ("-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
_LONG_HEAD = ("----Queue ID-----", "--Size--", "---Arrival Time----", "--Sender/Recipient------")


def asctime(epoch: float) -> str:
    """C's ``asctime(localtime())`` without the newline: ``Mon Jan  5 10:23:45 2024``."""
    t = time.localtime(epoch)
    return (
        f"{_DAYS[t.tm_wday]} {_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} {t.tm_year}"
    )


def _printable(text: str) -> str:
    # Like Postfix's printable(): addresses come from the network; never let control
    # characters reach the administrator's terminal.
    return "".join(c if c.isprintable() else "?" for c in text)


def format_mailq(messages: Sequence[QueuedMessage], *, long_ids: bool | None = None) -> str:
    """The queue listing, byte for byte in Postfix's ``mailq`` layout."""
    if not messages:
        return "Mail queue is empty\n"
    if long_ids is None:
        long_ids = any(len(m.id) > 10 for m in messages)
    string_fmt, sender_fmt, _ = _LONG if long_ids else _SHORT
    out = [string_fmt % (_LONG_HEAD if long_ids else _SHORT_HEAD)]
    total = 0
    for n, m in enumerate(messages):
        if n:
            out.append("")
        mark = {QueueState.ACTIVE: "*", QueueState.HOLD: "!"}.get(m.state, "")
        sender = _printable(m.envelope.sender) or EMPTY_SENDER
        out.append(sender_fmt % (m.id + mark, m.size, asctime(m.envelope.arrival), sender))
        saved_reason = ""
        for r in m.recipients:
            if r.status.is_final:
                continue  # done recipients are not shown, as in Postfix
            why = (r.last_reply or "") if r.status is RecipientStatus.DEFERRED else ""
            why = _printable(why)
            if why != saved_reason:
                saved_reason = why
                shown = why or "reason unavailable"
                out.append(" " * max(0, 76 - len(shown)) + f"({shown})")
            out.append(string_fmt % ("", "", "", _printable(r.spec.address)))
        total += m.size
    out.append("")
    count = len(messages)
    out.append(f"-- {total // 1024} Kbytes in {count} Request{'' if count == 1 else 's'}.")
    return "\n".join(line.rstrip() for line in out) + "\n"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def message_to_json(m: QueuedMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "state": m.state.value,
        "arrival": _iso(m.envelope.arrival),
        "size": m.size,
        "sender": m.envelope.sender,
        "recipients": [
            {
                "address": r.spec.address,
                "original": r.spec.original,
                "status": r.status.value,
                "attempts": r.attempts,
                "next_attempt": _iso(r.next_attempt),
                "last_reply": r.last_reply,
            }
            for r in m.recipients
        ],
    }


def format_json(messages: Sequence[QueuedMessage]) -> str:
    return json.dumps([message_to_json(m) for m in messages], indent=2, ensure_ascii=False) + "\n"


def format_show(m: QueuedMessage, content: bytes) -> str:
    """Envelope and content, in the spirit of ``postcat -q``."""
    e = m.envelope
    c = e.client
    lines = [
        "*** ENVELOPE RECORDS ***",
        f"queue_id: {m.id}",
        f"state: {m.state.value}",
        f"message_size: {m.size}",
        f"message_arrival_time: {asctime(e.arrival)}",
        f"sender: {_printable(e.sender)}",
        f"client: {_printable(c.name)}[{c.address}] helo={_printable(c.helo)}",
        f"protocol: {c.protocol}",
    ]
    for label, value in (
        ("tls", c.tls),
        ("sasl_username", c.sasl_username),
        ("body_type", e.body_type),
        ("ret", e.ret),
        ("envid", e.envid),
    ):
        if value is not None:
            lines.append(f"{label}: {_printable(value)}")
    if e.smtputf8:
        lines.append("smtputf8: yes")
    for r in m.recipients:
        lines.append(f"original_recipient: {_printable(r.spec.original)}")
        lines.append(
            f"recipient: {_printable(r.spec.address)} status={r.status.value} attempts={r.attempts}"
        )
        if r.last_reply:
            lines.append(f"last_reply: {_printable(r.last_reply)}")
    text = content.decode("utf-8", "replace").replace("\r\n", "\n")
    header, sep, body = text.partition("\n\n")
    lines.append("*** MESSAGE CONTENTS ***")
    lines.append(header)
    if sep:
        lines.append("")
        lines.append(body.rstrip("\n"))
    lines.append("*** END OF MESSAGE ***")
    return "\n".join(lines) + "\n"


def format_stats(counts: dict[QueueState, int]) -> str:
    lines = [f"{state.value:<9} {counts.get(state, 0)}" for state in QueueState]
    lines.append(f"{'total':<9} {sum(counts.values())}")
    return "\n".join(lines) + "\n"


# -- commands: each takes an open store, so tests need no configuration ---------------


def cmd_list(store: SqliteQueue, *, as_json: bool, out: TextIO) -> int:
    messages = store.list_messages()
    out.write(format_json(messages) if as_json else format_mailq(messages))
    return 0


def cmd_show(store: SqliteQueue, message_id: str, *, out: TextIO, err: TextIO) -> int:
    message = store.get(message_id)
    content = store.read_content(message_id) if message is not None else None
    if message is None or content is None:
        err.write(f"ironpost queue: {message_id}: no such message\n")
        return 1
    out.write(format_show(message, content))
    return 0


def cmd_delete(store: SqliteQueue, target: str, *, out: TextIO, err: TextIO) -> int:
    if target == "ALL":
        count = store.delete_all()
        out.write(f"ironpost queue: Deleted: {count} message{'' if count == 1 else 's'}\n")
        return 0
    if not store.delete(target):
        err.write(f"ironpost queue: {target}: no such message\n")
        return 1
    out.write("ironpost queue: Deleted: 1 message\n")
    return 0


def cmd_hold(store: SqliteQueue, message_id: str, *, release: bool, err: TextIO) -> int:
    ok = store.release(message_id) if release else store.hold(message_id)
    if not ok:
        what = "no such message on hold" if release else "no such message"
        err.write(f"ironpost queue: {message_id}: {what}\n")
        return 1
    return 0


def _open_from_args(args: argparse.Namespace) -> SqliteQueue:
    loaded = load_or_exit(args)
    return open_queue(Path(loaded.settings.text("queue_directory")))


def run(args: argparse.Namespace) -> int:
    store = _open_from_args(args)
    try:
        action = args.queue_command
        if action == "list":
            return cmd_list(store, as_json=args.json, out=sys.stdout)
        if action == "show":
            return cmd_show(store, args.id, out=sys.stdout, err=sys.stderr)
        if action == "delete":
            return cmd_delete(store, args.target, out=sys.stdout, err=sys.stderr)
        if action in ("hold", "release"):
            return cmd_hold(store, args.id, release=action == "release", err=sys.stderr)
        sys.stdout.write(format_stats(store.stats()))
        return 0
    finally:
        store.close()


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("queue", help="inspect and manage the mail queue")
    # -c goes on each action, not on "queue" too: argparse would let the action's default
    # overwrite a value given before it.
    sub = parser.add_subparsers(dest="queue_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("list", help="list queued mail (like mailq)")
    p.add_argument("--json", action="store_true", help="one JSON object per message")
    add_config_option(p)
    p = sub.add_parser("show", help="print a message's envelope and content (like postcat -q)")
    p.add_argument("id")
    add_config_option(p)
    p = sub.add_parser("delete", help="delete a message, or ALL (like postsuper -d)")
    p.add_argument("target", metavar="ID|ALL")
    add_config_option(p)
    for name, text in (("hold", "put a message on hold"), ("release", "release a held message")):
        p = sub.add_parser(name, help=text)
        p.add_argument("id")
        add_config_option(p)
    p = sub.add_parser("stats", help="count messages by state")
    add_config_option(p)
    parser.set_defaults(func=run)
