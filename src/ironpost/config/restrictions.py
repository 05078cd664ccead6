"""Restriction names as data: which exist, how many arguments each takes, which work.

Owns ``RESTRICTION_ARITY`` (every Postfix restriction name ironpost knows, with its
argument count), ``NOT_YET_IMPLEMENTED`` (known names the policy engine evaluates
as DUNNO, with a warning at load), :func:`parse_restrictions`, which groups a
token list into ``(name, args)``, and the grammar of a DNS list argument
(``domain[=d.d.d.d]``, :func:`parse_dnsxl_argument`), checked at load so that a bad
reply pattern is a configuration error rather than a surprise at RCPT time. Shared by
config validation and the policy package so both agree on the grammar. A bare
``type:name`` token is an access table (Postfix's implicit ``check_*_access``) and
groups as ``(token, ())``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

IMPLEMENTED: dict[str, int] = {
    "permit": 0,
    "reject": 0,
    "defer": 0,
    "dunno": 0,
    "warn_if_reject": 0,
    "permit_mynetworks": 0,
    "permit_sasl_authenticated": 0,
    "reject_unauth_destination": 0,
    "defer_unauth_destination": 0,
    "reject_unauth_pipelining": 0,
    "reject_invalid_helo_hostname": 0,
    "reject_non_fqdn_helo_hostname": 0,
    "reject_invalid_hostname": 0,
    "reject_non_fqdn_hostname": 0,
    "reject_non_fqdn_sender": 0,
    "reject_non_fqdn_recipient": 0,
    "reject_unlisted_recipient": 0,
    "reject_unlisted_sender": 0,
    "check_client_access": 1,
    "check_helo_access": 1,
    "check_sender_access": 1,
    "check_recipient_access": 1,
    "reject_sender_login_mismatch": 0,
    "reject_authenticated_sender_login_mismatch": 0,
    "reject_known_sender_login_mismatch": 0,
    "reject_unauthenticated_sender_login_mismatch": 0,
    # ironpost's own (SPF and DMARC, policy.authpolicy; see docs/authentication.md).
    "check_spf": 0,
    "reject_spf_fail": 0,
    "reject_spf_softfail": 0,
    "reject_spf_permerror": 0,
    "defer_spf_temperror": 0,
    "reject_dmarc_policy": 0,
    # DNS existence checks (policy.dnscheck).
    "reject_unknown_sender_domain": 0,
    "reject_unknown_recipient_domain": 0,
    "reject_unknown_helo_hostname": 0,
    "reject_unknown_hostname": 0,
    "reject_unknown_client_hostname": 0,
    "reject_unknown_client": 0,
    "reject_unknown_reverse_client_hostname": 0,
    "reject_unknown_forward_client_hostname": 0,
    # DNS lists (policy.dnsbl); the argument is ``domain[=d.d.d.d]``.
    "reject_rbl_client": 1,
    "reject_rhsbl_client": 1,
    "reject_rhsbl_sender": 1,
    "reject_rhsbl_helo": 1,
    "reject_rhsbl_recipient": 1,
    "reject_rhsbl_reverse_client": 1,
    "permit_dnswl_client": 1,
    "permit_rhswl_client": 1,
    "reject_maps_rbl": 0,
}

_PENDING: dict[str, int] = {
    # DNS-dependent.
    "check_client_mx_access": 1,
    "check_client_ns_access": 1,
    "check_client_a_access": 1,
    "check_reverse_client_hostname_access": 1,
    "check_reverse_client_hostname_mx_access": 1,
    "check_reverse_client_hostname_ns_access": 1,
    "check_reverse_client_hostname_a_access": 1,
    "check_helo_mx_access": 1,
    "check_helo_ns_access": 1,
    "check_helo_a_access": 1,
    "check_sender_mx_access": 1,
    "check_sender_ns_access": 1,
    "check_sender_a_access": 1,
    "check_recipient_mx_access": 1,
    "check_recipient_ns_access": 1,
    "check_recipient_a_access": 1,
    "permit_mx_backup": 0,
    # Other features not built yet.
    "check_policy_service": 1,
    "check_ccert_access": 1,
    "check_sasl_access": 1,
    "permit_tls_clientcerts": 0,
    "permit_tls_all_clientcerts": 0,
    "permit_auth_destination": 0,
    "reject_unverified_sender": 0,
    "reject_unverified_recipient": 0,
    "reject_multi_recipient_bounce": 0,
    "reject_plaintext_session": 0,
    "defer_if_permit": 0,
    "defer_if_reject": 0,
    "sleep": 1,
}

#: Every restriction name ironpost knows -> number of arguments it takes.
RESTRICTION_ARITY: dict[str, int] = {**IMPLEMENTED, **_PENDING}

#: Known names the policy engine does not evaluate yet (they act as DUNNO).
NOT_YET_IMPLEMENTED: frozenset[str] = frozenset(_PENDING)

#: Restrictions whose argument is a lookup table (``type:name``).
TABLE_ARGUMENT: frozenset[str] = frozenset(
    name for name, arity in RESTRICTION_ARITY.items() if arity and name.endswith("_access")
)

#: Restrictions whose argument is a DNS list, ``domain[=d.d.d.d]``.
DNSXL_ARGUMENT: frozenset[str] = frozenset(
    {
        "reject_rbl_client",
        "reject_rhsbl_client",
        "reject_rhsbl_sender",
        "reject_rhsbl_helo",
        "reject_rhsbl_recipient",
        "reject_rhsbl_reverse_client",
        "permit_dnswl_client",
        "permit_rhswl_client",
    }
)

Restriction = tuple[str, tuple[str, ...]]


class RestrictionError(ValueError):
    """An unknown restriction name or a missing argument; the message says which."""

    def __init__(self, message: str, token: str) -> None:
        super().__init__(message)
        self.token = token


def is_table_token(token: str) -> bool:
    """``type:name`` (a lookup table) rather than a restriction name."""
    kind, sep, _ = token.partition(":")
    return bool(sep) and kind.replace("_", "").isalnum()


def parse_restrictions(
    tokens: Iterable[str], *, classes: Iterable[str] = ()
) -> tuple[Restriction, ...]:
    """Group tokens into ``(name, args)``; ``classes`` are smtpd_restriction_classes names.

    Raises :class:`RestrictionError` on an unknown name or a missing argument.
    """
    known_classes = frozenset(classes)
    out: list[Restriction] = []
    items = list(tokens)
    i = 0
    while i < len(items):
        name = items[i]
        i += 1
        if is_table_token(name) or name in known_classes:
            out.append((name, ()))
            continue
        arity = RESTRICTION_ARITY.get(name)
        if arity is None:
            raise RestrictionError(f"unknown restriction {name!r}{_suggest(name)}", name)
        args = tuple(items[i : i + arity])
        if len(args) < arity or any(a in RESTRICTION_ARITY for a in args):
            what = "a table (type:name)" if name in TABLE_ARGUMENT else "an argument"
            raise RestrictionError(f"{name} needs {what}", name)
        if name in TABLE_ARGUMENT and not is_table_token(args[0]):
            raise RestrictionError(f"{name} needs a table (type:name), not {args[0]!r}", name)
        if name in DNSXL_ARGUMENT:
            try:
                parse_dnsxl_argument(args[0])
            except ValueError as exc:
                raise RestrictionError(f"{name} {args[0]}: {exc}", name) from None
        out.append((name, args))
        i += arity
    return tuple(out)


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, list(RESTRICTION_ARITY), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


# -- DNS list arguments -----------------------------------------------------------------


_OCTET = r"(\d+|\[[0-9.;]+\])"
_PATTERN = re.compile(rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}", re.ASCII)


class ReplyPattern:
    """Postfix's ``=d.d.d.d`` filter on a DNS list's A record (ip_match(3)).

    Each of the four octets is a number or ``[...]`` holding ``;``-separated numbers and
    ``n..m`` ranges, e.g. ``127.0.0.[2..11]`` or ``127.0.[0;1].[2;4..6]``.
    """

    __slots__ = ("_octets", "text")

    def __init__(self, text: str) -> None:
        m = _PATTERN.fullmatch(text)
        if m is None:
            raise ValueError(f"reply pattern {text!r} is not d.d.d.d")
        self.text = text
        self._octets = tuple(_octet_set(p, text) for p in m.groups())

    def matches(self, address: str) -> bool:
        parts = address.split(".")
        if len(parts) != 4 or not all(p.isdigit() for p in parts):
            return False
        return all(int(p) in allowed for p, allowed in zip(parts, self._octets, strict=True))

    def __repr__(self) -> str:
        return f"ReplyPattern({self.text!r})"


def _octet_set(part: str, text: str) -> frozenset[int]:
    if part.startswith("[") and part.endswith("]") and len(part) > 2:
        allowed: set[int] = set()
        for element in part[1:-1].split(";"):
            lo_text, dots, hi_text = element.partition("..")
            lo = _octet(lo_text, text)
            hi = _octet(hi_text, text) if dots else lo
            if hi < lo:
                raise ValueError(f"reply pattern {text!r}: empty range {element!r}")
            allowed.update(range(lo, hi + 1))
        return frozenset(allowed)
    return frozenset({_octet(part, text)})


def _octet(value: str, text: str) -> int:
    if not value.isdigit() or not value.isascii() or int(value) > 255:
        raise ValueError(f"reply pattern {text!r}: bad octet {value!r}")
    return int(value)


def parse_dnsxl_argument(arg: str) -> tuple[str, ReplyPattern | None]:
    """``zen.spamhaus.org=127.0.0.[2..11]`` -> ``("zen.spamhaus.org", pattern)``.

    Raises ValueError for an empty or malformed domain or pattern.
    """
    domain, sep, pattern = arg.partition("=")
    domain = domain.rstrip(".").lower()
    labels = domain.split(".")
    if not domain or any(not label or len(label) > 63 for label in labels) or len(domain) > 253:
        raise ValueError(f"bad DNS list domain {arg.partition('=')[0]!r}")
    if not sep:
        return domain, None
    return domain, ReplyPattern(pattern)
