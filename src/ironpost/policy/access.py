"""Postfix access(5) maps: which keys are looked up, in which order, and what values mean.

Owns the lookup orders (addresses: ``user@domain``, ``domain`` and its parents,
``user@``; clients: hostname and parents, then the IP and its shorter prefixes) and the
action language (OK, REJECT, DEFER, 4NN/5NN, DUNNO, DISCARD, HOLD, WARN, restriction
names). The first key that is found ends the lookup, whatever its action (DUNNO included).

Invariants: keys are lowercased; an action we cannot honour answers 451 4.3.5 "Server
configuration error" with a warning naming the table (in the log only, never the reply).
"""

from __future__ import annotations

import ipaddress

from ironpost.config.tables import LookupTable
from ironpost.policy.context import PolicyContext, enhanced_for
from ironpost.policy.registry import REGISTRY, Restriction, run_sequence
from ironpost.policy.verdicts import Decision, Verdict
from ironpost.routing.addresses import split_extension
from ironpost.routing.domains import parent_domains

_IGNORED_ACTIONS = frozenset({"PREPEND", "REDIRECT", "FILTER", "BCC"})


def domain_keys(domain: str, parent_style: bool) -> list[str]:
    """``sub.example.com`` → itself, then ``example.com``, ``com`` (or ``.example.com``…)."""
    keys = [domain]
    prefix = "" if parent_style else "."
    keys.extend(prefix + p for p in parent_domains(domain))
    return keys


def address_keys(local: str, domain: str, *, delimiter: str, parent_style: bool) -> list[str]:
    """access(5) EMAIL ADDRESS PATTERNS order, with recipient_delimiter variants."""
    local = local.lower()
    base, ext = split_extension(local, delimiter)
    keys: list[str] = []
    if domain:
        keys.append(f"{local}@{domain}")
        if ext:
            keys.append(f"{base}@{domain}")
        keys.extend(domain_keys(domain, parent_style))
    keys.append(f"{local}@")
    if ext:
        keys.append(f"{base}@")
    return keys


def client_keys(name: str, address: str, *, parent_style: bool) -> list[str]:
    """Hostname and parent domains (unless unknown), then the address and its prefixes."""
    keys: list[str] = []
    if name and name != "unknown":
        keys.extend(domain_keys(name.lower().rstrip("."), parent_style))
    try:
        ip = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return keys
    text = ip.compressed
    keys.append(text)
    sep = "." if ip.version == 4 else ":"
    while True:
        cut = text.rfind(sep)
        if cut <= 0:
            break
        text = text[:cut].rstrip(":")
        if not text:
            break
        keys.append(text)
    return keys


async def check_access(
    ctx: PolicyContext,
    restriction: str,
    table_spec: str,
    keys: list[str],
    target: tuple[str, str],
) -> Decision:
    """Look ``keys`` up in the table opened for ``table_spec``; act on the first hit."""
    table: LookupTable = ctx.tables[table_spec]
    for key in keys:
        value = table.lookup(key)
        if value is not None:
            return await apply_action(ctx, restriction, table_spec, value, target)
    return Decision(Verdict.DUNNO, None, restriction)


def _config_error(ctx: PolicyContext, restriction: str, table_spec: str, why: str) -> Decision:
    ctx.log_warning(f"access table {table_spec}: {why}")
    return ctx.refuse_plain(restriction, 451, "4.3.5", "Server configuration error")


def _clean(text: str) -> str:
    # Table text goes on the wire: no CR/LF or other control characters.
    return text if text.isprintable() else "".join(c if c.isprintable() else " " for c in text)


async def apply_action(
    ctx: PolicyContext,
    restriction: str,
    table_spec: str,
    value: str,
    target: tuple[str, str],
) -> Decision:
    value = value.strip()
    word, _, text = value.partition(" ")
    if "\t" in word:
        word, _, rest = word.partition("\t")
        text = f"{rest} {text}".strip()
    text = _clean(text.strip())
    action = word.upper()
    params = ctx.params
    if action == "OK":
        return Decision(Verdict.PERMIT, None, restriction)
    if word.isdigit():
        if len(word) == 3 and word[0] in "45":
            code = int(word)
            enhanced = enhanced_for(code)
            first, _, rest = text.partition(" ")
            if _is_enhanced(first, word[0]):
                enhanced, text = first, rest
            return ctx.refuse(restriction, code, enhanced, text or "Access denied", target=target)
        return Decision(Verdict.PERMIT, None, restriction)  # all-numeric: OK (access(5))
    if action == "REJECT":
        code = params.access_map_reject_code
        return ctx.refuse(
            restriction, code, enhanced_for(code), text or "Access denied", target=target
        )
    if action == "DEFER":
        code = params.access_map_defer_code
        return ctx.refuse(
            restriction, code, enhanced_for(code), text or "Access denied", target=target
        )
    if action == "DUNNO":
        return Decision(Verdict.DUNNO, None, restriction)
    if action == "DISCARD":
        ctx.discard = True
        return Decision(Verdict.PERMIT, None, restriction)
    if action == "HOLD":
        ctx.hold = True
        return Decision(Verdict.DUNNO, None, restriction)
    if action in ("WARN", "INFO"):
        ctx.log_warning(f"{action.lower()}: {ctx.client_label}: <{target[0]}>: {text}")
        return Decision(Verdict.DUNNO, None, restriction)
    if action in _IGNORED_ACTIONS:
        ctx.log_warning(f"access table {table_spec}: action {action} is not supported; ignored")
        return Decision(Verdict.DUNNO, None, restriction)
    # Otherwise: restriction names, e.g. "permit_mynetworks, reject". Only names without
    # arguments, so a value can never nest another table lookup (no recursion).
    steps: list[tuple[Restriction, tuple[str, ...]]] = []
    for name in value.replace(",", " ").split():
        entry = REGISTRY.get(name.lower())
        if entry is None or entry.arity:
            return _config_error(ctx, restriction, table_spec, f"unknown action {value!r}")
        steps.append((entry, ()))
    return await run_sequence(ctx, steps)


def _is_enhanced(token: str, klass: str) -> bool:
    parts = token.split(".")
    return len(parts) == 3 and parts[0] == klass and all(p.isdigit() for p in parts)
