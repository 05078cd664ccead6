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
import re
import shutil
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from common import (
    MAIN_CF,
    SERVERS,
    BenchError,
    DnsTrap,
    LoadSpec,
    Rates,
    Server,
    SmtpSink,
    SourceRun,
    machine_info,
)
from harness import (
    Rounds,
    add_addresses,
    add_load_arguments,
    better,
    describe,
    figures_table,
    fresh_instance,
    load_fields,
    load_specs,
    new_parser,
    parse_addresses,
    preflight,
    require_positive,
    work_dir,
    write_result,
)

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
class RelayResult(Rates):
    server: str
    mode: str
    messages: int
    accept_seconds: float
    e2e_seconds: float
    relayed: int
    sink_sessions: int
    latency_p50: float
    latency_p99: float


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
    source = SourceRun(spec.argv(server.host, server.port))
    t0 = source.started
    deadline = t0 + timeout
    while not sink.reached.wait(0.5) and time.perf_counter() < deadline:
        if source.exited_at is not None and source.proc.returncode != 0:
            break  # smtp-source failed: no point waiting for the sink
    if not sink.reached.is_set():
        source.abandon()
        log = read_deliveries(maillog)
        stderr = source.proc.stderr
        raise BenchError(
            f"{server.name}: the sink got {sink.count}/{spec.messages} messages after "
            f"{time.perf_counter() - t0:.0f}s; smtp-source exit {source.proc.returncode}: "
            f"{stderr.read().decode(errors='replace').strip()[-1000:] if stderr else ''}"
            f"; the server logged {dict(log.statuses) or 'no deliveries'}"
        )
    assert sink.reached_at is not None
    accept_seconds = source.finish(server.name)
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
        accept_seconds=accept_seconds,
        e2e_seconds=sink.reached_at - t0,
        relayed=sink.count,
        sink_sessions=0,  # known once the server has closed its cached connections
        latency_p50=percentile(log.delays, 50),
        latency_p99=percentile(log.delays, 99),
    )


# --- the procedure -------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = new_parser(__doc__)
    add_load_arguments(p)
    add_addresses(p, "127.0.0.31:2525", "127.0.0.32:2525")
    p.add_argument("--sink-addr", default="127.0.0.30:2526", help="host:port for smtp-sink")
    p.add_argument("--dns-trap", default="127.0.0.39:53", help="host:port of the DNS trap")
    args = p.parse_args(argv)
    require_positive(p, args, "messages", "sessions", "size", "rounds")
    parse_addresses(p, args, "postfix_addr", "ironpost_addr", "sink_addr", "dns_trap")
    return args


def one_load(
    name: str, spec: LoadSpec, args: argparse.Namespace, base: Path, trap: DnsTrap
) -> RelayResult:
    main_cf = relay_main_cf(args.sink_addr, args.dns_trap)
    with fresh_instance(name, args, base, f"relay-{name}-", main_cf) as server:
        sink = SmtpSink(*args.sink_addr)  # fresh per run, so its count is this run's
        trap.reset()  # before the server starts: a lookup at startup counts too
        try:
            sink.start(spec.messages)
            server.start()
            result = run_relay(server, spec, sink, trap, args.timeout)
        finally:
            server.stop()
            time.sleep(0.2)  # let the sink count the sessions the server's exit closed
            sink_err = sink.stop()
        if sink_err:
            print(f"  smtp-sink said: {sink_err[-500:]}", file=sys.stderr)
        if sink.count != spec.messages:  # a late duplicate, after the figures were taken
            raise BenchError(
                f"{name}: the sink ended with {sink.count} messages, {spec.messages} sent"
            )
    return replace(result, sink_sessions=sink.sessions - 1)  # minus the readiness probe


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
            rows.append(
                {
                    "mode": mode,
                    "metric": label,
                    "unit": unit,
                    "postfix": pf,
                    "ironpost": ip,
                    "ratio": better(ip, pf, lower_is_better),
                }
            )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def num(value: float | None, _: dict[str, Any]) -> str:
        return "pending" if value is None else f"{value:.0f}"

    return figures_table(rows, lambda r: f"{r['metric']}, {r['mode']}", num, first="scenario")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (lineup := preflight("relay.py", args, check=need_smtp_sink)) is None:
        return 2
    specs = load_specs(args, RELAY_RECIPIENT)
    base = work_dir("ironpost-bench-relay-", args.workdir)
    machine = machine_info()
    print(describe(machine))
    sink_host, sink_port = args.sink_addr
    print(
        f"load: {args.messages} messages x {args.size} bytes over {args.sessions} sessions, "
        f"relayed to smtp-sink {sink_host}:{sink_port}, {args.rounds} round(s); work dir {base}"
    )

    results: list[RelayResult] = []
    trap = DnsTrap(*args.dns_trap)
    with Rounds(args, lineup, base, on_exit=trap.stop) as rounds:
        trap.start()
        for rnd, order in rounds.order(lineup.servers):
            for spec in specs:
                for name in order:
                    result = one_load(name, spec, args, base, trap)
                    results.append(result)
                    print(
                        f"  round {rnd} {name:8} {spec.mode:27} "
                        f"accepted {result.accepted_rate:6.0f} msg/s "
                        f"({result.accept_seconds:7.3f}s)  end to end "
                        f"{result.e2e_rate:6.0f} msg/s ({result.e2e_seconds:7.3f}s)  "
                        f"latency p50 {result.latency_p50 * 1000:5.0f} ms "
                        f"p99 {result.latency_p99 * 1000:5.0f} ms  "
                        f"({result.sink_sessions} sink sessions)",
                        flush=True,
                    )
    if rounds.code:
        return rounds.code

    rows = summarise(results, [s.mode for s in specs])
    print()
    print(table(rows))
    write_result(
        "relay",
        rounds.started,
        machine,
        args.output,
        load=load_fields(
            args,
            tool="smtp-source",
            recipient=RELAY_RECIPIENT,
            sink=f"smtp-sink -c {sink_host}:{sink_port}",
        ),
        servers=lineup.servers,
        ironpost_skipped=lineup.skipped,
        summary=rows,
        runs=[r.as_dict() for r in results],
        main_cf=relay_main_cf(args.sink_addr, args.dns_trap),
    )
    return 0


def need_smtp_sink() -> None:
    if not shutil.which("smtp-sink"):
        raise BenchError("smtp-sink not found (it comes with Debian's postfix package)")


if __name__ == "__main__":
    sys.exit(main())
