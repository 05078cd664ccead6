"""main.cf syntax: logical lines, list words and ``$name`` expansion. Pure, no I/O.

Owns the Postfix grammar of main.cf: ``name = value``; a line that starts with
whitespace continues the previous logical line; blank lines and whole-line ``#``
comments are skipped and do not end a logical line. One deliberate extension
(the "seed quirk"): a column-0 line without ``=`` that looks like a list item
continues the list parameter above it, with a warning telling how to fix it,
where Postfix would stop with "missing '='".

Invariants: every :class:`Entry` carries the file and line of its first line;
:func:`words` keeps a ``{ ... }`` group (also mid-token, as in ``inline:{ a=b }``)
as one token; :func:`expand` never raises on odd input (a lone ``$`` stays as is).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ironpost.config.diagnostics import Diagnostic

_NAME = re.compile(r"[A-Za-z0-9_]+\Z")
# A restriction or list item pasted at column 0: ``permit_mynetworks,`` or
# ``reject_rbl_client zen.spamhaus.org,`` (a word, optionally one argument).
_LIST_ITEM = re.compile(r"[A-Za-z0-9_.:/\[\]-]+(?:[ \t]+[^\s=,]+)?[ \t]*,?[ \t]*\Z")
_REF = re.compile(r"\$(?:\{|\()?([A-Za-z0-9_]+)")
_WORD = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``name = value`` logical line; ``value`` has continuation lines joined by a space."""

    name: str
    value: str
    file: str
    line: int
    #: The physical lines the value came from: ``(line number, stripped text)``.
    pieces: tuple[tuple[int, str], ...] = ()

    @property
    def origin(self) -> str:
        return f"{self.file}:{self.line}"

    def line_of(self, token: str) -> int:
        """The physical line holding the first ``token``."""
        return self.locate(token, (0, 0))[0]

    def locate(self, token: str, cursor: tuple[int, int]) -> tuple[int, int]:
        """Find ``token`` at or after ``cursor`` = (line, column); return (line, end column).

        Used to point each restriction of a multi-line list at its own line.
        """
        for lineno, text in self.pieces:
            if lineno < cursor[0]:
                continue
            pos = text.find(token, cursor[1] if lineno == cursor[0] else 0)
            if pos >= 0:
                return lineno, pos + len(token)
        return self.line, 0


def parse_main_cf(
    text: str, file: str, *, is_list: Callable[[str], bool]
) -> tuple[list[Entry], list[Diagnostic]]:
    """Split main.cf text into entries. ``is_list(name)`` enables the seed-quirk continuation."""
    entries: list[Entry] = []
    diags: list[Diagnostic] = []
    name: str | None = None
    parts: list[tuple[int, str]] = []
    start = 0

    def flush() -> None:
        if name is not None:
            value = " ".join(p for _, p in parts if p)
            entries.append(Entry(name, value, file, start, tuple(parts)))

    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t":
            if name is None:
                diags.append(
                    Diagnostic("error", file, lineno, "logical line must not start with whitespace")
                )
            else:
                parts.append((lineno, stripped))
            continue
        if "=" in line:
            key, _, value = line.partition("=")
            key = key.strip()
            flush()
            if not _NAME.match(key):
                diags.append(Diagnostic("error", file, lineno, f"bad parameter name: {key!r}"))
                name = None
                continue
            name, parts, start = key, [(lineno, value.strip())], lineno
            continue
        if name is not None and is_list(name) and _LIST_ITEM.match(line):
            diags.append(
                Diagnostic(
                    "warning",
                    file,
                    lineno,
                    f"{stripped!r} continues {name} (line {start}) but is not indented; "
                    "Postfix rejects it with \"missing '='\": indent this line with a space",
                )
            )
            parts.append((lineno, stripped))
            continue
        flush()
        name = None
        diags.append(
            Diagnostic("error", file, lineno, f"missing '=' after attribute name: {stripped!r}")
        )
    flush()
    return entries, diags


class BraceError(ValueError):
    """A ``{`` without its ``}`` (or the reverse) in a list value."""


def _tokens(value: str, separators: str) -> Iterator[str]:
    depth = 0
    token: list[str] = []
    for ch in value:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                raise BraceError(f"unbalanced '}}' in {value!r}")
        elif depth == 0 and ch in separators:
            if token:
                yield "".join(token)
                token = []
            continue
        token.append(ch)
    if depth:
        raise BraceError(f"missing '}}' in {value!r}")
    if token:
        yield "".join(token)


def words(value: str) -> tuple[str, ...]:
    """Split a list value on commas and/or whitespace; ``{ ... }`` groups stay one token."""
    if "{" not in value and "}" not in value:
        return tuple(value.replace(",", " ").split())
    return tuple(_tokens(value, ", \t\r\n"))


def split_ws(value: str) -> tuple[str, ...]:
    """Split on whitespace only, keeping ``{ ... }`` groups (master.cf arguments)."""
    return tuple(_tokens(value, " \t\r\n"))


def strip_braces(token: str) -> str:
    """``{ a b }`` -> ``a b``; anything else unchanged."""
    if token.startswith("{") and token.endswith("}"):
        return token[1:-1].strip()
    return token


def references(value: str) -> set[str]:
    """Names a value refers to as ``$name``, ``${name...}`` or ``$(name...)``."""
    return set(_REF.findall(value.replace("$$", "")))


def _matching(text: str, i: int, open_ch: str, close_ch: str) -> int:
    """Index of the bracket closing the one at ``text[i]``, or -1."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == open_ch:
            depth += 1
        elif text[j] == close_ch:
            depth -= 1
            if depth == 0:
                return j
    return -1


def expand(value: str, resolve: Callable[[str], str | None]) -> str:
    """Expand ``$name``, ``${name}``, ``$(name)``, ``${name?x}``, ``${name:x}``, ``$$``.

    ``resolve(name)`` returns the (already expanded) value of ``name`` or None when
    undefined; undefined names expand to the empty string, as in Postfix.
    """
    if "$" not in value:
        return value
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        j = value.find("$", i)
        if j < 0 or j == n - 1:
            out.append(value[i:])
            break
        out.append(value[i:j])
        nxt = value[j + 1]
        if nxt == "$":
            out.append("$")
            i = j + 2
        elif nxt in "{(":
            close = _matching(value, j + 1, nxt, "}" if nxt == "{" else ")")
            if close < 0:
                out.append(value[j:])
                break
            out.append(_expand_group(value[j + 2 : close], resolve))
            i = close + 1
        else:
            m = _WORD.match(value, j + 1)
            if m is None:
                out.append("$")
                i = j + 1
            else:
                out.append(resolve(m.group()) or "")
                i = m.end()
    return "".join(out)


def _expand_group(inner: str, resolve: Callable[[str], str | None]) -> str:
    m = re.match(r"\s*([A-Za-z0-9_]+)\s*", inner)
    if m is None:
        return ""
    current = resolve(m.group(1)) or ""
    rest = inner[m.end() :]
    if not rest:
        return current
    op, arg = rest[0], rest[1:]
    if op == "?":
        # Postfix 3: ${name?{then}:{else}} as well as the classic ${name?then}.
        then, otherwise = arg, None
        if arg.lstrip().startswith("{"):
            start = arg.index("{")
            close = _matching(arg, start, "{", "}")
            tail = arg[close + 1 :].strip() if close >= 0 else ""
            if close >= 0 and tail.startswith(":"):
                then = arg[start + 1 : close]
                otherwise = strip_braces(tail[1:].strip())
            elif close >= 0 and not tail:
                then = arg[start + 1 : close]
        if current:
            return expand(then.strip() if otherwise is not None else then, resolve)
        return expand(otherwise, resolve) if otherwise is not None else ""
    if op == ":":
        return current if current else expand(strip_braces(arg.strip()), resolve)
    return current
