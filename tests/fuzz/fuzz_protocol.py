"""Fuzz target for ``ironpost.protocol``: the server state machine and the grammar.

Atheris-style (``TestOneInput(data)``); without atheris installed, ``python
fuzz_protocol.py [iterations] [seed]`` runs the target over random SMTP-shaped inputs.
The target asserts the invariants that must hold for every input: nothing raises but the
grammar's own errors, every reply is CRLF-terminated, a paused connection stays paused
until answered, and in strict mode no DATA body chunk carries a bare CR or LF.
"""

from __future__ import annotations

import random
import sys

from ironpost.protocol import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    AddressError,
    Auth,
    AuthResponse,
    ConnectionClosed,
    Data,
    EarlyTalker,
    Event,
    Helo,
    MessageData,
    MessageEnd,
    ParamError,
    Phase,
    ProtocolError,
    Quit,
    Reply,
    ServerConnection,
    ServerOptions,
    StartTls,
    parse_mail_params,
    parse_path,
    parse_rcpt_params,
    replies,
)

GREETING = Reply(220, None, "fuzz ESMTP")


def options_from(flags: int, more: int) -> ServerOptions:
    return ServerOptions(
        max_message_size=(more & 3) * 100,
        max_recipients=(more >> 2) & 3,
        helo_required=bool(flags & 2),
        tls_available=bool(flags & 4),
        forbid_bare_newline=not flags & 8,
        smtputf8=not flags & 16,
        chunking=not flags & 32,
        auth_mechanisms=("PLAIN",) if flags & 64 else (),
        auth_tls_only=bool(more & 16),
    )


def reply_for(conn: ServerConnection, ev: Event) -> Reply:
    if isinstance(ev, ProtocolError):
        return ev.reply
    if isinstance(ev, Helo):
        return Reply(250, None, ("fuzz", *conn.ehlo_keywords()))
    if isinstance(ev, Data):
        return replies.START_DATA
    if isinstance(ev, MessageEnd):
        return ev.error or replies.OK
    if isinstance(ev, StartTls):
        return replies.READY_TLS
    if isinstance(ev, Quit):
        return replies.BYE
    if isinstance(ev, EarlyTalker):
        return replies.EARLY_TALKER
    if isinstance(ev, Auth):
        return Reply(334, None, "")
    if isinstance(ev, AuthResponse):
        return Reply(235, "2.7.0", "ok") if ev.line else Reply(535, "5.7.8", "no")
    return replies.OK


def drive(data: bytes) -> None:
    if len(data) < 3:
        return
    flags, more, step = data[0], data[1], data[2] % 37 + 1
    body = data[3:]
    opts = options_from(flags, more)
    conn = ServerConnection(opts)
    if flags & 1 and body:
        conn.receive_data(body[:1])  # talk before the greeting
        body = body[1:]
        ev = conn.next_event()
        assert isinstance(ev, EarlyTalker)
        if more & 32:
            conn.send(replies.EARLY_TALKER)
            assert conn.closed
            return
    conn.send_greeting(GREETING)
    pieces = [body[i : i + step] for i in range(0, len(body), step)] + [b""]
    for piece in pieces:
        conn.receive_data(piece)
        while True:
            phase = conn.phase
            ev = conn.next_event()
            if ev is NEED_DATA or ev is CLOSED:
                break
            assert ev is not PAUSED and isinstance(ev, Event)
            if isinstance(ev, MessageData):
                if phase is Phase.DATA and opts.forbid_bare_newline:
                    n = ev.chunk.count(b"\r\n")
                    assert ev.chunk.count(b"\n") == n == ev.chunk.count(b"\r"), ev.chunk
                continue
            if isinstance(ev, ConnectionClosed):
                break
            assert conn.next_event() is PAUSED
            out = conn.send(reply_for(conn, ev))
            assert out.endswith(b"\r\n")
            if conn.phase is Phase.TLS:
                conn.tls_established()
        if conn.closed:
            break
    text = body.decode("utf-8", "replace")
    for utf8 in (False, True):
        try:
            path = parse_path(text, smtputf8=utf8, allow_postmaster=utf8)
        except AddressError:
            pass
        else:
            again = parse_path(f"<{path.address}>", smtputf8=True, allow_postmaster=True)
            assert (again.local, again.domain) == (path.local, path.domain)
    for parse in (parse_mail_params, parse_rcpt_params):
        try:
            parse(text.split())
        except ParamError:
            pass


def TestOneInput(data: bytes) -> None:  # atheris' required name
    drive(data)


FRAGMENTS = [
    b"EHLO x\r\n", b"HELO x\r\n", b"MAIL FROM:<a@b.example>\r\n", b"MAIL FROM:<> SIZE=10\r\n",
    b"RCPT TO:<c@d.example>\r\n", b"RCPT TO:<\"q\"@[1.2.3.4]> NOTIFY=NEVER\r\n", b"DATA\r\n",
    b"BDAT 5\r\n", b"BDAT 3 LAST\r\n", b"BDAT 0 LAST\r\n", b"STARTTLS\r\n", b"AUTH PLAIN\r\n",
    b"RSET\r\n", b"NOOP\r\n", b"QUIT\r\n", b".\r\n", b"..\r\n", b"\r\n.\r\n", b"\n.\n", b"\r.\r\n",
    b"\r", b"\n", b"\x00", b"\xff", b"GET / HTTP/1.0\r\n", b"x" * 600,
    "MAIL FROM:<jörg@x> SMTPUTF8\r\n".encode(), b"y" * 1100, b"hello world\r\n",
]  # fmt: skip


def random_input(rng: random.Random) -> bytes:
    parts = [bytes(rng.randrange(256) for _ in range(3))]
    for _ in range(rng.randrange(12)):
        if rng.random() < 0.8:
            parts.append(rng.choice(FRAGMENTS))
        else:
            parts.append(rng.randbytes(rng.randrange(20)))
    return b"".join(parts)


def main(argv: list[str]) -> int:
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        iterations = int(argv[1]) if len(argv) > 1 else 5000
        rng = random.Random(int(argv[2]) if len(argv) > 2 else 0)
        for _ in range(iterations):
            TestOneInput(random_input(rng))
        print(f"fuzz_protocol: {iterations} random inputs, no failure")
        return 0
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
