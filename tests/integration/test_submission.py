"""Submission end to end: AUTH on 587 (STARTTLS) and 465 (implicit TLS), sender identity,
abuse limits. A real ironpost with the default submission services of master.cf, real
clients (swaks, smtplib), users written with ``ironpost passwd``."""

from __future__ import annotations

import base64
import shutil
import smtplib
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mta_harness import HOST, STRANGER, Mta, free_port, write_config

from ironpost.config.embedded import submission_options

ALICE, ALICE_PW = "alice@example.test", "correct horse battery staple"
BOB, BOB_PW = "bob@example.test", "hunter2-but-longer"
WRONG = "Tr0ub4dor&3-wrong"
# A device that alice used before the attack, one she did not, and bob's.
FAMILIAR, NEW_DEVICE = "127.0.0.67", "127.0.0.68"

swaks_only = pytest.mark.skipif(shutil.which("swaks") is None, reason="make test installs swaks")


@dataclass
class Submission:
    mta: Mta
    sub: int  # 587-style: STARTTLS
    subs: int  # 465-style: implicit TLS


def _master(sub: int, subs: int) -> str:
    options = submission_options()
    return (
        f"{HOST}:{{port}} inet n - n - - smtpd\n"
        f"{HOST}:{sub} inet n - n - - smtpd\n  -o syslog_name=ironpost/submission\n"
        f"  -o smtpd_tls_security_level=encrypt\n{options}\n"
        f"{HOST}:{subs} inet n - n - - smtpd\n  -o syslog_name=ironpost/smtps\n"
        f"  -o smtpd_tls_wrappermode=yes\n{options}\n"
    )


def start_submission(directory: Path, main_extra: str = "") -> Submission:
    sub, subs = free_port(), free_port()
    port = write_config(directory, main_extra, _master(sub, subs))
    mta = Mta(directory, port)
    for user, password in ((ALICE, ALICE_PW), (BOB, BOB_PW)):
        done = mta.cli("passwd", "add", user, stdin=f"{password}\n".encode())
        assert done.returncode == 0, done.stderr
    mta.start()
    return Submission(mta, sub, subs)


@pytest.fixture
def submission(tmp_path: Path) -> Iterator[Submission]:
    server = start_submission(tmp_path / "mta", "smtpd_tls_loglevel = 2\n")
    yield server
    server.mta.stop()


def _tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def client(
    port: int, source: str = HOST, *, tls: bool = True, helo: str = "laptop"
) -> smtplib.SMTP:
    s = smtplib.SMTP(HOST, port, timeout=30, source_address=(source, 0))
    s.ehlo(helo)
    if tls:
        s.starttls(context=_tls())
        s.ehlo(helo)
    return s


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def message(sender: str, to: str, subject: str = "hi", *, headers: str = "") -> bytes:
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{headers}\r\nbody\r\n".encode()


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["swaks", "--helo", "laptop.home.test", "--timeout", "20", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- AUTH mechanisms with swaks ----------------------------------------------------------


@swaks_only
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_auth_over_starttls_on_587(submission: Submission, mechanism: str) -> None:
    result = swaks(
        "--server", f"{HOST}:{submission.sub}", "--tls",
        "--auth", mechanism, "--auth-user", ALICE, "--auth-password", ALICE_PW,
        "--from", ALICE, "--to", BOB, "--body", f"sent with {mechanism}",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "235 2.7.0 Authentication successful" in result.stdout
    assert "250 2.0.0 Ok: queued as" in result.stdout
    mta = submission.mta
    (body,) = mta.wait_for_messages("bob", 1)
    assert f"sent with {mechanism}".encode() in body
    # The submission service keeps the client's address out of Received: (privacy) and
    # says ESMTPSA (RFC 3848); Date and Message-ID were missing, so they were added.
    received = body.split(b"\r\n\r\n", 1)[0]
    assert b"with ESMTPSA id" in received
    assert b"127.0.0.1" not in received and b"laptop" not in received
    assert mta.log_has(f"sasl_method={mechanism}, sasl_username={ALICE}")


@swaks_only
def test_swaks_auth_on_implicit_tls_465(submission: Submission) -> None:
    result = swaks(
        "--server", f"{HOST}:{submission.subs}", "--tlsc",
        "--auth", "PLAIN", "--auth-user", BOB, "--auth-password", BOB_PW,
        "--from", BOB, "--to", ALICE, "--body", "over 465",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "250 2.0.0 Ok: queued as" in result.stdout
    (body,) = submission.mta.wait_for_messages("alice", 1)
    assert b"over 465" in body


@swaks_only
def test_wrong_password_is_535_and_no_credential_is_logged(submission: Submission) -> None:
    result = swaks(
        "--server", f"{HOST}:{submission.sub}", "--tls",
        "--auth", "LOGIN", "--auth-user", ALICE, "--auth-password", WRONG,
        "--from", ALICE, "--to", BOB,
    )  # fmt: skip
    assert result.returncode != 0
    assert "535 5.7.8 Error: authentication failed" in result.stdout
    mta = submission.mta
    assert mta.log_has(f"SASL LOGIN authentication failed: authentication failure, "
                       f"sasl_username={ALICE}")  # fmt: skip
    with smtplib.SMTP(HOST, submission.sub, timeout=30) as s:  # and a PLAIN success
        s.ehlo("laptop")
        s.starttls(context=_tls())
        s.ehlo("laptop")
        s.login(ALICE, ALICE_PW)
    assert mta.log_has("daemon started")
    mta.stop()  # flush every log line
    everything = mta.maillog + (mta.dir / "stderr.log").read_text(errors="replace")
    secrets = [WRONG, ALICE_PW, plain(ALICE, ALICE_PW), plain(ALICE, WRONG)]
    secrets += [base64.b64encode(p.encode()).decode() for p in (WRONG, ALICE_PW)]
    for secret in secrets:
        assert secret not in everything


# -- TLS first ------------------------------------------------------------------------------


def test_auth_needs_tls_and_mail_needs_starttls(submission: Submission) -> None:
    s = client(submission.sub, tls=False)
    assert not s.has_extn("auth")  # never offered in plaintext
    code, text = s.docmd("AUTH", "PLAIN " + plain(ALICE, ALICE_PW))
    assert (code, text[:6]) == (538, b"5.7.11")
    code, text = s.docmd("MAIL", f"FROM:<{ALICE}>")
    assert (code, text[:5]) == (530, b"5.7.0")
    s.starttls(context=_tls())
    s.ehlo("laptop")
    assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
    s.close()


def test_mail_before_auth_is_refused_on_submission(submission: Submission) -> None:
    s = client(submission.sub)
    code, text = s.docmd("MAIL", f"FROM:<{ALICE}>")
    assert code == 530 and b"Authentication required" in text
    s.login(ALICE, ALICE_PW)
    assert s.docmd("MAIL", f"FROM:<{ALICE}>")[0] == 250
    s.close()


def test_auth_cancel_and_bad_base64(submission: Submission) -> None:
    s = client(submission.sub)
    assert s.docmd("AUTH", "LOGIN")[0] == 334
    code, text = s.docmd("*")
    assert (code, text) == (501, b"5.7.0 Authentication aborted")
    code, text = s.docmd("AUTH", "PLAIN not*base64")
    assert (code, text) == (501, b"5.5.2 Cannot decode response")
    assert s.docmd("AUTH", "PLAIN")[0] == 334  # no initial response: an empty challenge
    assert s.docmd(plain(ALICE, ALICE_PW))[0] == 235
    assert s.docmd("AUTH", "PLAIN =")[:1] == (503,)  # already authenticated
    s.close()


def test_client_rate_limits_for_strangers_only(tmp_path: Path) -> None:
    server = start_submission(
        tmp_path / "m",
        "smtpd_client_connection_rate_limit = 2\nsmtpd_client_message_rate_limit = 1\n"
        "anvil_status_update_time = 1s\n",
    )
    mta = server.mta
    try:
        for _ in range(2):
            client(mta.port, STRANGER, tls=False).close()
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            client(mta.port, STRANGER, tls=False)
        assert (
            refused.value.smtp_code == 421 and b"too many connections" in refused.value.smtp_error
        )
        other = client(mta.port, NEW_DEVICE, tls=False, helo="mx.sender.test")
        assert other.docmd("MAIL", "FROM:<a@sender.test>")[0] == 250
        other.rset()
        code, text = other.docmd("MAIL", "FROM:<a@sender.test>")
        assert (code, text) == (450, f"4.7.1 Error: too much mail from {NEW_DEVICE}".encode())
        other.close()
        for _ in range(3):  # $mynetworks is exempt (smtpd_client_event_limit_exceptions)
            client(mta.port, HOST, tls=False).close()
        # As Postfix's anvil, the peaks are logged every anvil_status_update_time.
        assert mta.log_has(f"statistics: max connection rate 2/60s for ({STRANGER})")
    finally:
        mta.stop()


def test_port_25_offers_no_auth(submission: Submission) -> None:
    s = client(submission.mta.port)
    assert not s.has_extn("auth")
    s.close()


# -- sender identity ------------------------------------------------------------------------


def test_sender_mismatch_is_553(submission: Submission) -> None:
    s = client(submission.sub)
    s.login(ALICE, ALICE_PW)
    code, text = s.docmd("MAIL", f"FROM:<{BOB}>")  # at MAIL: smtpd_delay_reject = no
    assert code == 553 and b"5.7.1" in text and b"not owned by user " + ALICE.encode() in text
    s.close()


def test_from_header_must_be_owned_by_the_login(submission: Submission) -> None:
    s = client(submission.sub)
    s.login(ALICE, ALICE_PW)
    with pytest.raises(smtplib.SMTPDataError) as refused:
        s.sendmail(ALICE, [BOB], message(BOB, BOB, "forged From"))
    assert refused.value.smtp_code == 550 and b"not owned by user" in refused.value.smtp_error
    assert s.sendmail(ALICE, [BOB], message(f"Alice <{ALICE}>", BOB, "mine")) == {}
    s.close()
    (body,) = submission.mta.wait_for_messages("bob", 1)
    assert b"Subject: mine" in body
    assert b"\nDate: " in body and b"\nMessage-Id: <" in body


def test_authenticated_relay_to_a_remote_domain_is_queued(submission: Submission) -> None:
    mta = submission.mta
    with client(mta.port, STRANGER, helo="mx.sender.test") as stranger:  # port 25: no relay
        stranger.docmd("MAIL", "FROM:<x@sender.test>")
        code, text = stranger.docmd("RCPT", "TO:<friend@remote.test>")
        assert code == 554 and b"Relay access denied" in text
    s = client(submission.sub, STRANGER)
    s.login(ALICE, ALICE_PW)
    assert s.sendmail(ALICE, ["friend@remote.test"], message(ALICE, "friend@remote.test")) == {}
    s.close()
    listing = mta.cli("queue", "list")
    assert "friend@remote.test" in listing.stdout, listing.stdout + listing.stderr


# -- abuse limits ---------------------------------------------------------------------------


def test_failures_in_one_session_end_it_with_421(tmp_path: Path) -> None:
    server = start_submission(tmp_path / "m", "smtpd_auth_failure_delay = 0\n")
    try:
        s = client(server.sub)
        for _ in range(2):
            assert s.docmd("AUTH", "PLAIN " + plain(ALICE, WRONG))[0] == 535
        code, text = s.docmd("AUTH", "PLAIN " + plain(ALICE, WRONG))
        assert code == 421 and b"4.7.0" in text
        with pytest.raises(smtplib.SMTPServerDisconnected):
            s.noop()
    finally:
        server.mta.stop()


def _attempt(port: int, source: str, user: str, password: str) -> tuple[int, float]:
    """One AUTH PLAIN on a fresh TLS session; the reply code and how long it took."""
    s = client(port, source)
    try:
        started = time.monotonic()
        code, _ = s.docmd("AUTH", "PLAIN " + plain(user, password))
        return code, time.monotonic() - started
    finally:
        s.close()


def _sends(port: int, source: str, user: str, password: str) -> bool:
    s = client(port, source)
    try:
        s.login(user, password)
        return s.sendmail(user, [BOB], message(user, BOB, f"from {source}")) == {}
    finally:
        s.close()


def test_brute_force_is_throttled_then_banned_while_others_send(tmp_path: Path) -> None:
    server = start_submission(
        tmp_path / "m",
        """\
        smtpd_auth_failure_delay = 1s
        smtpd_auth_failure_max_delay = 1s
        smtpd_auth_ban_threshold = 4
        smtpd_auth_ban_time = 10m
        """,
    )
    mta = server.mta
    try:
        assert _sends(server.sub, FAMILIAR, ALICE, ALICE_PW)  # alice's usual device
        codes: list[int] = []
        delays: list[float] = []
        for _ in range(200):
            code, took = _attempt(server.sub, STRANGER, ALICE, WRONG)
            codes.append(code)
            delays.append(took)
        # Throttled: each 535 came after the anvil's delay; banned after the threshold.
        assert codes[:3] == [535, 535, 535]
        assert all(took >= 0.9 for took in delays[:3])
        assert set(codes[3:]) == {421}
        assert mta.log_has("AUTH ban in force")
        # The attacker's address stays banned even with the right password.
        assert _attempt(server.sub, STRANGER, BOB, BOB_PW)[0] == 421
        # Meanwhile: alice on her familiar device, and bob from a new one, send normally.
        assert _sends(server.sub, FAMILIAR, ALICE, ALICE_PW)
        assert _sends(server.sub, NEW_DEVICE, BOB, BOB_PW)
        mta.wait_for_messages("bob", 3)
    finally:
        mta.stop()


def test_per_user_sending_limit(tmp_path: Path) -> None:
    server = start_submission(tmp_path / "m", "smtpd_sasl_user_message_rate_limit = 3\n")
    try:
        s = client(server.sub)
        s.login(ALICE, ALICE_PW)
        for i in range(3):
            assert s.sendmail(ALICE, [BOB], message(ALICE, BOB, f"n{i}")) == {}
        code, text = s.docmd("MAIL", f"FROM:<{ALICE}>")
        assert code == 450 and b"4.7.1" in text and b"too much mail from user" in text
        s.close()
        # Another user is not affected.
        assert _sends(server.sub, HOST, BOB, BOB_PW)
        assert server.mta.log_has(f"rate limit exceeded for sasl_username={ALICE}")
    finally:
        server.mta.stop()


def test_password_change_is_seen_without_restart(submission: Submission) -> None:
    mta = submission.mta
    changed = mta.cli("passwd", "set", ALICE, stdin=b"a-brand-new-password\n")
    assert changed.returncode == 0, changed.stderr
    time.sleep(1.1)  # the file is re-checked at most once a second
    s = client(submission.sub)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        s.login(ALICE, ALICE_PW)
    s.close()
    s = client(submission.sub)
    s.login(ALICE, "a-brand-new-password")
    s.close()


# -- Dovecot as the SASL back-end -----------------------------------------------------------


@swaks_only
def test_dovecot_back_end_through_the_server(tmp_path: Path, dovecot) -> None:
    peer = dovecot.start({"carol@example.test": "carol-dovecot-pw"})
    server = start_submission(
        tmp_path / "m",
        f"smtpd_sasl_type = dovecot\nsmtpd_sasl_path = {peer.auth_socket}\n",
    )
    mta = server.mta
    try:
        base = ["--server", f"{HOST}:{server.sub}", "--tls", "--auth-user", "carol@example.test"]
        ok = swaks(
            *base, "--auth", "LOGIN", "--auth-password", "carol-dovecot-pw",
            "--from", "carol@example.test", "--to", BOB, "--body", "via dovecot",
        )  # fmt: skip
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert mta.wait_for_messages("bob", 1)[0].count(b"via dovecot") == 1
        bad = swaks(*base, "--auth", "PLAIN", "--auth-password", WRONG, "--quit-after", "AUTH")
        assert "535 5.7.8" in bad.stdout
        # The users of ironpost's own file mean nothing to this listener.
        s = client(server.sub)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login(ALICE, ALICE_PW)
        s.close()
        peer.stop()  # Dovecot down: a temporary failure, never a 535
        s = client(server.sub)
        code, text = s.docmd("AUTH", "PLAIN " + plain("carol@example.test", "carol-dovecot-pw"))
        assert (code, text[:5]) == (454, b"4.7.0")
        s.close()
    finally:
        mta.stop()


def test_security_options_filter_mechanisms_per_session(tmp_path: Path) -> None:
    server = start_submission(
        tmp_path / "m",
        """\
        smtpd_sasl_auth_enable = yes
        smtpd_tls_auth_only = no
        smtpd_sasl_security_options = noanonymous, noplaintext
        smtpd_sasl_tls_security_options = noanonymous
        """,
    )
    try:
        # main.cf turns AUTH on for the port-25 service, with tls_auth_only off: in
        # plaintext it offers only what sends no password in the clear.
        s = client(server.mta.port, tls=False)
        assert s.esmtp_features["auth"].split() == ["SCRAM-SHA-256"]
        s.starttls(context=_tls())
        s.ehlo("laptop")
        assert s.esmtp_features["auth"].split() == ["SCRAM-SHA-256", "PLAIN", "LOGIN"]
        s.close()
    finally:
        server.mta.stop()
