"""Typed, frozen settings built from main.cf entries and the parameter table.

Owns :class:`Settings` (the one object components receive) and
:func:`build_settings`, which expands ``$name`` references (recursively, with
loop detection), validates every value against its kind and bounds, checks
restriction lists and opens every lookup table once. Invariants: a Settings
never changes after construction; every diagnostic names ``file:line``; values
are expanded at build time except rows with ``expand=False``; tables are opened
once per spec and shared by all Settings derived with :meth:`Settings.override`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ironpost.config.diagnostics import (
    DEFAULTS_FILE,
    ConfigError,
    Diagnostic,
    Severity,
    split_origin,
)
from ironpost.config.paramdef import LIST_KINDS, TIME_UNITS, Param
from ironpost.config.params import PARAMS, classify, default_hostname, did_you_mean
from ironpost.config.restrictions import (
    NOT_YET_IMPLEMENTED,
    RestrictionError,
    is_table_token,
    parse_restrictions,
)
from ironpost.config.syntax import BraceError, Entry, expand, references, words
from ironpost.config.tables import LookupTable, TableError, open_table

_INT = re.compile(r"-?[0-9]+\Z")
_TIME = re.compile(r"([0-9]+)([smhdw]?)\Z")
TableCache = dict[tuple[str, str], LookupTable]
Typed = int | float | bool | str | tuple[str, ...]


class Settings:
    """Frozen, validated parameter values. Unknown names raise KeyError."""

    __slots__ = ("_base", "_cache", "_entries", "_explicit", "_texts", "_typed", "_values")

    def __init__(
        self,
        *,
        entries: tuple[Entry, ...],
        texts: dict[str, str],
        values: dict[str, str],
        typed: dict[str, Typed],
        explicit: dict[str, Entry],
        base: Path | None,
        cache: TableCache,
    ) -> None:
        self._entries = entries
        self._texts = texts
        self._values = values
        self._typed = typed
        self._explicit = explicit
        self._base = base
        self._cache = cache

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, "_cache"):
            raise AttributeError("Settings is frozen")
        object.__setattr__(self, name, value)

    # --- typed access ---------------------------------------------------------------

    def raw(self, name: str) -> str:
        """The expanded value as a string."""
        return self._values[name]

    def text(self, name: str) -> str:
        return self._values[name]

    def unexpanded(self, name: str) -> str:
        """The value as written in main.cf (or the table default), before expansion."""
        return self._texts[name]

    def integer(self, name: str) -> int:
        """An int or size parameter."""
        value = self._typed[name]
        if type(value) is not int:
            raise TypeError(f"{name} is not an int or size parameter")
        return value

    def boolean(self, name: str) -> bool:
        value = self._typed[name]
        if type(value) is not bool:
            raise TypeError(f"{name} is not a bool parameter")
        return value

    def seconds(self, name: str) -> float:
        """A time parameter, in seconds."""
        value = self._typed[name]
        if type(value) is not float:
            raise TypeError(f"{name} is not a time parameter")
        return value

    def words(self, name: str) -> tuple[str, ...]:
        """The value split on commas/whitespace; ``{ ... }`` groups stay one token."""
        value = self._typed.get(name)
        if isinstance(value, tuple):
            return value
        return words(self._values[name])

    def tables(self, name: str) -> tuple[LookupTable, ...]:
        """The ``type:name`` tokens of a list parameter, opened (cached per spec)."""
        return tuple(self.table(tok) for tok in self.words(name) if is_table_token(tok))

    @property
    def base(self) -> Path | None:
        """The configuration directory relative paths are read from (None: embedded)."""
        return self._base

    def table(self, spec: str) -> LookupTable:
        """One table by spec (e.g. a check_*_access argument), opened once."""
        key = (spec, str(self._base))
        table = self._cache.get(key)
        if table is None:
            table = self._cache[key] = open_table(spec, base=self._base)
        return table

    def is_explicit(self, name: str) -> bool:
        if name not in self._values:
            raise KeyError(name)
        return name in self._explicit

    def explicit_items(self) -> list[tuple[str, str]]:
        """``(name, value as written)`` for every explicitly set name, sorted (postconf -n)."""
        return sorted((name, e.value) for name, e in self._explicit.items())

    def origin(self, name: str) -> str | None:
        """``file:line`` where ``name`` was set, or None for a default."""
        entry = self._explicit.get(name)
        return entry.origin if entry else None

    def override(self, overrides: Mapping[str, str], origin: str) -> Settings:
        """A copy with ``name=value`` overrides (master.cf ``-o``), re-expanded and re-validated.

        Raises :class:`ConfigError` naming ``origin`` when an override is invalid.
        """
        settings, diags = apply_overrides(self, list(overrides.items()), origin)
        if any(d.is_error for d in diags):
            raise ConfigError(diags)
        return settings

    def __repr__(self) -> str:
        return f"<Settings {len(self._explicit)} explicit>"


def apply_overrides(
    settings: Settings, overrides: Sequence[tuple[str, str]], origin: str
) -> tuple[Settings, list[Diagnostic]]:
    """Rebuild with extra entries; return only the diagnostics the overrides caused."""
    file, line = split_origin(origin)
    extra = [Entry(k, v, file, line, ((line, v),)) for k, v in overrides]
    base_entries = settings._entries
    _, before = build_settings(base_entries, base=settings._base, cache=settings._cache)
    new, diags = build_settings((*base_entries, *extra), base=settings._base, cache=settings._cache)
    seen = set(before)
    return new, [d for d in diags if d not in seen]


class _Loop(Exception):
    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle


def build_settings(
    entries: Sequence[Entry], *, base: Path | None, cache: TableCache | None = None
) -> tuple[Settings, list[Diagnostic]]:
    """Validate entries against the table. Always returns Settings (invalid values fall
    back to a neutral value) so that all diagnostics can be collected in one pass."""
    diags: list[Diagnostic] = []
    cache = {} if cache is None else cache
    explicit: dict[str, Entry] = {}
    for e in entries:
        old = explicit.get(e.name)
        if old is not None and old.file == e.file:
            diags.append(
                Diagnostic(
                    "warning",
                    e.file,
                    e.line,
                    f"overriding earlier entry for {e.name} (line {old.line})",
                )
            )
        explicit[e.name] = e

    referenced: set[str] = set()
    for p in PARAMS.values():
        referenced |= references(p.default)
    for e in explicit.values():
        referenced |= references(e.value)
    # Names listed in smtpd_restriction_classes are user-defined restriction lists.
    classes = explicit.get("smtpd_restriction_classes")
    class_names = set(classes.value.replace(",", " ").split()) if classes else set()
    referenced |= class_names
    for e in explicit.values():
        cls = classify(e.name)
        if cls == "ironpost" or e.name in referenced:
            continue
        if cls == "postfix":
            msg = f"{e.name}: Postfix parameter not implemented by ironpost; ignored"
            diags.append(Diagnostic("warning", e.file, e.line, msg))
        else:
            msg = f"unknown parameter {e.name!r}{did_you_mean(e.name)}"
            diags.append(Diagnostic("error", e.file, e.line, msg))

    texts = {name: p.default for name, p in PARAMS.items()}
    texts.update((name, e.value) for name, e in explicit.items())
    if "myhostname" not in explicit:
        texts["myhostname"] = default_hostname()

    values: dict[str, str] = {}
    stack: list[str] = []

    def resolve(name: str) -> str | None:
        if name in values:
            return values[name]
        if name not in texts:
            return None
        if name in stack:
            raise _Loop([*stack[stack.index(name) :], name])
        stack.append(name)
        try:
            p = PARAMS.get(name)
            if name == "mydomain" and name not in explicit:
                host = resolve("myhostname") or ""
                value = host.partition(".")[2] or "localdomain"
            elif p is not None and not p.expand:
                value = texts[name]
            else:
                value = expand(texts[name], resolve)
        finally:
            stack.pop()
        values[name] = value
        return value

    reported: set[frozenset[str]] = set()
    for name in texts:
        try:
            resolve(name)
        except _Loop as loop:
            stack.clear()
            for n in loop.cycle:
                values.setdefault(n, "")
            key = frozenset(loop.cycle)
            if key not in reported:
                reported.add(key)
                members = [explicit[n] for n in loop.cycle if n in explicit]
                culprit = min(members, key=lambda e: e.line) if members else None
                file, line = (culprit.file, culprit.line) if culprit else (DEFAULTS_FILE, 0)
                where = culprit.name if culprit else name
                diags.append(
                    Diagnostic(
                        "error",
                        file,
                        line,
                        f"{where}: parameter expansion loop: {' -> '.join(loop.cycle)}",
                    )
                )
            values.setdefault(name, "")

    typed: dict[str, Typed] = {}
    checker = _Checker(explicit, diags, base, cache, values)
    # Explicit parameters first: a table that fails to open is reported once, at the
    # line that names it, not again for each default that refers to it ($virtual_alias_maps).
    for name in sorted(PARAMS, key=lambda n: n not in explicit):
        typed[name] = checker.check(PARAMS[name], values[name])
    for name in sorted(class_names & explicit.keys()):
        checker.check(Param(name, "restrictions", "", "restriction class"), values[name])

    _check_queue_engine(explicit, values, diags)
    settings = Settings(
        entries=tuple(entries),
        texts=texts,
        values=values,
        typed=typed,
        explicit=explicit,
        base=base,
        cache=cache,
    )
    return settings, diags


def _check_queue_engine(
    explicit: Mapping[str, Entry], values: Mapping[str, str], diags: list[Diagnostic]
) -> None:
    """A PostgreSQL queue needs its database and a node name: an error at the line that
    chose the engine, not a failed start."""
    if values.get("queue_engine", "").strip().lower() != "postgresql":
        return
    chose = explicit.get("queue_engine")
    file, line = (chose.file, chose.line) if chose else (DEFAULTS_FILE, 0)
    url = values.get("queue_database_url", "").strip()
    if not url:
        diags.append(
            Diagnostic("error", file, line, "queue_engine = postgresql needs queue_database_url")
        )
    elif not url.startswith(("postgresql://", "postgres://")):
        where = explicit.get("queue_database_url")
        diags.append(
            Diagnostic(
                "error",
                where.file if where else file,
                where.line if where else line,
                "queue_database_url: not a postgresql:// URL",
            )
        )
    if not values.get("queue_node_name", "").strip():
        diags.append(
            Diagnostic("error", file, line, "queue_engine = postgresql needs queue_node_name")
        )


class _Checker:
    """Validates one parameter value; appends diagnostics at the parameter's file:line."""

    def __init__(
        self,
        explicit: dict[str, Entry],
        diags: list[Diagnostic],
        base: Path | None,
        cache: TableCache,
        values: dict[str, str],
    ) -> None:
        self.explicit = explicit
        self.diags = diags
        self.base = base
        self.cache = cache
        self.failed: set[tuple[str, str]] = set()
        self.classes = tuple(values.get("smtpd_restriction_classes", "").replace(",", " ").split())

    def _report(self, p: Param, msg: str, severity: Severity = "error", token: str = "") -> None:
        e = self.explicit.get(p.name)
        if e is None and severity == "error" and references(p.default) & self.explicit.keys():
            return  # a default built from explicit values: reported at those values' lines
        file, line = (e.file, e.line_of(token) if token else e.line) if e else (DEFAULTS_FILE, 0)
        self.diags.append(Diagnostic(severity, file, line, msg))

    def check(self, p: Param, value: str) -> Typed:
        kind = p.kind
        if kind in ("int", "size"):
            if not _INT.match(value):
                self._report(p, f"{p.name} = {value}: not a number")
                return 0
            number = int(value)
            self._bounds(p, number, value)
            return number
        if kind == "bool":
            low = value.lower()
            if low in ("yes", "true", *p.choices):
                return True
            if low in ("no", "false"):
                return False
            self._report(p, f"{p.name} = {value}: not yes or no")
            return False
        if kind == "time":
            m = _TIME.match(value)
            if m is None:
                self._report(
                    p, f"{p.name} = {value}: not a time (number with optional unit s, m, h, d or w)"
                )
                return 0.0
            secs = int(m.group(1)) * TIME_UNITS[m.group(2) or p.unit]
            self._bounds(p, secs, value)
            return float(secs)
        if kind == "str":
            if p.name == "inet_protocols":
                bad = [w for w in words(value) if w not in ("all", "ipv4", "ipv6")]
                if bad or not value.strip():
                    self._report(p, f"{p.name} = {value}: expected all, ipv4, ipv6 or both")
            if p.choices and value not in p.choices:
                self._report(
                    p,
                    f"{p.name} = {value}: must be one of "
                    f"{', '.join(c or '(empty)' for c in p.choices)}",
                )
            return value
        assert kind in LIST_KINDS
        try:
            tokens = words(value)
        except BraceError as exc:
            self._report(p, f"{p.name}: {exc}")
            return ()
        if kind == "restrictions":
            self._restrictions(p, tokens)
        elif kind == "tables":
            for tok in tokens:
                if not is_table_token(tok):
                    self._report(
                        p, f"{p.name}: {tok!r} is not a lookup table (type:name)", token=tok
                    )
                else:
                    self._open(p, tok)
        elif kind == "domain_list":
            for tok in tokens:
                self._pattern(p, tok)
        elif kind == "network_list":
            for tok in tokens:
                self._network(p, tok)
        elif p.name == "inet_interfaces":
            self._interfaces(p, tokens)
        return tokens

    def _bounds(self, p: Param, number: int, value: str) -> None:
        if p.min is not None and number < p.min:
            self._report(p, f"{p.name} = {value}: must be at least {p.min}")
        elif p.max is not None and number > p.max:
            self._report(p, f"{p.name} = {value}: must be at most {p.max}")

    def _open(self, p: Param, spec: str) -> None:
        key = (spec, str(self.base))
        if key in self.cache or key in self.failed:
            return
        try:
            self.cache[key] = open_table(spec, base=self.base)
        except TableError as exc:
            self.failed.add(key)
            self._report(p, f"{p.name}: {exc}", token=spec.partition(":")[0])

    def _restrictions(self, p: Param, tokens: tuple[str, ...]) -> None:
        try:
            parsed = parse_restrictions(tokens, classes=self.classes)
        except RestrictionError as exc:
            self._report(p, f"{p.name}: {exc}", token=exc.token)
            return
        cursor = (0, 0)
        e = self.explicit.get(p.name)
        for name, args in parsed:
            if e is not None:
                cursor = e.locate(name, cursor)
            if is_table_token(name):
                self._open(p, name)
            for arg in args:
                if is_table_token(arg) and name.endswith("_access"):
                    self._open(p, arg)
            if name in NOT_YET_IMPLEMENTED:
                shown = " ".join((name, *args))
                msg = f"{p.name}: {shown}: not yet implemented: evaluated as dunno"
                if e is not None:
                    self.diags.append(Diagnostic("warning", e.file, cursor[0], msg))
                else:
                    self._report(p, msg, "warning")

    def _pattern(self, p: Param, tok: str) -> None:
        tok = tok.lstrip("!")
        if is_table_token(tok):
            self._open(p, tok)
        elif tok.startswith("/"):
            path = Path(tok)
            if not path.is_file():
                self._report(p, f"{p.name}: cannot open {tok}", token=tok)

    def _network(self, p: Param, tok: str) -> None:
        bare = tok.lstrip("!")
        if is_table_token(bare) or bare.startswith("/"):
            self._pattern(p, bare)
            return
        addr, slash, prefix = bare.partition("/")
        addr = addr.strip("[]")
        if not (re.fullmatch(r"[0-9.]+", addr) or ":" in addr):
            return  # a hostname or domain pattern (matched against the client name)
        try:
            ipaddress.ip_network(f"{addr}/{prefix}" if slash else addr, strict=True)
        except ValueError as exc:
            hint = ""
            try:
                net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
                hint = f" (did you mean {net}?)"
            except ValueError:
                pass
            self._report(p, f"{p.name}: bad network {tok!r}: {exc}{hint}", token=tok)

    def _interfaces(self, p: Param, tokens: tuple[str, ...]) -> None:
        if len(tokens) > 1 and ("all" in tokens or "loopback-only" in tokens):
            self._report(p, f"{p.name}: 'all' and 'loopback-only' must stand alone")
