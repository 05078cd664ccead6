"""Configuration diagnostics: what went wrong, where, and how bad.

Owns :class:`Diagnostic` (one error or warning tied to ``file:line``) and
:class:`ConfigError` (raised when at least one error exists). Invariant: every
message a user sees about their configuration names the file and line it came
from, in the clickable ``file:line:`` form.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]

#: Pseudo file name for values that come from the parameter table, not a file.
DEFAULTS_FILE = "(defaults)"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding about the configuration."""

    severity: Severity
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.message}"

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class ConfigError(Exception):
    """The configuration has at least one error; ``diagnostics`` holds all findings."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics if d.is_error))

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.is_error)


def split_origin(origin: str) -> tuple[str, int]:
    """``"master.cf:12"`` -> ``("master.cf", 12)``; no line number gives line 0."""
    file, sep, line = origin.rpartition(":")
    if sep and line.isdigit():
        return file, int(line)
    return origin, 0


def sort_key(d: Diagnostic) -> tuple[str, int]:
    return (d.file, d.line)
