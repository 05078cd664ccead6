"""``ironpost queue``: mailq layout (golden), JSON, show, and the commands on a real store."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from queue_testing import CLIENT, build_envelope

from ironpost.cli.queue import (
    Selection,
    asctime,
    cmd_apply,
    cmd_delete,
    cmd_list,
    cmd_show,
    format_json,
    format_mailq,
    format_stats,
)
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

T0 = 1_700_000_000.0  # Tue Nov 14 22:13:20 2023 UTC


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def rcpt(
    i: int, address: str, status: RecipientStatus, reply: str | None = None
) -> QueuedRecipient:
    return QueuedRecipient(i, RecipientSpec(address, address), status, 1, T0 + 600, reply)


def message(
    qid: str, state: QueueState, sender: str, size: int, *rs: QueuedRecipient
) -> QueuedMessage:
    env = Envelope(sender, tuple(r.spec for r in rs), size, None, False, None, None, CLIENT, T0)
    return QueuedMessage(qid, env, state, list(rs), size)


MESSAGES = [
    message(
        "0ABCDEFGHIJ01234",
        QueueState.ACTIVE,
        "alice@example.org",
        2048,
        rcpt(0, "bob@example.net", RecipientStatus.PENDING),
    ),
    message(
        "0ABCDEFGHIK01234",
        QueueState.DEFERRED,
        "",
        3000,
        rcpt(0, "done@example.net", RecipientStatus.DELIVERED, "250 ok"),
        rcpt(1, "carol@example.com", RecipientStatus.DEFERRED, "connect to mx: refused"),
        rcpt(2, "dave@example.com", RecipientStatus.DEFERRED, "connect to mx: refused"),
        rcpt(3, "erin@example.com", RecipientStatus.DEFERRED, "451 4.7.1 greylisted"),
    ),
    message(
        "0ABCDEFGHIL01234",
        QueueState.HOLD,
        "bounce\x1b[31m@example.org",
        100,
        rcpt(0, "frank@example.com", RecipientStatus.PENDING),
    ),
]

GOLDEN = """\
----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------
0ABCDEFGHIJ01234*     2048 Tue Nov 14 22:13:20 alice@example.org
                                               bob@example.net

0ABCDEFGHIK01234      3000 Tue Nov 14 22:13:20 MAILER-DAEMON
                                                      (connect to mx: refused)
                                               carol@example.com
                                               dave@example.com
                                                        (451 4.7.1 greylisted)
                                               erin@example.com

0ABCDEFGHIL01234!      100 Tue Nov 14 22:13:20 bounce?[31m@example.org
                                               frank@example.com

-- 5 Kbytes in 3 Requests.
"""

GOLDEN_SHORT = """\
-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
4F2A31C0B1*    2048 Tue Nov 14 22:13:20  alice@example.org
                                         bob@example.net

-- 2 Kbytes in 1 Request.
"""


def test_mailq_golden() -> None:
    assert format_mailq(MESSAGES) == GOLDEN


def test_mailq_short_ids_use_postfix_short_layout() -> None:
    m = message(
        "4F2A31C0B1",
        QueueState.ACTIVE,
        "alice@example.org",
        2048,
        rcpt(0, "bob@example.net", RecipientStatus.PENDING),
    )
    assert format_mailq([m]) == GOLDEN_SHORT


def test_mailq_empty() -> None:
    assert format_mailq([]) == "Mail queue is empty\n"


def test_asctime_pads_the_day() -> None:
    assert asctime(1_704_448_800.0) == "Fri Jan  5 10:00:00 2024"


def test_json_output() -> None:
    data = json.loads(format_json(MESSAGES))
    assert [d["id"] for d in data] == [m.id for m in MESSAGES]
    second = data[1]
    assert second["state"] == "deferred"
    assert second["arrival"] == "2023-11-14T22:13:20Z"
    assert second["size"] == 3000
    assert second["sender"] == ""
    assert second["recipients"][1] == {
        "address": "carol@example.com",
        "original": "carol@example.com",
        "status": "deferred",
        "attempts": 1,
        "next_attempt": "2023-11-14T22:23:20Z",
        "last_reply": "connect to mx: refused",
    }


def test_stats_format() -> None:
    text = format_stats({QueueState.INCOMING: 2, QueueState.HOLD: 1})
    assert "incoming  2\n" in text and "hold      1\n" in text and text.endswith("total     3\n")


BODY = b"Subject: hello\r\nFrom: a@example.org\r\n\r\nline one\r\nline two\r\n"


def test_commands_on_a_store(store: SqliteQueue) -> None:
    async def fill() -> tuple[str, str]:
        a = await store.submit(build_envelope("x@example.net", arrival=T0), BODY)
        b = await store.submit(build_envelope("y@example.net", arrival=T0 + 1), BODY)
        await store.claim(now=T0 + 5, limit=1)
        await store.record([Outcome(a, 0, RecipientStatus.DEFERRED, "451 later", T0 + 900)])
        return a, b

    a, b = asyncio.run(fill())
    out, err = io.StringIO(), io.StringIO()
    assert cmd_list(store, as_json=False, out=out) == 0
    listing = out.getvalue()
    assert listing.splitlines()[1].startswith(f"{a}  ")
    assert "(451 later)" in listing
    assert listing.endswith("-- 0 Kbytes in 2 Requests.\n")

    out = io.StringIO()
    assert cmd_list(store, as_json=True, out=out) == 0
    assert [m["id"] for m in json.loads(out.getvalue())] == [a, b]

    out = io.StringIO()
    assert cmd_show(store, a, out=out, err=err) == 0
    shown = out.getvalue()
    assert f"queue_id: {a}" in shown
    assert "recipient: x@example.net status=deferred attempts=1" in shown
    assert "Subject: hello\nFrom: a@example.org\n\nline one\nline two\n" in shown

    assert cmd_show(store, "NOSUCHID", out=out, err=err) == 1
    assert "NOSUCHID: no such message" in err.getvalue()
    one = Selection(ids=(b,))
    assert cmd_apply(store, "hold", one, out=out, err=err) == 0
    assert store.get(b).state is QueueState.HOLD  # type: ignore[union-attr]
    assert cmd_apply(store, "release", one, out=out, err=err) == 0
    assert cmd_apply(store, "release", one, out=out, err=err) == 1
    assert f"{b}: no such message on hold" in err.getvalue()
    assert cmd_delete(store, "NOSUCHID", out=out, err=err) == 1
    assert cmd_delete(store, a, out=out, err=err) == 0
    assert cmd_delete(store, "ALL", out=out, err=err) == 0
    assert store.list_messages() == []


def test_ironpost_queue_command_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ironpost.cli.main import main

    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "main.cf").write_text(f"myhostname = mx.example.test\nqueue_directory = {tmp_path}/q\n")
    store = open_queue(tmp_path / "q")
    qid = asyncio.run(store.submit(build_envelope(arrival=T0), BODY))
    store.close()

    assert main(["queue", "list", "-c", str(etc)]) == 0
    assert f"{qid}  " in capsys.readouterr().out
    assert main(["queue", "hold", qid, "-c", str(etc)]) == 0
    assert main(["queue", "stats", "-c", str(etc)]) == 0
    assert "hold      1" in capsys.readouterr().out
    assert main(["queue", "show", "NOSUCHID", "-c", str(etc)]) == 1
    assert "no such message" in capsys.readouterr().err
    assert main(["queue", "delete", qid, "-c", str(etc)]) == 0
    assert main(["queue", "list", "--json", "-c", str(etc)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1] or "[]") == []
