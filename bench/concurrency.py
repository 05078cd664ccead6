"""Concurrency benchmark (issue #7, S4): N SMTP sessions held open, Postfix and ironpost.

Owns the procedure behind S4. For every round, each server in turn (the order alternates) gets a
fresh instance in a fresh directory from the shared main.cf (`common.MAIN_CF`, unchanged), and an
asyncio client in this process opens N sessions (default 10,000; ``--quick`` 1,000), at most
``--connect-window`` TCP handshakes in flight at once. Each session waits for its 220, sends
EHLO, waits for the 250, and is then held idle. The open phase ends when every attempt has
settled or at ``--open-timeout``. After ``--settle`` seconds, with the sessions still held:

* resident memory of the server's processes (ironpost's process group; every Postfix process
  working in the instance's queue directory), summed RSS and PSS from /proc/PID/smaps_rollup,
  against the same figure taken idle before the load;
* ``--probes`` fresh clients, one after another: the time from connect to a 220 (or what they
  got instead within ``--probe-timeout``).

Then every held socket is closed with a RST (SO_LINGER 0: no TIME_WAIT left on the client's
ephemeral ports) and the server is stopped.

Invariants: the server processes inherit this process's RLIMIT_NOFILE, which is raised first to
cover N sessions plus slack (root may raise the hard limit), so neither server is capped by
the file limit; each run's per-server limit is read back from /proc/PID/limits. Sessions come
from 127.0.0.1 (in $mynetworks, so exempt from the per-client connection count and rate limits
of both servers; /etc/hosts names it, so neither server's reverse lookup leaves the machine)
unless ``--sources K`` spreads them over more source addresses. The client never asserts: it
prints what it saw. Results go to bench/results/concurrency-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import struct
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import MAIN_CF, SERVERS, BenchError, Server, group_pids, machine_info
from harness import (
    Rounds,
    add_addresses,
    add_output_arguments,
    add_server_choice,
    better,
    describe,
    figures_table,
    fresh_instance,
    median,
    new_parser,
    parse_addresses,
    preflight,
    ratio,
    require_positive,
    work_dir,
    write_result,
)
from ironpost_instance import IronpostInstance
from postfix_instance import PostfixInstance

LINGER_RST = struct.pack("ii", 1, 0)  # close() sends a RST: no TIME_WAIT on our side
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
EHLO = b"EHLO client.bench.test\r\n"


# --- the client ------------------------------------------------------------------------------


class Held(asyncio.Protocol):
    """One client session: wait for the greeting, EHLO, then sit idle.

    States: 0 awaiting the greeting, 1 awaiting the EHLO reply, 2 held, 3 refused (greeting
    other than 220), 4 lost before being held. ``client.pending`` counts sessions in 0 or 1.
    """

    __slots__ = ("buf", "client", "code", "greeted", "lost", "start", "state", "transport")

    def __init__(self, client: Client | None, start: float) -> None:
        self.client = client
        self.state = 0
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.start = start
        self.greeted: float | None = None  # perf_counter at the greeting's last line
        self.code = ""  # the greeting's code
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.client is not None:
            self.client.pending += 1

    def data_received(self, data: bytes) -> None:
        if self.state >= 2:
            return  # held: nothing more is expected, nothing is kept
        buf = self.buf + data
        while (nl := buf.find(b"\n")) >= 0:
            line, buf = buf[:nl], buf[nl + 1 :]
            if line[3:4] != b"-":  # the last line of a reply
                self._reply(line[:3].decode("ascii", "replace"))
                if self.state >= 2:
                    break
        self.buf = buf

    def _reply(self, code: str) -> None:
        if self.state == 0:
            self.greeted, self.code = time.perf_counter(), code
            if code == "220":
                self.state = 1
                assert self.transport is not None
                self.transport.write(EHLO)
                return
            self.state = 3
        else:
            self.state = 2 if code == "250" else 3
        if self.client is not None:
            self.client.pending -= 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.state < 2:
            self.state = 4
            if self.client is not None:
                self.client.pending -= 1


def _socket(source: str | None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    if source is not None:
        # The port is picked at connect(), per destination, not at bind(): more ports per source.
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
    return sock


class Client:
    """Opens and holds the sessions; all its state is plain counters and a list of `Held`."""

    def __init__(self, addr: tuple[str, int], sessions: int, sources: list[str | None]) -> None:
        self.addr = addr
        self.total = sessions
        self.sources = sources
        self.sessions: list[Held] = []
        self.connecting: set[socket.socket] = set()  # handshakes in flight
        self.pending = 0
        self.next = 0
        self.connect_errors: Counter[str] = Counter()

    async def _opener(self) -> None:
        loop = asyncio.get_running_loop()
        while self.next < self.total:
            i = self.next
            self.next += 1
            sock = _socket(self.sources[i % len(self.sources)])
            session = Held(self, time.perf_counter())
            self.connecting.add(sock)
            try:
                await loop.sock_connect(sock, self.addr)
                await loop.create_connection(lambda s=session: s, sock=sock)  # type: ignore[misc]
                self.connecting.discard(sock)  # from here the transport owns the socket
            except OSError as exc:
                self.connect_errors[type(exc).__name__] += 1
                self.connecting.discard(sock)
                sock.close()
                continue
            self.sessions.append(session)

    async def open(self, window: int, timeout: float) -> float:
        """Open every session or stop at ``timeout``; returns the phase's length in seconds."""
        t0 = time.perf_counter()
        workers = [asyncio.ensure_future(self._opener()) for _ in range(min(window, self.total))]
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            if self.pending == 0 and all(w.done() for w in workers):
                break
            await asyncio.sleep(0.05)
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        return time.perf_counter() - t0

    def close(self) -> None:
        for session in self.sessions:
            if session.transport is not None:
                session.transport.abort()
        for sock in self.connecting:  # cancelled at the deadline, still in SYN_SENT
            sock.close()
        self.connecting.clear()

    def figures(self, t0: float) -> dict[str, Any]:
        ss = self.sessions
        greeted = sorted(s.greeted - s.start for s in ss if s.code == "220" and s.greeted)
        last = max((s.greeted for s in ss if s.code == "220" and s.greeted), default=None)
        return {
            "attempted": self.next,
            "connected": len(ss),
            "greeted": len(greeted),
            "held": sum(1 for s in ss if s.state == 2 and not s.lost),
            "refused": dict(Counter(s.code for s in ss if s.state == 3)),
            "lost_before_held": sum(1 for s in ss if s.state == 4),
            "dropped_while_held": sum(1 for s in ss if s.state == 2 and s.lost),
            "connected_no_greeting": sum(1 for s in ss if s.state == 0 and not s.lost),
            "not_connected": self.total - len(ss) - sum(self.connect_errors.values()),
            "connect_errors": dict(self.connect_errors),
            "last_220_s": None if last is None else last - t0,
            "greet_p50_ms": 1000 * greeted[len(greeted) // 2] if greeted else None,
            "greet_p99_ms": 1000 * greeted[int(len(greeted) * 0.99)] if greeted else None,
        }


async def probe(addr: tuple[str, int], timeout: float) -> dict[str, Any]:
    """One fresh client: milliseconds from connect to its 220, or what happened instead."""
    loop = asyncio.get_running_loop()
    sock = _socket(None)
    session = Held(None, time.perf_counter())
    try:
        await asyncio.wait_for(loop.sock_connect(sock, addr), timeout)
        await loop.create_connection(lambda: session, sock=sock)
    except (TimeoutError, OSError) as exc:
        sock.close()
        return {"ms": None, "reply": f"no connection in {timeout:g}s ({type(exc).__name__})"}
    left = session.start + timeout - time.perf_counter()
    while session.greeted is None and not session.lost and left > 0:
        await asyncio.sleep(min(0.002, left))
        left = session.start + timeout - time.perf_counter()
    if session.transport is not None:
        session.transport.abort()
    if session.greeted is None:
        return {"ms": None, "reply": "lost" if session.lost else f"no reply in {timeout:g}s"}
    ms = 1000 * (session.greeted - session.start)
    return {"ms": ms if session.code == "220" else None, "reply": session.code, "after_ms": ms}


# --- the server's side: memory and limits ----------------------------------------------------


def server_pids(server: Server) -> list[int]:
    if isinstance(server, PostfixInstance):
        return server._processes()  # every daemon works in the instance's queue directory
    assert isinstance(server, IronpostInstance) and server.proc is not None
    return group_pids(server.proc.pid)  # the server leads its own process group


def memory(pids: list[int]) -> dict[str, Any]:
    """Summed RSS and PSS (MB) of ``pids``, and how many there were of each program."""
    rss = pss = 0
    names: Counter[str] = Counter()
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            names[Path(f"/proc/{pid}/comm").read_text().strip()] += 1
        except OSError:
            continue  # exited meanwhile
        for line in rollup.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return {"rss_mb": rss / 1024, "pss_mb": pss / 1024, "processes": dict(names)}


def nofile_of(pid: int | None) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return f"{soft}/{hard}"
    except OSError:
        pass
    return None


def raise_nofile(need: int) -> str:
    """Raise this process's (and so the servers') RLIMIT_NOFILE to at least ``need``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard < need and os.geteuid() == 0:
            hard = min(need, int(Path("/proc/sys/fs/nr_open").read_text()))
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        raise BenchError(f"RLIMIT_NOFILE is {soft}/{hard}, {need} needed: run as root")
    return f"{soft}/{hard}"


def log_count(root: Path, needle: str) -> int:
    try:
        return (root / "maillog").read_text(errors="replace").count(needle)
    except OSError:
        return 0


# --- one run ---------------------------------------------------------------------------------


async def hold(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    sources: list[str | None] = [None] + [f"127.0.1.{k}" for k in range(1, args.sources)]
    client = Client((server.host, server.port), args.sessions, sources)
    cpu0, t0 = time.process_time(), time.perf_counter()
    try:
        open_s = await client.open(args.connect_window, args.open_timeout)
        out = client.figures(t0) | {"open_phase_s": open_s}
        out["client_cpu_s"] = time.process_time() - cpu0
        await asyncio.sleep(args.settle)
        out["held_after_settle"] = sum(1 for s in client.sessions if s.state == 2 and not s.lost)
        out["memory_held"] = memory(server_pids(server))
        out["probes"] = []
        for _ in range(args.probes):
            out["probes"].append(await probe((server.host, server.port), args.probe_timeout))
            await asyncio.sleep(0.2)
    finally:
        client.close()
    out["client_max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def one_run(name: str, args: argparse.Namespace, base: Path) -> dict[str, Any]:
    with fresh_instance(name, args, base, f"concurrency-{name}-") as server:
        server.start()
        time.sleep(1.0)  # let the readiness probe's session end before the idle figure
        idle = memory(server_pids(server))
        main_pid = server.master_pid() if isinstance(server, PostfixInstance) else None
        if isinstance(server, IronpostInstance) and server.proc is not None:
            main_pid = server.proc.pid
        nofile = nofile_of(main_pid)
        result = run_loop(hold(server, args))
        server.stop()  # the log is read once the server is down (fresh_instance stops it too)
        process_limit = log_count(server.root, "has reached its process limit")
        connection_limit = log_count(server.root, "Connection concurrency limit exceeded")
    result |= {"server": name, "memory_idle": idle, "server_nofile": nofile}
    held = result["memory_held"]
    grown = held["rss_mb"] - idle["rss_mb"]
    grown_pss = held["pss_mb"] - idle["pss_mb"]
    n = result["held_after_settle"]  # the sessions alive when the memory was read
    result["kib_per_session"] = 1024 * grown / n if n else None
    result["pss_kib_per_session"] = 1024 * grown_pss / n if n else None
    result["log_process_limit"] = process_limit
    result["log_connection_limit"] = connection_limit
    return result


def run_loop(coro: Any) -> Any:
    try:
        import uvloop  # the client's own cost stays low: same loop as ironpost's

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# --- summary ---------------------------------------------------------------------------------

# (label, unit, better, format, value of one run)
ROWS: list[tuple[str, str, str, str, Any]] = [
    ("sessions greeted (220)", "count", "higher", ".0f", lambda r: r["greeted"]),
    ("sessions held after EHLO", "count", "higher", ".0f", lambda r: r["held_after_settle"]),
    ("time to the last 220", "s", "lower", ".2f", lambda r: r["last_220_s"]),
    ("greeting latency p50", "ms", "lower", ".1f", lambda r: r["greet_p50_ms"]),
    ("greeting latency p99", "ms", "lower", ".1f", lambda r: r["greet_p99_ms"]),
    ("RSS, idle", "MB", "lower", ".1f", lambda r: r["memory_idle"]["rss_mb"]),
    ("RSS, sessions held", "MB", "lower", ".1f", lambda r: r["memory_held"]["rss_mb"]),
    ("PSS, sessions held", "MB", "lower", ".1f", lambda r: r["memory_held"]["pss_mb"]),
    ("RSS per held session", "KiB", "lower", ".1f", lambda r: r["kib_per_session"]),
    ("PSS per held session", "KiB", "lower", ".1f", lambda r: r["pss_kib_per_session"]),
]


def probe_figures(runs: list[dict[str, Any]]) -> tuple[float | None, int, int]:
    """Median probe time over all rounds (a probe without 220 counts as infinite), and how
    many probes got their 220 within 1 s, of how many."""
    times = [p["ms"] if p["ms"] is not None else float("inf") for r in runs for p in r["probes"]]
    if not times:
        return None, 0, 0
    med = statistics.median(times)
    return (None if med == float("inf") else med), sum(t <= 1000 for t in times), len(times)


def summarise(runs: list[dict[str, Any]], sessions: int) -> list[dict[str, Any]]:
    rows = []
    for label, unit, direction, fmt, get in ROWS:
        med: dict[str, float | None] = {}
        for name in SERVERS:
            values = [get(r) for r in runs if r["server"] == name and get(r) is not None]
            med[name] = median(values)
        pf, ip = med["postfix"], med["ironpost"]
        rows.append(
            {
                "metric": f"{label}, {sessions} opened",
                "unit": unit,
                "format": fmt,
                "postfix": pf,
                "ironpost": ip,
                "ratio": better(ip, pf, lower_is_better=direction == "lower"),
            }
        )
    probes = {n: probe_figures([r for r in runs if r["server"] == n]) for n in SERVERS}
    rows.append(
        {
            "metric": "fresh client: connect to 220 (median)",
            "unit": "ms",
            "format": ".1f",
            "postfix": probes["postfix"][0],
            "ironpost": probes["ironpost"][0],
            "ratio": ratio(probes["postfix"][0], probes["ironpost"][0]),
        }
    )
    rows.append(
        {
            "metric": "fresh clients with a 220 within 1 s",
            "unit": "probes",
            "format": "s",
            "postfix": "{1}/{2}".format(*probes["postfix"]) if probes["postfix"][2] else None,
            "ironpost": "{1}/{2}".format(*probes["ironpost"]) if probes["ironpost"][2] else None,
            "ratio": None,
        }
    )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def cell(value: Any, row: dict[str, Any]) -> str:
        return "none" if value is None else format(value, row["format"])

    return figures_table(rows, lambda r: r["metric"], cell)


# --- the command -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = new_parser(__doc__)
    p.add_argument("--quick", action="store_true", help="1,000 sessions, 1 round, 30 s to open")
    p.add_argument("--sessions", type=int, help="sessions to hold open (10000; --quick 1000)")
    p.add_argument("--rounds", type=int, help="rounds; the table shows medians (3; --quick 1)")
    p.add_argument("--open-timeout", type=float, help="limit of the open phase, s (60; quick 30)")
    p.add_argument("--connect-window", type=int, default=256, help="handshakes in flight (256)")
    p.add_argument("--settle", type=float, default=2.0, help="hold before measuring, s (2)")
    p.add_argument("--probes", type=int, default=3, help="fresh clients timed while held (3)")
    p.add_argument("--probe-timeout", type=float, default=5.0, help="a probe's limit, s (5)")
    p.add_argument("--sources", type=int, default=1, help="source addresses (1: 127.0.0.1)")
    add_server_choice(p)
    add_addresses(p, "127.0.4.20:2525", "127.0.4.21:2525")
    add_output_arguments(p)
    args = p.parse_args(argv)
    args.sessions = args.sessions or (1000 if args.quick else 10_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.open_timeout = args.open_timeout or (30.0 if args.quick else 60.0)
    require_positive(p, args, "sessions", "rounds", "connect_window", "sources")
    if args.sources > 254:
        p.error("--sources must be <= 254")
    parse_addresses(p, args, "postfix_addr", "ironpost_addr")
    return args


def progress(rnd: int, r: dict[str, Any]) -> str:
    last = "-" if r["last_220_s"] is None else f"{r['last_220_s']:.2f}s"
    probes = ", ".join(
        f"{p['ms']:.0f}ms"
        if p["ms"] is not None
        else (f"{p['reply']} after {p['after_ms']:.0f}ms" if "after_ms" in p else p["reply"])
        for p in r["probes"]
    )
    return (
        f"  round {rnd} {r['server']:8} greeted {r['greeted']}/{r['attempted']} "
        f"(last 220 at {last}), held {r['held_after_settle']}, refused {r['refused'] or 0}, "
        f"no greeting {r['connected_no_greeting']}, not connected {r['not_connected']}; "
        f"RSS {r['memory_idle']['rss_mb']:.0f} -> {r['memory_held']['rss_mb']:.0f} MB "
        f"({r['memory_held']['processes']}); probes: {probes}; "
        f"client {r['client_cpu_s']:.1f} s CPU"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # N held sockets in this process, N + listeners + queue files in the server.
    need = args.sessions + args.probes + 1024
    lineup = preflight("concurrency.py", args, lambda: raise_nofile(need), suggest_only=False)
    if lineup is None:
        return 2
    nofile = raise_nofile(need)  # raised by the preflight already: this reads it back
    base = work_dir("ironpost-bench-", args.workdir)
    machine = machine_info()
    print(describe(machine))
    print(
        f"load: {args.sessions} sessions held (EHLO, then idle), {args.connect_window} "
        f"handshakes in flight, {args.open_timeout:g} s to open, {args.rounds} round(s); "
        f"RLIMIT_NOFILE {nofile}; work dir {base}"
    )

    runs: list[dict[str, Any]] = []
    with Rounds(args, lineup, base) as rounds:
        for rnd, order in rounds.order(lineup.servers):
            for name in order:
                runs.append(one_run(name, args, base))
                print(progress(rnd, runs[-1]), flush=True)
    if rounds.code:
        return rounds.code

    rows = summarise(runs, args.sessions)
    print()
    print(table(rows))
    for r in runs:  # what a fresh client got instead of its 220 (a 421, a silent socket)
        if other := [p for p in r["probes"] if p["ms"] is None]:
            print(f"NOTE: {r['server']}: fresh client got {other[0]['reply']!r} ({len(other)}x)")
    write_result(
        "concurrency",
        rounds.started,
        machine,
        args.output,
        load={
            "sessions": args.sessions,
            "rounds": args.rounds,
            "connect_window": args.connect_window,
            "open_timeout_s": args.open_timeout,
            "settle_s": args.settle,
            "probes": args.probes,
            "probe_timeout_s": args.probe_timeout,
            "sources": args.sources,
            "rlimit_nofile": nofile,
            "tool": "asyncio client in bench/concurrency.py",
        },
        servers=lineup.servers,
        ironpost_skipped=lineup.skipped,
        summary=rows,
        runs=runs,
        main_cf=MAIN_CF,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
