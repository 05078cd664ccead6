"""Fixtures for integration tests: a real ironpost on loopback (mta_harness), a real
DNS server serving the test's zones (dns_server), real SMTP peers (peers), a real Dovecot
(dovecot_peer)."""

from collections.abc import Iterator

import pytest
from dns_server import dns_server
from dovecot_peer import DovecotPeer
from mta_harness import mta, mta_factory
from peers import smtp_sink

__all__ = ["dns_server", "mta", "mta_factory", "smtp_sink"]


# -- a real Dovecot (dovecot_peer.py) -------------------------------------------------


class DovecotFactory:
    """``dovecot.start(users, lmtp=..., mechanisms=..., tempfail=..., full=...)``: a
    running DovecotPeer (see its arguments), stopped and removed at teardown."""

    def __init__(self) -> None:
        self.started: list[DovecotPeer] = []

    def start(
        self,
        users: dict[str, str],
        *,
        lmtp: bool = False,
        mechanisms: str = "plain login",
        tempfail: bool = False,
        full: tuple[str, ...] = (),
    ) -> DovecotPeer:
        peer = DovecotPeer(users, lmtp=lmtp, mechanisms=mechanisms, tempfail=tempfail, full=full)
        self.started.append(peer)
        peer.start()
        return peer


@pytest.fixture
def dovecot() -> Iterator[DovecotFactory]:
    factory = DovecotFactory()
    yield factory
    for peer in factory.started:
        peer.cleanup()
