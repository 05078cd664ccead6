"""ARC (RFC 8617): verify the chain a message arrived with, and seal what we forward.

Owns :func:`verify_arc` (dkimpy's ARC validation, keys fetched through ironpost's
resolver as for DKIM) and :func:`arc_seal`, which adds our ARC set with the signing
primitives of :mod:`ironpost.auth.dkim_sign` and the signer's RSA key (RFC 8617 allows
rsa-sha256 only); dkimpy's verifier is the test oracle for it.

Invariants: both never raise for bad input; :func:`arc_seal` is pure CPU and returns
``b""`` rather than a dishonest seal: no RSA key, 50 sets already, or an existing chain
whose validation the ``results`` text does not state (``arc=pass|fail``). The chain
validation status (cv=) is taken from that ``arc=`` result, so it says what our
verifier found; with cv=fail the seal covers its own set only, as dkimpy does.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time

import dkim  # type: ignore[import-untyped]

from ironpost.auth.dkim_sign import (
    DkimSigner,
    Header,
    fold_b64,
    fold_tags,
    relaxed_body,
    relaxed_header,
    sign_bytes,
    signed_header_block,
    split_message,
    to_crlf,
)
from ironpost.auth.dkim_verify import KeyFetcher
from ironpost.auth.dnsbridge import BlockingDns
from ironpost.auth.types import ArcResult
from ironpost.dns.types import Status

MAX_INSTANCE = 50
_ARC_NAMES = (b"arc-authentication-results", b"arc-message-signature", b"arc-seal")
_INSTANCE = re.compile(rb"(?:^|[\s;])i\s*=\s*(\d+)")
_ARC_RESULT = re.compile(r"(?:^|[\s;])arc\s*=\s*([a-z]+)", re.IGNORECASE)
_NEVER_SIGNED = frozenset({b"authentication-results", b"arc-seal", b"received", b"return-path"})

_QUIET = logging.getLogger("ironpost.auth.arc.dkimpy")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def verify_arc(content: bytes, dns: BlockingDns, *, timeout: float = 10.0) -> ArcResult:
    """The chain's validation: ``none`` (no ARC set), ``pass`` or ``fail`` with a reason."""
    try:
        arc = dkim.ARC(content, logger=_QUIET, minkey=1024)
        fetch = KeyFetcher(dns, time.monotonic() + timeout)
        cv, data, reason = arc.verify(dnsfunc=fetch)
    except Exception as exc:  # fail closed: dkimpy raising on odd input is a fail
        return ArcResult("fail", reason=f"unverifiable chain: {type(exc).__name__}")
    instance = max((int(r.get("instance", 0)) for r in data), default=0)
    if cv == dkim.CV_None:
        return ArcResult("none", reason="no ARC sets")
    if cv == dkim.CV_Pass:
        return ArcResult("pass", instance)
    if any(s in ("timeout", Status.TEMPFAIL) for s in fetch.status.values()):
        reason = f"key lookup failed (DNS): {reason}"
    return ArcResult("fail", instance, str(reason)[:120])


def _instances(headers: list[Header]) -> dict[int, dict[bytes, Header]]:
    sets: dict[int, dict[bytes, Header]] = {}
    for name, value in headers:
        low = name.lower()
        if low in _ARC_NAMES:
            m = _INSTANCE.search(value)
            if m:
                sets.setdefault(int(m.group(1)), {}).setdefault(low, (name, value))
    return sets


def arc_seal(
    content: bytes,
    signer: DkimSigner,
    *,
    authserv_id: str,
    results: str,
    domain: str | None = None,
    clock: float | None = None,
) -> bytes:
    """ARC-Seal, ARC-Message-Signature and ARC-Authentication-Results to prepend.

    ``results`` is the Authentication-Results value we computed (with or without the
    leading ``authserv-id;``). The sealing domain is ``domain``, else the signer's
    domain that ``authserv_id`` lies in, else its first domain."""
    try:
        return _seal(content, signer, authserv_id, results, domain, clock)
    except Exception:  # fail closed: forwarding without a seal beats not forwarding
        return b""


def _seal(
    content: bytes,
    signer: DkimSigner,
    authserv_id: str,
    results: str,
    domain: str | None,
    clock: float | None,
) -> bytes:
    candidates = sorted(signer.domains())
    if domain is None:
        inside = [d for d in candidates if authserv_id == d or authserv_id.endswith("." + d)]
        domain = max(inside, key=len) if inside else (candidates[0] if candidates else None)
    rsa = [(k, p) for k, p in signer.keys(domain or "") if k.algorithm == "rsa"]
    if not rsa:
        return b""
    key, private = rsa[0]
    first = content.find(b"\n")
    eol = b"\n" if first > 0 and content[first - 1] != 13 else b"\r\n"
    headers, body = split_message(to_crlf(content))
    sets = _instances(headers)
    previous = max(sets, default=0)
    instance = previous + 1
    if instance > MAX_INSTANCE:
        return b""
    found = _ARC_RESULT.search(results)
    cv = found.group(1).lower() if found else "none"
    if previous == 0:
        cv = "none"
    elif cv not in ("pass", "fail"):
        return b""

    text = results.strip()
    if text.lower().startswith(authserv_id.lower()):
        text = text[len(authserv_id) :].lstrip().removeprefix(";").strip()
    aar_value = f" i={instance}; {authserv_id}; {text or 'none'}".encode()
    aar = (b"ARC-Authentication-Results", aar_value)

    domain_b = key.domain.encode("ascii")
    selector_b = key.selector.encode("ascii")
    now = str(int(time.time() if clock is None else clock)).encode("ascii")
    sign = signer.signed_names(headers)
    names = [n for n in sign if n not in _NEVER_SIGNED]
    bh = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
    ams_tags = [
        b"i=%d;" % instance,
        b"a=rsa-sha256;",
        b"c=relaxed/relaxed;",
        b"d=" + domain_b + b";",
        b"s=" + selector_b + b";",
        b"t=" + now + b";",
        b"h=" + b":".join(names) + b";",
        b"bh=" + bh + b";",
    ]
    width = 78 - len(b"ARC-Message-Signature:")
    ams_head = b" " + fold_tags(ams_tags, b"\r\n", width=width) + b"\r\n\tb="
    data = signed_header_block(headers, names) + relaxed_header(b"ARC-Message-Signature", ams_head)
    ams_value = ams_head + fold_b64(base64.b64encode(sign_bytes(private, data)), 3, b"\r\n")
    ams = (b"ARC-Message-Signature", ams_value)

    as_tags = [
        b"i=%d;" % instance,
        b"cv=" + cv.encode("ascii") + b";",
        b"a=rsa-sha256;",
        b"d=" + domain_b + b";",
        b"s=" + selector_b + b";",
        b"t=" + now + b";",
    ]
    as_head = b" " + fold_tags(as_tags, b"\r\n", width=78 - len(b"ARC-Seal:")) + b"\r\n\tb="
    chain: list[Header] = []
    if cv != "fail":
        for i in range(1, instance):
            prior = sets.get(i, {})
            chain += [prior[n] for n in _ARC_NAMES if n in prior]
    chain += [aar, ams]
    data = b"".join(relaxed_header(n, v) + b"\r\n" for n, v in chain)
    data += relaxed_header(b"ARC-Seal", as_head)
    seal_value = as_head + fold_b64(base64.b64encode(sign_bytes(private, data)), 3, b"\r\n")
    out = b"".join(n + b":" + v + b"\r\n" for n, v in ((b"ARC-Seal", seal_value), ams, aar))
    return out if eol == b"\r\n" else out.replace(b"\r\n", b"\n")
