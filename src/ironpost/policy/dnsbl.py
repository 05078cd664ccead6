"""DNS lists: reject_rbl_client, reject_rhsbl_*, permit_dnswl_client, permit_rhswl_client
and the deprecated reject_maps_rbl (its domains in ``maps_rbl_domains``).

Owns the DNSBL query names (reversed IPv4 octets, or the 32 reversed nibbles of an
IPv6 address; ``domain.list`` for the RHS lists), what counts as a listing, the
``=d.d.d.d`` reply filter, and the reply: ``rbl_reply_maps`` (keyed by the argument as
written) or ``default_rbl_reply``, with Postfix's $-macros and the list's TXT record as
``$rbl_reason`` (records joined with `` / ``, at most 500 characters).

Answers that are errors are never listings (a list that cannot answer must not block
mail): an A record outside 127.0.0.0/8, and Spamhaus's 127.255.255.252 (typo in the
list name), .254 (queried through a public resolver) and .255 (too many queries).
Those, and a SERVFAIL or a timeout, mean "not listed" plus a warning and a count in
:data:`LOOKUP_ERRORS` (Postfix's policy for a list that does not answer: give the
client the benefit of the doubt). For permit_*wl_* they mean "not allowlisted".

Cost: the resolver caches by TTL and shares in-flight queries; the first DNS-list step
of a restriction list starts the lookups of every DNS-list step of that list
(:func:`prefetch`), so the lookups of one RCPT run in parallel while the verdicts keep
the list's first-match-wins order.

Invariant: text from the DNS (TXT records, names) reaches a reply only through the
template's macros, is never expanded itself, and is reduced to printable ASCII.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ironpost.config.restrictions import (
    DNSXL_ARGUMENT,
    ReplyPattern,
    RestrictionError,
    parse_dnsxl_argument,
    parse_restrictions,
)
from ironpost.dns.types import Resolver, Status
from ironpost.policy.context import PolicyContext
from ironpost.policy.registry import restriction
from ironpost.policy.relay import authorized_destination
from ironpost.policy.verdicts import Decision, Stage, Verdict
from ironpost.protocol.replies import Reply
from ironpost.routing.settings import SettingsLike, optional

#: Spamhaus's return codes that report a problem with the query, not the client.
ERROR_ANSWERS = frozenset({"127.255.255.252", "127.255.255.254", "127.255.255.255"})
_LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")

#: (list domain, "error answer" | "tempfail") -> count, for the metrics of issue #6.
LOOKUP_ERRORS: Counter[tuple[str, str]] = Counter()

TXT_LIMIT = 500  # Postfix's RBL_TXT_LIMIT

CLIENT = "Client host"
REVERSE_CLIENT = "Unverified Client host"
HELO = "Helo command"
SENDER = "Sender address"
RECIPIENT = "Recipient address"

_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def _dunno(name: str) -> Decision:
    return Decision(Verdict.DUNNO, None, name)


# -- query names ------------------------------------------------------------------------


def reversed_address(address: str) -> str | None:
    """``1.2.3.4`` -> ``4.3.2.1``; an IPv6 address -> its 32 nibbles, reversed."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    pointer = ip.reverse_pointer  # "4.3.2.1.in-addr.arpa" / "b.a.9....ip6.arpa"
    return pointer.rsplit(".", 2)[0]


def rhs_domain(value: str) -> str | None:
    """The name an RHS list is asked about (Postfix's find_dnsxl_domain): the domain of
    an address, or the name itself; None for literals, numeric names and bad names."""
    domain = value.rpartition("@")[2]
    if not domain or domain.startswith("["):
        return None
    if domain.rpartition(".")[2].isdigit():
        return None  # some lists refuse IP-looking names; Postfix skips them too
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = domain.split(".")
    if len(domain) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    return domain.lower()


_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


@lru_cache(maxsize=256)
def _argument(arg: str) -> tuple[str, ReplyPattern | None]:
    return parse_dnsxl_argument(arg)


# -- one lookup -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Listing:
    """A matching answer: the A records and the query, for the reply."""

    query: str
    addresses: tuple[str, ...]


class _Soft:
    """The list could not answer (tempfail or an error code): not listed, with a warning."""


SOFT = _Soft()


async def lookup(
    ctx: PolicyContext, resolver: Resolver, query: str, domain: str, pattern: ReplyPattern | None
) -> Listing | _Soft | None:
    """A ``query`` (``<reversed>.<domain>``) -> a Listing, None (not listed) or SOFT."""
    result = await resolver.a(query)
    if result.status is Status.TEMPFAIL:
        LOOKUP_ERRORS[(domain, "tempfail")] += 1
        ctx.log_warning(f"{query}: RBL lookup error: {result.error or 'temporary failure'}")
        return SOFT
    if not result.ok:
        return None
    for address in result.records:
        if address in ERROR_ANSWERS or not _in_loopback_net(address):
            LOOKUP_ERRORS[(domain, "error answer")] += 1
            ctx.log_warning(
                f"{query}: RBL lookup error: {domain} answered {_printable(address)}, "
                "an error code, not a listing"
            )
            return SOFT
    if pattern is not None and not any(pattern.matches(a) for a in result.records):
        return None
    return Listing(query, result.records)


def _in_loopback_net(address: str) -> bool:
    try:
        return ipaddress.ip_address(address) in _LOOPBACK_NET
    except ValueError:
        return False


async def _reason(resolver: Resolver, query: str) -> str:
    """The list's TXT records for ``query``, joined as Postfix does (for $rbl_reason)."""
    txt = await resolver.txt(query)
    if not txt.ok:
        return ""
    return " / ".join(txt.records)[:TXT_LIMIT]


def _printable(text: str) -> str:
    return _UNPRINTABLE.sub("_", text)


# -- the reply ----------------------------------------------------------------------------


class TemplateError(ValueError):
    """A reply template that does not expand (bad syntax or an unknown $name)."""


_NAME = re.compile(r"[A-Za-z0-9_]+")


def expand(template: str, lookup_name: Callable[[str], str | None]) -> str:
    """Postfix mac_expand(3) for reply templates: ``$name``, ``${name}``, ``$(name)``,
    ``${name?text}``, ``${name:text}``, ``${name?{text}:{text}}`` and ``$$``.

    Values are inserted as they are, never expanded again. Raises TemplateError.
    """
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        dollar = template.find("$", i)
        if dollar < 0:
            out.append(template[i:])
            break
        out.append(template[i:dollar])
        i = dollar + 1
        if i >= n:
            raise TemplateError("'$' at the end")
        c = template[i]
        if c == "$":
            out.append("$")
            i += 1
            continue
        if c in "{(":
            close = "}" if c == "{" else ")"
            end = _matching(template, i, c, close)
            out.append(_expand_braced(template[i + 1 : end], lookup_name))
            i = end + 1
            continue
        m = _NAME.match(template, i)
        if m is None:
            raise TemplateError(f"bad character after '$' at {i}")
        out.append(_value(m.group(), lookup_name))
        i = m.end()
    return "".join(out)


def _matching(text: str, start: int, open_: str, close: str) -> int:
    depth = 0
    for j in range(start, len(text)):
        if text[j] == open_:
            depth += 1
        elif text[j] == close:
            depth -= 1
            if depth == 0:
                return j
    raise TemplateError(f"unbalanced {open_!r}")


def _value(name: str, lookup_name: Callable[[str], str | None]) -> str:
    value = lookup_name(name)
    if value is None:
        raise TemplateError(f"unknown name ${name}")
    return _printable(value)


def _expand_braced(body: str, lookup_name: Callable[[str], str | None]) -> str:
    m = _NAME.match(body)
    if m is None:
        raise TemplateError(f"bad name in ${{{body}}}")
    name, rest = m.group(), body[m.end() :]
    if not rest:
        return _value(name, lookup_name)
    value = lookup_name(name)
    if value is None:
        raise TemplateError(f"unknown name ${name}")
    op, text = rest[0], rest[1:]
    if op == "?" and text.startswith("{"):
        end = _matching(text, 0, "{", "}")
        when_set, tail = text[1:end], text[end + 1 :]
        if not (tail.startswith(":{") and tail.endswith("}")):
            raise TemplateError(f"bad ${{{name}?{{...}}:{{...}}}}")
        return expand(when_set if value else tail[2:-1], lookup_name)
    if op == "?":
        return expand(text, lookup_name) if value else ""
    if op == ":":
        return "" if value else expand(text, lookup_name)
    raise TemplateError(f"bad operator {op!r} in ${{{body}}}")


_REPLY = re.compile(r"([45]\d\d) (?:([245]\.\d{1,3}\.\d{1,3}) )?(.*)", re.DOTALL)


def _smtpd_macros(ctx: PolicyContext) -> dict[str, str]:
    """smtpd_expand_lookup's names (the ones ironpost knows)."""
    return {
        "client": ctx.client_label,
        "client_address": ctx.client_address,
        "client_name": ctx.client_name,
        "reverse_client_name": ctx.reverse_client_name,
        "helo_name": ctx.helo or "",
        "sender": ctx.sender or "",
        "sender_name": ctx.sender_local,
        "sender_domain": ctx.sender_domain,
        "recipient": ctx.recipient or "",
        "recipient_name": ctx.recipient_local,
        "recipient_domain": ctx.recipient_domain,
    }


def rbl_reply(
    ctx: PolicyContext, name: str, arg: str, what: str, klass: str, reason: str
) -> Decision:
    """Postfix's rbl_reject_reply: template, macros, then a sanity check of the code."""
    params = ctx.params
    domain = arg.partition("=")[0]
    macros = _smtpd_macros(ctx)
    macros.update(
        rbl_code=str(params.maps_rbl_reject_code),
        rbl_domain=domain,
        rbl_reason=reason,
        rbl_txt=reason,
        rbl_what=what,
        rbl_class=klass,
    )
    template: str | None = None
    for table in params.rbl_reply_maps:
        template = table.lookup(arg)
        if template is not None:
            break
    text: str | None = None
    for candidate in (template, params.default_rbl_reply):
        if candidate is None:
            continue
        try:
            text = expand(candidate, macros.get)
            break
        except TemplateError as exc:
            ctx.log_warning(f"bad rbl reply template for domain {domain}: {exc}")
    m = _REPLY.fullmatch(text or "")
    if m is None:
        ctx.log_warning(f"rbl response code configuration error: {text!r}")
        return Decision(Verdict.DEFER, Reply(450, "4.7.1", "Service unavailable"), name)
    code = int(m.group(1))
    enhanced = m.group(2) or "4.7.1"
    enhanced = f"{str(code)[0]}{enhanced[1:]}"
    verdict = Verdict.DEFER if code < 500 else Verdict.REJECT
    return Decision(verdict, Reply(code, enhanced, m.group(3) or "Service unavailable"), name)


# -- prefetching ------------------------------------------------------------------------------


def dnsxl_plan(settings: SettingsLike) -> tuple[tuple[Stage, tuple[tuple[str, str], ...]], ...]:
    """Per restriction list, its DNS-list steps ``(name, argument)`` in order
    (PolicyParams.dnsxl_plan, read by :func:`prefetch`)."""
    plan = []
    for stage in Stage:
        try:
            steps = parse_restrictions(optional(settings.words, stage.value, ()))
        except RestrictionError:
            continue  # the engine refuses this list anyway
        found = tuple((n, a[0]) for n, a in steps if n in DNSXL_ARGUMENT and a)
        if found:
            plan.append((stage, found))
    return tuple(plan)


_BACKGROUND: set[asyncio.Future[Any]] = set()


def prefetch(ctx: PolicyContext, steps: Iterable[tuple[str, str]]) -> int:
    """Start the A lookups of ``steps`` without waiting; returns how many were started.

    The resolver shares in-flight queries and caches answers, so the steps that run
    later find their answer ready (or on its way) instead of asking in turn.
    """
    resolver = ctx.resolver
    if resolver is None:
        return 0
    started = 0
    for name, arg in steps:
        query = _query_for(ctx, name, arg)
        if query is None:
            continue
        task = asyncio.ensure_future(resolver.a(query))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        started += 1
    return started


def _maybe_prefetch(ctx: PolicyContext, name: str, arg: str) -> None:
    """When the first DNS-list step of the current list runs, start all of its lookups."""
    for stage, steps in ctx.params.dnsxl_plan:
        if stage is ctx.stage:
            if len(steps) > 1 and steps[0] == (name, arg):
                prefetch(ctx, steps[1:])
            return


# -- the restrictions -----------------------------------------------------------------------


def _subject(ctx: PolicyContext, name: str) -> tuple[str, str] | None:
    """``(what, class)`` a restriction asks its list about, or None to skip it."""
    if name in ("reject_rbl_client", "permit_dnswl_client"):
        return ctx.client_address, CLIENT
    if name in ("reject_rhsbl_client", "permit_rhswl_client"):
        return (ctx.client_name, CLIENT) if ctx.client_name != "unknown" else None
    if name == "reject_rhsbl_reverse_client":
        reverse = ctx.reverse_client_name
        return (reverse, REVERSE_CLIENT) if reverse != "unknown" else None
    if name == "reject_rhsbl_helo":
        return (ctx.helo, HELO) if ctx.helo else None
    if name == "reject_rhsbl_sender":
        return (ctx.sender, SENDER) if ctx.sender else None
    if name == "reject_rhsbl_recipient":
        return (ctx.recipient, RECIPIENT) if ctx.recipient else None
    return None


def _query_for(ctx: PolicyContext, name: str, arg: str) -> str | None:
    subject = _subject(ctx, name)
    if subject is None:
        return None
    try:
        domain, _ = _argument(arg)
    except ValueError:
        return None
    if name in ("reject_rbl_client", "permit_dnswl_client"):
        prefix = reversed_address(subject[0])
    else:
        prefix = rhs_domain(subject[0])
    return None if prefix is None else f"{prefix}.{domain}"


async def _check(ctx: PolicyContext, name: str, arg: str) -> Listing | _Soft | None:
    resolver = ctx.resolver
    if resolver is None:
        return None
    try:
        domain, pattern = _argument(arg)
    except ValueError as exc:  # config validation catches this first
        ctx.log_warning(f"{name} {arg}: {exc}")
        return None
    query = _query_for(ctx, name, arg)
    if query is None:
        return None
    _maybe_prefetch(ctx, name, arg)
    return await lookup(ctx, resolver, query, domain, pattern)


async def _reject(ctx: PolicyContext, name: str, arg: str) -> Decision:
    found = await _check(ctx, name, arg)
    if not isinstance(found, Listing):
        return _dunno(name)
    subject = _subject(ctx, name)
    assert subject is not None and ctx.resolver is not None
    reason = _printable(await _reason(ctx.resolver, found.query))
    return rbl_reply(ctx, name, arg, subject[0], subject[1], reason)


async def _permit(ctx: PolicyContext, name: str, arg: str) -> Decision:
    # Postfix's safety: an allowlist never makes an unauthorized recipient relayable.
    if (
        ctx.recipient is not None
        and ctx.stage not in (Stage.DATA, Stage.END_OF_DATA)
        and not authorized_destination(ctx)
    ):
        return _dunno(name)
    found = await _check(ctx, name, arg)
    # A list that cannot answer allowlists nobody. (Postfix would also turn a later
    # REJECT into a 450, defer_if_reject; ironpost has no deferred verdicts yet.)
    if isinstance(found, Listing):
        return Decision(Verdict.PERMIT, None, name)
    return _dunno(name)


@restriction("reject_rbl_client", arity=1)
async def reject_rbl_client(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return await _reject(ctx, "reject_rbl_client", args[0])


@restriction("reject_rhsbl_client", arity=1)
async def reject_rhsbl_client(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return await _reject(ctx, "reject_rhsbl_client", args[0])


@restriction("reject_rhsbl_reverse_client", arity=1)
async def reject_rhsbl_reverse_client(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return await _reject(ctx, "reject_rhsbl_reverse_client", args[0])


@restriction("reject_rhsbl_helo", arity=1)
async def reject_rhsbl_helo(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return await _reject(ctx, "reject_rhsbl_helo", args[0])


@restriction("reject_rhsbl_sender", arity=1)
async def reject_rhsbl_sender(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return await _reject(ctx, "reject_rhsbl_sender", args[0])


@restriction("reject_rhsbl_recipient", arity=1, per_recipient=True)
async def reject_rhsbl_recipient(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return await _reject(ctx, "reject_rhsbl_recipient", args[0])


@restriction("permit_dnswl_client", arity=1, per_recipient=True)
async def permit_dnswl_client(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return await _permit(ctx, "permit_dnswl_client", args[0])


@restriction("permit_rhswl_client", arity=1, per_recipient=True)
async def permit_rhswl_client(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return await _permit(ctx, "permit_rhswl_client", args[0])


_deprecation_logged = False


@restriction("reject_maps_rbl")
async def reject_maps_rbl(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    """Postfix's deprecated form: reject_rbl_client for each of ``maps_rbl_domains``."""
    global _deprecation_logged
    if not _deprecation_logged:
        _deprecation_logged = True
        ctx.log_warning(
            'support for restriction "reject_maps_rbl" will be removed; '
            'use "reject_rbl_client domain-name" instead'
        )
    domains = ctx.params.maps_rbl_domains
    if ctx.resolver is not None and len(domains) > 1:
        prefetch(ctx, (("reject_rbl_client", d) for d in domains[1:]))
    for domain in domains:
        decision = await _reject(ctx, "reject_rbl_client", domain)
        if decision.verdict is not Verdict.DUNNO:
            return Decision(decision.verdict, decision.reply, "reject_maps_rbl")
    return _dunno("reject_maps_rbl")
