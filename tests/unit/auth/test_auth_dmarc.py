"""DMARC (ironpost.auth.dmarc): golden cases on the fake resolver, record parsing, From."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.auth.dmarc import (
    aligned,
    evaluate_dmarc,
    from_domains,
    organizational_domain,
    parse_record,
    worst,
)
from ironpost.auth.types import DkimResult, DmarcResult, SpfResult
from ironpost.testing.dns import FakeResolver

ZONES: dict[str, dict[str, Any]] = {
    "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.com"]},
    "_dmarc.strict.example": {"TXT": ["v=DMARC1; p=reject; adkim=s; aspf=s"]},
    "_dmarc.half.example": {"TXT": ["v=DMARC1; p=reject; pct=50"]},
    "_dmarc.quar.example": {"TXT": ["v=DMARC1; p=quarantine; pct=20"]},
    "_dmarc.monitor.example": {"TXT": ["v=DMARC1; p=none"]},
    "_dmarc.two.example": {"TXT": ["v=DMARC1; p=reject", "v=DMARC1; p=none"]},
    "_dmarc.own.example.com": {"TXT": ["v=DMARC1; p=none"]},
    "_dmarc.example.co.uk": {"TXT": ["v=DMARC1; p=reject"]},
}


def spf(result: str, domain: str) -> SpfResult:
    return SpfResult(result, domain, "mailfrom", "192.0.2.1")


def dkim(result: str, domain: str) -> DkimResult:
    return DkimResult(result, domain, "sel")


def evaluate(
    from_domain: str,
    spf_result: SpfResult | None = None,
    dkim_results: tuple[DkimResult, ...] = (),
    rand: float = 0.0,
    resolver: FakeResolver | None = None,
) -> DmarcResult:
    resolver = resolver or FakeResolver(ZONES, tempfail=["_dmarc.broken.example"])
    return asyncio.run(
        evaluate_dmarc(resolver, from_domain, spf_result, dkim_results, rand=lambda: rand)
    )


# --- golden cases ------------------------------------------------------------------------

GOLDEN = [
    # (name, from, spf, dkim, rand, result, policy, disposition, spf_aligned, dkim_aligned)
    (
        "spf aligned relaxed",
        "example.com",
        spf("pass", "bounce.example.com"),
        (),
        0,
        "pass",
        "reject",
        "none",
        True,
        False,
    ),
    (
        "dkim aligned relaxed",
        "example.com",
        spf("pass", "other.test"),
        (dkim("pass", "mail.example.com"),),
        0,
        "pass",
        "reject",
        "none",
        False,
        True,
    ),
    (
        "unaligned",
        "example.com",
        spf("pass", "other.test"),
        (dkim("pass", "other.test"),),
        0,
        "fail",
        "reject",
        "reject",
        False,
        False,
    ),
    (
        "dkim fail is not alignment",
        "example.com",
        None,
        (dkim("fail", "example.com"),),
        0,
        "fail",
        "reject",
        "reject",
        False,
        False,
    ),
    (
        "spf fail is not alignment",
        "example.com",
        spf("fail", "example.com"),
        (),
        0,
        "fail",
        "reject",
        "reject",
        False,
        False,
    ),
    (
        "subdomain uses sp",
        "news.example.com",
        spf("pass", "other.test"),
        (),
        0,
        "fail",
        "quarantine",
        "quarantine",
        False,
        False,
    ),
    (
        "subdomain own record uses p",
        "own.example.com",
        None,
        (),
        0,
        "fail",
        "none",
        "none",
        False,
        False,
    ),
    (
        "strict spf unaligned",
        "strict.example",
        spf("pass", "bounce.strict.example"),
        (),
        0,
        "fail",
        "reject",
        "reject",
        False,
        False,
    ),
    (
        "strict dkim aligned",
        "strict.example",
        None,
        (dkim("pass", "strict.example"),),
        0,
        "pass",
        "reject",
        "none",
        False,
        True,
    ),
    ("pct sampled in", "half.example", None, (), 0.49, "fail", "reject", "reject", False, False),
    (
        "pct sampled out: reject becomes quarantine",
        "half.example",
        None,
        (),
        0.5,
        "fail",
        "reject",
        "quarantine",
        False,
        False,
    ),
    (
        "pct sampled out: quarantine becomes none",
        "quar.example",
        None,
        (),
        0.3,
        "fail",
        "quarantine",
        "none",
        False,
        False,
    ),
    ("p=none monitors only", "monitor.example", None, (), 0, "fail", "none", "none", False, False),
    ("no record", "norecord.example", None, (), 0, "none", "none", "none", False, False),
    ("two records is no record", "two.example", None, (), 0, "none", "none", "none", False, False),
    (
        "org domain under a multi-label suffix",
        "a.b.example.co.uk",
        None,
        (),
        0,
        "fail",
        "reject",
        "reject",
        False,
        False,
    ),
]


@pytest.mark.parametrize(
    ("frm", "spf_result", "dkim_results", "rand", "result", "policy", "disposition", "sa", "da"),
    [case[1:] for case in GOLDEN],
    ids=[case[0] for case in GOLDEN],
)
def test_golden(
    frm: str,
    spf_result: SpfResult | None,
    dkim_results: tuple[DkimResult, ...],
    rand: float,
    result: str,
    policy: str,
    disposition: str,
    sa: bool,
    da: bool,
) -> None:
    got = evaluate(frm, spf_result, dkim_results, rand)
    assert (got.result, got.policy, got.disposition) == (result, policy, disposition)
    assert (got.spf_aligned, got.dkim_aligned) == (sa, da)
    assert got.from_domain == frm


def test_discovery_asks_from_domain_then_org_domain() -> None:
    resolver = FakeResolver(ZONES)
    evaluate("a.b.example.co.uk", resolver=resolver)
    assert resolver.asked("TXT") == ["_dmarc.a.b.example.co.uk", "_dmarc.example.co.uk"]
    resolver = FakeResolver(ZONES)
    evaluate("example.com", resolver=resolver)
    assert resolver.asked("TXT") == ["_dmarc.example.com"]


def test_dns_failure_is_temperror_never_reject() -> None:
    got = evaluate("broken.example", None, ())
    assert (got.result, got.disposition) == ("temperror", "none")


def test_temporary_auth_error_on_aligned_identifier_is_temperror() -> None:
    got = evaluate("example.com", spf("temperror", "example.com"), (dkim("fail", "x.test"),))
    assert (got.result, got.disposition) == ("temperror", "none")
    got = evaluate("example.com", None, (dkim("temperror", "mail.example.com"),))
    assert (got.result, got.disposition) == ("temperror", "none")
    # An unrelated domain's temporary error does not save a failing message.
    got = evaluate("example.com", spf("temperror", "other.test"), ())
    assert got.disposition == "reject"


def test_unusable_from_domain_is_permerror() -> None:
    assert evaluate("").result == "permerror"
    assert evaluate("localhost").result == "permerror"


# --- parsing -----------------------------------------------------------------------------


def test_parse_record_tags_and_defaults() -> None:
    record = parse_record("v=DMARC1;p=Quarantine; sp=bogus; pct=250; adkim=s; aspf=x")
    assert record is not None
    assert (record.p, record.sp, record.pct, record.adkim, record.aspf) == (
        "quarantine",
        "quarantine",
        100,
        "s",
        "r",
    )
    assert parse_record("v=DMARC1; p=none; pct=-5").pct == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text", ["v=spf1 -all", "p=reject; v=DMARC1", "v=DMARC2; p=reject", "v=DMARC1; p=bogus", ""]
)
def test_parse_record_rejects_unusable(text: str) -> None:
    assert parse_record(text) is None


def test_invalid_p_with_rua_is_p_none() -> None:
    record = parse_record("v=DMARC1; p=bogus; rua=mailto:x@example.com")
    assert record is not None and record.p == "none"


@given(st.text(max_size=200))
def test_parse_record_never_raises(text: str) -> None:
    record = parse_record(text)
    if record is not None:
        assert record.p in ("none", "quarantine", "reject")
        assert 0 <= record.pct <= 100


def test_organizational_domain_and_alignment() -> None:
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("Mail.Example.COM.") == "example.com"
    assert organizational_domain("co.uk") == "co.uk"
    assert aligned("mail.example.com", "example.com", "r")
    assert not aligned("mail.example.com", "example.com", "s")
    assert not aligned("example.co.uk", "other.co.uk", "r")
    assert not aligned("", "example.com", "r")


def test_from_domains() -> None:
    msg = b"From: Alice <alice@Example.COM>\r\nTo: b@x.test\r\n\r\nbody From: x@evil.test\r\n"
    assert from_domains(msg) == ["example.com"]
    folded = b'Subject: hi\r\nFrom: "A, B" <a@one.test>,\r\n c@two.test, d@ONE.test\r\n\r\n'
    assert from_domains(folded) == ["one.test", "two.test"]
    assert from_domains(b"To: b@x.test\r\n\r\nFrom: a@b.test\r\n") is None
    assert from_domains(b"From: undisclosed\r\n\r\n") is None
    assert from_domains(b"From: a@one.test\nFrom: b@two.test\n\nbody") == ["one.test", "two.test"]


@given(st.binary(max_size=300))
def test_from_domains_never_raises(content: bytes) -> None:
    domains = from_domains(content)
    assert domains is None or all(domains)


def test_worst_prefers_the_strongest_disposition() -> None:
    passing = DmarcResult("pass", "a.test", "reject")
    failing = DmarcResult("fail", "b.test", "quarantine", "quarantine")
    rejecting = DmarcResult("fail", "c.test", "reject", "reject")
    assert worst([passing, failing]) is failing
    assert worst([failing, rejecting, passing]) is rejecting
    assert worst([]) is None
