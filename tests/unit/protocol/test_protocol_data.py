"""DATA and BDAT framing: terminator, dot-stuffing, limits, smuggling, chunk boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from protocol_driver import Driver

from ironpost.protocol import BdatChunk, MessageEnd, ServerOptions, replies
from ironpost.protocol.data import DataFramer

START = b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
LENIENT = ServerOptions(forbid_bare_newline=False)
SMUGGLE = b"MAIL FROM:<evil@x.example>\r\nRCPT TO:<v@y.example>\r\nDATA\r\nsmuggled\r\n.\r\n"

VARIANTS = {
    "bare LF": b"hello\nworld\r\n.\r\n",
    "bare CR": b"hello\rworld\r\n.\r\n",
    "CR CR LF": b"hello\r\r\n.\r\n",
    "LF . LF": b"hello\n.\n" + SMUGGLE,
    "LF . CRLF": b"hello\n.\r\n" + SMUGGLE,
    "CRLF . LF": b"hello\r\n.\n" + SMUGGLE,
    "CR . CRLF": b"hello\r.\r\n" + SMUGGLE,
}


def feed_split(d: Driver, data: bytes, cuts: list[int]) -> None:
    prev = 0
    for cut in [*sorted(cuts), len(data)]:
        if cut > prev:
            d.feed(data[prev:cut])
            prev = cut


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("bytewise", [False, True])
def test_smuggling_variants_close_without_message_end(name: str, bytewise: bool) -> None:
    d = Driver()
    d.feed(START)
    data = VARIANTS[name] + b"\r\n.\r\n"
    feed_split(d, data, list(range(len(data))) if bytewise else [])
    assert d.ends() == []  # neither the first nor a smuggled second message
    assert [(e.reply, e.close) for e in d.errors()] == [(replies.BARE_NEWLINE, True)]
    assert d.kinds().count("Mail") == 1 and d.conn.closed
    assert d.codes()[-1] == 521


def test_lf_only_client_when_lenient() -> None:
    d = Driver(LENIENT)
    d.feed(b"EHLO c\nMAIL FROM:<a@b.example>\nRCPT TO:<c@d.example>\nDATA\n")
    d.feed(b"line1\n..dot\nbare\rcr\r\n.\nQUIT\n")
    assert d.body == b"line1\r\n.dot\r\nbare\rcr\r\n"
    assert d.kinds() == ["Helo", "Mail", "Rcpt", "Data", "MessageEnd", "Quit"]


@pytest.mark.parametrize("end", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r\n.\r\n"])
def test_lenient_terminators(end: bytes) -> None:
    d = Driver(LENIENT)
    d.feed(START + b"hello" + end + b"NOOP\r\n")
    assert d.body == b"hello\r\n" and len(d.ends()) == 1 and d.kinds()[-1] == "Noop"


def test_lenient_bare_cr_before_dot_is_not_an_end() -> None:
    d = Driver(LENIENT)
    d.feed(START + b"hello\r.\r\nmore\r\n.\r\n")
    assert d.body == b"hello\r.\r\nmore\r\n" and len(d.ends()) == 1


def test_dot_stuffing_and_empty_message() -> None:
    d = Driver()
    d.feed(START + b".\r\n")
    assert d.ends() == [MessageEnd(None)] and d.body == b""
    d.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n")
    d.feed(b"..\r\n...x\r\n.y\r\nz.\r\n.\r\n")
    assert d.body == b".\r\n..x\r\ny\r\nz.\r\n"


def test_oversize_message_rejected_after_terminator() -> None:
    d = Driver(ServerOptions(max_message_size=100))
    d.feed(START + b"x" * 60 + b"\r\n")
    d.feed(b"y" * 60 + b"\r\n" + b"z" * 500 + b"\r\n.\r\nNOOP\r\n")
    assert d.ends() == [MessageEnd(replies.MESSAGE_TOO_BIG)]
    assert d.body == b"x" * 60 + b"\r\n"  # nothing once over the limit
    assert 552 in d.codes() and d.kinds()[-1] == "Noop" and not d.conn.closed


def test_data_line_limit() -> None:
    ok = Driver()
    ok.feed(START + b"a" * 998 + b"\r\n.\r\n")
    assert ok.ends() == [MessageEnd(None)]
    bad = Driver()
    bad.feed(START + b"a" * 999 + b"\r\n.\r\n")
    assert bad.ends() == [MessageEnd(replies.DATA_LINE_TOO_LONG)]
    split = Driver()
    split.feed(START + b"short\r\n" + b"a" * 3000)  # partial long line: not held
    assert len(split.conn._buf) <= 1
    split.feed(b"a" * 3000 + b"\r\n.\r\nNOOP\r\n")
    assert split.ends() == [MessageEnd(replies.DATA_LINE_TOO_LONG)]
    assert split.kinds()[-1] == "Noop"


def test_eof_inside_data_is_no_message() -> None:
    d = Driver()
    d.feed(START + b"partial\r\nline")
    d.feed(b"")
    assert d.ends() == [] and d.kinds()[-1] == "ConnectionClosed"


def test_framer_streams_without_holding_the_body() -> None:
    framer = DataFramer(max_size=0, forbid_bare_newline=True)
    buf = bytearray(b"line\r\n" * 1000 + b"par")
    framed = framer.feed(buf)
    assert framed is not None and len(framed.chunk) == 6000 and buf == b"par"
    assert framer.feed(buf) is None


# -- chunk boundaries ---------------------------------------------------------------

SESSION = (
    START
    + b"Subject: t\r\n\r\n.leading dot\r\n..two\r\n\r\nend\r\n.\r\n"
    + b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
    + b"BDAT 7\r\nab\r\n.\r\nBDAT 3 LAST\r\nxyzNOOP\r\nQUIT\r\n"
)


def run(data: bytes, cuts: list[int], options: ServerOptions | None = None) -> Driver:
    d = Driver(options)
    feed_split(d, data, cuts)
    return d


def test_byte_by_byte_equals_whole() -> None:
    whole = run(SESSION, [])
    assert whole.body == b"Subject: t\r\n\r\nleading dot\r\n.two\r\n\r\nend\r\nab\r\n.\r\nxyz"
    assert whole.kinds().count("MessageEnd") == 2 and whole.kinds()[-1] == "Quit"
    single = run(SESSION, list(range(len(SESSION))))
    assert (single.body, single.kinds(), single.out) == (whole.body, whole.kinds(), whole.out)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, len(SESSION)), max_size=30))
def test_random_splits(cuts: list[int]) -> None:
    whole = run(SESSION, [])
    d = run(SESSION, cuts)
    assert (d.body, d.kinds(), d.out) == (whole.body, whole.kinds(), whole.out)


_line = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@settings(max_examples=150, deadline=None)
@given(st.lists(_line, max_size=20), st.lists(st.integers(0, 2000), max_size=10))
def test_dot_stuffing_round_trip(lines: list[bytes], cuts: list[int]) -> None:
    stuffed = b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)
    d = Driver()
    d.feed(START)
    feed_split(d, stuffed + b".\r\n", cuts)
    assert d.body == b"".join(ln + b"\r\n" for ln in lines)
    assert d.ends() == [MessageEnd(None)]


# -- BDAT ---------------------------------------------------------------------------

ENV = b"EHLO c.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"


def test_bdat_chunks() -> None:
    d = Driver()
    d.feed(ENV + b"BDAT 5\r\nhelloBDAT 8 LAST\r\n wo\n.\rld")
    assert d.body == b"hello wo\n.\rld"  # binary: no unstuffing, no line checks
    assert [e for e in d.events if isinstance(e, BdatChunk)] == [BdatChunk(5, False)]
    assert d.ends() == [MessageEnd(None)] and d.codes()[-2:] == [250, 250]


def test_bdat_chunk_split_across_receive_calls() -> None:
    d = Driver()
    d.feed(ENV + b"BDAT 12 LAST\r\nhel")
    d.feed(b"lo wor")
    assert d.ends() == []
    d.feed(b"ld!NOOP\r\n")
    assert d.body == b"hello world!" and d.ends() == [MessageEnd(None)]
    assert d.kinds()[-1] == "Noop"


def test_bdat_zero_last() -> None:
    d = Driver()
    d.feed(ENV + b"BDAT 3\r\nabcBDAT 0 LAST\r\n")
    assert d.body == b"abc" and d.ends() == [MessageEnd(None)]


def test_bdat_out_of_sequence_consumes_chunk() -> None:
    d = Driver()
    d.feed(b"EHLO c.example\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n")
    assert [e.reply for e in d.errors()] == [replies.NEED_RCPT]
    assert d.kinds()[-1] == "Noop" and "Quit" not in d.kinds()


def test_bdat_bad_syntax_closes() -> None:
    d = Driver()
    d.feed(ENV + b"BDAT lots\r\nQUIT\r\n")
    assert d.errors()[0].reply == replies.BDAT_SYNTAX and d.conn.closed


def test_bdat_too_big_and_failed_chunk_ends_transaction() -> None:
    d = Driver(ServerOptions(max_message_size=10))
    d.feed(ENV + b"BDAT 8\r\n12345678BDAT 8\r\n12345678BDAT 2 LAST\r\nxxNOOP\r\n")
    assert d.ends() == [MessageEnd(replies.MESSAGE_TOO_BIG)]
    assert d.body == b"12345678"
    assert [e.reply for e in d.errors()] == [replies.NEED_RCPT]  # later chunk: no transaction
    assert d.kinds()[-1] == "Noop"


def test_bdat_disabled_and_data_after_bdat() -> None:
    d = Driver(ServerOptions(chunking=False))
    d.feed(ENV + b"BDAT 0 LAST\r\n")
    assert d.errors()[0].reply == replies.UNKNOWN_COMMAND
    e = Driver()
    e.feed(ENV + b"BDAT 1\r\nxDATA\r\n")
    assert e.errors()[0].reply == replies.BAD_SEQUENCE


def test_binarymime_over_bdat() -> None:
    d = Driver()
    d.feed(
        b"EHLO c\r\nMAIL FROM:<a@b.example> BODY=BINARYMIME\r\nRCPT TO:<c@d.example>\r\n"
        b"BDAT 4 LAST\r\n\x00\xff\r\n"
    )
    assert d.body == b"\x00\xff\r\n" and d.ends() == [MessageEnd(None)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 1500), min_size=1, max_size=8))
def test_long_line_detection_matches_naive(lengths: list[int]) -> None:
    from ironpost.protocol.data import DATA_LINE_LIMIT, _has_long_line

    body = b"".join(b"a" * n + b"\r\n" for n in lengths)
    assert _has_long_line(body) == any(n + 2 > DATA_LINE_LIMIT for n in lengths)
