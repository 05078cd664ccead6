"""The scenario scripts' shared procedure: options, preflight, rounds, medians, the result file.

Owns what every side-by-side scenario (accept, relay, size_mix, concurrency, queue_scale,
auth_cost) does the same way, so that each script keeps only its own load and its own figures:

* the shared command-line options, spelled and documented the same wherever they appear;
* `preflight`: running as root, the tools present, and whether ironpost can run at all;
* `fresh_instance`: one fresh directory and server per load, its port checked free first;
* `Rounds`: the servers alternate which goes first from round to round, and a failure becomes
  an exit code;
* `median`, `ratio`, `better`: a ratio always reads "how many times better ironpost is";
* `write_result`: bench/results/<scenario>-<timestamp>.json with the machine description,
  the keys report.py reads.

Invariants: an instance directory is removed only after its load succeeded (and never with
``--keep``); the work dir only after every round succeeded. Nothing here measures anything:
the figures are each scenario's own, so moving code here cannot change one.
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
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from common import (
    MAIN_CF,
    RECIPIENT,
    SERVERS,
    BenchError,
    LoadSpec,
    Server,
    ensure_tools,
    markdown_table,
    port_open,
)
from ironpost_instance import IRONPOST, IronpostInstance, ironpost_unavailable
from postfix_instance import PostfixInstance

RESULTS = Path(__file__).resolve().parent / "results"
T = TypeVar("T")


# --- options ---------------------------------------------------------------------------------


def new_parser(doc: str | None) -> argparse.ArgumentParser:
    """A scenario's parser, described by the first paragraph of its module docstring."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)


def add_server_choice(p: argparse.ArgumentParser, bin_help: str = "the ironpost command") -> None:
    p.add_argument("--only", choices=SERVERS, help="benchmark one server only")
    p.add_argument("--ironpost-bin", type=Path, default=IRONPOST, help=bin_help)


def add_addresses(p: argparse.ArgumentParser, postfix: str, ironpost: str) -> None:
    """--postfix-addr and --ironpost-addr; each scenario has its own pair, so runs never clash."""
    p.add_argument("--postfix-addr", default=postfix, help="host:port for Postfix")
    p.add_argument("--ironpost-addr", default=ironpost, help="host:port for ironpost")


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", type=Path, default=None, help="where instance dirs go (/tmp)")
    p.add_argument("--keep", action="store_true", help="keep instance dirs (queues, logs)")
    p.add_argument("--output", type=Path, default=None, help="JSON path (bench/results/...)")


def add_load_arguments(p: argparse.ArgumentParser) -> None:
    """The smtp-source load and run options of accept.py and relay.py (addresses are each's own)."""
    p.add_argument("--messages", type=int, default=20_000, help="messages per load (20000)")
    p.add_argument("--sessions", type=int, default=50, help="parallel SMTP sessions (50)")
    p.add_argument("--size", type=int, default=4096, help="message size in bytes (4096)")
    p.add_argument("--rounds", type=int, default=1, help="rounds; the table shows medians (1)")
    p.add_argument(
        "--mode", choices=("both", "new", "reuse"), default="both", help="load modes (both)"
    )
    add_server_choice(p, "the ironpost command (.venv's)")
    p.add_argument("--timeout", type=float, default=900.0, help="per-load limit in seconds")
    add_output_arguments(p)


def require_positive(p: argparse.ArgumentParser, args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def loopback_addr(addr: str) -> tuple[str, int]:
    """`split_addr`, refusing anything off loopback (a relay or a trap must not leave it)."""
    host, port = split_addr(addr)
    if not host.startswith("127."):
        raise BenchError(f"{addr}: the benchmark stays on loopback (127.0.0.0/8)")
    return host, port


def parse_addresses(
    p: argparse.ArgumentParser, args: argparse.Namespace, *names: str, loopback: bool = True
) -> None:
    """Replace each ``host:port`` option in ``names`` by its (host, port), or exit with usage."""
    split = loopback_addr if loopback else split_addr
    try:
        for name in names:
            setattr(args, name, split(getattr(args, name)))
    except (BenchError, ValueError) as exc:
        p.error(str(exc))


def load_specs(args: argparse.Namespace, recipient: str = RECIPIENT) -> list[LoadSpec]:
    """One smtp-source load per ``--mode`` (new connection per message, then -d reuse)."""
    modes = {"new": [False], "reuse": [True], "both": [False, True]}[args.mode]
    return [
        LoadSpec(args.messages, args.sessions, args.size, reuse, recipient=recipient)
        for reuse in modes
    ]


# --- preflight -------------------------------------------------------------------------------


@dataclass
class Lineup:
    """The servers a run measures, in round-one order, and why ironpost was left out if it was."""

    servers: list[str]
    skipped: str | None
    # Whether messages point at --only postfix (the smtp-source scenarios say so; the others
    # have kept their shorter wording).
    suggest_only: bool


def preflight(
    script: str,
    args: argparse.Namespace,
    check: Callable[[], object] | None = None,
    *,
    may_skip: bool = True,
    suggest_only: bool = True,
) -> Lineup | None:
    """Root, the tools, the scenario's own ``check``, and the lineup; None: exit 2 (said why).

    With ``may_skip``, an ironpost that cannot run is left out (Postfix is still measured)
    unless ``--only ironpost`` asked for it; without, it is an error.
    """
    if os.geteuid() != 0:
        print(f"{script} must run as root: it starts Postfix instances.", file=sys.stderr)
        return None
    try:
        ensure_tools()
        if check is not None:
            check()
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    servers = [args.only] if args.only else list(SERVERS)
    skipped = None
    if "ironpost" in servers and (why := ironpost_unavailable(args.ironpost_bin)):
        if args.only == "ironpost" or not may_skip:
            print(f"error: {why}", file=sys.stderr)
            return None
        skipped = why
        servers.remove("ironpost")
        hint = " (as with --only postfix)" if suggest_only else ""
        print(f"NOTE: skipping ironpost: {why}. Postfix figures only{hint}.")
    return Lineup(servers, skipped, suggest_only)


def work_dir(prefix: str, parent: Path | None) -> Path:
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    base.chmod(0o755)  # unprivileged Postfix daemons must traverse it
    return base


def describe(machine: dict[str, Any]) -> str:
    """The machine line every scenario prints first."""
    return (
        f"{machine['cpu_model']}, {machine['nproc']} CPUs, Linux {machine['kernel']}, "
        f"Python {machine['python']}, Postfix {machine['postfix']}, ironpost {machine['ironpost']}"
    )


# --- instances and rounds --------------------------------------------------------------------


def make_server(name: str, root: Path, args: argparse.Namespace, main_cf: str = MAIN_CF) -> Server:
    """``name``'s instance under ``root``, at the parsed (host, port) of its --*-addr option."""
    if name == "postfix":
        return PostfixInstance(root, *args.postfix_addr, main_cf=main_cf)
    host, port = args.ironpost_addr
    workers = getattr(args, "ironpost_workers", None)  # only accept.py offers --ironpost-workers
    return IronpostInstance(root, host, port, args.ironpost_bin, main_cf=main_cf, workers=workers)


@contextmanager
def fresh_instance(
    name: str, args: argparse.Namespace, base: Path, prefix: str, main_cf: str = MAIN_CF
) -> Iterator[Server]:
    """A new, not yet started server in a new directory under ``base``; stopped on the way out.

    A BenchError inside keeps the directory and names it; after a clean exit the directory is
    removed unless ``--keep``. Stopping twice is harmless, so the body may stop the server
    itself to read what the server writes on its way down (its log).
    """
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    server = make_server(name, root, args, main_cf)
    if port_open(server.host, server.port):
        raise BenchError(f"{server.host}:{server.port} is already in use; stop what listens there")
    try:
        yield server
    except BenchError as exc:
        raise BenchError(f"{exc}\n(instance kept for inspection in {root})") from exc
    finally:
        server.stop()
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


class Rounds:
    """The frame of a scenario's measurement loop.

    Inside ``with Rounds(...) as rounds:``, `order` yields each round's number and its order
    of the servers (or of any plan), alternating so neither server always gets the colder (or
    warmer) machine. A BenchError or ^C ends the block: the reason is printed and `code` is
    the exit status (1 or 130), so the caller returns it; `on_exit` (stopping a trap) runs
    either way. After a clean block the work dir is removed unless ``--keep``.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        lineup: Lineup,
        base: Path,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        self.args = args
        self.lineup = lineup
        self.base = base
        self.on_exit = on_exit
        self.started = 0.0
        self.code = 0

    def order(self, items: Sequence[T]) -> Iterator[tuple[int, Sequence[T]]]:
        for rnd in range(self.args.rounds):
            yield rnd + 1, (items if rnd % 2 == 0 else items[::-1])

    def __enter__(self) -> Rounds:
        self.started = time.time()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if self.on_exit is not None:
            self.on_exit()
        if kind is None:
            if not self.args.keep:
                shutil.rmtree(self.base, ignore_errors=True)
            return False
        if isinstance(exc, BenchError):
            print(f"error: {exc}", file=sys.stderr)
            lineup = self.lineup
            if lineup.suggest_only and "ironpost" in lineup.servers and self.args.only is None:
                print("(--only postfix measures Postfix alone)", file=sys.stderr)
            self.code = 1
            return True
        if isinstance(exc, KeyboardInterrupt):
            self.code = 130
            return True
        return False


# --- summary and result ----------------------------------------------------------------------


def median(values: Collection[float]) -> float | None:
    return statistics.median(values) if values else None


def ratio(ironpost: float | None, postfix: float | None) -> float | None:
    if ironpost is None or postfix is None or postfix == 0:
        return None
    return ironpost / postfix


def better(ironpost: float | None, postfix: float | None, lower_is_better: bool) -> float | None:
    """How many times better ironpost is: Postfix / ironpost when lower is better."""
    return ratio(postfix, ironpost) if lower_is_better else ratio(ironpost, postfix)


def times(value: float | None) -> str:
    """A ratio's table cell."""
    return "-" if value is None else f"{value:.2f}x"


def figures_table(
    rows: Sequence[dict[str, Any]],
    label: Callable[[dict[str, Any]], str],
    cell: Callable[[Any, dict[str, Any]], str],
    *,
    first: str = "figure",
    left: Collection[int] = (0, 1),
) -> str:
    """The summary table most scenarios print: figure, unit, Postfix, ironpost, ratio.

    ``label`` names a row's figure; ``cell`` writes a server's value (given its row, whose
    unit or format may decide how).
    """
    head = (first, "unit", "Postfix", "ironpost", "ratio")
    lines = [
        (label(r), r["unit"], cell(r["postfix"], r), cell(r["ironpost"], r), times(r["ratio"]))
        for r in rows
    ]
    return markdown_table(head, lines, left=left)


def load_fields(args: argparse.Namespace, **more: Any) -> dict[str, Any]:
    """The result's "load": messages, sessions, size and rounds as run, then ``more``."""
    return {
        "messages": args.messages,
        "sessions": args.sessions,
        "size": args.size,
        "rounds": args.rounds,
        **more,
    }


def write_result(
    benchmark: str, started: float, machine: dict[str, Any], output: Path | None, **fields: Any
) -> Path:
    """Write the scenario's JSON (``fields`` after the common head, in their order) and say so."""
    report = {
        "benchmark": benchmark,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine,
        **fields,
    }
    out = output or RESULTS / time.strftime(f"{benchmark}-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {out}")
    return out
