"""DnsResolver's result mapping, caching and query sharing, without sockets.

The real dnspython resolution logic runs; only the wire is replaced, by a
dnspython ``Nameserver`` that answers from a handler (a scripted server).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import dns.asyncbackend
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from ironpost.config import load_texts
from ironpost.dns import DnsResolver, MxRecord, Result, Status
from ironpost.dns.resolver import DEFAULT_NEGATIVE_TTL, INVALID_ADDRESS, INVALID_NAME

Reply = dns.message.Message | Exception
Handler = Callable[[dns.message.QueryMessage, bool], Reply | Awaitable[Reply]]


class Scripted(dns.nameserver.Nameserver):
    """A nameserver whose answers come from ``handler(request, tcp)``."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler
        self.asked: list[tuple[str, str, bool]] = []  # (qname, type, tcp)

    def __str__(self) -> str:
        return "scripted"

    def kind(self) -> str:
        return "scripted"

    def is_always_max_size(self) -> bool:
        return False

    def answer_nameserver(self) -> str:
        return "192.0.2.53"

    def answer_port(self) -> int:
        return 53

    async def async_query(
        self,
        request: dns.message.QueryMessage,
        timeout: float,
        source: str | None,
        source_port: int,
        max_size: bool,
        backend: dns.asyncbackend.Backend,
        one_rr_per_rrset: bool = False,
        ignore_trailing: bool = False,
    ) -> dns.message.Message:
        q = request.question[0]
        self.asked.append((q.name.to_text(), dns.rdatatype.to_text(q.rdtype), max_size))
        out = self.handler(request, max_size)
        if inspect.isawaitable(out):
            out = await out
        if isinstance(out, Exception):
            raise out
        return out


def add(message: dns.message.Message, section: Any, rrset: dns.rrset.RRset) -> None:
    # Through find_rrset so that the message's index knows the rrset.
    message.find_rrset(section, rrset.name, rrset.rdclass, rrset.rdtype, create=True).update(rrset)


def reply(
    request: dns.message.QueryMessage,
    *rdatas: str,
    ttl: int = 300,
    rcode: dns.rcode.Rcode = dns.rcode.NOERROR,
    soa: tuple[int, int] | None = None,  # (SOA record TTL, SOA MINIMUM)
    rtype: str | None = None,
) -> dns.message.Message:
    response = dns.message.make_response(request)
    response.set_rcode(rcode)
    q = request.question[0]
    if rdatas:
        kind = rtype or dns.rdatatype.to_text(q.rdtype)
        add(response, response.answer, dns.rrset.from_text(q.name, ttl, "IN", kind, *rdatas))
    if soa is not None:
        zone = q.name.parent() if len(q.name) > 2 else q.name
        rd = f"ns.{zone} host.{zone} 1 3600 600 86400 {soa[1]}"
        add(response, response.authority, dns.rrset.from_text(zone, soa[0], "IN", "SOA", rd))
    return response


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def resolver(handler: Handler, **kwargs: Any) -> tuple[DnsResolver, Scripted]:
    server = Scripted(handler)
    return DnsResolver([server], **kwargs), server


def run(coro: Awaitable[Result[Any]]) -> Result[Any]:
    async def main() -> Result[Any]:
        return await coro

    return asyncio.run(main())


# --- record shapes ---------------------------------------------------------------------


def test_mx_sorted_lowercased_without_trailing_dot() -> None:
    r, server = resolver(lambda q, tcp: reply(q, "20 MX2.Example.COM.", "10 mx1.example.com."))
    result = run(r.mx("Example.COM"))
    assert result.status is Status.ANSWER and result.ok
    assert result.records == (MxRecord(10, "mx1.example.com"), MxRecord(20, "mx2.example.com"))
    assert result.ttl == 300
    assert server.asked == [("example.com.", "MX", False)]


def test_null_mx_has_empty_host() -> None:
    r, _ = resolver(lambda q, tcp: reply(q, "0 ."))
    assert run(r.mx("nullmx.example")).records == (MxRecord(0, ""),)


def test_a_and_aaaa_records_are_address_text() -> None:
    r, _ = resolver(
        lambda q, tcp: (
            reply(q, "192.0.2.1", "192.0.2.2")
            if q.question[0].rdtype == dns.rdatatype.A
            else reply(q, "2001:db8:0::1")
        )
    )
    assert run(r.a("h.example")).records == ("192.0.2.1", "192.0.2.2")
    assert run(r.aaaa("h.example")).records == ("2001:db8::1",)


def test_txt_joins_the_strings_of_each_record() -> None:
    r, _ = resolver(lambda q, tcp: reply(q, '"v=DKIM1; k=rsa; " "p=AB" "CD"', '"v=spf1 -all"'))
    records = run(r.txt("sel._domainkey.example")).records
    assert sorted(records) == ["v=DKIM1; k=rsa; p=ABCD", "v=spf1 -all"]


def test_txt_with_invalid_utf8_does_not_raise() -> None:
    r, _ = resolver(lambda q, tcp: reply(q, '"caf\\233"'))
    assert run(r.txt("x.example")).records == ("caf\ufffd",)


@pytest.mark.parametrize(
    ("address", "qname"),
    [
        ("192.0.2.7", "7.2.0.192.in-addr.arpa."),
        ("2001:db8::1", "1.0.0.0." + "0." * 20 + "8.b.d.0.1.0.0.2.ip6.arpa."),
    ],
)
def test_ptr_asks_the_reverse_name(address: str, qname: str) -> None:
    r, server = resolver(lambda q, tcp: reply(q, "Host.Example.NET."))
    assert run(r.ptr(address)).records == ("host.example.net",)
    assert server.asked == [(qname, "PTR", False)]


def test_ptr_of_a_non_address_is_nxdomain_without_query() -> None:
    r, server = resolver(lambda q, tcp: reply(q, "x.example."))
    result = run(r.ptr("not-an-ip"))
    assert result.status is Status.NXDOMAIN and result.error == INVALID_ADDRESS
    assert server.asked == []


def test_cname_chain_answer_uses_smallest_ttl() -> None:
    def handler(q: dns.message.QueryMessage, tcp: bool) -> Reply:
        response = dns.message.make_response(q)
        name = q.question[0].name
        add(
            response, response.answer, dns.rrset.from_text(name, 30, "IN", "CNAME", "real.example.")
        )
        add(
            response,
            response.answer,
            dns.rrset.from_text("real.example.", 600, "IN", "A", "192.0.2.9"),
        )
        return response

    r, _ = resolver(handler)
    result = run(r.a("alias.example"))
    assert result.records == ("192.0.2.9",) and result.ttl == 30


# --- statuses ---------------------------------------------------------------------------


def test_nxdomain_uses_soa_negative_ttl() -> None:
    r, _ = resolver(lambda q, tcp: reply(q, rcode=dns.rcode.NXDOMAIN, soa=(900, 120)))
    result = run(r.mx("missing.example"))
    assert result.status is Status.NXDOMAIN and not result.ok
    assert result.ttl == 120 and result.records == ()


def test_nodata_uses_soa_negative_ttl_bounded_by_soa_ttl() -> None:
    r, _ = resolver(lambda q, tcp: reply(q, soa=(45, 3600)))
    result = run(r.aaaa("v4only.example"))
    assert result.status is Status.NODATA and result.ttl == 45


def test_negative_without_soa_gets_default_ttl() -> None:
    r, _ = resolver(lambda q, tcp: reply(q, rcode=dns.rcode.NXDOMAIN))
    assert run(r.a("missing.example")).ttl == DEFAULT_NEGATIVE_TTL


def test_answer_of_another_type_is_nodata() -> None:
    # A CNAME-less answer for a different type (e.g. a sloppy server) is not an answer.
    r, _ = resolver(lambda q, tcp: reply(q, "192.0.2.1", rtype="A"))
    assert run(r.mx("odd.example")).status is Status.NODATA


@pytest.mark.parametrize("rcode", [dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NOTIMP])
def test_error_rcodes_are_tempfail(rcode: dns.rcode.Rcode) -> None:
    r, _ = resolver(lambda q, tcp: reply(q, rcode=rcode))
    result = run(r.mx("broken.example"))
    assert result.status is Status.TEMPFAIL
    assert result.error is not None and dns.rcode.to_text(rcode) in result.error


@pytest.mark.parametrize(
    "exc",
    [ConnectionRefusedError("refused"), OSError("unreachable"), EOFError(), ValueError("bug")],
)
def test_network_and_library_errors_are_tempfail(exc: Exception) -> None:
    r, _ = resolver(lambda q, tcp: exc, timeout=0.3)
    assert run(r.a("x.example")).status is Status.TEMPFAIL


def test_timeout_is_tempfail_within_the_lifetime() -> None:
    async def slow(q: dns.message.QueryMessage, tcp: bool) -> Reply:
        await asyncio.sleep(0.02)
        return dns.exception.Timeout()  # what a UDP query raises when nothing comes back

    r, server = resolver(slow, timeout=0.2)
    loop_start = asyncio.run(_timed(r.a("slow.example")))
    result, elapsed = loop_start
    assert result.status is Status.TEMPFAIL and "timeout" in (result.error or "")
    assert elapsed < 1.0
    assert len(server.asked) >= 2  # retried within the lifetime


async def _timed(coro: Awaitable[Result[Any]]) -> tuple[Result[Any], float]:
    start = asyncio.get_running_loop().time()
    result = await coro
    return result, asyncio.get_running_loop().time() - start


def test_truncated_udp_reply_is_retried_over_tcp() -> None:
    def handler(q: dns.message.QueryMessage, tcp: bool) -> Reply:
        if not tcp:
            truncated = reply(q)
            truncated.flags |= dns.flags.TC
            return dns.message.Truncated(message=truncated)
        return reply(q, *(f'"record {i} {"x" * 200}"' for i in range(10)))

    r, server = resolver(handler)
    result = run(r.txt("big.example"))
    assert result.ok and len(result.records) == 10
    assert [tcp for _, _, tcp in server.asked] == [False, True]


@pytest.mark.parametrize(
    "name",
    ["", ".", "a..example", "-" * 64 + ".example", ("a" * 60 + ".") * 5, "sp ace.example",
     "tab\t.example", "nul\0.example", "xn--\udc80.example"],
)  # fmt: skip
def test_invalid_names_are_nxdomain_without_query(name: str) -> None:
    r, server = resolver(lambda q, tcp: reply(q, "192.0.2.1"))
    for lookup in (r.mx, r.a, r.aaaa, r.txt):
        result = run(lookup(name))
        assert result.status is Status.NXDOMAIN and result.error == INVALID_NAME
    assert server.asked == []


def test_idn_is_queried_as_a_labels() -> None:
    r, server = resolver(lambda q, tcp: reply(q, "10 mx.xn--bcher-kva.example."))
    assert run(r.mx("Bücher.example.")).ok
    assert server.asked == [("xn--bcher-kva.example.", "MX", False)]


def test_label_escapes_are_not_interpreted() -> None:
    # A backslash is an ordinary octet here, not dnspython's zone-file escape.
    r, server = resolver(lambda q, tcp: reply(q, "192.0.2.1"))
    run(r.a("a\\.b.example"))
    # Three labels ("a\\", "b", "example"): the dot was not escaped into the first label.
    assert server.asked == [("a\\\\.b.example.", "A", False)]


# --- cache ------------------------------------------------------------------------------


def test_answers_are_cached_for_their_ttl() -> None:
    clock = Clock()
    r, server = resolver(lambda q, tcp: reply(q, "192.0.2.1", ttl=60), clock=clock)

    async def main() -> list[Result[Any]]:
        out = [await r.a("h.example")]
        clock.now += 58.5
        out.append(await r.a("H.example."))  # same key: case and final dot do not matter
        clock.now += 1.5
        out.append(await r.a("h.example"))
        return out

    first, cached, refreshed = asyncio.run(main())
    assert first.ttl == 60 and cached.records == first.records
    assert cached.ttl == 2  # the time left, not the publisher's full TTL
    assert refreshed.ttl == 60
    assert len(server.asked) == 2


def test_negative_answers_are_cached_by_soa_ttl() -> None:
    clock = Clock()
    r, server = resolver(
        lambda q, tcp: reply(q, rcode=dns.rcode.NXDOMAIN, soa=(300, 30)), clock=clock
    )

    async def main() -> None:
        await r.mx("gone.example")
        clock.now += 29
        assert (await r.mx("gone.example")).status is Status.NXDOMAIN
        assert len(server.asked) == 1
        clock.now += 2
        await r.mx("gone.example")
        assert len(server.asked) == 2

    asyncio.run(main())


def test_tempfail_is_cached_only_briefly() -> None:
    clock = Clock()
    answers = [reply_servfail, reply_ok]
    r, server = resolver(lambda q, tcp: answers.pop(0)(q), clock=clock, tempfail_ttl=5)

    async def main() -> None:
        assert (await r.a("flaky.example")).status is Status.TEMPFAIL
        assert (await r.a("flaky.example")).status is Status.TEMPFAIL  # served from cache
        assert len(server.asked) == 1
        clock.now += 5
        assert (await r.a("flaky.example")).ok

    asyncio.run(main())


def reply_servfail(q: dns.message.QueryMessage) -> Reply:
    return reply(q, rcode=dns.rcode.SERVFAIL)


def reply_ok(q: dns.message.QueryMessage) -> Reply:
    return reply(q, "192.0.2.1")


def test_tempfail_not_cached_when_disabled() -> None:
    r, server = resolver(lambda q, tcp: reply_servfail(q), tempfail_ttl=0)

    async def main() -> None:
        await r.a("x.example")
        await r.a("x.example")

    asyncio.run(main())
    assert len(server.asked) == 2


def test_zero_ttl_is_not_cached() -> None:
    r, server = resolver(lambda q, tcp: reply(q, "192.0.2.1", ttl=0))

    async def main() -> None:
        await r.a("x.example")
        await r.a("x.example")

    asyncio.run(main())
    assert len(server.asked) == 2


def test_positive_ttl_is_capped_at_a_day() -> None:
    r, _ = resolver(lambda q, tcp: reply(q, "192.0.2.1", ttl=7 * 86400))
    assert run(r.a("x.example")).ttl == 86400


def test_types_are_cached_separately() -> None:
    r, server = resolver(lambda q, tcp: reply(q, soa=(60, 60)))

    async def main() -> None:
        await r.a("x.example")
        await r.aaaa("x.example")
        await r.mx("x.example")

    asyncio.run(main())
    assert [t for _, t, _ in server.asked] == ["A", "AAAA", "MX"]


def test_cache_is_bounded_by_cache_size() -> None:
    r, server = resolver(lambda q, tcp: reply(q, "192.0.2.1"), cache_size=3)

    async def main() -> None:
        for i in range(10):
            await r.a(f"h{i}.spam.example")
        await r.a("h0.spam.example")

    asyncio.run(main())
    assert len(r.cache) == 3
    assert len(server.asked) == 11  # h0 was evicted long ago


# --- in-flight sharing -----------------------------------------------------------------


def test_concurrent_identical_queries_share_one_lookup() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def held(q: dns.message.QueryMessage, tcp: bool) -> Reply:
            await release.wait()
            if q.question[0].rdtype == dns.rdatatype.MX:
                return reply(q, "10 mx.example.")
            return reply(q, "192.0.2.1")

        r, server = resolver(held)
        tasks = [asyncio.create_task(r.mx("example.com")) for _ in range(20)]
        other = asyncio.create_task(r.a("example.com"))
        await asyncio.sleep(0.01)
        release.set()
        results = await asyncio.gather(*tasks, other)
        assert all(res.records == (MxRecord(10, "mx.example"),) for res in results[:-1])
        assert sorted(t for _, t, _ in server.asked) == ["A", "MX"]

    asyncio.run(main())


def test_one_cancelled_caller_does_not_cancel_the_shared_lookup() -> None:
    async def main() -> None:
        release = asyncio.Event()

        async def held(q: dns.message.QueryMessage, tcp: bool) -> Reply:
            await release.wait()
            return reply(q, "192.0.2.1")

        r, server = resolver(held)
        first = asyncio.create_task(r.a("example.com"))
        second = asyncio.create_task(r.a("example.com"))
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0)
        release.set()
        assert (await second).records == ("192.0.2.1",)
        assert first.cancelled()
        assert len(server.asked) == 1

    asyncio.run(main())


# --- configuration -----------------------------------------------------------------------


def test_nameservers_from_arguments() -> None:
    r = DnsResolver(["192.0.2.1", "192.0.2.2:5353", "[2001:db8::1]:53", "::1"])
    assert r.nameservers == ("192.0.2.1:53", "192.0.2.2:5353", "[2001:db8::1]:53", "[::1]:53")


@pytest.mark.parametrize("content", [None, "", "# nothing\nsearch example.com\n"])
def test_missing_or_empty_resolv_conf_falls_back_to_localhost(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "resolv.conf"
    if content is not None:
        path.write_text(content)
    assert DnsResolver(resolv_conf=str(path)).nameservers == ("127.0.0.1:53",)


def test_resolv_conf_is_read_and_search_list_ignored(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("search corp.example\nnameserver 192.0.2.53\nnameserver ::1\n")
    r = DnsResolver(resolv_conf=str(path))
    assert r.nameservers == ("192.0.2.53:53", "[::1]:53")
    server = Scripted(lambda q, tcp: reply(q, "192.0.2.1"))
    r._resolver.nameservers = [server]
    run(r.a("host"))
    assert server.asked == [("host.", "A", False)]  # never host.corp.example


def test_from_settings_reads_dns_nameservers() -> None:
    loaded = load_texts(
        "dns_nameservers = 127.0.0.2:5300, [::1]:5301\n",
        None,
        main_file="main.cf",
        master_file="master.cf",
        config_dir=None,
    )
    r = DnsResolver.from_settings(loaded.settings, timeout=1.5)
    assert r.nameservers == ("127.0.0.2:5300", "[::1]:5301") and r.timeout == 1.5


def test_bad_nameserver_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        DnsResolver(["dns.example.com"])


def test_dns_exception_base_is_never_raised() -> None:
    r, _ = resolver(lambda q, tcp: dns.exception.FormError("garbled"), timeout=0.3)
    assert run(r.txt("x.example")).status is Status.TEMPFAIL
