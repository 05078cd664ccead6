"""Relayhost authentication (smtp_sasl_*) over real sockets: the SMTP delivery agent against
a scripted AUTH server on loopback, and ironpost A relaying through ironpost B, whose
submission listener requires AUTH."""

from __future__ import annotations

import asyncio
import base64
import smtplib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mta_harness import HOST, Mta, MtaFactory, free_port
from test_smtp_client import options, request, run

from ironpost.config.tables import open_table
from ironpost.delivery.smtp import SmtpOptions, SmtpTransport
from ironpost.delivery.smtp_auth import SaslOptions
from ironpost.delivery.transport import Disposition, RecipientResult
from ironpost.maillog import MailLog
from ironpost.sasl.passwd import PasswdFile

pytestmark = pytest.mark.integration

USER, PASSWORD = "relay@origin.test", "Pa55-w0rd:with-colon"


class AuthServer:
    """An SMTP server that offers AUTH PLAIN LOGIN (no TLS) and wants AUTH before MAIL."""

    def __init__(self, mechanisms: bytes = b"PLAIN LOGIN") -> None:
        self.mechanisms = mechanisms
        self.commands: list[bytes] = []
        self.messages: list[bytes] = []
        self.sessions = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        authed = False
        try:
            writer.write(b"220 relay.test ESMTP\r\n")
            while line := await reader.readline():
                self.commands.append(line.rstrip())
                verb = line.split(b" ", 1)[0].upper().rstrip(b"\r\n")
                if verb == b"EHLO":
                    writer.write(b"250-relay.test\r\n250-PIPELINING\r\n")
                    writer.write(b"250 AUTH " + self.mechanisms + b"\r\n")
                elif verb == b"AUTH":
                    authed = await self._auth(line.split()[1:], reader, writer)
                elif verb == b"MAIL":
                    ok = authed or not self.mechanisms
                    writer.write(
                        b"250 2.1.0 ok\r\n" if ok else b"530 5.7.0 Authentication required\r\n"
                    )
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    await writer.drain()
                    self.messages.append(await reader.readuntil(b"\r\n.\r\n"))
                    writer.write(b"250 2.0.0 Ok: queued\r\n")
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

    async def _auth(
        self, args: list[bytes], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        async def ask(prompt: bytes) -> bytes:
            writer.write(b"334 " + base64.b64encode(prompt) + b"\r\n")
            await writer.drain()
            answer = (await reader.readline()).strip()
            self.commands.append(answer)
            return base64.b64decode(answer)

        mech = args[0].upper()
        if mech == b"PLAIN":
            blob = base64.b64decode(args[1]) if len(args) > 1 else await ask(b"")
            _, user, password = blob.split(b"\0")
        elif mech == b"LOGIN":
            user = await ask(b"Username:")
            password = await ask(b"Password:")
        else:
            writer.write(b"504 5.5.4 unrecognized mechanism\r\n")
            return False
        if (user, password) == (USER.encode(), PASSWORD.encode()):
            writer.write(b"235 2.7.0 Authentication successful\r\n")
            return True
        writer.write(b"535 5.7.8 Error: authentication failed: UGFzc3dvcmQ6\r\n")
        return False


def sasl(password: str = PASSWORD, **kw: object) -> Callable[[int], SmtpOptions]:
    def make(port: int) -> SmtpOptions:
        table = open_table(f"inline:{{ [127.0.0.1]:{port}={USER}:{password} }}")
        params: dict[str, object] = {"enable": True, "password_maps": (table,)}
        params.update(kw)
        return options(sasl=SaslOptions(**params))  # type: ignore[arg-type]

    return make


def deliver(
    server: AuthServer, make: Callable[[int], SmtpOptions], tmp_path: Path, times: int = 1
) -> tuple[list[RecipientResult], str]:
    port = free_port()
    log_path = tmp_path / "client.log"

    async def go(t: SmtpTransport) -> list[RecipientResult]:
        srv = await asyncio.start_server(server.handle, HOST, port)
        async with srv:
            results: list[RecipientResult] = []
            for _ in range(times):
                results += await t.deliver(request(f"[127.0.0.1]:{port}"))
            return results

    with open(log_path, "w") as stream:
        log = MailLog(stream, hostname="client.origin.test")
        results = run(go, make(port), maillog=log)
        log.flush()
    return results, log_path.read_text()  # type: ignore[return-value]


def auth_lines(server: AuthServer) -> list[bytes]:
    return [c for c in server.commands if c.upper().startswith(b"AUTH")]


PLAINTEXT_OK = frozenset({"noanonymous"})


def test_plain_success_then_a_reused_session_needs_no_second_auth(tmp_path: Path) -> None:
    server = AuthServer()
    results, log = deliver(server, sasl(security_options=PLAINTEXT_OK), tmp_path, times=2)
    assert [r.disposition for r in results] == [Disposition.SENT] * 2, results
    assert len(server.messages) == 2 and server.sessions == 1
    [auth] = auth_lines(server)
    assert auth.startswith(b"AUTH PLAIN ")
    assert log == ""  # success logs nothing extra at the default verbosity


def test_login_through_the_mechanism_filter(tmp_path: Path) -> None:
    server = AuthServer()
    make = sasl(security_options=PLAINTEXT_OK, mechanism_filter=("LOGIN",))
    [result], _ = deliver(server, make, tmp_path)
    assert result.disposition is Disposition.SENT, result.reply
    assert auth_lines(server) == [b"AUTH LOGIN"]


def test_535_defers_with_soft_bounce_and_never_logs_the_password(tmp_path: Path) -> None:
    server = AuthServer()
    [result], log = deliver(server, sasl("wrong", security_options=PLAINTEXT_OK), tmp_path)
    assert (result.disposition, result.dsn) == (Disposition.DEFERRED, "4.7.8")
    assert result.reply == (
        "SASL authentication failed; server 127.0.0.1[127.0.0.1] said: "
        "535 5.7.8 Error: authentication failed: UGFzc3dvcmQ6"
    )
    assert not any(c.startswith(b"MAIL") for c in server.commands)
    assert "wrong" not in log and "wrong" not in result.reply


def test_535_bounces_without_soft_bounce(tmp_path: Path) -> None:
    make = sasl("wrong", security_options=PLAINTEXT_OK, soft_bounce=False)
    [result], _ = deliver(AuthServer(), make, tmp_path)
    assert (result.disposition, result.dsn) == (Disposition.BOUNCED, "5.7.8")


def test_noplaintext_default_on_a_plaintext_session_sends_no_auth(tmp_path: Path) -> None:
    server = AuthServer()
    [result], _ = deliver(server, sasl(), tmp_path)
    assert (result.disposition, result.dsn) == (Disposition.DEFERRED, "4.7.0")
    assert result.reply.endswith(
        "cannot authenticate to server 127.0.0.1[127.0.0.1]: no mechanism available"
    )
    assert auth_lines(server) == [] and not any(c.startswith(b"MAIL") for c in server.commands)


def test_no_credentials_for_the_server_delivers_without_auth(tmp_path: Path) -> None:
    server = AuthServer(mechanisms=b"")  # this server takes mail without AUTH

    def make(port: int) -> SmtpOptions:
        table = open_table("inline:{ [other.test]:587=u:p }")
        return options(sasl=SaslOptions(enable=True, password_maps=(table,)))

    [result], log = deliver(server, make, tmp_path)
    assert result.disposition is Disposition.SENT, result.reply
    assert auth_lines(server) == [] and log == ""


# --- ironpost A -> ironpost B (submission with AUTH) ------------------------------------


def _relay_pair(
    mta_factory: type[MtaFactory], tmp_path: Path, password: str, a_extra: str = ""
) -> tuple[Mta, Mta]:
    """(A, B): B requires AUTH on its submission port; A's relayhost is that port."""
    passwd_path = tmp_path / "b-passwd"
    PasswdFile(passwd_path).add(USER, PASSWORD)
    sub = free_port()
    b = mta_factory.start(
        f"smtpd_sasl_passwd_file = {passwd_path}\n",
        f"{HOST}:{{port}} inet n - n - - smtpd\n"
        f"{HOST}:{sub} inet n - n - - smtpd\n"
        "  -o syslog_name=ironpost/submission\n"
        "  -o smtpd_tls_security_level=encrypt\n"
        "  -o smtpd_sasl_auth_enable=yes\n"
        "  -o smtpd_sasl_auth_required=yes\n",
    )
    a = mta_factory.start(
        # example.test is B's: A relays it through B's submission port.
        "virtual_mailbox_domains =\n"
        f"relayhost = [127.0.0.1]:{sub}\n"
        "smtp_sasl_auth_enable = yes\n"
        f"smtp_sasl_password_maps = inline:{{ [127.0.0.1]:{sub}={USER}:{password} }}\n" + a_extra
    )
    return a, b


def _send(port: int, rcpt: str) -> None:
    with smtplib.SMTP(HOST, port, timeout=10) as c:
        c.sendmail(
            "someone@origin.test",
            [rcpt],
            f"From: someone@origin.test\r\nTo: {rcpt}\r\nSubject: relayed\r\n"
            f"Message-ID: <{time.time()}@origin.test>\r\n\r\nthrough the smarthost\r\n",
        )


@pytest.mark.parametrize(
    ("a_filter", "mechanism"),
    [("", "SCRAM-SHA-256"), ("plain", "PLAIN"), ("login", "LOGIN")],
)
def test_ironpost_relays_through_an_authenticating_ironpost(
    mta_factory: type[MtaFactory], tmp_path: Path, a_filter: str, mechanism: str
) -> None:
    # PLAIN and LOGIN pass the default noplaintext because the session is TLS (STARTTLS).
    extra = f"smtp_sasl_mechanism_filter = {a_filter}\n" if a_filter else ""
    a, b = _relay_pair(mta_factory, tmp_path, PASSWORD, extra)
    _send(a.port, "bob@example.test")
    [msg] = b.wait_for_messages("bob", 1, timeout=20)
    assert b"through the smarthost" in msg
    assert b.log_has(f"sasl_method={mechanism}, sasl_username={USER}")
    assert a.log_has("to=<bob@example.test>", "status=sent")
    assert PASSWORD not in a.maillog and PASSWORD not in b.maillog


def test_wrong_relay_password_defers_at_a(mta_factory: type[MtaFactory], tmp_path: Path) -> None:
    a, b = _relay_pair(mta_factory, tmp_path, "not-the-password")
    _send(a.port, "bob@example.test")
    assert a.log_has(
        "to=<bob@example.test>",
        "status=deferred (SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535",
        timeout=20,
    )
    assert "not-the-password" not in a.maillog
    assert b.messages("bob") == []
