"""Address surgery for routing: splitting, extensions, and Postfix's resolve loop.

Owns the pure string rules trivial-rewrite(8) applies before a recipient is routed:
where the domain is, what the address extension is, and which domain the mail would
*really* go to once sender-specified routing (``%``, ``!``, quoted ``@``, double ``@``)
inside a local domain is peeled off. Nothing here does a table lookup; the caller passes
the "is this one of our local domains" predicate.

Invariants: domains come out lowercased with one trailing dot removed; the resolve loop
always terminates (each step removes at least one routing operator) and is capped anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

# Routing operators that, left in a local part, make a destination uncertain.
ROUTING_OPERATORS = frozenset("@%!")
_MAX_REWRITES = 64  # far beyond any honest address; attackers get the last domain reached


def normalize_domain(domain: str) -> str:
    """Lowercase; strip one trailing dot (``remote.`` is ``remote``), as trivial-rewrite does."""
    domain = domain.lower()
    if domain.endswith(".") and not domain.endswith(".."):
        domain = domain[:-1]
    return domain


def dequote_local(local: str) -> str:
    """``"user@host"`` → ``user@host``: routing decisions see the internal (unquoted) form."""
    if len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        inner = local[1:-1]
        if "\\" not in inner:
            return inner
        out = []
        escaped = False
        for ch in inner:  # local parts are short (<= 64 octets): a loop is fine here
            if escaped or ch != "\\":
                out.append(ch)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return local


def split_address(address: str) -> tuple[str, str]:
    """``(local, domain)`` split at the last ``@`` outside a quoted local part.

    The local part is dequoted; the domain is returned as written ("" when there is none).
    """
    if address.startswith('"'):
        i = 1
        n = len(address)
        while i < n:
            ch = address[i]
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                break
            i += 1
        quoted, rest = address[: i + 1], address[i + 1 :]
        if rest.startswith("@"):
            return dequote_local(quoted), rest[1:]
        if not rest:
            return dequote_local(quoted), ""
        # Something after the quote other than @domain: fall back to the plain rule.
    local, at, domain = address.rpartition("@")
    if not at:
        return dequote_local(address), ""
    return dequote_local(local), domain


def split_extension(local: str, delimiters: str) -> tuple[str, str]:
    """``("user", "+ext")`` for ``user+ext``; ``(local, "")`` when there is no extension.

    Postfix split_addr(): any character of ``delimiters`` starts the extension; a local
    part that starts with one is not split; with ``-`` a delimiter, ``owner-foo`` and
    ``foo-request`` stay whole; postmaster and MAILER-DAEMON are never split.
    """
    if not delimiters or not local:
        return local, ""
    if len(delimiters) == 1:
        i = local.find(delimiters)
    else:
        i = -1
        for d in delimiters:
            j = local.find(d)
            if j >= 0 and (i < 0 or j < i):
                i = j
    if i <= 0:
        return local, ""
    lowered = local.lower()
    if lowered in ("postmaster", "mailer-daemon"):
        return local, ""
    if "-" in delimiters and (lowered.startswith("owner-") or lowered.endswith("-request")):
        return local, ""
    return local[:i], local[i:]


def add_extension(address: str, extension: str) -> str:
    """``a@x`` + ``+ext`` → ``a+ext@x`` (propagate_unmatched_extensions)."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address + extension
    return f"{local}{extension}@{domain}"


def resolve_route(
    local: str,
    domain: str,
    *,
    is_local: Callable[[str], bool],
    percent_hack: bool,
    swap_bangpath: bool,
    default_domain: str,
) -> tuple[str, str]:
    """Where the mail really goes: Postfix resolve.c's strip-and-retry loop.

    While the domain is one of ours (``is_local``), strip it and look inside the local part:
    an ``@`` (from a quoted ``"u@h"`` or a double ``@``) splits off a new domain; else
    ``site!user`` becomes ``user@site`` (swap_bangpath); else the rightmost ``%`` becomes
    ``@`` (percent hack). Stop at a domain that is not ours, or when nothing is left to
    rewrite (the last local domain stripped is put back). No domain at all → the default.
    """
    domain = normalize_domain(domain)
    saved = ""
    for _ in range(_MAX_REWRITES):
        if domain:
            if not is_local(domain):
                return local, domain
            saved, domain = domain, ""
        at = local.rfind("@")
        if at >= 0:
            local, domain = local[:at], normalize_domain(local[at + 1 :])
            continue
        if swap_bangpath:
            bang = local.find("!")
            if bang > 0:
                local, domain = local[bang + 1 :], normalize_domain(local[:bang])
                continue
        if percent_hack:
            pct = local.rfind("%")
            if pct >= 0:
                local, domain = local[:pct], normalize_domain(local[pct + 1 :])
                continue
        break
    return local, (domain or saved or normalize_domain(default_domain))


@lru_cache(maxsize=4096)
def parse_targets(value: str) -> tuple[str, ...]:
    """An alias/virtual value → its destinations: comma and/or whitespace separated.

    Double quotes group (``"|cmd arg", user``). Values come from tables, not the network,
    and are few: cached.
    """
    out: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
            buf.append(ch)
        elif not quoted and (ch == "," or ch.isspace()):
            if buf:
                out.append("".join(buf))
                buf = []
        else:
            buf.append(ch)
    if buf:
        out.append("".join(buf))
    return tuple(_unquote_whole(t) for t in out)


def _unquote_whole(token: str) -> str:
    # "|cmd arg" → |cmd arg ; "user@x"@d stays (only a fully quoted token is unwrapped)
    if len(token) >= 2 and token[0] == '"' and token[-1] == '"' and token.count('"') == 2:
        inner = token[1:-1]
        if inner[:1] in ("|", "/") or inner.startswith(":include:"):
            return inner
    return token


def is_special_destination(target: str) -> bool:
    """Command, file and :include: destinations: aliases(5) forms ironpost does not deliver."""
    return target[:1] in ("|", "/") or target[:9].lower() == ":include:"
