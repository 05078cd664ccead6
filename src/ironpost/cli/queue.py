"""``ironpost queue``: list, show, delete, hold, release, requeue, flush and shape queued mail.

The Postfix tools it stands in for: ``mailq``/``postqueue -p`` (list), ``postqueue -j``
(list --json), ``postcat -q`` (show), ``postsuper -d/-h/-H/-r`` (delete, hold, release,
requeue; by id, ``ALL``, ``-`` for ids on stdin, or ``--sender``/``--domain``),
``postqueue -f``/``-s`` (flush [--domain]) and ``qshape`` (stats). Two have no Postfix
counterpart: ``migrate --to URL`` moves a stopped server's SQLite queue into PostgreSQL
(:mod:`ironpost.queue.migrate`), and ``nodes`` lists the nodes sharing a PostgreSQL queue.
Every subcommand but ``migrate`` opens the queue database with its own connection and a
busy timeout, so it works while the server runs; a bulk action is one transaction.
After a change that makes mail due (release, requeue, flush) the server is poked through
its trigger socket; if it is not running, the change simply takes effect when it starts.
Formatting is done by pure functions, tested without a database. ``list`` streams: the
store hands over only the columns mailq prints, row by row (no envelope is decoded),
and the text goes out in large chunks as it is made.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ironpost.cli.common import add_config_option, load_or_exit
from ironpost.config import LoadedConfig
from ironpost.queue.admin_sql import ListingRow
from ironpost.queue.engines import QueueConfigError, Store, open_store
from ironpost.queue.model import CorruptRecord, QueuedMessage, QueueState, RecipientStatus
from ironpost.queue.shape import (
    DEFAULT_BUCKET_MINUTES,
    DEFAULT_STATES,
    format_shape,
    geometric_buckets,
    shape,
    shape_to_json,
)
from ironpost.queue.trigger import FLUSH, WAKE, notify

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


_SECONDS = tuple(f"{n:02d}" for n in range(60))


class _Stamps:
    """:func:`asctime` for a whole listing: one ``localtime()`` per minute, not per message
    (in a queue that built up over days almost every arrival is a second of its own).
    Exact: a minute is served from the cache only when local time runs in step with it,
    its first second reading :00 and its last :59 at one UTC offset (so no offset change,
    nor an offset with seconds, falls inside it); any other minute is computed per second."""

    def __init__(self) -> None:
        self._minutes: dict[int, tuple[str, str] | None] = {}

    def __call__(self, epoch: float) -> str:
        minute, second = divmod(int(epoch // 1), 60)
        try:
            parts = self._minutes[minute]
        except KeyError:
            parts = self._minutes[minute] = self._minute(minute * 60)
        if parts is None:
            return asctime(epoch)
        return parts[0] + _SECONDS[second] + parts[1]

    @staticmethod
    def _minute(start: int) -> tuple[str, str] | None:
        first, last = time.localtime(start), time.localtime(start + 59)
        if first.tm_sec != 0 or last.tm_sec != 59 or first.tm_gmtoff != last.tm_gmtoff:
            return None
        text = asctime(start)  # "Mon Jan  5 10:23:00 2024": keep all but the seconds
        return text[:17], text[19:]


def printable(text: str) -> str:
    # Like Postfix's printable(): addresses come from the network; never let control
    # characters reach the administrator's terminal.
    return "".join(c if c.isprintable() else "?" for c in text)


_MARKS = {QueueState.ACTIVE.value: "*", QueueState.HOLD.value: "!"}
_CHUNK_LINES = 8192  # lines buffered between writes: few syscalls, bounded memory


def write_mailq(rows: Iterable[ListingRow], out: TextIO, *, long_ids: bool) -> int:
    """Write the queue listing, byte for byte in Postfix's ``mailq`` layout, from the
    store's listing rows (:func:`ironpost.queue.admin_sql.listing_rows`: grouped by message,
    one per live recipient; a row whose address is None is a message without one), as
    they come, in large chunks. Returns the number of messages listed.

    Per row it does only what the layout needs: no envelope is decoded, a reason line is
    formatted once per distinct reason, arrival stamps with one localtime() a minute."""
    string_fmt, sender_fmt, _ = _LONG if long_ids else _SHORT
    pad = string_fmt % ("", "", "", "")  # the recipient column's indent
    reason_lines: dict[str, str] = {}
    stamp_of = _Stamps()
    stamp = ""
    last_second: float | None = None
    buf: list[str] = []
    append = buf.append
    count = total = 0
    current: str | None = None
    saved_reason = ""
    # The loop runs once per recipient: the common cases are tested inline (isprintable,
    # dict hits) and the rare ones call out.
    for message_id, state, size, arrival, sender, address, reason in rows:
        if message_id != current:
            current = message_id
            if count:
                append("")
                if len(buf) >= _CHUNK_LINES:
                    out.write("\n".join(buf) + "\n")
                    buf.clear()
            else:
                append(string_fmt % (_LONG_HEAD if long_ids else _SHORT_HEAD))
            count += 1
            total += size
            # localtime() ignores fractions, so one stamp serves a whole second, and
            # messages listed in arrival order often share it.
            second = arrival // 1
            if second != last_second:
                last_second = second
                stamp = stamp_of(second)
            if not sender.isprintable():
                sender = printable(sender)
            mark = _MARKS.get(state, "")
            append((sender_fmt % (message_id + mark, size, stamp, sender or EMPTY_SENDER)).rstrip())
            saved_reason = ""
        if address is None:
            continue
        why = reason or ""
        if not why.isprintable():
            why = printable(why)
        if why != saved_reason:
            saved_reason = why
            line = reason_lines.get(why)
            if line is None:
                line = reason_lines[why] = f"({why or 'reason unavailable'})".rjust(78)
            append(line)
        if not address.isprintable():
            address = printable(address)
        append((pad + address).rstrip())
    if not count:
        out.write("Mail queue is empty\n")
        return 0
    append("")
    append(f"-- {total // 1024} Kbytes in {count} Request{'' if count == 1 else 's'}.")
    out.write("\n".join(buf) + "\n")
    return count


def _listing_rows(messages: Sequence[QueuedMessage]) -> Iterator[ListingRow]:
    # Decoded messages as the store's listing rows, so that both paths share one formatter.
    for m in messages:
        live = [r for r in m.recipients if not r.status.is_final]  # done ones are not shown
        head = (m.id, m.state.value, m.size, m.envelope.arrival, m.envelope.sender)
        if not live:
            yield (*head, None, None)
        for r in live:
            deferred = r.status is RecipientStatus.DEFERRED
            yield (*head, r.spec.address, r.last_reply if deferred else None)


def format_mailq(messages: Sequence[QueuedMessage], *, long_ids: bool | None = None) -> str:
    """The queue listing of decoded messages, byte for byte in Postfix's ``mailq`` layout."""
    if long_ids is None:
        long_ids = any(len(m.id) > 10 for m in messages)
    out = io.StringIO()
    write_mailq(_listing_rows(messages), out, long_ids=long_ids)
    return out.getvalue()


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def message_to_json(m: QueuedMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "state": m.state.value,
        "arrival": iso(m.envelope.arrival),
        "size": m.size,
        "sender": m.envelope.sender,
        "recipients": [
            {
                "address": r.spec.address,
                "original": r.spec.original,
                "status": r.status.value,
                "attempts": r.attempts,
                "next_attempt": iso(r.next_attempt),
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
        f"sender: {printable(e.sender)}",
        f"client: {printable(c.name)}[{c.address}] helo={printable(c.helo)}",
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
            lines.append(f"{label}: {printable(value)}")
    if e.smtputf8:
        lines.append("smtputf8: yes")
    for r in m.recipients:
        lines.append(f"original_recipient: {printable(r.spec.original)}")
        lines.append(
            f"recipient: {printable(r.spec.address)} status={r.status.value} attempts={r.attempts}"
        )
        if r.last_reply:
            lines.append(f"last_reply: {printable(r.last_reply)}")
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


def cmd_list(store: Store, *, as_json: bool, out: TextIO) -> int:
    if as_json:
        out.write(format_json(store.list_messages()))
        return 0
    # Streamed from the store: at 100,000 messages, decoding every envelope into dataclasses
    # and building the whole text first took seconds.
    long_ids = store.has_id_longer_than(_SHORT[2])
    store.scan_listing(lambda rows: write_mailq(rows, out, long_ids=long_ids))
    return 0


def cmd_show(store: Store, message_id: str, *, out: TextIO, err: TextIO) -> int:
    message = store.get(message_id)
    try:
        content = store.read_content(message_id) if message is not None else None
    except CorruptRecord as exc:  # a body file missing or damaged
        err.write(f"ironpost queue: {message_id}: cannot read the message content: {exc}\n")
        return 1
    if message is None or content is None:
        err.write(f"ironpost queue: {message_id}: no such message\n")
        return 1
    out.write(format_show(message, content))
    return 0


@dataclass(frozen=True, slots=True)
class Selection:
    """What an admin action applies to: explicit ids (``ALL`` alone: every message; ``-``:
    ids read from stdin, as postsuper does), or messages matching ``--sender`` and/or
    ``--domain``."""

    ids: tuple[str, ...] = ()
    sender: str | None = None
    domain: str | None = None

    @property
    def explicit(self) -> bool:
        return bool(self.ids) and self.ids != ("ALL",)


_Operation = Callable[[Store, Sequence[str]], int]

# action -> (store operation, postsuper's wording of the count, request to poke the server)
_ACTIONS: dict[str, tuple[_Operation, str, bytes | None]] = {
    "delete": (lambda store, ids: store.delete_messages(ids), "Deleted", None),
    "hold": (lambda store, ids: store.hold_messages(ids), "Placed on hold", None),
    "release": (lambda store, ids: store.release_messages(ids), "Released from hold", WAKE),
    "requeue": (lambda store, ids: store.requeue_messages(ids), "Requeued", WAKE),
}


def _ids_from(stream: TextIO) -> list[str]:
    # mailq output piped through awk still carries the "*" (active) and "!" (held) marks.
    return [word.rstrip("*!") for word in stream.read().split() if word.rstrip("*!")]


def resolve(store: Store, selection: Selection, stdin: TextIO | None = None) -> list[str]:
    if selection.ids == ("ALL",):
        return store.select()
    if selection.ids:
        ids: list[str] = []
        for word in selection.ids:
            ids.extend(_ids_from(stdin or sys.stdin) if word == "-" else [word])
        return list(dict.fromkeys(ids))
    return store.select(sender=selection.sender, domain=selection.domain)


def cmd_apply(
    store: Store,
    action: str,
    selection: Selection,
    *,
    out: TextIO,
    err: TextIO,
    stdin: TextIO | None = None,
    queue_directory: Path | None = None,
) -> int:
    """delete/hold/release/requeue the selected messages in one transaction, report the
    count as postsuper does, then poke the server (release, requeue). Exit status 1 when
    an explicitly named message does not exist (or, for release, is not on hold)."""
    operation, verb, trigger = _ACTIONS[action]
    ids = resolve(store, selection, stdin)
    missing: list[str] = []
    if selection.explicit:
        for message_id in ids:
            state = store.state_of(message_id)
            if state is None or (action == "release" and state is not QueueState.HOLD):
                missing.append(message_id)
    count = operation(store, ids)
    what = "no such message on hold" if action == "release" else "no such message"
    for message_id in missing:
        err.write(f"ironpost queue: {printable(message_id)}: {what}\n")
    out.write(f"ironpost queue: {verb}: {count} message{'' if count == 1 else 's'}\n")
    if trigger is not None and count and queue_directory is not None:
        notify(queue_directory, trigger)
    return 1 if missing else 0


def cmd_delete(store: Store, target: str, *, out: TextIO, err: TextIO) -> int:
    """``delete ID|ALL`` (kept for callers of the single-target form)."""
    return cmd_apply(store, "delete", Selection(ids=(target,)), out=out, err=err)


def cmd_flush(
    store: Store,
    *,
    domain: str | None,
    out: TextIO,
    queue_directory: Path | None = None,
    now: float | None = None,
) -> int:
    """``postqueue -f`` / ``postqueue -s DOMAIN``: deferred mail becomes due now, and the
    server is told to scan (and, for a full flush, to forget dead destinations)."""
    count = store.flush(now=now) if domain is None else store.flush_domain(domain, now=now)
    out.write(f"ironpost queue: Flushed: {count} message{'' if count == 1 else 's'}\n")
    if queue_directory is not None:
        # Always, as postqueue does: incoming mail may be waiting for a scan too.
        notify(queue_directory, FLUSH if domain is None else WAKE)
    return 0


def cmd_stats(
    store: Store,
    *,
    now: float,
    out: TextIO,
    as_json: bool = False,
    buckets: Sequence[float] = DEFAULT_BUCKET_MINUTES,
    states: Sequence[QueueState] = DEFAULT_STATES,
    by_sender: bool = False,
    width: int = 80,
    top: int | None = None,
) -> int:
    """Per-state message counts, then the qshape table (or both as one JSON object)."""
    result = shape(store, now, buckets=buckets, states=states, by_sender=by_sender)
    if as_json:
        out.write(json.dumps(shape_to_json(result), indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(format_stats(dict(result.messages)))
        out.write("\n")
        out.write(format_shape(result, width=width, top=top))
    return 0


def _open_from_args(args: argparse.Namespace, loaded: LoadedConfig) -> tuple[Store, Path]:
    directory = Path(loaded.settings.text("queue_directory"))
    try:
        return open_store(loaded.settings, delivers=False), directory
    except (QueueConfigError, OSError) as exc:
        raise SystemExit(f"ironpost queue: cannot open the queue: {exc}") from None


def _selection(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Selection:
    ids = tuple(args.targets)
    if ids and (args.sender is not None or args.domain is not None):
        parser.error("give ID|ALL or --sender/--domain, not both")
    if not ids and args.sender is None and args.domain is None:
        parser.error("give ID|ALL (or - to read ids from stdin), or --sender/--domain")
    if "ALL" in ids and len(ids) > 1:
        parser.error("ALL stands alone")
    return Selection(ids=ids, sender=args.sender, domain=args.domain)


def run(args: argparse.Namespace) -> int:
    action = args.queue_command
    selection = _selection(args, args.action_parser) if action in _ACTIONS else None
    loaded = load_or_exit(args)
    if action == "migrate":
        from ironpost.cli.queue_cluster import run_migrate

        return run_migrate(args, loaded)
    store, directory = _open_from_args(args, loaded)
    try:
        if action == "nodes":
            from ironpost.cli.queue_cluster import cmd_nodes

            stale_after = loaded.settings.seconds("queue_lease_time")
            return cmd_nodes(store, as_json=args.json, out=sys.stdout, stale_after=stale_after)
        if action == "list":
            return cmd_list(store, as_json=args.json, out=sys.stdout)
        if action == "show":
            return cmd_show(store, args.id, out=sys.stdout, err=sys.stderr)
        if selection is not None:
            return cmd_apply(
                store, action, selection, out=sys.stdout, err=sys.stderr, queue_directory=directory
            )
        if action == "flush":
            return cmd_flush(store, domain=args.domain, out=sys.stdout, queue_directory=directory)
        states = tuple(QueueState(q) for q in args.queues) if args.queues else DEFAULT_STATES
        return cmd_stats(
            store,
            now=time.time(),
            out=sys.stdout,
            as_json=args.json,
            buckets=geometric_buckets(args.buckets, args.minutes, linear=args.linear),
            states=states,
            by_sender=args.by_sender,
            width=args.width,
            top=args.top,
        )
    finally:
        store.close()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


_SELECT_HELP = {
    "delete": "delete messages (like postsuper -d)",
    "hold": "put messages on hold (like postsuper -h)",
    "release": "release held messages (like postsuper -H)",
    "requeue": "requeue messages: due now, held ones released (like postsuper -r)",
}


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
    for name, text in _SELECT_HELP.items():
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument(
            "targets",
            nargs="*",
            metavar="ID|ALL|-",
            help="queue ids, ALL (upper case) for every message, or - to read ids from stdin",
        )
        p.add_argument(
            "--sender",
            metavar="ADDR",
            help='messages from this envelope sender (exact, any case; "" or "<>": null sender)',
        )
        p.add_argument(
            "--domain",
            metavar="DOMAIN",
            help="messages with a recipient still to deliver in this domain (exact, any case)",
        )
        p.set_defaults(action_parser=p)
        add_config_option(p)
    p = sub.add_parser(
        "flush", help="deliver deferred mail now (like postqueue -f, or -s with --domain)"
    )
    p.add_argument("--domain", metavar="DOMAIN", help="only recipients in this domain")
    add_config_option(p)
    p = sub.add_parser(
        "stats", help="message counts by state and a qshape table of destinations by age"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--queue",
        dest="queues",
        action="append",
        choices=[s.value for s in QueueState if s is not QueueState.CORRUPT],
        help="queue to count (repeatable; default: incoming, active and deferred)",
    )
    p.add_argument(
        "-s", "--by-sender", action="store_true", help="sender domains instead of recipients'"
    )
    p.add_argument("-b", dest="buckets", type=_positive, default=10, help="bucket count (10)")
    p.add_argument("-t", dest="minutes", type=_positive, default=5, help="bucket time (5 min)")
    p.add_argument("-l", dest="linear", action="store_true", help="linear, not doubling, ages")
    p.add_argument("-w", dest="width", type=_positive, default=80, help="terminal width (80)")
    p.add_argument("--top", type=_positive, help="show only the N largest destinations")
    add_config_option(p)
    p = sub.add_parser(
        "migrate",
        help="move the (stopped) SQLite queue into a PostgreSQL queue; safe to re-run",
    )
    p.add_argument("--to", required=True, metavar="URL", help="postgresql://user@host/db")
    add_config_option(p)
    p = sub.add_parser(
        "nodes", help="the nodes sharing a PostgreSQL queue: heartbeat, mail held, stale"
    )
    p.add_argument("--json", action="store_true", help="print a JSON list")
    add_config_option(p)
    parser.set_defaults(func=run)
