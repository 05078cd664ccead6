"""DKIM signing of our own mail (RFC 6376, RFC 8463): relaxed/relaxed, RSA and ed25519.

Owns :class:`DkimSigner` and the signing primitives ARC sealing shares
(:func:`split_message`, :func:`relaxed_header`, :func:`relaxed_body`, :func:`sign_bytes`,
:func:`fold_b64`). Signing is pure CPU: no DNS, no file access per message (keys are
parsed once, by :meth:`DkimSigner.from_settings`); the lead calls :meth:`DkimSigner.sign`
in a worker thread on the accept path. OpenSSL (``cryptography``) does the RSA work,
which is what keeps a 2048-bit signature near a millisecond.

Invariants: the returned header lines use the message's own line ending (CRLF, or LF
for an LF-only message) and end with it; the hash covers exactly the text returned
(minus the b= value), so any verifier's relaxed canonicalization reproduces it; a
message without a signable From: domain, or without a key for it, gets ``b""``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding

from ironpost.auth.dkim_keys import PrivateKey, SigningKey, load_private_keys
from ironpost.config.tables import LookupTable

_WSP_RUN = re.compile(rb"[ \t]+")
_TRAILING_LINES = re.compile(rb"(?:\r\n)+\Z")
_FIELD_SPLIT = re.compile(rb"\r\n(?![ \t])")
_ANGLE = re.compile(rb"<([^<>]*)>")

Header = tuple[bytes, bytes]  # (name as written, raw value after the colon, folded)


class _Settings(Protocol):
    def text(self, name: str) -> str: ...

    def words(self, name: str) -> tuple[str, ...]: ...

    def tables(self, name: str) -> tuple[LookupTable, ...]: ...

    def boolean(self, name: str) -> bool: ...


# --- canonicalization (RFC 6376 §3.4.2, §3.4.4) --------------------------------------


def to_crlf(content: bytes) -> bytes:
    """Every line ending as CRLF (a stored message may be LF-only)."""
    if b"\n" not in content.replace(b"\r\n", b""):
        return content
    return content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def split_message(content: bytes) -> tuple[list[Header], bytes]:
    """(header fields in order, body), from CRLF text; lines without a colon are skipped."""
    end = content.find(b"\r\n\r\n")
    if end < 0:
        block, body = content.removesuffix(b"\r\n"), b""
    else:
        block, body = content[:end], content[end + 4 :]
    headers: list[Header] = []
    for field in _FIELD_SPLIT.split(block):
        name, colon, value = field.partition(b":")
        if colon and name and not name[:1].isspace():
            headers.append((name.rstrip(b" \t"), value))
    return headers, body


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """``name:value`` relaxed: lower-case name, unfolded, WSP runs as one SP, trimmed."""
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip().lower() + b":" + value


def relaxed_body(body: bytes) -> bytes:
    """The relaxed body: WSP runs as one SP, none at line ends, no trailing empty lines,
    a final CRLF; an empty body stays empty (RFC 6376 §3.4.4)."""
    if not body:
        return b""
    body = _WSP_RUN.sub(b" ", body).replace(b" \r\n", b"\r\n")
    if not body.endswith(b"\r\n"):
        # As dkimpy (our verifier) does: WSP ending an unterminated last line is kept.
        body += b"\r\n"
    body = _TRAILING_LINES.sub(b"\r\n", body)
    return b"" if body == b"\r\n" else body


def signed_header_block(headers: Sequence[Header], names: Iterable[bytes]) -> bytes:
    """The canonical fields ``h=`` names: each name takes the last unused instance
    (bottom-up, RFC 6376 §5.4.2); a name with none left adds nothing."""
    by_name: dict[bytes, list[Header]] = {}
    for h in headers:
        by_name.setdefault(h[0].lower(), []).append(h)
    out = []
    for name in names:
        stack = by_name.get(name)
        if stack:
            h = stack.pop()
            out.append(relaxed_header(h[0], h[1]) + b"\r\n")
    return b"".join(out)


def sign_bytes(private: PrivateKey, data: bytes) -> bytes:
    """rsa-sha256 over ``data``, or ed25519 over SHA-256(``data``) (RFC 8463 §3)."""
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return private.sign(hashlib.sha256(data).digest())
    return private.sign(data, padding.PKCS1v15(), hashes.SHA256())


def fold_b64(value: bytes, first: int, eol: bytes, width: int = 76) -> bytes:
    """Base64 folded with ``eol`` + TAB; ``first`` columns are already used on line one."""
    chunks = [value[: max(width - first, 8)]]
    rest = value[len(chunks[0]) :]
    chunks += [rest[i : i + width] for i in range(0, len(rest), width)]
    return (eol + b"\t").join(c for c in chunks if c)


def fold_tags(tags: Sequence[bytes], eol: bytes, width: int = 78) -> bytes:
    """``tag=value;`` items joined by spaces, folded before an item that would pass
    ``width`` and inside a long h= list at its colons."""
    lines: list[bytes] = []
    line = b""
    for tag in tags:
        parts = tag.split(b":") if tag.startswith(b"h=") else [tag]
        for n, part in enumerate(parts):
            piece = part + (b":" if n < len(parts) - 1 else b"")
            sep = b"" if n else b" "
            if line and len(line) + len(sep) + len(piece) > width:
                lines.append(line)
                line = b"\t" + piece
            else:
                line = line + sep + piece if line else piece
    lines.append(line)
    return (eol).join(lines)


# --- the signer -----------------------------------------------------------------------


def from_domain_of(headers: Sequence[Header]) -> str | None:
    """The domain of the (first) From: address, lower-case; None when there is none."""
    value = next((v for n, v in headers if n.lower() == b"from"), None)
    if value is None:
        return None
    value = value.replace(b"\r\n", b"")
    angle = _ANGLE.findall(value)
    addr = angle[-1] if angle else value.split(b",")[0]
    _, at, domain = addr.strip().rpartition(b"@")
    domain = domain.strip(b" \t>").rstrip(b".").lower()
    if not at or not domain:
        return None
    try:
        return domain.decode("ascii")
    except UnicodeDecodeError:
        return None  # an EAI (UTF-8) domain: keys are keyed by A-label; not signed


class DkimSigner:
    """Signs with the keys of the signing table; one DKIM-Signature per key of a domain."""

    def __init__(
        self,
        keys: Mapping[str, Sequence[tuple[SigningKey, PrivateKey]]],
        *,
        headers: Iterable[str] = ("from", "to", "subject", "date", "message-id"),
        oversign: Iterable[str] = ("from",),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = {d.lower(): tuple(k) for d, k in keys.items() if k}
        self._sign = frozenset(h.lower().encode("ascii") for h in headers) | {b"from"}
        self._oversign = tuple(h.lower().encode("ascii") for h in oversign)
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: _Settings, config_dir: Path | None) -> DkimSigner:
        """Reads and parses every key of ``dkim_signing_table`` once. Raises
        :class:`~ironpost.auth.dkim_keys.DkimKeyError` naming an unreadable key file."""
        keys: dict[str, list[tuple[SigningKey, PrivateKey]]] = {}
        for key, private in load_private_keys(settings, config_dir):
            keys.setdefault(key.domain, []).append((key, private))
        return cls(
            keys,
            headers=settings.words("dkim_signature_headers"),
            oversign=settings.words("dkim_oversign_headers"),
        )

    def domains(self) -> frozenset[str]:
        return frozenset(self._keys)

    def keys(self, domain: str) -> tuple[tuple[SigningKey, PrivateKey], ...]:
        return self._keys.get(domain.lower(), ())

    def signed_names(self, headers: Sequence[Header]) -> list[bytes]:
        """The h= list: each configured field once per instance, then the oversigned."""
        names = [n.lower() for n, _ in headers if n.lower() in self._sign]
        names += self._oversign
        if b"from" not in names:
            names.append(b"from")  # RFC 6376 §5.4: From MUST be signed
        return names

    def sign(self, content: bytes, *, from_domain: str | None = None) -> bytes:
        """DKIM-Signature field(s) to prepend; ``b""`` when no key applies."""
        if not self._keys:
            return b""
        first = content.find(b"\n")
        eol = b"\n" if first > 0 and content[first - 1] != 13 else b"\r\n"
        crlf = to_crlf(content)
        headers, body = split_message(crlf)
        domain = from_domain.lower() if from_domain else from_domain_of(headers)
        keys = self._keys.get(domain or "")
        if not keys:
            return b""
        bh = base64.b64encode(hashlib.sha256(relaxed_body(body)).digest())
        names = self.signed_names(headers)
        now = str(int(self._clock())).encode("ascii")
        out = []
        for key, private in keys:
            out.append(self._one(key, private, headers, names, bh, now, eol))
        return b"".join(out)

    def _one(
        self,
        key: SigningKey,
        private: PrivateKey,
        headers: Sequence[Header],
        names: Sequence[bytes],
        bh: bytes,
        now: bytes,
        eol: bytes,
    ) -> bytes:
        algorithm = b"ed25519-sha256" if key.algorithm == "ed25519" else b"rsa-sha256"
        tags = [
            b"v=1;",
            b"a=" + algorithm + b";",
            b"c=relaxed/relaxed;",
            b"d=" + key.domain.encode("ascii") + b";",
            b"s=" + key.selector.encode("ascii") + b";",
            b"t=" + now + b";",
            b"h=" + b":".join(names) + b";",
            b"bh=" + bh + b";",
        ]
        value = b" " + fold_tags(tags, b"\r\n", width=78 - len(b"DKIM-Signature:")) + b"\r\n\tb="
        data = signed_header_block(headers, names) + relaxed_header(b"DKIM-Signature", value)
        signature = base64.b64encode(sign_bytes(private, data))
        field = b"DKIM-Signature:" + value + fold_b64(signature, 3, b"\r\n") + b"\r\n"
        return field if eol == b"\r\n" else field.replace(b"\r\n", b"\n")
