"""Personal data out of log text: pseudonymisation (keyed HMAC tokens) and redaction.

Owns the regular expression that finds, in one pass over a log line's text, every
piece of personal data ironpost writes: addresses in ``<…>`` (``from=<>``, ``to=<>``,
``orig_to=<>``, replies quoting an address), ``sasl_username=``, client names before
``[ip]`` (``connect from NAME[IP]``, ``client=NAME[IP]``), ``helo=<NAME>``, IP addresses
in brackets and bare IPv4/IPv6 addresses and email addresses anywhere in the text.

Invariants:
- A token keeps the shape the log tools parse: an address stays ``local@domain``
  (``u-<12 hex>@d-<8 hex>``), an IP in brackets stays in brackets (``[ip-<12 hex>]``), so
  pflogsumm still counts and groups (by token).
- Tokens are a function of (key, normalised value) only: one key gives one token per
  address (case-insensitive) or IP (any spelling of the same address), so an
  administrator can follow one sender through the log; another key gives other tokens.
- Text that only looks like an IP (``13:49:08``, ``1.2.3``) is left alone: candidates are
  checked with :mod:`ipaddress` before they are replaced.
- The null sender ``<>`` and the client name ``unknown`` are not personal and stay.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Protocol

#: Characters of an unquoted local part (RFC 5322 atext plus dots), and of a domain.
# ``=`` is atext, but a bare ``key=user@domain`` must keep its ``key=``.
_ATEXT = r"[\w.!#$%&'*+/?^`{|}~-]"
_DOMAIN = r"[\w-]+(?:\.[\w-]+)*"

#: The kinds of personal data, in the order the scan tries them at each position, each
#: with a test that is true of every text the kind can match in. A line is scanned
#: only for the kinds whose test passes (:func:`_pattern_for`): most lines hold two or
#: three kinds, and each kind left out saves a regex branch at every character.
_KINDS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    (r"(?P<login>(?<=sasl_username=)[^,\s]+)", lambda t: "sasl_username=" in t),
    (r"(?P<helo>(?<=helo=<)[^<>]*(?=>))", lambda t: "helo=<" in t),
    (r"<(?P<angle>[^<>]*@[^<>]*)>", lambda t: "@" in t and "<" in t),
    (r"(?P<kvangle>(?<==<)[^<>@]+(?=>))", lambda t: "=<" in t),
    (
        r"(?:(?<=from )|(?<=client=))(?P<cname>[^\s\[\]<>]+)(?=\[)",
        lambda t: "[" in t and ("from " in t or "client=" in t),
    ),
    (r"\[(?P<bracket>(?:IPv6:)?[0-9A-Fa-f:.]+)\]", lambda t: "[" in t),
    (rf"(?P<bare>(?<!{_ATEXT}){_ATEXT}+@{_DOMAIN})", lambda t: "@" in t),
    (
        r"(?P<v4>(?<![\w.:])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d))",
        lambda t: t.count(".") >= 3,
    ),
    (
        r"(?P<v6>(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
        r"(?:(?<=:)(?:\d{1,3}\.){3}\d{1,3})?(?!\w|\.\d))",
        lambda t: t.count(":") >= 2,
    ),
)

#: Every kind in one pattern: what a line is scanned with when every test passes.
_PATTERN = re.compile("|".join(branch for branch, _test in _KINDS))
_NOTHING = re.compile(r"(?!)")
_patterns: dict[int, re.Pattern[str]] = {}


def _pattern_for(text: str) -> re.Pattern[str]:
    """The alternation of the kinds that can occur in ``text``, in ``_KINDS`` order.

    Leaving out a branch that cannot match anywhere in the text changes nothing: at each
    position the first branch that matches is the same one. At most 2**9 patterns."""
    key = 0
    for bit, (_branch, test) in enumerate(_KINDS):
        if test(text):
            key |= 1 << bit
    pattern = _patterns.get(key)
    if pattern is None:
        branches = [branch for bit, (branch, _t) in enumerate(_KINDS) if key >> bit & 1]
        pattern = _patterns[key] = re.compile("|".join(branches)) if branches else _NOTHING
    return pattern


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``text`` spells (``IPv6:`` prefix and zone allowed), or None."""
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:192.0.2.1 is 192.0.2.1: one person, one token
    return ip


class Scrubber(Protocol):
    """Turns a log line's text into one without personal data."""

    def __call__(self, text: str) -> str: ...


class _Rewriter:
    """The one-pass substitution; subclasses say what each kind of value becomes."""

    def __init__(self, cache_size: int = 8192) -> None:
        # Per-value caches: a busy log repeats the same few thousand addresses and IPs.
        self.address: Callable[[str], str] = lru_cache(maxsize=cache_size)(self._address)
        self.host: Callable[[str], str] = lru_cache(maxsize=cache_size)(self._host)
        self._ip_text: Callable[[str], str | None] = lru_cache(maxsize=cache_size)(
            self._ip_from_text
        )

    def __call__(self, text: str) -> str:
        return _pattern_for(text).sub(self._replace, text)

    def _replace(self, m: re.Match[str]) -> str:
        kind = m.lastgroup
        value = m.group(kind) if kind else ""
        if kind in ("angle", "kvangle"):
            return f"<{self.address(value)}>" if kind == "angle" else self.address(value)
        if kind in ("bare", "login"):
            return self.address(value)
        if kind in ("cname", "helo"):
            if value.startswith("["):  # helo=<[192.0.2.1]>: an address literal
                ip = self._ip_text(value[1:-1])
                return value if ip is None else f"[{ip}]"
            return value if value in ("unknown", "") else self.host(value)
        if kind == "bracket":
            ip = self._ip_text(value)
            return m.group(0) if ip is None else f"[{ip}]"
        ip = self._ip_text(value)  # bare v4 / v6
        return value if ip is None else ip

    def _ip_from_text(self, text: str) -> str | None:
        ip = parse_ip(text)
        if ip is None and text.endswith(":"):
            # "address 2001:db8::1: reason": the colon is the sentence's, not the IP's.
            ip = parse_ip(text[:-1])
            return None if ip is None else self.ip(ip) + ":"
        return None if ip is None else self.ip(ip)

    def _address(self, address: str) -> str:
        raise NotImplementedError

    def _host(self, name: str) -> str:
        raise NotImplementedError

    def ip(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        raise NotImplementedError


def _split(address: str) -> tuple[str, str | None]:
    local, at, domain = address.rpartition("@")
    return (local, domain) if at else (address, None)


class Pseudonymizer(_Rewriter):
    """Keyed HMAC-SHA256 tokens: ``u-…@d-…``, ``ip-…``, ``h-…``."""

    def __init__(self, key: bytes, cache_size: int = 8192) -> None:
        if len(key) < 16:
            raise ValueError("pseudonymisation key must be at least 16 bytes")
        self._key = key
        super().__init__(cache_size)

    def _mac(self, kind: bytes, value: str, length: int) -> str:
        data = kind + b"\0" + value.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, data, "sha256").hexdigest()[:length]

    def _address(self, address: str) -> str:
        # The user token covers the whole address, so one local part at two domains is
        # two people; the domain token lets tools still group by (pseudonymous) domain.
        normal = address.strip().lower()
        _local, domain = _split(normal)
        user = f"u-{self._mac(b'u', normal, 12)}"
        if domain is None:
            return user
        if domain.startswith("[") and domain.endswith("]"):
            ip = self._ip_text(domain[1:-1])
            if ip is not None:
                return f"{user}@[{ip}]"
        return f"{user}@d-{self._mac(b'd', domain, 8)}"

    def _host(self, name: str) -> str:
        return f"h-{self._mac(b'h', name.lower().rstrip('.'), 8)}"

    def ip(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        digest = hmac.new(self._key, b"i\0" + ip.packed, "sha256").hexdigest()
        return f"ip-{digest[:12]}"

    def user_token(self, address: str) -> str:
        """The ``u-…`` part of ``address``'s token: what ``privacy find`` searches for."""
        return self.address(address).partition("@")[0]


class Redactor(_Rewriter):
    """Not keyed: ``*@example.com``, ``192.0.2.x``, ``2001:db8:1::/48``, ``*.provider.net``."""

    def _address(self, address: str) -> str:
        _local, domain = _split(address.strip())
        if domain is None:
            return "*"
        if domain.startswith("[") and domain.endswith("]"):
            ip = self._ip_text(domain[1:-1])
            if ip is not None:
                return f"*@[{ip}]"
        return f"*@{domain.lower()}"

    def _host(self, name: str) -> str:
        # Reverse names often spell the address (192-0-2-10.dsl.example.net): the first
        # label goes, the provider stays.
        _, dot, rest = name.partition(".")
        return f"*.{rest.lower()}" if dot and rest else "*"

    def ip(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        if isinstance(ip, ipaddress.IPv4Address):
            return str(ip).rsplit(".", 1)[0] + ".x"
        net = ipaddress.IPv6Network((int(ip) >> 80 << 80, 48))
        return str(net)


def key_id(key: bytes) -> str:
    """A short public name for a key (never the key): logged when a key starts."""
    return hashlib.sha256(b"ironpost maillog key id\0" + key).hexdigest()[:8]


def identity(text: str) -> str:
    return text
