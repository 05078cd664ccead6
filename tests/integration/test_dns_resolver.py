"""DnsResolver against a real DNS server (dnsmasq) over real UDP and TCP on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.query
import pytest
from dns_server import (
    DNSMASQ,
    SERVFAIL_DOMAIN,
    TIMEOUT_DOMAIN,
    DnsServer,
    dns_server,  # noqa: F401  (fixture; the lead also exports it from conftest)
    start_dns_server,
)

from ironpost.config import load_texts
from ironpost.dns import DnsResolver, MxRecord, Result, Status

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path(DNSMASQ).exists(), reason="dnsmasq is not installed"),
]

BIG_TXT = [f"{i} " + "x" * 400 for i in range(5)]  # > 1232 octets in all: TC over UDP

ZONE: dict[str, dict[str, list[Any]]] = {
    "example.test": {
        "MX": [(20, "mx2.example.test"), (10, "MX1.example.test.")],
        "TXT": ["v=spf1 ip4:127.0.0.5 -all", ("v=DKIM1; k=rsa; ", "p=MIIB", "AQAB")],
    },
    "mx1.example.test": {"A": ["127.0.0.5", "127.0.0.6"], "AAAA": ["::5"]},
    "mx2.example.test": {"A": ["127.0.0.7"]},
    "nullmx.test": {"MX": [(0, ".")]},
    "127.0.0.9": {"PTR": ["host9.example.test"]},
    "::9": {"PTR": ["host9-v6.example.test"]},
    "big.test": {"TXT": BIG_TXT},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    running = start_dns_server(ZONE, tmp_path_factory.mktemp("dns"))
    yield running
    running.stop()


def run(coro: Awaitable[Result[Any]]) -> Result[Any]:
    async def main() -> Result[Any]:
        return await coro

    return asyncio.run(main())


def lookup(server: DnsServer, method: str, name: str, **kwargs: Any) -> tuple[Result[Any], float]:
    resolver = DnsResolver([server.nameserver], **{"timeout": 2.0, **kwargs})
    start = time.monotonic()
    result = run(getattr(resolver, method)(name))
    return result, time.monotonic() - start


def wait_for_queries(server: DnsServer, wanted: str, count: int) -> list[str]:
    """dnsmasq's query log, once it shows ``count`` queries ``wanted`` (it may lag)."""
    deadline = time.monotonic() + 3
    while True:
        seen = [q for q in server.queries() if q == wanted]
        if len(seen) >= count or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


# --- answers ---------------------------------------------------------------------------


def test_mx(server: DnsServer) -> None:
    result, _ = lookup(server, "mx", "example.test")
    assert result.status is Status.ANSWER
    assert result.records == (MxRecord(10, "mx1.example.test"), MxRecord(20, "mx2.example.test"))
    assert result.ttl == 300


def test_null_mx(server: DnsServer) -> None:
    result, _ = lookup(server, "mx", "nullmx.test")
    assert result.records == (MxRecord(0, ""),)


def test_a_and_aaaa(server: DnsServer) -> None:
    assert sorted(lookup(server, "a", "MX1.Example.Test")[0].records) == ["127.0.0.5", "127.0.0.6"]
    assert lookup(server, "aaaa", "mx1.example.test")[0].records == ("::5",)


def test_txt_records_with_their_strings_joined(server: DnsServer) -> None:
    result, _ = lookup(server, "txt", "example.test")
    assert sorted(result.records) == ["v=DKIM1; k=rsa; p=MIIBAQAB", "v=spf1 ip4:127.0.0.5 -all"]


@pytest.mark.parametrize(
    ("address", "host"), [("127.0.0.9", "host9.example.test"), ("::9", "host9-v6.example.test")]
)
def test_ptr(server: DnsServer, address: str, host: str) -> None:
    assert lookup(server, "ptr", address)[0].records == (host,)


def test_large_answer_falls_back_to_tcp(server: DnsServer) -> None:
    # Precondition: over UDP the answer really is truncated.
    query = dns.message.make_query("big.test", "TXT", use_edns=0, payload=1232)
    udp = dns.query.udp(query, server.address, port=server.port, timeout=2)
    assert udp.flags & dns.flags.TC
    result, _ = lookup(server, "txt", "big.test")
    assert sorted(result.records) == sorted(BIG_TXT)
    # The resolver asked twice: over UDP (truncated), then over TCP.
    assert len(wait_for_queries(server, "TXT big.test", 3)) == 1 + 2


# --- negative answers and failures ------------------------------------------------------


def test_nxdomain(server: DnsServer) -> None:
    result, _ = lookup(server, "mx", "missing.example.test")
    assert result.status is Status.NXDOMAIN and result.ttl > 0


def test_nodata(server: DnsServer) -> None:
    assert lookup(server, "mx", "mx1.example.test")[0].status is Status.NODATA
    assert lookup(server, "aaaa", "mx2.example.test")[0].status is Status.NODATA


def test_servfail_is_tempfail(server: DnsServer) -> None:
    result, elapsed = lookup(server, "mx", f"domain.{SERVFAIL_DOMAIN}")
    assert result.status is Status.TEMPFAIL and "SERVFAIL" in (result.error or "")
    assert elapsed < 1.5


def test_refused_is_tempfail(server: DnsServer) -> None:
    # dnsmasq refuses names outside its zones (it forwards nowhere).
    result, _ = lookup(server, "a", "elsewhere.invalid")
    assert result.status is Status.TEMPFAIL and "REFUSED" in (result.error or "")


def test_timeout_is_tempfail_within_the_timeout(server: DnsServer) -> None:
    result, elapsed = lookup(server, "a", f"host.{TIMEOUT_DOMAIN}", timeout=0.6)
    assert result.status is Status.TEMPFAIL and "timeout" in (result.error or "")
    assert elapsed < 1.5


def test_silent_nameserver_is_tempfail(server: DnsServer) -> None:
    resolver = DnsResolver([server.blackhole], timeout=0.5)
    assert run(resolver.mx("example.test")).status is Status.TEMPFAIL


def test_dead_first_nameserver_falls_over_to_the_next(server: DnsServer) -> None:
    resolver = DnsResolver([server.blackhole, server.nameserver], timeout=1.0)
    result = run(resolver.a("mx2.example.test"))
    assert result.records == ("127.0.0.7",)


def test_unreachable_port_is_tempfail(server: DnsServer) -> None:
    with_closed = DnsResolver([f"{server.address}:1"], timeout=0.5)
    assert run(with_closed.a("mx2.example.test")).status is Status.TEMPFAIL


# --- cache, sharing, settings ------------------------------------------------------------


def test_cache_answers_without_asking_again(server: DnsServer) -> None:
    resolver = DnsResolver([server.nameserver], timeout=2.0)

    async def main() -> list[Result[Any]]:
        first = await resolver.a("mx2.example.test")
        together = await asyncio.gather(*(resolver.mx("nullmx.test") for _ in range(10)))
        return [first, await resolver.a("mx2.example.test"), *together]

    before = server.queries()
    results = asyncio.run(main())
    assert results[0].records == results[1].records == ("127.0.0.7",)
    assert all(r.records == (MxRecord(0, ""),) for r in results[2:])
    time.sleep(0.2)
    new = server.queries()[len(before) :]
    assert new.count("A mx2.example.test") == 1
    assert new.count("MX nullmx.test") == 1


def test_from_settings_points_at_the_server(server: DnsServer) -> None:
    loaded = load_texts(
        f"dns_nameservers = {server.nameserver}\n",
        None,
        main_file="main.cf",
        master_file="master.cf",
        config_dir=None,
    )
    resolver = DnsResolver.from_settings(loaded.settings)
    assert run(resolver.a("mx2.example.test")).records == ("127.0.0.7",)


def test_factory_fixture_runs_independent_servers(
    dns_server: Callable[..., DnsServer],  # noqa: F811
) -> None:
    one = dns_server({"a.test": {"A": ["127.0.0.10"]}})
    two = dns_server({"a.test": {"A": ["127.0.0.20"]}}, ttl=60)
    assert one.nameserver != two.nameserver
    first = run(DnsResolver([one.nameserver], timeout=2).a("a.test"))
    second = run(DnsResolver([two.nameserver], timeout=2).a("a.test"))
    assert first.records == ("127.0.0.10",) and second.records == ("127.0.0.20",)
    assert second.ttl == 60
    two.stop()
    assert run(DnsResolver([two.nameserver], timeout=0.5).a("a.test")).status is Status.TEMPFAIL
    assert run(DnsResolver([one.nameserver], timeout=2).a("a.test")).ok
