"""The doctor's result type and its two renderings (text for people, JSON for tools).

Owns :class:`Check` (one finding: ``status`` pass|warn|fail, ``title``, ``detail``,
``fix``), :class:`Inputs` (what every check family reads: the settings, our addresses,
our domains, the resolver) and the exit status rule.

Invariants: every warn or fail carries a non-empty ``fix`` (the doctor never reports a
problem without saying what to do); ``exit_status`` is non-zero exactly when some check
failed; rendering never reorders checks (families run in a fixed order).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from ironpost.auth.dkim_keys import SigningKey
from ironpost.config import Service, Settings
from ironpost.deliverability.records import IPAddress, RecordSet
from ironpost.dns.types import Resolver

Status = Literal["pass", "warn", "fail"]
STATUSES: tuple[Status, ...] = ("pass", "warn", "fail")


@dataclass(frozen=True, slots=True)
class Check:
    """One finding. ``family`` groups checks (names, records, tls, reputation, audit,
    relay); ``title`` names what was checked, ``detail`` what was found."""

    family: str
    status: Status
    title: str
    detail: str
    fix: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"bad status {self.status!r}")
        if self.status != "pass" and not self.fix:
            raise ValueError(f"{self.title}: a {self.status} needs a fix")


def passed(family: str, title: str, detail: str) -> Check:
    return Check(family, "pass", title, detail)


def warned(family: str, title: str, detail: str, fix: str) -> Check:
    return Check(family, "warn", title, detail, fix)


def failed(family: str, title: str, detail: str, fix: str) -> Check:
    return Check(family, "fail", title, detail, fix)


@dataclass(frozen=True)
class Inputs:
    """What the checks read. ``addresses`` are taken as given (``--ip`` is trusted even
    for loopback, so that tests can play a public address on 127.0.0.x)."""

    settings: Settings
    config_dir: Path | None
    services: tuple[Service, ...]
    hostname: str  # myhostname, lowercase, no trailing dot
    addresses: tuple[IPAddress, ...]
    domains: tuple[str, ...]
    resolver: Resolver
    records: RecordSet | None  # what should be published (None: myhostname unusable)
    nameservers: tuple[str, ...] = ()  # the resolver's servers, "address:port"
    dkim_keys: tuple[SigningKey, ...] = ()
    dkim_error: str | None = None  # the signing table's keys could not be read
    notes: tuple[str, ...] = field(default=())  # warnings found while gathering these


def exit_status(checks: Iterable[Check]) -> int:
    """1 when any check failed, else 0 (warnings do not fail the run)."""
    return 1 if any(c.status == "fail" for c in checks) else 0


def summary(checks: Sequence[Check]) -> dict[str, int]:
    counts = Counter(c.status for c in checks)
    return {s: counts.get(s, 0) for s in STATUSES}


_LABEL = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}


def render_text(checks: Sequence[Check], header: str = "") -> str:
    """``FAIL  title: detail`` then an indented ``fix:`` line; a count at the end."""
    lines = [header] if header else []
    for c in checks:
        lines.append(f"{_LABEL[c.status]}  {c.title}: {c.detail}")
        if c.status != "pass":
            lines.append(f"      fix: {c.fix}")
    counts = summary(checks)
    lines.append(f"{counts['pass']} passed, {counts['warn']} warnings, {counts['fail']} failed")
    return "\n".join(lines) + "\n"


def render_json(checks: Sequence[Check], **extra: object) -> str:
    document = {
        **extra,
        "ok": exit_status(checks) == 0,
        "summary": summary(checks),
        "checks": [asdict(c) for c in checks],
    }
    return json.dumps(document, indent=2) + "\n"
