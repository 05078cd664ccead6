"""Both seeds' main.cf blocks, verbatim, running in a real ironpost against a real DNS
server (dnsmasq) that serves the seeds' real DNSBL names (zen.spamhaus.org,
bl.spamcop.net) from loopback.

The blocks are extracted from ../shared/seeds at run time (test_cli's helpers). After
them come only the test's loopback overrides: listen on 127.0.0.1, ask our DNS server,
keep data under tmp, deliver yourdomain.no to a virtual mailbox, and ``mynetworks =
127.0.0.1/32`` (seed 000's 127.0.0.0/8 would trust every test client: they all
connect from loopback addresses).
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dns_server import DNSMASQ
from mta_harness import HOST, Mta, free_port
from test_cli import seed_000_blocks, seed_001_blocks

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(DNSMASQ).exists(), reason="dnsmasq is not installed"),
]

LISTED, STRANGER = "127.0.0.31", "127.0.0.32"
GOOD_SENDER = "s@sender.test"
RCPT = "alice@yourdomain.no"

ZONE: dict[str, dict[str, list[Any]]] = {
    "31.0.0.127.zen.spamhaus.org": {"A": ["127.0.0.4"], "TXT": ["https://check.spamhaus.org"]},
    "sender.test": {"MX": [(10, "mx.sender.test")]},
    "mx.sender.test": {"A": ["192.0.2.25"]},
}


def overrides(data: Path, nameserver: str) -> list[str]:
    return [
        "# --- test overrides (loopback only) ---",
        "inet_interfaces = 127.0.0.1",
        "mynetworks = 127.0.0.1/32",
        f"dns_nameservers = {nameserver}",
        f"queue_directory = {data}/queue",
        f"data_directory = {data}",
        f"maillog_file = {data}/maillog",
        f"virtual_mailbox_base = {data}/mail",
        "virtual_mailbox_domains = yourdomain.no",
        "virtual_mailbox_maps = inline:{ alice@yourdomain.no=yourdomain.no/alice/ }",
        "smtpd_greet_pause = 0s",
        # The tests run as root: stay root, as the harness does (test_lifecycle.py covers
        # the drop to mail_owner).
        "mail_owner = root",
        "ironpost_allow_root = yes",
    ]


def start_seed(tmp_path: Path, dns_server: Any, blocks: list[str]) -> Mta:
    server = dns_server(ZONE)
    directory = tmp_path / "seed"
    data = directory / "data"
    data.mkdir(parents=True)
    lines = [*blocks, *overrides(data, server.nameserver)]
    (directory / "main.cf").write_text("\n".join(lines) + "\n")
    port = free_port()
    (directory / "master.cf").write_text(f"{HOST}:{port} inet n - n - - smtpd\n")
    mta = Mta(directory, port)
    mta.start()
    return mta


@pytest.fixture
def seed_mta(tmp_path: Path, dns_server: Any) -> Any:
    started: list[Mta] = []

    def start(blocks: list[str]) -> Mta:
        mta = start_seed(tmp_path, dns_server, blocks)
        started.append(mta)
        return mta

    yield start
    for mta in started:
        mta.stop()


def session(
    mta: Mta, source: str, helo: str, sender: str
) -> tuple[tuple[int, bytes], Callable[[], tuple[int, bytes]]]:
    """RCPT's reply, and a function finishing the transaction (DATA)."""
    s = smtplib.SMTP(HOST, mta.port, source_address=(source, 0), timeout=20)
    s.ehlo(helo)
    mail = s.mail(sender)
    assert mail[0] == 250, mail
    reply = s.rcpt(RCPT)

    def finish() -> tuple[int, bytes]:
        try:
            return s.data(b"Subject: seed\r\n\r\nhello\r\n")
        finally:
            s.quit()

    if reply[0] != 250:
        s.quit()
    return reply, finish


SEEDS = {"000": seed_000_blocks, "001": seed_001_blocks}


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_seed_listed_client_is_rejected(seed_mta: Any, seed: str) -> None:
    mta = seed_mta(SEEDS[seed]())
    (code, text), _ = session(mta, LISTED, "client.sender.test", GOOD_SENDER)
    assert (code, text.decode()) == (
        554,
        "5.7.1 Service unavailable; Client host [127.0.0.31] blocked using zen.spamhaus.org; "
        "https://check.spamhaus.org",
    )


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_seed_non_fqdn_helo_is_rejected(seed_mta: Any, seed: str) -> None:
    mta = seed_mta(SEEDS[seed]())
    (code, text), _ = session(mta, STRANGER, "workstation", GOOD_SENDER)
    assert (code, text.decode()) == (
        504,
        "5.5.2 <workstation>: Helo command rejected: need fully-qualified hostname",
    )


def test_seed_000_unknown_sender_domain_is_rejected(seed_mta: Any) -> None:
    mta = seed_mta(seed_000_blocks())
    (code, text), _ = session(mta, STRANGER, "client.sender.test", "x@nowhere.test")
    # unknown_address_reject_code's default is 450, as in Postfix.
    assert (code, text.decode()) == (
        450,
        "4.1.8 <x@nowhere.test>: Sender address rejected: Domain not found",
    )


def test_seed_001_sender_checks(seed_mta: Any) -> None:
    """Seed 001 lists reject_non_fqdn_sender but not reject_unknown_sender_domain: an
    unqualified sender domain is refused, a qualified one is not looked up."""
    mta = seed_mta(seed_001_blocks())
    (code, text), _ = session(mta, STRANGER, "client.sender.test", "x@nowhere")
    assert (code, text.decode()) == (
        504,
        "5.5.2 <x@nowhere>: Sender address rejected: need fully-qualified address",
    )
    (code, _text), finish = session(mta, STRANGER, "client.sender.test", "x@nowhere.test")
    assert code == 250
    assert finish()[0] == 250


@pytest.mark.parametrize("seed", sorted(SEEDS))
def test_seed_mynetworks_is_permitted(seed_mta: Any, seed: str) -> None:
    mta = seed_mta(SEEDS[seed]())
    # Non-FQDN HELO and an unknown sender domain: permit_mynetworks comes first.
    (code, text), finish = session(mta, HOST, "localhost", "root@nowhere.test")
    assert code == 250, text
    assert finish()[0] == 250
    assert "not yet implemented" not in mta.maillog
