"""DKIM verification of inbound mail (RFC 6376, RFC 8463 ed25519) with dkimpy.

Owns :func:`verify_dkim` and the mapping of dkimpy's outcomes to RFC 8601 result words.
Key lookups go through ironpost's resolver (:class:`~ironpost.auth.dnsbridge.BlockingDns`),
never dkimpy's own DNS code, so the typed DNS status tells a missing key (permerror)
from an unreachable one (temperror), which dkimpy alone cannot.

Invariants: :func:`verify_dkim` never raises; it is blocking (the caller runs it in a
worker thread); its cost is bounded: at most ``max_signatures`` signatures are checked
(the others get ``policy``), each key is fetched once per message, and no key lookup
starts after ``timeout`` seconds have passed (the unfetched keys give ``temperror``).

Result words: ``pass``; ``fail`` (body hash or signature mismatch, revoked key: RFC
6376 §6.1.2 says treat p= empty as a failed signature check, expired signature);
``permerror`` (no key, malformed signature or key record); ``temperror`` (key lookup
TEMPFAIL or out of time); ``policy`` (key under 1024 bits, over the signature cap).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import dkim  # type: ignore[import-untyped]
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from dkim.crypto import EMSA_PKCS1_v1_5_encode  # type: ignore[import-untyped]
from dkim.util import InvalidTagValueList, parse_tag_value  # type: ignore[import-untyped]

from ironpost.auth.dnsbridge import BlockingDns
from ironpost.auth.types import DkimResult
from ironpost.dns.types import Result, Status

MIN_KEY_BITS = 1024
_SIG_NAME = b"dkim-signature"
_WS = re.compile(rb"\s+")

# dkimpy logs every failure at ERROR through its own logger; our caller logs the result.
_QUIET = logging.getLogger("ironpost.auth.dkim.dkimpy")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


# --- dkimpy, with its two costliest steps made cheap -------------------------------------
#
# dkimpy checks an RSA signature in pure Python (a 2048-bit pow() and byte-by-byte integer
# conversions: over a millisecond, most of a verification), and re-parses the key record's
# ASN.1 for every message. Both are replaced below, in dkimpy's module (ARC verification
# uses them too), by functions that give the same answers: the RSA check is OpenSSL's
# (``cryptography``), used only where it and dkimpy's arithmetic must agree, and a parsed
# key is reused for the same record text (the record's TTL is the resolver's business).

_dkimpy_rsa_verify = dkim.RSASSA_PKCS1_v1_5_verify
_dkimpy_evaluate_pk = dkim.evaluate_pk
_MEMO_MAX = 256
_keys_parsed: dict[bytes | str, tuple[Any, Any, Any, Any]] = {}
_rsa_public: dict[tuple[int, int], rsa.RSAPublicKey] = {}


def rsa_verify(hasher: Any, signature: bytes, public_key: dict[str, int]) -> bool:
    """dkimpy's ``RSASSA_PKCS1_v1_5_verify`` (RFC 8017 §8.2.2) through OpenSSL.

    dkimpy accepts when ``signature^e mod n``, as ``modlen`` bytes, equals the EMSA-PKCS1-v1_5
    encoding of the digest. OpenSSL's recovery gives the payload of that block when it is
    well-formed, for a signature of exactly ``modlen`` bytes below ``n``; rebuilding the
    block from the payload and comparing is the same test. Other inputs go to dkimpy."""
    n, e = public_key["modulus"], public_key["publicExponent"]
    modlen = (n.bit_length() + 7) // 8
    expected = EMSA_PKCS1_v1_5_encode(hasher, modlen)  # raises DigestTooLargeError as before
    if len(signature) != modlen or int.from_bytes(signature, "big") >= n:
        return bool(_dkimpy_rsa_verify(hasher, signature, public_key))
    key = _rsa_public.get((n, e))
    if key is None:
        try:
            key = rsa.RSAPublicNumbers(e, n).public_key()
        except Exception:  # a key OpenSSL refuses (tiny, even modulus…): dkimpy decides
            return bool(_dkimpy_rsa_verify(hasher, signature, public_key))
        if len(_rsa_public) >= _MEMO_MAX:
            _rsa_public.clear()
        _rsa_public[(n, e)] = key
    try:
        payload = key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
    except InvalidSignature:
        return False  # not 00 01 FF.. 00 payload: never equal to ``expected``
    block = b"\x00\x01" + b"\xff" * (modlen - len(payload) - 3) + b"\x00" + payload
    return bool(block == expected)


def evaluate_pk(name: bytes, s: bytes | str) -> tuple[Any, Any, Any, Any]:
    """dkimpy's ``evaluate_pk`` (key record → key), remembered per record text."""
    parsed = _keys_parsed.get(s)
    if parsed is None:
        parsed = _dkimpy_evaluate_pk(name, s)  # errors are not remembered: raised each time
        if len(_keys_parsed) >= _MEMO_MAX:
            _keys_parsed.clear()
        _keys_parsed[s] = parsed
    return parsed


dkim.RSASSA_PKCS1_v1_5_verify = rsa_verify
dkim.evaluate_pk = evaluate_pk


@dataclass
class KeyFetcher:
    """dkimpy's ``dnsfunc``: TXT over BlockingDns, with a per-message cache and deadline,
    remembering each name's DNS status for the result mapping."""

    dns: BlockingDns
    deadline: float
    status: dict[bytes, Status | str] = field(default_factory=dict)
    cache: dict[bytes, bytes | None] = field(default_factory=dict)

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        if name in self.cache:
            return self.cache[name]
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.status[name] = "timeout"
            self.cache[name] = None
            return None
        result = _txt(self.dns, name.decode("ascii", "replace").rstrip("."), remaining)
        self.status[name] = result.status
        value = _pick_key(result.records) if result.ok else None
        self.cache[name] = value
        return value


def _txt(dns: BlockingDns, name: str, limit: float) -> Result[str]:
    """``dns.txt(name)`` bounded by ``limit`` seconds as well as by the bridge's timeout."""
    return dns.txt(name, min(limit, dns.timeout))


def _pick_key(records: tuple[str, ...]) -> bytes:
    """The DKIM key among the TXT records (RFC 6376 §3.6.2.2: more than one is
    undefined; take the first that looks like a key)."""
    for record in records:
        if "p=" in record:
            return record.encode("utf-8", "replace")
    return records[0].encode("utf-8", "replace")


def _tags(value: bytes) -> dict[bytes, bytes]:
    try:
        tags: dict[bytes, bytes] = parse_tag_value(value)
        return tags
    except (InvalidTagValueList, Exception):
        return {}


def _text(tags: dict[bytes, bytes], tag: bytes) -> str:
    return _WS.sub(b"", tags.get(tag, b"")).decode("ascii", "replace")


def verify_dkim(
    content: bytes, dns: BlockingDns, *, max_signatures: int = 5, timeout: float = 10.0
) -> list[DkimResult]:
    """One result per DKIM-Signature field, top to bottom; ``[]`` when unsigned."""
    try:
        return _verify(content, dns, max_signatures, timeout)
    except Exception as exc:  # fail closed: a library bug must not kill the session
        return [DkimResult("permerror", "", reason=f"verifier error: {type(exc).__name__}")]


def _verify(content: bytes, dns: BlockingDns, cap: int, timeout: float) -> list[DkimResult]:
    if b"dkim-signature" not in content[: _header_end(content)].lower():
        return []
    try:
        d = dkim.DKIM(content, logger=_QUIET, minkey=MIN_KEY_BITS, timeout=int(timeout) or 1)
    except dkim.DKIMException as exc:
        return [DkimResult("permerror", "", reason=f"unparsable message: {exc}")]
    signatures = [v for n, v in d.headers if n.lower() == _SIG_NAME]
    fetch = KeyFetcher(dns, time.monotonic() + timeout)
    results = []
    for idx, value in enumerate(signatures):
        tags = _tags(value)
        domain = _text(tags, b"d").lower()
        base = {
            "domain": domain,
            "selector": _text(tags, b"s"),
            "algorithm": _text(tags, b"a"),
            "header_b": _text(tags, b"b")[:8],
        }
        if idx >= cap:
            results.append(DkimResult("policy", reason="too many signatures", **base))
            continue
        if not tags:
            results.append(DkimResult("permerror", reason="malformed signature", **base))
            continue
        result, reason = _one(d, idx, fetch, tags)
        results.append(DkimResult(result, reason=reason, **base))
    return results


def _header_end(content: bytes) -> int:
    end = content.find(b"\n\n")
    crlf = content.find(b"\r\n\r\n")
    ends = [e for e in (end, crlf) if e >= 0]
    return min(ends) if ends else len(content)


def _one(d: dkim.DKIM, idx: int, fetch: KeyFetcher, tags: dict[bytes, bytes]) -> tuple[str, str]:
    name = tags.get(b"s", b"") + b"._domainkey." + tags.get(b"d", b"") + b"."
    try:
        ok = d.verify(idx, dnsfunc=fetch)
    except dkim.KeyFormatError as exc:
        text = str(exc)
        if "too small" in text:
            return "policy", f"key too small ({d.keysize} bits)"
        return "permerror", f"bad key: {text[:80]}"
    except dkim.ValidationError as exc:
        text = str(exc)
        if text.startswith("body hash mismatch"):
            return "fail", "body hash mismatch"
        if text.startswith("x= value is past"):
            return "fail", "signature expired"
        return "permerror", text[:100]
    except dkim.DKIMException as exc:
        return "permerror", str(exc)[:100] or type(exc).__name__
    if ok:
        return "pass", ""
    status = fetch.status.get(name)
    if status == "timeout":
        return "temperror", "key fetch timed out"
    if status is Status.TEMPFAIL:
        return "temperror", "key lookup failed (DNS)"
    if status in (Status.NXDOMAIN, Status.NODATA):
        return "permerror", "no key for signature"
    key = fetch.cache.get(name)
    if key is not None:
        ktags = _tags(key)
        if ktags and not _WS.sub(b"", ktags.get(b"p", b"-")):
            return "fail", "key revoked"
        try:
            dkim.evaluate_pk(name, key)
        except Exception:  # KeyFormatError, binascii.Error, a bad k=/s=: all unusable
            return "permerror", "bad key record"
    return "fail", "signature did not verify"
