"""A scripted, recording transport for queue manager tests.

It satisfies :class:`ironpost.delivery.transport.Transport`: each ``deliver`` call is
recorded, and the results come from a script function, so that a test can make a
destination fail, defer, bounce or go slow without a network.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ironpost.delivery.transport import (
    BatchRecipient,
    DeliveryRequest,
    Disposition,
    RecipientResult,
)

Script = Callable[[DeliveryRequest, BatchRecipient], RecipientResult]


def accept(request: DeliveryRequest, rcpt: BatchRecipient) -> RecipientResult:
    return RecipientResult(
        rcpt.index,
        Disposition.SENT,
        "2.0.0",
        "250 2.0.0 Ok: queued",
        f"{request.nexthop.nexthop}[127.0.0.1]:25",
    )


def reply(code: int, dsn: str, text: str, *, dead: bool = False) -> Script:
    """Every recipient gets this reply; ``dead`` marks a connection-level failure."""
    disposition = (
        Disposition.SENT
        if code < 400
        else Disposition.DEFERRED
        if code < 500
        else Disposition.BOUNCED
    )

    def script(request: DeliveryRequest, rcpt: BatchRecipient) -> RecipientResult:
        host = request.nexthop.nexthop
        said = f"host {host}[127.0.0.1] said: {code} {dsn} {text} (in reply to RCPT TO command)"
        return RecipientResult(
            rcpt.index,
            disposition,
            dsn,
            f"connect to {host}[127.0.0.1]:25: Connection refused" if dead else said,
            "none" if dead else f"{host}[127.0.0.1]:25",
            destination_failed=dead,
        )

    return script


class RecordingTransport:
    def __init__(self, script: Script = accept, *, delay: float = 0.0) -> None:
        self.script = script
        self.delay = delay
        self.requests: list[DeliveryRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return [self.script(request, r) for r in request.recipients]
        finally:
            self.in_flight -= 1

    async def close(self) -> None:
        self.closed = True
