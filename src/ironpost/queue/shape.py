"""qshape for ironpost: queued mail per destination by age, as a table.

Owns the pure part of ``ironpost queue stats``: the age buckets (Postfix qshape's
geometry: under 5, 10, 20, … 1280 minutes, then 1280+), turning the store's grouped
counts into a :class:`Shape` (a TOTAL row first, then destinations by decreasing count),
and printing it in qshape's layout or as JSON. The counting itself is one GROUP BY in the
store (:meth:`~ironpost.queue.sqlite.SqliteQueue.shape_rows`), never a loop over
messages.

As in qshape, the recipient distribution counts recipients still to be delivered (a
message to three domains counts once in each), and the sender distribution counts
messages (each has one sender; the null sender shows as ``MAILER-DAEMON``).

Invariants: every row has ``len(edges) + 1`` bucket counts and its total is their sum;
TOTAL's buckets are the column sums; bucket ``i`` holds ages in
``[edges[i - 1], edges[i])`` minutes (the first from 0, the last unbounded).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Protocol

from ironpost.queue.model import QueueState, address_domain

DEFAULT_BUCKET_MINUTES: tuple[float, ...] = (5, 10, 20, 40, 80, 160, 320, 640, 1280)
DEFAULT_STATES = (QueueState.INCOMING, QueueState.ACTIVE, QueueState.DEFERRED)
NULL_SENDER = "MAILER-DAEMON"
TOTAL = "TOTAL"
_MIN_DOMAIN_WIDTH = 18  # qshape's $dwidth


class ShapeSource(Protocol):
    """What :func:`shape` needs from a queue store."""

    def shape_rows(
        self,
        *,
        now: float,
        edges: Sequence[float],
        states: Sequence[QueueState],
        by_sender: bool = False,
    ) -> list[tuple[str, int, int]]: ...

    def stats(self) -> dict[QueueState, int]: ...


@dataclass(frozen=True, slots=True)
class ShapeRow:
    destination: str
    total: int
    buckets: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Shape:
    now: float
    edges: tuple[float, ...]  # minutes: the upper bounds of all buckets but the last
    states: tuple[QueueState, ...]
    by_sender: bool
    messages: Mapping[QueueState, int]  # messages per state, every state (the old `stats`)
    rows: tuple[ShapeRow, ...]  # TOTAL first

    @property
    def headings(self) -> tuple[str, ...]:
        """qshape's column heads: ``T``, each bucket's upper edge, then ``<last>+``."""
        if not self.edges:
            return ("T", "0+")
        edges = [_minutes(e) for e in self.edges]
        return ("T", *edges, f"{edges[-1]}+")


def _minutes(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def geometric_buckets(
    count: int = 10, tick: float = 5, *, linear: bool = False
) -> tuple[float, ...]:
    """The upper edges (minutes) of qshape's ``-b count -t tick [-l]`` buckets: ``count - 1``
    edges, doubling from ``tick`` (or ``tick, 2 tick, 3 tick …`` with ``linear``); the last
    bucket is open-ended."""
    if count < 1 or tick <= 0:
        raise ValueError("bucket count must be at least 1 and bucket time positive")
    if linear:
        return tuple(tick * (i + 1) for i in range(count - 1))
    return tuple(tick * 2**i for i in range(count - 1))


def _check_edges(edges: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(e) for e in edges)
    if any(not math.isfinite(e) or e <= 0 for e in out) or any(a >= b for a, b in pairwise(out)):
        raise ValueError(f"bucket edges must be positive and increasing: {list(edges)}")
    return out


def destination_of_sender(sender: str) -> str:
    return address_domain(sender) if sender else NULL_SENDER


def build_shape(
    counts: Iterable[tuple[str, int, int]],
    *,
    now: float,
    edges: Sequence[float],
    states: Sequence[QueueState],
    messages: Mapping[QueueState, int],
    by_sender: bool = False,
) -> Shape:
    """A :class:`Shape` from the store's ``(key, bucket, count)`` rows. ``key`` is a
    recipient domain, or a raw sender with ``by_sender`` (folded to its domain here, so
    the store needs no sender-domain column)."""
    edge_values = _check_edges(edges)
    width = len(edge_values) + 1
    table: dict[str, list[int]] = {}
    grand = [0] * width
    for key, bucket, count in counts:
        if not 0 <= bucket < width:
            raise ValueError(f"bucket {bucket} out of range 0..{width - 1}")
        destination = destination_of_sender(key) if by_sender else key
        table.setdefault(destination, [0] * width)[bucket] += count
        grand[bucket] += count
    ordered = sorted(table.items(), key=lambda item: (-sum(item[1]), len(item[0]), item[0]))
    rows = [ShapeRow(TOTAL, sum(grand), tuple(grand))]
    rows.extend(ShapeRow(d, sum(b), tuple(b)) for d, b in ordered)
    return Shape(
        now=now,
        edges=edge_values,
        states=tuple(states),
        by_sender=by_sender,
        messages={state: int(messages.get(state, 0)) for state in QueueState},
        rows=tuple(rows),
    )


def shape(
    store: ShapeSource,
    now: float,
    *,
    buckets: Sequence[float] = DEFAULT_BUCKET_MINUTES,
    states: Sequence[QueueState] = DEFAULT_STATES,
    by_sender: bool = False,
) -> Shape:
    """The queue's shape at ``now``: ``buckets`` are upper edges in minutes (the last
    bucket, ``<last>+``, is implicit); ``states`` selects the queues counted."""
    edges = _check_edges(buckets)
    rows = store.shape_rows(
        now=now, edges=[e * 60.0 for e in edges], states=tuple(states), by_sender=by_sender
    )
    return build_shape(
        rows, now=now, edges=edges, states=states, messages=store.stats(), by_sender=by_sender
    )


def _printable(text: str) -> str:
    # Domains come from the network: keep control characters off the terminal.
    return "".join(c if c.isprintable() else "?" for c in text)


def format_shape(s: Shape, *, width: int = 80, top: int | None = None) -> str:
    """qshape's layout: a heading line, then TOTAL and one line per destination; column
    widths fit the TOTAL counts, the destination column takes the rest of ``width`` (at
    least 18), and a longer name keeps its tail behind a ``+``. ``top`` limits the
    destinations shown (TOTAL is always shown)."""
    heads = s.headings
    total = s.rows[0]
    fields = [str(total.total), *(str(b) for b in total.buckets)]
    widths: list[int] = []
    for head, value in zip(heads, fields, strict=True):
        n = max(len(head), len(value))
        widths.append(n + 1 if n > 2 else 3)
    dw = max(_MIN_DOMAIN_WIDTH, width - sum(widths))

    def line(name: str, cells: Sequence[str]) -> str:
        name = _printable(name)
        if len(name) > dw:
            name = "+" + name[len(name) - dw + 1 :]
        return name.rjust(dw) + "".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))

    rows = s.rows if top is None else s.rows[: top + 1]
    out = [line("", heads)]
    out.extend(line(r.destination, [str(r.total), *map(str, r.buckets)]) for r in rows)
    return "\n".join(out) + "\n"


def shape_to_json(s: Shape) -> dict[str, Any]:
    return {
        "now": datetime.fromtimestamp(s.now, UTC).isoformat().replace("+00:00", "Z"),
        "states": [state.value for state in s.states],
        "by": "sender" if s.by_sender else "recipient",
        "messages": {
            **{state.value: n for state, n in s.messages.items()},
            "total": sum(s.messages.values()),
        },
        "buckets": list(s.headings[1:]),
        "rows": [
            {"destination": r.destination, "total": r.total, "buckets": list(r.buckets)}
            for r in s.rows
        ],
    }
