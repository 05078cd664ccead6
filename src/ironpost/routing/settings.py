"""The slice of the settings object that routing and policy read (a structural contract).

``ironpost.config`` builds the real, frozen settings object; this Protocol names only the
accessors our ``from_settings`` constructors call, so either side can evolve without an
import cycle. :func:`optional` reads a parameter that an older parameter table may lack.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from ironpost.config.tables import LookupTable

T = TypeVar("T")


class SettingsLike(Protocol):
    def text(self, name: str) -> str: ...

    def integer(self, name: str) -> int: ...

    def boolean(self, name: str) -> bool: ...

    def words(self, name: str) -> tuple[str, ...]: ...

    def tables(self, name: str) -> tuple[LookupTable, ...]: ...


def optional(getter: Callable[[str], T], name: str, default: T) -> T:
    """``getter(name)``, or ``default`` when the parameter table does not know ``name``.

    Only for knobs with a Postfix default we can supply ourselves: a misspelt *required*
    parameter must still fail loudly at startup.
    """
    try:
        return getter(name)
    except LookupError:  # KeyError and friends: parameter unknown to this table
        return default
