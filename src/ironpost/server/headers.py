"""What the server reads and adds in a message's header section at the end of DATA.

Owns three small jobs on the raw bytes (no full MIME parse: the body is never touched):

* finding the header section and a header's unfolded value;
* the missing ``Date:`` and ``Message-ID:`` that Postfix's cleanup adds for mail from
  its own users (``always_add_missing_headers`` extends it to everyone);
* the addresses in ``From:``, for the check against smtpd_sender_login_maps.

Invariant: added headers are built from our own values only (host name, queue id,
clock), never from anything the client sent.
"""

from __future__ import annotations

import email.utils
import time


def header_section(content: bytes) -> bytes:
    """The header lines, each ending in CRLF (empty when the message has no headers)."""
    if content.startswith(b"\r\n"):
        return b""
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[: end + 2]


def header_values(head: bytes, name: bytes) -> list[str]:
    """Unfolded values of every ``name:`` header in ``head`` (name matched case-insensitively)."""
    wanted = name.lower() + b":"
    values: list[str] = []
    current: list[bytes] | None = None
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                current.append(line)
            continue
        if current is not None:
            values.append(b"".join(current).decode("utf-8", "replace").strip())
            current = None
        if line[: len(wanted)].lower() == wanted:
            current = [line[len(wanted) :]]
    if current is not None:
        values.append(b"".join(current).decode("utf-8", "replace").strip())
    return values


def has_header(head: bytes, name: bytes) -> bool:
    low = b"\r\n" + head.lower()
    return (b"\r\n" + name.lower() + b":") in low


def missing_headers(head: bytes, *, hostname: str, queue_id: str, now: float) -> bytes:
    """``Date:`` and ``Message-ID:`` lines for those ``head`` lacks (b"" if none)."""
    out = b""
    if not has_header(head, b"date"):
        out += f"Date: {email.utils.formatdate(now, localtime=True)}\r\n".encode("ascii")
    if not has_header(head, b"message-id"):
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))
        out += f"Message-Id: <{stamp}.{queue_id}@{hostname}>\r\n".encode()
    return out


def from_addresses(head: bytes) -> list[str]:
    """The addresses in every ``From:`` header (display names dropped)."""
    values = header_values(head, b"from")
    return [addr for _name, addr in email.utils.getaddresses(values) if addr]
