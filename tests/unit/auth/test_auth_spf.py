"""SPF (ironpost.auth.spf) on the fake resolver, and the SPF restrictions on a real engine."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import spf as pyspf

from ironpost.auth.dnsbridge import BlockingDns
from ironpost.auth.spf import _dns_lookup, check_spf
from ironpost.auth.types import SpfResult
from ironpost.dns.types import Result
from ironpost.policy import NetworkList, PolicyEngine, Stage, Verdict
from ironpost.routing import DomainList, Router, RoutingConfig
from ironpost.testing.dns import FakeResolver

ZONES: dict[str, dict[str, Any]] = {
    "ip4.test": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
    "ip6.test": {"TXT": ["v=spf1 ip6:2001:db8::/32 -all"]},
    "a.test": {"TXT": ["v=spf1 a -all"], "A": ["198.51.100.1"]},
    "acidr.test": {"TXT": ["v=spf1 a:host.a.test/24 -all"]},
    "host.a.test": {"A": ["198.51.100.77"]},
    "mx.test": {"TXT": ["v=spf1 mx ~all"], "MX": [(10, "mx1.mx.test")]},
    "mx1.mx.test": {"A": ["203.0.113.10"], "AAAA": ["2001:db8:1::10"]},
    "include.test": {"TXT": ["v=spf1 include:ip4.test ?all"]},
    "redirect.test": {"TXT": ["v=spf1 redirect=ip4.test"]},
    "exists.test": {"TXT": ["v=spf1 exists:%{i}.allow.exists.test -all"]},
    "192.0.2.9.allow.exists.test": {"A": ["127.0.0.2"]},
    "ptr.test": {"TXT": ["v=spf1 ptr -all"]},
    "198.51.100.50": {"PTR": ["mail.ptr.test"]},
    "mail.ptr.test": {"A": ["198.51.100.50"]},
    "exp.test": {"TXT": ["v=spf1 -all exp=why.exp.test"]},
    "why.exp.test": {"TXT": ["%{i} is not one of %{d}'s servers"]},
    "neutral.test": {"TXT": ["v=spf1 ?all"]},
    "two.test": {"TXT": ["v=spf1 -all", "v=spf1 +all"]},
    "syntax.test": {"TXT": ["v=spf1 ip4:192.0.2.300 -all"]},
    "norecord.test": {"TXT": ["some other text"]},
    "lookups.test": {
        "TXT": ["v=spf1 " + " ".join(f"a:h{i}.lookups.test" for i in range(11)) + " -all"]
    },
    **{f"h{i}.lookups.test": {"A": ["10.0.0.1"]} for i in range(11)},
    "void.test": {"TXT": ["v=spf1 a:n1.void.test a:n2.void.test a:n3.void.test -all"]},
    "inctemp.test": {"TXT": ["v=spf1 include:x.broken.test -all"]},
    "incnone.test": {"TXT": ["v=spf1 include:norecord.test -all"]},
    "helo.example": {"TXT": ["v=spf1 ip4:192.0.2.44 -all"]},
}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def spf_of(
    ip: str, sender: str, helo: str = "client.example", resolver: FakeResolver | None = None
) -> SpfResult:
    resolver = resolver or FakeResolver(ZONES, tempfail=["broken.test"])
    blocking = BlockingDns(resolver, asyncio.get_running_loop())
    return await check_spf(blocking, ip, sender, helo)


@pytest.mark.parametrize(
    ("ip", "domain", "result", "mechanism"),
    [
        ("192.0.2.7", "ip4.test", "pass", "ip4:192.0.2.0/24"),
        ("198.51.100.1", "ip4.test", "fail", "-all"),
        ("2001:db8::1", "ip6.test", "pass", "ip6:2001:db8::/32"),
        ("2001:db9::1", "ip6.test", "fail", "-all"),
        ("198.51.100.1", "a.test", "pass", "a"),
        ("198.51.100.200", "acidr.test", "pass", "a:host.a.test/24"),
        ("203.0.113.10", "mx.test", "pass", "mx"),
        ("2001:db8:1::10", "mx.test", "pass", "mx"),
        ("203.0.113.11", "mx.test", "softfail", "~all"),
        ("192.0.2.8", "include.test", "pass", "include:ip4.test"),
        ("198.51.100.1", "include.test", "neutral", "?all"),
        ("192.0.2.8", "redirect.test", "pass", ""),
        ("198.51.100.1", "redirect.test", "fail", ""),
        ("192.0.2.9", "exists.test", "pass", "exists:%{i}.allow.exists.test"),
        ("192.0.2.10", "exists.test", "fail", "-all"),
        ("198.51.100.50", "ptr.test", "pass", "ptr"),
        ("198.51.100.51", "ptr.test", "fail", "-all"),
        ("198.51.100.1", "neutral.test", "neutral", "?all"),
        ("198.51.100.1", "norecord.test", "none", ""),
        ("198.51.100.1", "nxdomain.test", "none", ""),
        ("198.51.100.1", "two.test", "permerror", ""),
        ("198.51.100.1", "syntax.test", "permerror", ""),
        ("198.51.100.1", "lookups.test", "permerror", ""),
        ("198.51.100.1", "void.test", "permerror", ""),
        ("198.51.100.1", "x.broken.test", "temperror", ""),
        ("198.51.100.1", "inctemp.test", "temperror", ""),
        ("198.51.100.1", "incnone.test", "permerror", ""),
    ],
)
def test_check_host_results(ip: str, domain: str, result: str, mechanism: str) -> None:
    got = run(spf_of(ip, f"user@{domain}"))
    assert (got.result, got.domain, got.identity) == (result, domain, "mailfrom")
    if result in ("pass", "fail", "softfail", "neutral") and mechanism:
        assert got.mechanism.endswith(mechanism)
    if result in ("permerror", "temperror"):
        assert got.explanation  # the reason, for logs and replies


def test_lookup_limit_is_ten_and_void_limit_two() -> None:
    # Exactly 10 DNS mechanisms is allowed; the 11th is permerror (RFC 7208 §4.6.4).
    zones = dict(ZONES)
    zones["ten.test"] = {
        "TXT": ["v=spf1 " + " ".join(f"a:h{i}.lookups.test" for i in range(10)) + " -all"]
    }
    zones["twovoid.test"] = {"TXT": ["v=spf1 a:n1.void.test a:n2.void.test -all"]}
    ten = run(spf_of("198.51.100.1", "u@ten.test", resolver=FakeResolver(zones)))
    eleven = run(spf_of("198.51.100.1", "u@lookups.test", resolver=FakeResolver(zones)))
    two_void = run(spf_of("198.51.100.1", "u@twovoid.test", resolver=FakeResolver(zones)))
    three_void = run(spf_of("198.51.100.1", "u@void.test", resolver=FakeResolver(zones)))
    assert (ten.result, eleven.result) == ("fail", "permerror")
    assert "lookups" in eleven.explanation.lower()
    assert (two_void.result, three_void.result) == ("fail", "permerror")
    assert "void" in three_void.explanation.lower()


def test_exp_text_is_expanded_for_fail() -> None:
    got = run(spf_of("198.51.100.3", "u@exp.test"))
    assert got.result == "fail"
    assert got.explanation == "198.51.100.3 is not one of exp.test's servers"


def test_null_sender_checks_helo_identity() -> None:
    ok = run(spf_of("192.0.2.44", "", helo="helo.example"))
    bad = run(spf_of("192.0.2.45", "", helo="HELO.example."))
    assert (ok.result, ok.identity, ok.domain) == ("pass", "helo", "helo.example")
    assert (bad.result, bad.identity) == ("fail", "helo")


@pytest.mark.parametrize("helo", ["", "[192.0.2.1]", "localhost", "bad..name"])
def test_null_sender_with_unusable_helo_is_none_without_dns(helo: str) -> None:
    resolver = FakeResolver(ZONES)
    got = run(spf_of("192.0.2.1", "", helo=helo, resolver=resolver))
    assert got.result == "none"
    assert resolver.calls == []


def test_bad_client_address_is_permerror_not_exception() -> None:
    got = run(spf_of("not-an-ip", "u@ip4.test"))
    assert got.result == "permerror"


def test_ipv4_mapped_client_is_checked_as_ipv4() -> None:
    got = run(spf_of("::ffff:192.0.2.7", "u@ip4.test"))
    assert (got.result, got.client_address) == ("pass", "192.0.2.7")


def test_every_query_goes_through_our_resolver() -> None:
    resolver = FakeResolver(ZONES)
    run(spf_of("203.0.113.10", "u@mx.test", resolver=resolver))
    assert resolver.calls == [("TXT", "mx.test"), ("MX", "mx.test"), ("A", "mx1.mx.test")]


def test_hook_without_bound_check_never_uses_pyspf_dns() -> None:
    assert pyspf.DNSLookup is _dns_lookup
    with pytest.raises(pyspf.TempError):
        _dns_lookup("example.com", "TXT", True, 5)


class SlowResolver(FakeResolver):
    async def txt(self, name: str) -> Result[str]:
        await asyncio.sleep(0.3)
        return await super().txt(name)


def test_whole_check_deadline_gives_temperror() -> None:
    async def go() -> SpfResult:
        blocking = BlockingDns(SlowResolver(ZONES), asyncio.get_running_loop())
        return await check_spf(blocking, "192.0.2.7", "u@include.test", "h.example", timeout=0.2)

    start = time.monotonic()
    got = run(go())
    assert got.result == "temperror"
    assert time.monotonic() - start < 2.0


def test_concurrent_checks_use_their_own_resolvers() -> None:
    # The pyspf hook is module-global; each worker thread must reach its own resolver.
    async def go() -> list[SpfResult]:
        loop = asyncio.get_running_loop()
        passing = FakeResolver({"d.test": {"TXT": ["v=spf1 +all"]}})
        failing = FakeResolver({"d.test": {"TXT": ["v=spf1 -all"]}})
        checks = []
        for i in range(20):
            resolver = passing if i % 2 else failing
            checks.append(check_spf(BlockingDns(resolver, loop), "192.0.2.1", "u@d.test", "h"))
        return list(await asyncio.gather(*checks))

    results = run(go())
    assert [r.result for r in results] == ["fail", "pass"] * 10
    assert threading.active_count() >= 1


# --- the restrictions ------------------------------------------------------------------


def make_engine(recipient_list: list[str], resolver: FakeResolver | None) -> PolicyEngine:
    config = RoutingConfig(
        mydestination=DomainList.build(["example.org"]),
        virtual_alias_domains=DomainList.build([]),
        virtual_mailbox_domains=DomainList.build([]),
        relay_domains=DomainList.build([]),
        virtual_alias_maps=(),
        virtual_mailbox_maps=(),
        alias_maps=(),
        local_recipient_maps=(),
        virtual_mailbox_base=Path("/nonexistent"),
        recipient_delimiter="+",
        allow_percent_hack=False,
        swap_bangpath=False,
        myorigin="example.org",
        myhostname="mx.example.org",
    )
    return PolicyEngine(
        {Stage.RECIPIENT: [*recipient_list, "reject_unauth_destination"]},
        router=Router(config),
        mynetworks=NetworkList.build(["127.0.0.0/8"]),
        reject_unlisted_recipient=False,
        resolver=resolver,
    )


def rcpt(engine: PolicyEngine, client: str, sender: str, helo: str = "h.example") -> Any:
    async def go() -> Any:
        ctx = engine.new_context(client)
        ctx.set_helo(helo)
        ctx.set_sender(sender)
        ctx.set_recipient("user@example.org")
        decision = await engine.check_recipient(ctx)
        return decision, ctx

    return run(go())


def test_reject_spf_fail_replies_550_5_7_23_for_the_sender() -> None:
    engine = make_engine(["reject_spf_fail"], FakeResolver(ZONES))
    decision, ctx = rcpt(engine, "198.51.100.3", "u@exp.test")
    assert decision.verdict is Verdict.REJECT
    assert (decision.reply.code, decision.reply.enhanced) == (550, "5.7.23")
    assert "<u@exp.test>: Sender address rejected: SPF fail" in decision.reply.text
    assert "is not one of exp.test's servers" in decision.reply.text
    assert ctx.spf.result == "fail"


def test_reject_spf_fail_lets_pass_softfail_and_temperror_through() -> None:
    engine = make_engine(["reject_spf_fail"], FakeResolver(ZONES, tempfail=["broken.test"]))
    for client, sender in [
        ("192.0.2.7", "u@ip4.test"),
        ("203.0.113.99", "u@mx.test"),
        ("192.0.2.7", "u@x.broken.test"),
    ]:
        decision, _ = rcpt(engine, client, sender)
        assert decision.verdict is not Verdict.REJECT, sender


def test_reject_spf_softfail_refuses_softfail() -> None:
    engine = make_engine(["reject_spf_softfail"], FakeResolver(ZONES))
    decision, _ = rcpt(engine, "203.0.113.99", "u@mx.test")
    assert decision.verdict is Verdict.REJECT
    assert decision.reply.enhanced == "5.7.23"


def test_defer_spf_temperror_is_451_4_4_3() -> None:
    engine = make_engine(["defer_spf_temperror"], FakeResolver(ZONES, tempfail=["broken.test"]))
    decision, _ = rcpt(engine, "192.0.2.7", "u@x.broken.test")
    assert decision.verdict is Verdict.DEFER
    assert (decision.reply.code, decision.reply.enhanced) == (451, "4.4.3")


def test_reject_spf_permerror_uses_5_7_24() -> None:
    engine = make_engine(["reject_spf_permerror"], FakeResolver(ZONES))
    decision, _ = rcpt(engine, "192.0.2.7", "u@two.test")
    assert (decision.reply.code, decision.reply.enhanced) == (550, "5.7.24")


def test_check_spf_caches_once_per_transaction_and_never_refuses() -> None:
    resolver = FakeResolver(ZONES)
    engine = make_engine(["check_spf", "reject_spf_fail"], resolver)

    async def go() -> Any:
        ctx = engine.new_context("198.51.100.3")
        ctx.set_helo("h.example")
        ctx.set_sender("u@ip4.test")
        for rcpt_to in ("a@example.org", "b@example.org"):
            ctx.set_recipient(rcpt_to)
            await engine.check_recipient(ctx)
        first = list(resolver.calls)
        ctx.set_sender("u@ip6.test")  # a new transaction: computed again
        ctx.set_recipient("a@example.org")
        await engine.check_recipient(ctx)
        return first, ctx

    first, ctx = run(go())
    assert first == [("TXT", "ip4.test")]
    assert ctx.spf.domain == "ip6.test"

    only_check = make_engine(["check_spf"], FakeResolver(ZONES))
    decision, ctx = rcpt(only_check, "198.51.100.3", "u@ip4.test")
    assert decision.verdict is not Verdict.REJECT
    assert ctx.spf.result == "fail"


def test_without_resolver_spf_restrictions_are_dunno() -> None:
    engine = make_engine(["reject_spf_fail", "defer_spf_temperror"], None)
    decision, ctx = rcpt(engine, "198.51.100.3", "u@ip4.test")
    assert decision.verdict is not Verdict.REJECT
    assert ctx.spf is None


def test_helo_identity_refusal_names_the_helo() -> None:
    engine = make_engine(["reject_spf_fail"], FakeResolver(ZONES))
    decision, _ = rcpt(engine, "192.0.2.45", "", helo="helo.example")
    assert decision.verdict is Verdict.REJECT
    assert "<helo.example>: Helo command rejected: SPF fail" in decision.reply.text
