"""Accept benchmark: Postfix and ironpost side by side, same main.cf, same load, one run.

Owns the procedure behind `make bench`. For every round, for each load mode (new connection per
message, then connection reuse with smtp-source -d), each server in turn gets a fresh instance
in a fresh directory, takes the same smtp-source load (default 20,000 messages of 4 KiB over 50
sessions to one virtual Maildir user), and is stopped. Measured per run:

* accepted: messages / smtp-source wall time;
* end to end: messages / time from the start of the load to the last Maildir delivery.

The servers alternate which goes first from round to round so neither always gets the colder
(or warmer) machine. With several rounds the table shows medians. Results and the machine
description go to bench/results/accept-<timestamp>.json.

Invariant: a figure is only reported when every message was accepted without error and
delivered; a lossy or failing run aborts the benchmark instead of producing a rate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    MAIN_CF,
    SERVERS,
    BenchError,
    LoadResult,
    LoadSpec,
    Server,
    add_load_arguments,
    check_load_arguments,
    ensure_tools,
    machine_info,
    markdown_table,
    port_open,
    run_load,
)
from ironpost_instance import IRONPOST, IronpostInstance, ironpost_unavailable
from postfix_instance import PostfixInstance

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_load_arguments(p, IRONPOST)
    p.add_argument("--postfix-addr", default="127.0.0.20:2525", help="host:port for Postfix")
    p.add_argument("--ironpost-addr", default="127.0.0.21:2525", help="host:port for ironpost")
    p.add_argument(
        "--ironpost-workers",
        type=int,
        metavar="N",
        default=None,
        help="run ironpost with `--workers N` (SMTP processes; default: its ironpost_workers)",
    )
    args = p.parse_args(argv)
    check_load_arguments(p, args)
    return args


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def make_server(name: str, root: Path, args: argparse.Namespace) -> Server:
    if name == "postfix":
        return PostfixInstance(root, *split_addr(args.postfix_addr))
    host, port = split_addr(args.ironpost_addr)
    return IronpostInstance(root, host, port, args.ironpost_bin, workers=args.ironpost_workers)


def one_load(name: str, spec: LoadSpec, args: argparse.Namespace, base: Path) -> LoadResult:
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    server = make_server(name, root, args)
    if port_open(server.host, server.port):
        raise BenchError(f"{server.host}:{server.port} is already in use; stop what listens there")
    try:
        server.start()
        result = run_load(server, spec, args.timeout)
    except BenchError as exc:
        raise BenchError(f"{exc}\n(instance kept for inspection in {root})") from exc
    finally:
        server.stop()
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return result


def ratio(ironpost: float | None, postfix: float | None) -> float | None:
    if ironpost is None or postfix is None or postfix == 0:
        return None
    return ironpost / postfix


def summarise(results: list[LoadResult], modes: list[str]) -> list[dict[str, Any]]:
    rows = []
    for mode in modes:
        for metric in ("accepted_rate", "e2e_rate"):
            medians: dict[str, float | None] = {}
            for name in SERVERS:
                values = [
                    getattr(r, metric) for r in results if r.server == name and r.mode == mode
                ]
                medians[name] = statistics.median(values) if values else None
            rows.append(
                {
                    "mode": mode,
                    "metric": "accepted" if metric == "accepted_rate" else "end to end",
                    "postfix": medians["postfix"],
                    "ironpost": medians["ironpost"],
                    "ratio": ratio(medians["ironpost"], medians["postfix"]),
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def num(value: float | None, fmt: str) -> str:
        return "pending" if value is None else format(value, fmt)

    head = ("scenario", "Postfix msg/s", "ironpost msg/s", "ratio")
    lines = [
        (
            f"{r['metric']}, {r['mode']}",
            num(r["postfix"], ".0f"),
            num(r["ironpost"], ".0f"),
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
        )
        for r in rows
    ]
    return markdown_table(head, lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("accept.py must run as root: it starts Postfix instances.", file=sys.stderr)
        return 2
    try:
        ensure_tools()
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
        print(f"NOTE: skipping ironpost: {why}. Postfix figures only (as with --only postfix).")

    modes = {"new": [False], "reuse": [True], "both": [False, True]}[args.mode]
    specs = [LoadSpec(args.messages, args.sessions, args.size, reuse) for reuse in modes]
    base = Path(tempfile.mkdtemp(prefix="ironpost-bench-", dir=args.workdir))
    base.chmod(0o755)  # unprivileged Postfix daemons must traverse it
    machine = machine_info()
    print(
        f"{machine['cpu_model']}, {machine['nproc']} CPUs, Linux {machine['kernel']}, "
        f"Python {machine['python']}, Postfix {machine['postfix']}, ironpost {machine['ironpost']}"
    )
    print(
        f"load: {args.messages} messages x {args.size} bytes over {args.sessions} sessions, "
        f"{args.rounds} round(s); work dir {base}"
    )

    results: list[LoadResult] = []
    started = time.time()
    try:
        for rnd in range(args.rounds):
            order = servers if rnd % 2 == 0 else servers[::-1]
            for spec in specs:
                for name in order:
                    result = one_load(name, spec, args, base)
                    results.append(result)
                    print(
                        f"  round {rnd + 1} {name:8} {spec.mode:27} "
                        f"accepted {result.accepted_rate:7.0f} msg/s "
                        f"({result.accept_seconds:7.3f}s)  end to end "
                        f"{result.e2e_rate:7.0f} msg/s ({result.e2e_seconds:7.3f}s)",
                        flush=True,
                    )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if "ironpost" in servers and args.only is None:
            print("(--only postfix measures Postfix alone)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)

    rows = summarise(results, [s.mode for s in specs])
    print()
    print(table(rows))
    report = {
        "benchmark": "accept",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine,
        "load": {
            "messages": args.messages,
            "sessions": args.sessions,
            "size": args.size,
            "rounds": args.rounds,
            "tool": "smtp-source",
        },
        "ironpost_workers": args.ironpost_workers,
        "servers": servers,
        "ironpost_skipped": skipped,
        "summary": rows,
        "runs": [r.as_dict() for r in results],
        "main_cf": MAIN_CF,
    }
    out = args.output or RESULTS / time.strftime("accept-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
