"""Route selection (RFC 5321 §5.1, RFC 7505) with a tiny in-test resolver."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from ironpost.delivery.mx import (
    Destination,
    NexthopError,
    Route,
    RouteOptions,
    parse_nexthop,
    select_routes,
)
from ironpost.delivery.transport import Disposition
from ironpost.dns.types import MxRecord, Result, Status

NX: Result[object] = Result(Status.NXDOMAIN)
TEMP: Result[object] = Result(Status.TEMPFAIL, error="timeout")


class ZoneResolver:
    """Answers from dicts; a missing name is NXDOMAIN, a name with other types NODATA."""

    def __init__(
        self,
        mx: dict[str, object] | None = None,
        a: dict[str, object] | None = None,
        aaaa: dict[str, object] | None = None,
    ) -> None:
        self.zones = {"mx": mx or {}, "a": a or {}, "aaaa": aaaa or {}}
        self.queries: list[tuple[str, str]] = []

    def _answer(self, rtype: str, name: str) -> Result:  # type: ignore[type-arg]
        self.queries.append((rtype, name))
        value = self.zones[rtype].get(name)
        if isinstance(value, Result):
            return value
        if value is None:
            known = any(name in zone for zone in self.zones.values())
            return Result(Status.NODATA if known else Status.NXDOMAIN)
        return Result(Status.ANSWER, tuple(value))  # type: ignore[call-overload]

    async def mx(self, name: str) -> Result[MxRecord]:
        return self._answer("mx", name)

    async def a(self, name: str) -> Result[str]:
        return self._answer("a", name)

    async def aaaa(self, name: str) -> Result[str]:
        return self._answer("aaaa", name)

    async def txt(self, name: str) -> Result[str]:
        return Result(Status.NODATA)

    async def ptr(self, address: str) -> Result[str]:
        return Result(Status.NODATA)


V4 = RouteOptions(ipv4=True, ipv6=False)


def routes(
    resolver: ZoneResolver, nexthop: str, options: RouteOptions = V4, seed: int = 1
) -> tuple[list[Route], object]:
    dest = parse_nexthop(nexthop)
    return asyncio.run(select_routes(resolver, dest, options, random.Random(seed)))


@pytest.mark.parametrize(
    ("nexthop", "expected"),
    [
        ("example.com", Destination("example.com", 25, mx=True)),
        ("Example.COM.", Destination("example.com", 25, mx=True)),
        ("example.com:2525", Destination("example.com", 2525, mx=True)),
        ("[mx.example.com]", Destination("mx.example.com", 25, mx=False)),
        ("[mx.example.com]:smtp", Destination("mx.example.com", 25, mx=False)),
        ("[192.0.2.1]:2525", Destination("192.0.2.1", 2525, mx=False)),
        ("192.0.2.1", Destination("192.0.2.1", 25, mx=False)),
        ("[ipv6:2001:DB8::1]:26", Destination("2001:db8::1", 26, mx=False)),
        ("[2001:db8::1]", Destination("2001:db8::1", 25, mx=False)),
    ],
)
def test_parse_nexthop(nexthop: str, expected: Destination) -> None:
    assert parse_nexthop(nexthop) == expected


def test_parse_lmtp_nexthops() -> None:
    assert parse_nexthop("unix:/run/dovecot/lmtp", lmtp=True).unix == "/run/dovecot/lmtp"
    assert parse_nexthop("inet:127.0.0.1:2424", default_port=24, lmtp=True) == Destination(
        "127.0.0.1", 2424, mx=False
    )
    assert parse_nexthop("inet:lmtp.example", default_port=24, lmtp=True) == Destination(
        "lmtp.example", 24, mx=False
    )


@pytest.mark.parametrize("bad", ["", "[x", "[x]y", "x:0", "x:99999", "x:nope", "[]", "a b"])
def test_parse_nexthop_errors(bad: str) -> None:
    with pytest.raises(NexthopError):
        parse_nexthop(bad)


def test_mx_preference_order_and_addresses() -> None:
    r = ZoneResolver(
        mx={"example.com": [MxRecord(20, "mx2.example.com"), MxRecord(10, "mx1.example.com")]},
        a={"mx1.example.com": ["192.0.2.1", "192.0.2.2"], "mx2.example.com": ["192.0.2.3"]},
    )
    got, failure = routes(r, "example.com")
    assert failure is None
    assert [(x.host, x.address, x.preference) for x in got] == [
        ("mx1.example.com", "192.0.2.1", 10),
        ("mx1.example.com", "192.0.2.2", 10),
        ("mx2.example.com", "192.0.2.3", 20),
    ]
    assert got[0].relay == "mx1.example.com[192.0.2.1]:25"
    assert ("aaaa", "mx1.example.com") not in r.queries  # inet_protocols = ipv4


def test_equal_preferences_are_shuffled() -> None:
    r = ZoneResolver(
        mx={"example.com": [MxRecord(10, "a.example.com"), MxRecord(10, "b.example.com")]},
        a={"a.example.com": ["192.0.2.1"], "b.example.com": ["192.0.2.2"]},
    )
    firsts = Counter(routes(r, "example.com", seed=s)[0][0].host for s in range(40))
    assert set(firsts) == {"a.example.com", "b.example.com"}


def test_implicit_mx_when_no_mx_records() -> None:
    r = ZoneResolver(a={"example.com": ["192.0.2.9"]})
    got, failure = routes(r, "example.com")
    assert failure is None and [(x.host, x.address) for x in got] == [("example.com", "192.0.2.9")]


def test_nxdomain_bounces_5_1_2() -> None:
    got, failure = routes(ZoneResolver(), "nowhere.example")
    assert got == []
    assert failure is not None
    assert (failure.disposition, failure.dsn) == (Disposition.BOUNCED, "5.1.2")  # type: ignore[attr-defined]


def test_null_mx_bounces_5_1_10() -> None:
    r = ZoneResolver(mx={"example.com": [MxRecord(0, "")]}, a={"example.com": ["192.0.2.1"]})
    got, failure = routes(r, "example.com")
    assert got == [] and failure.dsn == "5.1.10"  # type: ignore[attr-defined]
    assert failure.disposition is Disposition.BOUNCED  # type: ignore[attr-defined]
    assert "nullMX" in failure.text  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "resolver",
    [
        ZoneResolver(mx={"example.com": TEMP}),
        ZoneResolver(a={"example.com": TEMP}),
        ZoneResolver(
            mx={"example.com": [MxRecord(10, "mx.example.com")]}, a={"mx.example.com": TEMP}
        ),
    ],
)
def test_tempfail_defers_4_4_3_never_bounces(resolver: ZoneResolver) -> None:
    got, failure = routes(resolver, "example.com")
    assert got == []
    assert (failure.disposition, failure.dsn) == (Disposition.DEFERRED, "4.4.3")  # type: ignore[attr-defined]


def test_tempfail_on_one_mx_host_keeps_the_others() -> None:
    r = ZoneResolver(
        mx={"example.com": [MxRecord(10, "mx1.example.com"), MxRecord(20, "mx2.example.com")]},
        a={"mx1.example.com": TEMP, "mx2.example.com": ["192.0.2.2"]},
    )
    got, failure = routes(r, "example.com")
    assert failure is None and [x.address for x in got] == ["192.0.2.2"]


def test_mx_hosts_without_addresses_defer() -> None:
    r = ZoneResolver(mx={"example.com": [MxRecord(10, "gone.example.com")]})
    got, failure = routes(r, "example.com")
    assert got == [] and failure.disposition is Disposition.DEFERRED  # type: ignore[attr-defined]


def test_domain_without_mx_or_address_bounces() -> None:
    r = ZoneResolver(mx={"example.com": Result(Status.NODATA)})
    got, failure = routes(r, "example.com")
    assert got == [] and failure.disposition is Disposition.BOUNCED  # type: ignore[attr-defined]


def test_bracketed_host_skips_mx() -> None:
    r = ZoneResolver(
        mx={"relay.example": [MxRecord(1, "other.example")]}, a={"relay.example": ["192.0.2.7"]}
    )
    got, failure = routes(r, "[relay.example]:587")
    assert failure is None and got == [Route("relay.example", "192.0.2.7", 587)]
    assert not any(q[0] == "mx" for q in r.queries)


def test_literal_address_needs_no_dns() -> None:
    r = ZoneResolver()
    got, _ = routes(r, "[127.0.0.1]:2525")
    assert got == [Route("127.0.0.1", "127.0.0.1", 2525)] and r.queries == []


def test_inet_protocols_and_address_preference() -> None:
    r = ZoneResolver(a={"h.example": ["192.0.2.1"]}, aaaa={"h.example": ["2001:db8::1"]})
    both6 = RouteOptions(preference="ipv6")
    assert [x.address for x in routes(r, "[h.example]", both6)[0]] == ["2001:db8::1", "192.0.2.1"]
    both4 = RouteOptions(preference="ipv4")
    assert [x.address for x in routes(r, "[h.example]", both4)[0]] == ["192.0.2.1", "2001:db8::1"]
    only6 = RouteOptions(ipv4=False, ipv6=True)
    assert [x.address for x in routes(r, "[h.example]", only6)[0]] == ["2001:db8::1"]
    assert RouteOptions.protocols("all") == (True, True)
    assert RouteOptions.protocols("ipv4") == (True, False)
    assert RouteOptions.protocols("ipv4, ipv6") == (True, True)


def test_address_limit() -> None:
    r = ZoneResolver(
        mx={"example.com": [MxRecord(i, f"mx{i}.example.com") for i in range(4)]},
        a={f"mx{i}.example.com": [f"192.0.2.{i}", f"192.0.2.{i + 10}"] for i in range(4)},
    )
    assert len(routes(r, "example.com", RouteOptions(ipv6=False, address_limit=3))[0]) == 3
    assert len(routes(r, "example.com", RouteOptions(ipv6=False, address_limit=0))[0]) == 8


def test_mx_loops_back_to_myself() -> None:
    r = ZoneResolver(
        mx={"example.com": [MxRecord(10, "me.example.com"), MxRecord(20, "backup.example.com")]},
        a={"me.example.com": ["192.0.2.1"], "backup.example.com": ["192.0.2.2"]},
    )
    me = RouteOptions(ipv6=False, my_names=frozenset({"me.example.com"}))
    got, failure = routes(r, "example.com", me)
    assert got == [] and failure.dsn == "5.4.6"  # type: ignore[attr-defined]
    # As a backup MX we only try hosts better than ourselves.
    backup = RouteOptions(ipv6=False, my_addresses=frozenset({"192.0.2.2"}))
    got, failure = routes(r, "example.com", backup)
    assert failure is None and [x.host for x in got] == ["me.example.com"]
