"""Relay benchmark: Postfix and ironpost relay the same load to the same smtp-sink, one run.

Owns the procedure behind issue #3's benchmark. For every round, for each load mode (new
connection per message, then connection reuse with smtp-source -d), each server in turn gets a
fresh instance in a fresh directory and a fresh smtp-sink, takes the same smtp-source load
(default 20,000 messages of 4 KiB over 50 sessions, all to ``user@relay.test``), relays every
message to the sink, and is stopped with its sink.

Configuration: the accept benchmark's main.cf (`common.MAIN_CF`) plus the relay lines of
`relay_main_cf`, one text for both servers:
``transport_maps = inline:{ relay.test=smtp:[127.0.0.30]:2526 }`` (the brackets mean no MX or
address lookup, so neither server needs DNS), ``default_destination_concurrency_limit = 20``
(both servers' default, spelled out), and ``dns_nameservers = 127.0.0.39:53`` (ironpost only;
Postfix ignores it), which points ironpost's resolver at a trap: a socket in this process that
counts queries and never answers. Relaying is permitted by ``permit_mynetworks`` (smtp-source
connects from 127.0.0.1). Every address is on loopback: servers 127.0.0.31/32, sink 127.0.0.30,
trap 127.0.0.39.

Measured per run:

* accepted: messages / smtp-source wall time (until every message got its 250 after DATA);
* end to end: messages / time from the start of smtp-source (its first byte) to the moment the
  sink acknowledged the last message. The sink runs with ``smtp-sink -c``, which writes its
  counters (``sess=N quit=N mesg=N`` and a CR) to stdout each time it receives the ``.``
  of a message; a thread reads that pipe and stamps the time the count reaches the number sent.
  Nothing is written to disk by the sink (``-d``/``-D`` dumps would cost it a file per message);
* latency p50/p99: the ``delay=`` of each ``status=sent`` line in the server's own maillog
  (arrival in the queue to the sink's reply, as the server measured it; Postfix rounds it to
  two significant digits).

Invariant: a figure is only reported when smtp-source reported no error, the sink received
exactly as many messages as were sent, the server logged exactly that many ``status=sent``
deliveries and nothing deferred or bounced, and ironpost sent no DNS query; otherwise the
benchmark aborts with the reason and keeps the instance directory. Results and the machine
description go to bench/results/relay-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from common import (
    MAIN_CF,
    SERVERS,
    BenchError,
    DnsTrap,
    LoadSpec,
    Server,
    SmtpSink,
    add_load_arguments,
    check_load_arguments,
    ensure_tools,
    machine_info,
    markdown_table,
    port_open,
)
from ironpost_instance import IRONPOST, IronpostInstance, ironpost_unavailable
from postfix_instance import PostfixInstance

RESULTS = Path(__file__).resolve().parent / "results"
RELAY_DOMAIN = "relay.test"
RELAY_RECIPIENT = f"user@{RELAY_DOMAIN}"


def relay_main_cf(sink: tuple[str, int], dns_trap: tuple[str, int]) -> str:
    """The accept benchmark's main.cf template plus the relay lines (still a template)."""
    # Doubled braces: the result is formatted again by common.render_main_cf.
    return MAIN_CF + (
        "\n# Relay benchmark (bench/relay.py): relay.test goes to one smtp-sink, by address, so\n"
        "# no MX or A lookup is needed. Concurrency as both servers' default, spelled out.\n"
        f"transport_maps = inline:{{{{ {RELAY_DOMAIN}=smtp:[{sink[0]}]:{sink[1]} }}}}\n"
        "default_destination_concurrency_limit = 20\n"
        "# ironpost only (Postfix ignores it): any DNS query goes to the harness's trap.\n"
        f"dns_nameservers = {dns_trap[0]}:{dns_trap[1]}\n"
    )


# --- the server's own account --------------------------------------------------------------

# Both servers write Postfix-style delivery lines: "to=<…>, relay=…, delay=0.12, …, status=sent".
_DELIVERY = re.compile(rb"to=<[^>]*>, .*?delay=([0-9.]+), .*?status=([a-z]+)")


@dataclass
class Deliveries:
    """What the server's maillog says about the deliveries of this run."""

    statuses: Counter[str] = field(default_factory=Counter)
    delays: list[float] = field(default_factory=list)  # of status=sent lines

    @property
    def sent(self) -> int:
        return self.statuses["sent"]


def read_deliveries(maillog: Path) -> Deliveries:
    out = Deliveries()
    try:
        text = maillog.read_bytes()
    except FileNotFoundError:
        return out
    for match in _DELIVERY.finditer(text):
        status = match[2].decode()
        out.statuses[status] += 1
        if status == "sent":
            out.delays.append(float(match[1]))
    return out


# --- one load ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RelayResult:
    server: str
    mode: str
    messages: int
    accept_seconds: float
    e2e_seconds: float
    relayed: int
    sink_sessions: int
    latency_p50: float
    latency_p99: float

    @property
    def accepted_rate(self) -> float:
        return self.messages / self.accept_seconds

    @property
    def e2e_rate(self) -> float:
        return self.messages / self.e2e_seconds

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["accepted_rate"] = round(self.accepted_rate, 1)
        out["e2e_rate"] = round(self.e2e_rate, 1)
        return out


def percentile(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def run_relay(
    server: Server, spec: LoadSpec, sink: SmtpSink, trap: DnsTrap, timeout: float
) -> RelayResult:
    """Drive ``server`` with smtp-source; time acceptance and the sink's last acknowledgement.

    The main thread only waits on events (smtp-source's exit, the sink's count), so the
    harness takes no CPU from the servers during the load; the maillog is read afterwards.
    """
    maillog = server.root / "maillog"
    argv = spec.argv(server.host, server.port)
    exited: dict[str, float] = {}

    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def reap() -> None:
        proc.wait()
        exited["t"] = time.perf_counter()

    reaper = threading.Thread(target=reap, daemon=True)
    reaper.start()

    deadline = t0 + timeout
    while not sink.reached.wait(0.5) and time.perf_counter() < deadline:
        if "t" in exited and proc.returncode != 0:
            break  # smtp-source failed: no point waiting for the sink
    if not sink.reached.is_set():
        if proc.poll() is None:
            proc.kill()
        reaper.join(5)
        log = read_deliveries(maillog)
        raise BenchError(
            f"{server.name}: the sink got {sink.count}/{spec.messages} messages after "
            f"{time.perf_counter() - t0:.0f}s; smtp-source exit {proc.returncode}: "
            f"{proc.stderr.read().decode(errors='replace').strip()[-1000:] if proc.stderr else ''}"
            f"; the server logged {dict(log.statuses) or 'no deliveries'}"
        )
    assert sink.reached_at is not None
    reaper.join()
    _, err = proc.communicate()
    if proc.returncode != 0 or err.strip():
        raise BenchError(
            f"{server.name}: smtp-source exit {proc.returncode}: "
            f"{err.decode(errors='replace').strip()[-2000:]}"
        )
    # The sink has the count; the server's log must agree (each message relayed exactly once,
    # nothing deferred or bounced). Postfix's postlogd and ironpost's buffered maillog write
    # the last lines a little after the delivery, hence the short wait.
    log = read_deliveries(maillog)
    deadline = time.monotonic() + 30
    while log.sent < spec.messages and time.monotonic() < deadline:
        time.sleep(0.25)
        log = read_deliveries(maillog)
    if sink.count != spec.messages:
        raise BenchError(f"{server.name}: the sink got {sink.count} messages, {spec.messages} sent")
    if log.sent != spec.messages or set(log.statuses) != {"sent"}:
        raise BenchError(
            f"{server.name}: the maillog shows {dict(log.statuses)}, expected "
            f"{spec.messages} status=sent and nothing else"
        )
    if trap.queries:
        raise BenchError(
            f"{server.name}: {len(trap.queries)} DNS queries on the relay path "
            f"(first: {trap.queries[0]}); a [address] next hop needs none"
        )
    return RelayResult(
        server=server.name,
        mode=spec.mode,
        messages=spec.messages,
        accept_seconds=exited["t"] - t0,
        e2e_seconds=sink.reached_at - t0,
        relayed=sink.count,
        sink_sessions=0,  # known once the server has closed its cached connections
        latency_p50=percentile(log.delays, 50),
        latency_p99=percentile(log.delays, 99),
    )


# --- the procedure -------------------------------------------------------------------------


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host.startswith("127."):
        raise BenchError(f"{addr}: the benchmark stays on loopback (127.0.0.0/8)")
    return host, int(port)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_load_arguments(p, IRONPOST)
    p.add_argument("--postfix-addr", default="127.0.0.31:2525", help="host:port for Postfix")
    p.add_argument("--ironpost-addr", default="127.0.0.32:2525", help="host:port for ironpost")
    p.add_argument("--sink-addr", default="127.0.0.30:2526", help="host:port for smtp-sink")
    p.add_argument("--dns-trap", default="127.0.0.39:53", help="host:port of the DNS trap")
    args = p.parse_args(argv)
    check_load_arguments(p, args)
    try:
        for name in ("postfix_addr", "ironpost_addr", "sink_addr", "dns_trap"):
            setattr(args, name, split_addr(getattr(args, name)))
    except (BenchError, ValueError) as exc:
        p.error(str(exc))
    return args


def make_server(name: str, root: Path, args: argparse.Namespace, main_cf: str) -> Server:
    if name == "postfix":
        host, port = args.postfix_addr
        return PostfixInstance(root, host, port, main_cf=main_cf)
    host, port = args.ironpost_addr
    return IronpostInstance(root, host, port, args.ironpost_bin, main_cf=main_cf)


def one_load(
    name: str, spec: LoadSpec, args: argparse.Namespace, base: Path, trap: DnsTrap
) -> RelayResult:
    root = Path(tempfile.mkdtemp(prefix=f"relay-{name}-", dir=base))
    server = make_server(name, root, args, relay_main_cf(args.sink_addr, args.dns_trap))
    if port_open(server.host, server.port):
        raise BenchError(f"{server.host}:{server.port} is already in use; stop what listens there")
    sink = SmtpSink(*args.sink_addr)  # fresh per run, so its count is this run's
    trap.reset()  # before the server starts: a lookup at startup counts too
    try:
        sink.start(spec.messages)
        server.start()
        result = run_relay(server, spec, sink, trap, args.timeout)
    except BenchError as exc:
        raise BenchError(f"{exc}\n(instance kept for inspection in {root})") from exc
    finally:
        server.stop()
        time.sleep(0.2)  # let the sink count the sessions the server's exit closed
        sink_err = sink.stop()
    if sink_err:
        print(f"  smtp-sink said: {sink_err[-500:]}", file=sys.stderr)
    if sink.count != spec.messages:  # a late duplicate, after the figures were taken
        raise BenchError(f"{name}: the sink ended with {sink.count} messages, {spec.messages} sent")
    result = replace(result, sink_sessions=sink.sessions - 1)  # minus the readiness probe
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return result


def summarise(results: list[RelayResult], modes: list[str]) -> list[dict[str, Any]]:
    metrics = (
        ("accepted_rate", "accepted", "msg/s", False),
        ("e2e_rate", "end to end", "msg/s", False),
        ("latency_p50", "latency p50", "ms", True),
        ("latency_p99", "latency p99", "ms", True),
    )
    rows = []
    for mode in modes:
        for attr, label, unit, lower_is_better in metrics:
            medians: dict[str, float | None] = {}
            for name in SERVERS:
                values = [getattr(r, attr) for r in results if r.server == name and r.mode == mode]
                scale = 1000.0 if unit == "ms" else 1.0
                medians[name] = statistics.median(values) * scale if values else None
            pf, ip = medians["postfix"], medians["ironpost"]
            # The ratio always reads "how many times better ironpost is".
            if pf is None or ip is None or (pf if not lower_is_better else ip) == 0:
                ratio = None
            else:
                ratio = pf / ip if lower_is_better else ip / pf
            rows.append(
                {
                    "mode": mode,
                    "metric": label,
                    "unit": unit,
                    "postfix": pf,
                    "ironpost": ip,
                    "ratio": ratio,
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def num(value: float | None) -> str:
        return "pending" if value is None else f"{value:.0f}"

    head = ("scenario", "unit", "Postfix", "ironpost", "ratio")
    lines = [
        (
            f"{r['metric']}, {r['mode']}",
            r["unit"],
            num(r["postfix"]),
            num(r["ironpost"]),
            "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
        )
        for r in rows
    ]
    return markdown_table(head, lines, left=(0, 1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("relay.py must run as root: it starts Postfix instances.", file=sys.stderr)
        return 2
    try:
        ensure_tools()
        if not shutil.which("smtp-sink"):
            raise BenchError("smtp-sink not found (it comes with Debian's postfix package)")
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
    specs = [
        LoadSpec(args.messages, args.sessions, args.size, reuse, recipient=RELAY_RECIPIENT)
        for reuse in modes
    ]
    base = Path(tempfile.mkdtemp(prefix="ironpost-bench-relay-", dir=args.workdir))
    base.chmod(0o755)  # unprivileged Postfix daemons must traverse it
    machine = machine_info()
    print(
        f"{machine['cpu_model']}, {machine['nproc']} CPUs, Linux {machine['kernel']}, "
        f"Python {machine['python']}, Postfix {machine['postfix']}, ironpost {machine['ironpost']}"
    )
    sink_host, sink_port = args.sink_addr
    print(
        f"load: {args.messages} messages x {args.size} bytes over {args.sessions} sessions, "
        f"relayed to smtp-sink {sink_host}:{sink_port}, {args.rounds} round(s); work dir {base}"
    )

    results: list[RelayResult] = []
    started = time.time()
    trap = DnsTrap(*args.dns_trap)
    try:
        trap.start()
        for rnd in range(args.rounds):
            order = servers if rnd % 2 == 0 else servers[::-1]
            for spec in specs:
                for name in order:
                    result = one_load(name, spec, args, base, trap)
                    results.append(result)
                    print(
                        f"  round {rnd + 1} {name:8} {spec.mode:27} "
                        f"accepted {result.accepted_rate:6.0f} msg/s "
                        f"({result.accept_seconds:7.3f}s)  end to end "
                        f"{result.e2e_rate:6.0f} msg/s ({result.e2e_seconds:7.3f}s)  "
                        f"latency p50 {result.latency_p50 * 1000:5.0f} ms "
                        f"p99 {result.latency_p99 * 1000:5.0f} ms  "
                        f"({result.sink_sessions} sink sessions)",
                        flush=True,
                    )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if "ironpost" in servers and args.only is None:
            print("(--only postfix measures Postfix alone)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        trap.stop()
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)

    rows = summarise(results, [s.mode for s in specs])
    print()
    print(table(rows))
    report = {
        "benchmark": "relay",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine,
        "load": {
            "messages": args.messages,
            "sessions": args.sessions,
            "size": args.size,
            "rounds": args.rounds,
            "tool": "smtp-source",
            "recipient": RELAY_RECIPIENT,
            "sink": f"smtp-sink -c {sink_host}:{sink_port}",
        },
        "servers": servers,
        "ironpost_skipped": skipped,
        "summary": rows,
        "runs": [r.as_dict() for r in results],
        "main_cf": relay_main_cf(args.sink_addr, args.dns_trap),
    }
    out = args.output or RESULTS / time.strftime("relay-%Y%m%d-%H%M%S.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
