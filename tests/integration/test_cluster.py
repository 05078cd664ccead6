"""A cluster of three ironpost nodes sharing one PostgreSQL queue (issue #8), end to end.

Nodes on 127.0.0.11-13 (cluster_harness.py), smtplib clients recording the queue id of
every 250, Postfix's smtp-sink as the next hop of relay.test, counted by the queue id in
each whole message it received:

- load into all three nodes is delivered, every message exactly once;
- kill -9 of a node mid-load loses nothing acknowledged, and the duplicates are only
  messages the dead node held ACTIVE (read from the database right after the kill);
- a PostgreSQL restart mid-load: clients get 451 4.3.0 meanwhile, nothing acknowledged
  is lost, and the nodes reconnect by themselves;
- the per-destination concurrency limit and the anvil's connection rate hold
  cluster-wide, measured at the sink and at the client;
- ``ironpost queue list`` on any node lists the whole cluster's queue.

Waits have deadlines that end as soon as the condition holds; nothing asserts on time.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from cluster_harness import (
    Cluster,
    ClusterFactory,
    Load,
    cluster_factory,
    deliveries,
    wait_until,
)
from peers import SinkFactory, SmtpSink, peer_address

from ironpost.testing.postgres import PostgresServer

__all__ = ["cluster_factory"]

pytestmark = pytest.mark.integration

SINK = 8  # this module's smtp-sink address: peer_address(8)
NOWHERE = 9  # peer_address(9): nothing listens there


def _settle(cluster: Cluster, sink: SmtpSink, load: Load, timeout: float = 60.0) -> None:
    """Wait until every acknowledged message reached the sink and the queue is empty."""
    _arrive(sink, load, timeout)
    assert wait_until(lambda: cluster.queued() == 0, timeout), _left(cluster)


def _arrive(sink: SmtpSink, load: Load, timeout: float = 60.0) -> None:
    def arrived() -> bool:
        _, markers = deliveries(sink.dumps)
        return load.acked.keys() <= markers.keys()

    assert wait_until(arrived, timeout), _lost(sink, load)


def _left(cluster: Cluster) -> str:
    rows = cluster.query("SELECT state, lease_owner, COUNT(*) FROM messages GROUP BY 1, 2")
    return f"left in the queue (state, lease owner, messages): {rows}"


def _lost(sink: SmtpSink, load: Load) -> str:
    _, markers = deliveries(sink.dumps)
    lost = sorted(set(load.acked) - set(markers))
    return f"{len(lost)} of {len(load.acked)} acknowledged messages not delivered: {lost[:5]}"


def test_load_into_three_nodes_is_delivered_exactly_once(
    cluster_factory: ClusterFactory, smtp_sink: type[SinkFactory], pg_url: str
) -> None:
    sink = smtp_sink.start(SINK)
    cluster = cluster_factory.start(pg_url, relay=sink.nexthop)
    load = Load(cluster.nodes, prefix="even", total=150).start(threads=6)
    load.join()
    assert len(load.acked) == 150, (load.refused, load.errors)
    # Every node took its share of the load.
    for node in cluster.nodes:
        assert node.log_has("status=sent"), node.name

    _settle(cluster, sink, load)
    time.sleep(0.5)  # a late duplicate would show up now
    times, markers = deliveries(sink.dumps)
    assert {markers[m] for m in load.acked} == set(load.acked.values())
    duplicates = {qid: n for qid, n in times.items() if n > 1}
    assert not duplicates
    assert sum(times.values()) == 150


def test_kill9_of_a_node_mid_load(
    cluster_factory: ClusterFactory, smtp_sink: type[SinkFactory], pg_url: str
) -> None:
    sink = smtp_sink.start(SINK)
    cluster = cluster_factory.start(pg_url, relay=sink.nexthop)
    node2 = cluster["node2"]
    load = Load(cluster.nodes, prefix="kill").start(threads=6)
    assert wait_until(lambda: len(load.acked) >= 120, 30), (load.refused, load.errors)
    node2.kill9()
    # Right after the kill, before its leases expire: what node2 had in flight.
    in_flight = {
        str(r[0])
        for r in cluster.query(
            "SELECT id FROM messages WHERE state = 'active' AND lease_owner = 'node2'"
        )
    }
    time.sleep(1.0)  # the load goes on into the two survivors
    load.stop()
    assert not node2.running

    # node1 and node3 take node2's messages over once its leases expire (5 s).
    _settle(cluster, sink, load)
    time.sleep(0.5)
    times, _ = deliveries(sink.dumps)
    duplicates = {qid: n - 1 for qid, n in times.items() if n > 1}
    print(
        f"\nkill -9: {len(load.acked)} acknowledged, {len(in_flight)} in flight at node2,"
        f" {sum(duplicates.values())} duplicate deliveries"
    )
    assert set(duplicates) <= in_flight, set(duplicates) - in_flight
    assert sum(duplicates.values()) <= len(in_flight)
    assert in_flight <= set(times)  # what node2 held was delivered, by it or a survivor


def test_postgresql_restart_mid_load(
    cluster_factory: ClusterFactory,
    smtp_sink: type[SinkFactory],
    private_postgres: PostgresServer,
) -> None:
    # Slow DATA replies keep deliveries in flight, so the outage (longer than the delay)
    # always catches some whose outcome must be recorded while the database is away.
    sink = smtp_sink.start(SINK, "-w", "1")
    url = private_postgres.create_database("restart")
    cluster = cluster_factory.start(url, relay=sink.nexthop)
    pids = [node.process.pid for node in cluster.nodes if node.process is not None]
    load = Load(cluster.nodes, prefix="pg").start(threads=6)
    assert wait_until(lambda: len(load.acked) >= 40, 30), (load.refused, load.errors)
    assert wait_until(lambda: len(sink.messages()) >= 5, 30)

    private_postgres.stop()  # fast: every connection of every node is cut
    assert wait_until(lambda: load.refused["451 4.3.0"] >= 3, 30), (load.refused, load.errors)
    time.sleep(0.5)  # a 250 of a commit just before the stop has reached its client
    acked_during_outage = len(load.acked)
    before = dict(load.acked_by)
    time.sleep(1.5)  # longer than the sink's delay: the deliveries under way end now
    assert len(load.acked) == acked_during_outage  # no 250 without the database
    private_postgres.start()

    # Every node takes mail again by itself (the load is round-robin over them).
    def all_back() -> bool:
        return all(load.acked_by[n.name] > before.get(n.name, 0) for n in cluster.nodes)

    assert wait_until(all_back, 30), (load.acked_by, load.refused)
    assert wait_until(lambda: len(load.acked) >= acked_during_outage + 40, 30), load.refused
    load.stop()
    assert [node.process.pid for node in cluster.nodes if node.process is not None] == pids
    assert all(node.running for node in cluster.nodes)
    # What was delivered in the outage but could not be recorded is given up by its node
    # and claimed again once its lease expires: redelivered, never stuck or lost.
    _settle(cluster, sink, load)
    times, _ = deliveries(sink.dumps)
    print(
        f"\nPostgreSQL restart: {len(load.acked)} acknowledged, refusals {dict(load.refused)},"
        f" {sum(n - 1 for n in times.values())} duplicate deliveries"
    )


def _peaks(sink: SmtpSink) -> tuple[int, int]:
    """(most sessions open at once, most transactions under way at once) at the sink,
    from its -v log: a session is connect..disconnect, a transaction MAIL.. "." ."""
    sessions = transactions = peak_sessions = peak_transactions = 0
    for line in sink.lines():
        if line.startswith("connect"):
            sessions += 1
            peak_sessions = max(peak_sessions, sessions)
        elif line.startswith("disconnect"):
            sessions -= 1
        elif line.startswith("MAIL FROM"):
            transactions += 1
            peak_transactions = max(peak_transactions, transactions)
        elif line == ".":
            transactions -= 1
    return peak_sessions, peak_transactions


def test_destination_concurrency_limit_holds_cluster_wide(
    cluster_factory: ClusterFactory, smtp_sink: type[SinkFactory], pg_url: str
) -> None:
    sink = smtp_sink.start(SINK, "-w", "1")  # one second before each DATA reply
    limits = """\
        smtp_destination_concurrency_limit = 5
        default_destination_concurrency_limit = 5
        initial_destination_concurrency = 5
        """
    cluster = cluster_factory.start(pg_url, relay=sink.nexthop, main_extra=limits)
    load = Load(cluster.nodes, prefix="slow", total=30).start(threads=9)
    load.join()
    assert len(load.acked) == 30, (load.refused, load.errors)
    _settle(cluster, sink, load)
    sessions, transactions = _peaks(sink)
    print(
        f"\nat the sink (limit 5, 3 nodes): peak {transactions} transactions, {sessions} sessions"
    )
    # Each node alone would allow 5: 15 in all. The deliveries are gated cluster-wide.
    # The limit counts parallel deliveries, as Postfix's does: a session idle in a
    # node's connection cache is not a delivery (it closes after smtp_connection_cache_time_limit).
    assert 2 <= transactions <= 5


RATE_LIMIT = 6
SYNC = 1.0  # anvil_cluster_sync_time
PACE = 0.75  # seconds between two connections of the client, round-robin over the nodes
ATTEMPTS = 18  # what three nodes would each accept alone: 3 * RATE_LIMIT


def _connect_from_stranger(host: str, port: int) -> bytes:
    with socket.create_connection((host, port), timeout=10, source_address=("127.0.0.66", 0)) as s:
        banner = s.recv(512)
        if banner.startswith(b"220"):
            s.sendall(b"QUIT\r\n")
            s.recv(512)
        return banner


def test_connection_rate_limit_holds_cluster_wide(
    cluster_factory: ClusterFactory, pg_url: str
) -> None:
    limits = f"""\
        smtpd_client_connection_rate_limit = {RATE_LIMIT}
        anvil_rate_time_unit = 60s
        anvil_cluster_sync_time = {SYNC:g}s
        """
    nowhere = f"[{peer_address(NOWHERE)}]:25"
    cluster = cluster_factory.start(pg_url, relay=nowhere, main_extra=limits)
    accepted = rejected = 0
    for i in range(ATTEMPTS):
        node = cluster.nodes[i % len(cluster.nodes)]
        banner = _connect_from_stranger(node.host, node.port)
        if banner.startswith(b"220"):
            accepted += 1
        else:
            assert banner.startswith(b"421 4.7.0"), banner
            rejected += 1
        time.sleep(PACE)
    # cluster.py's bound: limit + what the other nodes admitted in the blind interval
    # 2 * (sync + d); with d (a sync's duration) up to 1 s on a loaded machine, each
    # node admits at most ceil(2 * (SYNC + 1) / its own pace) events in it.
    nodes = len(cluster.nodes)
    blind = 2 * (SYNC + 1.0)
    per_node = -(-blind // (PACE * nodes))
    bound = RATE_LIMIT + int((nodes - 1) * per_node)
    print(
        f"\nanvil: {accepted} of {ATTEMPTS} connections accepted cluster-wide, {rejected}"
        f" refused (limit {RATE_LIMIT}, bound {bound})"
    )
    assert RATE_LIMIT <= accepted <= bound < RATE_LIMIT * nodes


def test_queue_list_on_any_node_shows_the_whole_cluster(
    cluster_factory: ClusterFactory, pg_url: str
) -> None:
    nowhere = f"[{peer_address(NOWHERE)}]:25"  # connection refused: mail is deferred
    cluster = cluster_factory.start(pg_url, relay=nowhere)
    node1, node3 = cluster["node1"], cluster["node3"]
    load = Load([node1], prefix="held", total=3).start(threads=1)
    load.join()
    assert len(load.acked) == 3, (load.refused, load.errors)

    def deferred() -> bool:
        rows = cluster.query("SELECT COUNT(*) FROM messages WHERE state = 'deferred'")
        return int(rows[0][0]) == 3

    assert wait_until(deferred, 30), cluster.query("SELECT id, state FROM messages")

    listing = node3.cli("queue", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    listed = {m["id"] for m in json.loads(listing.stdout)}
    assert set(load.acked.values()) <= listed
    mailq = node3.cli("queue", "list").stdout
    assert all(qid in mailq for qid in load.acked.values()), mailq
    assert "rcpt@relay.test" in mailq
