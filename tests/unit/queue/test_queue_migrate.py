"""``ironpost queue migrate``'s engine: a real SQLite queue into a real PostgreSQL one.

Every stored field survives (states, recipients with attempts and replies, the warned
flag, a body kept in a file, a CORRUPT row copied raw); a crash between the PostgreSQL
COMMIT and the SQLite delete is repaired by a re-run without copying anything twice; an
unreachable database changes nothing; and the migrated mail is then claimed and delivered
by a PostgreSQL node. Also the ``queue nodes`` formatting."""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from queue_testing import build_envelope

import ironpost.queue.migrate as migrate_module
from ironpost.cli.queue_cluster import _trigger_live, cmd_migrate, cmd_nodes, format_nodes
from ironpost.queue import (
    Envelope,
    Outcome,
    QueueState,
    RecipientSpec,
    RecipientStatus,
    SqliteQueue,
    open_queue,
)
from ironpost.queue.bodies import BODY_FILE_THRESHOLD
from ironpost.queue.ids import new_queue_id
from ironpost.queue.migrate import MigrationError, check_url, migrate_queue, redact
from ironpost.queue.postgres import PostgresQueue, connect
from ironpost.queue.trigger import trigger_path
from ironpost.testing.postgres import free_port

T0 = 1_700_000_000.0
BIG = b"Subject: big\r\n\r\n" + b"x" * (BODY_FILE_THRESHOLD + 1000) + b"\r\n"

Rows = dict[str, dict[str, Any]]


def body(n: int) -> bytes:
    return f"Subject: m{n}\r\n\r\nbody {n}\r\n".encode()


def populate(q: SqliteQueue) -> dict[str, str]:
    """One message per interesting case; returns name -> id."""

    async def go() -> dict[str, str]:
        ids: dict[str, str] = {}
        dsn = Envelope(
            sender="",
            recipients=(
                RecipientSpec(
                    "dsn@example.net", "orig@example.net", ("SUCCESS", "DELAY"), "rfc822;o@x"
                ),
                RecipientSpec("never@example.net", "never@example.net", (), None),
            ),
            size=10,
            body_type=None,
            smtputf8=True,
            ret="FULL",
            envid=None,
            client=build_envelope().client,
            arrival=T0 + 1,
        )
        ids["incoming"] = await q.submit(dsn, body(0))
        ids["active"] = await q.submit(build_envelope("a@one.example", arrival=T0 + 2), body(1))
        ids["deferred"] = await q.submit(
            build_envelope("d1@two.example", "d2@three.example", arrival=T0 + 3), body(2)
        )
        ids["hold"] = await q.submit(build_envelope("h@four.example", arrival=T0 + 4), body(3))
        ids["big"] = await q.submit(build_envelope("b@five.example", arrival=T0 + 5), BIG)
        ids["warned"] = await q.submit(build_envelope("w@six.example", arrival=T0 + 6), body(5))
        # active, deferred and warned are claimed; then deferred and warned get outcomes
        # and "active" stays in flight, as a server stopped mid-delivery leaves it.
        claimed = {m.id for m in await q.claim(now=T0 + 10, limit=100)}
        assert ids["deferred"] in claimed
        await q.record(
            [
                Outcome(ids["deferred"], 0, RecipientStatus.DELIVERED, "250 2.0.0 ok"),
                Outcome(ids["deferred"], 1, RecipientStatus.DEFERRED, "451 4.4.1 later", T0 + 900),
                Outcome(ids["warned"], 0, RecipientStatus.DEFERRED, "421 busy", T0 + 600),
            ]
        )
        await q.mark_warned([ids["warned"]])
        return ids

    ids = asyncio.run(go())
    # The claim took everything: back to their intended states.
    q._admin_write("UPDATE messages SET state = 'incoming' WHERE id = ?", (ids["incoming"],))
    q._admin_write("UPDATE messages SET state = 'incoming' WHERE id = ?", (ids["big"],))
    q.hold_messages([ids["hold"]])
    corrupt = new_queue_id()
    q._admin_transaction(
        lambda db: (
            db.execute(
                "INSERT INTO messages VALUES (?, 'corrupt', ?, 5, 's@x', ?, '{not json', 0)",
                (corrupt, T0 + 7, T0 + 7),
            ),
            db.execute("INSERT INTO message_content VALUES (?, ?, NULL)", (corrupt, b"raw\x00")),
            db.execute(
                "INSERT INTO recipients VALUES (?, 0, 'r@x', 'r@x', NULL, NULL, 'weird', 3, ?,"
                " 'odd reply', 'x')",
                (corrupt, T0),
            ),
        )
    )
    ids["corrupt"] = corrupt
    return ids


_MESSAGE_SQL = (
    "SELECT id, state, arrival, size, sender, next_attempt, envelope, warned FROM messages"
)
_RCPT_SQL = (
    "SELECT message_id, idx, address, original, notify, orcpt, status, attempts, next_attempt,"
    " last_reply, domain FROM recipients ORDER BY message_id, idx"
)


def sqlite_rows(q: SqliteQueue) -> Rows:
    def read(db: Any) -> Rows:
        out: Rows = {}
        for row in db.execute(_MESSAGE_SQL):
            out[row[0]] = {"message": tuple(row), "recipients": []}
        for row in db.execute(_RCPT_SQL):
            out[row[0]]["recipients"].append(tuple(row))
        return out

    rows = q._admin_read(read)
    for message_id, item in rows.items():
        item["content"] = q.read_content(message_id)
    return rows


def pg_rows(url: str) -> Rows:
    db = connect(url)
    try:
        out: Rows = {}
        for row in db.execute(_MESSAGE_SQL):
            out[row[0]] = {"message": tuple(row), "recipients": []}
        for row in db.execute(_RCPT_SQL):
            out[row[0]]["recipients"].append(tuple(row))
        for message_id, content, file_size in db.execute(
            "SELECT message_id, content, file_size FROM message_content"
        ):
            assert file_size is None
            out[message_id]["content"] = bytes(content)
        leases = db.execute(
            "SELECT COUNT(*) FROM messages WHERE lease_owner IS NOT NULL"
            " OR lease_token IS NOT NULL OR lease_expires IS NOT NULL"
        ).fetchone()[0]
        assert leases == 0
        return out
    finally:
        db.close()


def as_migrated(rows: Rows) -> Rows:
    """What the rows must look like in PostgreSQL: ACTIVE is INCOMING, all else equal."""
    out: Rows = {}
    for message_id, item in rows.items():
        message = list(item["message"])
        if message[1] == "active":
            message[1] = "incoming"
        out[message_id] = {**item, "message": tuple(message)}
    return out


def body_files(q: SqliteQueue) -> list[Path]:
    directory = q.bodies.directory
    return sorted(p for p in directory.rglob("*") if p.is_file()) if directory.exists() else []


@pytest.fixture
def source(tmp_path: Path) -> Iterator[SqliteQueue]:
    q = open_queue(tmp_path / "q", hot_bytes=0)
    yield q
    q.close()


def test_every_field_survives_and_sqlite_is_emptied(source: SqliteQueue, pg_url: str) -> None:
    ids = populate(source)
    before = sqlite_rows(source)
    assert {before[i]["message"][1] for i in ids.values()} == {
        "incoming",
        "active",
        "deferred",
        "hold",
        "corrupt",
    }
    assert before[ids["warned"]]["message"][7] == 1
    assert before[ids["deferred"]]["recipients"][1][6:10] == (
        "deferred",
        1,
        T0 + 900,
        "451 4.4.1 later",
    )
    assert len(body_files(source)) == 1  # the big body is a file, not a row

    result = migrate_queue(source, pg_url)

    assert (result.copied, result.already, result.left) == (len(ids), 0, {})
    assert pg_rows(pg_url) == as_migrated(before)
    assert pg_rows(pg_url)[ids["big"]]["content"] == BIG
    assert source.select() == [] and source.stats()[QueueState.CORRUPT] == 0
    assert body_files(source) == []


def test_a_crash_between_commit_and_delete_is_repaired_by_a_rerun(
    source: SqliteQueue, pg_url: str
) -> None:
    ids = populate(source)
    before = sqlite_rows(source)
    batches: list[list[str]] = []

    def crash_on_second(done: Any) -> None:
        batches.append(list(done))
        if len(batches) == 2:
            raise KeyboardInterrupt  # the process dies: nothing after the COMMIT runs

    with pytest.raises(KeyboardInterrupt):
        migrate_queue(source, pg_url, batch_messages=2, after_commit=crash_on_second)
    in_pg = set(pg_rows(pg_url))
    in_sqlite = set(source.select())
    assert in_pg == set(batches[0]) | set(batches[1])
    assert in_pg & in_sqlite == set(batches[1])  # in both: committed, not yet deleted
    assert in_pg | in_sqlite == set(ids.values())

    result = migrate_queue(source, pg_url, batch_messages=2)
    assert result.already == 2  # batch 2: found in PostgreSQL, only deleted from SQLite
    assert result.copied == len(ids) - 4
    assert result.left == {}
    assert pg_rows(pg_url) == as_migrated(before)  # no duplicate recipient, nothing lost
    assert source.select() == [] and body_files(source) == []
    again = migrate_queue(source, pg_url)
    assert (again.copied, again.already, again.batches) == (0, 0, 0)


def reset(url: str) -> None:
    db = connect(url)
    try:
        db.execute("TRUNCATE messages, message_content, recipients")
    except psycopg.errors.UndefinedTable:
        pass
    finally:
        db.close()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    batch=st.integers(min_value=1, max_value=4),
    crash_at=st.integers(min_value=1, max_value=7),
    before_commit=st.booleans(),
)
def test_any_crash_point_then_a_rerun_moves_each_message_exactly_once(
    tmp_path_factory: pytest.TempPathFactory,
    pg_url: str,
    batch: int,
    crash_at: int,
    before_commit: bool,
) -> None:
    reset(pg_url)
    directory = tmp_path_factory.mktemp("q")
    q = open_queue(directory, hot_bytes=0)
    calls = 0
    real_write = migrate_module.write_batch

    def crash_after_commit(done: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == crash_at:
            raise KeyboardInterrupt  # the process dies between COMMIT and delete

    def write_then_lose_the_database(conn: Any, rows: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == crash_at:
            conn.close()  # the connection is gone before this batch commits
        return real_write(conn, rows)

    try:
        ids = populate(q)
        expected = as_migrated(sqlite_rows(q))
        with pytest.MonkeyPatch.context() as mp:
            if before_commit:
                mp.setattr(migrate_module, "write_batch", write_then_lose_the_database)
            try:
                migrate_queue(
                    q,
                    pg_url,
                    batch_messages=batch,
                    after_commit=None if before_commit else crash_after_commit,
                )
            except (KeyboardInterrupt, MigrationError):
                pass
        result = migrate_queue(q, pg_url, batch_messages=batch)
        assert result.left == {}
        assert pg_rows(pg_url) == expected
        assert len(expected) == len(ids)
        assert q.select() == [] and body_files(q) == []
    finally:
        q.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_an_unreachable_database_leaves_the_queue_untouched(source: SqliteQueue) -> None:
    populate(source)
    before = sqlite_rows(source)
    files = body_files(source)
    with pytest.raises(MigrationError) as caught:
        migrate_queue(source, f"postgresql://nobody@127.0.0.1:{free_port()}/none", timeout=2)
    assert caught.value.temporary
    assert "cannot connect" in str(caught.value)
    assert sqlite_rows(source) == before and body_files(source) == files


@pytest.mark.parametrize(
    "url",
    ["mysql://u@h/db", "host=localhost dbname=x", "postgresql://[broken", ""],
)
def test_a_bad_url_is_a_configuration_error(source: SqliteQueue, url: str) -> None:
    with pytest.raises(MigrationError) as caught:
        migrate_queue(source, url)
    assert not caught.value.temporary


def test_passwords_never_appear_in_messages() -> None:
    assert redact("postgresql://ip:s3cret@db.example/q") == "postgresql://ip:***@db.example/q"
    assert redact("postgresql://ip@db.example/q") == "postgresql://ip@db.example/q"
    assert redact("postgres://db/q?password=s3cret&x=1") == "postgres://db/q?password=***&x=1"
    with pytest.raises(MigrationError) as caught:
        check_url("host=db password=s3cret")
    assert "s3cret" not in str(caught.value)
    with pytest.raises(MigrationError) as caught:
        check_url("postgresql://ip:s3cret@[db/q")
    assert "s3cret" not in str(caught.value)


def test_a_different_message_under_the_same_id_is_left_in_sqlite(
    source: SqliteQueue, pg_url: str
) -> None:
    ids = populate(source)
    clash = ids["hold"]
    target = PostgresQueue(pg_url, node="other")
    try:
        asyncio.run(
            target.submit(build_envelope("else@x.example", arrival=T0 + 99), b"x", queue_id=clash)
        )
    finally:
        target.close()
    result = migrate_queue(source, pg_url)
    assert set(result.left) == {clash} and "another message" in result.left[clash]
    assert source.select() == [clash]  # kept: deleting it would lose it
    assert result.copied == len(ids) - 1


def test_rows_postgresql_refuses_stay_behind_and_hold_back_nothing_else(
    source: SqliteQueue, pg_url: str
) -> None:
    ids = populate(source)
    bad = new_queue_id()
    # SQLite stores what it is given; PostgreSQL text cannot hold a NUL.
    source._admin_transaction(
        lambda db: (
            db.execute(
                "INSERT INTO messages VALUES (?, 'corrupt', 1.0, 1, ?, 1.0, '{}', 0)",
                (bad, "nul\x00sender"),
            ),
            db.execute("INSERT INTO message_content VALUES (?, X'00', NULL)", (bad,)),
        )
    )
    result = migrate_queue(source, pg_url)
    assert set(result.left) == {bad} and "refused by PostgreSQL" in result.left[bad]
    assert result.copied == len(ids)
    assert source.select() == [bad]


def test_a_missing_body_file_keeps_its_message_in_sqlite(source: SqliteQueue, pg_url: str) -> None:
    ids = populate(source)
    for path in body_files(source):
        path.unlink()
    result = migrate_queue(source, pg_url)
    assert set(result.left) == {ids["big"]} and "body file missing" in result.left[ids["big"]]
    assert source.select() == [ids["big"]]


def test_new_mail_arriving_during_the_run_is_moved_too(source: SqliteQueue, pg_url: str) -> None:
    ids = populate(source)
    early = "0" * 16  # below every id the pass has already gone past

    def sendmail_meanwhile(done: Any) -> None:
        if source.state_of(early) is None and not set(done) & {early}:
            asyncio.run(source.submit(build_envelope("late@x.example"), b"late", queue_id=early))

    result = migrate_queue(source, pg_url, batch_messages=3, after_commit=sendmail_meanwhile)
    assert result.copied == len(ids) + 1 and early in pg_rows(pg_url)
    assert source.select() == []


def test_postgresql_claims_and_delivers_the_migrated_mail(source: SqliteQueue, pg_url: str) -> None:
    ids = populate(source)
    migrate_queue(source, pg_url)
    node = PostgresQueue(pg_url, node="n1")

    async def deliver(now: float) -> dict[str, bytes]:
        got: dict[str, bytes] = {}
        for m in await node.claim(now=now, limit=100):
            got[m.id] = await node.content(m.id)
            assert await node.record(
                [Outcome(m.id, r.index, RecipientStatus.DELIVERED, "250 ok") for r in m.recipients]
            ) == [m.id]
        return got

    try:
        assert asyncio.run(node.recover()) == 0
        first = asyncio.run(deliver(T0 + 20))
        # New, recovered (was ACTIVE) and big: due now. Deferred ones wait, hold and
        # corrupt are never claimed.
        assert set(first) == {ids["incoming"], ids["active"], ids["big"]}
        assert first[ids["big"]] == BIG and first[ids["incoming"]] == body(0)
        later = asyncio.run(deliver(T0 + 1000))
        assert set(later) == {ids["deferred"], ids["warned"]}
        message = node.get(ids["hold"])
        assert message is not None and message.state is QueueState.HOLD
        assert node.stats()[QueueState.CORRUPT] == 1
    finally:
        node.close()


def test_the_cli_command_reports_counts(source: SqliteQueue, pg_url: str) -> None:
    ids = populate(source)
    out, err = io.StringIO(), io.StringIO()
    assert cmd_migrate(source, pg_url, out=out, err=err) == 0
    assert out.getvalue() == f"ironpost queue: Migrated: {len(ids)} messages\n"
    assert err.getvalue() == ""
    closed = f"postgresql://u:pw@127.0.0.1:{free_port()}/x"
    out, err = io.StringIO(), io.StringIO()
    assert cmd_migrate(source, closed, out=out, err=err) == 75
    assert err.getvalue().startswith("ironpost queue: cannot migrate to postgresql://u:***@")
    assert ":pw@" not in err.getvalue()
    assert cmd_migrate(source, "mysql://x/y", out=out, err=err) == 78


def test_batches_commit_synchronously_whatever_the_server_default(pg_url: str) -> None:
    db = connect(pg_url)
    try:
        db.execute("SET synchronous_commit = off")
        seen = migrate_module._transaction(
            db, lambda tx: tx.execute("SHOW synchronous_commit").fetchone()[0]
        )
        assert seen == "on"
    finally:
        db.close()


def test_a_bound_trigger_socket_means_a_server_runs(tmp_path: Path) -> None:
    path = trigger_path(tmp_path)
    path.parent.mkdir()
    assert not _trigger_live(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        assert _trigger_live(tmp_path)
    assert path.exists() and not _trigger_live(tmp_path)  # left by a crash: nobody bound


# -- queue nodes ----------------------------------------------------------------------


def test_format_nodes_marks_a_silent_node_stale() -> None:
    rows = [("mx1", T0, T0 + 95, 4242, 3), ("mx2-long-name", T0, T0 + 20, 7, 0)]
    text = format_nodes(rows, now=T0 + 100, stale_after=60)
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "PID", "STARTED", "HEARTBEAT", "ACTIVE", "STATUS"]
    assert lines[1].split() == ["mx1", "4242", "2023-11-14T22:13:20Z", "5s", "ago", "3", "alive"]
    assert lines[2].split()[-1] == "stale" and "80s ago" in lines[2]
    assert format_nodes([], now=T0, stale_after=60).startswith("ironpost queue: no node")


def test_cmd_nodes_on_a_cluster_and_on_sqlite(source: SqliteQueue, pg_url: str) -> None:
    out = io.StringIO()
    assert cmd_nodes(source, as_json=False, out=out, stale_after=60) == 0
    assert "not shared" in out.getvalue()
    node = PostgresQueue(pg_url, node="alpha")
    try:
        asyncio.run(node.recover())  # registers the node, as the server does at start
        asyncio.run(node.submit(build_envelope(), b"x"))
        asyncio.run(node.claim(now=T0 + 10, limit=10))
        out = io.StringIO()
        assert cmd_nodes(node, as_json=True, out=out, stale_after=60) == 0
        (item,) = json.loads(out.getvalue())
        assert (item["name"], item["active"], item["stale"]) == ("alpha", 1, False)
        assert 0 <= item["heartbeat_age"] < 30
        out = io.StringIO()
        heartbeat = node.nodes()[0][2]
        cmd_nodes(node, as_json=False, out=out, stale_after=60, now=heartbeat + 61)
        assert out.getvalue().splitlines()[1].split()[-1] == "stale"
    finally:
        node.close()
