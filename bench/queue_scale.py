"""Queue at scale (issue #7, S5): a large deferred queue, side by side, one run.

Owns the procedure. For every round, each server in turn (the order alternates between rounds):

1. **Empty-queue accept rate.** A fresh instance takes an S1-style load (`--accept-messages`,
   default 5,000, new connection per message, to the Maildir user) and is stopped.
2. **Fill.** A second fresh instance takes `--queued` messages (default 100,000; 5,000 with
   ``--quick``) with ``smtp-source -d`` over `--fill-sessions` sessions, all to
   ``user@queue.test``, a relay domain whose next hop is a closed port on loopback. The
   harness waits until the server's own account says every one of them is deferred and none
   is incoming or active (Postfix: files under ``queue/{deferred,incoming,active}``; ironpost:
   ``ironpost queue stats --json``).
3. **Listing.** Wall time of ``postqueue -c DIR -p`` (what ``mailq`` runs) and ``qshape -c DIR
   deferred``, against ``ironpost queue list -c DIR`` and ``ironpost queue stats -c DIR --queue
   deferred``; output read through a pipe, median of `--repeat` runs, and each listing must
   count exactly the messages queued.
4. **Accept rate under a full queue.** The same S1-style load as in 1, while the deferred
   queue sits there. The figure that matters is the ratio to the empty-queue rate.
5. **Restart.** Stop (timed), start, and time until a ``220`` greeting is read ("serving",
   polled every 0.1 s), then until one new message sent right after the greeting is in the
   Maildir ("delivering": the queue manager has recovered its queue and is moving mail).
   ironpost returns active mail to incoming before it listens, so its 220 already implies the
   store's recovery; the delivery probe shows its scheduler is working too, as it shows for
   Postfix's qmgr.

Configuration: `common.MAIN_CF` plus `scale_main_cf`'s lines, one text for both servers:
``relay_domains = queue.test``, ``transport_maps = inline:{ queue.test=smtp:[DEAD]:PORT }``,
backoff times of hours (so no deferred message comes due during the measurement; both servers
still run their periodic deferred-queue scans), and ironpost's resolver pointed at a DNS trap.
Invariant: a figure is only reported when smtp-source reported no error and every queued
message is still deferred when the listing and the accept load ran. Results go to
bench/results/queue_scale-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (
    MAIN_CF,
    RECIPIENT,
    SENDER,
    SERVERS,
    BenchError,
    DnsTrap,
    LoadSpec,
    Server,
    ensure_tools,
    machine_info,
    maildir_new,
    markdown_table,
    port_open,
    run_load,
)
from ironpost_instance import IRONPOST, IronpostInstance, ironpost_unavailable
from relay import make_server, split_addr

RESULTS = Path(__file__).resolve().parent / "results"
QUEUE_DOMAIN = "queue.test"
QUEUE_RECIPIENT = f"user@{QUEUE_DOMAIN}"


def scale_main_cf(dead: tuple[str, int], dns_trap: tuple[str, int]) -> str:
    """The accept benchmark's main.cf template plus the deferred-queue lines (a template)."""
    return MAIN_CF + (  # doubled braces: common.render_main_cf formats it again
        "\n# Queue at scale (bench/queue_scale.py): queue.test is relayed to a closed port,\n"
        "# so every message to it is deferred; backoffs of hours keep them deferred.\n"
        f"relay_domains = {QUEUE_DOMAIN}\n"
        f"transport_maps = inline:{{{{ {QUEUE_DOMAIN}=smtp:[{dead[0]}]:{dead[1]} }}}}\n"
        "minimal_backoff_time = 2h\n"
        "maximal_backoff_time = 4h\n"
        "# ironpost only (Postfix ignores it): any DNS query goes to the harness's trap.\n"
        f"dns_nameservers = {dns_trap[0]}:{dns_trap[1]}\n"
    )


# --- the server's queue, as the server itself counts it -------------------------------------


def queue_counts(server: Server, ironpost_bin: Path) -> dict[str, int]:
    if isinstance(server, IronpostInstance):
        done = _run([str(ironpost_bin), "queue", "stats", "--json", "-c", str(server.root / "etc")])
        return {k: v for k, v in json.loads(done.stdout)["messages"].items() if k != "total"}
    # Postfix: one file per message, in hashed subdirectories of each queue directory.
    return {
        name: sum(len(files) for _, _, files in os.walk(server.root / "queue" / name))
        for name in ("maildrop", "incoming", "active", "deferred", "hold")
    }


def wait_deferred(server: Server, n: int, ironpost_bin: Path, timeout: float) -> dict[str, int]:
    """Poll (every 2 s, cheap enough beside the servers) until all ``n`` are deferred."""
    deadline = time.monotonic() + timeout
    while True:
        counts = queue_counts(server, ironpost_bin)
        if counts.get("deferred", 0) >= n and not any(
            counts.get(q, 0) for q in ("maildrop", "incoming", "active")
        ):
            return counts
        if time.monotonic() > deadline:
            raise BenchError(f"{server.name}: queue is {counts} after {timeout:.0f}s, {n} sent")
        time.sleep(2)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()[-500:]}")
    return done


def timed(argv: list[str], repeat: int, expect: str) -> float:
    """Median wall time of ``argv`` (stdout through a pipe); regex ``expect`` must match it."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        done = _run(argv)
        times.append(time.perf_counter() - t0)
        if not re.search(expect, done.stdout):
            tail = done.stdout[-300:]
            raise BenchError(f"{' '.join(argv)}: {expect!r} not in the output: ...{tail}")
    return statistics.median(times)


def listing_times(server: Server, n: int, args: argparse.Namespace) -> tuple[float, float]:
    """(mailq-style listing, qshape-style table) wall times, each checked to count ``n``."""
    conf = str(server.root / "etc")
    requests = rf"in {n} Requests?\."
    if isinstance(server, IronpostInstance):
        ip = str(args.ironpost_bin)
        listing = [ip, "queue", "list", "-c", conf]
        shape = [ip, "queue", "stats", "-c", conf, "--queue", "deferred"]
    else:
        listing = ["postqueue", "-c", conf, "-p"]
        shape = ["qshape", "-c", conf, "deferred"]
    return (
        timed(listing, args.repeat, requests),
        timed(shape, args.repeat, rf"TOTAL\s+{n}\b"),
    )


def fill(server: Server, args: argparse.Namespace) -> float:
    spec = LoadSpec(args.queued, args.fill_sessions, args.size, True, QUEUE_RECIPIENT)
    t0 = time.perf_counter()
    done = subprocess.run(spec.argv(server.host, server.port), capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0 or done.stderr.strip():
        raise BenchError(f"{server.name}: fill: smtp-source exit {done.returncode}: {done.stderr}")
    return seconds


def restart(server: Server, timeout: float) -> tuple[float, float, float]:
    """(stop, start to 220, start to the probe's delivery) in seconds."""
    t0 = time.perf_counter()
    server.stop()
    stopped = time.perf_counter() - t0
    new_dir = maildir_new(server.root)
    before = len(os.listdir(new_dir)) if new_dir.is_dir() else 0
    t0 = time.perf_counter()
    server.start()
    serving = time.perf_counter() - t0
    try:
        with smtplib.SMTP(server.host, server.port, timeout=30) as smtp:
            smtp.sendmail(SENDER, [RECIPIENT], b"Subject: restart probe\r\n\r\nprobe\r\n")
    except (smtplib.SMTPException, OSError) as exc:
        raise BenchError(f"{server.name}: the restart probe was not accepted: {exc}") from exc
    deadline = time.monotonic() + timeout
    while (len(os.listdir(new_dir)) if new_dir.is_dir() else 0) <= before:
        if time.monotonic() > deadline:
            raise BenchError(f"{server.name}: the restart probe not delivered in {timeout:.0f}s")
        time.sleep(0.01)
    return stopped, serving, time.perf_counter() - t0


# --- one round for one server ---------------------------------------------------------------


@dataclass(frozen=True)
class ScaleResult:
    server: str
    queued: int
    fill_seconds: float
    list_seconds: float  # postqueue -p / ironpost queue list
    shape_seconds: float  # qshape deferred / ironpost queue stats --queue deferred
    accept_empty_rate: float
    accept_full_rate: float
    e2e_empty_rate: float
    e2e_full_rate: float
    stop_seconds: float
    restart_serving_seconds: float
    restart_delivering_seconds: float

    @property
    def accept_full_vs_empty(self) -> float:
        return self.accept_full_rate / self.accept_empty_rate

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"accept_full_vs_empty": round(self.accept_full_vs_empty, 3)}


def one_server(name: str, args: argparse.Namespace, base: Path, main_cf: str) -> ScaleResult:
    accept = LoadSpec(args.accept_messages, args.sessions, args.size, False)
    roots = []

    def fresh(label: str) -> Server:
        roots.append(Path(tempfile.mkdtemp(prefix=f"scale-{name}-{label}-", dir=base)))
        server = make_server(name, roots[-1], args, main_cf)
        if port_open(server.host, server.port):
            raise BenchError(f"{server.host}:{server.port} is already in use")
        return server

    server = fresh("empty")
    try:
        server.start()
        empty = run_load(server, accept, args.timeout)
        server.stop()
        server = fresh("full")
        server.start()
        fill_s = fill(server, args)
        wait_deferred(server, args.queued, args.ironpost_bin, args.timeout)
        list_s, shape_s = listing_times(server, args.queued, args)
        full = run_load(server, accept, args.timeout)
        counts = queue_counts(server, args.ironpost_bin)
        if counts.get("deferred") != args.queued:  # none lost, none retried meanwhile
            raise BenchError(f"{name}: after the accept load the queue is {counts}")
        stop_s, serving_s, delivering_s = restart(server, args.timeout)
    except BenchError as exc:
        raise BenchError(f"{exc}\n(instances kept for inspection in {base})") from exc
    finally:
        server.stop()
    if not args.keep:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
    return ScaleResult(
        server=name,
        queued=args.queued,
        fill_seconds=fill_s,
        list_seconds=list_s,
        shape_seconds=shape_s,
        accept_empty_rate=empty.accepted_rate,
        accept_full_rate=full.accepted_rate,
        e2e_empty_rate=empty.e2e_rate,
        e2e_full_rate=full.e2e_rate,
        stop_seconds=stop_s,
        restart_serving_seconds=serving_s,
        restart_delivering_seconds=delivering_s,
    )


# --- summary -----------------------------------------------------------------------------

# (attribute, label, unit, lower is better, issue #7's target for ironpost or None)
METRICS: tuple[tuple[str, str, str, bool, str | None], ...] = (
    ("list_seconds", "listing (mailq / queue list)", "s", True, "< 1 s"),
    ("shape_seconds", "qshape deferred / queue stats", "s", True, None),
    ("restart_serving_seconds", "restart: start to 220", "s", True, "< 3 s"),
    ("restart_delivering_seconds", "restart: start to first delivery", "s", True, "< 3 s"),
    ("stop_seconds", "stop", "s", True, None),
    ("accept_empty_rate", "accepted, empty queue", "msg/s", False, None),
    ("accept_full_rate", "accepted, full queue", "msg/s", False, None),
    ("accept_full_vs_empty", "accepted, full / empty", "x", False, ">= 0.80"),
    ("e2e_full_rate", "end to end, full queue", "msg/s", False, None),
    ("fill_seconds", "fill (smtp-source -d)", "s", True, None),
)


def _met(value: float, target: str) -> bool:
    op, number = target.split()[:2]
    return value < float(number) if op == "<" else value >= float(number)


def summarise(results: list[ScaleResult]) -> list[dict[str, Any]]:
    rows = []
    for attr, label, unit, lower_is_better, target in METRICS:
        med: dict[str, float | None] = {}
        for name in SERVERS:
            values = [getattr(r, attr) for r in results if r.server == name]
            med[name] = statistics.median(values) if values else None
        pf, ip = med["postfix"], med["ironpost"]
        ratio = None  # always "how many times better ironpost is"
        if pf is not None and ip is not None and (ip if lower_is_better else pf) > 0:
            ratio = pf / ip if lower_is_better else ip / pf
        row = {"metric": label, "unit": unit, "postfix": pf, "ironpost": ip, "ratio": ratio}
        row["target"] = target
        row["met"] = None if target is None or ip is None else _met(ip, target)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def num(value: float | None, unit: str) -> str:
        if value is None:
            return "-"
        return f"{value:.0f}" if unit == "msg/s" else f"{value:.2f}"

    head = ("figure", "unit", "Postfix", "ironpost", "ratio", "ironpost target")
    lines = [
        (
            r["metric"],
            r["unit"],
            num(r["postfix"], r["unit"]),
            num(r["ironpost"], r["unit"]),
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
            "" if r["target"] is None else f"{r['target']} ({'met' if r['met'] else 'NOT met'})",
        )
        for r in rows
    ]
    return markdown_table(head, lines, left=(0, 1, 5))


# --- the procedure -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="5,000 queued, 1,000 accepted, 1 round")
    p.add_argument("--queued", type=int, help="deferred messages to fill (100000)")
    p.add_argument("--accept-messages", type=int, help="S1-style accept load (5000)")
    p.add_argument("--rounds", type=int, help="rounds; the table shows medians (3)")
    p.add_argument("--fill-sessions", type=int, default=50, help="fill sessions, -d (50)")
    p.add_argument("--sessions", type=int, default=50, help="accept-load sessions (50)")
    p.add_argument("--size", type=int, default=4096, help="message size in bytes (4096)")
    p.add_argument("--repeat", type=int, default=3, help="listing runs; median (3)")
    p.add_argument("--only", choices=SERVERS, help="benchmark one server only")
    p.add_argument("--ironpost-bin", type=Path, default=IRONPOST, help="the ironpost command")
    p.add_argument("--timeout", type=float, default=3600.0, help="per-step limit in seconds")
    p.add_argument("--workdir", type=Path, default=None, help="where instance dirs go (/tmp)")
    p.add_argument("--keep", action="store_true", help="keep instance dirs (queues, logs)")
    p.add_argument("--output", type=Path, default=None, help="JSON path (bench/results/...)")
    p.add_argument("--postfix-addr", default="127.0.0.41:2525", help="host:port for Postfix")
    p.add_argument("--ironpost-addr", default="127.0.0.42:2525", help="host:port for ironpost")
    p.add_argument("--dead-hop", default="127.0.0.40:2527", help="the closed next hop")
    p.add_argument("--dns-trap", default="127.0.0.49:53", help="host:port of the DNS trap")
    args = p.parse_args(argv)
    defaults = (5_000, 1_000, 1) if args.quick else (100_000, 5_000, 3)
    for name, default in zip(("queued", "accept_messages", "rounds"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    for name in ("queued", "accept_messages", "rounds", "sessions", "fill_sessions", "repeat"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        for name in ("postfix_addr", "ironpost_addr", "dead_hop", "dns_trap"):
            setattr(args, name, split_addr(getattr(args, name)))
    except (BenchError, ValueError) as exc:
        p.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("queue_scale.py must run as root: it starts Postfix instances.", file=sys.stderr)
        return 2
    try:
        ensure_tools()
        if not shutil.which("qshape"):
            raise BenchError("qshape not found (Debian's postfix package has /usr/sbin/qshape)")
        if port_open(*args.dead_hop):
            raise BenchError(f"{args.dead_hop}: something listens there; the hop must be dead")
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    servers = [args.only] if args.only else list(SERVERS)
    skipped = None
    if "ironpost" in servers and (why := ironpost_unavailable(args.ironpost_bin)):
        if args.only == "ironpost":
            print(f"error: {why}", file=sys.stderr)
            return 2
        skipped = why
        servers.remove("ironpost")
        print(f"NOTE: skipping ironpost: {why}. Postfix figures only.")

    main_cf = scale_main_cf(args.dead_hop, args.dns_trap)
    base = Path(tempfile.mkdtemp(prefix="ironpost-bench-scale-", dir=args.workdir))
    base.chmod(0o755)  # unprivileged Postfix daemons must traverse it
    machine = machine_info()
    print(
        f"{machine['cpu_model']}, {machine['nproc']} CPUs, Linux {machine['kernel']}, "
        f"Python {machine['python']}, Postfix {machine['postfix']}, ironpost {machine['ironpost']}"
    )
    print(
        f"queue: {args.queued} deferred x {args.size} bytes; accept load {args.accept_messages} "
        f"messages over {args.sessions} sessions; {args.rounds} round(s); work dir {base}"
    )
    results: list[ScaleResult] = []
    started = time.time()
    trap = DnsTrap(*args.dns_trap)
    try:
        trap.start()
        for rnd in range(args.rounds):
            for name in servers if rnd % 2 == 0 else servers[::-1]:
                r = one_server(name, args, base, main_cf)
                results.append(r)
                print(
                    f"  round {rnd + 1} {name:8} fill {r.fill_seconds:6.1f}s  list "
                    f"{r.list_seconds:6.2f}s  shape {r.shape_seconds:6.2f}s  accept "
                    f"{r.accept_empty_rate:4.0f} -> {r.accept_full_rate:4.0f} msg/s  restart "
                    f"220 {r.restart_serving_seconds:5.2f}s delivering "
                    f"{r.restart_delivering_seconds:5.2f}s",
                    flush=True,
                )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        trap.stop()
    if trap.queries:
        print(f"NOTE: {len(trap.queries)} DNS queries trapped, e.g. {trap.queries[0]}")
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)

    rows = summarise(results)
    print()
    print(table(rows))
    report = {
        "benchmark": "queue_scale",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine,
        "load": {
            "queued": args.queued,
            "accept_messages": args.accept_messages,
            "sessions": args.sessions,
            "fill_sessions": args.fill_sessions,
            "size": args.size,
            "rounds": args.rounds,
            "repeat": args.repeat,
            "tool": "smtp-source",
            "queued_recipient": QUEUE_RECIPIENT,
            "accept_recipient": RECIPIENT,
            "dead_hop": "{}:{}".format(*args.dead_hop),
        },
        "servers": servers,
        "ironpost_skipped": skipped,
        "dns_queries": len(trap.queries),
        "summary": rows,
        "runs": [r.as_dict() for r in results],
        "main_cf": main_cf,
    }
    out = args.output or RESULTS / time.strftime("queue_scale-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
