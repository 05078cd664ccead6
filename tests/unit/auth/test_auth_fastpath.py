"""The authentication fast path (issue #7, S6): the answer cache the DNS bridge reads in
worker threads, OpenSSL under dkimpy's RSA check, the parsed-key memo, the blocking DMARC
evaluation, and the one-hop inbound pipeline (prefetch, overrun)."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from functools import cache
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.crypto import parse_public_key
from hypothesis import given, settings
from hypothesis import strategies as st

from ironpost.auth import dkim_verify
from ironpost.auth.answers import AnswerCache
from ironpost.auth.dmarc import evaluate_dmarc, evaluate_dmarc_blocking
from ironpost.auth.dnsbridge import BlockingDns
from ironpost.auth.inbound import InboundAuth, InboundVerdict
from ironpost.auth.types import DkimResult, SpfResult
from ironpost.dns.types import Result, Status
from ironpost.testing.dkim import rsa_key_and_record
from ironpost.testing.dns import FakeResolver

# --- AnswerCache ------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_answer_is_kept_one_second_less_than_its_ttl() -> None:
    clock = Clock()
    answers = AnswerCache(clock=clock)
    result = Result(Status.ANSWER, ("v=spf1 -all",), 10)
    answers.put("TXT", "Example.COM.", result)
    assert answers.get("TXT", "example.com") is result  # case and final dot ignored
    assert answers.get("A", "example.com") is None
    clock.now += 8.9
    assert answers.get("TXT", "example.com") is result
    clock.now += 0.1  # 9 s: the resolver's ttl was rounded up, so stop here
    assert answers.get("TXT", "example.com") is None


@pytest.mark.parametrize(
    "result",
    [
        Result(Status.TEMPFAIL, error="timeout"),
        Result(Status.ANSWER, ("x",), 1),
        Result(Status.NXDOMAIN, ttl=0),
    ],
)
def test_tempfail_and_short_ttls_are_never_kept(result: Result[str]) -> None:
    answers = AnswerCache()
    answers.put("TXT", "example.com", result)
    assert answers.get("TXT", "example.com") is None and len(answers) == 0


def test_negative_answers_are_kept() -> None:
    answers = AnswerCache()
    answers.put("TXT", "_dmarc.example.com", Result(Status.NXDOMAIN, ttl=60))
    hit = answers.get("TXT", "_dmarc.example.com")
    assert hit is not None and hit.status is Status.NXDOMAIN


def test_size_is_bounded_oldest_first() -> None:
    answers = AnswerCache(max_entries=3)
    for n in range(5):
        answers.put("TXT", f"n{n}.test", Result(Status.ANSWER, (str(n),), 300))
    assert len(answers) == 3
    assert answers.get("TXT", "n0.test") is None and answers.get("TXT", "n1.test") is None
    assert answers.get("TXT", "n4.test") is not None


# --- BlockingDns with the cache ---------------------------------------------------------


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def test_bridge_answers_a_repeated_question_without_the_resolver(
    loop: asyncio.AbstractEventLoop,
) -> None:
    resolver = FakeResolver({"example.com": {"TXT": ["v=spf1 -all"], "A": ["192.0.2.1"]}})
    bridge = BlockingDns(resolver, loop, cache=AnswerCache())
    first = bridge.txt("example.com")
    assert bridge.txt("example.com") is first
    assert bridge.a("example.com").records == ("192.0.2.1",)
    assert bridge.a("example.com").records == ("192.0.2.1",)
    assert resolver.calls == [("TXT", "example.com"), ("A", "example.com")]
    uncached = BlockingDns(resolver, loop)
    uncached.txt("example.com")
    assert resolver.calls[-1] == ("TXT", "example.com") and len(resolver.calls) == 3


def test_bridge_refuses_the_loop_thread_even_for_a_cached_answer() -> None:
    async def go() -> None:
        answers = AnswerCache()
        answers.put("TXT", "example.com", Result(Status.ANSWER, ("x",), 300))
        bridge = BlockingDns(FakeResolver(), asyncio.get_running_loop(), cache=answers)
        with pytest.raises(RuntimeError):
            bridge.txt("example.com")

    asyncio.run(go())


# --- dkimpy's RSA check through OpenSSL -------------------------------------------------


@cache
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


def public_dict() -> dict[str, int]:
    der = (
        rsa_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    pk: dict[str, int] = parse_public_key(der)
    return pk


def signature_of(data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return rsa_key().sign(data, padding.PKCS1v15(), hashes.SHA256())


def hasher(data: bytes) -> Any:
    return dkim.HashThrough(dkim.hashlib.sha256(data))


def test_dkimpy_uses_the_openssl_check() -> None:
    assert dkim.RSASSA_PKCS1_v1_5_verify is dkim_verify.rsa_verify
    assert dkim.evaluate_pk is dkim_verify.evaluate_pk


def test_rsa_check_agrees_with_dkimpy_on_good_and_bad_signatures() -> None:
    pk = public_dict()
    good = signature_of(b"message")
    n = pk["modulus"]
    cases = [
        (b"message", good),
        (b"other", good),
        (b"message", good[:-1] + bytes([good[-1] ^ 1])),
        (b"message", good[1:]),  # too short
        (b"message", b"\x00" + good),  # too long, same integer: dkimpy decides
        (b"message", (int.from_bytes(good, "big") + n).to_bytes(len(good) + 1, "big")),
    ]
    for data, signature in cases:
        ours = dkim_verify.rsa_verify(hasher(data), signature, pk)
        theirs = dkim_verify._dkimpy_rsa_verify(hasher(data), signature, pk)
        assert ours == theirs, (data, signature.hex())
    assert dkim_verify.rsa_verify(hasher(b"message"), good, pk) is True


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=128, max_size=128), st.binary(max_size=64))
def test_rsa_check_agrees_with_dkimpy_on_arbitrary_signatures(
    signature: bytes, data: bytes
) -> None:
    pk = public_dict()
    ours = dkim_verify.rsa_verify(hasher(data), signature, pk)
    assert ours == dkim_verify._dkimpy_rsa_verify(hasher(data), signature, pk)


def test_parsed_key_is_reused_and_errors_are_not() -> None:
    der = base64.b64encode(
        rsa_key()
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    record = b"v=DKIM1; k=rsa; p=" + der
    first = dkim.evaluate_pk(b"s._domainkey.example.com.", record)
    assert dkim.evaluate_pk(b"s._domainkey.example.com.", record) is first
    assert first == dkim_verify._dkimpy_evaluate_pk(b"s._domainkey.example.com.", record)
    for _ in range(2):
        with pytest.raises(dkim.KeyFormatError):
            dkim.evaluate_pk(b"s._domainkey.example.com.", b"v=DKIM1; k=rsa; p=AAAA")


# --- DMARC in a worker thread gives what the async evaluation gives ---------------------

DMARC_ZONES = {
    "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject; adkim=s"]},
    "_dmarc.org.test": {"TXT": ["v=DMARC1; p=quarantine; sp=reject; pct=50"]},
    "_dmarc.two.test": {"TXT": ["v=DMARC1; p=none", "v=DMARC1; p=reject"]},
}


@pytest.mark.parametrize(
    ("domain", "spf", "dkim_results"),
    [
        ("example.com", SpfResult("pass", "example.com", "mailfrom", "192.0.2.1"), ()),
        ("example.com", None, (DkimResult("pass", "mail.example.com"),)),
        ("example.com", SpfResult("fail", "example.com", "mailfrom", "192.0.2.1"), ()),
        ("sub.org.test", SpfResult("temperror", "org.test", "mailfrom", "192.0.2.1"), ()),
        ("sub.org.test", None, (DkimResult("fail", "org.test"),)),
        ("two.test", None, ()),
        ("nothing.test", None, ()),
        ("down.test", None, ()),
        ("single", None, ()),
    ],
)
def test_blocking_dmarc_matches_async(
    loop: asyncio.AbstractEventLoop,
    domain: str,
    spf: SpfResult | None,
    dkim_results: tuple[DkimResult, ...],
) -> None:
    resolver = FakeResolver(DMARC_ZONES, tempfail=["_dmarc.down.test"])
    expected = asyncio.run_coroutine_threadsafe(
        evaluate_dmarc(resolver, domain, spf, dkim_results, rand=lambda: 0.7), loop
    ).result(5)
    asked = list(resolver.calls)
    resolver.calls.clear()
    bridge = BlockingDns(resolver, loop, cache=AnswerCache())
    got = evaluate_dmarc_blocking(bridge.txt, domain, spf, dkim_results, rand=lambda: 0.7)
    assert got == expected
    assert resolver.calls == asked  # the same questions, in the same order


# --- the inbound pipeline -----------------------------------------------------------------


signing = rsa_key_and_record  # one key pair per process


def zones() -> dict[str, dict[str, Any]]:
    return {
        "example.com": {"TXT": ["v=spf1 ip4:192.0.2.0/24 -all"]},
        "_dmarc.example.com": {"TXT": ["v=DMARC1; p=reject"]},
        "sel._domainkey.example.com": {"TXT": [signing()[1]]},
    }


def signed_message() -> bytes:
    msg = (
        b"From: Alice <alice@example.com>\r\nTo: bob@example.org\r\nSubject: hi\r\n"
        b"Message-ID: <1@example.com>\r\n\r\nHello.\r\n"
    )
    return dkim.sign(msg, b"sel", b"example.com", signing()[0], include_headers=[b"from"]) + msg


async def run_check(auth: InboundAuth, content: bytes) -> InboundVerdict:
    return await auth.check(
        content,
        client_address="192.0.2.10",
        helo="client.example.net",
        sender="alice@example.com",
        spf=None,
        skip_dmarc=False,
    )


def test_second_message_asks_the_resolver_nothing_and_gets_the_same_verdict() -> None:
    async def go() -> None:
        resolver = FakeResolver(zones())
        auth = InboundAuth(resolver, "mx.example.org")
        content = signed_message()
        first = await run_check(auth, content)
        assert first.results.spf is not None and first.results.spf.result == "pass"
        assert [r.result for r in first.results.dkim] == ["pass"]
        assert first.results.dmarc is not None and first.results.dmarc.result == "pass"
        asked = len(resolver.calls)
        second = await run_check(auth, content)
        assert len(resolver.calls) == asked
        assert second.results == first.results and second.headers == first.headers

    asyncio.run(go())


class Gauge(FakeResolver):
    """Counts how many lookups are in flight at once (each takes a little while)."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.inflight = 0
        self.most = 0

    async def txt(self, name: str) -> Result[str]:
        self.inflight += 1
        self.most = max(self.most, self.inflight)
        try:
            await asyncio.sleep(0.05)
            return await super().txt(name)
        finally:
            self.inflight -= 1


def test_cold_cache_lookups_are_started_side_by_side() -> None:
    async def go() -> Gauge:
        resolver = Gauge(zones())
        verdict = await run_check(InboundAuth(resolver, "mx.example.org"), signed_message())
        assert verdict.results.dmarc is not None and verdict.results.dmarc.result == "pass"
        return resolver

    resolver = asyncio.run(go())
    # SPF policy, DKIM key and DMARC policy together (the fake shares no lookups in flight,
    # so the worker's own SPF question may make a fourth)
    assert resolver.most >= 3
    assert set(resolver.asked("TXT")) == {
        "example.com",
        "sel._domainkey.example.com",
        "_dmarc.example.com",
    }


def test_a_verifier_overrunning_keeps_the_finished_results() -> None:
    def stuck(*args: Any, **kw: Any) -> list[DkimResult]:
        time.sleep(1.0)
        return [DkimResult("pass", "example.com")]

    async def go() -> InboundVerdict:
        auth = InboundAuth(
            FakeResolver(zones()),
            "mx.example.org",
            verify_dkim=stuck,
            spf_timeout=0.1,
            dkim_timeout=0.1,
            overrun_slack=0.1,
        )
        return await run_check(auth, signed_message())

    verdict = asyncio.run(go())
    assert verdict.results.spf is not None and verdict.results.spf.result == "pass"
    assert [(r.result, r.reason) for r in verdict.results.dkim] == [
        ("temperror", "verifier: TimeoutError")
    ]
    assert verdict.results.dmarc is not None and verdict.results.dmarc.result == "pass"
    assert b"dkim=temperror" in verdict.headers
