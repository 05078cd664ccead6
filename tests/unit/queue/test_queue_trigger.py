"""The wake-up trigger on a real unix datagram socket under tmp_path, driven by asyncio."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from ironpost.queue.trigger import (
    FLUSH,
    WAKE,
    TriggerListener,
    notify,
    trigger_path,
)


async def settle(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def raw_send(path: Path, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(data, str(path))


def test_listener_gets_wake_and_flush_and_ignores_junk(tmp_path: Path) -> None:
    got: list[bytes] = []
    logs: list[str] = []

    async def main() -> None:
        path = trigger_path(tmp_path)
        listener = await TriggerListener.start(path, got.append, log=logs.append)
        assert listener.active
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o710
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o622
        assert notify(tmp_path)
        for junk in (b"", b"X", b"WW", b"W\n", b"F" * 100):
            raw_send(path, junk)
        assert notify(tmp_path, FLUSH)
        await settle(lambda: len(got) == 2)
        await asyncio.sleep(0.02)
        assert got == [WAKE, FLUSH]
        assert (listener.received, listener.ignored) == (2, 5)
        listener.close()
        assert not path.exists()  # its own socket is removed
        assert not notify(tmp_path)

    asyncio.run(main())
    assert logs == []


def test_notify_without_a_server_is_false_and_never_raises(tmp_path: Path) -> None:
    assert not notify(tmp_path)  # no directory at all
    path = trigger_path(tmp_path)
    path.parent.mkdir()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.close()  # a stale socket file: nobody is bound to it any more
    assert not notify(tmp_path)
    with pytest.raises(ValueError):
        notify(tmp_path, b"X")


def test_notify_is_true_when_the_servers_buffer_is_full(tmp_path: Path) -> None:
    path = trigger_path(tmp_path)
    path.parent.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))  # bound, but never reads
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                for _ in range(100_000):
                    s.sendto(WAKE, str(path))
        assert notify(tmp_path)  # a wake-up is pending anyway; and it did not block


def test_start_replaces_a_stale_socket_and_close_spares_a_newer_one(tmp_path: Path) -> None:
    got: list[bytes] = []

    async def main() -> None:
        path = trigger_path(tmp_path)
        path.parent.mkdir(mode=0o750)
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        stale.bind(str(path))
        stale.close()
        first = await TriggerListener.start(path, got.append)
        assert first.active
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o750  # an existing dir is kept
        second = await TriggerListener.start(path, got.append)  # e.g. a restart
        first.close()
        assert path.exists()  # the second server's socket stays
        assert notify(tmp_path)
        await settle(lambda: got == [WAKE])
        assert second.received == 1
        second.close()
        assert not path.exists()

    asyncio.run(main())


def test_something_else_in_the_way_is_left_alone(tmp_path: Path) -> None:
    logs: list[str] = []

    async def main() -> TriggerListener:
        path = trigger_path(tmp_path)
        path.parent.mkdir()
        path.write_text("not a socket")
        return await TriggerListener.start(path, lambda _: None, log=logs.append)

    listener = asyncio.run(main())
    assert not listener.active
    assert trigger_path(tmp_path).read_text() == "not a socket"
    assert len(logs) == 1 and "not a socket" in logs[0] and "polling" in logs[0]
    listener.close()  # harmless


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_degrades_to_polling(tmp_path: Path) -> None:
    logs: list[str] = []
    tmp_path.chmod(0o500)
    try:

        async def main() -> TriggerListener:
            return await TriggerListener.start(
                trigger_path(tmp_path), lambda _: None, log=logs.append
            )

        listener = asyncio.run(main())
    finally:
        tmp_path.chmod(0o700)
    assert not listener.active and len(logs) == 1


def test_a_path_too_long_for_af_unix_degrades_to_polling(tmp_path: Path) -> None:
    logs: list[str] = []
    deep = tmp_path / ("d" * 120)

    async def main() -> TriggerListener:
        return await TriggerListener.start(trigger_path(deep), lambda _: None, log=logs.append)

    assert not asyncio.run(main()).active
    assert len(logs) == 1
    assert not notify(deep)


def test_a_failing_handler_and_a_flood_do_not_stop_the_listener(tmp_path: Path) -> None:
    calls: list[bytes] = []
    logs: list[str] = []

    def handler(request: bytes) -> None:
        calls.append(request)
        if len(calls) == 1:
            raise RuntimeError("boom")

    async def main() -> None:
        listener = await TriggerListener.start(trigger_path(tmp_path), handler, log=logs.append)
        sent = sum(notify(tmp_path) for _ in range(2000))
        assert sent == 2000
        await settle(lambda: listener.received >= 1)
        await asyncio.sleep(0.05)
        before = len(calls)
        assert notify(tmp_path, FLUSH)
        await settle(lambda: len(calls) > before and calls[-1] == FLUSH)
        listener.close()

    asyncio.run(main())
    assert len(logs) == 1 and "boom" in logs[0]


def test_an_unusable_public_directory_degrades_to_polling(tmp_path: Path) -> None:
    # Runs as root too (where a read-only mode would not stop us): "public" is a file.
    logs: list[str] = []
    (tmp_path / "public").write_text("")

    async def main() -> TriggerListener:
        return await TriggerListener.start(trigger_path(tmp_path), lambda _: None, log=logs.append)

    assert not asyncio.run(main()).active
    assert len(logs) == 1
    assert not notify(tmp_path)
