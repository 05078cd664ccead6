"""The Prometheus endpoint of a real ironpost: mail accepted, rejected, delivered and a
failed AUTH move the counters that a real HTTP scrape of /metrics reports; a remote
bind is refused at startup."""

from __future__ import annotations

import base64
import smtplib
import ssl
import time
import urllib.request
from pathlib import Path

import pytest
from mta_harness import HOST, STRANGER, Mta, free_port, write_config
from prometheus_client.parser import text_string_to_metric_families

from ironpost.config.embedded import submission_options

pytestmark = pytest.mark.integration

ALICE, ALICE_PW = "alice@example.test", "correct horse battery staple"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the series whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def wait_for(
    port: int, check: str, minimum: float, timeout: float = 10.0, **labels: str
) -> Samples:
    """Scrape until ``check`` reaches ``minimum`` (delivery and logging run behind the 250)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if total(samples, check, **labels) >= minimum or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def settled(port: int, timeout: float = 10.0) -> Samples:
    """Scrape once no session is open any more."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if total(samples, "ironpost_smtpd_connections_active") == 0:
            return samples
        assert time.monotonic() < deadline, "a session stayed open"
        time.sleep(0.05)


def _tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def message(sender: str, to: str) -> bytes:
    return f"From: <{sender}>\r\nTo: <{to}>\r\nSubject: metrics\r\n\r\nbody\r\n".encode()


def test_scrape_reports_connections_mail_rejections_deliveries_and_auth(tmp_path: Path) -> None:
    metrics_port, sub = free_port(), free_port()
    master = (
        f"{HOST}:{{port}} inet n - n - - smtpd\n"
        f"{HOST}:{sub} inet n - n - - smtpd\n  -o syslog_name=ironpost/submission\n"
        f"  -o smtpd_tls_security_level=encrypt\n{submission_options()}\n"
    )
    directory = tmp_path / "mta"
    directory.mkdir()
    port = write_config(directory, f"metrics_listen = {HOST}:{metrics_port}\n", master)
    mta = Mta(directory, port)
    done = mta.cli("passwd", "add", ALICE, stdin=f"{ALICE_PW}\n".encode())
    assert done.returncode == 0, done.stderr
    mta.start()
    try:
        before = settled(metrics_port)  # the harness's own probe connection has ended
        assert ("ironpost_build_info", frozenset({("version", "0.1.0")})) in before

        # Accepted and delivered: from $mynetworks to a local mailbox.
        with smtplib.SMTP(HOST, port, timeout=30) as s:
            s.sendmail("sender@example.org", [ALICE], message("sender@example.org", ALICE))
        mta.wait_for_messages("alice", 1)

        # Rejected: a stranger may not relay.
        with smtplib.SMTP(HOST, port, timeout=30, source_address=(STRANGER, 0)) as s:
            s.ehlo("stranger.example")
            s.mail("spam@example.org")
            code, _ = s.rcpt("victim@elsewhere.example")
            assert code == 554

        # A failed AUTH on the submission port, under STARTTLS.
        with smtplib.SMTP(HOST, sub, timeout=30) as s:
            s.ehlo("laptop")
            s.starttls(context=_tls())
            s.ehlo("laptop")
            wrong = base64.b64encode(f"\0{ALICE}\0wrong-password".encode()).decode()
            code, _ = s.docmd("AUTH", f"PLAIN {wrong}")
            assert code == 535

        wait_for(metrics_port, "ironpost_delivery_delay_seconds_count", 1, status="sent")
        after = settled(metrics_port)
    finally:
        mta.stop()

    assert delta(before, after, "ironpost_smtpd_messages_received_total") == 1
    assert delta(before, after, "ironpost_smtpd_received_bytes_total") > 50
    assert delta(before, after, "ironpost_smtpd_connections_total", tls="no") == 2
    assert delta(before, after, "ironpost_smtpd_connections_total", tls="yes") == 1
    assert total(after, "ironpost_smtpd_connections_active") == 0
    assert (
        delta(
            before,
            after,
            "ironpost_smtpd_rejections_total",
            stage="RCPT",
            restriction="reject_unauth_destination",
        )
        == 1
    )
    assert delta(before, after, "ironpost_deliveries_total", status="sent") == 1
    assert delta(before, after, "ironpost_deliveries_total", status="deferred") == 0
    assert delta(before, after, "ironpost_delivery_delay_seconds_count", status="sent") == 1
    assert (
        delta(
            before,
            after,
            "ironpost_smtpd_auth_failures_total",
            mechanism="PLAIN",
            kind="failed",
        )
        == 1
    )
    # The stranger's name was looked up (PTR) in the harness's DNS, which refuses all.
    assert delta(before, after, "ironpost_dns_lookups_total", type="PTR", status="tempfail") >= 1
    assert delta(before, after, "ironpost_dns_lookup_duration_seconds_count", type="PTR") >= 1
    # The queue, counted at scrape time: the message has left it.
    states = {
        dict(ls)["state"]: v for (n, ls), v in after.items() if n == "ironpost_queue_messages"
    }
    assert states == {"incoming": 0, "active": 0, "deferred": 0, "hold": 0, "corrupt": 0}


def test_remote_metrics_address_is_refused_at_startup(mta_factory: type) -> None:
    refused = r"metrics_listen = 0\.0\.0\.0:\d+: not a loopback address"
    with pytest.raises(RuntimeError, match=refused):
        mta_factory.start(f"metrics_listen = 0.0.0.0:{free_port()}\n")
