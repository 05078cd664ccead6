"""One mail transaction (MAIL … end of DATA) and its conversion into a queue envelope.

Owns the body buffer: chunks as the protocol hands them over, joined once at the
end (no per-chunk copying), and the recipients as accepted, each with its
alias-expanded final addresses. Duplicates after expansion are queued once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ironpost.queue.model import ClientInfo, Envelope, RecipientSpec


@dataclass(slots=True)
class AcceptedRecipient:
    address: str
    expanded: list[str]
    notify: tuple[str, ...] | None
    orcpt: str | None


@dataclass(slots=True)
class Transaction:
    sender: str
    size_hint: int | None
    body_type: str | None
    smtputf8: bool
    ret: str | None
    envid: str | None
    recipients: list[AcceptedRecipient] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    rejected: int = 0

    def add_chunk(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)

    def content(self, header: bytes) -> bytes:
        return header + b"".join(self.chunks)

    def head(self, limit: int = 1 << 20) -> bytes:
        """The message's header section (at most ``limit`` octets), without joining the body."""
        buf = bytearray()
        for chunk in self.chunks:
            buf += chunk
            if buf.startswith(b"\r\n") or b"\r\n\r\n" in buf or len(buf) >= limit:
                break
        if buf.startswith(b"\r\n"):
            return b""
        end = buf.find(b"\r\n\r\n")
        return bytes(buf if end < 0 else buf[: end + 2])

    def envelope(self, client: ClientInfo, size: int, arrival: float) -> Envelope:
        seen: set[str] = set()
        specs: list[RecipientSpec] = []
        for rcpt in self.recipients:
            for final in rcpt.expanded:
                key = final.lower()
                if key in seen:
                    continue
                seen.add(key)
                specs.append(
                    RecipientSpec(
                        address=final,
                        original=rcpt.address,
                        notify=rcpt.notify,
                        orcpt=rcpt.orcpt,
                    )
                )
        return Envelope(
            sender=self.sender,
            recipients=tuple(specs),
            size=size,
            body_type=self.body_type,
            smtputf8=self.smtputf8,
            ret=self.ret,
            envid=self.envid,
            client=client,
            arrival=arrival,
        )
