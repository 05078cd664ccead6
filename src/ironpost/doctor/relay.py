"""The live open-relay self-test: the classic relay battery against our own listener.

Owns :func:`relay_battery` (the recipients: plain foreign domain, percent hack, bang
paths, quoted local parts holding ``@``, source routes, ``user@foreign@ours``, foreign
address literals), :func:`run_battery` (the SMTP dialogue) and :func:`check_relay`.

The test speaks as a stranger: from ``--source`` (a local address outside mynetworks),
else from whatever address the system picks, and then only judges when that address is
outside mynetworks. Invariants: it never sends DATA (QUIT follows the last RCPT, so no
mail can ever leave); every RCPT must be refused (4xx or 5xx); a 2xx is relaying.
Recipients go in batches of :data:`BATCH`, one session each, to stay under
``smtpd_soft_error_limit`` (10) so that the server's error delays do not slow the test.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from ironpost.doctor.check import Check, failed, passed, warned

FAMILY = "relay"
BATCH = 8
FOREIGN = "example.com"
FOREIGN_LITERAL = "[203.0.113.7]"  # TEST-NET-3: an address that is never ours


def relay_battery(ours: str, our_literal: str, foreign: str = FOREIGN) -> list[str]:
    """Recipients (with brackets) that hide ``foreign`` behind our domain or address."""
    f, o, ip = foreign, ours, our_literal
    return [
        f"<victim@{f}>",
        f"<victim%{f}@{o}>",
        f"<victim%{f}@{ip}>",
        f'<"victim@{f}">',
        f"<victim@{f}@{o}>",
        f'<"victim@{f}"@{o}>',
        f'<"victim@{f}"@{ip}>',
        f"<@{o}:victim@{f}>",
        f"<@{ip}:victim@{f}>",
        f"<@{o},@{o}:victim@{f}>",
        f"<{f}!victim>",
        f"<{f}!victim@{o}>",
        f"<{f}!victim@{ip}>",
        f"<victim%{f}>",
        f'<"victim%{f}"@{o}>',
        f"<{o}!{f}!victim@{o}>",
        f"<victim@{f}.>",
        f"<VICTIM@{f.upper()}>",
        f"<postmaster@{FOREIGN_LITERAL}>",
    ]


@dataclass(frozen=True, slots=True)
class Attempt:
    recipient: str
    reply: str  # the reply's first line

    @property
    def accepted(self) -> bool:
        return self.reply[:1] == "2"


@dataclass(frozen=True, slots=True)
class Outcome:
    attempts: tuple[Attempt, ...]
    source: str  # the local address the sessions came from
    error: str | None = None  # the battery could not run to its end


class _Refused(Exception):
    pass


async def _reply(reader: asyncio.StreamReader, timeout: float) -> str:
    lines = []
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise _Refused("connection closed")
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        lines.append(text)
        if len(text) < 4 or text[3] != "-":
            return lines[0][:3] + " " + " ".join(t[4:] for t in lines)[:300]


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str, timeout: float
) -> str:
    writer.write(line.encode() + b"\r\n")
    await writer.drain()
    return await _reply(reader, timeout)


async def _session(
    host: str,
    port: int,
    source: str | None,
    helo: str,
    sender: str,
    recipients: Sequence[str],
    timeout: float,
) -> tuple[list[Attempt], str]:
    local = (source, 0) if source else None
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, local_addr=local), timeout
    )
    try:
        used = str(writer.get_extra_info("sockname")[0])
        banner = await _reply(reader, timeout)
        if not banner.startswith("2"):
            raise _Refused(f"greeting: {banner}")
        hello = await _command(reader, writer, f"EHLO {helo}", timeout)
        if not hello.startswith("2"):
            hello = await _command(reader, writer, f"HELO {helo}", timeout)
            if not hello.startswith("2"):
                raise _Refused(f"HELO {helo}: {hello}")
        mail = await _command(reader, writer, f"MAIL FROM:{sender}", timeout)
        if not mail.startswith("2"):
            raise _Refused(f"MAIL FROM:{sender}: {mail}")
        attempts = []
        for rcpt in recipients:
            reply = await _command(reader, writer, f"RCPT TO:{rcpt}", timeout)
            attempts.append(Attempt(rcpt, reply))
        # Never DATA: whatever was accepted, nothing is sent.
        writer.write(b"QUIT\r\n")
        await writer.drain()
        return attempts, used
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


async def run_battery(
    host: str,
    port: int,
    recipients: Sequence[str],
    *,
    source: str | None = None,
    helo: str = "relay-test.invalid",
    sender: str = "<>",
    timeout: float = 30.0,
) -> Outcome:
    """Try every recipient; never raises (a failure to talk is ``Outcome.error``)."""
    attempts: list[Attempt] = []
    used = source or ""
    for start in range(0, len(recipients), BATCH):
        batch = recipients[start : start + BATCH]
        try:
            found, used = await _session(host, port, source, helo, sender, batch, timeout)
        except _Refused as exc:
            return Outcome(tuple(attempts), used, str(exc))
        except (OSError, TimeoutError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            return Outcome(tuple(attempts), used, f"cannot talk to {host}:{port}: {why}")
        attempts.extend(found)
    return Outcome(tuple(attempts), used)


def judge(outcome: Outcome, target: str, *, source_trusted: bool, source_explicit: bool) -> Check:
    """One Check for the battery. ``source_trusted``: the source is in mynetworks."""
    title = f"open relay test {target}"
    accepted = [a for a in outcome.attempts if a.accepted]
    fix = (
        "check smtpd_relay_restrictions (permit_mynetworks, permit_sasl_authenticated, "
        "reject_unauth_destination) and mynetworks; then rerun `ironpost doctor`"
    )
    if source_trusted and not source_explicit:
        return warned(
            FAMILY,
            title,
            f"the test came from {outcome.source}, which is in mynetworks (and may relay)",
            "rerun with --source ADDR, a local address outside mynetworks",
        )
    if accepted:
        shown = ", ".join(f"{a.recipient} ({a.reply[:40]})" for a in accepted[:4])
        more = f" and {len(accepted) - 4} more" if len(accepted) > 4 else ""
        note = f" ({outcome.source} is in mynetworks)" if source_trusted else ""
        return failed(
            FAMILY,
            title,
            f"OPEN RELAY: {len(accepted)} of {len(outcome.attempts)} relay attempts from "
            f"{outcome.source}{note} were accepted: {shown}{more}",
            fix,
        )
    if outcome.error is not None:
        return warned(
            FAMILY,
            title,
            f"inconclusive after {len(outcome.attempts)} attempts: {outcome.error}",
            "make the listener reachable from --source ADDR, or rerun with --relay-test HOST:PORT",
        )
    return passed(
        FAMILY,
        title,
        f"all {len(outcome.attempts)} relay attempts from {outcome.source} were refused",
    )


def literal(host: str) -> str:
    """``[192.0.2.1]`` / ``[IPv6:2001:db8::1]`` for an address, else the name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    return f"[IPv6:{address}]" if address.version == 6 else f"[{address}]"
