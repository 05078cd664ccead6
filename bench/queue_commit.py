"""Queue group-commit throughput: submits/s with N concurrent submitters of 4 KiB messages.

Usage: python bench/queue_commit.py [--submitters 50] [--messages 20000] [--dir DIR]

Each submitter awaits ``submit`` (which returns only after the durable COMMIT, WAL +
synchronous=FULL) before sending its next message, as an SMTP session waits before its
250. The database lives in a temporary directory on the same filesystem as /tmp unless
--dir says otherwise (put it on the queue's real disk for a meaningful number).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from ironpost.queue import ClientInfo, Envelope, RecipientSpec, open_queue


def envelope(n: int) -> Envelope:
    return Envelope(
        sender=f"sender{n}@example.org",
        recipients=(RecipientSpec(f"rcpt{n}@example.net", f"rcpt{n}@example.net"),),
        size=4096,
        body_type="8BITMIME",
        smtputf8=False,
        ret=None,
        envid=None,
        client=ClientInfo("192.0.2.1", "client.example.org", "client.example.org", "ESMTP"),
        arrival=time.time(),
    )


async def run(directory: Path, submitters: int, messages: int) -> None:
    store = open_queue(directory)
    body = (b"Subject: bench\r\n\r\n" + b"x" * 76 + b"\r\n") * 52
    body = body[:4096]
    per_task = messages // submitters

    async def submitter(k: int) -> None:
        for i in range(per_task):
            await store.submit(envelope(k * per_task + i), body)

    start = time.perf_counter()
    await asyncio.gather(*(submitter(k) for k in range(submitters)))
    elapsed = time.perf_counter() - start
    total = per_task * submitters
    writer = store.writer
    store.close()
    print(
        f"{total} submits of {len(body)} bytes by {submitters} submitters in {elapsed:.2f}s:"
        f" {total / elapsed:,.0f} submits/s, {writer.commits} commits"
        f" ({writer.jobs_committed / max(writer.commits, 1):.1f} per commit,"
        f" largest batch {writer.largest_batch})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submitters", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    if args.dir is not None:
        asyncio.run(run(args.dir, args.submitters, args.messages))
        return
    with tempfile.TemporaryDirectory(prefix="ironpost-bench-") as tmp:
        asyncio.run(run(Path(tmp) / "queue", args.submitters, args.messages))


if __name__ == "__main__":
    main()
