"""Outbound TLS policy: smtp_tls_security_level and smtp_tls_policy_maps -> a per-destination
:class:`TlsPolicy`, and the certificate name matching of the ``secure`` level.

Owns the policy-map lookup order (Postfix ``smtp_tls_policy_maps``: the next hop as
written, e.g. ``[mx.example]:587``, then the bare domain, then ``.parent`` domains) and the
meaning of each level:

* ``none``: never STARTTLS; ``may``: STARTTLS when offered, certificate not checked,
  plaintext when the handshake fails; ``encrypt``: TLS required, certificate not checked;
* ``verify``: TLS required, chain trusted, the name matches the MX host name (as Postfix:
  ``match=hostname``); ``secure``: chain trusted, the name matches the ``match=`` patterns,
  by default the next-hop domain and its subdomains (``nexthop:dot-nexthop``).

Invariant (fail closed): a level we cannot honour (``dane-only``, ``fingerprint``, an
unknown word) is :attr:`TlsPolicy.unsupported` and defers the mail; it never degrades to
plaintext. ``dane`` without a DNSSEC resolver is ``may``, as in Postfix.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from ironpost.config.tables import LookupTable


class TlsLevel(enum.IntEnum):
    NONE = 0
    MAY = 1
    ENCRYPT = 2
    VERIFY = 3
    SECURE = 4


_LEVELS = {
    "": TlsLevel.NONE,  # Postfix's own default (empty) means no TLS
    "none": TlsLevel.NONE,
    "may": TlsLevel.MAY,
    "dane": TlsLevel.MAY,
    "encrypt": TlsLevel.ENCRYPT,
    "verify": TlsLevel.VERIFY,
    "secure": TlsLevel.SECURE,
}


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    level: TlsLevel
    match: tuple[str, ...] = ()  # secure/verify: patterns (lowercased), "" = default
    unsupported: str | None = None  # the level word we cannot honour

    @property
    def mandatory(self) -> bool:
        return self.level >= TlsLevel.ENCRYPT or self.unsupported is not None

    @property
    def verify(self) -> bool:
        return self.level >= TlsLevel.VERIFY

    def names(self, mx_host: str, nexthop_domain: str) -> tuple[str, ...]:
        """The certificate names acceptable for this connection (verify/secure)."""
        patterns = self.match or (
            ("hostname",) if self.level is TlsLevel.VERIFY else ("nexthop", "dot-nexthop")
        )
        out: list[str] = []
        for p in patterns:
            if p == "hostname":
                out.append(mx_host)
            elif p == "nexthop":
                out.append(nexthop_domain)
            elif p == "dot-nexthop":
                out.append("." + nexthop_domain)
            else:
                out.append(p)
        return tuple(n.lower().rstrip(".") for n in out)


def parse_policy(text: str) -> TlsPolicy:
    """A policy map value or a level word: ``secure match=.example.com:example.com``."""
    words = text.split()
    word = words[0].lower() if words else ""
    level = _LEVELS.get(word)
    match: tuple[str, ...] = ()
    for attr in words[1:]:
        name, _, value = attr.partition("=")
        if name.lower() == "match":
            match = tuple(m.lower() for m in value.split(":") if m)
    if level is None:
        return TlsPolicy(TlsLevel.SECURE, match, unsupported=word or "?")
    return TlsPolicy(level, match)


class TlsPolicies:
    """The default level plus ``smtp_tls_policy_maps``; ``for_nexthop`` is per delivery."""

    def __init__(self, default_level: str, maps: Sequence[LookupTable] = ()) -> None:
        self.default = parse_policy(default_level)
        self._maps = tuple(maps)

    def for_nexthop(self, nexthop: str, domain: str) -> TlsPolicy:
        """``nexthop`` as written (``[mx.example]:25``), ``domain`` the bare host/domain."""
        if not self._maps:
            return self.default
        keys = [nexthop.lower()]
        if domain.lower() not in keys:
            keys.append(domain.lower())
        labels = domain.lower().split(".")
        keys.extend("." + ".".join(labels[i:]) for i in range(1, len(labels)))
        for key in keys:
            for table in self._maps:
                value = table.lookup(key)
                if value is not None:
                    return parse_policy(value)
        return self.default


def name_matches(pattern: str, cert_name: str) -> bool:
    """``pattern`` (``example.com`` exact, ``.example.com`` any subdomain) vs a certificate
    DNS name, which may be a wildcard of one leftmost label (RFC 6125)."""
    cert_name = cert_name.lower().rstrip(".")
    if pattern.startswith("."):
        if cert_name.startswith("*."):
            return cert_name[1:].endswith(pattern) or cert_name[1:] == pattern
        return cert_name.endswith(pattern)
    if cert_name.startswith("*."):
        head, _, rest = pattern.partition(".")
        return bool(head) and rest == cert_name[2:]
    return cert_name == pattern


def certificate_names(peercert: dict[str, object] | None) -> list[str]:
    """DNS names of a verified peer certificate (``SSLObject.getpeercert()``): the SANs,
    or the CN when there are none."""
    if not peercert:
        return []
    sans = peercert.get("subjectAltName") or ()
    names = [v for k, v in sans if k == "DNS"]  # type: ignore[attr-defined]
    if names:
        return [str(n) for n in names]
    for rdn in peercert.get("subject") or ():  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                names.append(value)
    return [str(n) for n in names]
