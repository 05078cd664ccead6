"""DKIM verification (dkimpy over BlockingDns on the fake resolver): result mapping."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ironpost.auth.dkim_keys import SigningKey, generate_key, key_from_file, txt_record
from ironpost.auth.dkim_sign import DkimSigner
from ironpost.auth.dkim_verify import verify_dkim
from ironpost.auth.dnsbridge import BlockingDns
from ironpost.testing.dns import FakeResolver

MSG = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: hello\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.org>\r\n"
    b"\r\n"
    b"Hello Bob.\r\n"
)

WEAK_512 = """-----BEGIN PRIVATE KEY-----
MIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEAx75dw2pBvij33oDG
ow04fznTXDfBA0aADWqlnS6s22jykFRixjE4y6ci6tVFHX4j8C6GeJcXG463HNm6
AjbKiwIDAQABAkB5dTV4vWUKp8jJgM7ImSJwoo32dmSkhDsbbW0VXit4Io61UHKm
lSwLBN9igvrqtNK2M/N09iJE7lnpJzgAI6VpAiEA6MMwVwZDQbGMkQtRy6YlhWlt
gzjESacMfFJ94iGxWM8CIQDbr0z3b+N26uuqhpJp7cDylVT/Gz+LnAMLFUe8Qh2p
hQIgX7g9Pdx2diKUwuUbyxrVXUrg3VDP79YBnXKzD/Z5HyMCIQC30HIiB6jX87DE
ulz/7UOotnKsEeyVsDCLsX6YcunG0QIgd4H+R3uXGfZijxWV1ml4rN+pGoqy5QlO
nUZszsUGot4=
-----END PRIVATE KEY-----
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SigningKey]:
    d = tmp_path_factory.mktemp("keys")
    return {
        "rsa": generate_key(d, "example.org", "rsa"),
        "ed": generate_key(d, "example.org", "ed", ed25519=True),
        "small": generate_key(d, "example.org", "small", bits=1024),
    }


@pytest.fixture
def resolver(keys: dict[str, SigningKey]) -> FakeResolver:
    zones = {k.dns_name: {"TXT": [txt_record(k)]} for k in keys.values()}
    return FakeResolver(zones)


@pytest.fixture
def dns(resolver: FakeResolver) -> Iterator[BlockingDns]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield BlockingDns(resolver, loop, timeout=2.0)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def signer(*keys: SigningKey) -> DkimSigner:
    loaded = [key_from_file(k.domain, k.selector, k.private_path) for k in keys]
    return DkimSigner({"example.org": loaded})


def test_unsigned_gives_no_results(dns: BlockingDns) -> None:
    assert verify_dkim(MSG, dns) == []


def test_rsa_and_ed25519_pass(keys: dict[str, SigningKey], dns: BlockingDns) -> None:
    signed = signer(keys["rsa"], keys["ed"]).sign(MSG) + MSG
    results = verify_dkim(signed, dns)
    assert [(r.result, r.selector, r.algorithm, r.domain) for r in results] == [
        ("pass", "rsa", "rsa-sha256", "example.org"),
        ("pass", "ed", "ed25519-sha256", "example.org"),
    ]
    assert all(len(r.header_b) == 8 for r in results)


def test_body_tampering_fails(keys: dict[str, SigningKey], dns: BlockingDns) -> None:
    signed = signer(keys["rsa"]).sign(MSG) + MSG
    [result] = verify_dkim(signed.replace(b"Hello Bob.", b"Hello Eve."), dns)
    assert (result.result, result.reason) == ("fail", "body hash mismatch")


def test_header_tampering_fails(keys: dict[str, SigningKey], dns: BlockingDns) -> None:
    signed = signer(keys["ed"]).sign(MSG) + MSG
    [result] = verify_dkim(signed.replace(b"Subject: hello", b"Subject: HELLO"), dns)
    assert (result.result, result.reason) == ("fail", "signature did not verify")


def test_added_from_breaks_the_oversigned_signature(
    keys: dict[str, SigningKey], dns: BlockingDns
) -> None:
    signed = signer(keys["rsa"]).sign(MSG) + MSG
    forged = signed.replace(b"\r\n\r\n", b"\r\nFrom: mallory@evil.test\r\n\r\n", 1)
    assert verify_dkim(forged, dns)[0].result == "fail"


def test_revoked_key_fails(
    keys: dict[str, SigningKey], dns: BlockingDns, resolver: FakeResolver
) -> None:
    resolver.set(keys["rsa"].dns_name, "TXT", ["v=DKIM1; k=rsa; p="])
    [result] = verify_dkim(signer(keys["rsa"]).sign(MSG) + MSG, dns)
    assert (result.result, result.reason) == ("fail", "key revoked")


def test_missing_key_is_permerror(
    keys: dict[str, SigningKey], dns: BlockingDns, resolver: FakeResolver
) -> None:
    resolver.remove(keys["rsa"].dns_name)
    [result] = verify_dkim(signer(keys["rsa"]).sign(MSG) + MSG, dns)
    assert (result.result, result.reason) == ("permerror", "no key for signature")


def test_garbage_key_record_is_permerror(
    keys: dict[str, SigningKey], dns: BlockingDns, resolver: FakeResolver
) -> None:
    resolver.set(keys["rsa"].dns_name, "TXT", ["v=DKIM1; k=rsa; p=bm90IGEga2V5"])
    [result] = verify_dkim(signer(keys["rsa"]).sign(MSG) + MSG, dns)
    assert result.result == "permerror"


def test_tempfail_is_temperror(
    keys: dict[str, SigningKey], dns: BlockingDns, resolver: FakeResolver
) -> None:
    resolver.fail("_domainkey.example.org")
    [result] = verify_dkim(signer(keys["ed"]).sign(MSG) + MSG, dns)
    assert (result.result, result.reason) == ("temperror", "key lookup failed (DNS)")


def test_key_fetch_timeout_is_temperror(keys: dict[str, SigningKey]) -> None:
    class Slow(FakeResolver):
        async def txt(self, name: str):  # type: ignore[no-untyped-def]
            await asyncio.sleep(5)
            return await super().txt(name)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        dns = BlockingDns(Slow({}), loop, timeout=10)
        signed = signer(keys["rsa"]).sign(MSG) + MSG
        [result] = verify_dkim(signed, dns, timeout=0.2)
        assert result.result == "temperror"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_1024_bit_key_passes(keys: dict[str, SigningKey], dns: BlockingDns) -> None:
    [result] = verify_dkim(signer(keys["small"]).sign(MSG) + MSG, dns)
    assert result.result == "pass"


def test_key_under_1024_bits_is_policy(
    tmp_path: Path, dns: BlockingDns, resolver: FakeResolver
) -> None:
    path = tmp_path / "weak.private"
    path.write_text(WEAK_512)  # cryptography no longer generates keys this small
    key, loaded = key_from_file("example.org", "weak", path)
    resolver.set(key.dns_name, "TXT", [txt_record(key)])
    [result] = verify_dkim(DkimSigner({"example.org": [(key, loaded)]}).sign(MSG) + MSG, dns)
    assert (result.result, result.reason) == ("policy", "key too small (512 bits)")


def test_signature_cap(
    keys: dict[str, SigningKey], dns: BlockingDns, resolver: FakeResolver
) -> None:
    s = signer(keys["rsa"])
    signed = MSG
    for _ in range(4):
        signed = s.sign(signed) + signed
    results = verify_dkim(signed, dns, max_signatures=2)
    assert [r.result for r in results[:2]] == ["pass", "pass"]
    assert [(r.result, r.reason) for r in results[2:]] == [("policy", "too many signatures")] * 2
    # Only one key fetch although two signatures used it; none for the capped ones.
    assert resolver.asked("TXT") == [keys["rsa"].dns_name]


def test_malformed_signature_never_raises(dns: BlockingDns) -> None:
    for junk in (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org\r\n" + MSG,
        b"DKIM-Signature: ;;;===\r\n" + MSG,
        b"DKIM-Signature: v=1; a=rsa-sha256; b=!!; bh=!!; d=x; s=y; h=from\r\n" + MSG,
        b"DKIM-Signature:\r\n\r\n",
    ):
        results = verify_dkim(junk, dns)
        assert len(results) == 1 and results[0].result == "permerror"


def test_lf_only_message_verifies(keys: dict[str, SigningKey], dns: BlockingDns) -> None:
    lf = MSG.replace(b"\r\n", b"\n")
    signed = signer(keys["rsa"]).sign(lf) + lf
    assert b"\r" not in signed
    assert verify_dkim(signed, dns)[0].result == "pass"
