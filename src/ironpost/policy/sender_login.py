"""Who may send as whom: smtpd_sender_login_maps and the *_sender_login_mismatch family.

Owns :class:`SenderLogins` (the owners of an address) and the four Postfix restrictions:

* ``reject_authenticated_sender_login_mismatch``: an authenticated client whose login does
  not own the MAIL FROM address;
* ``reject_unauthenticated_sender_login_mismatch``: an unauthenticated client using an
  address that has an owner;
* ``reject_known_sender_login_mismatch``: the first one, but only for addresses that have
  an owner, plus the second one;
* ``reject_sender_login_mismatch``: the first and the second.

Lookup order is Postfix's: ``user@domain``, then ``user`` when the domain is local
(``$mydestination``), then ``@domain``. A value lists login names, separated by commas or
whitespace; logins compare case-insensitively, as Postfix does.

ironpost adds one rule, so that a fresh install needs no map: a login that is itself an
email address owns that address. Postfix sites spell the same thing with a
``pcre:/^(.*)$/ ${1}`` map. The null sender is never a mismatch (bounces and receipts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ironpost.config.tables import LookupTable
from ironpost.policy.context import PolicyContext
from ironpost.policy.registry import restriction
from ironpost.policy.verdicts import Decision, Verdict
from ironpost.routing import Router, split_address
from ironpost.routing.addresses import normalize_domain
from ironpost.routing.router import AddressClass

_CODE = 553
_ENHANCED = "5.7.1"


@dataclass(frozen=True, slots=True)
class SenderLogins:
    """The smtpd_sender_login_maps tables, with the router to tell local domains."""

    tables: Sequence[LookupTable]
    router: Router | None = None

    def owners(self, address: str) -> frozenset[str]:
        """Login names (case-folded) that own ``address``; empty when it has no owner."""
        if not address:
            return frozenset()
        local, domain = split_address(address)
        domain = normalize_domain(domain)
        keys = [f"{local}@{domain}" if domain else local]
        router = self.router
        if domain and router is not None and router.domain_class(domain) is AddressClass.LOCAL:
            keys.append(local)
        if domain:
            keys.append(f"@{domain}")
        for key in keys:
            for table in self.tables:
                value = table.lookup(key)
                if value is not None:
                    names = value.replace(",", " ").split()
                    return frozenset(n.casefold() for n in names)
        return frozenset()

    def owns(self, login: str, address: str) -> bool:
        """Does ``login`` own ``address`` (a map entry, or the login is the address)?"""
        if not address:
            return True
        folded = login.casefold()
        if "@" in login and _same_address(login, address):
            return True
        return folded in self.owners(address)


def _same_address(a: str, b: str) -> bool:
    la, da = split_address(a)
    lb, db = split_address(b)
    return la.casefold() == lb.casefold() and normalize_domain(da) == normalize_domain(db)


def _logins(ctx: PolicyContext) -> SenderLogins:
    return ctx.sender_logins or SenderLogins(())


def _authenticated_mismatch(ctx: PolicyContext, name: str, *, known_only: bool) -> Decision:
    login = ctx.sasl_username
    sender = ctx.sender or ""
    if not login or not sender:
        return Decision(Verdict.DUNNO, None, name)
    logins = _logins(ctx)
    if logins.owns(login, sender):
        return Decision(Verdict.DUNNO, None, name)
    if known_only and not logins.owners(sender):
        return Decision(Verdict.DUNNO, None, name)
    return ctx.refuse(name, _CODE, _ENHANCED, f"not owned by user {login}")


def _unauthenticated_mismatch(ctx: PolicyContext, name: str) -> Decision:
    sender = ctx.sender or ""
    if ctx.sasl_username or not sender or not _logins(ctx).owners(sender):
        return Decision(Verdict.DUNNO, None, name)
    return ctx.refuse(name, _CODE, _ENHANCED, "not logged in")


@restriction("reject_authenticated_sender_login_mismatch")
def reject_authenticated_sender_login_mismatch(
    ctx: PolicyContext, args: tuple[str, ...]
) -> Decision:
    return _authenticated_mismatch(
        ctx, "reject_authenticated_sender_login_mismatch", known_only=False
    )


@restriction("reject_unauthenticated_sender_login_mismatch")
def reject_unauthenticated_sender_login_mismatch(
    ctx: PolicyContext, args: tuple[str, ...]
) -> Decision:
    return _unauthenticated_mismatch(ctx, "reject_unauthenticated_sender_login_mismatch")


@restriction("reject_known_sender_login_mismatch")
def reject_known_sender_login_mismatch(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    name = "reject_known_sender_login_mismatch"
    decision = _authenticated_mismatch(ctx, name, known_only=True)
    if decision.verdict is Verdict.DUNNO:
        decision = _unauthenticated_mismatch(ctx, name)
    return decision


@restriction("reject_sender_login_mismatch")
def reject_sender_login_mismatch(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    name = "reject_sender_login_mismatch"
    decision = _authenticated_mismatch(ctx, name, known_only=False)
    if decision.verdict is Verdict.DUNNO:
        decision = _unauthenticated_mismatch(ctx, name)
    return decision
