"""Outbound delivery end to end: a real ironpost relays to real peers on loopback.

Peers are Postfix's smtp-sink on their own 127.0.0.x:25 (peers.py); MX lookups go over
real UDP DNS to dnsmasq serving the test's zone (dns_server.py). Nothing leaves
127.0.0.0/8.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import time

from mta_harness import HOST, Mta
from peers import peer_address

RELAY_LINES = """\
relay_domains = relay.test
transport_maps = inline:{{ relay.test=smtp:{nexthop} }}
"""


def send(mta: Mta, rcpt: str, *, sender: str = "alice@example.test", body: str = "hi") -> None:
    with smtplib.SMTP(HOST, mta.port, timeout=10) as c:
        c.sendmail(
            sender,
            [rcpt],
            f"From: {sender}\r\nTo: {rcpt}\r\nSubject: test\r\nMessage-ID: <{time.time()}@t>\r\n"
            f"\r\n{body}\r\n",
        )


def wait_until(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_relay_to_a_real_peer(mta_factory, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink.start(0)
    mta = mta_factory.start(RELAY_LINES.format(nexthop=sink.nexthop))
    send(mta, "bob@relay.test", body="over the wire")
    [msg] = sink.wait_for_messages(1)
    assert b"over the wire" in msg
    assert b"Received: from " in msg  # our trace header travels with it
    assert mta.log_has(
        "to=<bob@relay.test>", f"relay={sink.host}[{sink.host}]:25", "dsn=2.0.0", "status=sent"
    )
    assert wait_until(lambda: "removed" in mta.maillog)
    [mail] = sink.commands("MAIL FROM")
    assert mail.startswith("MAIL FROM:<alice@example.test>")


def test_5xx_bounces_to_the_sender(mta_factory, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink.start(1, "-f", "RCPT")
    mta = mta_factory.start(RELAY_LINES.format(nexthop=sink.nexthop))
    send(mta, "nobody@relay.test")
    [dsn_bytes] = mta.wait_for_messages("alice", 1)
    dsn = email.message_from_bytes(dsn_bytes, policy=email.policy.default)
    assert dsn.get_content_type() == "multipart/report"
    assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
    status = list(dsn.iter_parts())[1].as_string()
    assert "Final-Recipient: rfc822; nobody@relay.test" in status
    assert "Action: failed" in status
    assert "Status: 5.3.0" in status
    assert "Diagnostic-Code: smtp; 500 5.3.0" in status
    assert mta.log_has("to=<nobody@relay.test>", "status=bounced")
    assert mta.log_has("sender non-delivery notification")


def test_4xx_defers_and_stays_queued(mta_factory, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink.start(2, "-r", "RCPT")
    mta = mta_factory.start(RELAY_LINES.format(nexthop=sink.nexthop))
    send(mta, "later@relay.test")
    assert mta.log_has("to=<later@relay.test>", "dsn=4.3.0", "status=deferred", timeout=20)
    listing = mta.cli("queue", "list").stdout
    assert "later@relay.test" in listing
    assert mta.messages("alice") == []  # no bounce for a 4xx


def test_mx_fallback_over_real_dns(mta_factory, smtp_sink, dns_server) -> None:  # type: ignore[no-untyped-def]
    dead, alive = peer_address(3), peer_address(4)  # nothing listens on the first
    sink = smtp_sink.start(4)
    dns = dns_server(
        {
            "mx.test": {"MX": [(10, "mx1.mx.test"), (20, "mx2.mx.test")]},
            "mx1.mx.test": {"A": [dead]},
            "mx2.mx.test": {"A": [alive]},
        }
    )
    mta = mta_factory.start(f"relay_domains = mx.test\ndns_nameservers = {dns.nameserver}\n")
    send(mta, "carol@mx.test", body="via the backup MX")
    [msg] = sink.wait_for_messages(1)
    assert b"via the backup MX" in msg
    assert mta.log_has("to=<carol@mx.test>", f"relay=mx2.mx.test[{alive}]:25", "status=sent")


def test_null_mx_bounces_at_once(mta_factory, dns_server) -> None:  # type: ignore[no-untyped-def]
    dns = dns_server({"nomail.test": {"MX": [(0, ".")]}})
    mta = mta_factory.start(f"relay_domains = nomail.test\ndns_nameservers = {dns.nameserver}\n")
    send(mta, "x@nomail.test")
    [dsn_bytes] = mta.wait_for_messages("alice", 1)
    assert b"Status: 5.1.10" in dsn_bytes
    assert mta.log_has("to=<x@nomail.test>", "dsn=5.1.10", "status=bounced")


def test_dns_tempfail_defers_never_bounces(mta_factory, dns_server) -> None:  # type: ignore[no-untyped-def]
    dns = dns_server({})
    mta = mta_factory.start(
        f"relay_domains = x.servfail.test\ndns_nameservers = {dns.nameserver}\n"
    )
    send(mta, "y@x.servfail.test")
    assert mta.log_has("to=<y@x.servfail.test>", "status=deferred", timeout=30)
    assert "dsn=5." not in mta.maillog
    assert mta.messages("alice") == []


def test_concurrency_limit_at_a_slow_peer(mta_factory, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink.start(5, "-w", "1")  # one second before each DATA reply
    mta = mta_factory.start(
        RELAY_LINES.format(nexthop=sink.nexthop)
        + "smtp_destination_concurrency_limit = 2\ninitial_destination_concurrency = 2\n"
    )
    for i in range(6):
        send(mta, f"u{i}@relay.test")
    sink.wait_for_messages(6, timeout=30)
    assert 1 <= sink.max_concurrent() <= 2


def test_connection_reuse(mta_factory, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink.start(6)
    mta = mta_factory.start(
        RELAY_LINES.format(nexthop=sink.nexthop)
        + "smtp_destination_concurrency_limit = 1\ninitial_destination_concurrency = 1\n"
    )
    for i in range(5):
        send(mta, f"r{i}@relay.test")
    sink.wait_for_messages(5)
    assert len(sink.commands("MAIL FROM")) == 5
    assert sink.sessions() < 5  # several messages went over one connection


def test_kill9_during_delivery_loses_nothing(mta_factory, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    sink = smtp_sink.start(7, "-w", "1")  # slow DATA replies: deliveries are in flight
    mta = mta_factory.start(RELAY_LINES.format(nexthop=sink.nexthop))
    ids = [f"<k{i}.{time.time()}@t>" for i in range(20)]
    with smtplib.SMTP(HOST, mta.port, timeout=10) as c:
        for i, mid in enumerate(ids):
            c.sendmail(
                "alice@example.test",
                [f"k{i}@relay.test"],
                f"From: alice@example.test\r\nMessage-ID: {mid}\r\n\r\nbody {i}\r\n",
            )
    assert wait_until(lambda: len(sink.messages()) >= 3)
    mta.kill9()
    mta.start()
    sink.wait_for_messages(20, timeout=60)

    def delivered() -> set[str]:
        return {mid for mid in ids for m in sink.messages() if mid.encode() in m}

    assert wait_until(lambda: delivered() == set(ids), timeout=60)
    assert wait_until(lambda: "Mail queue is empty" in mta.cli("queue", "list").stdout, 30)
    # At-least-once: a duplicate is possible only for what was in flight at the kill.
    assert len(sink.messages()) - len(ids) <= 20
