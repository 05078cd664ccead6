"""The cluster-wide destination gate on a real PostgreSQL: slots are shared by every
node's gate, freed by release or by the holder's connection going away, and the gate
opens (per-node limits only) when the database cannot be asked."""

from __future__ import annotations

import asyncio

from ironpost.delivery.cluster_gate import OPEN, ClusterGate, destination_key
from ironpost.testing.postgres import free_port


def test_slots_are_shared_by_every_node(pg_url: str) -> None:
    async def go() -> None:
        a, b = ClusterGate(pg_url), ClusterGate(pg_url)
        try:
            first = await a.acquire("smtp:example.com", 2)
            second = await b.acquire("smtp:example.com", 2)
            assert first is not None and second is not None
            assert {first.index, second.index} == {0, 1}
            assert await a.acquire("smtp:example.com", 2) is None  # full, whoever asks
            assert await b.acquire("smtp:example.com", 2) is None
            assert await b.acquire("smtp:other.example", 2) is not None  # per destination
            a.release(first)
            await a.close()  # a's session ends: its slots are free
            again = await b.acquire("smtp:example.com", 2)
            assert again is not None and again.index == first.index
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


def test_a_lost_connection_frees_its_slots(pg_url: str) -> None:
    async def go() -> None:
        dying, other = ClusterGate(pg_url), ClusterGate(pg_url)
        try:
            assert await dying.acquire("[192.0.2.1]:25", 1) is not None
            assert await other.acquire("[192.0.2.1]:25", 1) is None
            await dying.close()  # as a node killed with -9: PostgreSQL drops its locks
            assert await other.acquire("[192.0.2.1]:25", 1) is not None
        finally:
            await other.close()

    asyncio.run(go())


def test_an_unreachable_database_opens_the_gate_and_says_so_once() -> None:
    lines: list[str] = []

    async def go() -> None:
        gate = ClusterGate(f"postgresql://nobody@127.0.0.1:{free_port()}/none", log=lines.append)
        try:
            assert await gate.acquire("smtp:example.com", 1) is OPEN
            assert await gate.acquire("smtp:example.com", 1) is OPEN
            gate.release(OPEN)  # nothing to give back
        finally:
            await gate.close()

    asyncio.run(go())
    assert len(lines) == 1 and "per-node limits only" in lines[0]


def test_destination_keys_fit_an_int4() -> None:
    for name in ("", "smtp:example.com", "x" * 1000, "smtp:\udcff.example"):
        assert -(2**31) <= destination_key(name) < 2**31


def test_a_released_slot_is_kept_briefly_for_this_node_then_unlocked(pg_url: str) -> None:
    async def go() -> None:
        a, b = ClusterGate(pg_url, keep=0.1), ClusterGate(pg_url)
        try:
            slot = await a.acquire("smtp:example.com", 1)
            assert slot is not None
            a.release(slot)
            # Kept: a's next delivery takes it back at once; b still finds none free.
            again = await a.acquire("smtp:example.com", 1)
            assert again == slot
            assert await b.acquire("smtp:example.com", 1) is None
            a.release(again)
            got = None
            for _ in range(100):  # unlocked once unused for `keep`
                got = await b.acquire("smtp:example.com", 1)
                if got is not None:
                    break
                await asyncio.sleep(0.05)
            assert got is not None and a.held == 0
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())
