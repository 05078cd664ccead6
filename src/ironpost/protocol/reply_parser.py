"""Strict, bounded parsing of SMTP/LMTP server replies (the client side of RFC 5321 §4.2).

Owns :class:`ReplyParser`: bytes go in with ``feed()``, complete replies come out of
``next_reply()`` as :class:`~ironpost.protocol.replies.Reply` values, with the RFC 2034
enhanced status code split off every line that carries it.

Invariants:

* every line is ``ddd[ -]text CRLF`` with ``ddd`` in 200..599; all lines of one
  multi-line reply carry the same code;
* memory is bounded whatever the peer sends: a line longer than :data:`MAX_LINE`, a reply
  of more than :data:`MAX_LINES` lines or :data:`MAX_REPLY` octets, a bare LF or CR, a
  control character or bytes that are not UTF-8 raise :class:`RemoteProtocolError`
  (the delivery fails; nothing crashes and nothing grows without limit);
* once an error was raised, the parser stays failed (the byte stream has lost sync).
"""

from __future__ import annotations

import re

from ironpost.protocol.errors import RemoteProtocolError
from ironpost.protocol.replies import Reply

# RFC 5321 §4.5.3.1.5 says 512 octets per reply line; real servers exceed it a little,
# so we allow a text line's worth (§4.5.3.1.6, 1000 octets with CRLF), and no more.
MAX_LINE = 1000
MAX_LINES = 100
MAX_REPLY = 64 * 1024

_LINE = re.compile(rb"([2-5][0-9][0-9])(?:([ -])(.*))?\Z", re.S)
# Control characters other than TAB; DEL too. (CR and LF are checked separately.)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?: |\Z)")


def protocol_error(detail: str) -> RemoteProtocolError:
    """The error for a peer that broke the reply grammar; its reply is what we record."""
    return RemoteProtocolError(Reply(451, "4.5.0", f"protocol error: {detail}"))


def split_enhanced(code: int, text: str) -> tuple[str | None, str]:
    """``("5.1.1", "no such user")`` from ``"5.1.1 no such user"`` when the class matches."""
    m = _ENHANCED.match(text)
    if m is None or int(m.group(1)) != code // 100:
        return None, text
    return text[: m.end()].rstrip(" "), text[m.end() :]


class ReplyParser:
    """Incremental reply parser. Call ``feed()`` with what the socket read, then
    ``next_reply()`` until it returns None."""

    __slots__ = ("_buffer", "_code", "_failed", "_lines", "_size")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[bytes] = []  # texts of the reply being assembled
        self._code = 0
        self._size = 0
        self._failed = False

    @property
    def buffered(self) -> int:
        """Octets received and not yet returned as a reply."""
        return len(self._buffer) + self._size

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_reply(self) -> Reply | None:
        """The next complete reply, or None if more input is needed."""
        if self._failed:
            raise protocol_error("reply stream out of sync")
        try:
            return self._next()
        except RemoteProtocolError:
            self._failed = True
            raise

    def _next(self) -> Reply | None:
        buf = self._buffer
        while True:
            end = buf.find(b"\n", 0, MAX_LINE)
            if end < 0:
                if len(buf) >= MAX_LINE:
                    raise protocol_error("reply line too long")
                return None
            if end == 0 or buf[end - 1] != 0x0D:
                raise protocol_error("bare <LF> in reply")
            line = bytes(buf[: end - 1])
            del buf[: end + 1]
            m = _LINE.match(line)
            if m is None:
                raise protocol_error("malformed reply line")
            code = int(m.group(1))
            text = m.group(3) or b""
            if _CONTROL.search(text) is not None or b"\r" in text:
                raise protocol_error("control character in reply")
            if self._lines and code != self._code:
                raise protocol_error("inconsistent codes in multi-line reply")
            self._code = code
            self._lines.append(text)
            self._size += end + 1
            if self._size > MAX_REPLY or len(self._lines) > MAX_LINES:
                raise protocol_error("reply too long")
            if m.group(2) != b"-":
                return self._finish()

    def _finish(self) -> Reply:
        code, raw = self._code, self._lines
        self._lines, self._size = [], 0
        try:
            texts = [t.decode("utf-8") for t in raw]
        except UnicodeDecodeError:
            raise protocol_error("reply is not UTF-8") from None
        enhanced, first = split_enhanced(code, texts[0])
        if enhanced is None:
            return Reply(code, None, tuple(texts))
        # RFC 2034: every line carries the code; strip it wherever it is repeated.
        prefix = enhanced + " "
        rest = [t[len(prefix) :] if t.startswith(prefix) else t for t in texts[1:]]
        rest = [("" if t == enhanced else t) for t in rest]
        return Reply(code, enhanced, (first, *rest))


def parse_replies(data: bytes) -> list[Reply]:
    """All complete replies in ``data`` (a convenience for tests and tools)."""
    parser = ReplyParser()
    parser.feed(data)
    out = []
    while (reply := parser.next_reply()) is not None:
        out.append(reply)
    return out
