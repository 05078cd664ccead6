"""Command-line lexing: verbs, line limits, HTTP detection, and argument splitting.

Owns the pure helpers that turn one decoded command line into pieces; the state machine
(``server.py``) decides what the pieces mean. Line limits (octets, line end included):

* ``COMMAND_LINE_LIMIT`` = 512 for every command (RFC 5321 4.5.3.1.4);
* MAIL and RCPT get ``ESMTP_PARAMS_ALLOWANCE`` = 2000 more, since RFC 1869 / RFC 3461
  let service extensions lengthen those lines (ENVID, ORCPT, AUTH= each add up to ~500);
* AUTH lines and SASL responses may reach ``AUTH_LINE_LIMIT`` = 12288 (RFC 4954 4).
"""

from __future__ import annotations

from typing import Final

COMMAND_LINE_LIMIT: Final = 512
ESMTP_PARAMS_ALLOWANCE: Final = 2000
AUTH_LINE_LIMIT: Final = 12288

_LONG_VERBS: Final = {
    b"MAIL ": COMMAND_LINE_LIMIT + ESMTP_PARAMS_ALLOWANCE,
    b"RCPT ": COMMAND_LINE_LIMIT + ESMTP_PARAMS_ALLOWANCE,
    b"AUTH ": AUTH_LINE_LIMIT,
}
MAX_LINE_LIMIT: Final = max(_LONG_VERBS.values())

# Postfix answers these as "possible HTTP request"/"possible HTTP header" and hangs up.
_HTTP_VERBS: Final = frozenset({"GET", "POST", "HEAD", "CONNECT", "PUT"})
_HTTP_HEADERS: Final = frozenset({"HOST:", "USER-AGENT:"})


def line_limit(head: bytes | bytearray) -> int:
    """The limit for a command line starting with ``head`` (at least 5 octets of it)."""
    return _LONG_VERBS.get(bytes(head[:5]).upper(), COMMAND_LINE_LIMIT)


def split_verb(text: str) -> tuple[str, str, bool]:
    """``(VERB upper-cased, argument, whether a space followed the verb)``."""
    verb, sep, arg = text.partition(" ")
    return verb.upper(), arg, bool(sep)


def is_http(verb: str, has_arg: bool) -> bool:
    return (has_arg and verb in _HTTP_VERBS) or verb in _HTTP_HEADERS


def _path_end(rest: str) -> int:
    """Index just past the ``>`` closing a path that starts with ``<``, or -1."""
    j = rest.find(">")
    if j < 0 or '"' not in rest[:j]:
        return j + 1 if j >= 0 else -1
    # A quoted local part may hold ">" (rare): walk it honouring quotes and escapes.
    quoted = escaped = False
    for i, c in enumerate(rest):
        if escaped:
            escaped = False
        elif c == "\\" and quoted:
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            return i + 1
    return -1


def split_path_args(arg: str, keyword: str) -> tuple[str, list[str]] | None:
    """Split ``FROM:<path> PARAMS`` (``keyword`` = ``FROM:``/``TO:``) into the path text
    and the parameter tokens; None on bad syntax. A space after the colon is tolerated
    (Postfix does); a bare path ends at the first space."""
    n = len(keyword)
    if arg[:n].upper() != keyword:
        return None
    rest = arg[n:].lstrip(" ")
    if not rest:
        return None
    if rest.startswith("<"):
        end = _path_end(rest)
        if end < 0:
            return None
        path, params = rest[:end], rest[end:]
        if params and not params.startswith(" "):
            return None
    else:
        path, _, params = rest.partition(" ")
    return path, params.split()


def parse_bdat_args(arg: str) -> tuple[int, bool] | None:
    """``BDAT <size> [LAST]`` -> (size, last); None on bad syntax."""
    parts = arg.split()
    if not 1 <= len(parts) <= 2:
        return None
    size = parts[0]
    if not (size.isascii() and size.isdigit()) or len(size) > 18:
        return None
    if len(parts) == 2 and parts[1].upper() != "LAST":
        return None
    return int(size), len(parts) == 2


def parse_auth_args(arg: str) -> tuple[str, str | None] | None:
    """``AUTH <mechanism> [initial-response]`` -> (MECHANISM, initial); None if bad."""
    parts = arg.split()
    if not 1 <= len(parts) <= 2:
        return None
    return parts[0].upper(), parts[1] if len(parts) == 2 else None
