"""DNS lists (policy.dnsbl) against FakeResolver zones: query names, listings, reply
patterns, error answers, replies and their templates, allowlists, prefetching."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.config import load_texts
from ironpost.config.restrictions import RestrictionError, parse_dnsxl_argument, parse_restrictions
from ironpost.dns.types import Result
from ironpost.policy import PolicyParams, Stage, Verdict, dnsbl
from ironpost.protocol.replies import Reply
from ironpost.testing.dns import FakeResolver

CLIENT = "198.51.100.7"
REVERSED = "7.100.51.198"


def zones(**extra: Any) -> dict[str, dict[str, list[Any]]]:
    base: dict[str, dict[str, list[Any]]] = {
        f"{REVERSED}.bl.test": {"A": ["127.0.0.2"]},
        f"{REVERSED}.txt.test": {"A": ["127.0.0.3"], "TXT": ["see https://bl/?7", "second"]},
        f"{REVERSED}.range.test": {"A": ["127.0.0.12"]},
        f"{REVERSED}.oops.test": {"A": ["127.255.255.254"]},
        f"{REVERSED}.wild.test": {"A": ["10.1.2.3"]},
        f"{REVERSED}.crlf.test": {"A": ["127.0.0.2"], "TXT": ["bad\r\n250 ok \u00e9"]},
        f"{REVERSED}.wl.test": {"A": ["127.0.10.1"]},
        "sender.test.rhs.test": {"A": ["127.0.0.2"]},
        "helo.example.rhs.test": {"A": ["127.0.0.2"]},
        "ptr.example.rhs.test": {"A": ["127.0.0.2"]},
        "rcpt.test.rhs.test": {"A": ["127.0.0.2"]},
        "good.example.rhswl.test": {"A": ["127.0.0.2"]},
    }
    base.update(extra)
    return base


@pytest.fixture
def fake() -> FakeResolver:
    return FakeResolver(zones(), tempfail=["down.test"])


def make(harness: Any, fake: FakeResolver, stage: Stage, items: list[str], **params: Any) -> Any:
    return harness(
        {stage: items},
        client=CLIENT,
        resolver=fake,
        params=PolicyParams(**params),
    )


# -- query names and the argument grammar ------------------------------------------------


def test_reversed_addresses() -> None:
    assert dnsbl.reversed_address("1.2.3.4") == "4.3.2.1"
    assert dnsbl.reversed_address("::ffff:1.2.3.4") == "4.3.2.1"
    assert dnsbl.reversed_address("2001:db8::1") == "1." + "0." * 23 + "8.b.d.0.1.0.0.2"
    assert dnsbl.reversed_address("not-an-ip") is None


@given(st.ip_addresses())
def test_reversed_address_is_the_reverse_pointer_without_suffix(ip: Any) -> None:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return
    got = dnsbl.reversed_address(str(ip))
    assert got is not None
    assert ip.reverse_pointer == f"{got}.{'in-addr' if ip.version == 4 else 'ip6'}.arpa"


def test_rhs_domain_follows_postfix() -> None:
    assert dnsbl.rhs_domain("user@Sender.Test") == "sender.test"
    assert dnsbl.rhs_domain("helo.example") == "helo.example"
    assert dnsbl.rhs_domain("u@[192.0.2.1]") is None
    assert dnsbl.rhs_domain("u@host.123") is None  # numeric last label: skipped
    assert dnsbl.rhs_domain("bad..name") is None
    assert dnsbl.rhs_domain("u@b\u00fccher.example") == "xn--bcher-kva.example"


def test_argument_grammar_and_config_errors() -> None:
    assert parse_dnsxl_argument("Zen.Spamhaus.Org")[0] == "zen.spamhaus.org"
    domain, pattern = parse_dnsxl_argument("zen.spamhaus.org=127.0.0.[2..11]")
    assert domain == "zen.spamhaus.org" and pattern is not None
    assert [pattern.matches(f"127.0.0.{i}") for i in (1, 2, 11, 12)] == [0, 1, 1, 0]
    _, listed = parse_dnsxl_argument("x.test=127.0.[0;1].[2;4..5]")
    assert listed is not None
    assert [o for o in range(8) if listed.matches(f"127.0.1.{o}")] == [2, 4, 5]
    assert not listed.matches("127.0.2.2")
    for bad in ("x.test=127.0.0", "x.test=127.0.0.[9..2]", "x.test=1.2.3.256", "=1.2.3.4"):
        with pytest.raises(ValueError):
            parse_dnsxl_argument(bad)
    with pytest.raises(RestrictionError, match=r"reject_rbl_client x\.test=127\.0\.0"):
        parse_restrictions(["reject_rbl_client", "x.test=127.0.0"])


@given(
    st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(0, 255),
)
def test_bracket_patterns_match_exactly_their_ranges(ranges: list[Any], last: int) -> None:
    spans = [(min(a, b), max(a, b)) for a, b in ranges]
    text = ";".join(f"{lo}..{hi}" if lo != hi else str(lo) for lo, hi in spans)
    _, pattern = parse_dnsxl_argument(f"bl.test=127.0.0.[{text}]")
    assert pattern is not None
    expected = any(lo <= last <= hi for lo, hi in spans)
    assert pattern.matches(f"127.0.0.{last}") is expected
    assert not pattern.matches(f"127.0.1.{last}")


# -- reject_rbl_client --------------------------------------------------------------------


def test_listed_client_gets_postfix_default_reply(harness: Any, fake: FakeResolver) -> None:
    h = make(harness, fake, Stage.CLIENT, ["reject_rbl_client", "bl.test"])
    decision = h.rcpt("user@example.com")
    assert decision.verdict is Verdict.REJECT
    assert decision.reply == Reply(
        554, "5.7.1", f"Service unavailable; Client host [{CLIENT}] blocked using bl.test"
    )
    assert ("A", f"{REVERSED}.bl.test") in fake.calls


def test_txt_record_is_the_reason(harness: Any, fake: FakeResolver) -> None:
    h = make(harness, fake, Stage.RECIPIENT, ["reject_rbl_client txt.test", "permit"])
    reply = h.rcpt("user@example.com").reply
    assert str(reply.text).endswith("blocked using txt.test; see https://bl/?7 / second")


def test_txt_from_the_dns_is_reduced_to_printable_ascii(harness: Any, fake: FakeResolver) -> None:
    h = make(harness, fake, Stage.RECIPIENT, ["reject_rbl_client crlf.test"])
    text = h.rcpt("user@example.com").reply.text
    assert "\r" not in text and "\n" not in text and text.endswith("; bad__250 ok _")


def test_unlisted_client_passes(harness: Any, fake: FakeResolver) -> None:
    h = harness(
        {Stage.CLIENT: ["reject_rbl_client bl.test"]},
        client="203.0.113.9",
        resolver=fake,
    )
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT
    assert h.warnings == []


def test_reply_pattern_filters_answers(harness: Any, fake: FakeResolver) -> None:
    for arg, verdict in (
        ("range.test=127.0.0.[2..11]", Verdict.PERMIT),
        ("range.test=127.0.0.[2..12]", Verdict.REJECT),
        ("bl.test=127.0.0.2", Verdict.REJECT),
        ("bl.test=127.0.0.3", Verdict.PERMIT),
    ):
        h = make(harness, fake, Stage.CLIENT, ["reject_rbl_client", arg])
        assert h.rcpt("user@example.com").verdict is verdict, arg
    h = make(harness, fake, Stage.CLIENT, ["reject_rbl_client", "bl.test=127.0.0.[1..3]"])
    # $rbl_domain drops the pattern.
    assert h.rcpt("user@example.com").reply.text.endswith("blocked using bl.test")


@pytest.mark.parametrize("arg", ["oops.test", "wild.test", "down.test"])
def test_error_answers_and_failures_are_not_listings(
    harness: Any, fake: FakeResolver, arg: str
) -> None:
    before = sum(v for (d, _), v in dnsbl.LOOKUP_ERRORS.items() if d == arg)
    h = make(harness, fake, Stage.CLIENT, ["reject_rbl_client", arg])
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT
    assert len(h.warnings) == 1 and "RBL lookup error" in h.warnings[0]
    reason = "tempfail" if arg == "down.test" else "error answer"
    assert dnsbl.LOOKUP_ERRORS[(arg, reason)] == before + 1
    assert not any(t == "TXT" for t, _ in fake.calls)


def test_an_error_answer_beside_a_listing_is_still_an_error(harness: Any) -> None:
    fake = FakeResolver({f"{REVERSED}.mixed.test": {"A": ["127.0.0.2", "127.255.255.252"]}})
    h = make(harness, fake, Stage.CLIENT, ["reject_rbl_client mixed.test"])
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT


def test_ipv6_client_uses_nibbles(harness: Any) -> None:
    fake = FakeResolver({})
    h = harness({Stage.CLIENT: ["reject_rbl_client bl.test"]}, client="2001:db8::7", resolver=fake)
    h.rcpt("user@example.com")
    assert fake.asked("A") == ["7." + "0." * 23 + "8.b.d.0.1.0.0.2.bl.test"]


def test_without_resolver_dns_lists_are_dunno(harness: Any) -> None:
    h = harness({Stage.CLIENT: ["reject_rbl_client bl.test", "reject_rhsbl_sender rhs.test"]})
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT
    assert h.engine.not_implemented == ()


# -- replies --------------------------------------------------------------------------------


def test_rbl_reply_maps_template_and_macros(
    harness: Any, fake: FakeResolver, dict_table: Any
) -> None:
    table = dict_table(
        {
            "txt.test": "$rbl_code 5.7.9 ${rbl_class}: $rbl_what via $rbl_domain"
            " (${rbl_txt?reason: $rbl_txt}${rbl_reason:no reason}) to $recipient from $client"
        }
    )
    h = make(
        harness,
        fake,
        Stage.RECIPIENT,
        ["reject_rbl_client txt.test"],
        rbl_reply_maps=(table,),
        maps_rbl_reject_code=550,
    )
    reply = h.rcpt("user@example.com").reply
    assert reply == Reply(
        550,
        "5.7.9",
        f"Client host: {CLIENT} via txt.test (reason: see https://bl/?7 / second) "
        f"to user@example.com from unknown[{CLIENT}]",
    )
    assert table.lookups == ["txt.test"]


def test_rbl_reply_maps_key_is_the_argument_as_written(
    harness: Any, fake: FakeResolver, dict_table: Any
) -> None:
    table = dict_table({"bl.test=127.0.0.2": "451 4.7.1 Come back ${rbl_txt?{later}:{soon}}"})
    h = make(
        harness,
        fake,
        Stage.CLIENT,
        ["reject_rbl_client bl.test=127.0.0.2"],
        rbl_reply_maps=(table,),
    )
    decision = h.rcpt("user@example.com")
    assert decision.verdict is Verdict.DEFER
    assert decision.reply == Reply(451, "4.7.1", "Come back soon")


def test_bad_templates_fall_back_or_defer(
    harness: Any, fake: FakeResolver, dict_table: Any
) -> None:
    bad = dict_table({"bl.test": "554 ${unclosed"})
    h = make(harness, fake, Stage.CLIENT, ["reject_rbl_client bl.test"], rbl_reply_maps=(bad,))
    assert h.rcpt("user@example.com").reply.text.startswith("Service unavailable; Client host")
    assert any("bad rbl reply template" in w for w in h.warnings)
    h = make(
        harness,
        fake,
        Stage.CLIENT,
        ["reject_rbl_client bl.test"],
        default_rbl_reply="250 fine $unknown_macro_name",
    )
    assert h.rcpt("user@example.com").reply == Reply(450, "4.7.1", "Service unavailable")
    h = make(
        harness,
        fake,
        Stage.CLIENT,
        ["reject_rbl_client bl.test"],
        default_rbl_reply="250 $rbl_what is fine",
    )
    assert h.rcpt("user@example.com").reply == Reply(450, "4.7.1", "Service unavailable")
    assert any("rbl response code configuration error" in w for w in h.warnings)


@given(st.text(alphabet=st.sampled_from("$ {}()?:ab\r\n"), max_size=12))
def test_values_are_never_expanded(value: str) -> None:
    out = dnsbl.expand("<$v>", {"v": value}.get)
    assert out == "<" + value.replace("\r", "_").replace("\n", "_") + ">"


@given(st.text(max_size=30))
def test_expand_never_crashes_on_any_template(template: str) -> None:
    try:
        dnsbl.expand(template, {"a": "x", "b": ""}.get)
    except dnsbl.TemplateError:
        pass


# -- RHS lists -------------------------------------------------------------------------------


def test_rhsbl_sender_helo_recipient(harness: Any, fake: FakeResolver) -> None:
    h = make(harness, fake, Stage.RECIPIENT, ["reject_rhsbl_sender rhs.test"])
    assert h.rcpt("user@example.com", sender="bad@sender.test").reply.text == (
        "Service unavailable; Sender address [bad@sender.test] blocked using rhs.test"
    )
    assert h.rcpt("user@example.com", sender="").verdict is Verdict.PERMIT  # null sender

    h = make(harness, fake, Stage.HELO, ["reject_rhsbl_helo rhs.test"])
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT  # no HELO yet
    h.ctx.set_helo("helo.example")
    assert h.rcpt("user@example.com").reply.text.endswith(
        "Helo command [helo.example] blocked using rhs.test"
    )

    h = make(harness, fake, Stage.RECIPIENT, ["reject_rhsbl_recipient rhs.test"])
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT
    fake.set("example.com.rhs.test", "A", ["127.0.0.2"])
    assert "Recipient address [user@example.com]" in h.rcpt("user@example.com").reply.text


def test_rhsbl_client_names(harness: Any, fake: FakeResolver) -> None:
    h = make(harness, fake, Stage.CLIENT, ["reject_rhsbl_client rhs.test"])
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT  # name unknown: skipped
    assert fake.asked("A") == []
    h = make(harness, fake, Stage.CLIENT, ["reject_rhsbl_reverse_client rhs.test"])
    h.ctx.reverse_client_name = "ptr.example"
    assert h.rcpt("user@example.com").reply.text.endswith(
        "Unverified Client host [ptr.example] blocked using rhs.test"
    )
    h = make(harness, fake, Stage.CLIENT, ["reject_rhsbl_client rhs.test"])
    h.ctx.client_name = "ptr.example"
    assert "Client host [ptr.example]" in h.rcpt("user@example.com").reply.text


# -- allowlists ------------------------------------------------------------------------------


def test_dnswl_permits_only_authorized_destinations(harness: Any, fake: FakeResolver) -> None:
    h = harness(
        {
            Stage.CLIENT: ["permit_dnswl_client wl.test", "reject_rbl_client bl.test"],
            Stage.RELAY: ["reject_unauth_destination"],
        },
        client=CLIENT,
        resolver=fake,
    )
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT
    # Allowlisted, but not for relaying: the DNSBL and relay control still apply.
    refused = h.rcpt("user@elsewhere.test")
    assert refused.verdict is Verdict.REJECT and "blocked using bl.test" in refused.reply.text


def test_dnswl_pattern_and_failures(harness: Any, fake: FakeResolver) -> None:
    for arg, verdict in (
        ("wl.test=127.0.[0..255].[0..255]", Verdict.PERMIT),
        ("wl.test=127.0.10.2", Verdict.REJECT),
        ("down.test", Verdict.REJECT),
        ("oops.test", Verdict.REJECT),
    ):
        h = make(harness, fake, Stage.CLIENT, ["permit_dnswl_client", arg, "reject"])
        assert h.rcpt("user@example.com").verdict is verdict, arg


def test_rhswl_client(harness: Any, fake: FakeResolver) -> None:
    h = make(harness, fake, Stage.CLIENT, ["permit_rhswl_client rhswl.test", "reject"])
    assert h.rcpt("user@example.com").verdict is Verdict.REJECT
    h.ctx.client_name = "good.example"
    h.ctx.list_cache.clear()
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT


def test_reject_maps_rbl_uses_maps_rbl_domains(harness: Any, fake: FakeResolver) -> None:
    h = make(
        harness, fake, Stage.CLIENT, ["reject_maps_rbl"], maps_rbl_domains=("clean.test", "bl.test")
    )
    decision = h.rcpt("user@example.com")
    assert decision.restriction == "reject_maps_rbl"
    assert decision.reply.text.endswith("blocked using bl.test")


# -- parallel lookups, ordered verdicts -------------------------------------------------------


class GatedResolver(FakeResolver):
    """FakeResolver whose A answers wait for a gate: shows which lookups overlap."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = 0
        self.most_waiting = 0
        self.gate: asyncio.Event | None = None

    async def a(self, name: str) -> Result[str]:
        if self.gate is None:
            self.gate = asyncio.Event()
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        if self.waiting >= 3:
            self.gate.set()
        await asyncio.wait_for(self.gate.wait(), 1)
        self.waiting -= 1
        return await super().a(name)


def test_one_lists_lookups_run_together_and_first_match_wins(harness: Any) -> None:
    fake = GatedResolver(zones(**{f"{REVERSED}.second.test": {"A": ["127.0.0.4"]}}))
    steps = ("clean.test", "second.test", "bl.test")
    items = [w for d in steps for w in ("reject_rbl_client", d)]
    plan = ((Stage.RECIPIENT, tuple(("reject_rbl_client", d) for d in steps)),)
    h = make(harness, fake, Stage.RECIPIENT, items, dnsxl_plan=plan)
    decision = h.rcpt("user@example.com")
    assert fake.most_waiting == 3  # all three in flight before any answer
    assert decision.reply.text.endswith("blocked using second.test")


def test_dnsxl_plan_comes_from_the_lists(tmp_path: Any) -> None:
    loaded = load_texts(
        "smtpd_client_restrictions = reject_rbl_client a.test, permit_dnswl_client w.test\n"
        "smtpd_recipient_restrictions = reject_unauth_destination,\n"
        "  reject_rhsbl_sender r.test=127.0.0.2, reject_rbl_client b.test\n",
        None,
        main_file="main.cf",
        master_file="master.cf",
        config_dir=tmp_path,
    )
    params = PolicyParams.from_settings(loaded.settings)
    assert dict(params.dnsxl_plan) == {
        Stage.CLIENT: (("reject_rbl_client", "a.test"), ("permit_dnswl_client", "w.test")),
        Stage.RECIPIENT: (
            ("reject_rhsbl_sender", "r.test=127.0.0.2"),
            ("reject_rbl_client", "b.test"),
        ),
    }
    assert params.default_rbl_reply.startswith("$rbl_code Service unavailable;")
    assert params.unknown_address_tempfail_action == "defer_if_permit"
