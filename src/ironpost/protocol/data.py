"""Message body framing: the DATA terminator, dot-unstuffing, and BDAT chunk octets.

Owns :class:`DataFramer`. Invariants:

* only complete lines leave the input buffer; the trailing partial line stays there until
  its LF arrives (so a chunk ending in ``\\r`` or ``.`` waits for the next byte), except
  that a partial line over 1000 octets is dropped, the message being doomed anyway;
* every line is checked exactly once, with bytes methods run over index ranges of the
  shared buffer (``find``, ``count`` with bounds), never a per-byte Python loop;
* the body octets are copied out of the buffer once, into the chunk delivered: a leading
  stuffed dot and the terminator are left out by the bounds of that copy, and only a
  chunk that holds stuffed lines (or, in lenient mode, bare LFs) is rewritten again;
* strict mode (``forbid_bare_newline``): any bare LF, bare CR or a terminator with a bare
  LF is a violation and no message end is ever reported for that input (SMTP smuggling
  defence). Lenient mode takes a bare LF as a line end (delivered as CRLF) and passes a
  bare CR through, as Postfix does;
* once the message is over ``max_size`` or has a line over 1000 octets, no more body is
  delivered, but input is still read up to the terminator.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from operator import indexOf

from ironpost.protocol import replies
from ironpost.protocol.replies import Reply

DATA_LINE_LIMIT = 1000  # octets including CRLF, RFC 5321 4.5.3.1.6
_BLOCK = DATA_LINE_LIMIT // 2  # a run of DATA_LINE_LIMIT octets covers one whole block


@dataclass(frozen=True, slots=True)
class Framed:
    """What one :meth:`DataFramer.feed` call achieved (it always consumed something)."""

    chunk: bytes  # body to deliver (unstuffed, CRLF line ends); may be empty
    done: bool  # the terminator line was consumed
    bare_newline: bool = False  # strict-mode violation: the session must close


_VIOLATION = Framed(b"", False, True)
_PROGRESS = Framed(b"", False)


class DataFramer:
    """Frames one DATA body out of a shared input buffer."""

    __slots__ = ("_at_bol", "_long_line", "_max", "_size", "_strict", "_too_big")

    def __init__(self, *, max_size: int, forbid_bare_newline: bool) -> None:
        self._max = max_size
        self._strict = forbid_bare_newline
        self._size = 0
        self._at_bol = True  # the next buffered byte starts a line
        self._too_big = False
        self._long_line = False

    @property
    def error(self) -> Reply | None:
        """The reply the message earned by its shape (size first, then line length)."""
        if self._too_big:
            return replies.MESSAGE_TOO_BIG
        if self._long_line:
            return replies.DATA_LINE_TOO_LONG
        return None

    def feed(self, buf: bytearray) -> Framed | None:
        """Consume all complete lines (up to the terminator) from ``buf``.

        Returns None when nothing can be consumed until more input arrives.
        """
        end = buf.rfind(b"\n") + 1  # the complete lines are buf[:end]
        if not end:
            return self._drop_long_tail(buf) if len(buf) > DATA_LINE_LIMIT else None
        strict = self._strict
        # A dot line is found by the line end before it. In strict mode every line end is
        # a CRLF (or the chunk is refused below), and the longer needle scans faster.
        needle = b"\r\n." if strict else b"\n."
        dot = len(needle) - 1  # offset of the dot in a match
        lo = 0  # first body octet: past a stuffed dot that opens the buffer
        term = -1  # offset of the terminator's dot
        tlen = 0  # length of the terminator line: 3 (".\r\n") or 2 (".\n")
        if self._at_bol and buf.startswith(b"."):
            if buf.startswith(b"\r\n", 1, end):
                term, tlen = 0, 3
            elif buf.startswith(b"\n", 1, end):
                term, tlen = 0, 2
            else:
                lo = 1
        stuffed = False  # a dot line inside the body (the first one is cut by lo)
        if term < 0:
            p = buf.find(needle, 0, end)
            if p >= 0:
                term, tlen = self._terminator(buf, p + dot, end)
                if term < 0:  # a stuffed line: from here on only the terminator matters
                    stuffed = True
                    term, tlen = self._find_terminator(buf, p + dot, end)
        hi = end if term < 0 else term  # the body is buf[lo:hi], whole lines
        bare_lf = False
        if hi > lo:
            crlf = buf.count(b"\r\n", lo, hi)
            bare_lf = buf.count(b"\n", lo, hi) != crlf
            if strict and (bare_lf or buf.count(b"\r", lo, hi) != crlf):
                return _VIOLATION
            if not self._long_line and hi >= DATA_LINE_LIMIT and _has_long_line(buf, 0, hi):
                self._long_line = True
        if strict and tlen == 2:
            return _VIOLATION
        chunk = b""
        if hi > lo and not self._too_big:
            with memoryview(buf) as view:
                chunk = bytes(view[lo:hi])  # the one copy of these octets
            if stuffed:
                chunk = chunk.replace(needle, needle[:dot])
            if bare_lf:
                chunk = chunk.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            self._size += len(chunk)
            if self._max and self._size > self._max:
                self._too_big = True
        del buf[: end if term < 0 else term + tlen]
        self._at_bol = True
        if self._too_big or self._long_line:
            chunk = b""
        return Framed(chunk, term >= 0)

    @staticmethod
    def _terminator(buf: bytearray, at: int, end: int) -> tuple[int, int]:
        """(at, length) if the line starting at ``at`` (a dot) is the terminator, else (-1, 0)."""
        if buf.startswith(b"\r\n", at + 1, end):
            return at, 3
        if buf.startswith(b"\n", at + 1, end):
            return at, 2
        return -1, 0

    def _find_terminator(self, buf: bytearray, start: int, end: int) -> tuple[int, int]:
        """The first terminator line in ``buf[start:end]``: (offset of its dot, length).

        One search for the whole terminator, not one per stuffed line. In strict mode a
        ``.`` LF line is left to the bare-LF check of the body it then stays in.
        """
        crlf_end = buf.find(b"\r\n.\r\n" if self._strict else b"\n.\r\n", start, end)
        if self._strict:
            return (crlf_end + 2, 3) if crlf_end >= 0 else (-1, 0)
        lf_end = buf.find(b"\n.\n", start, crlf_end + 2 if crlf_end >= 0 else end)
        if lf_end >= 0:
            return lf_end + 1, 2
        return (crlf_end + 1, 3) if crlf_end >= 0 else (-1, 0)

    def _drop_long_tail(self, buf: bytearray) -> Framed:
        # A trailing CR may start the CRLF that ends this line: keep it.
        n = len(buf) - 1 if buf.endswith(b"\r") else len(buf)
        if self._strict and buf.find(b"\r", 0, n) >= 0:
            return _VIOLATION
        self._long_line = True
        self._at_bol = False
        self._size += n
        del buf[:n]
        return _PROGRESS


def _has_long_line(data: bytes | bytearray, lo: int = 0, hi: int | None = None) -> bool:
    """Whether a line of ``data[lo:hi]`` exceeds DATA_LINE_LIMIT octets with its CRLF.

    ``data[lo:hi]`` starts a line and ends with LF (or at the end of ``data``). A run of
    1000 or more octets without LF always covers a whole aligned 500-octet block, so
    the scan asks each block for an LF (``find`` in C, driven by ``map``); only a block
    without one calls for measuring the line around it.
    """
    if hi is None:
        hi = len(data)
    find = data.find
    pos = lo
    while hi - pos >= DATA_LINE_LIMIT:
        ends = range(pos + _BLOCK, hi + _BLOCK, _BLOCK)
        try:
            k = indexOf(map(find, repeat(b"\n"), range(pos, hi, _BLOCK), ends), -1)
        except ValueError:
            return False
        at = pos + k * _BLOCK  # this block holds no LF: measure the line around it
        start = data.rfind(b"\n", pos, at) + 1 or pos
        stop = find(b"\n", at, hi)
        if stop < 0:
            stop = hi
        if stop - start >= DATA_LINE_LIMIT:
            return True
        pos = stop + 1
    return False


def take(buf: bytearray, n: int) -> bytes:
    """Remove and return up to ``n`` octets from the front of ``buf`` (BDAT chunks).

    One copy: the octets go straight from the buffer into the returned bytes.
    """
    if n >= len(buf):
        chunk = bytes(buf)
        buf.clear()
        return chunk
    with memoryview(buf) as view:
        chunk = bytes(view[:n])
    del buf[:n]
    return chunk


def dot_stuff(content: bytes) -> bytes:
    """Content (CRLF line endings) as sent after DATA, with the ``.`` terminator."""
    stuffed = content.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\r\n"):
        return stuffed + b"\r\n.\r\n"
    return stuffed + b".\r\n"
