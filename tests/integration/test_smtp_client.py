"""The SMTP/LMTP delivery agent against real peers on loopback: smtp-sink (faults, LMTP,
connection reuse), ironpost's own server (STARTTLS at every level), and tiny hostile
asyncio servers (malformed replies, silence)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from mta_harness import HOST, Mta

from ironpost.delivery.smtp import SmtpOptions, SmtpTransport
from ironpost.delivery.transport import (
    BatchRecipient,
    DeliveryRequest,
    Disposition,
    NextHop,
    RecipientResult,
)
from ironpost.dns.types import MxRecord, Result, Status
from ironpost.maillog import MailLog
from ironpost.queue.model import ClientInfo, Envelope, RecipientSpec

pytestmark = pytest.mark.integration

SINK = "/usr/sbin/smtp-sink"
CONTENT = b"Subject: test\r\n\r\n.leading dot\r\nline\r\n..two\r\n"


class Resolver:
    """Fixed answers for names the test chooses; everything else is NXDOMAIN."""

    def __init__(
        self, mx: dict[str, list[MxRecord]] | None = None, a: dict[str, list[str]] | None = None
    ) -> None:
        self._mx = mx or {}
        self._a = a or {}

    async def mx(self, name: str) -> Result[MxRecord]:
        if name in self._mx:
            return Result(Status.ANSWER, tuple(self._mx[name]))
        return Result(Status.NODATA if name in self._a else Status.NXDOMAIN)

    async def a(self, name: str) -> Result[str]:
        if name in self._a:
            return Result(Status.ANSWER, tuple(self._a[name]))
        return Result(Status.NXDOMAIN)

    async def aaaa(self, name: str) -> Result[str]:
        return Result(Status.NODATA if name in self._a else Status.NXDOMAIN)

    async def txt(self, name: str) -> Result[str]:
        return Result(Status.NXDOMAIN)

    async def ptr(self, address: str) -> Result[str]:
        return Result(Status.NXDOMAIN)


def request(
    nexthop: str,
    *rcpts: str,
    transport: str = "smtp",
    content: bytes = CONTENT,
    smtputf8: bool = False,
) -> DeliveryRequest:
    rcpts = rcpts or ("alice@example.test",)
    specs = tuple(RecipientSpec(r, r) for r in rcpts)
    env = Envelope(
        sender="sender@origin.test",
        recipients=specs,
        size=len(content),
        body_type=None,
        smtputf8=smtputf8,
        ret=None,
        envid=None,
        client=ClientInfo("127.0.0.1", "localhost", "localhost", "ESMTP"),
        arrival=time.time(),
    )
    return DeliveryRequest(
        queue_id="4ABCDEF",
        envelope=env,
        recipients=tuple(BatchRecipient(i, s) for i, s in enumerate(specs)),
        content=content,
        nexthop=NextHop(transport, nexthop),
    )


def options(**kw: object) -> SmtpOptions:
    base: dict[str, object] = {
        "helo_name": "client.origin.test",
        "connect_timeout": 5.0,
        "helo_timeout": 5.0,
        "mail_timeout": 10.0,
        "rcpt_timeout": 10.0,
        "data_init_timeout": 10.0,
        "data_xfer_timeout": 10.0,
        "data_done_timeout": 10.0,
        "rset_timeout": 5.0,
        "quit_timeout": 5.0,
        "tls_level": "none",
        "inet_protocols": "ipv4",
    }
    base.update(kw)
    return SmtpOptions(**base)  # type: ignore[arg-type]


def run(
    fn: Callable[[SmtpTransport], Awaitable[object]],
    opts: SmtpOptions | None = None,
    resolver: Resolver | None = None,
    maillog: MailLog | None = None,
) -> object:
    async def main() -> object:
        transport = SmtpTransport(resolver or Resolver(), opts or options(), maillog=maillog)
        try:
            return await fn(transport)
        finally:
            await transport.close()

    return asyncio.run(main())


def deliver(
    req: DeliveryRequest, opts: SmtpOptions | None = None, **kw: object
) -> list[RecipientResult]:
    return run(lambda t: t.deliver(req), opts, **kw)  # type: ignore[return-value,arg-type]


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Sink:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, dump: Path, out: Path) -> None:
        self.proc, self.port, self.dump, self.out = proc, port, dump, out

    def messages(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.dump.iterdir())] if self.dump.exists() else []

    def counters(self) -> str:
        found = re.findall(r"sess=\d+ quit=\d+ mesg=\d+", self.out.read_text(errors="replace"))
        return found[-1] if found else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=5)


@pytest.fixture
def sink_factory(tmp_path: Path) -> Iterator[Callable[..., Sink]]:
    started: list[Sink] = []
    dumps: list[Path] = []

    def start(
        *args: str, host: str = HOST, unix: str | None = None, port: int | None = None
    ) -> Sink:
        n = len(started)
        # smtp-sink runs as nobody when we are root: its dump dir must be reachable, and
        # tmp_path's parents are 0700.
        dump = Path(tempfile.mkdtemp(prefix="ironpost-sink-"))
        os.chmod(dump, 0o777)
        dumps.append(dump)
        out = tmp_path / f"sink{n}.out"
        port = port or free_port(host)
        listen = f"unix:{unix}" if unix else f"{host}:{port}"
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        with open(out, "wb") as fh:
            proc = subprocess.Popen(
                [SINK, *user, "-c", "-d", f"{dump}/%M.", *args, listen, "50"],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                if unix:
                    with socket.socket(socket.AF_UNIX) as s:
                        s.connect(unix)
                else:
                    socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.02)
        sink = Sink(proc, port, dump, out)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()
    for dump in dumps:
        shutil.rmtree(dump, ignore_errors=True)


# --- smtp-sink: delivery, reuse, faults ---------------------------------------------------


def test_delivery_dot_stuffing_and_connection_reuse(sink_factory: Callable[..., Sink]) -> None:
    sink = sink_factory()
    nexthop = f"[127.0.0.1]:{sink.port}"

    async def two(t: SmtpTransport) -> tuple[list[RecipientResult], list[RecipientResult], int]:
        first = await t.deliver(request(nexthop, "a@x.test", "b@x.test"))
        second = await t.deliver(request(nexthop, "c@x.test"))
        return first, second, t.connections

    first, second, connections = run(two)  # type: ignore[misc]
    assert [r.disposition for r in first + second] == [Disposition.SENT] * 3
    assert first[0].relay == f"127.0.0.1[127.0.0.1]:{sink.port}"
    assert first[0].reply.startswith("250") and first[0].dsn == "2.0.0"
    assert connections == 1
    time.sleep(0.3)
    # Two sessions: the fixture's readiness probe and ours, which carried both messages.
    assert sink.counters() == "sess=2 quit=1 mesg=2"
    msgs = sink.messages()
    assert len(msgs) == 2
    assert (
        b"X-Rcpt-Args: <a@x.test>\nX-Rcpt-Args: <b@x.test>\n" in msgs[0] or b"<a@x.test>" in msgs[1]
    )
    body = msgs[0].split(b"Subject: test\n", 1)[1]
    assert body.startswith(b"\n.leading dot\nline\n..two\n")  # unstuffed by the peer


def test_rcpt_rejected_5xx_bounces_with_postfix_text(sink_factory: Callable[..., Sink]) -> None:
    sink = sink_factory("-f", "RCPT")
    [result] = deliver(request(f"[127.0.0.1]:{sink.port}"))
    assert result.disposition is Disposition.BOUNCED
    assert result.dsn == "5.3.0"
    assert result.reply == (
        "host 127.0.0.1[127.0.0.1] said: 500 5.3.0 Error: command failed "
        "(in reply to RCPT TO command)"
    )


def test_mail_rejected_4xx_defers(sink_factory: Callable[..., Sink]) -> None:
    sink = sink_factory("-r", "MAIL")
    results = deliver(request(f"[127.0.0.1]:{sink.port}", "a@x.test", "b@x.test"))
    assert [r.disposition for r in results] == [Disposition.DEFERRED] * 2
    assert results[0].dsn == "4.3.0" and "(in reply to MAIL FROM command)" in results[0].reply
    assert not results[0].destination_failed


def test_end_of_data_rejected(sink_factory: Callable[..., Sink]) -> None:
    sink = sink_factory("-f", ".")
    [result] = deliver(request(f"[127.0.0.1]:{sink.port}"))
    assert result.disposition is Disposition.BOUNCED
    assert "(in reply to end of DATA command)" in result.reply


def test_no_pipelining_and_helo_fallback(sink_factory: Callable[..., Sink]) -> None:
    sink = sink_factory("-p", "-f", "EHLO")
    results = deliver(request(f"[127.0.0.1]:{sink.port}", "a@x.test", "b@x.test"))
    assert [r.disposition for r in results] == [Disposition.SENT] * 2
    [msg] = sink.messages()
    assert b"X-Client-Proto: SMTP\n" in msg and b"X-Helo-Args: client.origin.test" in msg


def test_421_greeting_goes_to_next_mx(sink_factory: Callable[..., Sink]) -> None:
    bad = sink_factory("-Q", "CONNECT", host="127.0.0.2")
    # A destination's MX hosts listen on the same port.
    good = sink_factory(host="127.0.0.3", port=bad.port)
    resolver = Resolver(
        mx={"dest.test": [MxRecord(10, "mx1.dest.test"), MxRecord(20, "mx2.dest.test")]},
        a={"mx1.dest.test": ["127.0.0.2"], "mx2.dest.test": ["127.0.0.3"]},
    )
    [result] = deliver(request(f"dest.test:{bad.port}"), resolver=resolver)
    assert result.disposition is Disposition.SENT, result.reply
    assert result.relay == f"mx2.dest.test[127.0.0.3]:{bad.port}"
    assert len(good.messages()) == 1 and bad.messages() == []
    # With only the 421 host, the mail is deferred with its words.
    only_bad = Resolver(mx={"dest.test": [MxRecord(10, "mx1.dest.test")]}, a=resolver._a)
    [result] = deliver(request(f"dest.test:{bad.port}"), resolver=only_bad)
    assert result.disposition is Disposition.DEFERRED
    assert "host mx1.dest.test[127.0.0.2] refused to talk to me: 421" in result.reply
    assert not result.destination_failed


def test_refused_mx_falls_back_to_second_mx(sink_factory: Callable[..., Sink]) -> None:
    good = sink_factory(host="127.0.0.3")
    resolver = Resolver(
        mx={"dest.test": [MxRecord(10, "mx1.dest.test"), MxRecord(20, "mx2.dest.test")]},
        a={"mx1.dest.test": ["127.0.0.2"], "mx2.dest.test": ["127.0.0.3"]},
    )
    [result] = deliver(request(f"dest.test:{good.port}"), resolver=resolver)
    assert result.disposition is Disposition.SENT
    assert result.relay == f"mx2.dest.test[127.0.0.3]:{good.port}"
    assert len(good.messages()) == 1


def test_no_mx_reachable_marks_destination_failed() -> None:
    port = free_port()
    [result] = deliver(request(f"[127.0.0.1]:{port}"))
    assert result.disposition is Disposition.DEFERRED and result.dsn == "4.4.1"
    assert result.reply == f"connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused"
    assert result.destination_failed and result.relay == "none"


def test_null_mx_and_nxdomain_bounce_without_connecting() -> None:
    resolver = Resolver(mx={"null.test": [MxRecord(0, "")]})
    [null] = deliver(request("null.test"), resolver=resolver)
    assert (null.disposition, null.dsn) == (Disposition.BOUNCED, "5.1.10")
    [nx] = deliver(request("nowhere.test"), resolver=resolver)
    assert (nx.disposition, nx.dsn) == (Disposition.BOUNCED, "5.1.2")


def test_smtputf8_required_but_not_offered_bounces_5_6_7(sink_factory: Callable[..., Sink]) -> None:
    sink = sink_factory()
    [result] = deliver(request(f"[127.0.0.1]:{sink.port}", "ü@x.test", smtputf8=True))
    assert (result.disposition, result.dsn) == (Disposition.BOUNCED, "5.6.7")
    assert result.reply == "SMTPUTF8 is required, but was not offered by host 127.0.0.1[127.0.0.1]"
    assert sink.messages() == []


def test_encrypt_without_starttls_defers(sink_factory: Callable[..., Sink]) -> None:
    sink = sink_factory()
    [result] = deliver(request(f"[127.0.0.1]:{sink.port}"), options(tls_level="encrypt"))
    assert (result.disposition, result.dsn) == (Disposition.DEFERRED, "4.7.4")
    assert "TLS is required, but was not offered" in result.reply
    assert sink.messages() == []


# --- LMTP -----------------------------------------------------------------------------------


def test_lmtp_inet_and_unix(sink_factory: Callable[..., Sink], tmp_path: Path) -> None:
    sink = sink_factory("-L")
    opts = options(lmtp=True)
    results = deliver(
        request(f"inet:127.0.0.1:{sink.port}", "a@x.test", "b@x.test", transport="lmtp"), opts
    )
    assert [r.disposition for r in results] == [Disposition.SENT] * 2
    assert b"X-Client-Proto: LMTP" in sink.messages()[0]
    path = str(tmp_path / "lmtp.sock")
    usink = sink_factory("-L", unix=path)
    [result] = deliver(request(f"unix:{path}", transport="lmtp"), opts)
    assert result.disposition is Disposition.SENT
    assert result.relay == f"localhost[{path}]"
    assert len(usink.messages()) == 1


def test_lmtp_rejected_end_of_data_per_recipient(sink_factory: Callable[..., Sink]) -> None:
    sink = sink_factory("-L", "-r", ".")
    results = deliver(
        request(f"inet:127.0.0.1:{sink.port}", "a@x.test", "b@x.test", transport="lmtp"),
        options(lmtp=True),
    )
    assert [r.disposition for r in results] == [Disposition.DEFERRED] * 2
    assert all("(in reply to end of DATA command)" in r.reply for r in results)


# --- hostile and silent peers ------------------------------------------------------------------


async def _serve(script: bytes, *, silent: bool = False) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if silent:
                await asyncio.sleep(30)
            writer.write(script)
            await writer.drain()
            while await reader.read(65536):
                pass
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, HOST, 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    "script",
    [
        b"220-" + b"x" * 100_000,  # endless line
        b"220-hi\r\n" * 5000,  # endless multi-line reply
        b"220 hi\n",  # bare LF
        b"220-hi\r\n550 mixed\r\n",  # codes change
        b"220 \x00\xff\r\n",  # garbage
    ],
)
def test_hostile_greeting_defers_never_crashes(script: bytes) -> None:
    async def main(t: SmtpTransport) -> list[RecipientResult]:
        server, port = await _serve(script)
        async with server:
            return await t.deliver(request(f"[127.0.0.1]:{port}"))

    [result] = run(main)  # type: ignore[misc]
    assert result.disposition is Disposition.DEFERRED
    assert result.dsn == "4.5.0" and "bad reply" in result.reply


def test_silent_peer_times_out() -> None:
    async def main(t: SmtpTransport) -> tuple[list[RecipientResult], float]:
        server, port = await _serve(b"", silent=True)
        async with server:
            start = time.monotonic()
            results = await t.deliver(request(f"[127.0.0.1]:{port}"))
            return results, time.monotonic() - start

    [result], elapsed = run(main, options(helo_timeout=0.5))  # type: ignore[misc]
    assert elapsed < 3
    assert (result.disposition, result.dsn) == (Disposition.DEFERRED, "4.4.2")
    assert result.reply == (
        "conversation with 127.0.0.1[127.0.0.1] timed out "
        "while receiving the initial server greeting"
    )


# --- TLS against ironpost's own server ------------------------------------------------------------


def _mx_resolver(mta: Mta) -> Resolver:
    return Resolver(a={"mail.example.test": ["127.0.0.1"]})


def test_tls_may_uses_starttls_and_logs(mta: Mta, tmp_path: Path) -> None:
    log_path = tmp_path / "client.log"
    with open(log_path, "w") as stream:
        log = MailLog(stream, hostname="client.origin.test")
        [result] = deliver(
            request(f"[mail.example.test]:{mta.port}"),
            options(tls_level="may", tls_loglevel=1),
            resolver=_mx_resolver(mta),
            maillog=log,
        )
        log.flush()
    assert result.disposition is Disposition.SENT, result.reply
    assert re.search(
        rf"Untrusted TLS connection established to mail.example.test\[127.0.0.1\]:{mta.port}: "
        r"TLSv1\.[23] with cipher \S+",
        log_path.read_text(),
    )
    [msg] = mta.wait_for_messages("alice", 1)
    assert b"ESMTPS" in msg


def test_tls_verify_and_secure(mta: Mta) -> None:
    cafile = str(mta.data / "tls" / "selfsigned.pem")
    nexthop = f"[mail.example.test]:{mta.port}"
    resolver = _mx_resolver(mta)
    [ok] = deliver(
        request(nexthop), options(tls_level="verify", tls_cafile=cafile), resolver=resolver
    )
    assert ok.disposition is Disposition.SENT, ok.reply
    # secure: by default the certificate must name the next-hop domain (it does here).
    [sec] = deliver(
        request(nexthop), options(tls_level="secure", tls_cafile=cafile), resolver=resolver
    )
    assert sec.disposition is Disposition.SENT, sec.reply
    # Without the CA the chain is not trusted: deferred, never sent in the clear.
    [bad] = deliver(request(nexthop), options(tls_level="verify"), resolver=resolver)
    assert (bad.disposition, bad.dsn) == (Disposition.DEFERRED, "4.7.5")
    assert "certificate" in bad.reply
    assert len(mta.wait_for_messages("alice", 2)) == 2
    time.sleep(0.3)
    assert len(mta.messages("alice")) == 2


class ScriptedServer:
    """A small SMTP server with switchable faults: a STARTTLS whose handshake fails,
    and closing the connection after each message (a dead cached session)."""

    def __init__(self, *, broken_tls: bool = False, close_after_message: bool = False) -> None:
        self.broken_tls = broken_tls
        self.close_after_message = close_after_message
        self.sessions = 0
        self.messages: list[tuple[bool, bytes]] = []  # (after STARTTLS?, content)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        tls_tried = False
        try:
            writer.write(b"220 scripted ESMTP\r\n")
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    offer = b"" if tls_tried else b"250-STARTTLS\r\n"
                    writer.write(b"250-scripted\r\n" + offer + b"250 PIPELINING\r\n")
                elif verb == b"STAR":
                    tls_tried = True
                    writer.write(b"220 go ahead\r\n")
                    await writer.drain()
                    await reader.read(4096)  # the ClientHello
                    writer.write(b"this is not TLS\r\n" * 4)
                    await writer.drain()
                    return
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    await writer.drain()
                    body = await reader.readuntil(b"\r\n.\r\n")
                    self.messages.append((tls_tried, body))
                    writer.write(b"250 2.0.0 Ok: queued\r\n")
                    if self.close_after_message:
                        await writer.drain()
                        return
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _with_server(
    server: ScriptedServer, fn: Callable[[int, SmtpTransport], Awaitable[object]], opts: SmtpOptions
) -> object:
    async def main(t: SmtpTransport) -> object:
        srv = await asyncio.start_server(server.handle, HOST, 0)
        async with srv:
            return await fn(srv.sockets[0].getsockname()[1], t)

    return run(main, opts)


def test_tls_may_falls_back_to_plaintext_when_the_handshake_fails() -> None:
    server = ScriptedServer(broken_tls=True)

    async def go(port: int, t: SmtpTransport) -> list[RecipientResult]:
        return await t.deliver(request(f"[127.0.0.1]:{port}"))

    [result] = _with_server(server, go, options(tls_level="may"))  # type: ignore[misc]
    assert result.disposition is Disposition.SENT, result.reply
    assert server.sessions == 2  # the failed handshake, then a plaintext session
    assert [tls for tls, _ in server.messages] == [False]


def test_tls_encrypt_never_falls_back_to_plaintext() -> None:
    server = ScriptedServer(broken_tls=True)

    async def go(port: int, t: SmtpTransport) -> list[RecipientResult]:
        return await t.deliver(request(f"[127.0.0.1]:{port}"))

    [result] = _with_server(server, go, options(tls_level="encrypt"))  # type: ignore[misc]
    assert (result.disposition, result.dsn) == (Disposition.DEFERRED, "4.7.5")
    assert server.messages == []


def test_dead_cached_session_is_replaced_transparently() -> None:
    server = ScriptedServer(close_after_message=True)

    async def go(port: int, t: SmtpTransport) -> list[RecipientResult]:
        first = await t.deliver(request(f"[127.0.0.1]:{port}"))
        await asyncio.sleep(0.1)  # the server has closed the idle connection by now
        return first + await t.deliver(request(f"[127.0.0.1]:{port}"))

    results = _with_server(server, go, options())
    assert [r.disposition for r in results] == [Disposition.SENT] * 2  # type: ignore[attr-defined]
    assert server.sessions == 2 and len(server.messages) == 2


def test_cached_sessions_expire_and_are_quit() -> None:
    server = ScriptedServer()

    async def go(port: int, t: SmtpTransport) -> int:
        await t.deliver(request(f"[127.0.0.1]:{port}"))
        await asyncio.sleep(0.5)  # longer than the cache time: the session is QUIT
        await t.deliver(request(f"[127.0.0.1]:{port}"))
        return t.connections

    connections = _with_server(server, go, options(connection_cache_time=0.2))
    assert connections == 2 and server.sessions == 2
