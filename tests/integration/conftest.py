"""Fixtures for integration tests: a real ironpost on loopback (mta_harness), a real
DNS server serving the test's zones (dns_server), real SMTP peers (peers)."""

from dns_server import dns_server
from mta_harness import mta, mta_factory
from peers import smtp_sink

__all__ = ["dns_server", "mta", "mta_factory", "smtp_sink"]
