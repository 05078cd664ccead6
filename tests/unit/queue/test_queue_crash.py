"""kill -9 during commits: every id reported committed survives, and the db is intact."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ironpost.queue import QueueState, open_queue

CHILD = r"""
import asyncio, sys, time
from pathlib import Path
from ironpost.queue import ClientInfo, Envelope, RecipientSpec, open_queue

store = open_queue(Path(sys.argv[1]))
client = ClientInfo("192.0.2.1", "c.example", "c.example", "ESMTP")
body = b"Subject: crash\r\n\r\n" + b"x" * 4000 + b"\r\n"

async def submitter():
    while True:
        env = Envelope("a@example.org", (RecipientSpec("b@example.net", "b@example.net"),),
                       len(body), None, False, None, None, client, time.time())
        qid = await store.submit(env, body)
        # Printed only after submit returned, i.e. after the durable commit.
        sys.stdout.write(qid + "\n")
        sys.stdout.flush()

async def main():
    claimed = 0
    tasks = [asyncio.create_task(submitter()) for _ in range(20)]
    while True:  # also keep claims (writes) in flight, as a running server would
        await asyncio.sleep(0.001)
        claimed += len(await store.claim(now=time.time(), limit=5))

asyncio.run(main())
"""


def test_kill_9_keeps_committed_messages(tmp_path: Path) -> None:
    queue_dir = tmp_path / "q"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(queue_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdout is not None
    reported: list[str] = []
    deadline = time.monotonic() + 30
    try:
        while len(reported) < 300 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            reported.append(line.decode().strip())
        os.kill(child.pid, signal.SIGKILL)
        rest = child.stdout.read()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
        assert child.stderr is not None
        stderr = child.stderr.read().decode()
        child.stderr.close()
    assert len(reported) >= 300, stderr
    # A line cut by the kill is not a report; complete lines are.
    reported += [x.decode() for x in rest.split(b"\n")[:-1]]

    store = open_queue(queue_dir)
    try:
        assert store.integrity_check() == "ok"
        for qid in reported:
            assert store.get(qid) is not None, qid
        states = store.stats()
        assert sum(states.values()) >= len(reported)
        recovered = asyncio.run(store.recover())
        assert recovered == states[QueueState.ACTIVE]
        assert store.stats()[QueueState.ACTIVE] == 0
    finally:
        store.close()
