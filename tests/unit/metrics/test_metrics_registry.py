"""The metrics registry: recording functions, label bounds, scrape-time collectors, and the
DNS resolver's instrumentation (against a tiny real DNS responder on loopback).

Metric objects are process-wide, so every assertion is about the change a test made.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ironpost.dns.resolver import DnsResolver
from ironpost.metrics import registry as m
from ironpost.metrics.registry import REGISTRY
from ironpost.policy import dnsbl
from ironpost.queue import ClientInfo, Envelope, QueueState, RecipientSpec, open_queue


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
    """The registry's text exposition, parsed back: sample name -> [(labels, value)]."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(REGISTRY).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


# -- smtpd ------------------------------------------------------------------------------


def test_connections_by_tls_and_active_gauge() -> None:
    plain = value("ironpost_smtpd_connections_total", service="smtp", tls="no")
    tls = value("ironpost_smtpd_connections_total", service="smtp", tls="yes")
    active = value("ironpost_smtpd_connections_active")
    m.connection_opened()
    m.connection_opened()
    assert value("ironpost_smtpd_connections_active") == active + 2
    m.connection_closed("smtp", False)
    m.connection_closed("smtp", True)
    assert value("ironpost_smtpd_connections_active") == active
    assert value("ironpost_smtpd_connections_total", service="smtp", tls="no") == plain + 1
    assert value("ironpost_smtpd_connections_total", service="smtp", tls="yes") == tls + 1


def test_message_received_counts_messages_and_bytes() -> None:
    before = value("ironpost_smtpd_messages_received_total", service="submission")
    size = value("ironpost_smtpd_received_bytes_total", service="submission")
    m.message_received("submission", 1234)
    assert value("ironpost_smtpd_messages_received_total", service="submission") == before + 1
    assert value("ironpost_smtpd_received_bytes_total", service="submission") == size + 1234


def test_rejection_without_restriction_is_protocol() -> None:
    before = value("ironpost_smtpd_rejections_total", stage="RCPT", restriction="protocol")
    named = value(
        "ironpost_smtpd_rejections_total", stage="RCPT", restriction="reject_unauth_destination"
    )
    m.count_rejection("RCPT", "")
    m.count_rejection("RCPT", "reject_unauth_destination")
    assert value("ironpost_smtpd_rejections_total", stage="RCPT", restriction="protocol") == (
        before + 1
    )
    assert (
        value(
            "ironpost_smtpd_rejections_total",
            stage="RCPT",
            restriction="reject_unauth_destination",
        )
        == named + 1
    )


def test_auth_failure_known_mechanism_and_kind() -> None:
    failed = value("ironpost_smtpd_auth_failures_total", mechanism="PLAIN", kind="failed")
    temp = value("ironpost_smtpd_auth_failures_total", mechanism="LOGIN", kind="tempfail")
    m.count_auth_failure("PLAIN", False)
    m.count_auth_failure("LOGIN", True)
    assert value("ironpost_smtpd_auth_failures_total", mechanism="PLAIN", kind="failed") == (
        failed + 1
    )
    assert value("ironpost_smtpd_auth_failures_total", mechanism="LOGIN", kind="tempfail") == (
        temp + 1
    )


@given(st.text(min_size=1, max_size=40))
def test_auth_mechanism_label_is_bounded(mechanism: str) -> None:
    """Whatever a client names, the label is an allow-listed mechanism or ``other``."""
    m.count_auth_failure(mechanism, False)
    labels = {s.labels["mechanism"] for f in m.AUTH_FAILURES.collect() for s in f.samples}
    assert labels <= m.AUTH_MECHANISMS | {"other"}


# -- delivery ---------------------------------------------------------------------------


def test_delivery_counts_every_outcome_but_times_only_final_ones() -> None:
    def counts() -> tuple[float, ...]:
        return (
            value("ironpost_deliveries_total", transport="relay", status="sent"),
            value("ironpost_deliveries_total", transport="relay", status="deferred"),
            value("ironpost_deliveries_total", transport="relay", status="bounced"),
            value("ironpost_delivery_delay_seconds_count", transport="relay", status="sent"),
            value("ironpost_delivery_delay_seconds_count", transport="relay", status="deferred"),
            value("ironpost_delivery_delay_seconds_count", transport="relay", status="bounced"),
        )

    before = counts()
    slow = value(
        "ironpost_delivery_delay_seconds_bucket", transport="relay", status="sent", le="0.5"
    )
    m.record_delivery("relay", "sent", 0.3)
    m.record_delivery("relay", "deferred", 30.0)
    m.record_delivery("relay", "bounced", 86400.0 * 5)
    after = counts()
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 1, 0, 1]
    assert (
        value("ironpost_delivery_delay_seconds_bucket", transport="relay", status="sent", le="0.5")
        == slow + 1
    )


# -- DNS and DNSBL ------------------------------------------------------------------------


@pytest.fixture
def responder() -> Iterator[str]:
    """A DNS server on loopback: ``ok.test`` has an A record, every other name is NXDOMAIN."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            reply = dns.message.make_response(query)
            question = query.question[0]
            if question.name.to_text() == "ok.test.":
                reply.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", "192.0.2.1"))
            else:
                reply.set_rcode(dns.rcode.NXDOMAIN)
            sock.sendto(reply.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    sock.close()


def test_resolver_times_queries_by_type_and_counts_results(responder: str) -> None:
    resolver = DnsResolver([responder], timeout=2.0)
    seen = value("ironpost_dns_lookup_duration_seconds_count", type="A")
    ok = value("ironpost_dns_lookups_total", type="A", status="answer")
    missing = value("ironpost_dns_lookups_total", type="A", status="nxdomain")

    async def lookups() -> None:
        assert (await resolver.a("ok.test")).ok
        assert not (await resolver.a("gone.test")).ok
        assert (await resolver.a("ok.test")).ok  # from the cache: not a query

    asyncio.run(lookups())
    assert value("ironpost_dns_lookup_duration_seconds_count", type="A") == seen + 2
    assert value("ironpost_dns_lookups_total", type="A", status="answer") == ok + 1
    assert value("ironpost_dns_lookups_total", type="A", status="nxdomain") == missing + 1
    assert value("ironpost_dns_lookup_duration_seconds_sum", type="A") > 0


def test_dnsbl_errors_are_exported_from_the_policy_counter() -> None:
    key = ("metrics-test.example", "error answer")
    before = value("ironpost_dnsbl_errors_total", list=key[0], kind="error_answer")
    dnsbl.LOOKUP_ERRORS[key] += 2  # what dnsbl.lookup does on an error answer
    assert value("ironpost_dnsbl_errors_total", list=key[0], kind="error_answer") == before + 2


def test_dnsbl_collector_with_its_own_source() -> None:
    collector = m.DnsblErrorCollector(Counter({("bl.test", "tempfail"): 3}))
    (family,) = collector.collect()
    assert [(s.name, s.labels, s.value) for s in family.samples] == [
        ("ironpost_dnsbl_errors_total", {"list": "bl.test", "kind": "tempfail"}, 3)
    ]


# -- the queue collector ------------------------------------------------------------------


def test_queue_collector_counts_the_real_store_by_state(tmp_path: Path) -> None:
    store = open_queue(tmp_path / "queue")
    envelope = Envelope(
        sender="alice@example.org",
        recipients=(RecipientSpec("bob@example.net", "bob@example.net"),),
        size=10,
        body_type=None,
        smtputf8=False,
        ret=None,
        envid=None,
        client=ClientInfo("192.0.2.7", "mx.example.org", "mx.example.org", "ESMTP"),
        arrival=1_800_000_000.0,
    )

    async def submit() -> str:
        return await store.submit(envelope, b"Subject: x\r\n\r\nhi\r\n")

    try:
        first = asyncio.run(submit())
        asyncio.run(submit())
        assert store.hold(first)
        collector = m.QueueCollector(store.stats)
        (family,) = collector.collect()
        got = {s.labels["state"]: s.value for s in family.samples}
        assert got == {
            "incoming": 1,
            "active": 0,
            "deferred": 0,
            "hold": 1,
            "corrupt": 0,
        }
    finally:
        store.close()


def test_queue_collector_survives_an_unreadable_store() -> None:
    def broken() -> dict[QueueState, int]:
        raise OSError("disk on fire")

    errors = value("ironpost_queue_scrape_errors_total")
    assert list(m.QueueCollector(broken).collect()) == []
    assert value("ironpost_queue_scrape_errors_total") == errors + 1


def test_every_family_has_help_and_the_scrape_parses() -> None:
    text = generate_latest(REGISTRY).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "ironpost_smtpd_connections",
        "ironpost_smtpd_connections_active",
        "ironpost_smtpd_messages_received",
        "ironpost_smtpd_rejections",
        "ironpost_deliveries",
        "ironpost_delivery_delay_seconds",
        "ironpost_dns_lookup_duration_seconds",
        "ironpost_build_info",
        "process_resident_memory_bytes",
    ):
        assert name in families, name
        assert families[name].documentation, name
    assert "_created" not in text


def test_queue_collector_shows_each_node_of_a_shared_queue() -> None:
    rows = [("mx1", 100.0, 990.0, 11, 3), ("mx2", 100.0, 900.0, 12, 0)]
    collector = m.QueueCollector(lambda: dict.fromkeys(QueueState, 0), lambda: rows, lambda: 1000.0)
    families = {f.name: f for f in collector.collect()}
    ages = {
        s.labels["node"]: s.value
        for s in families["ironpost_cluster_node_heartbeat_age_seconds"].samples
    }
    held = {
        s.labels["node"]: s.value for s in families["ironpost_cluster_node_active_messages"].samples
    }
    assert ages == {"mx1": 10.0, "mx2": 100.0}
    assert held == {"mx1": 3, "mx2": 0}
    # One machine: no node gauges at all.
    single = {f.name for f in m.QueueCollector(lambda: dict.fromkeys(QueueState, 0)).collect()}
    assert single == {"ironpost_queue_messages"}
