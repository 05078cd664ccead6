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
    authenticated: str | None = None,
    hide_client: bool = False,
) -> bytes:
    """``hide_client`` (an authenticated user's privacy) leaves out the HELO name, the
    client's host name and its address; ``authenticated`` names the login, as Postfix's
    smtpd_sasl_authenticated_header does."""
    lines: list[str] = []
    if not hide_client:  # as Gmail does for submissions: a "by" clause only
        name = _clean(client_name)
        lines.append(f"from {_clean(helo or client_name)} ({name} [{client_address}])")
    if authenticated is not None:
        lines.append(f"(Authenticated sender: {_clean(authenticated, 320)})")
    if tls:
        lines.append(f"(using {tls})")
    lines.append(f"by {hostname} (ironpost) with {protocol} id {queue_id}")
    lines = [f"Received: {lines[0]}", *(f"\t{line}" for line in lines[1:])]
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
