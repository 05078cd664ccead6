"""Size-mix benchmark (issue #7, S3): MB/s accepted for small, medium and large messages.

Owns the procedure behind S3. For every round, for each message size (1 KiB, 64 KiB, 1 MiB),
each server in turn gets a fresh instance in a fresh directory (the accept benchmark's main.cf,
`common.MAIN_CF`, delivering to one virtual Maildir user), takes an smtp-source load of that
size, and is stopped. Counts and sessions are scaled per size so that each load moves a similar
volume (default 12,000 x 1 KiB and 5,000 x 64 KiB over 50 sessions, 1,000 x 1 MiB over 20).

Measured per run:

* accepted MB/s: messages x size / smtp-source wall time (MB = 10^6 bytes; the size is
  smtp-source's ``-l``, the message text it generates);
* end to end MB/s: the same volume / time to the last Maildir delivery (`common.run_load`);
* memory, during the 1 MiB loads only: a thread reads ``VmRSS`` and ``VmHWM`` (and ``Pss``
  from ``smaps_rollup``) of every process in the server's process group from /proc every
  0.1 s. ironpost runs in its own session (`IronpostInstance`); Postfix's master calls
  setsid(), so every daemon it spawns shares its process group. Postfix's figure is the sum
  over its processes, so shared pages (libraries) count once per process in RSS; the PSS row
  divides them fairly. "Idle" is one sample taken 1 s after the banner, before the load.
  "Per session" is (peak - idle) / concurrent sessions.

The issue's memory target: a 1 MiB message never costs more than a few MiB of RSS, because
large messages stream. The script reads "a few" as ``--rss-budget-mib`` (4) per concurrent
1 MiB session, judged on the high-water mark (the upper bound), and prints whether it holds.

Invariant: a figure is only reported when every message was accepted without error and
delivered (as in accept.py); the servers alternate which goes first from round to round.
Results go to bench/results/size_mix-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (
    MAIN_CF,
    MIB,
    BenchError,
    LoadResult,
    LoadSpec,
    MemorySample,
    MemoryWatch,
    Server,
    machine_info,
    run_load,
    sample_group,
)
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
    require_positive,
    work_dir,
    write_result,
)
from ironpost_instance import IronpostInstance
from postfix_instance import PostfixInstance


@dataclass(frozen=True)
class SizeClass:
    label: str
    size: int
    messages: int
    sessions: int


# ~20-60 s per load at full size on the reference machine; --quick divides the counts by 10.
SIZES = (
    SizeClass("1 KiB", 1024, 12_000, 50),
    SizeClass("64 KiB", 64 * 1024, 5_000, 50),
    SizeClass("1 MiB", MIB, 1_000, 20),
)
MEMORY_SIZE = MIB  # the size class whose loads are sampled for memory


def server_pgid(server: Server) -> int:
    """The process group holding every process of ``server``."""
    if isinstance(server, IronpostInstance):
        assert server.proc is not None
        return server.proc.pid  # start_new_session: it leads its own group
    assert isinstance(server, PostfixInstance)
    master = server.master_pid()
    if master is None:
        raise BenchError("postfix: no master process to measure")
    pgid = os.getpgid(master)
    if pgid == os.getpgrp():  # would count smtp-source and this script too
        raise BenchError("postfix master shares the benchmark's process group")
    return pgid


# --- one load ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SizeResult:
    server: str
    size_label: str
    size: int
    sessions: int
    load: LoadResult
    idle: MemorySample | None = None
    peak: MemorySample | None = None
    after: MemorySample | None = None  # 1 s after the load: what the server keeps
    timeline: tuple[tuple[float, float, float], ...] = ()

    @property
    def volume(self) -> int:
        return self.load.messages * self.size

    @property
    def accepted_mbps(self) -> float:
        return self.volume / self.load.accept_seconds / 1e6

    @property
    def e2e_mbps(self) -> float:
        return self.volume / self.load.e2e_seconds / 1e6

    def per_session(self, field: str) -> float | None:
        """(peak - idle) / concurrent sessions, in bytes, for ``rss``, ``hwm`` or ``pss``."""
        if self.idle is None or self.peak is None:
            return None
        base = self.idle.pss if field == "pss" else self.idle.rss  # VmHWM is peak RSS
        return (getattr(self.peak, field) - base) / self.sessions

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "server": self.server,
            "size_label": self.size_label,
            "size": self.size,
            "sessions": self.sessions,
            **self.load.as_dict(),
            "accepted_mbps": round(self.accepted_mbps, 2),
            "e2e_mbps": round(self.e2e_mbps, 2),
        }
        if self.idle is not None and self.peak is not None:
            out["memory"] = {
                "idle": asdict(self.idle),
                "peak": asdict(self.peak),
                "after": None if self.after is None else asdict(self.after),
                "per_session_rss": self.per_session("rss"),
                "per_session_hwm": self.per_session("hwm"),
                "per_session_pss": self.per_session("pss"),
                "timeline_s_rss_pss_mib": self.timeline,
            }
        return out


def one_load(
    name: str, size: SizeClass, reuse: bool, args: argparse.Namespace, base: Path
) -> SizeResult:
    spec = LoadSpec(size.messages, size.sessions, size.size, reuse)
    idle = peak = after = None
    timeline: tuple[tuple[float, float, float], ...] = ()
    with fresh_instance(name, args, base, f"size-{name}-") as server:
        server.start()
        if size.size == MEMORY_SIZE:
            pgid = server_pgid(server)
            time.sleep(1.0)  # let the readiness probe's session end
            idle = sample_group(pgid)
            with MemoryWatch(pgid) as watch:
                load = run_load(server, spec, args.timeout)
            peak, timeline = watch.peak, tuple(watch.timeline)
            time.sleep(1.0)
            after = sample_group(pgid)
        else:
            load = run_load(server, spec, args.timeout)
    return SizeResult(name, size.label, size.size, size.sessions, load, idle, peak, after, timeline)


# --- summary -----------------------------------------------------------------------------------


def _median(results: list[SizeResult], name: str, size: int, fn: Any) -> float | None:
    return median(
        [v for r in results if r.server == name and r.size == size if (v := fn(r)) is not None]
    )


def summarise(results: list[SizeResult], sizes: tuple[SizeClass, ...]) -> list[dict[str, Any]]:
    """Median rows; the ratio reads "how many times better ironpost is" on every row."""
    rows: list[dict[str, Any]] = []

    def add(metric: str, label: str, unit: str, size: int, fn: Any, lower: bool) -> None:
        pf, ip = (_median(results, n, size, fn) for n in ("postfix", "ironpost"))
        rows.append(
            {
                "size": label,
                "metric": metric,
                "unit": unit,
                "postfix": pf,
                "ironpost": ip,
                "ratio": better(ip, pf, lower),
            }
        )

    for s in sizes:
        add("accepted", s.label, "MB/s", s.size, lambda r: r.accepted_mbps, False)
    for s in sizes:
        add("end to end", s.label, "MB/s", s.size, lambda r: r.e2e_mbps, False)
    mem = [s for s in sizes if s.size == MEMORY_SIZE]
    for s in mem:

        def mib(attr: str, key: str) -> Any:
            return lambda r: None if (m := getattr(r, key)) is None else getattr(m, attr) / MIB

        add("idle RSS", s.label, "MiB", s.size, mib("rss", "idle"), True)
        add("peak RSS, sampled", s.label, "MiB", s.size, mib("rss", "peak"), True)
        add("peak RSS, VmHWM", s.label, "MiB", s.size, mib("hwm", "peak"), True)
        add("peak PSS, sampled", s.label, "MiB", s.size, mib("pss", "peak"), True)
        add("RSS 1 s after the load", s.label, "MiB", s.size, mib("rss", "after"), True)
        for field, how in (("rss", "RSS sampled"), ("hwm", "VmHWM"), ("pss", "PSS sampled")):
            add(
                f"(peak - idle) / session, {how}",
                f"{s.label} x{s.sessions}",
                "MiB",
                s.size,
                lambda r, f=field: None if (v := r.per_session(f)) is None else v / MIB,
                True,
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def num(value: float | None, _: dict[str, Any]) -> str:
        if value is None:
            return "pending"
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.2f}"

    return figures_table(rows, lambda r: f"{r['metric']}, {r['size']}", num)


def verdicts(rows: list[dict[str, Any]], budget_mib: float) -> list[str]:
    out = []
    for r in rows:
        if r["metric"] == "accepted" and r["ratio"] is not None:
            ok = "holds" if r["ratio"] >= 2 else "NOT met"
            out.append(f"S3 target >= 2x Postfix in MB/s, {r['size']}: {r['ratio']:.2f}x, {ok}")
    for r in rows:
        if r["metric"] == "(peak - idle) / session, VmHWM" and r["ironpost"] is not None:
            ok = "holds" if r["ironpost"] <= budget_mib else "does NOT hold"
            out.append(
                f"S3 memory target (a 1 MiB message never costs more than a few MiB of RSS; "
                f"read as <= {budget_mib:g} MiB per concurrent 1 MiB session, on VmHWM): "
                f"ironpost {r['ironpost']:.2f} MiB per session, {ok}"
            )
    return out


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = new_parser(__doc__)
    p.add_argument("--quick", action="store_true", help="a tenth of the messages, 1 round")
    p.add_argument("--rounds", type=int, default=None, help="rounds, medians (3; 1 with --quick)")
    p.add_argument("--mode", choices=("new", "reuse"), default="reuse", help="load mode (reuse)")
    add_server_choice(p)
    add_addresses(p, "127.0.0.50:2525", "127.0.0.51:2525")
    p.add_argument("--rss-budget-mib", type=float, default=4.0, help="'a few MiB' (4)")
    p.add_argument("--timeout", type=float, default=900.0, help="per-load limit in seconds")
    add_output_arguments(p)
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    require_positive(p, args, "rounds")
    parse_addresses(p, args, "postfix_addr", "ironpost_addr", loopback=False)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (lineup := preflight("size_mix.py", args)) is None:
        return 2
    sizes = SIZES
    if args.quick:
        sizes = tuple(SizeClass(s.label, s.size, s.messages // 10, s.sessions) for s in SIZES)
    reuse = args.mode == "reuse"
    base = work_dir("ironpost-bench-size-", args.workdir)
    machine = machine_info()
    print(describe(machine))
    load_desc = ", ".join(f"{s.messages} x {s.label} over {s.sessions}" for s in sizes)
    print(f"load: {load_desc} sessions, {args.mode}, {args.rounds} round(s); work dir {base}")

    results: list[SizeResult] = []
    with Rounds(args, lineup, base) as rounds:
        for rnd, order in rounds.order(lineup.servers):
            for size in sizes:
                for name in order:
                    r = one_load(name, size, reuse, args, base)
                    results.append(r)
                    mem = ""
                    if r.peak is not None and r.idle is not None:
                        mem = (
                            f"  RSS idle {r.idle.rss / MIB:6.1f} peak {r.peak.rss / MIB:6.1f} "
                            f"HWM {r.peak.hwm / MIB:6.1f} PSS {r.peak.pss / MIB:6.1f} MiB "
                            f"({r.peak.procs} procs)"
                        )
                    print(
                        f"  round {rnd} {name:8} {size.label:6} accepted "
                        f"{r.accepted_mbps:7.2f} MB/s ({r.load.accept_seconds:7.3f}s)  "
                        f"end to end {r.e2e_mbps:7.2f} MB/s ({r.load.e2e_seconds:7.3f}s){mem}",
                        flush=True,
                    )
    if rounds.code:
        return rounds.code

    rows = summarise(results, sizes)
    print()
    print(table(rows))
    notes = verdicts(rows, args.rss_budget_mib)
    print()
    print("\n".join(notes))
    write_result(
        "size_mix",
        rounds.started,
        machine,
        args.output,
        load={
            "sizes": [asdict(s) for s in sizes],
            "mode": args.mode,
            "rounds": args.rounds,
            "quick": args.quick,
            "tool": "smtp-source",
            "memory_sampling": "VmRSS, VmHWM, Pss of the server's process group every 0.1 s",
            "rss_budget_mib": args.rss_budget_mib,
        },
        servers=lineup.servers,
        ironpost_skipped=lineup.skipped,
        summary=rows,
        verdicts=notes,
        runs=[r.as_dict() for r in results],
        main_cf=MAIN_CF,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
