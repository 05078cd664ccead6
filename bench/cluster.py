"""Cluster benchmark (issue #8): 1, 2 and 3 ironpost nodes sharing one PostgreSQL queue.

Owns the procedure behind docs/scaling.md's table. The harness starts its own PostgreSQL
(`ironpost.testing.postgres.PostgresServer`, ``fsync = on``, on loopback, with
``pg_stat_statements`` preloaded) for the whole run. For every round, each configuration in turn
(the order alternates between rounds) gets a fresh database (or, for the SQLite reference, a
fresh queue directory), fresh node directories and a fresh smtp-sink:

* ``postgresql x N`` (N from ``--nodes``, default 1,2,3): N nodes on 127.0.0.21/22/23 (one
  port), each with ``queue_engine = postgresql``, the same ``queue_database_url`` and its own
  ``queue_node_name``, all relaying ``user@relay.test`` to one smtp-sink as relay.py does
  (same main.cf: `relay.relay_main_cf`, DNS trapped). The load (default 6,000 messages of 4 KiB
  over 50 sessions, smtp-source ``-d``; ``--mode new`` for a connection per message) is split
  evenly: one smtp-source per node, all started together.
* ``sqlite x 1``: the same load into one node with the default engine, for reference.

Measured per load:

* accepted: messages / time from the first smtp-source's start to the last one's exit;
* end to end: messages / time from that start until the sink acknowledged every message *and*
  the queue is empty (polled every 50 ms once the sink has everything);
* PostgreSQL's own counters, read before the nodes start and after they stopped (their
  backends gone, so every backend has flushed its statistics; a CHECKPOINT comes first, so
  each load starts from the same full-page-write state): ``pg_stat_database`` of the test
  database (xact_commit, less the harness's own drain polls; tup_inserted/updated/deleted),
  ``pg_stat_wal`` (records, full-page images, bytes, writes, fsyncs; cluster-wide, so
  autovacuum and the checkpointer count too), the ``pg_current_wal_lsn()`` distance, and the
  distance of the next transaction id, which counts the transactions that wrote (the group
  commit's batches: a read-only transaction takes no id). ``pg_stat_statements`` of the test
  database gives the bodies read back from the database (a node delivering mail that another
  node accepted has no copy in memory) and a per-statement breakdown for the JSON.
  Bodies are stored uncompressed (``SET STORAGE EXTERNAL``) unless ``--compressible``:
  smtp-source's bodies are one letter repeated, which real mail is not.
  The counters include the nodes' start and stop (a few transactions each).

Invariant: a figure is only reported when every smtp-source reported no error, the sink got
exactly the messages sent, the nodes' maillogs together show that many ``status=sent`` and
nothing else, no DNS query was made and the queue ended empty; otherwise the run aborts with
the reason and keeps its directories. Results go to bench/results/cluster-<timestamp>.json;
``--table FILE`` prints the markdown tables of a result file again (for docs/scaling.md).

Read the figures for what they are: every node, PostgreSQL, smtp-source and smtp-sink share one
machine (its CPU count is printed), so more nodes here measure the cost of coordination through
the database, not scale-out.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import (
    BenchError,
    DnsTrap,
    LoadSpec,
    Rates,
    Server,
    SmtpSink,
    SourceRun,
    machine_info,
    markdown_table,
)
from harness import (
    Rounds,
    add_output_arguments,
    describe,
    fresh_instance,
    loopback_addr,
    median,
    new_parser,
    parse_addresses,
    preflight,
    require_positive,
    work_dir,
    write_result,
)
from ironpost_instance import IRONPOST
from relay import RELAY_RECIPIENT, need_smtp_sink, percentile, read_deliveries, relay_main_cf

NOTE = (
    "NOTE: this machine has {cpus} CPU(s), shared by smtp-source, smtp-sink, PostgreSQL and "
    "every node: more nodes here measure the cost of coordinating through the database, not "
    "scale-out. The per-message PostgreSQL costs are what carries over to a real cluster."
)
DB_COUNTERS = ("xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted")
WAL_COUNTERS = ("wal_records", "wal_fpi", "wal_bytes", "wal_buffers_full", "wal_write", "wal_sync")
# Preloaded so that the batches of the group commit can be counted (see the docstring).
PG_SETTINGS = {
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track_utility": "on",
}


@dataclass(frozen=True)
class Config:
    engine: str  # "postgresql" or "sqlite"
    nodes: int

    @property
    def label(self) -> str:
        return f"{self.engine} x {self.nodes}"


# --- PostgreSQL: the server and its counters ----------------------------------------------


def start_postgres(directory: Path, host: str) -> Any:
    """A PostgreSQL with fsync on and pg_stat_statements, private to this run."""
    from ironpost.testing.postgres import PostgresServer

    pg = PostgresServer(directory, host=host, fsync=True)
    pg.init()
    with (pg.data / "postgresql.auto.conf").open("a") as f:
        f.writelines(f"{name} = {value}\n" for name, value in PG_SETTINGS.items())
    pg.start()
    return pg


def lsn_bytes(lsn: str) -> int:
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


class Monitor:
    """A connection to the ``postgres`` database: reading the counters from there adds nothing
    to the test database's own (pg_stat_database and pg_stat_statements are cluster-wide)."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def close(self) -> None:
        self.conn.close()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()

    def backends(self, db: str) -> int:
        return int(self.one("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (db,))[0])

    def wait_idle(self, db: str, timeout: float = 30.0) -> None:
        """Until no backend serves ``db``: a backend flushes its statistics when it exits."""
        deadline = time.monotonic() + timeout
        while self.backends(db):
            if time.monotonic() > deadline:
                raise BenchError(f"backends of {db} still there after {timeout:.0f}s")
            time.sleep(0.1)

    def counters(self, db: str) -> dict[str, int]:
        row = self.one(
            f"SELECT {', '.join(DB_COUNTERS)} FROM pg_stat_database WHERE datname = %s", (db,)
        )
        wal = self.one(f"SELECT {', '.join(WAL_COUNTERS)} FROM pg_stat_wal")
        lsn = self.one("SELECT pg_current_wal_lsn()::text")[0]
        # The next transaction id, read without taking one: its distance counts the
        # transactions that wrote something (a read-only one gets no id).
        xid = self.one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")[0]
        values = dict(zip(DB_COUNTERS + WAL_COUNTERS, (*row, *wal), strict=True))
        return {k: int(v) for k, v in values.items()} | {"wal_lsn": lsn_bytes(lsn), "xid": xid}

    def statements(self, db: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT query, calls, rows, wal_records, wal_fpi, wal_bytes, total_exec_time"
            " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = %s ORDER BY wal_bytes DESC, calls DESC",
            (db,),
        ).fetchall()
        keys = ("query", "calls", "rows", "wal_records", "wal_fpi", "wal_bytes", "exec_ms")
        return [
            dict(
                zip(
                    keys,
                    (" ".join(r[0].split())[:160], *map(int, r[1:6]), round(r[6], 1)),
                    strict=True,
                )
            )
            for r in rows
        ]


def statement_calls(statements: list[dict[str, Any]], prefix: str) -> int:
    return sum(s["calls"] for s in statements if s["query"].lower().startswith(prefix))


def prepare_database(url: str, compressible: bool) -> None:
    """Create the schema before the "before" counters, as an administrator would have.

    Unless ``compressible``, bodies are stored uncompressed: smtp-source's bodies are one
    letter repeated, which PostgreSQL's TOAST would shrink a hundredfold, and real mail
    (base64 attachments, already compressed images) does not shrink like that.
    """
    import psycopg

    from ironpost.queue.postgres import PostgresQueue

    PostgresQueue(url, node="bench-setup").close()
    if not compressible:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE message_content ALTER COLUMN content SET STORAGE EXTERNAL")


# --- one load ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterResult(Rates):
    config: str
    engine: str
    nodes: int
    mode: str
    messages: int
    accept_seconds: float
    e2e_seconds: float
    sent_by_node: list[int]
    latency_p50: float
    latency_p99: float
    connections: int | None  # backends of the test database once the queue had drained
    pg: dict[str, int] | None  # counter deltas over the load
    statements: list[dict[str, Any]] | None


def split(total: int, parts: int) -> list[int]:
    """``total`` in ``parts`` nearly equal shares, the larger ones first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def drive(
    servers: Sequence[Server],
    spec: LoadSpec,
    sink: SmtpSink,
    drained: Callable[[], bool],
    timeout: float,
) -> tuple[float, float]:
    """One smtp-source per server, all at once; (accept seconds, end-to-end seconds).

    The main thread only waits on the sink's event and then polls ``drained``, so the harness
    takes next to no CPU from the nodes during the load.
    """
    shares = zip(
        split(spec.messages, len(servers)), split(spec.sessions, len(servers)), strict=True
    )
    sources = []
    for server, (messages, sessions) in zip(servers, shares, strict=True):
        part = LoadSpec(messages, sessions, spec.size, spec.reuse, spec.recipient)
        sources.append((server, SourceRun(part.argv(server.host, server.port))))
    t0 = min(source.started for _, source in sources)
    deadline = t0 + timeout

    def failed() -> bool:
        return any(s.exited_at is not None and s.proc.returncode != 0 for _, s in sources)

    while not sink.reached.wait(0.5) and time.perf_counter() < deadline and not failed():
        pass
    while sink.reached.is_set() and not drained() and time.perf_counter() < deadline:
        time.sleep(0.05)
    done_at = time.perf_counter()
    if not sink.reached.is_set() or done_at >= deadline:
        for _, source in sources:
            source.abandon()
        errors = [
            f"{server.host}: exit {s.proc.returncode} {s.proc.stderr.read().decode()[-300:]!r}"
            for server, s in sources
            if s.proc.returncode and s.proc.stderr
        ]
        raise BenchError(
            f"the sink got {sink.count}/{spec.messages} messages after {done_at - t0:.0f}s"
            f"{' and the queue did not drain' if sink.reached.is_set() else ''}; "
            f"smtp-source: {'; '.join(errors) or 'no error'}"
        )
    for server, source in sources:
        source.finish(f"{server.name} {server.host}")  # BenchError if it saw any failure
    accepted_at = max(source.exited_at or t0 for _, source in sources)
    return accepted_at - t0, done_at - t0


def node_main_cf(base_cf: str, config: Config, url: str, n: int) -> str:
    if config.engine == "sqlite":
        return base_cf
    return base_cf + (
        "\n# Cluster benchmark (bench/cluster.py): one queue in PostgreSQL for every node.\n"
        f"queue_engine = postgresql\nqueue_database_url = {url}\nqueue_node_name = node{n}\n"
    )


def sqlite_drained(root: Path) -> Callable[[], bool]:
    from ironpost.queue.sqlite import DB_NAME

    def drained() -> bool:
        uri = f"file:{root / 'queue' / DB_NAME}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as db:
            return bool(db.execute("SELECT NOT EXISTS (SELECT 1 FROM messages)").fetchone()[0])

    return drained


def one_load(
    config: Config,
    spec: LoadSpec,
    args: argparse.Namespace,
    base: Path,
    trap: DnsTrap,
    pg: Any,
    monitor: Monitor | None,
    tag: str,
) -> ClusterResult:
    import psycopg

    db = f"ironpost_cluster_{tag}"
    url = ""
    before: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        poller: Any = None
        polls = 0
        if config.engine == "postgresql":
            assert monitor is not None
            url = pg.create_database(db)
            prepare_database(url, args.compressible)
            monitor.wait_idle(db)
            monitor.conn.execute("CHECKPOINT")
            monitor.one(
                "SELECT pg_stat_statements_reset(0, oid, 0) FROM pg_database WHERE datname = %s",
                (db,),
            )
            # Opened before the first reading, so its own start is not counted.
            poller = stack.enter_context(psycopg.connect(url, autocommit=True))
            before = monitor.counters(db)
        base_cf = relay_main_cf(args.sink_addr, args.dns_trap)
        servers: list[Server] = []
        for n, host in enumerate(args.node_hosts[: config.nodes], start=1):
            node_args = copy.copy(args)
            node_args.ironpost_addr = (host, args.port)
            cf = node_main_cf(base_cf, config, url, n)
            prefix = f"cluster-{config.engine}{config.nodes}-node{n}-"
            servers.append(
                stack.enter_context(fresh_instance("ironpost", node_args, base, prefix, cf))
            )
        sink = SmtpSink(*args.sink_addr)
        stack.callback(sink.stop)
        trap.reset()
        sink.start(spec.messages)
        for server in servers:
            server.start()

        if poller is not None:

            def drained() -> bool:
                nonlocal polls
                polls += 1
                return bool(
                    poller.execute("SELECT NOT EXISTS (SELECT 1 FROM messages)").fetchone()[0]
                )

        else:
            drained = sqlite_drained(servers[0].root)
        accept_s, e2e_s = drive(servers, spec, sink, drained, args.timeout)

        connections = None
        if monitor is not None and poller is not None:
            connections = monitor.backends(db) - 1  # less the poller
            poller.close()
        for server in servers:
            server.stop()
        time.sleep(0.2)  # the sink counts what the nodes' exit closed
        if err := sink.stop():
            print(f"  smtp-sink said: {err[-500:]}", file=sys.stderr)
        logs = [read_deliveries(server.root / "maillog") for server in servers]
        statuses = sum((log.statuses for log in logs), start=Counter[str]())
        if sink.count != spec.messages:
            raise BenchError(f"{config.label}: the sink got {sink.count}, {spec.messages} sent")
        if statuses["sent"] != spec.messages or set(statuses) != {"sent"}:
            raise BenchError(f"{config.label}: the maillogs show {dict(statuses)}")
        if trap.queries:
            raise BenchError(f"{config.label}: DNS queries on the relay path: {trap.queries[:3]}")
        delta = statements = None
        if monitor is not None and poller is not None:
            monitor.wait_idle(db)
            after = monitor.counters(db)
            delta = {k: after[k] - before[k] for k in after}
            delta["xact_commit"] -= polls  # the harness's own
            delta["harness_polls"] = polls
            statements = monitor.statements(db)
    delays = [d for log in logs for d in log.delays]
    return ClusterResult(
        config=config.label,
        engine=config.engine,
        nodes=config.nodes,
        mode=spec.mode,
        messages=spec.messages,
        accept_seconds=accept_s,
        e2e_seconds=e2e_s,
        sent_by_node=[log.sent for log in logs],
        latency_p50=percentile(sorted(delays), 50),
        latency_p99=percentile(sorted(delays), 99),
        connections=connections,
        pg=delta,
        statements=statements,
    )


# --- summary -------------------------------------------------------------------------------


def per_message(r: ClusterResult) -> dict[str, float]:
    """The PostgreSQL costs of one message (an empty dict for SQLite)."""
    if r.pg is None or r.statements is None:
        return {}
    d, m = r.pg, r.messages
    return {
        "commits": d["xact_commit"] / m,
        "write_transactions": d["xid"] / m,
        "read_only_transactions": (d["xact_commit"] - d["xid"]) / m,
        "messages_per_write_transaction": m / d["xid"] if d["xid"] else 0.0,
        "wal_fsyncs": d["wal_sync"] / m,
        "wal_records": d["wal_records"] / m,
        "wal_fpi": d["wal_fpi"] / m,
        "wal_bytes": d["wal_bytes"] / m,
        "wal_lsn_bytes": d["wal_lsn"] / m,
        "rows_inserted": d["tup_inserted"] / m,
        "rows_updated": d["tup_updated"] / m,
        "rows_deleted": d["tup_deleted"] / m,
        "bodies_read": statement_calls(r.statements, "select content from message_content") / m,
    }


def summarise(results: list[ClusterResult], configs: list[Config]) -> list[dict[str, Any]]:
    rows = []
    for config in configs:
        mine = [r for r in results if r.config == config.label]
        costs = [per_message(r) for r in mine]
        row: dict[str, Any] = {
            "config": config.label,
            "engine": config.engine,
            "nodes": config.nodes,
            "mode": mine[0].mode if mine else None,
            "runs": len(mine),
            "accepted_rate": median([r.accepted_rate for r in mine]),
            "e2e_rate": median([r.e2e_rate for r in mine]),
            "latency_p50_ms": median([r.latency_p50 * 1000 for r in mine]),
            "latency_p99_ms": median([r.latency_p99 * 1000 for r in mine]),
            "connections": median([r.connections for r in mine if r.connections is not None]),
        }
        if costs and costs[0]:
            row["per_message"] = {k: median([c[k] for c in costs]) for k in costs[0]}
        rows.append(row)
    return rows


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def tables(rows: list[dict[str, Any]]) -> str:
    """The two markdown tables of docs/scaling.md: throughput, then PostgreSQL per message."""
    head = ("configuration", "accepted msg/s", "end to end msg/s", "p50 ms", "p99 ms", "PG conns")
    lines = [
        (
            r["config"],
            _num(r["accepted_rate"]),
            _num(r["e2e_rate"]),
            _num(r["latency_p50_ms"]),
            _num(r["latency_p99_ms"]),
            _num(r["connections"]),
        )
        for r in rows
    ]
    out = markdown_table(head, lines)
    cost_rows = [r for r in rows if r.get("per_message")]
    if not cost_rows:
        return out
    head = (
        "per message",
        *(r["config"] for r in cost_rows),
    )
    figures = (
        ("commits (pg_stat_database)", "commits", 2),
        ("of which writing (took an xid)", "write_transactions", 3),
        ("of which read-only", "read_only_transactions", 2),
        ("messages per writing commit", "messages_per_write_transaction", 1),
        ("WAL fsyncs", "wal_fsyncs", 3),
        ("WAL records", "wal_records", 1),
        ("WAL bytes", "wal_bytes", 0),
        ("WAL bytes (LSN distance)", "wal_lsn_bytes", 0),
        ("full-page images", "wal_fpi", 3),
        ("rows inserted", "rows_inserted", 2),
        ("rows updated", "rows_updated", 2),
        ("rows deleted", "rows_deleted", 2),
        ("bodies read back from PostgreSQL", "bodies_read", 3),
    )
    cost_lines: list[Sequence[str]] = [
        (label, *(_num(r["per_message"][key], digits) for r in cost_rows))
        for label, key, digits in figures
    ]
    return out + "\n\n" + markdown_table(head, cost_lines)


# --- the procedure -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = new_parser(__doc__)
    p.add_argument("--quick", action="store_true", help="a tenth of the messages, 1 round")
    p.add_argument("--messages", type=int, help="messages per load, all nodes together (6000)")
    p.add_argument("--rounds", type=int, help="rounds; the tables show medians (3; 1 --quick)")
    p.add_argument("--sessions", type=int, default=50, help="SMTP sessions, all nodes (50)")
    p.add_argument("--size", type=int, default=4096, help="message size in bytes (4096)")
    p.add_argument("--mode", choices=("reuse", "new"), default="reuse", help="reuse: -d (reuse)")
    p.add_argument("--nodes", default="1,2,3", help="node counts on PostgreSQL (1,2,3)")
    p.add_argument("--no-sqlite", action="store_true", help="skip the 1-node SQLite reference")
    p.add_argument(
        "--compressible",
        action="store_true",
        help="let PostgreSQL compress bodies (smtp-source's are one letter repeated)",
    )
    p.add_argument(
        "--node-hosts", default="127.0.0.21,127.0.0.22,127.0.0.23", help="the nodes' addresses"
    )
    p.add_argument("--port", type=int, default=2535, help="the nodes' SMTP port (2535)")
    p.add_argument("--pg-host", default="127.0.0.28", help="PostgreSQL's address (free port)")
    p.add_argument("--sink-addr", default="127.0.0.24:2536", help="host:port for smtp-sink")
    p.add_argument("--dns-trap", default="127.0.0.29:53", help="host:port of the DNS trap")
    p.add_argument("--ironpost-bin", type=Path, default=IRONPOST, help="the ironpost command")
    p.add_argument("--timeout", type=float, default=900.0, help="per-load limit in seconds")
    p.add_argument("--table", type=Path, metavar="FILE", help="print FILE's tables and exit")
    add_output_arguments(p)
    p.set_defaults(only="ironpost")  # for harness.preflight: no Postfix here
    args = p.parse_args(argv)
    if args.table is not None:
        return args
    messages, rounds = (600, 1) if args.quick else (6000, 3)
    args.messages = args.messages or messages
    args.rounds = args.rounds or rounds
    require_positive(p, args, "messages", "sessions", "size", "rounds")
    try:
        args.node_counts = sorted({int(n) for n in args.nodes.split(",")})
        args.node_hosts = [loopback_addr(f"{h.strip()}:0")[0] for h in args.node_hosts.split(",")]
        loopback_addr(f"{args.pg_host}:0")
    except (ValueError, BenchError) as exc:
        p.error(str(exc))
    if not args.node_counts or min(args.node_counts) < 1:
        p.error("--nodes: counts must be >= 1")
    if max(args.node_counts) > len(args.node_hosts):
        p.error(f"--nodes asks for {max(args.node_counts)} nodes, --node-hosts has fewer")
    if args.sessions < max(args.node_counts):
        p.error("--sessions: at least one per node")
    parse_addresses(p, args, "sink_addr", "dns_trap")
    return args


def check_tools() -> None:
    need_smtp_sink()
    from ironpost.testing.postgres import postgres_bin_dir

    bindir = postgres_bin_dir()
    if bindir is None:
        raise BenchError("PostgreSQL is not installed (apt-get install postgresql)")
    if not (bindir.parent / "lib" / "pg_stat_statements.so").exists():
        raise BenchError(f"pg_stat_statements missing beside {bindir} (postgresql-contrib)")
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise BenchError("psycopg missing: install ironpost's postgresql extra") from exc


def configurations(args: argparse.Namespace) -> list[Config]:
    configs = [] if args.no_sqlite else [Config("sqlite", 1)]
    return configs + [Config("postgresql", n) for n in args.node_counts]


@contextlib.contextmanager
def postgres_running(base: Path, host: str) -> Iterator[tuple[Any, Monitor]]:
    try:
        pg = start_postgres(base / "postgresql", host)
    except RuntimeError as exc:
        raise BenchError(f"PostgreSQL: {exc}") from exc
    try:
        monitor = Monitor(pg.url())
        try:
            yield pg, monitor
        finally:
            monitor.close()
    finally:
        pg.stop("fast")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.table is not None:
        print(tables(json.loads(args.table.read_text())["summary"]))
        return 0
    lineup = preflight("cluster.py", args, check_tools, may_skip=False, suggest_only=False)
    if lineup is None:
        return 2
    import psycopg  # the postgresql extra: check_tools made sure it is there

    configs = configurations(args)
    spec = LoadSpec(args.messages, args.sessions, args.size, args.mode == "reuse", RELAY_RECIPIENT)
    base = work_dir("ironpost-bench-cluster-", args.workdir)
    machine = machine_info()
    print(describe(machine))
    print(
        f"load: {args.messages} messages x {args.size} bytes over {args.sessions} sessions "
        f"({spec.mode}), split evenly over the nodes; {', '.join(c.label for c in configs)}; "
        f"{args.rounds} round(s); work dir {base}"
    )
    print(NOTE.format(cpus=machine["nproc"]))

    results: list[ClusterResult] = []
    trap = DnsTrap(*args.dns_trap)
    with contextlib.ExitStack() as stack, Rounds(args, lineup, base, on_exit=stack.close) as rounds:
        stack.callback(trap.stop)
        trap.start()
        pg, monitor = stack.enter_context(postgres_running(base, args.pg_host))
        print(f"PostgreSQL {pg.bindir.parent.name} on {pg.host}:{pg.port}, fsync on")
        for rnd, order in rounds.order(configs):
            for config in order:
                tag = f"{config.engine}{config.nodes}_r{rnd}"
                try:
                    r = one_load(config, spec, args, base, trap, pg, monitor, tag)
                except psycopg.Error as exc:
                    raise BenchError(f"{config.label}: PostgreSQL: {exc}") from exc
                results.append(r)
                cost = per_message(r)
                extra = (
                    f"  {cost['commits']:.2f} commits/msg, "
                    f"{cost['messages_per_write_transaction']:.1f} msg per writing commit, "
                    f"{cost['wal_bytes'] / 1024:.1f} KiB WAL/msg"
                    if cost
                    else ""
                )
                print(
                    f"  round {rnd} {config.label:14} accepted {r.accepted_rate:6.0f} msg/s "
                    f"({r.accept_seconds:6.2f}s)  end to end {r.e2e_rate:6.0f} msg/s "
                    f"({r.e2e_seconds:6.2f}s)  sent by node {r.sent_by_node}{extra}",
                    flush=True,
                )
    if rounds.code:
        return rounds.code

    rows = summarise(results, configs)
    print()
    print(tables(rows))
    print()
    print(NOTE.format(cpus=machine["nproc"]))
    write_result(
        "cluster",
        rounds.started,
        machine,
        args.output,
        load={
            "messages": args.messages,
            "sessions": args.sessions,
            "size": args.size,
            "rounds": args.rounds,
            "mode": spec.mode,
            "tool": "smtp-source, one per node, sessions and messages split evenly",
            "recipient": RELAY_RECIPIENT,
            "sink": "smtp-sink -c {}:{}".format(*args.sink_addr),
            "postgresql": {"fsync": "on", **PG_SETTINGS},
            "body_storage": "default (compressed)" if args.compressible else "EXTERNAL",
        },
        note=NOTE.format(cpus=machine["nproc"]),
        summary=rows,
        runs=[r.as_dict() for r in results],
        main_cf=relay_main_cf(args.sink_addr, args.dns_trap),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
