"""DataFramer against a line-by-line model of the DATA rules, on hostile random input.

The framer scans whole chunks with bytes methods and searches for the terminator as a
whole once a stuffed line is seen; the model below reads one line at a time and says
plainly what RFC 5321 and the smuggling rules want. Any input, cut anywhere, must get
the same verdict from both: the body, the terminator, the bytes left after it, the
violation (strict mode) and the error (size, line length).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ironpost.protocol import replies
from ironpost.protocol.data import DATA_LINE_LIMIT, DataFramer, _has_long_line, take
from ironpost.protocol.replies import Reply


@dataclass(frozen=True)
class Outcome:
    kind: str  # "done", "violation" or "open"
    body: bytes = b""
    rest: bytes = b""
    error: Reply | None = None


def model(data: bytes, *, strict: bool, max_size: int) -> Outcome:
    """One line at a time: the rules as the docstring of ironpost.protocol.data states them."""
    body: list[bytes] = []
    size = 0
    too_big = long_line = False
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        line = data[pos : nl + 1]
        pos = nl + 1
        if line in (b".\r\n", b".\n"):
            if strict and line == b".\n":
                return Outcome("violation")
            error = replies.MESSAGE_TOO_BIG if too_big else None
            if error is None and long_line:
                error = replies.DATA_LINE_TOO_LONG
            return Outcome("done", b"".join(body), data[pos:], error)
        text = line[:-1]
        if text.endswith(b"\r"):
            text = text[:-1]
        if strict and (not line.endswith(b"\r\n") or b"\r" in text):
            return Outcome("violation")
        if len(line) - 1 >= DATA_LINE_LIMIT:
            long_line = True
        if text.startswith(b"."):
            text = text[1:]
        size += len(text) + 2
        if max_size and size > max_size:
            too_big = True
        body.append(text + b"\r\n")
    return Outcome("open")


def framed(data: bytes, cuts: list[int], *, strict: bool, max_size: int) -> Outcome:
    framer = DataFramer(max_size=max_size, forbid_bare_newline=strict)
    buf = bytearray()
    body: list[bytes] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        if cut <= prev:
            continue
        buf += data[prev:cut]
        prev = cut
        while (result := framer.feed(buf)) is not None:
            if result.bare_newline:
                return Outcome("violation")
            body.append(result.chunk)
            if result.done:
                return Outcome("done", b"".join(body), bytes(buf) + data[prev:], framer.error)
    return Outcome("open")


def agree(data: bytes, cuts: list[int], *, strict: bool, max_size: int) -> None:
    want = model(data, strict=strict, max_size=max_size)
    got = framed(data, cuts, strict=strict, max_size=max_size)
    if want.kind == "open":
        # Without a terminator the framer may still have seen a bad partial line.
        assert got.kind in ("open", "violation")
        return
    assert got.kind == want.kind
    if want.kind == "violation":
        return
    assert got.rest == want.rest
    if want.error is None:
        assert (got.error, got.body) == (None, want.body)
    elif want.error == replies.MESSAGE_TOO_BIG and want.body.count(b"\n") == want.body.count(
        b"\r\n"
    ):
        assert got.error is not None
    else:
        # A line dropped while still incomplete is counted as it came (a stuffed dot
        # included), so at the size limit either reply may win; both refuse the message.
        assert got.error in (replies.MESSAGE_TOO_BIG, replies.DATA_LINE_TOO_LONG)


_PIECES = st.sampled_from(
    [
        b"a",
        b"text ",
        b".",
        b"..",
        b"\r",
        b"\n",
        b"\r\n",
        b"\r\n.",
        b"\r\n..",
        b".\r\n",
        b"\r\n.\r\n",
        b"\n.\n",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r\n",
        b"x" * 700,
    ]
)
_DATA = st.lists(_PIECES, max_size=40).map(b"".join)
_CUTS = st.lists(st.integers(0, 3000), max_size=12)


@settings(max_examples=600, deadline=None)
@given(_DATA, _CUTS, st.booleans(), st.sampled_from([0, 50, 1500]))
def test_framer_agrees_with_line_model(
    data: bytes, cuts: list[int], strict: bool, cap: int
) -> None:
    agree(data + b"\r\n.\r\nQUIT\r\n", cuts, strict=strict, max_size=cap)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"line", b".dot", b"..", b"", b"y" * 990]), max_size=60), _CUTS)
def test_clean_bodies_round_trip_in_both_modes(lines: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(b"." + ln + b"\r\n" if ln.startswith(b".") else ln + b"\r\n" for ln in lines)
    for strict in (True, False):
        got = framed(wire + b".\r\nNOOP\r\n", cuts, strict=strict, max_size=0)
        assert got == Outcome("done", b"".join(ln + b"\r\n" for ln in lines), b"NOOP\r\n")


@pytest.mark.parametrize("strict", [True, False])
def test_many_stuffed_lines_then_terminator_in_one_chunk(strict: bool) -> None:
    # Past the first stuffed line the terminator is searched for as a whole: every other
    # stuffed line must still be unstuffed, and a dot line that is not the end stays body.
    wire = b"a\r\n" + b"..x\r\n" * 500 + b".\r\r\n" * strict + b"..\r\n.\r\nrest"
    got = framed(wire, [], strict=strict, max_size=0)
    if strict:
        assert got.kind == "violation"  # the ".\r\r\n" line holds a bare CR
        return
    assert got == Outcome("done", b"a\r\n" + b".x\r\n" * 500 + b".\r\n", b"rest")


def test_lenient_lf_terminator_before_crlf_terminator() -> None:
    got = framed(b"..a\r\n..b\n.\nNOOP\r\n.\r\n", [], strict=False, max_size=0)
    assert got == Outcome("done", b".a\r\n.b\r\n", b"NOOP\r\n.\r\n")


def test_strict_lf_dot_line_after_stuffed_line_is_a_violation() -> None:
    assert framed(b"..a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n", [], strict=True, max_size=0).kind == (
        "violation"
    )


def test_long_line_check_bounds() -> None:
    line = b"b" * 998 + b"\r\n"  # exactly at the limit: allowed
    assert not _has_long_line(line * 5)
    assert _has_long_line(line * 2 + b"c" + line)
    # Only data[lo:hi] is judged: a long line outside it does not count.
    data = b"z" * 3000 + b"\n" + line * 3
    assert _has_long_line(data) and not _has_long_line(data, 3001, len(data))
    # A 600-octet line covering a whole block is measured and passed over.
    assert not _has_long_line((b"m" * 600 + b"\r\n" + b"n" * 300 + b"\r\n") * 10)


def test_take_copies_once_and_leaves_the_rest() -> None:
    buf = bytearray(b"0123456789")
    assert take(buf, 4) == b"0123" and buf == b"456789"
    assert take(buf, 100) == b"456789" and buf == b""
