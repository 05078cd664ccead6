"""One mail transaction (MAIL … end of DATA) and its conversion into a queue envelope.

Owns the body buffer: chunks as the protocol hands them over (each already the one
copy the framer made; no per-chunk copying here), and the recipients as accepted, each
with its alias-expanded final addresses. Duplicates after expansion are queued once.

Invariants: the body is joined at most once, together with whatever goes in front of
it (:meth:`Transaction.take_content`), and the chunks are dropped as it is, so that a
message waiting for its commit is held in memory once, not twice; reading the header
section never copies more than the header section.
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

    def content(self, *prefix: bytes) -> bytes:
        """``prefix`` then the body, in one copy; the chunks are kept."""
        return b"".join([*prefix, *self.chunks])

    def take_content(self, *prefix: bytes) -> bytes:
        """``prefix`` then the body, in one copy, and the chunks dropped: from here on the
        returned bytes are the only copy of the body (the transaction's body is empty)."""
        chunks, self.chunks = self.chunks, []
        if not prefix and len(chunks) == 1:
            return chunks[0]  # nothing to join: the framer's chunk is the message
        return b"".join([*prefix, *chunks])

    def head(self, limit: int = 1 << 20) -> bytes:
        """The message's header section (at most ``limit`` octets), without joining the body.

        Usually the first chunk holds it all and only the header section is copied; a
        header section spread over chunks is gathered up to its end (or ``limit``).
        """
        chunks = self.chunks
        if not chunks:
            return b""
        first = chunks[0]
        if first.startswith(b"\r\n"):
            return b""
        end = first.find(b"\r\n\r\n", 0, limit + 2)
        if end >= 0:
            return first[: end + 2]
        if len(chunks) == 1 or len(first) >= limit:
            return first[:limit]
        buf = bytearray()
        for chunk in chunks:
            # Only the tail of what was gathered can start a blank line split by a chunk.
            at = max(len(buf) - 3, 0)
            buf += chunk[: limit - len(buf)]
            if buf.startswith(b"\r\n"):
                return b""
            end = buf.find(b"\r\n\r\n", at)
            if end >= 0:
                del buf[end + 2 :]
                return bytes(buf)
            if len(buf) >= limit:
                break
        return bytes(buf)

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
