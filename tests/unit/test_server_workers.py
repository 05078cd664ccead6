"""server.workers: SO_REUSEPORT socket sets, the --listen-fds round trip, the poke
coalescing and the pool's restart schedule (with real child processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.queue.trigger import PUBLIC_DIR, trigger_path
from ironpost.server import workers as W


def test_zero_means_one_per_cpu_and_bounds_are_enforced() -> None:
    assert W.resolve_workers(0) == len(os.sched_getaffinity(0))
    assert W.resolve_workers(3) == 3
    for bad in (-1, W.MAX_WORKERS + 1):
        with pytest.raises(ValueError):
            W.resolve_workers(bad)


def test_each_process_gets_its_own_socket_on_the_same_port() -> None:
    first = W.bind_reuseport("127.0.0.1", 0)
    port = first[0].getsockname()[1]
    W.close_sets([{("127.0.0.1", 0): first}])
    sets = W.bind_sets([("127.0.0.1", port)], 3)
    try:
        socks = [s for one in sets for s in one[("127.0.0.1", port)]]
        assert len(socks) == 3
        assert {s.getsockname() for s in socks} == {("127.0.0.1", port)}
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in socks)
        # The kernel hands every connection to one of them.
        for _ in range(6):
            socket.create_connection(("127.0.0.1", port)).close()
        time.sleep(0.05)
        accepted = 0
        for s in socks:
            while True:
                try:
                    s.accept()[0].close()
                    accepted += 1
                except BlockingIOError:
                    break
        assert accepted == 6
    finally:
        W.close_sets(sets)


def test_a_port_taken_without_reuseport_fails_and_leaks_nothing() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            W.bind_sets([("127.0.0.1", port)], 2)
        assert len(os.listdir("/proc/self/fd")) == before


def test_listen_fds_round_trip() -> None:
    sets = W.bind_sets([("127.0.0.1", 0), ("::1", 0)], 1) if socket.has_ipv6 else None
    if sets is None:
        pytest.skip("no IPv6")
    try:
        text = W.encode_fds(sets[0])
        # A worker takes ownership of fds it inherited: here, duplicates of ours.
        dup = {b: [socket.socket(fileno=os.dup(s.fileno())) for s in v] for b, v in sets[0].items()}
        decoded = W.decode_fds(W.encode_fds(dup))
        assert list(decoded) == list(sets[0])
        for bind, socks in decoded.items():
            assert [s.getsockname() for s in socks] == [s.getsockname() for s in sets[0][bind]]
        W.close_sets([decoded])
        assert text.startswith("[[")
    finally:
        W.close_sets(sets)


@given(st.text(max_size=40))
def test_a_bad_listen_fds_argument_is_a_value_error(text: str) -> None:
    try:
        decoded = W.decode_fds(text)
    except ValueError:
        return
    assert decoded == {}  # only "[]" and the like decode without naming a socket


def test_a_worker_of_a_live_parent_is_not_orphaned() -> None:
    assert W.die_with_master(os.getppid())
    assert not W.die_with_master(os.getppid() + 1_000_000)


def test_commits_in_one_loop_iteration_send_one_poke(tmp_path: Path) -> None:
    (tmp_path / PUBLIC_DIR).mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(trigger_path(tmp_path)))
        listener.setblocking(False)
        poke = W.MasterPoke(tmp_path)

        async def commits() -> None:
            for i in range(50):
                poke(f"Q{i}")
            await asyncio.sleep(0.01)
            poke("Q50")  # a later iteration: a second poke
            await asyncio.sleep(0.01)

        asyncio.run(commits())
        got = []
        while True:
            try:
                got.append(listener.recv(64))
            except BlockingIOError:
                break
        assert got == [b"W", b"W"]


def _sleeper(_fds: str) -> list[str]:
    return [sys.executable, "-c", "import time; time.sleep(60)"]


def test_the_pool_restarts_a_killed_worker_with_a_growing_delay() -> None:
    lines: list[str] = []
    sets = W.bind_sets([("127.0.0.1", 0)], 2)
    pool = W.WorkerPool(sets, _sleeper, lines.append)
    pool.start()
    try:
        first = pool.pids
        assert len(first) == 2
        os.kill(first[0], signal.SIGKILL)
        os.waitid(os.P_PID, first[0], os.WEXITED | os.WNOWAIT)
        now = time.monotonic()
        pool.check(now)
        assert f"warning: process ironpost/smtpd pid {first[0]} killed by signal 9" in lines
        assert "warning: restarting worker 1 in 1s" in lines
        assert pool.pids == [first[1]]
        pool.check(now + 0.5)  # not yet
        assert pool.pids == [first[1]]
        pool.check(now + 1.0)
        second = pool.pids[0]
        assert second not in first and len(pool.pids) == 2
        # Dies young again: the next wait doubles.
        os.kill(second, signal.SIGKILL)
        os.waitid(os.P_PID, second, os.WEXITED | os.WNOWAIT)
        pool.check(now + 1.5)
        assert lines[-1] == "warning: restarting worker 1 in 2s"
    finally:
        asyncio.run(pool.stop(signal.SIGTERM, 5.0))
    assert all(not os.path.exists(f"/proc/{pid}") for pid in first)
    assert all(s.fileno() == -1 for one in sets for v in one.values() for s in v)


def test_stop_kills_a_worker_that_ignores_sigterm() -> None:
    lines: list[str] = []

    def stubborn(_fds: str) -> list[str]:
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
        return [sys.executable, "-c", code]

    pool = W.WorkerPool([{}], stubborn, lines.append)
    pool.start()
    time.sleep(0.5)  # let it install its handler
    [pid] = pool.pids
    asyncio.run(pool.stop(signal.SIGTERM, 0.5))
    assert f"warning: worker pid {pid} did not stop: killed" in lines
    assert not os.path.exists(f"/proc/{pid}")
    assert not any(line.startswith("warning: process") for line in lines)
