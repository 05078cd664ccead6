"""SMTP envelope grammar: mailbox paths (RFC 5321, RFC 6531) and ESMTP parameters.

Owns :class:`Path`, :func:`parse_path`, :class:`MailParams`, :class:`RcptParams` and
their parsers. Invariants:

* parsers raise only :class:`~ironpost.protocol.errors.AddressError` /
  :class:`~ironpost.protocol.errors.ParamError`, each carrying the precise reply;
* a parsed :class:`Path`'s ``address`` re-parses to the same local part and domain;
* ``%`` and ``!`` are ordinary local-part characters: relay policy interprets them.

Error replies: syntax (missing ``@``, empty domain, RFC 5322 comments, bad literal, a
path over 256 octets) is ``501 5.1.3``; a local part over 64 octets is ``553 5.1.3``;
UTF-8 without SMTPUTF8 is ``553 5.6.7``. Bare addresses without angle brackets are
accepted as Postfix does (``strict_rfc821_envelopes = no``), never with spaces in them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ironpost.protocol import replies
from ironpost.protocol.errors import AddressError, ParamError
from ironpost.protocol.replies import Reply

MAX_LOCAL_PART = 64  # octets, RFC 5321 4.5.3.1.1
MAX_PATH = 256  # octets including the angle brackets, RFC 5321 4.5.3.1.3
MAX_DOMAIN = 255  # octets, RFC 5321 4.5.3.1.2
MAX_ENVID = 100  # decoded characters, RFC 3461 4.4

# Non-ASCII code points as RFC 6531 allows them; surrogates are not characters.
_U8 = "\u0080-\ud7ff\ue000-\U0010ffff"
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"  # "-" escaped: other ranges get appended
_LABEL_ASCII = "[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_LABEL = f"[A-Za-z0-9_{_U8}](?:[A-Za-z0-9_{_U8}-]{{0,61}}[A-Za-z0-9_{_U8}])?"

# The common case (plain dot-atom@host, ASCII) in one C-level match: the hot path.
_FAST = re.compile(rf"([{_ATEXT}]+(?:\.[{_ATEXT}]+)*)@({_LABEL_ASCII}(?:\.{_LABEL_ASCII})*)\.?")
_DOT_STRING = re.compile(rf"[{_ATEXT}{_U8}]+(?:\.[{_ATEXT}{_U8}]+)*")
_QUOTED = re.compile(rf'"((?:[\x20\x21\x23-\x5b\x5d-\x7e{_U8}]|\\[\x20-\x7e])*)"')
_QUOTED_PAIR = re.compile(r"\\([\x20-\x7e])")
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_LITERAL = r"\[[^\[\]\\\s]*\]"
_AT_DOMAIN = rf"@(?:{_LITERAL}|[^,:@\[\]\s]+)"
_ROUTE = re.compile(rf"({_AT_DOMAIN}(?:,{_AT_DOMAIN})*):")


@dataclass(frozen=True, slots=True)
class Path:
    """A reverse- or forward-path. ``route`` (RFC 5321 source route) is kept for logging
    but never used for routing. ``null`` is the ``<>`` path (local and domain empty)."""

    local: str
    domain: str
    route: tuple[str, ...] = ()
    null: bool = False

    @property
    def address(self) -> str:
        """Canonical ``local@domain``; the local part quoted only when it must be."""
        if self.null:
            return ""
        local = self.local
        if not _DOT_STRING.fullmatch(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}" if self.domain else local

    @property
    def domain_lower(self) -> str:
        return self.domain.lower()

    @property
    def is_utf8(self) -> bool:
        return not (self.local.isascii() and self.domain.isascii())

    def __str__(self) -> str:
        return f"<{self.address}>"


NULL_PATH = Path("", "", (), True)


def _octets(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def parse_path(text: str, *, smtputf8: bool, allow_postmaster: bool = False) -> Path:
    """Parse a ``MAIL FROM``/``RCPT TO`` path (with or without angle brackets).

    ``allow_postmaster`` accepts a bare ``postmaster`` without a domain, as RFC 5321
    4.5.1 requires for ``RCPT TO``. Raises :class:`AddressError`.
    """
    bracketed = text.startswith("<") and text.endswith(">") and len(text) >= 2
    inner = text[1:-1] if bracketed else text
    if text.isascii():
        m = _FAST.fullmatch(inner)
        if m is not None and len(inner) <= MAX_PATH - 2:
            local, domain = m.group(1, 2)
            if len(local) <= MAX_LOCAL_PART and len(domain) <= MAX_DOMAIN:
                return Path(local, domain)
    elif not smtputf8:
        raise AddressError(replies.UTF8_NOT_NEGOTIATED)
    return _parse_full(inner, bracketed, allow_postmaster)


def _parse_full(inner: str, bracketed: bool, allow_postmaster: bool) -> Path:
    if not bracketed and (not inner or any(c in inner for c in "<> \t")):
        raise AddressError(replies.BAD_ADDRESS_SYNTAX)
    if _octets(inner) > MAX_PATH - 2:
        raise AddressError(replies.ADDRESS_TOO_LONG)
    if not inner:
        return NULL_PATH
    route: tuple[str, ...] = ()
    if inner.startswith("@"):
        m = _ROUTE.match(inner)
        if m is None:
            raise AddressError(replies.BAD_ADDRESS_SYNTAX)
        route = tuple(_check_domain(d[1:]) for d in m.group(1).split(","))
        inner = inner[m.end() :]
    if inner.startswith('"'):
        q = _QUOTED.match(inner)
        if q is None:
            raise AddressError(replies.BAD_ADDRESS_SYNTAX)
        local = _QUOTED_PAIR.sub(r"\1", q.group(1))
        raw_local_end = q.end()
    else:
        d = _DOT_STRING.match(inner)
        if d is None:
            raise AddressError(replies.BAD_ADDRESS_SYNTAX)
        local = d.group(0)
        raw_local_end = d.end()
        last_at = inner.rfind("@")
        if last_at > raw_local_end and all(
            _DOT_STRING.fullmatch(part) for part in inner[:last_at].split("@")
        ):
            # ``user@remote@ours``: Postfix reads the last ``@`` as the separator, so the
            # local part holds an ``@`` (a routed address the relay policy refuses with
            # 554 5.7.1 rather than a bare syntax error).
            local = inner[:last_at]
            raw_local_end = last_at
    if _octets(inner[:raw_local_end]) > MAX_LOCAL_PART:
        raise AddressError(replies.LOCAL_PART_TOO_LONG)
    rest = inner[raw_local_end:]
    if not rest:
        if allow_postmaster and not route and local.lower() == "postmaster":
            return Path(local, "")
        raise AddressError(replies.BAD_ADDRESS_SYNTAX)
    if rest[0] != "@":
        raise AddressError(replies.BAD_ADDRESS_SYNTAX)
    return Path(local, _check_domain(rest[1:]), route)


def _check_domain(domain: str) -> str:
    """Validate a domain or address literal; strip one trailing dot (as Postfix does)."""
    if domain.startswith("["):
        if not domain.endswith("]"):
            raise AddressError(replies.BAD_ADDRESS_SYNTAX)
        body = domain[1:-1]
        try:
            if body[:5].lower() == "ipv6:":
                if "%" in body:  # a scope id is not an address literal
                    raise ValueError(body)
                ipaddress.IPv6Address(body[5:])
            else:
                ipaddress.IPv4Address(body)
        except ValueError:
            raise AddressError(replies.BAD_ADDRESS_SYNTAX) from None
        return domain
    if domain.endswith("."):
        domain = domain[:-1]
    if not _DOMAIN.fullmatch(domain) or _octets(domain) > MAX_DOMAIN:
        raise AddressError(replies.BAD_ADDRESS_SYNTAX)
    return domain


# -- ESMTP parameters -------------------------------------------------------------

BodyType = Literal["7BIT", "8BITMIME", "BINARYMIME"]
RetType = Literal["FULL", "HDRS"]

_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_VALUE = re.compile(rf"[\x21-\x3c\x3e-\x7e{_U8}]+")
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-Fa-f]{2})*")
_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")
_ADDR_TYPE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_BODIES: dict[str, BodyType] = {"7BIT": "7BIT", "8BITMIME": "8BITMIME", "BINARYMIME": "BINARYMIME"}
_RETS: dict[str, RetType] = {"FULL": "FULL", "HDRS": "HDRS"}
_NOTIFY = ("SUCCESS", "FAILURE", "DELAY")


@dataclass(frozen=True, slots=True)
class MailParams:
    size: int | None = None
    body: BodyType | None = None
    smtputf8: bool = False
    ret: RetType | None = None
    envid: str | None = None  # xtext-decoded
    auth: str | None = None  # xtext-decoded (RFC 4954 ``AUTH=`` mailbox or ``<>``)


@dataclass(frozen=True, slots=True)
class RcptParams:
    notify: tuple[str, ...] | None = None  # ("NEVER",) or a subset of SUCCESS/FAILURE/DELAY
    orcpt: str | None = None  # "addr-type;decoded-address", the type kept as sent


def unsupported_option(keyword: str) -> Reply:
    # The keyword already matched esmtp-keyword syntax, so echoing it is safe.
    return Reply(555, "5.5.4", f"Unsupported option: {keyword[:64]}")


def xtext_decode(text: str) -> str:
    """Decode RFC 3461 xtext; raises ParamError on bad syntax or non-printable results."""
    if not _XTEXT.fullmatch(text):
        raise ParamError(replies.BAD_PARAMETER)
    decoded = _HEX.sub(lambda m: chr(int(m.group(1), 16)), text) if "+" in text else text
    if not all(" " <= c <= "~" for c in decoded):
        raise ParamError(replies.BAD_PARAMETER)
    return decoded


def _split(tokens: Sequence[str]) -> dict[str, tuple[str, str | None]]:
    """Keyword (upper-cased) -> (keyword as sent, value). Rejects bad syntax, duplicates."""
    out: dict[str, tuple[str, str | None]] = {}
    for token in tokens:
        key, eq, value = token.partition("=")
        if not _KEYWORD.fullmatch(key) or (eq and not _VALUE.fullmatch(value)):
            raise ParamError(replies.BAD_PARAMETER)
        upper = key.upper()
        if upper in out:
            raise ParamError(replies.DUPLICATE_PARAMETER)
        out[upper] = (key, value if eq else None)
    return out


def _need(value: str | None) -> str:
    if value is None:
        raise ParamError(replies.BAD_PARAMETER)
    return value


def parse_mail_params(tokens: Sequence[str]) -> MailParams:
    """Parse MAIL FROM parameters (SIZE, BODY, SMTPUTF8, RET, ENVID, AUTH)."""
    if not tokens:
        return MailParams()
    size: int | None = None
    body: BodyType | None = None
    smtputf8 = False
    ret: RetType | None = None
    envid: str | None = None
    auth: str | None = None
    for upper, (key, value) in _split(tokens).items():
        if upper == "SIZE":
            v = _need(value)
            if not (v.isascii() and v.isdigit()) or len(v) > 20:
                raise ParamError(replies.BAD_PARAMETER)
            size = int(v)
        elif upper == "BODY":
            b = _BODIES.get(_need(value).upper())
            if b is None:
                raise ParamError(replies.BAD_PARAMETER)
            body = b
        elif upper == "SMTPUTF8":
            if value is not None:
                raise ParamError(replies.BAD_PARAMETER)
            smtputf8 = True
        elif upper == "RET":
            r = _RETS.get(_need(value).upper())
            if r is None:
                raise ParamError(replies.BAD_PARAMETER)
            ret = r
        elif upper == "ENVID":
            envid = xtext_decode(_need(value))
            if len(envid) > MAX_ENVID:
                raise ParamError(replies.BAD_PARAMETER)
        elif upper == "AUTH":
            auth = xtext_decode(_need(value))
        else:
            raise ParamError(unsupported_option(key))
    return MailParams(size, body, smtputf8, ret, envid, auth)


def parse_rcpt_params(tokens: Sequence[str]) -> RcptParams:
    """Parse RCPT TO parameters (NOTIFY, ORCPT; RFC 3461)."""
    if not tokens:
        return RcptParams()
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    for upper, (key, value) in _split(tokens).items():
        if upper == "NOTIFY":
            items = tuple(dict.fromkeys(v.upper() for v in _need(value).split(",")))
            if items != ("NEVER",) and not all(i in _NOTIFY for i in items):
                raise ParamError(replies.BAD_PARAMETER)
            notify = items
        elif upper == "ORCPT":
            addr_type, semi, addr = _need(value).partition(";")
            if not semi or not _ADDR_TYPE.fullmatch(addr_type) or not addr:
                raise ParamError(replies.BAD_PARAMETER)
            orcpt = f"{addr_type};{xtext_decode(addr)}"
        else:
            raise ParamError(unsupported_option(key))
    return RcptParams(notify, orcpt)


def xtext(text: str) -> str:
    """RFC 3461 xtext: printable ASCII but ``+`` and ``=`` as is, every other octet ``+HH``."""
    out = []
    for byte in text.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)
