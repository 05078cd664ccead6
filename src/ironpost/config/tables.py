"""Postfix lookup tables: the interface every table type implements, and the types.

Owns :class:`LookupTable` (shared contract), :func:`open_table` and the table
types: ``inline:``, ``static:``, ``texthash:``, ``hash:``/``lmdb:``/``btree:``/
``cdb:``/``dbm:``/``sdbm:`` (all read the *text source* file, no postmap),
``cidr:``, ``regexp:``/``pcre:``, ``unionmap:``, ``proxy:`` (transparent) and
``unix:passwd.byname``.

Invariants: a file is read and parsed once, at open; a bad line raises
:class:`TableError` naming ``file:line``. Keys of dict-like tables are lowercased
at load and lookup (Postfix folds the lookup key), so lookups are one dict probe.
"""

from __future__ import annotations

import ipaddress
import pwd
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ironpost.config.syntax import BraceError, strip_braces, words


class LookupTable(Protocol):
    """A read-only key -> value map named the Postfix way (``type:name``)."""

    @property
    def spec(self) -> str:
        """The table as written in main.cf, e.g. ``hash:/etc/postfix/virtual``."""
        ...

    def lookup(self, key: str) -> str | None:
        """The value for ``key``, or None. Fast: called on the per-recipient hot path."""
        ...


class TableError(ValueError):
    """A table cannot be opened: unknown type, missing file or a bad line (named)."""


#: Types whose name is a text file of ``key value`` lines (read directly, no postmap).
TEXT_TYPES = frozenset({"texthash", "hash", "lmdb", "btree", "cdb", "dbm", "sdbm"})
SUPPORTED_TYPES = TEXT_TYPES | {
    "inline",
    "static",
    "cidr",
    "regexp",
    "pcre",
    "unionmap",
    "proxy",
    "unix",
}


class DictTable:
    """Case-insensitive key -> value (inline:, texthash:, hash: and friends)."""

    __slots__ = ("_map", "_spec")

    def __init__(self, spec: str, mapping: dict[str, str]) -> None:
        self._spec = spec
        self._map = mapping

    @property
    def spec(self) -> str:
        return self._spec

    def lookup(self, key: str) -> str | None:
        return self._map.get(key.lower())

    def __len__(self) -> int:
        return len(self._map)


class StaticTable:
    """``static:value``: every key maps to ``value``."""

    __slots__ = ("_spec", "_value")

    def __init__(self, spec: str, value: str) -> None:
        self._spec = spec
        self._value = value

    @property
    def spec(self) -> str:
        return self._spec

    def lookup(self, key: str) -> str | None:
        return self._value


class PasswdTable:
    """``unix:passwd.byname``: the passwd entry of a local user (local_recipient_maps)."""

    __slots__ = ("_spec",)

    def __init__(self, spec: str) -> None:
        self._spec = spec

    @property
    def spec(self) -> str:
        return self._spec

    def lookup(self, key: str) -> str | None:
        try:
            e = pwd.getpwnam(key)
        except (KeyError, ValueError):
            return None
        return (
            f"{e.pw_name}:{e.pw_passwd}:{e.pw_uid}:{e.pw_gid}:{e.pw_gecos}:{e.pw_dir}:{e.pw_shell}"
        )


class UnionTable:
    """``unionmap:{ a, b }``: all results, comma-joined (Postfix 3.0)."""

    __slots__ = ("_spec", "_tables")

    def __init__(self, spec: str, tables: tuple[LookupTable, ...]) -> None:
        self._spec = spec
        self._tables = tables

    @property
    def spec(self) -> str:
        return self._spec

    def lookup(self, key: str) -> str | None:
        found = [v for t in self._tables if (v := t.lookup(key)) is not None]
        return ",".join(found) if found else None


_Net = tuple[int, int, int, str, bool]  # version, network, mask, result, negated


class CidrTable:
    """Postfix cidr_table: ``network/prefix result``, first match wins, IPv4 and IPv6."""

    __slots__ = ("_rules", "_spec")

    def __init__(self, spec: str, rules: list[_Net]) -> None:
        self._spec = spec
        self._rules = rules

    @property
    def spec(self) -> str:
        return self._spec

    def lookup(self, key: str) -> str | None:
        try:
            addr = ipaddress.ip_address(key.strip("[]"))
        except ValueError:
            return None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        version, value = addr.version, int(addr)
        for ver, net, mask, result, negated in self._rules:
            if ver == version and ((value & mask) == net) != negated:
                return result
        return None


_Cond = tuple["re.Pattern[str]", bool]
_Rule = tuple[tuple[_Cond, ...], "re.Pattern[str]", bool, str]


class RegexpTable:
    """Postfix regexp_table/pcre_table: ``/pattern/flags result``, ``!/pat/``, if/endif."""

    __slots__ = ("_rules", "_spec")

    def __init__(self, spec: str, rules: list[_Rule]) -> None:
        self._spec = spec
        self._rules = rules

    @property
    def spec(self) -> str:
        return self._spec

    def lookup(self, key: str) -> str | None:
        for conds, pattern, negated, result in self._rules:
            if not all((c.search(key) is None) == neg for c, neg in conds):
                continue
            m = pattern.search(key)
            if negated:
                if m is None:
                    return result
            elif m is not None:
                return _substitute(result, m) if "$" in result else result
        return None


_GROUP_REF = re.compile(r"\$(?:(\d+)|\{(\d+)\}|\((\d+)\)|(\$))")


def _substitute(result: str, m: re.Match[str]) -> str:
    def repl(g: re.Match[str]) -> str:
        if g.group(4):
            return "$"
        return m.group(int(g.group(1) or g.group(2) or g.group(3))) or ""

    return _GROUP_REF.sub(repl, result)


# --- opening ----------------------------------------------------------------------


def open_table(spec: str, *, base: Path | None = None) -> LookupTable:
    """Open ``type:name``; relative file names are taken relative to ``base`` (config dir)."""
    kind, sep, name = spec.partition(":")
    if not sep or not name:
        raise TableError(f"{spec!r}: expected type:name")
    if kind == "proxy":
        return open_table(name, base=base)
    if kind == "inline":
        return DictTable(spec, _parse_inline(spec, name))
    if kind == "static":
        return StaticTable(spec, strip_braces(name))
    if kind == "unionmap":
        inner = _braced(spec, name)
        try:
            parts = words(inner)
        except BraceError as exc:
            raise TableError(f"{spec}: {exc}") from None
        return UnionTable(spec, tuple(open_table(p, base=base) for p in parts))
    if kind == "unix":
        if name != "passwd.byname":
            raise TableError(f"{spec}: only unix:passwd.byname is supported")
        return PasswdTable(spec)
    if kind not in SUPPORTED_TYPES:
        raise TableError(f"{spec}: unsupported table type {kind!r}")
    path = Path(name)
    if not path.is_absolute() and base is not None:
        path = base / path
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TableError(f"{spec}: cannot open {path}: {exc.strerror or exc}") from None
    if kind in TEXT_TYPES:
        return DictTable(spec, _parse_text(spec, str(path), text))
    if kind == "cidr":
        return CidrTable(spec, _parse_cidr(str(path), text))
    return RegexpTable(spec, _parse_regexp(str(path), text, pcre=kind == "pcre"))


def _braced(spec: str, name: str) -> str:
    if not (name.startswith("{") and name.endswith("}")):
        raise TableError(f"{spec}: expected {{ ... }} after the type")
    return name[1:-1]


def _parse_inline(spec: str, name: str) -> dict[str, str]:
    # Errors name the table by type only: an inline table may hold secrets
    # (smtp_sasl_password_maps), and error texts reach logs and terminals.
    label = "inline:{ ... }"
    try:
        items = words(_braced(label, name))
    except BraceError as exc:
        raise TableError(f"{label}: {exc}") from None
    out: dict[str, str] = {}
    for n, item in enumerate(items, 1):
        key, sep, value = strip_braces(item).partition("=")
        if not sep or not key.strip():
            raise TableError(f"{label}: element {n} is not key=value")
        out.setdefault(key.strip().lower(), value.strip())
    return out


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Postfix table files: ``#`` comment lines, blank lines, whitespace continuation."""
    start, parts = 0, list[str]()
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in " \t" and parts:
            parts.append(stripped)
            continue
        if parts:
            yield start, " ".join(parts)
        start, parts = lineno, [stripped]
    if parts:
        yield start, " ".join(parts)


def _parse_text(spec: str, file: str, text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, line in _logical_lines(text):
        fields = line.split(None, 1)
        if len(fields) < 2:
            raise TableError(f"{file}:{lineno}: expected format: key whitespace value")
        # Postfix postmap keeps the first of duplicate keys (with a warning).
        out.setdefault(fields[0].lower(), fields[1])
    return out


def _parse_cidr(file: str, text: str) -> list[_Net]:
    rules: list[_Net] = []
    for lineno, line in _logical_lines(text):
        fields = line.split(None, 1)
        if len(fields) < 2:
            raise TableError(f"{file}:{lineno}: expected format: network/prefix result")
        pattern, result = fields
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        addr, slash, prefix = pattern.partition("/")
        addr = addr.strip("[]")
        try:
            net = ipaddress.ip_network(f"{addr}/{prefix}" if slash else addr, strict=True)
        except ValueError as exc:
            raise TableError(f"{file}:{lineno}: bad cidr pattern {pattern!r}: {exc}") from None
        rules.append((net.version, int(net.network_address), int(net.netmask), result, negated))
    return rules


def _split_pattern(file: str, lineno: int, text: str) -> tuple[str, str, bool, str]:
    """``!/pat/flags rest`` -> (pattern, flags, negated, rest)."""
    negated = text.startswith("!")
    if negated:
        text = text[1:].lstrip()
    if not text:
        raise TableError(f"{file}:{lineno}: missing regular expression")
    delim = text[0]
    if delim.isalnum() or delim.isspace() or delim == "\\":
        raise TableError(f"{file}:{lineno}: regular expression must start with a delimiter")
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == delim:
            break
        i += 1
    else:
        raise TableError(f"{file}:{lineno}: missing closing delimiter {delim!r}")
    pattern = text[1:i]
    if delim != "/":
        pattern = pattern.replace("\\" + delim, delim)
    rest = text[i + 1 :]
    m = re.match(r"[A-Za-z]*", rest)
    flags = m.group() if m else ""
    return pattern, flags, negated, rest[len(flags) :].strip()


def _compile(file: str, lineno: int, pattern: str, flags: str, pcre: bool) -> re.Pattern[str]:
    ignore_case, re_flags = True, 0
    allowed = "imsxAEX" if pcre else "imx"
    for f in flags:
        if f not in allowed:
            raise TableError(f"{file}:{lineno}: unknown regexp flag {f!r}")
        if f == "i":
            ignore_case = not ignore_case  # Postfix: i toggles, default is case-insensitive
        elif f == "m":
            re_flags |= re.MULTILINE
        elif f == "s":
            re_flags |= re.DOTALL
        elif f == "x" and pcre:
            re_flags |= re.VERBOSE
        elif f == "A":
            pattern = f"(?:{pattern})" if pattern.startswith("^") else f"^(?:{pattern})"
    if ignore_case:
        re_flags |= re.IGNORECASE
    try:
        return re.compile(pattern, re_flags)
    except re.error as exc:
        raise TableError(f"{file}:{lineno}: bad regular expression {pattern!r}: {exc}") from None


def _parse_regexp(file: str, text: str, *, pcre: bool) -> list[_Rule]:
    rules: list[_Rule] = []
    conds: list[_Cond] = []
    for lineno, line in _logical_lines(text):
        if line == "endif":
            if not conds:
                raise TableError(f"{file}:{lineno}: endif without if")
            conds.pop()
            continue
        if line.startswith("if") and line[2:3].isspace():
            pattern, flags, negated, rest = _split_pattern(file, lineno, line[3:].lstrip())
            if rest:
                raise TableError(f"{file}:{lineno}: text after if pattern: {rest!r}")
            conds.append((_compile(file, lineno, pattern, flags, pcre), negated))
            continue
        pattern, flags, negated, result = _split_pattern(file, lineno, line)
        if not result:
            raise TableError(f"{file}:{lineno}: missing result after the pattern")
        compiled = _compile(file, lineno, pattern, flags, pcre)
        for g in _GROUP_REF.finditer(result):
            if g.group(4):
                continue
            if negated:
                raise TableError(f"{file}:{lineno}: $number in the result of a negated pattern")
            if int(g.group(1) or g.group(2) or g.group(3)) > compiled.groups:
                raise TableError(f"{file}:{lineno}: {g.group()} is out of range")
        rules.append((tuple(conds), compiled, negated, result))
    if conds:
        raise TableError(f"{file}: missing endif")
    return rules
