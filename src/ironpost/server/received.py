"""The Received header we prepend to every accepted message (RFC 5321 §4.4).

Shape follows Postfix, so that header parsers and humans recognise it::

    Received: from helo.example (client.example [192.0.2.1])
    \t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))
    \tby mail.example.org (ironpost) with ESMTPS id 4XyZ…
    \tfor <user@example.org>; Mon, 23 Nov 2026 10:00:00 +0000

Everything the client chose (HELO, addresses) is sanitised: it cannot inject a
header line or a comment terminator.
"""

from __future__ import annotations

import email.utils
import re

_UNSAFE = re.compile(r"[^\x21-\x7e\u0080-\U0010ffff]|[()\\]")


def _clean(text: str, limit: int = 255) -> str:
    return _UNSAFE.sub("_", text[:limit]) or "unknown"


def received_header(
    *,
    helo: str | None,
    client_name: str,
    client_address: str,
    tls: str | None,
    hostname: str,
    protocol: str,
    queue_id: str,
    recipient: str | None,
    now: float,
) -> bytes:
    name = _clean(client_name)
    lines = [f"Received: from {_clean(helo or client_name)} ({name} [{client_address}])"]
    if tls:
        lines.append(f"\t(using {tls})")
    lines.append(f"\tby {hostname} (ironpost) with {protocol} id {queue_id}")
    date = email.utils.formatdate(now, localtime=False, usegmt=False)
    if recipient is not None:
        lines.append(f"\tfor <{_clean(recipient, 320)}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def count_received(content: bytes) -> int:
    """Number of Received headers in the header section of ``content`` (for hopcount_limit)."""
    if content.startswith(b"\r\n"):
        return 0  # an empty header section
    end = content.find(b"\r\n\r\n")
    head = content if end < 0 else content[: end + 2]
    head = b"\r\n" + head.lower()
    return head.count(b"\r\nreceived:")
