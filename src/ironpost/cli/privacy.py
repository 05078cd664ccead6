"""``ironpost privacy find|erase ADDRESS``: answer a data-subject request.

``find`` lists every queue entry whose sender or a recipient (final or as given) is
ADDRESS, and every maillog line about it (the live file and its rotated copies;
pseudonymised lines are found through every kept key, see :mod:`ironpost.maillog.search`
for what "about" means). ``erase`` deletes those queue entries (the queue's admin delete:
one transaction) and rewrites the log files without those lines (each atomically), then
reports the counts. Both print nothing of other people's data beyond the matched lines.

Not covered, and said so in the output: copies sent to syslog (``maillog_syslog``), the
delivered mailboxes (the person's mail is the mailbox owner's), and backups.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ironpost.cli.common import add_config_option, load_or_exit
from ironpost.config.settings import Settings
from ironpost.maillog import search
from ironpost.maillog.keys import KEY_FILE, LogKey, load_keys
from ironpost.maillog.sinks import log_files
from ironpost.queue.engines import Store, open_store, queue_exists
from ironpost.queue.model import QueuedMessage


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def concerns(message: QueuedMessage, address: str) -> bool:
    """Is ``address`` (any case) this message's sender or one of its recipients?"""
    want = address.strip().strip("<>").lower()
    if message.envelope.sender.lower() == want:
        return True
    return any(
        want in (r.spec.address.lower(), r.spec.original.lower()) for r in message.recipients
    )


@dataclass(frozen=True, slots=True)
class Sources:
    """Where personal data lives, from the configuration."""

    settings: Settings
    queue: bool  # there is a queue to search (without creating one)
    log_path: Path | None
    keys: list[LogKey]
    syslog: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Sources:
        s = load_or_exit(args).settings
        log = s.text("maillog_file")
        log_path = None if log in ("", "-", "/dev/stderr", "/dev/stdout") else Path(log)
        keys = load_keys(Path(s.text("data_directory")) / KEY_FILE)
        return cls(s, queue_exists(s), log_path, keys, s.boolean("maillog_syslog"))

    def files(self) -> list[Path]:
        return [] if self.log_path is None else log_files(self.log_path)


def _queue_matches(store: Store, address: str) -> list[QueuedMessage]:
    return [m for m in store.list_messages() if concerns(m, address)]


def _message_json(m: QueuedMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "state": m.state.value,
        "sender": m.envelope.sender,
        "recipients": [r.spec.address for r in m.recipients],
    }


def cmd_find(
    address: str,
    *,
    store: Store | None,
    files: Sequence[Path],
    keys: Sequence[LogKey],
    out: TextIO,
    as_json: bool = False,
) -> int:
    messages = _queue_matches(store, address) if store is not None else []
    lines = search.find(files, address, keys)
    if as_json:
        doc = {
            "address": address,
            "queue": [_message_json(m) for m in messages],
            "log": [{"file": str(x.path), "line": x.number, "text": x.line} for x in lines],
        }
        out.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return 0
    for m in messages:
        rcpts = ", ".join(_printable(r.spec.address) for r in m.recipients)
        sender = _printable(m.envelope.sender) or "<>"
        out.write(f"queue: {m.id} {m.state.value} from={sender} to={rcpts}\n")
    for x in lines:
        out.write(f"log: {x.path}:{x.number}: {_printable(x.line)}\n")
    out.write(
        f"ironpost privacy: found {len(messages)} queue entr{'y' if len(messages) == 1 else 'ies'}"
        f" and {len(lines)} log line{'' if len(lines) == 1 else 's'}"
        f" in {len({x.path for x in lines})} file(s)\n"
    )
    return 0


def cmd_erase(
    address: str,
    *,
    store: Store | None,
    files: Sequence[Path],
    keys: Sequence[LogKey],
    out: TextIO,
) -> int:
    deleted = 0
    if store is not None:
        ids = [m.id for m in _queue_matches(store, address)]
        deleted = store.delete_messages(ids) if ids else 0
    removed = search.erase(files, address, keys)
    for path, count in removed.items():
        out.write(f"log: {path}: removed {count} line{'' if count == 1 else 's'}\n")
    total = sum(removed.values())
    out.write(
        f"ironpost privacy: erased {deleted} queue entr{'y' if deleted == 1 else 'ies'}"
        f" and {total} log line{'' if total == 1 else 's'} from {len(removed)} file(s)\n"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    address = args.address.strip().strip("<>")
    if not address:
        print("ironpost privacy: give a non-empty address", file=sys.stderr)
        return 2
    sources = Sources.from_args(args)
    store = open_store(sources.settings, delivers=False) if sources.queue else None
    try:
        if args.privacy_command == "find":
            code = cmd_find(
                address,
                store=store,
                files=sources.files(),
                keys=sources.keys,
                out=sys.stdout,
                as_json=args.json,
            )
        else:
            code = cmd_erase(
                address, store=store, files=sources.files(), keys=sources.keys, out=sys.stdout
            )
    finally:
        if store is not None:
            store.close()
    if sources.syslog:
        print(
            "ironpost privacy: note: copies sent to syslog (maillog_syslog = yes) are not"
            " covered; search the system log too",
            file=sys.stderr,
        )
    return code


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "privacy", help="find or erase a person's queue entries and log lines"
    )
    sub = parser.add_subparsers(dest="privacy_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("find", help="list queue entries and log lines about ADDRESS")
    p.add_argument("address", metavar="ADDRESS")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_option(p)
    p.set_defaults(func=run)
    p = sub.add_parser("erase", help="delete queue entries and log lines about ADDRESS")
    p.add_argument("address", metavar="ADDRESS")
    add_config_option(p)
    p.set_defaults(func=run)
