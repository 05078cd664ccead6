"""DNS restrictions end to end: a real ironpost, a real DNS server (dnsmasq) serving a
fake DNSBL, and clients connecting from different 127.0.0.x source addresses.

- client A (127.0.0.21) is listed with 127.0.0.2 and a TXT reason: refused with
  Postfix's default text;
- client B (127.0.0.22) gets Spamhaus's 127.255.255.254 (an error code): accepted,
  with a warning in the maillog;
- client C (127.0.0.23) meets a list that answers SERVFAIL: accepted, with a warning.
"""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

import pytest
from dns_server import DNSMASQ, SERVFAIL_DOMAIN
from mta_harness import HOST

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(DNSMASQ).exists(), reason="dnsmasq is not installed"),
]

A, B, C, D = "127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"
BROKEN_LIST = f"dnsbl.{SERVFAIL_DOMAIN}"

ZONE: dict[str, dict[str, list[Any]]] = {
    "21.0.0.127.bl.test": {"A": ["127.0.0.2"], "TXT": ["listed, see http://bl.test/?21"]},
    "22.0.0.127.bl.test": {"A": ["127.255.255.254"]},
    "sender.test": {"MX": [(10, "mx.sender.test")]},
    "mx.sender.test": {"A": ["192.0.2.25"]},
}


def rcpt(
    port: int, source: str, sender: str = "s@sender.test", helo: str = "client.test"
) -> tuple[int, bytes]:
    with smtplib.SMTP(HOST, port, source_address=(source, 0), timeout=20) as s:
        s.ehlo(helo)
        code, text = s.mail(sender)
        assert code == 250, text
        return s.rcpt("alice@example.test")


@pytest.fixture
def mta(mta_factory: Any, dns_server: Any) -> Any:
    server = dns_server(ZONE)
    return mta_factory.start(
        f"""\
        dns_nameservers = {server.nameserver}
        smtpd_recipient_restrictions = reject_unknown_sender_domain,
            reject_rbl_client bl.test, reject_rbl_client {BROKEN_LIST},
            reject_unlisted_recipient
        """
    )


def test_listed_client_is_refused_with_postfix_text(mta: Any) -> None:
    code, text = rcpt(mta.port, A)
    assert (code, text.decode()) == (
        554,
        "5.7.1 Service unavailable; Client host [127.0.0.21] blocked using bl.test; "
        "listed, see http://bl.test/?21",
    )
    assert mta.log_has("NOQUEUE: reject: RCPT from unknown[127.0.0.21]: 554 5.7.1")


def test_error_answer_is_not_a_listing(mta: Any) -> None:
    assert rcpt(mta.port, B)[0] == 250
    assert mta.log_has(
        "22.0.0.127.bl.test: RBL lookup error: bl.test answered 127.255.255.254, "
        "an error code, not a listing"
    )


def test_servfail_list_is_not_a_listing(mta: Any) -> None:
    assert rcpt(mta.port, C)[0] == 250
    assert mta.log_has(f"23.0.0.127.{BROKEN_LIST}: RBL lookup error:")


def test_unknown_sender_domain_over_real_dns(mta: Any) -> None:
    code, text = rcpt(mta.port, D, sender="x@nowhere.test")
    assert (code, text.decode()) == (
        450,
        "4.1.8 <x@nowhere.test>: Sender address rejected: Domain not found",
    )
    # A list that fails temporarily defers an unknown domain, never refuses it for good.
    code, text = rcpt(mta.port, D, sender=f"x@host.{SERVFAIL_DOMAIN}")
    assert code == 450 and b"Domain not found" in text
