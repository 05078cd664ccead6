"""The one parameter table: every parameter ironpost honours, plus Postfix's names.

Owns ``PARAMS`` (name -> :class:`Param`, assembled from the family modules),
the list of real Postfix parameter names (``postfix_params.txt``, generated once
from ``postconf -d``) and name classification for main.cf. Parsing, validation,
``postconf -d`` and the docs (:func:`render_table_markdown`) all come from here.
"""

from __future__ import annotations

import difflib
import functools
import socket
from importlib import resources
from typing import Literal

from ironpost.config.paramdef import LIST_KINDS, TIME_UNITS, Kind, Param
from ironpost.config.params_auth import AUTH
from ironpost.config.params_core import CORE
from ironpost.config.params_dkim import DKIM
from ironpost.config.params_dns import DNS
from ironpost.config.params_maillog import MAILLOG
from ironpost.config.params_metrics import METRICS
from ironpost.config.params_process import PROCESS
from ironpost.config.params_records import RECORDS
from ironpost.config.params_smtpd import SMTPD

__all__ = [
    "LIST_KINDS",
    "PARAMS",
    "TIME_UNITS",
    "Kind",
    "Param",
    "classify",
    "default_hostname",
    "did_you_mean",
    "is_list_param",
    "postfix_names",
    "render_table_markdown",
]


def _build() -> dict[str, Param]:
    table: dict[str, Param] = {}
    for p in (*CORE, *SMTPD, *DNS, *AUTH, *DKIM, *RECORDS, *MAILLOG, *METRICS, *PROCESS):
        if p.name in table:
            raise RuntimeError(f"parameter {p.name} defined twice")
        table[p.name] = p
    return table


PARAMS: dict[str, Param] = _build()


@functools.cache
def postfix_names() -> tuple[frozenset[str], tuple[str, ...]]:
    """(exact Postfix parameter names, per-transport suffixes such as ``_time_limit``)."""
    text = resources.files("ironpost.config").joinpath("postfix_params.txt").read_text()
    exact: set[str] = set()
    suffixes: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            suffixes.append(line[1:])
        else:
            exact.add(line)
    return frozenset(exact), tuple(suffixes)


Class = Literal["ironpost", "postfix", "unknown"]


def classify(name: str) -> Class:
    """``ironpost``: in the table; ``postfix``: a real Postfix name we ignore; else unknown."""
    if name in PARAMS:
        return "ironpost"
    exact, suffixes = postfix_names()
    if name in exact:
        return "postfix"
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
            return "postfix"
    return "unknown"


def did_you_mean(name: str) -> str:
    """`` (did you mean X?)`` for a near miss, else an empty string."""
    exact, _ = postfix_names()
    close = difflib.get_close_matches(name, [*PARAMS, *exact], n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


def is_list_param(name: str) -> bool:
    p = PARAMS.get(name)
    return p is not None and p.kind in LIST_KINDS


@functools.cache
def default_hostname() -> str:
    """The machine's FQDN, as Postfix's myhostname default; cached (getfqdn may hit DNS)."""
    try:
        fqdn = socket.getfqdn()
    except OSError:
        fqdn = ""
    if "." not in fqdn or fqdn.endswith(".") or fqdn.startswith("localhost"):
        return "localhost.localdomain"
    return fqdn.lower()


def render_table_markdown() -> str:
    """The parameter table as Markdown (docs/configuration.md is generated from this)."""
    rows = [
        "| parameter | kind | default | bounds | notes |",
        "|---|---|---|---|---|",
    ]
    for p in sorted(PARAMS.values(), key=lambda p: p.name):
        bounds = ""
        if p.min is not None or p.max is not None:
            lo = "" if p.min is None else str(p.min)
            hi = "" if p.max is None else str(p.max)
            bounds = f"{lo}..{hi}"
        default = p.default or "(empty)"
        if p.name == "myhostname":
            default = "(machine FQDN)"
        elif p.name == "mydomain":
            default = "($myhostname minus first label)"
        notes = p.doc
        if p.origin == "ironpost":
            notes = f"**ironpost-own.** {notes}"
        elif p.postfix_default is not None:
            notes = f"{notes} Postfix default: `{p.postfix_default or '(empty)'}`."
        cell = default.replace("|", "\\|")
        rows.append(f"| `{p.name}` | {p.kind} | `{cell}` | {bounds} | {notes.replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def _unit_check() -> None:
    for p in PARAMS.values():
        if p.kind == "time" and p.unit not in TIME_UNITS:
            raise RuntimeError(f"{p.name}: bad time unit {p.unit}")


_unit_check()
