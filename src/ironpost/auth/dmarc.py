"""DMARC evaluation (RFC 7489): policy discovery, identifier alignment, pct sampling.

Owns :func:`evaluate_dmarc` (and :func:`evaluate_dmarc_blocking`, the same for a worker
thread), the record parser (:func:`parse_record`), organizational
domains (:func:`organizational_domain`, from the Public Suffix List bundled with the
``publicsuffixlist`` package: offline, no download at run time) and reading the
RFC5322.From domains of a message (:func:`from_domains`).

Invariants:
- a DNS failure while looking for the record is ``temperror``, and so is a failed
  evaluation whose only aligned identifiers had a temporary error: a temporary problem
  never produces a ``reject`` or ``quarantine`` disposition;
- an unusable policy (no record, several records, bad syntax) is ``none``: DMARC is not
  applied (§6.6.3);
- sampling follows §6.6.4: a message outside ``pct`` gets the next weaker disposition
  (reject → quarantine, quarantine → none).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from ironpost.auth.results import field_value, header_fields
from ironpost.auth.types import DkimResult, DmarcResult, SpfResult
from ironpost.dns.types import Resolver, Result, Status

POLICIES = ("none", "quarantine", "reject")
_psl = PublicSuffixList()
_TAG = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    p: str
    sp: str
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"


@lru_cache(maxsize=4096)
def organizational_domain(domain: str) -> str:
    """The registrable domain (one label below the public suffix) per RFC 7489 §3.2."""
    domain = domain.rstrip(".").lower()
    return _psl.privatesuffix(domain) or domain


@lru_cache(maxsize=1024)  # a policy's text repeats for every message from its domain
def parse_record(text: str) -> DmarcRecord | None:
    """The policy of one TXT record, or None if it is not a usable DMARC record."""
    parts = text.split(";")
    first = _TAG.match(parts[0].strip())
    if not first or first.group(1).lower() != "v" or first.group(2) != "DMARC1":
        return None
    tags: dict[str, str] = {}
    for part in parts[1:]:
        match = _TAG.match(part.strip())
        if match:
            tags.setdefault(match.group(1).lower(), match.group(2))
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        # §6.6.3: an invalid or missing p= with a valid rua= is p=none; else unusable.
        if "rua" not in tags:
            return None
        p = "none"
    sp = tags.get("sp", p).lower()
    if sp not in POLICIES:
        sp = p
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError:
        pct = 100
    pct = min(max(pct, 0), 100)
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    return DmarcRecord(
        p, sp, pct, adkim if adkim in ("r", "s") else "r", aspf if aspf in ("r", "s") else "r"
    )


def aligned(identifier: str, from_domain: str, mode: str) -> bool:
    """Strict: the same name; relaxed: the same organizational domain (§3.1)."""
    identifier = identifier.rstrip(".").lower()
    if not identifier:
        return False
    if identifier == from_domain:
        return True
    return mode == "r" and organizational_domain(identifier) == organizational_domain(from_domain)


def _record_of(answer: Result[str]) -> DmarcRecord | Status | None:
    """The usable record of a ``_dmarc`` TXT answer; None if none; TEMPFAIL on failure."""
    if answer.status is Status.TEMPFAIL:
        return Status.TEMPFAIL
    if answer.status is not Status.ANSWER:
        return None
    candidates = [t for t in answer.records if t.lstrip().startswith("v=DMARC1")]
    if len(candidates) != 1:  # §6.6.3: several records is as good as none
        return None
    return parse_record(candidates[0])


def _found(
    first: DmarcRecord | Status | None, org: str, from_domain: str
) -> tuple[DmarcRecord | None, bool] | None:
    """Discovery after the first lookup: the outcome, or None to ask at ``org``."""
    if first is Status.TEMPFAIL:
        raise LookupError("temporary DNS failure")
    if isinstance(first, DmarcRecord):
        return first, False
    if org == from_domain:
        return None, False
    return None


def _at_org(record: DmarcRecord | Status | None) -> tuple[DmarcRecord | None, bool]:
    if record is Status.TEMPFAIL:
        raise LookupError("temporary DNS failure")
    return (record, True) if isinstance(record, DmarcRecord) else (None, False)


async def discover(resolver: Resolver, from_domain: str) -> tuple[DmarcRecord | None, bool]:
    """``(record, found_at_org)``; raises :class:`LookupError` on a DNS failure."""
    org = organizational_domain(from_domain)
    found = _found(_record_of(await resolver.txt(f"_dmarc.{from_domain}")), org, from_domain)
    if found is not None:
        return found
    return _at_org(_record_of(await resolver.txt(f"_dmarc.{org}")))


def discover_blocking(
    txt: Callable[[str], Result[str]], from_domain: str
) -> tuple[DmarcRecord | None, bool]:
    """:func:`discover` through a blocking TXT lookup (a worker thread's ``BlockingDns``)."""
    org = organizational_domain(from_domain)
    found = _found(_record_of(txt(f"_dmarc.{from_domain}")), org, from_domain)
    if found is not None:
        return found
    return _at_org(_record_of(txt(f"_dmarc.{org}")))


def _sampled(policy: str, pct: int, rand: Callable[[], float]) -> str:
    if policy == "none" or pct >= 100 or rand() * 100 < pct:
        return policy
    return "quarantine" if policy == "reject" else "none"


async def evaluate_dmarc(
    resolver: Resolver,
    from_domain: str,
    spf: SpfResult | None,
    dkim_results: Sequence[DkimResult],
    *,
    rand: Callable[[], float] = random.random,
) -> DmarcResult:
    """DMARC for one RFC5322.From domain, given the SPF and DKIM results of the message."""
    domain, unusable = _domain(from_domain)
    if unusable is not None:
        return unusable
    try:
        record, at_org = await discover(resolver, domain)
    except LookupError:
        return _lookup_failed(domain)
    return _decide(domain, record, at_org, spf, dkim_results, rand)


def _domain(from_domain: str) -> tuple[str, DmarcResult | None]:
    """The normalised From domain, and the permerror when it cannot carry a policy."""
    domain = from_domain.rstrip(".").lower()
    if not domain or "." not in domain:
        return domain, DmarcResult("permerror", domain, reason="no usable From domain")
    return domain, None


def _lookup_failed(domain: str) -> DmarcResult:
    return DmarcResult("temperror", domain, reason="DNS failure looking up the policy")


def evaluate_dmarc_blocking(
    txt: Callable[[str], Result[str]],
    from_domain: str,
    spf: SpfResult | None,
    dkim_results: Sequence[DkimResult],
    *,
    rand: Callable[[], float] = random.random,
) -> DmarcResult:
    """:func:`evaluate_dmarc` in a worker thread, through a blocking TXT lookup."""
    domain, unusable = _domain(from_domain)
    if unusable is not None:
        return unusable
    try:
        record, at_org = discover_blocking(txt, domain)
    except LookupError:
        return _lookup_failed(domain)
    return _decide(domain, record, at_org, spf, dkim_results, rand)


def _decide(
    domain: str,
    record: DmarcRecord | None,
    at_org: bool,
    spf: SpfResult | None,
    dkim_results: Sequence[DkimResult],
    rand: Callable[[], float],
) -> DmarcResult:
    if record is None:
        return DmarcResult("none", domain)
    policy = record.sp if at_org else record.p
    spf_ok = spf is not None and spf.result == "pass" and aligned(spf.domain, domain, record.aspf)
    dkim_ok = any(
        r.result == "pass" and aligned(r.domain, domain, record.adkim) for r in dkim_results
    )
    if spf_ok or dkim_ok:
        return DmarcResult("pass", domain, policy, "none", spf_ok, dkim_ok)
    temporary = (
        spf is not None and spf.result == "temperror" and aligned(spf.domain, domain, record.aspf)
    ) or any(
        r.result == "temperror" and aligned(r.domain, domain, record.adkim) for r in dkim_results
    )
    if temporary:
        return DmarcResult("temperror", domain, policy, reason="temporary authentication error")
    return DmarcResult(
        "fail", domain, policy, _sampled(policy, record.pct, rand), reason="no aligned identifier"
    )


def from_domains(content: bytes) -> list[str] | None:
    """The distinct domains of the RFC5322.From addresses, lowercased, in order.

    None when DMARC cannot be applied to the message (§6.6.1): no From field, or an
    address without a domain.
    """
    values = tuple(field_value(raw) for name, raw in header_fields(content) if name == b"from")
    if not values:
        return None
    domains = _domains_of(values)
    return list(domains) if domains is not None else None


@lru_cache(maxsize=1024)
def _domains_of(values: tuple[str, ...]) -> tuple[str, ...] | None:
    # Cached: a sender's From field repeats message after message, and email.utils'
    # address parser is the costliest step of DMARC once the DNS answers are cached.
    domains: list[str] = []
    for _display, address in getaddresses(values):
        domain = address.rpartition("@")[2].strip().rstrip(".").lower() if "@" in address else ""
        if not domain:
            return None
        if domain not in domains:
            domains.append(domain)
    return tuple(domains) or None


def worst(results: Iterable[DmarcResult]) -> DmarcResult | None:
    """The result that decides for a message with several From domains (§6.6.1)."""
    order = {"reject": 3, "quarantine": 2, "none": 1}
    rank = {"fail": 5, "temperror": 4, "permerror": 3, "none": 2, "pass": 1}
    chosen: DmarcResult | None = None
    for result in results:
        key = (order.get(result.disposition, 0), rank.get(result.result, 0))
        if chosen is None or key > (
            order.get(chosen.disposition, 0),
            rank.get(chosen.result, 0),
        ):
            chosen = result
    return chosen
