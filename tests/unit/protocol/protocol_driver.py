"""Test driver for ServerConnection: feeds bytes, answers every event, records all."""

from __future__ import annotations

import re

from ironpost.protocol import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    Auth,
    AuthResponse,
    BdatChunk,
    ConnectionClosed,
    Data,
    EarlyTalker,
    Event,
    Expn,
    Helo,
    Help,
    Mail,
    MessageData,
    MessageEnd,
    Noop,
    ProtocolError,
    Quit,
    Rcpt,
    Reply,
    Rset,
    ServerConnection,
    ServerOptions,
    StartTls,
    Vrfy,
    replies,
)

GREETING = Reply(220, None, "mx.example ESMTP")
_CODE = re.compile(rb"^(\d{3}) ", re.M)


class Driver:
    def __init__(
        self,
        options: ServerOptions | None = None,
        *,
        greet: bool = True,
        overrides: dict[type[Event], Reply] | None = None,
    ) -> None:
        self.conn = ServerConnection(options)
        self.events: list[Event] = []
        self.out = bytearray()
        self.overrides = overrides or {}
        if greet:
            self.out += self.conn.send_greeting(GREETING)

    def reply_for(self, ev: Event) -> Reply | None:
        if type(ev) in self.overrides:
            return self.overrides[type(ev)]
        match ev:
            case MessageData() | ConnectionClosed():
                return None
            case Helo(extended=True):
                return Reply(250, None, ("mx.example", *self.conn.ehlo_keywords()))
            case Helo():
                return Reply(250, None, "mx.example")
            case Mail():
                return replies.SENDER_OK
            case Rcpt():
                return replies.RECIPIENT_OK
            case Data():
                return replies.START_DATA
            case MessageEnd(error=err):
                return err if err is not None else replies.OK
            case BdatChunk():
                return replies.OK
            case Rset():
                return replies.RESET_OK
            case Noop():
                return replies.NOOP_OK
            case Quit():
                return replies.BYE
            case StartTls():
                return replies.READY_TLS
            case ProtocolError(reply=r):
                return r
            case EarlyTalker():
                return replies.EARLY_TALKER
            case Vrfy() | Expn():
                return replies.VRFY_DISABLED
            case Help():
                return replies.HELP
            case Auth():
                return Reply(334, None, "")
            case AuthResponse():
                return Reply(235, "2.7.0", "Authentication successful")
        raise AssertionError(ev)

    def feed(self, data: bytes) -> list[Event]:
        self.conn.receive_data(data)
        return self.pump()

    def pump(self) -> list[Event]:
        new: list[Event] = []
        while True:
            ev = self.conn.next_event()
            if ev is NEED_DATA or ev is CLOSED:
                break
            assert ev is not PAUSED, "driver always replies"
            assert isinstance(ev, Event)
            new.append(ev)
            reply = self.reply_for(ev)
            if reply is not None:
                self.out += self.conn.send(reply)
        self.events += new
        return new

    @property
    def body(self) -> bytes:
        return b"".join(e.chunk for e in self.events if isinstance(e, MessageData))

    def ends(self) -> list[MessageEnd]:
        return [e for e in self.events if isinstance(e, MessageEnd)]

    def errors(self) -> list[ProtocolError]:
        return [e for e in self.events if isinstance(e, ProtocolError)]

    def codes(self) -> list[int]:
        return [int(m) for m in _CODE.findall(bytes(self.out))]

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events if not isinstance(e, MessageData)]
