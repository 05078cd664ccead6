"""ARC: our seal (arc_seal) verified by dkimpy's ARC validation (verify_arc)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from ironpost.auth.arc import arc_seal, verify_arc
from ironpost.auth.dkim_keys import SigningKey, generate_key, key_from_file, txt_record
from ironpost.auth.dkim_sign import DkimSigner
from ironpost.auth.dnsbridge import BlockingDns
from ironpost.testing.dns import FakeResolver

MSG = (
    b"From: Alice <alice@origin.test>\r\n"
    b"To: list@lists.example.org\r\n"
    b"Subject: forwarded\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b"\r\n"
    b"Body.\r\n"
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SigningKey]:
    d = tmp_path_factory.mktemp("keys")
    return {
        "one": generate_key(d, "example.org", "arc1"),
        "two": generate_key(d, "example.net", "arc2"),
        "ed": generate_key(d, "example.com", "ed", ed25519=True),
    }


@pytest.fixture
def resolver(keys: dict[str, SigningKey]) -> FakeResolver:
    return FakeResolver({k.dns_name: {"TXT": [txt_record(k)]} for k in keys.values()})


@pytest.fixture
def dns(resolver: FakeResolver) -> Iterator[BlockingDns]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield BlockingDns(resolver, loop, timeout=2.0)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def signer(key: SigningKey) -> DkimSigner:
    return DkimSigner({key.domain: [key_from_file(key.domain, key.selector, key.private_path)]})


def test_unsealed_is_none(dns: BlockingDns) -> None:
    assert verify_arc(MSG, dns).result == "none"


def test_seal_then_verify_and_a_second_hop(keys: dict[str, SigningKey], dns: BlockingDns) -> None:
    first = arc_seal(
        MSG,
        signer(keys["one"]),
        authserv_id="mx.example.org",
        results="mx.example.org; spf=pass smtp.mailfrom=origin.test; dkim=none",
    )
    assert first.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.org; s=arc1;")
    assert b"ARC-Authentication-Results: i=1; mx.example.org; spf=pass" in first
    once = first + MSG
    result = verify_arc(once, dns)
    assert (result.result, result.instance) == ("pass", 1)

    second = arc_seal(
        once, signer(keys["two"]), authserv_id="mx.example.net", results="arc=pass; dkim=none"
    )
    assert b"i=2; cv=pass" in second
    twice = second + once
    result = verify_arc(twice, dns)
    assert (result.result, result.instance) == ("pass", 2)

    tampered = twice.replace(b"Body.", b"Spam.")
    assert verify_arc(tampered, dns).result == "fail"
    broken_seal = twice.replace(b"i=1; mx.example.org; spf=pass", b"i=1; mx.example.org; spf=fail")
    assert verify_arc(broken_seal, dns).result == "fail"


def test_lf_only_message(keys: dict[str, SigningKey], dns: BlockingDns) -> None:
    lf = MSG.replace(b"\r\n", b"\n")
    seal = arc_seal(lf, signer(keys["one"]), authserv_id="mx.example.org", results="none")
    assert b"\r" not in seal
    assert verify_arc(seal + lf, dns).result == "pass"


def test_honest_refusals(keys: dict[str, SigningKey]) -> None:
    # ARC is rsa-sha256 only: no RSA key, no seal.
    assert arc_seal(MSG, signer(keys["ed"]), authserv_id="mx", results="none") == b""
    once = arc_seal(MSG, signer(keys["one"]), authserv_id="mx", results="none") + MSG
    # A chain exists and the results do not say how it validated: no seal.
    assert arc_seal(once, signer(keys["two"]), authserv_id="mx2", results="spf=pass") == b""
    assert arc_seal(MSG, DkimSigner({}), authserv_id="mx", results="none") == b""


def test_key_tempfail_is_a_fail_with_reason(
    keys: dict[str, SigningKey], dns: BlockingDns, resolver: FakeResolver
) -> None:
    once = arc_seal(MSG, signer(keys["one"]), authserv_id="mx", results="none") + MSG
    resolver.fail("_domainkey.example.org")
    result = verify_arc(once, dns)
    assert result.result == "fail" and "DNS" in result.reason
