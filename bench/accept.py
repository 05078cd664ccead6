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
import statistics
import sys
from pathlib import Path
from typing import Any

from common import MAIN_CF, SERVERS, LoadResult, LoadSpec, machine_info, markdown_table, run_load
from harness import (
    Rounds,
    add_addresses,
    add_load_arguments,
    describe,
    fresh_instance,
    load_fields,
    load_specs,
    new_parser,
    parse_addresses,
    preflight,
    ratio,
    require_positive,
    times,
    work_dir,
    write_result,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = new_parser(__doc__)
    add_load_arguments(p)
    add_addresses(p, "127.0.0.20:2525", "127.0.0.21:2525")
    p.add_argument(
        "--ironpost-workers",
        type=int,
        metavar="N",
        default=None,
        help="run ironpost with `--workers N` (SMTP processes; default: its ironpost_workers)",
    )
    args = p.parse_args(argv)
    require_positive(p, args, "messages", "sessions", "size", "rounds")
    parse_addresses(p, args, "postfix_addr", "ironpost_addr", loopback=False)
    return args


def one_load(name: str, spec: LoadSpec, args: argparse.Namespace, base: Path) -> LoadResult:
    with fresh_instance(name, args, base, f"{name}-") as server:
        server.start()
        return run_load(server, spec, args.timeout)


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
            times(r["ratio"]),
        )
        for r in rows
    ]
    return markdown_table(head, lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (lineup := preflight("accept.py", args)) is None:
        return 2
    specs = load_specs(args)
    base = work_dir("ironpost-bench-", args.workdir)
    machine = machine_info()
    print(describe(machine))
    print(
        f"load: {args.messages} messages x {args.size} bytes over {args.sessions} sessions, "
        f"{args.rounds} round(s); work dir {base}"
    )

    results: list[LoadResult] = []
    with Rounds(args, lineup, base) as rounds:
        for rnd, order in rounds.order(lineup.servers):
            for spec in specs:
                for name in order:
                    result = one_load(name, spec, args, base)
                    results.append(result)
                    print(
                        f"  round {rnd} {name:8} {spec.mode:27} "
                        f"accepted {result.accepted_rate:7.0f} msg/s "
                        f"({result.accept_seconds:7.3f}s)  end to end "
                        f"{result.e2e_rate:7.0f} msg/s ({result.e2e_seconds:7.3f}s)",
                        flush=True,
                    )
    if rounds.code:
        return rounds.code

    rows = summarise(results, [s.mode for s in specs])
    print()
    print(table(rows))
    write_result(
        "accept",
        rounds.started,
        machine,
        args.output,
        load=load_fields(args, tool="smtp-source"),
        ironpost_workers=args.ironpost_workers,
        servers=lineup.servers,
        ironpost_skipped=lineup.skipped,
        summary=rows,
        runs=[r.as_dict() for r in results],
        main_cf=MAIN_CF,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
