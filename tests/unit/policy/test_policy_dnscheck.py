"""The reject_unknown_* family (policy.dnscheck) with FakeResolver zones: Postfix's
texts and codes, and never a 5xx on a DNS TEMPFAIL."""

from __future__ import annotations

from typing import Any

import pytest

from ironpost.policy import PolicyParams, Stage, Verdict
from ironpost.protocol.replies import Reply
from ironpost.testing.dns import FakeResolver

CLIENT = "198.51.100.7"

ZONES: dict[str, dict[str, list[Any]]] = {
    "mx.test": {"MX": [(10, "mail.mx.test")]},
    "a-only.test": {"A": ["192.0.2.1"]},
    "aaaa-only.test": {"AAAA": ["2001:db8::1"]},
    "nullmx.test": {"MX": [(0, ".")]},
    "txt-only.test": {"TXT": ["v=spf1 -all"]},
    "helo.example": {"A": ["192.0.2.9"]},
    "mx-helo.example": {"MX": [(10, "x.example")]},
    "null-helo.example": {"MX": [(0, ".")]},
    "sub.half.test": {"A": ["192.0.2.3"]},  # half.test: an empty non-terminal (NODATA)
}


# The domain check runs before relay control, so remote domains reach it.
RCPT_LISTS = {
    Stage.RELAY: [],
    Stage.RECIPIENT: ["reject_unknown_recipient_domain", "reject_unauth_destination"],
}


@pytest.fixture
def fake() -> FakeResolver:
    return FakeResolver(ZONES, tempfail=["down.test", "down.example"])


def build(
    harness: Any, fake: FakeResolver | None, stage: Stage, items: list[str], **params: Any
) -> Any:
    return harness({stage: items}, client=CLIENT, resolver=fake, params=PolicyParams(**params))


# -- client names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "reply"),
    [
        ("ok", 450, None),
        (
            "unknown",
            450,
            Reply(450, "4.7.25", f"Client host rejected: cannot find your hostname, [{CLIENT}]"),
        ),
        (
            "unknown",
            550,
            Reply(550, "5.7.25", f"Client host rejected: cannot find your hostname, [{CLIENT}]"),
        ),
        (
            "tempfail",
            550,
            Reply(450, "4.7.25", f"Client host rejected: cannot find your hostname, [{CLIENT}]"),
        ),
    ],
)
def test_reject_unknown_client_hostname(
    harness: Any, status: str, code: int, reply: Reply | None
) -> None:
    for name in ("reject_unknown_client_hostname", "reject_unknown_client"):
        h = build(harness, None, Stage.CLIENT, [name], unknown_client_reject_code=code)
        h.ctx.client_name_status = status
        decision = h.rcpt("user@example.com")
        assert decision.reply == reply
        if reply is not None:
            assert decision.verdict is (Verdict.DEFER if reply.code < 500 else Verdict.REJECT)


def test_reject_unknown_reverse_client_hostname(harness: Any) -> None:
    h = build(
        harness,
        None,
        Stage.CLIENT,
        ["reject_unknown_reverse_client_hostname"],
        unknown_client_reject_code=550,
    )
    h.ctx.client_name_status = "unknown"  # no FCrDNS, but a PTR exists: passes
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT
    text = f"Client host rejected: cannot find your reverse hostname, [{CLIENT}]"
    h.ctx.reverse_client_name_status = "unknown"
    h.ctx.list_cache.clear()
    assert h.rcpt("user@example.com").reply == Reply(550, "5.7.1", text)
    h.ctx.reverse_client_name_status = "tempfail"
    h.ctx.list_cache.clear()
    assert h.rcpt("user@example.com").reply == Reply(450, "4.7.1", text)


def test_reject_unknown_forward_client_hostname(harness: Any) -> None:
    h = build(harness, None, Stage.CLIENT, ["reject_unknown_forward_client_hostname"])
    h.ctx.client_name_status = h.ctx.reverse_client_name_status = "unknown"
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT  # no PTR at all
    h.ctx.reverse_client_name_status = "ok"
    h.ctx.list_cache.clear()
    assert h.rcpt("user@example.com").reply.code == 450


# -- HELO ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "helo", ["helo.example", "mx-helo.example", "null-helo.example", "[192.0.2.1]", "HELO.example."]
)
def test_known_helo_names_pass(harness: Any, fake: FakeResolver, helo: str) -> None:
    h = build(harness, fake, Stage.HELO, ["reject_unknown_helo_hostname"])
    h.ctx.set_helo(helo)
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT
    if helo.startswith("["):
        assert fake.calls == []


def test_unknown_helo_name(harness: Any, fake: FakeResolver) -> None:
    h = build(harness, fake, Stage.HELO, ["reject_unknown_hostname"])
    h.ctx.set_helo("nowhere.example")
    assert h.rcpt("user@example.com").reply == Reply(
        450, "4.7.1", "<nowhere.example>: Helo command rejected: Host not found"
    )
    assert "MX" not in {t for t, _ in fake.calls}  # NXDOMAIN for A and AAAA: no MX asked
    h = build(
        harness,
        fake,
        Stage.HELO,
        ["reject_unknown_helo_hostname"],
        unknown_hostname_reject_code=550,
    )
    h.ctx.set_helo("txt-only.test")
    assert h.rcpt("user@example.com").reply == Reply(
        550, "5.7.1", "<txt-only.test>: Helo command rejected: Host not found"
    )


def test_helo_tempfail_is_450_whatever_the_code(harness: Any, fake: FakeResolver) -> None:
    h = build(
        harness,
        fake,
        Stage.HELO,
        ["reject_unknown_helo_hostname"],
        unknown_hostname_reject_code=554,
        unknown_helo_hostname_tempfail_action="defer",
    )
    h.ctx.set_helo("host.down.example")
    decision = h.rcpt("user@example.com")
    assert decision.verdict is Verdict.DEFER
    assert decision.reply == Reply(
        450, "4.7.1", "<host.down.example>: Helo command rejected: Host not found"
    )


def test_invalid_helo_literal(harness: Any, fake: FakeResolver) -> None:
    h = build(harness, fake, Stage.HELO, ["reject_unknown_helo_hostname"])
    h.ctx.set_helo("[300.1.1.1]")
    assert h.rcpt("user@example.com").reply == Reply(
        501, "5.5.2", "<[300.1.1.1]>: Helo command rejected: invalid ip address"
    )


# -- sender and recipient domains -------------------------------------------------------------


@pytest.mark.parametrize("domain", ["mx.test", "a-only.test", "aaaa-only.test", "sub.half.test"])
def test_existing_sender_domains_pass(harness: Any, fake: FakeResolver, domain: str) -> None:
    h = build(harness, fake, Stage.SENDER, ["reject_unknown_sender_domain"])
    assert h.rcpt("user@example.com", sender=f"s@{domain}").verdict is Verdict.PERMIT


def test_unknown_sender_domain(harness: Any, fake: FakeResolver) -> None:
    h = build(harness, fake, Stage.SENDER, ["reject_unknown_sender_domain"])
    decision = h.rcpt("user@example.com", sender="x@nowhere.test")
    assert decision.verdict is Verdict.DEFER  # unknown_address_reject_code = 450
    assert decision.reply == Reply(
        450, "4.1.8", "<x@nowhere.test>: Sender address rejected: Domain not found"
    )
    assert fake.calls == [("MX", "nowhere.test")]  # NXDOMAIN: no A/AAAA asked
    h = build(
        harness,
        fake,
        Stage.RECIPIENT,
        ["reject_unknown_sender_domain"],
        unknown_address_reject_code=550,
    )
    assert h.rcpt("user@example.com", sender="x@half.test").reply == Reply(
        550, "5.1.8", "<x@half.test>: Sender address rejected: Domain not found"
    )


def test_null_mx(harness: Any, fake: FakeResolver) -> None:
    h = build(harness, fake, Stage.SENDER, ["reject_unknown_sender_domain"])
    assert h.rcpt("user@example.com", sender="x@nullmx.test").reply == Reply(
        550,
        "5.7.27",
        "<x@nullmx.test>: Sender address rejected: Domain nullmx.test does not accept mail "
        "(nullMX)",
    )
    h = harness(RCPT_LISTS, client=CLIENT, resolver=fake)
    assert h.rcpt("r@nullmx.test").reply == Reply(
        556,
        "5.1.10",
        "<r@nullmx.test>: Recipient address rejected: Domain nullmx.test does not accept mail "
        "(nullMX)",
    )


def test_domain_tempfail_is_never_5xx(harness: Any, fake: FakeResolver) -> None:
    h = build(
        harness,
        fake,
        Stage.SENDER,
        ["reject_unknown_sender_domain"],
        unknown_address_reject_code=550,
    )
    decision = h.rcpt("user@example.com", sender="x@a.down.test")
    assert decision.verdict is Verdict.DEFER
    assert decision.reply == Reply(
        450, "4.1.8", "<x@a.down.test>: Sender address rejected: Domain not found"
    )


def test_unknown_recipient_domain(harness: Any, fake: FakeResolver) -> None:
    h = harness(RCPT_LISTS, client=CLIENT, resolver=fake)
    assert h.rcpt("r@nowhere.test").reply == Reply(
        450, "4.1.2", "<r@nowhere.test>: Recipient address rejected: Domain not found"
    )
    # mx.test exists: the domain check passes it on to relay control.
    assert h.rcpt("r@mx.test").restriction == "reject_unauth_destination"


def test_own_domains_literals_and_null_sender_are_not_looked_up(
    harness: Any, fake: FakeResolver
) -> None:
    h = build(
        harness,
        fake,
        Stage.RECIPIENT,
        ["reject_unknown_sender_domain", "reject_unknown_recipient_domain"],
    )
    for sender, rcpt in (
        ("", "user@example.com"),
        ("a@vmail.test", "x@alias.test"),
        ("a@[192.0.2.1]", "postmaster@mail.example.com"),
    ):
        decision = h.rcpt(rcpt, sender=sender)
        assert not decision.restriction.startswith("reject_unknown"), decision
    assert fake.calls == []


def test_without_resolver_everything_is_dunno(harness: Any) -> None:
    h = build(
        harness,
        None,
        Stage.RECIPIENT,
        [
            "reject_unknown_sender_domain",
            "reject_unknown_recipient_domain",
            "reject_unknown_helo_hostname",
        ],
    )
    h.ctx.set_helo("nowhere.example")
    assert h.rcpt("user@example.com", sender="x@nowhere.test").verdict is Verdict.PERMIT
