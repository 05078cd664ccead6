"""``ironpost privacy find|erase``: the commands over a real queue file and log files."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from ironpost.cli.main import build_parser
from ironpost.cli.privacy import cmd_erase, cmd_find, concerns
from ironpost.queue.model import ClientInfo, Envelope, RecipientSpec
from ironpost.queue.sqlite import SqliteQueue, open_queue

CLIENT = ClientInfo(address="192.0.2.7", name="client.example", helo="c", protocol="ESMTP")


def _envelope(sender: str, *rcpts: str) -> Envelope:
    return Envelope(
        sender=sender,
        recipients=tuple(RecipientSpec(address=r, original=r) for r in rcpts),
        size=10,
        body_type=None,
        smtputf8=False,
        ret=None,
        envid=None,
        client=CLIENT,
        arrival=1_772_712_000.0,
    )


def _queue(tmp_path: Path) -> tuple[SqliteQueue, list[str]]:
    store = open_queue(tmp_path / "queue")

    async def fill() -> list[str]:
        return [
            await store.submit(_envelope("alice@example.test", "bob@example.test"), b"x\r\n"),
            await store.submit(_envelope("bob@example.test", "ALICE@example.test"), b"y\r\n"),
            await store.submit(_envelope("bob@example.test", "carol@example.test"), b"z\r\n"),
        ]

    ids = asyncio.run(fill())
    return store, ids


def test_find_and_erase(tmp_path: Path) -> None:
    store, ids = _queue(tmp_path)
    log = tmp_path / "maillog"
    log.write_text(
        f"Mar  5 12:00:00 mx ironpost/qmgr[1]: {ids[0]}: from=<alice@example.test>, size=1\n"
        f"Mar  5 12:00:00 mx ironpost/qmgr[1]: {ids[2]}: from=<bob@example.test>, size=1\n"
    )
    try:
        out = io.StringIO()
        assert cmd_find("alice@example.test", store=store, files=[log], keys=[], out=out) == 0
        text = out.getvalue()
        assert f"queue: {ids[0]} " in text and f"queue: {ids[1]} " in text
        assert ids[2] not in text
        assert "found 2 queue entries and 1 log line in 1 file(s)" in text
        out = io.StringIO()
        cmd_erase("alice@example.test", store=store, files=[log], keys=[], out=out)
        assert "erased 2 queue entries and 1 log line from 1 file(s)" in out.getvalue()
        assert store.select() == [ids[2]]
        assert "alice" not in log.read_text()
    finally:
        store.close()


def test_concerns_matches_original_recipients_case_insensitively(tmp_path: Path) -> None:
    store, ids = _queue(tmp_path)
    try:
        [second] = [m for m in store.list_messages() if m.id == ids[1]]
        assert concerns(second, "<Alice@Example.Test>")
        assert not concerns(second, "carol@example.test")
    finally:
        store.close()


def test_parser_has_find_and_erase() -> None:
    args = build_parser().parse_args(["privacy", "find", "a@b.test", "--json"])
    assert args.privacy_command == "find" and args.json
    args = build_parser().parse_args(["privacy", "erase", "a@b.test"])
    assert args.privacy_command == "erase"
