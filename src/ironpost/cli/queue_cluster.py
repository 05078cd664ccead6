"""``ironpost queue nodes`` and ``ironpost queue migrate``: the commands of a queue shared
by a cluster (PostgreSQL, issue #8), apart from the Postfix-like ones of
:mod:`ironpost.cli.queue`.

``nodes`` lists the nodes that have used a PostgreSQL queue, with their heartbeat age on
the database's clock and the messages each holds; ``migrate --to URL`` moves a stopped
server's SQLite queue into PostgreSQL (:mod:`ironpost.queue.migrate`), holding the
server's pid-file lock for the whole run so that no server starts meanwhile.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from ironpost.cli.control import AlreadyRunning, PidFile, pid_path
from ironpost.cli.queue import iso, printable
from ironpost.config import LoadedConfig
from ironpost.queue.engines import Store
from ironpost.queue.sqlite import DB_NAME, SqliteQueue, open_queue
from ironpost.queue.trigger import trigger_path

# -- nodes: the members of a PostgreSQL cluster ------------------------------------------

NodeRow = tuple[str, float, float, int, int]  # name, started, heartbeat, pid, messages held


def nodes_to_json(rows: Sequence[NodeRow], *, now: float, stale_after: float) -> list[Any]:
    return [
        {
            "name": name,
            "pid": pid,
            "started": iso(started),
            "heartbeat": iso(heartbeat),
            "heartbeat_age": round(max(0.0, now - heartbeat), 1),
            "active": held,
            "stale": now - heartbeat > stale_after,
        }
        for name, started, heartbeat, pid, held in rows
    ]


def format_nodes(rows: Sequence[NodeRow], *, now: float, stale_after: float) -> str:
    """One line per node: name, pid, start (UTC), heartbeat age, ACTIVE messages it holds,
    and ``stale`` when its heartbeat is older than ``stale_after`` (the lease time: its
    leases may already be taken over)."""
    if not rows:
        return "ironpost queue: no node has used this queue yet\n"
    width = max(4, *(len(printable(r[0])) for r in rows))
    lines = [f"{'NAME':<{width}} {'PID':>7} {'STARTED':<20} {'HEARTBEAT':>9} {'ACTIVE':>7} STATUS"]
    for item in nodes_to_json(rows, now=now, stale_after=stale_after):
        age = f"{item['heartbeat_age']:.0f}s ago"
        lines.append(
            f"{printable(item['name']):<{width}} {item['pid']:>7} {item['started']:<20}"
            f" {age:>9} {item['active']:>7} {'stale' if item['stale'] else 'alive'}"
        )
    return "\n".join(lines) + "\n"


def cmd_nodes(
    store: Store, *, as_json: bool, out: TextIO, stale_after: float, now: float | None = None
) -> int:
    """``queue nodes``; a SQLite queue is one host's own and has no nodes to list."""
    if isinstance(store, SqliteQueue):
        out.write(
            "[]\n"
            if as_json
            else "ironpost queue: the queue is not shared (queue_engine ="
            " sqlite): there are no cluster nodes\n"
        )
        return 0
    from ironpost.queue.pg_records import db_now

    rows = store.nodes()
    # Heartbeats are stamped with the database's clock, so ages are measured on it too.
    when = store._admin_read(db_now) if now is None else now
    if as_json:
        data = nodes_to_json(rows, now=when, stale_after=stale_after)
        out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(format_nodes(rows, now=when, stale_after=stale_after))
    return 0


# -- migrate: a SQLite queue into PostgreSQL ---------------------------------------------

EX_NOINPUT = 66
EX_TEMPFAIL = 75
EX_CONFIG = 78


def _plural(count: int) -> str:
    return f"{count} message{'' if count == 1 else 's'}"


def cmd_migrate(source: SqliteQueue, url: str, *, out: TextIO, err: TextIO) -> int:
    """Move ``source`` into the PostgreSQL queue at ``url`` (the caller has made sure its
    server is stopped). 0: everything moved; 1: some messages had to stay (each named on
    stderr); 75: the database is unreachable or was lost (re-run later: safe); 78: a bad
    URL or an unusable target."""
    from ironpost.queue.migrate import MigrationError, migrate_queue, redact

    try:
        result = migrate_queue(source, url)
    except MigrationError as exc:
        err.write(f"ironpost queue: cannot migrate to {redact(url)}: {exc}\n")
        return EX_TEMPFAIL if exc.temporary else EX_CONFIG
    out.write(f"ironpost queue: Migrated: {_plural(result.copied)}\n")
    if result.already:
        out.write(f"ironpost queue: Already in the database: {_plural(result.already)}\n")
    for message_id, why in sorted(result.left.items()):
        err.write(f"ironpost queue: {printable(message_id)}: left in SQLite: {why}\n")
    if result.left:
        out.write(f"ironpost queue: Left in SQLite: {_plural(len(result.left))}\n")
        return 1
    return 0


def _trigger_live(queue_directory: Path) -> bool:
    # A datagram socket accepts connect() only while a process is bound to it: a socket
    # file left behind by a crash refuses.
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(str(trigger_path(queue_directory)))
        except OSError:
            return False
    return True


def run_migrate(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    """The checks around :func:`cmd_migrate`. The SQLite side's server must be stopped,
    or it would go on accepting and delivering from the queue being emptied (duplicates,
    mail left behind). No --force: stopping it is the whole remedy. The migration holds
    the server's pid-file lock while it runs, so a server cannot start meanwhile."""
    settings = loaded.settings
    directory = Path(settings.text("queue_directory"))
    try:
        from ironpost.queue.migrate import MigrationError, check_url
    except ImportError as exc:
        print(f"ironpost queue: PostgreSQL support is not installed: {exc}", file=sys.stderr)
        return EX_CONFIG
    try:
        check_url(args.to)
    except MigrationError as exc:
        print(f"ironpost queue: {exc}", file=sys.stderr)
        return EX_CONFIG
    if not (directory / DB_NAME).is_file():
        print(f"ironpost queue: no SQLite queue in {directory}", file=sys.stderr)
        return EX_NOINPUT
    lock = PidFile(pid_path(directory))
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(
            f"ironpost queue: {directory}: the mail system is {exc}; stop it"
            " (ironpost stop) before migrating its queue",
            file=sys.stderr,
        )
        return EX_TEMPFAIL
    try:
        if _trigger_live(directory):
            print(
                f"ironpost queue: {directory}: a server is listening on"
                f" {trigger_path(directory)}; stop it before migrating its queue",
                file=sys.stderr,
            )
            return EX_TEMPFAIL
        try:
            source = open_queue(
                directory,
                hot_bytes=0,
                body_file_threshold=settings.integer("queue_body_file_threshold"),
            )
        except (OSError, ValueError) as exc:
            print(f"ironpost queue: cannot open {directory}: {exc}", file=sys.stderr)
            return EX_TEMPFAIL
        try:
            return cmd_migrate(source, args.to, out=sys.stdout, err=sys.stderr)
        finally:
            source.close()
    finally:
        lock.release()
