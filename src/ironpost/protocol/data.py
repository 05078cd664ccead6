"""Message body framing: the DATA terminator, dot-unstuffing, and BDAT chunk octets.

Owns :class:`DataFramer`. Invariants:

* only complete lines leave the input buffer; the trailing partial line stays there until
  its LF arrives (so a chunk ending in ``\\r`` or ``.`` waits for the next byte), except
  that a partial line over 1000 octets is dropped, the message being doomed anyway;
* every line is checked exactly once, with bytes methods over whole chunks (``find``,
  ``count``, ``replace``), never a per-byte Python loop;
* strict mode (``forbid_bare_newline``): any bare LF, bare CR or a terminator with a bare
  LF is a violation and no message end is ever reported for that input (SMTP smuggling
  defence). Lenient mode takes a bare LF as a line end (delivered as CRLF) and passes a
  bare CR through, as Postfix does;
* once the message is over ``max_size`` or has a line over 1000 octets, no more body is
  delivered, but input is still read up to the terminator.
"""

from __future__ import annotations

from dataclasses import dataclass

from ironpost.protocol import replies
from ironpost.protocol.replies import Reply

DATA_LINE_LIMIT = 1000  # octets including CRLF, RFC 5321 4.5.3.1.6


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
        end = buf.rfind(b"\n")
        if end < 0:
            return self._drop_long_tail(buf) if len(buf) > DATA_LINE_LIMIT else None
        if end + 1 == len(buf):
            seg = bytes(buf)
        else:
            with memoryview(buf) as view:
                seg = bytes(view[: end + 1])
        # The terminator is a line holding only "." (CRLF-, or in lenient mode LF-ended);
        # one scan for "\n." finds it and tells whether any line needs unstuffing.
        term = -1
        tlen = 0
        if self._at_bol and seg[:1] == b".":
            if seg[1:3] == b"\r\n":
                term, tlen = 0, 3
            elif seg[1:2] == b"\n":
                term, tlen = 0, 2
        stuffed = False
        if term < 0:
            p = seg.find(b"\n.")
            while p >= 0:
                after = seg[p + 2 : p + 4]
                if after == b"\r\n" or after[:1] == b"\n":
                    term, tlen = p + 1, 3 if after == b"\r\n" else 2
                    break
                stuffed = True
                p = seg.find(b"\n.", p + 2)
        body = seg if term < 0 else seg[:term]
        crlf = body.count(b"\r\n")
        bare_lf = body.count(b"\n") != crlf
        if self._strict and (bare_lf or tlen == 2 or body.count(b"\r") != crlf):
            return _VIOLATION
        if not self._long_line and len(body) >= DATA_LINE_LIMIT and _has_long_line(body):
            self._long_line = True
        if body:
            if self._at_bol and body[:1] == b".":
                body = body[1:]
            if stuffed:
                body = body.replace(b"\n.", b"\n")
            if bare_lf:
                body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            self._size += len(body)
            if self._max and self._size > self._max:
                self._too_big = True
        del buf[: len(seg) if term < 0 else term + tlen]
        self._at_bol = True
        if self._too_big or self._long_line:
            body = b""
        return Framed(body, term >= 0)

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


def _has_long_line(body: bytes) -> bool:
    """Whether a line of ``body`` (which starts a line) exceeds DATA_LINE_LIMIT octets.

    A run of 1000 or more octets without LF always covers a whole aligned 500-octet
    block, so only a block without LF calls for the exact (slower) check.
    """
    find = body.find
    for start in range(0, len(body), 500):
        if find(b"\n", start, start + 500) < 0:
            return max(map(len, body.split(b"\n"))) >= DATA_LINE_LIMIT
    return False


def take(buf: bytearray, n: int) -> bytes:
    """Remove and return up to ``n`` octets from the front of ``buf`` (BDAT chunks)."""
    if n >= len(buf):
        chunk = bytes(buf)
        buf.clear()
        return chunk
    chunk = bytes(buf[:n])
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
