"""SPF (our SPF engine over FakeResolver), DKIM key comparison, DMARC, MTA-STS/TLS-RPT."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from test_doctor_support import GOOD_ZONES, OUR_IP, make_inputs

from ironpost.auth.dkim_keys import generate_key, txt_record
from ironpost.doctor.check import Check
from ironpost.doctor.published import check_published, dkim_public_key, tags


def run(zones: dict[str, Any], extra: str = "", **kw: Any) -> dict[str, Check]:
    checks = asyncio.run(check_published(make_inputs(zones, extra, **kw)))
    return {c.title: c for c in checks}


def test_tags() -> None:
    assert tags("v=DMARC1; p=Reject ;rua=mailto:a@b; p=none") == {
        "v": "DMARC1",
        "p": "Reject",
        "rua": "mailto:a@b",
    }
    assert dkim_public_key("v=DKIM1; p=AB C\tD") == ("rsa", "ABCD")
    assert dkim_public_key("v=DKIM1; k=ed25519; p=") == ("ed25519", "")


def test_spf_pass_and_helo() -> None:
    checks = run(GOOD_ZONES, "dns_records_mta_sts_mode = none\n")
    assert checks[f"SPF example.org for {OUR_IP}"].status == "pass"
    assert checks[f"SPF HELO mail.example.org for {OUR_IP}"].status == "pass"


def test_spf_without_our_address_fails_with_the_record_to_publish() -> None:
    zones = {**GOOD_ZONES, "example.org": {"TXT": ["v=spf1 ip4:198.51.100.1 -all"]}}
    check = run(zones)[f"SPF example.org for {OUR_IP}"]
    assert check.status == "fail"
    assert check.detail.startswith(f"fail: {OUR_IP} is not authorised")
    assert f'"v=spf1 mx a ip4:{OUR_IP} -all"' in check.fix


def test_spf_softfail_and_none_fail() -> None:
    soft = {**GOOD_ZONES, "example.org": {"TXT": ["v=spf1 ~all"]}}
    assert run(soft)[f"SPF example.org for {OUR_IP}"].detail.startswith("softfail")
    none = {**GOOD_ZONES, "example.org": {"MX": [(10, "mail.example.org")]}}
    assert run(none)[f"SPF example.org for {OUR_IP}"].detail == "no SPF record"


def test_dkim_matching_mismatching_missing_revoked(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "a", "example.org", "s1", ed25519=True)
    other = generate_key(tmp_path / "b", "example.org", "s1", ed25519=True)
    name = "s1._domainkey.example.org"
    title = f"DKIM {name}"

    def dkim(records: list[str] | None) -> Check:
        zones = dict(GOOD_ZONES)
        if records is not None:
            zones[name] = {"TXT": records}
        return run(zones, dkim_keys=(key,))[title]

    assert dkim([txt_record(key)]).status == "pass"
    # folding whitespace inside p= is allowed (RFC 6376 §3.6.1)
    spaced = txt_record(key).replace("p=", "p= ")
    assert dkim([spaced[:-4] + " " + spaced[-4:]]).status == "pass"
    mismatch = dkim([txt_record(other)])
    assert mismatch.status == "fail" and "does not match" in mismatch.detail
    assert txt_record(key) in mismatch.fix
    assert dkim(None).detail.startswith("no key published")
    assert "revoked" in dkim(["v=DKIM1; k=ed25519; p="]).detail
    wrong_k = txt_record(key).replace("k=ed25519", "k=rsa")
    assert dkim([wrong_k]).status == "fail"


def test_no_dkim_key_warns_and_unreadable_key_fails() -> None:
    assert run(GOOD_ZONES)["DKIM keys"].status == "warn"
    broken = run(GOOD_ZONES, dkim_error="/x/s1.private: No such file")["DKIM keys"]
    assert broken.status == "fail" and "/x/s1.private" in broken.detail


def test_dmarc_policies() -> None:
    def dmarc(records: list[str] | None) -> Check:
        zones = dict(GOOD_ZONES)
        del zones["_dmarc.example.org"]
        if records is not None:
            zones["_dmarc.example.org"] = {"TXT": records}
        return run(zones)["DMARC example.org"]

    assert dmarc(["v=DMARC1; p=reject; rua=mailto:d@example.org"]).status == "pass"
    assert dmarc(["v=DMARC1; p=quarantine"]).detail.endswith("no aggregate reports (rua=)")
    missing = dmarc(None)
    assert missing.status == "fail" and missing.detail == "no DMARC record at _dmarc.example.org"
    assert "v=DMARC1; p=quarantine" in missing.fix
    assert dmarc(["v=DMARC1; p=none"]).status == "warn"
    assert dmarc(["v=DMARC1; p=reject; pct=20"]).status == "warn"
    assert dmarc(["v=DMARC1; p=maybe"]).status == "fail"
    assert dmarc(["v=DMARC1; p=reject", "v=DMARC1; p=none"]).status == "fail"
    assert dmarc(["v=spf1 -all"]).status == "fail"


def test_mta_sts_and_tlsrpt_only_when_configured() -> None:
    assert not [t for t in run(GOOD_ZONES, "dns_records_mta_sts_mode = none\n") if "STS" in t]
    inputs = make_inputs(GOOD_ZONES)
    assert inputs.records is not None
    sts = next(r for r in inputs.records.expected() if r.name == "_mta-sts.example.org.")
    zones = {
        **GOOD_ZONES,
        "_mta-sts.example.org": {"TXT": [sts.value]},
        "_smtp._tls.example.org": {"TXT": ["v=TLSRPTv1; rua=mailto:tls@example.org"]},
    }
    checks = run(zones)
    assert checks["MTA-STS _mta-sts.example.org"].status == "pass"
    assert checks["TLS-RPT _smtp._tls.example.org"].status == "pass"
    stale = {**zones, "_mta-sts.example.org": {"TXT": ["v=STSv1; id=old1"]}}
    assert "senders keep the old policy" in run(stale)["MTA-STS _mta-sts.example.org"].detail
    assert run(GOOD_ZONES)["MTA-STS _mta-sts.example.org"].status == "warn"
