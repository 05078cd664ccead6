"""HELO/EHLO restrictions: syntax, full qualification, and check_helo_access.

Owns what counts as a valid HELO name (Postfix valid_hostname(): labels of letters,
digits, ``-`` and ``_``, not starting or ending with ``-``, at most 63 octets each and
255 in all, not all-numeric; or an address literal; or a bare IP address) and as a
fully-qualified one (contains a dot, or is an address literal). One trailing dot is
ignored. No HELO at all is not these restrictions' business (smtpd_helo_required is).
"""

from __future__ import annotations

import ipaddress

from ironpost.policy.access import check_access, domain_keys
from ironpost.policy.context import PolicyContext
from ironpost.policy.registry import restriction
from ironpost.policy.verdicts import Decision, Verdict
from ironpost.routing.router import literal_address

_LABEL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def _strip_dot(name: str) -> str:
    return name[:-1] if name.endswith(".") and not name.endswith("..") else name


def valid_hostname(name: str) -> bool:
    if not name or len(name) > 255:
        return False
    numeric = True
    for label in name.split("."):
        if not label or len(label) > 63 or label[0] == "-" or label[-1] == "-":
            return False
        if not _LABEL_CHARS.issuperset(label) and (
            label.isascii() or not all(c.isalnum() or c in "-_" for c in label)
        ):
            return False  # non-ASCII (SMTPUTF8) labels may use any letters and digits
        if not label.isdigit():
            numeric = False
    return not numeric


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def valid_helo(name: str) -> bool:
    if name.startswith("["):
        return literal_address(name) is not None
    name = _strip_dot(name)
    return valid_hostname(name) or _is_ip(name)


def fqdn_helo(name: str) -> bool:
    if name.startswith("["):
        return True  # a literal's validity is reject_invalid_helo_hostname's business
    name = _strip_dot(name)
    return "." in name


@restriction("reject_invalid_helo_hostname", "reject_invalid_hostname")
def reject_invalid_helo_hostname(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    if ctx.helo is None or valid_helo(ctx.helo):
        return Decision(Verdict.DUNNO, None, "reject_invalid_helo_hostname")
    code = ctx.params.invalid_hostname_reject_code
    return ctx.refuse(
        "reject_invalid_helo_hostname",
        code,
        f"{str(code)[0]}.5.2",
        "Invalid name",
        target=(ctx.helo, "Helo command"),
    )


@restriction("reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname")
def reject_non_fqdn_helo_hostname(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    if ctx.helo is None or fqdn_helo(ctx.helo):
        return Decision(Verdict.DUNNO, None, "reject_non_fqdn_helo_hostname")
    code = ctx.params.non_fqdn_reject_code
    return ctx.refuse(
        "reject_non_fqdn_helo_hostname",
        code,
        f"{str(code)[0]}.5.2",
        "need fully-qualified hostname",
        target=(ctx.helo, "Helo command"),
    )


@restriction("check_helo_access", arity=1, tables=True)
async def check_helo_access(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    if not ctx.helo:
        return Decision(Verdict.DUNNO, None, "check_helo_access")
    name = _strip_dot(ctx.helo.lower())
    keys = domain_keys(name, ctx.params.access_parent_matches_subdomains)
    return await check_access(ctx, "check_helo_access", args[0], keys, (ctx.helo, "Helo command"))
