"""The just-accepted body cache: bounded, oldest out first, each entry handed out once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ironpost.queue.hotcache import HotContent
from ironpost.queue.model import ClientInfo, Envelope, RecipientSpec
from ironpost.queue.sqlite import SqliteQueue


def test_take_hands_an_entry_out_once() -> None:
    hot = HotContent(1000)
    hot.put("A", b"x" * 10)
    assert hot.take("A") == b"x" * 10
    assert hot.take("A") is None
    assert (hot.hits, hot.misses, hot.size, len(hot)) == (1, 1, 0, 0)


def test_bounded_oldest_first() -> None:
    hot = HotContent(100, max_body=60)
    hot.put("A", b"a" * 40)
    hot.put("B", b"b" * 40)
    hot.put("C", b"c" * 40)  # A must go to make room
    assert hot.size == 80
    assert hot.take("A") is None
    assert hot.take("B") == b"b" * 40
    hot.put("D", b"d" * 61)  # above max_body: never cached
    assert hot.take("D") is None
    hot.discard("C")
    assert hot.size == 0


def test_zero_bytes_caches_nothing() -> None:
    hot = HotContent(0)
    hot.put("A", b"")
    hot.put("B", b"b")
    assert hot.take("B") is None


def _envelope() -> Envelope:
    return Envelope(
        sender="a@example.com",
        recipients=(RecipientSpec("b@example.org", "b@example.org"),),
        size=20,
        body_type=None,
        smtputf8=False,
        ret=None,
        envid=None,
        client=ClientInfo("127.0.0.1", "localhost", "localhost", "ESMTP"),
        arrival=1.0,
    )


def test_store_serves_first_read_from_memory_then_from_disk(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteQueue(tmp_path / "q.db")
        try:
            qid = await store.submit(_envelope(), b"Subject: hi\r\n\r\nbody\r\n")
            assert len(store.hot) == 1
            first = await store.content(qid)
            second = await store.content(qid)  # the database, and the same bytes
            assert first == second == b"Subject: hi\r\n\r\nbody\r\n"
            assert (store.hot.hits, store.hot.misses) == (1, 1)
        finally:
            store.close()

    asyncio.run(scenario())


def test_store_without_hot_cache(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = SqliteQueue(tmp_path / "q.db", hot_bytes=0)
        try:
            qid = await store.submit(_envelope(), b"x\r\n")
            assert len(store.hot) == 0
            assert await store.content(qid) == b"x\r\n"
        finally:
            store.close()

    asyncio.run(scenario())
