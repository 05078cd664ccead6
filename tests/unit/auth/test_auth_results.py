"""Authentication-Results / Received-SPF builders and forged-field removal."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from ironpost.auth.results import (
    QUARANTINE_FIELD,
    authentication_results,
    authserv_id_of,
    header_end,
    header_fields,
    quote_value,
    received_spf,
    strip_forged,
)
from ironpost.auth.types import ArcResult, DkimResult, DmarcResult, InboundResults, SpfResult

SPF_PASS = SpfResult("pass", "example.com", "mailfrom", "192.0.2.1", "", "ip4:192.0.2.0/24")


def test_authentication_results_full() -> None:
    results = InboundResults(
        SPF_PASS,
        (DkimResult("pass", "example.com", "sel1", "rsa-sha256", "", "abcdEFGH"),),
        DmarcResult("pass", "example.com", "reject", "none", True, True),
        ArcResult("none"),
    )
    field = authentication_results("mail.example.org", results, sender="bob@example.com")
    assert field == (
        b"Authentication-Results: mail.example.org;\r\n"
        b"\tspf=pass smtp.mailfrom=bob@example.com;\r\n"
        b"\tdkim=pass header.d=example.com header.s=sel1 header.a=rsa-sha256 header.b=abcdEFGH;\r\n"
        b"\tdmarc=pass (p=reject dis=none) header.from=example.com;\r\n"
        b"\tarc=none\r\n"
    )


def test_authentication_results_helo_identity_failures_and_none() -> None:
    results = InboundResults(
        SpfResult("softfail", "helo.example", "helo", "192.0.2.1"),
        (DkimResult("fail", "x.test", "s", reason="body hash mismatch"),),
        DmarcResult("fail", "x.test", "quarantine", "quarantine", reason="no aligned identifier"),
    )
    field = authentication_results("mx.test", results).decode()
    assert "spf=softfail smtp.helo=helo.example;" in field
    assert 'dkim=fail reason="body hash mismatch" header.d=x.test header.s=s;' in field
    assert (
        "dmarc=fail (p=quarantine dis=quarantine; no aligned identifier) header.from=x.test"
        in field
    )
    assert authentication_results("mx.test", InboundResults()) == (
        b"Authentication-Results: mx.test; none\r\n"
    )
    only_spf = authentication_results("mx.test", InboundResults(SPF_PASS)).decode()
    assert "dkim=none" in only_spf
    assert "smtp.mailfrom=example.com" in only_spf  # no sender given: the domain


def test_hostile_values_cannot_break_the_header() -> None:
    results = InboundResults(
        SpfResult("pass", "example.com", "mailfrom", "192.0.2.1"),
        (DkimResult("fail", 'ev"il\r\nX-Injected: 1', "s;e l", reason="a)b(\\c\n"),),
    )
    field = authentication_results("mx.test", results, sender='"we ird"@example.com\r\nX: y')
    text = field.decode()
    assert "\r\nX-Injected" not in text and "\r\nX: y" not in text
    # Every line but continuation lines is the one field; every line ends CRLF.
    lines = field.split(b"\r\n")
    assert lines[-1] == b""
    assert all(line.startswith(b"\t") for line in lines[1:-1])
    assert "smtp.mailfrom=example.com" in text


def test_quote_value() -> None:
    assert quote_value("example.com") == "example.com"
    assert quote_value("two words") == '"two words"'
    assert quote_value('q"b\\') == '"q\\"b\\\\"'
    assert quote_value("a\r\nb") == "ab"


def test_received_spf() -> None:
    field = received_spf(
        SPF_PASS, receiver="mail.example.org", sender="bob@example.com", helo="mx.example.com"
    )
    assert field == (
        b"Received-SPF: pass (mail.example.org: domain of bob@example.com designates "
        b"192.0.2.1 as permitted sender)\r\n"
        b'\tclient-ip=192.0.2.1;\r\n\tenvelope-from="bob@example.com";\r\n\thelo=mx.example.com;\r\n'
        b"\treceiver=mail.example.org;\r\n\tidentity=mailfrom;\r\n"
        b'\tmechanism="ip4:192.0.2.0/24"\r\n'
    )
    error = SpfResult("permerror", "x.test", "helo", "2001:db8::1", "SPF Permanent Error: (x)")
    text = received_spf(error, receiver="r", sender="", helo="x.test").decode()
    assert text.startswith("Received-SPF: permerror (r: permanent error in processing domain")
    assert 'envelope-from=""' in text and "identity=helo" in text
    assert 'problem="SPF Permanent Error: (x)"' in text


# --- reading and stripping -----------------------------------------------------------------

MSG = (
    b"Received: from x\r\n"
    b"Authentication-Results: MAIL.example.org; spf=pass smtp.mailfrom=a@b.test\r\n"
    b"authentication-results: (comment) mail.example.org;\r\n\tdkim=pass header.d=b.test\r\n"
    b"Authentication-Results: other.example; spf=fail\r\n"
    b'Authentication-Results: "mail.example.org" 1; none\r\n'
    b"Authentication-Results: mail.example.org.evil; none\r\n"
    b"X-Ironpost-Quarantine: dmarc\r\n"
    b"Subject: hi\r\n"
    b"\r\n"
    b"Authentication-Results: mail.example.org; body text stays\r\n"
)


def test_strip_forged_removes_only_ours_and_the_marker() -> None:
    out = strip_forged(MSG, "mail.example.org")
    assert out == (
        b"Received: from x\r\n"
        b"Authentication-Results: other.example; spf=fail\r\n"
        b"Authentication-Results: mail.example.org.evil; none\r\n"
        b"Subject: hi\r\n"
        b"\r\n"
        b"Authentication-Results: mail.example.org; body text stays\r\n"
    )


def test_strip_forged_returns_same_object_when_clean() -> None:
    clean = b"From: a@b.test\r\nSubject: x\r\n\r\nAuthentication-Results: mail.example.org\r\n"
    assert strip_forged(clean, "mail.example.org") is clean
    theirs = b"Authentication-Results: other.test; none\r\n\r\nbody"
    assert strip_forged(theirs, "mail.example.org") is theirs


def test_strip_forged_bare_lf_and_no_body() -> None:
    msg = b"Authentication-Results: mx.test; none\nSubject: x\n\nbody\n"
    assert strip_forged(msg, "MX.test") == b"Subject: x\n\nbody\n"
    assert strip_forged(b"Authentication-Results: mx.test; none\r\n", "mx.test") == b""


def test_authserv_id_of() -> None:
    assert authserv_id_of(b"Authentication-Results: a.test; none\r\n") == "a.test"
    assert authserv_id_of(b"Authentication-Results:a.test;none") == "a.test"
    assert authserv_id_of(b"Authentication-Results: (x (y)) a.test 1; none") == "a.test"
    assert authserv_id_of(b'Authentication-Results: \r\n\t"a.test"; none') == "a.test"
    assert authserv_id_of(b"Authentication-Results: ") == ""


def test_header_end_and_fields() -> None:
    assert header_end(b"\r\nbody") == 0
    assert header_end(b"A: b\r\n\r\nc") == 6
    assert header_end(b"A: b") == 4
    fields = header_fields(b"A: 1\r\n 2\r\nB: 3\r\n\r\nC: 4\r\n")
    assert fields == [(b"a", b"A: 1\r\n 2\r\n"), (b"b", b"B: 3\r\n")]


@given(st.binary(max_size=400), st.sampled_from(["mx.test", "MX.TEST", "a.b"]))
def test_strip_forged_properties(content: bytes, authserv_id: str) -> None:
    out = strip_forged(content, authserv_id)
    end = header_end(content)
    # The body is never touched, and nothing but whole fields is removed.
    assert out.endswith(content[end:])
    assert len(out) <= len(content)
    for name, raw in header_fields(out):
        assert name != b"x-ironpost-quarantine"
        if name == b"authentication-results":
            assert authserv_id_of(raw).rstrip(".").casefold() != authserv_id.casefold()


@given(st.text(max_size=60), st.text(max_size=60), st.text(max_size=60))
def test_built_fields_have_no_stray_line_breaks(domain: str, reason: str, sender: str) -> None:
    results = InboundResults(
        SpfResult("fail", domain, "mailfrom", "192.0.2.1", reason, domain),
        (DkimResult("fail", domain, reason, reason, reason, reason),),
        DmarcResult("fail", domain, reason=reason),
    )
    for field in (
        authentication_results(domain or "x", results, sender=sender),
        received_spf(results.spf, receiver=domain, sender=sender, helo=reason),  # type: ignore[arg-type]
    ):
        assert field.endswith(b"\r\n")
        assert re.fullmatch(rb"[^\r\n]+(\r\n\t[^\r\n]+)*\r\n", field, re.DOTALL)
        assert QUARANTINE_FIELD not in field
