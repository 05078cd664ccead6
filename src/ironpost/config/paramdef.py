"""The shape of one parameter-table row; the rows live in ``params_*.py``.

Owns :class:`Param` and the kinds. Invariant: ``default`` is main.cf text (it may
hold ``$name`` references) and must validate against ``kind`` and bounds; a test
checks every row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal[
    "str",
    "int",
    "bool",
    "time",
    "size",
    "list",
    "restrictions",
    "tables",
    "domain_list",
    "network_list",
]
Origin = Literal["postfix", "ironpost"]

#: Kinds whose value is a comma/whitespace list (``Settings.words`` applies).
LIST_KINDS: frozenset[str] = frozenset(
    {"list", "restrictions", "tables", "domain_list", "network_list"}
)

#: Postfix time units, in seconds.
TIME_UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True, slots=True)
class Param:
    """One main.cf parameter: Postfix's name, its kind, default and bounds."""

    name: str
    kind: Kind
    default: str
    doc: str
    min: int | None = None
    max: int | None = None
    origin: Origin = "postfix"
    #: Time kind: the unit of a bare number (Postfix: per parameter).
    unit: str = "s"
    #: Postfix's own default when ironpost's (hardened) default differs.
    postfix_default: str | None = None
    #: Allowed values of a ``str`` row (empty: anything); for a ``bool`` row, extra
    #: words that mean yes.
    choices: tuple[str, ...] = ()
    #: False for values expanded later, per message (``smtpd_reject_footer``).
    expand: bool = True


def s(name: str, default: str, doc: str, **kw: object) -> Param:
    return Param(name, "str", default, doc, **kw)  # type: ignore[arg-type]


def i(
    name: str, default: str, doc: str, lo: int | None = 0, hi: int | None = None, **kw: object
) -> Param:
    return Param(name, "int", default, doc, lo, hi, **kw)  # type: ignore[arg-type]


def b(name: str, default: str, doc: str, **kw: object) -> Param:
    return Param(name, "bool", default, doc, **kw)  # type: ignore[arg-type]


def t(
    name: str, default: str, doc: str, lo: int | None = 0, hi: int | None = None, **kw: object
) -> Param:
    return Param(name, "time", default, doc, lo, hi, **kw)  # type: ignore[arg-type]


def z(
    name: str, default: str, doc: str, lo: int | None = 0, hi: int | None = None, **kw: object
) -> Param:
    return Param(name, "size", default, doc, lo, hi, **kw)  # type: ignore[arg-type]


def lst(name: str, default: str, doc: str, **kw: object) -> Param:
    return Param(name, "list", default, doc, **kw)  # type: ignore[arg-type]


def r(name: str, default: str, doc: str, **kw: object) -> Param:
    return Param(name, "restrictions", default, doc, **kw)  # type: ignore[arg-type]


def m(name: str, default: str, doc: str, **kw: object) -> Param:
    return Param(name, "tables", default, doc, **kw)  # type: ignore[arg-type]


def d(name: str, default: str, doc: str, **kw: object) -> Param:
    return Param(name, "domain_list", default, doc, **kw)  # type: ignore[arg-type]


def n(name: str, default: str, doc: str, **kw: object) -> Param:
    return Param(name, "network_list", default, doc, **kw)  # type: ignore[arg-type]


def code(name: str, default: str, doc: str, lo: int = 400, hi: int = 599) -> Param:
    return Param(name, "int", default, doc, lo, hi)
