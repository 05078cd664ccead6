"""The inbound pipeline (InboundAuth.check) on the fake resolver, with real pyspf/dkimpy."""

from __future__ import annotations

import asyncio
from typing import Any

import dkim
import pytest

from ironpost.auth.inbound import InboundAuth, InboundVerdict, dmarc_enforced
from ironpost.auth.results import QUARANTINE_FIELD
from ironpost.auth.types import ArcResult, SpfResult
from ironpost.policy import Stage
from ironpost.testing.dkim import rsa_key_and_record
from ironpost.testing.dns import FakeResolver

AUTHSERV = "mx.example.org"


key = rsa_key_and_record  # one key pair per process


def zones() -> dict[str, dict[str, Any]]:
    return {
        "example.com": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
        "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject"]},
        "_dmarc.quar.test": {"TXT": ["v=DMARC1; p=quarantine"]},
        "sel._domainkey.example.com": {"TXT": [key()[1]]},
    }


def message(from_: str = "alice@example.com", extra: bytes = b"", sign: bool = False) -> bytes:
    msg = (
        extra
        + (
            f"From: Alice <{from_}>\r\nTo: bob@example.org\r\nSubject: hi\r\n"
            "Message-ID: <1@example.com>\r\n\r\nHello.\r\n"
        ).encode()
    )
    if sign:
        msg = dkim.sign(msg, b"sel", b"example.com", key()[0], include_headers=[b"from"]) + msg
    return msg


def check(
    content: bytes,
    *,
    client: str = "192.0.2.10",
    sender: str = "alice@example.com",
    spf: SpfResult | None = None,
    skip_dmarc: bool = False,
    resolver: FakeResolver | None = None,
    **kw: Any,
) -> InboundVerdict:
    async def go() -> InboundVerdict:
        auth = InboundAuth(resolver or FakeResolver(zones()), AUTHSERV, **kw)
        return await auth.check(
            content,
            client_address=client,
            helo="client.example.net",
            sender=sender,
            spf=spf,
            skip_dmarc=skip_dmarc,
        )

    return asyncio.run(go())


def test_aligned_spf_passes_and_headers_are_built() -> None:
    content = message()
    verdict = check(content, enforce_dmarc=True)
    assert verdict.reply is None and not verdict.quarantine
    assert verdict.content is content
    assert verdict.results.spf.result == "pass"
    assert verdict.results.dmarc.result == "pass"
    headers = verdict.headers.decode()
    assert headers.startswith(f"Authentication-Results: {AUTHSERV};\r\n")
    assert "spf=pass smtp.mailfrom=alice@example.com" in headers
    assert "dmarc=pass" in headers and "header.from=example.com" in headers
    assert "\r\nReceived-SPF: pass (" in headers
    assert headers.endswith("\r\n")


def test_dkim_pass_aligns_when_spf_fails() -> None:
    verdict = check(message(sign=True), client="203.0.113.5", enforce_dmarc=True)
    assert verdict.results.spf.result == "fail"
    assert [r.result for r in verdict.results.dkim] == ["pass"]
    assert verdict.results.dmarc.result == "pass" and verdict.results.dmarc.dkim_aligned
    assert verdict.reply is None
    assert b"dkim=pass header.d=example.com header.s=sel" in verdict.headers


def test_dmarc_reject_gives_550_5_7_1_only_when_enforced() -> None:
    verdict = check(message(), client="203.0.113.5", enforce_dmarc=True)
    assert verdict.results.dmarc.disposition == "reject"
    assert verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (550, "5.7.1")
    assert "example.com" in str(verdict.reply.text)
    monitor = check(message(), client="203.0.113.5", enforce_dmarc=False)
    assert monitor.reply is None and not monitor.quarantine
    assert b"dmarc=fail (p=reject dis=reject;" in monitor.headers


def test_dmarc_reject_code_and_text_are_configurable() -> None:
    verdict = check(
        message(),
        client="203.0.113.5",
        enforce_dmarc=True,
        dmarc_reject_code=554,
        dmarc_reject_text="Go away, forger of",
    )
    assert verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.enhanced) == (554, "5.7.1")
    assert verdict.reply.text == "Go away, forger of example.com"


def test_quarantine_adds_the_marker_after_authentication_results() -> None:
    verdict = check(message("eve@quar.test"), sender="eve@quar.test", enforce_dmarc=True)
    assert verdict.quarantine and verdict.reply is None
    lines = verdict.headers.split(b"\r\n")
    marker = lines.index(QUARANTINE_FIELD.rstrip(b"\r\n"))
    assert lines[0].startswith(b"Authentication-Results:")
    assert all(line.startswith(b"\t") for line in lines[1:marker])
    assert lines[marker + 1].startswith(b"Received-SPF:")
    header_only = check(
        message("eve@quar.test"),
        sender="eve@quar.test",
        enforce_dmarc=True,
        quarantine_action="header",
    )
    assert header_only.quarantine and QUARANTINE_FIELD not in header_only.headers


def test_pct_sampling_uses_rand() -> None:
    resolver = FakeResolver(zones())
    resolver.set("_dmarc.example.com", "TXT", ["v=DMARC1; p=reject; pct=10"])
    out = check(
        message(), client="203.0.113.5", enforce_dmarc=True, resolver=resolver, rand=lambda: 0.5
    )
    assert out.reply is None and out.quarantine  # outside pct: reject → quarantine


def test_skip_dmarc_never_refuses() -> None:
    verdict = check(message(), client="203.0.113.5", enforce_dmarc=True, skip_dmarc=True)
    assert verdict.reply is None and verdict.results.dmarc is None
    assert b"dmarc=" not in verdict.headers


def test_given_spf_result_is_not_recomputed() -> None:
    resolver = FakeResolver(zones())
    given = SpfResult("pass", "example.com", "mailfrom", "203.0.113.5")
    verdict = check(message(), client="203.0.113.5", spf=given, resolver=resolver)
    assert verdict.results.spf is given
    assert ("TXT", "example.com") not in resolver.calls


def test_forged_results_and_marker_are_removed_from_content() -> None:
    extra = (
        b"Authentication-Results: MX.example.org; dmarc=pass header.from=example.com\r\n"
        b"X-Ironpost-Quarantine: dmarc\r\n"
        b"Authentication-Results: upstream.test; spf=pass\r\n"
    )
    verdict = check(message(extra=extra))
    assert b"MX.example.org" not in verdict.content
    assert b"X-Ironpost-Quarantine" not in verdict.content
    assert b"upstream.test" in verdict.content


def test_no_from_is_dmarc_permerror_without_action() -> None:
    content = b"To: bob@example.org\r\nSubject: x\r\n\r\nbody\r\n"
    verdict = check(content, client="203.0.113.5", enforce_dmarc=True)
    assert verdict.results.dmarc.result == "permerror" and verdict.reply is None


def test_multiple_from_domains_use_the_strictest() -> None:
    content = b"From: a@other.test, b@example.com\r\nSubject: x\r\n\r\nbody\r\n"
    verdict = check(content, client="203.0.113.5", sender="a@other.test", enforce_dmarc=True)
    assert verdict.results.dmarc.from_domain == "example.com"
    assert verdict.reply is not None


def test_dns_failure_never_rejects() -> None:
    resolver = FakeResolver(zones(), tempfail=["_dmarc.example.com", "example.com"])
    verdict = check(message(), client="203.0.113.5", enforce_dmarc=True, resolver=resolver)
    assert verdict.results.spf.result == "temperror"
    assert verdict.results.dmarc.result == "temperror"
    assert verdict.reply is None and not verdict.quarantine


def test_crashing_verifiers_are_contained() -> None:
    def boom(*args: Any, **kw: Any) -> Any:
        raise RuntimeError("bug")

    verdict = check(
        message(extra=b"ARC-Seal: i=1; x\r\n"),
        verify_dkim=boom,
        verify_arc=boom,
    )
    assert [r.result for r in verdict.results.dkim] == ["temperror"]
    assert verdict.results.arc == ArcResult("fail", reason="verifier: RuntimeError")


def test_without_verifiers_dkim_and_arc_are_absent() -> None:
    verdict = check(message(sign=True), verify_dkim=None, verify_arc=None)
    assert verdict.results.dkim == () and verdict.results.arc is None
    assert b"dkim=none" in verdict.headers and b"\tarc=" not in verdict.headers


class FakeSettings:
    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def text(self, name: str) -> str:
        return str(self.values[name])

    def integer(self, name: str) -> int:
        return int(self.values[name])

    def boolean(self, name: str) -> bool:
        return bool(self.values[name])

    def words(self, name: str) -> tuple[str, ...]:
        return tuple(self.values[name].replace(",", " ").split())

    def seconds(self, name: str) -> float:
        return float(self.values[name])


@pytest.mark.parametrize(
    ("lists", "enforced"),
    [
        ({Stage.RECIPIENT.value: "permit_mynetworks, reject_unauth_destination"}, False),
        ({Stage.END_OF_DATA.value: "reject_dmarc_policy"}, True),
        ({Stage.RECIPIENT.value: "reject_unauth_destination reject_dmarc_policy"}, True),
    ],
)
def test_from_settings(lists: dict[str, str], enforced: bool) -> None:
    values: dict[str, Any] = {stage.value: "" for stage in Stage}
    values.update(lists)
    values.update(myhostname="host.example", authserv_id="", dmarc_reject_code=451)
    auth = InboundAuth.from_settings(FakeSettings(values), FakeResolver())
    assert dmarc_enforced(FakeSettings(values)) is enforced
    assert auth.enforce_dmarc is enforced
    assert auth.authserv_id == "host.example"  # empty authserv_id: $myhostname
    assert auth.dmarc_reject_code == 451
    assert auth.quarantine_action == "junk"  # parameter absent: the default
