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
    machine_info,
    maildir_new,
    markdown_table,
    port_open,
    run_load,
)
from harness import (
    Rounds,
    add_addresses,
    add_output_arguments,
    add_server_choice,
    better,
    describe,
    fresh_instance,
    median,
    new_parser,
    parse_addresses,
    preflight,
    require_positive,
    times,
    work_dir,
    write_result,
)
from ironpost_instance import IronpostInstance

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
    with fresh_instance(name, args, base, f"scale-{name}-empty-", main_cf) as server:
        server.start()
        empty = run_load(server, accept, args.timeout)
    with fresh_instance(name, args, base, f"scale-{name}-full-", main_cf) as server:
        server.start()
        fill_s = fill(server, args)
        wait_deferred(server, args.queued, args.ironpost_bin, args.timeout)
        list_s, shape_s = listing_times(server, args.queued, args)
        full = run_load(server, accept, args.timeout)
        counts = queue_counts(server, args.ironpost_bin)
        if counts.get("deferred") != args.queued:  # none lost, none retried meanwhile
            raise BenchError(f"{name}: after the accept load the queue is {counts}")
        stop_s, serving_s, delivering_s = restart(server, args.timeout)
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
        pf, ip = (median([getattr(r, attr) for r in results if r.server == n]) for n in SERVERS)
        ratio = better(ip, pf, lower_is_better)  # always "how many times better ironpost is"
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
            times(r["ratio"]),
            "" if r["target"] is None else f"{r['target']} ({'met' if r['met'] else 'NOT met'})",
        )
        for r in rows
    ]
    return markdown_table(head, lines, left=(0, 1, 5))


# --- the procedure -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = new_parser(__doc__)
    p.add_argument("--quick", action="store_true", help="5,000 queued, 1,000 accepted, 1 round")
    p.add_argument("--queued", type=int, help="deferred messages to fill (100000)")
    p.add_argument("--accept-messages", type=int, help="S1-style accept load (5000)")
    p.add_argument("--rounds", type=int, help="rounds; the table shows medians (3)")
    p.add_argument("--fill-sessions", type=int, default=50, help="fill sessions, -d (50)")
    p.add_argument("--sessions", type=int, default=50, help="accept-load sessions (50)")
    p.add_argument("--size", type=int, default=4096, help="message size in bytes (4096)")
    p.add_argument("--repeat", type=int, default=3, help="listing runs; median (3)")
    add_server_choice(p)
    p.add_argument("--timeout", type=float, default=3600.0, help="per-step limit in seconds")
    add_output_arguments(p)
    add_addresses(p, "127.0.0.41:2525", "127.0.0.42:2525")
    p.add_argument("--dead-hop", default="127.0.0.40:2527", help="the closed next hop")
    p.add_argument("--dns-trap", default="127.0.0.49:53", help="host:port of the DNS trap")
    args = p.parse_args(argv)
    defaults = (5_000, 1_000, 1) if args.quick else (100_000, 5_000, 3)
    for name, default in zip(("queued", "accept_messages", "rounds"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    require_positive(
        p, args, "queued", "accept_messages", "rounds", "sessions", "fill_sessions", "repeat"
    )
    parse_addresses(p, args, "postfix_addr", "ironpost_addr", "dead_hop", "dns_trap")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def check() -> None:
        if not shutil.which("qshape"):
            raise BenchError("qshape not found (Debian's postfix package has /usr/sbin/qshape)")
        if port_open(*args.dead_hop):
            raise BenchError(f"{args.dead_hop}: something listens there; the hop must be dead")

    if (lineup := preflight("queue_scale.py", args, check, suggest_only=False)) is None:
        return 2
    main_cf = scale_main_cf(args.dead_hop, args.dns_trap)
    base = work_dir("ironpost-bench-scale-", args.workdir)
    machine = machine_info()
    print(describe(machine))
    print(
        f"queue: {args.queued} deferred x {args.size} bytes; accept load {args.accept_messages} "
        f"messages over {args.sessions} sessions; {args.rounds} round(s); work dir {base}"
    )
    results: list[ScaleResult] = []
    trap = DnsTrap(*args.dns_trap)
    with Rounds(args, lineup, base, on_exit=trap.stop) as rounds:
        trap.start()
        for rnd, order in rounds.order(lineup.servers):
            for name in order:
                r = one_server(name, args, base, main_cf)
                results.append(r)
                print(
                    f"  round {rnd} {name:8} fill {r.fill_seconds:6.1f}s  list "
                    f"{r.list_seconds:6.2f}s  shape {r.shape_seconds:6.2f}s  accept "
                    f"{r.accept_empty_rate:4.0f} -> {r.accept_full_rate:4.0f} msg/s  restart "
                    f"220 {r.restart_serving_seconds:5.2f}s delivering "
                    f"{r.restart_delivering_seconds:5.2f}s",
                    flush=True,
                )
    if rounds.code:
        return rounds.code
    if trap.queries:
        print(f"NOTE: {len(trap.queries)} DNS queries trapped, e.g. {trap.queries[0]}")

    rows = summarise(results)
    print()
    print(table(rows))
    write_result(
        "queue_scale",
        rounds.started,
        machine,
        args.output,
        load={
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
        servers=lineup.servers,
        ironpost_skipped=lineup.skipped,
        dns_queries=len(trap.queries),
        summary=rows,
        runs=[r.as_dict() for r in results],
        main_cf=main_cf,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
