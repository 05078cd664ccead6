"""The streamed mailq listing (``ironpost queue list``): the store's listing rows and the
row formatter must give, byte for byte, what the straightforward formatter over decoded
messages gave (kept here as the reference), on random queues and on a real store."""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from queue_testing import CLIENT

from ironpost.cli import queue as queue_cli
from ironpost.cli.queue import EMPTY_SENDER, asctime, cmd_list, format_mailq, write_mailq
from ironpost.queue import (
    Envelope,
    Outcome,
    QueuedMessage,
    QueuedRecipient,
    QueueState,
    RecipientSpec,
    RecipientStatus,
    SqliteQueue,
    open_queue,
)

T0 = 1_700_000_000.0


@pytest.fixture(autouse=True)
def berlin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A zone with DST, so that the per-second stamp cache meets real offsets.
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# -- the reference: the formatter as it was before the listing was streamed ---------------


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def reference_mailq(messages: Sequence[QueuedMessage]) -> str:
    if not messages:
        return "Mail queue is empty\n"
    long_ids = any(len(m.id) > 10 for m in messages)
    if long_ids:
        string_fmt, sender_fmt = "%-17s %8s %-19s %s", "%-17s %8d %19.19s %s"
        head = ("----Queue ID-----", "--Size--", "---Arrival Time----", "--Sender/Recipient------")
    else:
        string_fmt, sender_fmt = "%-11s %7s %-20s %s", "%-11s %7d %20.20s %s"
        head = ("-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
    out = [string_fmt % head]
    total = 0
    for n, m in enumerate(messages):
        if n:
            out.append("")
        mark = {QueueState.ACTIVE: "*", QueueState.HOLD: "!"}.get(m.state, "")
        sender = _printable(m.envelope.sender) or EMPTY_SENDER
        out.append(sender_fmt % (m.id + mark, m.size, asctime(m.envelope.arrival), sender))
        saved_reason = ""
        for r in m.recipients:
            if r.status.is_final:
                continue
            why = (r.last_reply or "") if r.status is RecipientStatus.DEFERRED else ""
            why = _printable(why)
            if why != saved_reason:
                saved_reason = why
                shown = why or "reason unavailable"
                out.append(" " * max(0, 76 - len(shown)) + f"({shown})")
            out.append(string_fmt % ("", "", "", _printable(r.spec.address)))
        total += m.size
    out.append("")
    count = len(messages)
    out.append(f"-- {total // 1024} Kbytes in {count} Request{'' if count == 1 else 's'}.")
    return "\n".join(line.rstrip() for line in out) + "\n"


# -- random queues, formatted without a database ------------------------------------------

# Control characters, spaces (trailing ones are stripped), non-ASCII and parentheses.
_TEXT = st.text(alphabet=st.sampled_from("ab@.é \t\x1b\x00()-"), max_size=12)
_REPLIES = st.one_of(st.none(), st.sampled_from(["451 later", "451 later\x01", ""]), _TEXT)


@st.composite
def recipients(draw: st.DrawFn) -> list[QueuedRecipient]:
    n = draw(st.integers(0, 4))
    return [
        QueuedRecipient(
            i,
            RecipientSpec(draw(_TEXT), "o"),
            draw(st.sampled_from(RecipientStatus)),
            0,
            T0,
            draw(_REPLIES),
        )
        for i in range(n)
    ]


@st.composite
def queues(draw: st.DrawFn) -> list[QueuedMessage]:
    ids = draw(
        st.lists(st.text(alphabet="0123456789AB", min_size=1, max_size=17), unique=True, max_size=8)
    )
    # Arrivals close together (shared seconds, fractions) and far apart (DST changes).
    arrival = st.one_of(
        st.sampled_from([T0, T0 + 0.25, T0 + 0.999, T0 + 1.0]),
        st.floats(0, 4e9, allow_nan=False),
    )
    out = []
    for qid in ids:
        rs = draw(recipients())
        sender = draw(st.one_of(st.just(""), _TEXT))
        env = Envelope(
            sender, tuple(r.spec for r in rs), 0, None, False, None, None, CLIENT, draw(arrival)
        )
        state = draw(st.sampled_from(QueueState))
        out.append(QueuedMessage(qid, env, state, rs, draw(st.integers(0, 10**7))))
    return out


@given(queues())
def test_rows_formatter_matches_the_reference(messages: list[QueuedMessage]) -> None:
    assert format_mailq(messages) == reference_mailq(messages)


@given(queues(), st.integers(1, 5))
def test_chunked_writes_join_to_the_same_text(messages: list[QueuedMessage], chunk: int) -> None:
    writes: list[str] = []

    class Sink:
        def write(self, text: str) -> int:
            writes.append(text)
            return len(text)

    old = queue_cli._CHUNK_LINES
    queue_cli._CHUNK_LINES = chunk
    try:
        rows = queue_cli._listing_rows(messages)
        long_ids = any(len(m.id) > 10 for m in messages)
        count = write_mailq(rows, Sink(), long_ids=long_ids)  # type: ignore[arg-type]
    finally:
        queue_cli._CHUNK_LINES = old
    assert "".join(writes) == reference_mailq(messages)
    assert count == len(messages)
    assert all(w.endswith("\n") for w in writes)
    if len(messages) > 2 * chunk + 2:
        assert len(writes) > 1  # streamed, not built whole


# -- a real store: the listing query against the decoded messages -------------------------


Plan = list[tuple[bool, str, bool]]  # per message: null sender, outcomes, put on hold


def _fill(store: SqliteQueue, plan: Plan) -> None:
    """Submit one message per plan entry, claim all but the last (which stays INCOMING),
    and record per recipient: "d"elivered, "f"ailed (deferred), "b"ounced, "p"ending (no
    outcome: it stays ACTIVE); then hold those marked."""

    async def run() -> None:
        ids = []
        for n, (senderless, outcomes, _) in enumerate(plan):
            rcpts = tuple(
                RecipientSpec(f"r{i}@d{i % 3}.example", "o") for i in range(len(outcomes))
            )
            sender = "" if senderless else f"s{n}@example.org"
            env = Envelope(sender, rcpts, 100, None, False, None, None, CLIENT, T0 + n * 0.5)
            ids.append(await store.submit(env, b"x" * (n * 700)))
        claimed = await store.claim(now=T0 + 10_000, limit=len(plan) - 1)
        results = []
        for m in claimed:
            outcomes = plan[ids.index(m.id)][1]
            for r in m.recipients:
                status = {
                    "d": RecipientStatus.DELIVERED,
                    "f": RecipientStatus.DEFERRED,
                    "b": RecipientStatus.BOUNCED,
                }.get(outcomes[r.index])
                if status is not None:
                    reply = f"451 4.4.1 try later ({r.index % 2})"
                    results.append(Outcome(m.id, r.index, status, reply, T0 + 20_000))
        await store.record(results)
        store.hold_messages([i for i, (_, _, hold) in zip(ids, plan, strict=True) if hold])

    asyncio.run(run())


def _listing(store: SqliteQueue) -> str:
    out = io.StringIO()
    assert cmd_list(store, as_json=False, out=out) == 0
    return out.getvalue()


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plan=st.lists(
        st.tuples(st.booleans(), st.text(alphabet="dfbp", min_size=1, max_size=4), st.booleans()),
        max_size=6,
    )
)
def test_store_listing_matches_decoded_messages(
    tmp_path_factory: pytest.TempPathFactory, plan: Plan
) -> None:
    store = open_queue(tmp_path_factory.mktemp("q"))
    try:
        _fill(store, plan)
        assert _listing(store) == reference_mailq(store.list_messages())
    finally:
        store.close()


def test_listing_shows_states_reasons_and_order(store: SqliteQueue) -> None:
    _fill(store, [(False, "ffdp", False), (True, "p", True), (False, "bf", False)])
    text = _listing(store)
    assert text == reference_mailq(store.list_messages())
    lines = text.splitlines()
    assert lines[0].startswith("----Queue ID-----")
    assert "(451 4.4.1 try later (0))" in text and "(reason unavailable)" in text
    assert "r2@d2.example" not in text  # delivered: not shown
    assert "MAILER-DAEMON" in text
    assert lines[-1] == "-- 2 Kbytes in 3 Requests."  # 0 + 700 + 1400 bytes
    first, second, third = store.select()
    assert f"{first}* " in text  # claimed, a recipient left pending: ACTIVE
    assert f"{second}! " in text  # held
    assert f"{third} " in text  # never claimed: INCOMING, no mark


def test_corrupt_messages_are_not_listed(sqlite_store: SqliteQueue) -> None:
    _fill(sqlite_store, [(False, "p", False)] * 2)
    first, second = sqlite_store.select()
    with sqlite3.connect(sqlite_store.path) as conn:
        conn.execute("UPDATE messages SET state = 'corrupt' WHERE id = ?", (first,))
    text = _listing(sqlite_store)
    assert first not in text and second in text
    assert text.endswith("-- 0 Kbytes in 1 Request.\n")


def test_listing_does_not_decode_envelopes(sqlite_store: SqliteQueue) -> None:
    # The listing reads the columns mailq prints; a damaged envelope is still listed (until
    # a claim files the message as CORRUPT), rather than silently hidden from the admin.
    _fill(sqlite_store, [(False, "p", False)])
    (qid,) = sqlite_store.select()
    with sqlite3.connect(sqlite_store.path) as conn:
        conn.execute("UPDATE messages SET envelope = 'not json' WHERE id = ?", (qid,))
    assert qid in _listing(sqlite_store)


def test_empty_queue_and_short_ids(store: SqliteQueue) -> None:
    assert _listing(store) == "Mail queue is empty\n"
    env = Envelope(
        "a@example.org", (RecipientSpec("b@example.net", "b"),), 1, None, False, None, None,
        CLIENT, T0,
    )  # fmt: skip
    asyncio.run(store.submit(env, b"body", queue_id="4F2A31C0B1"))
    assert store.has_id_longer_than(10) is False
    text = _listing(store)
    assert text.startswith("-Queue ID-  --Size--")
    assert text == reference_mailq(store.list_messages())


def test_a_failed_write_leaves_the_store_usable(store: SqliteQueue) -> None:
    _fill(store, [(False, "p", False)] * 3)

    class Broken:
        def write(self, text: str) -> int:
            raise BrokenPipeError

    with pytest.raises(BrokenPipeError):
        cmd_list(store, as_json=False, out=Broken())  # type: ignore[arg-type]
    assert store.delete_messages(store.select()) == 3  # no read transaction left open
    assert _listing(store) == "Mail queue is empty\n"


def test_stamps_follow_local_time_across_a_dst_change() -> None:
    # 2024-03-31 01:59:59 CET, then one second later 03:00:00 CEST.
    before = 1_711_846_799.5
    assert asctime(before) == "Sun Mar 31 01:59:59 2024"
    assert asctime(before + 1) == "Sun Mar 31 03:00:00 2024"
    rows = [
        ("AAAAAAAAAAAAAAA1", "deferred", 1, before, "a", "x", None),
        ("AAAAAAAAAAAAAAA2", "deferred", 1, before + 1, "a", "x", None),
    ]
    out = io.StringIO()
    write_mailq(rows, out, long_ids=True)
    assert "01:59:59" in out.getvalue() and "03:00:00" in out.getvalue()


# Zones with DST, half-hour and 45-minute offsets, and (before 1937) an offset with
# seconds: Amsterdam's +00:19:32.
_ZONES = ["Europe/Berlin", "Australia/Lord_Howe", "Pacific/Chatham", "Europe/Amsterdam", "UTC"]
_NEAR_CHANGES = [1_711_846_800.0, 1_729_990_800.0, 1_712_415_600.0, -1_500_000_000.0, 0.0]


@settings(max_examples=300)
@given(
    zone=st.sampled_from(_ZONES),
    epoch=st.one_of(
        st.floats(-2.5e9, 4e9, allow_nan=False),
        st.builds(lambda t, d: t + d, st.sampled_from(_NEAR_CHANGES), st.floats(-7200, 7200)),
    ),
)
def test_minute_cached_stamps_equal_asctime(zone: str, epoch: float) -> None:
    old = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        stamps = queue_cli._Stamps()
        # Twice: the second call is served from the minute cache.
        assert stamps(epoch) == asctime(epoch)
        assert stamps(epoch + 1) == asctime(epoch + 1)
        assert stamps(epoch) == asctime(epoch)
    finally:
        os.environ["TZ"] = old or "UTC"
        time.tzset()
