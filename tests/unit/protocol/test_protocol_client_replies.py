"""The strict, bounded reply parser: examples, hypothesis properties and a fuzz-style run."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ironpost.protocol import RemoteProtocolError, Reply
from ironpost.protocol.data import dot_stuff
from ironpost.protocol.reply_parser import (
    MAX_LINE,
    MAX_REPLY,
    ReplyParser,
    parse_replies,
    split_enhanced,
)


def test_single_and_multiline_replies() -> None:
    assert parse_replies(b"250 2.1.5 Ok\r\n") == [Reply(250, "2.1.5", ("Ok",))]
    assert parse_replies(b"220 mx ESMTP\r\n") == [Reply(220, None, ("mx ESMTP",))]
    assert parse_replies(b"250\r\n") == [Reply(250, None, ("",))]
    assert parse_replies(b"250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n") == [
        Reply(250, None, ("mx", "PIPELINING", "SIZE 10"))
    ]
    assert parse_replies(b"550-5.1.1 no such\r\n550-5.1.1 user\r\n550 5.1.1 here\r\n") == [
        Reply(550, "5.1.1", ("no such", "user", "here"))
    ]


def test_enhanced_code_of_another_class_is_text() -> None:
    assert parse_replies(b"550 2.0.0 odd\r\n") == [Reply(550, None, ("2.0.0 odd",))]
    assert split_enhanced(451, "4.7.1 greylisted") == ("4.7.1", "greylisted")
    assert split_enhanced(451, "4.7.1") == ("4.7.1", "")
    assert split_enhanced(451, "4.7.1x") == (None, "4.7.1x")


def test_utf8_text_is_accepted() -> None:
    assert parse_replies("550 5.1.1 <ü@x> nö\r\n".encode()) == [Reply(550, "5.1.1", ("<ü@x> nö",))]


@pytest.mark.parametrize(
    "bad",
    [
        b"250 ok\n",  # bare LF
        b"\n",
        b"250 o\rk\r\n",  # bare CR
        b"250-a\r\n251 b\r\n",  # code changes
        b"25 x\r\n",
        b"2500\r\n",
        b"150 x\r\n",
        b"650 x\r\n",
        b"abc def\r\n",
        b"250_x\r\n",
        b"250 \x1b[31m\r\n",  # control character
        b"250 \xc3\x28\r\n",  # not UTF-8
        b"250 " + b"x" * MAX_LINE + b"\r\n",  # line too long
        b"250-x\r\n" * 101 + b"250 x\r\n",  # too many lines
    ],
)
def test_malformed_replies_raise(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_replies(bad)
    assert info.value.reply.code == 451 and info.value.reply.enhanced == "4.5.0"


def test_long_line_without_newline_is_refused_before_it_grows() -> None:
    parser = ReplyParser()
    parser.feed(b"250-" + b"x" * (MAX_LINE + 10))
    with pytest.raises(RemoteProtocolError):
        parser.next_reply()
    # The parser stays failed: the stream is out of sync.
    with pytest.raises(RemoteProtocolError):
        parser.next_reply()


def test_total_size_is_bounded() -> None:
    line = b"250-" + b"x" * 900 + b"\r\n"
    assert len(line) * 90 > MAX_REPLY
    with pytest.raises(RemoteProtocolError):
        parse_replies(line * 90 + b"250 x\r\n")


def test_incomplete_reply_waits() -> None:
    parser = ReplyParser()
    parser.feed(b"250-a\r\n250 b")
    assert parser.next_reply() is None
    parser.feed(b"\r\n")
    assert parser.next_reply() == Reply(250, None, ("a", "b"))
    assert parser.next_reply() is None


_text = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"),
    max_size=60,
)
_replies = st.builds(
    Reply,
    code=st.integers(200, 599),
    enhanced=st.none(),
    text=st.lists(_text, min_size=1, max_size=5).map(tuple),
).filter(lambda r: split_enhanced(r.code, r.lines[0])[0] is None)
_enhanced_replies = st.builds(
    lambda code, sub, det, lines: Reply(code, f"{code // 100}.{sub}.{det}", tuple(lines)),
    st.one_of(st.integers(200, 299), st.integers(400, 599)),  # RFC 3463 classes 2, 4, 5
    st.integers(0, 999),
    st.integers(0, 999),
    st.lists(_text, min_size=1, max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_replies, _enhanced_replies), min_size=1, max_size=5), st.data())
def test_round_trip_in_any_chunking(replies: list[Reply], data: st.DataObject) -> None:
    wire = b"".join(r.to_bytes() for r in replies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    parser = ReplyParser()
    got: list[Reply] = []
    start = 0
    for cut in [*cuts, len(wire)]:
        parser.feed(wire[start:cut])
        start = cut
        while (reply := parser.next_reply()) is not None:
            got.append(reply)
    assert got == replies


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_remote_error(data: bytes) -> None:
    try:
        replies = parse_replies(data)
    except RemoteProtocolError:
        return
    for reply in replies:
        assert 200 <= reply.code <= 599


def _unstuff(wire: bytes) -> bytes:
    assert wire.endswith(b".\r\n")
    body = wire[:-3]
    lines = body.split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))))
def test_dot_stuffing_round_trips(lines: list[bytes]) -> None:
    content = b"".join(line + b"\r\n" for line in lines)
    wire = dot_stuff(content)
    assert b"\r\n.\r\n" not in b"\r\n" + wire[:-3]  # the terminator appears only at the end
    assert _unstuff(wire) == content


def test_fuzz_mutated_replies_never_crash() -> None:
    rng = random.Random(5321)
    seeds = [
        b"250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n",
        b"550 5.1.1 <a@b>: no\r\n",
        b"354 go\r\n",
        b"421 4.3.2 bye\r\n",
    ]
    for _ in range(3000):
        data = bytearray(rng.choice(seeds) * rng.randint(1, 3))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data) + 1)
            op = rng.randrange(3)
            if op == 0:
                data[pos:pos] = bytes([rng.randrange(256)])
            elif op == 1 and pos < len(data):
                del data[pos]
            elif pos < len(data):
                data[pos] = rng.randrange(256)
        parser = ReplyParser()
        parser.feed(bytes(data))
        try:
            while parser.next_reply() is not None:
                pass
        except RemoteProtocolError:
            pass
        assert parser.buffered <= len(data)
