"""qshape statistics: bucket geometry, counts from a real store at a fixed ``now`` (checked
against a plain Python reference, also by hypothesis), the qshape layout and JSON."""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from queue_testing import build_envelope

from ironpost.cli.queue import cmd_stats
from ironpost.queue import Outcome, QueueState, RecipientStatus, SqliteQueue, open_queue, shape
from ironpost.queue.shape import (
    DEFAULT_BUCKET_MINUTES,
    NULL_SENDER,
    build_shape,
    format_shape,
    geometric_buckets,
)

NOW = 1_700_000_000.0


def put(store: SqliteQueue, age_minutes: float, *rcpts: str, sender: str = "a@example.org") -> str:
    envelope = build_envelope(*rcpts, sender=sender, arrival=NOW - age_minutes * 60)
    return asyncio.run(store.submit(envelope, b"x\r\n"))


def test_default_buckets_are_qshapes() -> None:
    assert geometric_buckets() == DEFAULT_BUCKET_MINUTES
    assert geometric_buckets(4, 10, linear=True) == (10, 20, 30)
    assert geometric_buckets(1) == ()
    with pytest.raises(ValueError):
        geometric_buckets(0)


def test_bucket_edges_are_exclusive_upper_bounds(store: SqliteQueue) -> None:
    put(store, 0, "a@x.example")
    put(store, 4.99, "b@x.example")
    put(store, 5, "c@x.example")  # exactly 5 minutes old: the "10" column
    put(store, 639.9, "d@y.example", "e@y.example", "f@x.example")
    put(store, 1280, "g@y.example")
    put(store, 100_000, "h@Y.example")
    s = shape(store, NOW)
    assert s.headings == ("T", "5", "10", "20", "40", "80", "160", "320", "640", "1280", "1280+")
    rows = {r.destination: (r.total, r.buckets) for r in s.rows}
    assert rows == {
        "TOTAL": (8, (2, 1, 0, 0, 0, 0, 0, 3, 0, 2)),
        "x.example": (4, (2, 1, 0, 0, 0, 0, 0, 1, 0, 0)),
        "y.example": (4, (0, 0, 0, 0, 0, 0, 0, 2, 0, 2)),
    }
    assert s.rows[0].destination == "TOTAL"
    assert s.messages[QueueState.INCOMING] == 6


def test_states_are_selectable_and_final_recipients_not_counted(store: SqliteQueue) -> None:
    a = put(store, 1, "a@x.example", "b@y.example")
    b = put(store, 1, "c@x.example")

    async def deliver_one() -> None:
        await store.claim(now=NOW, limit=10)
        await store.record(
            [
                Outcome(a, 0, RecipientStatus.DELIVERED, "250 ok"),
                Outcome(a, 1, RecipientStatus.DEFERRED, "451 later", NOW + 600),
                Outcome(b, 0, RecipientStatus.DEFERRED, "451 later", NOW + 600),
            ]
        )

    asyncio.run(deliver_one())
    store.hold(b)
    default = {r.destination: r.total for r in shape(store, NOW).rows}
    assert default == {"TOTAL": 1, "y.example": 1}  # b is held, a's x recipient delivered
    held = shape(store, NOW, states=[QueueState.HOLD])
    assert {r.destination: r.total for r in held.rows} == {"TOTAL": 1, "x.example": 1}
    assert shape(store, NOW, states=[]).rows[0].total == 0


def test_sender_distribution_counts_messages(store: SqliteQueue) -> None:
    put(store, 1, "a@x.example", "b@x.example", sender="Me@Home.Example")
    put(store, 1, "c@x.example", sender="")
    put(store, 30, "c@x.example", sender="you@home.example")
    s = shape(store, NOW, by_sender=True)
    assert {r.destination: r.total for r in s.rows} == {
        "TOTAL": 3,
        "home.example": 2,
        NULL_SENDER: 1,
    }


def test_format_is_qshapes_layout() -> None:
    s = build_shape(
        [
            ("example.com", 0, 3),
            ("example.com", 9, 120),
            ("a-very-long-destination-name.subdomain.example.net", 3, 7),
            ("b.example", 1, 7),
        ],
        now=NOW,
        edges=DEFAULT_BUCKET_MINUTES,
        states=[QueueState.DEFERRED],
        messages={QueueState.DEFERRED: 100},
    )
    # qshape: columns sized to the TOTAL counts, names right-aligned in the rest of 80
    # columns, a too-long name keeps its tail behind "+", equal counts: shorter name first.
    assert format_shape(s) == (
        "                                         T  5 10 20 40 80 160 320 640 1280 1280+\n"
        "                                 TOTAL 137  3  7  0  7  0   0   0   0    0   120\n"
        "                           example.com 123  3  0  0  0  0   0   0   0    0   120\n"
        "                             b.example   7  0  7  0  0  0   0   0   0    0     0\n"
        "+estination-name.subdomain.example.net   7  0  0  0  7  0   0   0   0    0     0\n"
    )
    lines = format_shape(s).splitlines()
    assert format_shape(s, top=1).splitlines()[1:] == lines[1:3]


def test_json_and_the_stats_command(store: SqliteQueue) -> None:
    put(store, 7, "a@x.example")
    out = io.StringIO()
    assert cmd_stats(store, now=NOW, out=out, as_json=True) == 0
    data = json.loads(out.getvalue())
    assert data["messages"]["incoming"] == 1 and data["messages"]["total"] == 1
    assert data["buckets"][0] == "5" and data["buckets"][-1] == "1280+"
    assert data["rows"][1] == {"destination": "x.example", "total": 1, "buckets": [0, 1] + [0] * 8}
    out = io.StringIO()
    assert cmd_stats(store, now=NOW, out=out) == 0
    text = out.getvalue()
    assert text.startswith("incoming  1\n")  # the per-state counts come first
    assert "   x.example" in text


@st.composite
def queues(draw: st.DrawFn) -> list[tuple[float, list[str], bool]]:
    domains = st.sampled_from(["a.example", "B.example", "c.example", "xn--bcher-kva.example"])
    messages = st.tuples(
        st.floats(min_value=0, max_value=200_000, allow_nan=False),  # age in minutes
        st.lists(domains.map(lambda d: f"u@{d}"), min_size=1, max_size=4),
        st.booleans(),  # held?
    )
    return draw(st.lists(messages, max_size=25))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queue=queues(), count=st.integers(1, 12), tick=st.integers(1, 60), linear=st.booleans())
def test_store_counts_match_a_python_reference(
    queue: list[tuple[float, list[str], bool]], count: int, tick: int, linear: bool
) -> None:
    edges = geometric_buckets(count, tick, linear=linear)
    expected: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        store = open_queue(Path(tmp) / "q")
        try:
            for age, rcpts, held in queue:
                qid = put(store, age, *rcpts)
                if held:
                    store.hold(qid)
                    continue
                arrival = NOW - age * 60
                b = next((i for i, e in enumerate(edges) if NOW - arrival < e * 60), len(edges))
                for r in rcpts:
                    expected.setdefault(r.rpartition("@")[2].lower(), [0] * (count))[b] += 1
            s = shape(store, NOW, buckets=edges)
        finally:
            store.close()
    got = {r.destination: list(r.buckets) for r in s.rows[1:]}
    assert got == expected
    columns = [sum(row[i] for row in expected.values()) for i in range(count)]
    assert list(s.rows[0].buckets) == columns
    assert all(r.total == sum(r.buckets) for r in s.rows)
    assert [r.total for r in s.rows[1:]] == sorted((r.total for r in s.rows[1:]), reverse=True)
