"""Pure units of the SMTP server: Received header, counters, connection and disk
limits, transaction -> envelope, self-signed TLS, and the maillog line format.

No sockets: everything here is called directly with fixed inputs and fake clocks.
"""

from __future__ import annotations

import dataclasses
import email.utils
import io
import os
import re
import ssl
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from ironpost.config import load_texts
from ironpost.maillog import MailLog
from ironpost.protocol import replies as R
from ironpost.queue.model import ClientInfo
from ironpost.server.context import ConnectionTracker, DiskSpace
from ironpost.server.counters import SessionCounters
from ironpost.server.options import SmtpdOptions
from ironpost.server.received import count_received, received_header
from ironpost.server.tls import TlsConfigError, ensure_self_signed, server_context
from ironpost.server.transaction import AcceptedRecipient, Transaction

NOW = 1_795_428_000.0  # a fixed instant, so the Date part is reproducible


def _received(**over: object) -> bytes:
    args: dict[str, object] = {
        "helo": "helo.example",
        "client_name": "client.example",
        "client_address": "192.0.2.1",
        "tls": None,
        "hostname": "mail.example.org",
        "protocol": "ESMTP",
        "queue_id": "4XyZabc",
        "recipient": "user@example.org",
        "now": NOW,
    }
    args.update(over)
    return received_header(**args)  # type: ignore[arg-type]


def _lines(header: bytes) -> list[str]:
    text = header.decode("utf-8")
    assert text.endswith("\r\n")
    return text[:-2].split("\r\n")


# -- received_header ----------------------------------------------------------------


def test_received_shape_with_recipient() -> None:
    lines = _lines(_received())
    date = email.utils.formatdate(NOW, localtime=False, usegmt=False)
    assert lines == [
        "Received: from helo.example (client.example [192.0.2.1])",
        "\tby mail.example.org (ironpost) with ESMTP id 4XyZabc",
        f"\tfor <user@example.org>; {date}",
    ]
    # The date is RFC 5322 and names the instant we passed.
    parsed = email.utils.parsedate_to_datetime(date)
    assert parsed.timestamp() == NOW


def test_received_without_recipient_puts_date_on_its_own_line() -> None:
    lines = _lines(_received(recipient=None))
    assert lines[1] == "\tby mail.example.org (ironpost) with ESMTP id 4XyZabc;"
    assert lines[2] == "\t" + email.utils.formatdate(NOW, localtime=False, usegmt=False)
    assert len(lines) == 3


def test_received_tls_line() -> None:
    tls = "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)"
    lines = _lines(_received(tls=tls, protocol="ESMTPS"))
    assert lines[0].startswith("Received: from helo.example ")
    assert lines[1] == f"\t(using {tls})"
    assert lines[2] == "\tby mail.example.org (ironpost) with ESMTPS id 4XyZabc"
    assert "(using" not in _received(tls=None).decode()


def test_received_without_helo_uses_client_name() -> None:
    assert _lines(_received(helo=None))[0] == (
        "Received: from client.example (client.example [192.0.2.1])"
    )
    assert _lines(_received(helo=""))[0].startswith("Received: from client.example (")


def test_received_hostile_helo_cannot_inject_header_or_close_comment() -> None:
    helo = "evil)\r\nX-Injected: yes\r\n\r\nbody (\\"
    header = _received(helo=helo, recipient="a@b\r\nBcc: victim@example.net")
    lines = _lines(header)
    assert len(lines) == 3
    # Every continuation line is folded (starts with a tab): nothing starts a new header.
    assert all(line.startswith("\t") for line in lines[1:])
    assert b"\r\nX-Injected" not in header and b"\nX-Injected" not in header
    assert b"\r\nBcc" not in header
    assert header.count(b"\r") == header.count(b"\n") == 3
    from_token = lines[0].removeprefix("Received: from ").split(" (", 1)[0]
    assert not set(from_token) & set("()\\ \r\n\t")
    assert from_token.startswith("evil_")
    # The comment holding the client name still opens and closes once.
    assert lines[0].count("(") == 1 and lines[0].count(")") == 1


def test_received_helo_is_truncated() -> None:
    line = _lines(_received(helo="h" * 5000))[0]
    assert "h" * 255 in line and "h" * 256 not in line


@given(helo=st.text(max_size=300), recipient=st.text(max_size=400))
def test_received_property_no_injection(helo: str, recipient: str) -> None:
    header = _received(helo=helo, recipient=recipient)
    # Exactly one CRLF per line, no bare CR or LF anywhere.
    assert header.count(b"\r\n") == 3
    assert header.count(b"\r") == 3 and header.count(b"\n") == 3
    lines = _lines(header)
    assert lines[0].startswith("Received: from ")
    assert all(line.startswith("\t") for line in lines[1:])
    from_token = lines[0].removeprefix("Received: from ").split(" (client.example ", 1)[0]
    assert from_token and not set(from_token) & set("()\\ \t")
    assert lines[0].endswith("(client.example [192.0.2.1])")
    assert lines[2].startswith("\tfor <") and lines[2].count(">") >= 1


# -- count_received -------------------------------------------------------------------


def test_count_received_counts_header_section_only() -> None:
    content = (
        b"Received: from a by b; date\r\n"
        b"received: from c\r\n\tby d; date\r\n"
        b"X-Received: not this one\r\n"
        b"Subject: Received: neither\r\n"
        b"\r\n"
        b"Received: in the body, not counted\r\n"
    )
    assert count_received(content) == 2


def test_count_received_without_body_and_empty() -> None:
    assert count_received(b"RECEIVED: x\r\nReceived: y\r\n") == 2
    assert count_received(b"Subject: hi\r\n\r\n") == 0
    assert count_received(b"") == 0
    # A message with an empty header section, as counted (after our own header).
    headerless = _received() + b"\r\nReceived: body only\r\nReceived: again\r\n"
    assert count_received(headerless) == 1


def test_count_received_matches_prepended_headers() -> None:
    body = b"Subject: x\r\n\r\nhello\r\n"
    content = body
    for i in range(5):
        content = _received(queue_id=f"Q{i}") + content
        assert count_received(content) == i + 1


# -- SessionCounters ------------------------------------------------------------------


def test_counters_postfix_disconnect_format() -> None:
    c = SessionCounters()
    c.count("ehlo", True)
    c.count("mail", True)
    c.count("rcpt", False)
    c.count("data", False)
    c.count("quit", True)
    assert c.summary() == "ehlo=1 mail=1 rcpt=0/1 data=0/1 quit=1 commands=3/5"


def test_counters_order_is_fixed_not_arrival() -> None:
    c = SessionCounters()
    for name, ok in [
        ("quit", True),
        ("unknown", False),
        ("rcpt", True),
        ("rcpt", False),
        ("rcpt", True),
        ("starttls", True),
        ("ehlo", True),
        ("ehlo", True),
        ("noop", True),
    ]:
        c.count(name, ok)
    assert c.summary() == "ehlo=2 starttls=1 rcpt=2/3 noop=1 quit=1 unknown=0/1 commands=7/9"


def test_counters_empty_session() -> None:
    assert SessionCounters().summary() == "commands=0"


# -- ConnectionTracker ----------------------------------------------------------------


def test_tracker_per_client_limit_and_release() -> None:
    t = ConnectionTracker(per_client=2, total=100)
    assert t.admit("192.0.2.1", exempt=False) is None
    assert t.admit("192.0.2.1", exempt=False) is None
    refused = t.admit("192.0.2.1", exempt=False)
    assert refused is R.TOO_MANY_CONNECTIONS
    assert refused is not None and refused.code == 421
    assert t.active == 2  # a refused connection is not counted
    # Another client is unaffected.
    assert t.admit("192.0.2.2", exempt=False) is None
    assert t.active == 3
    t.release("192.0.2.1")
    assert t.active == 2
    assert t.admit("192.0.2.1", exempt=False) is None


def test_tracker_exempt_clients_bypass_per_client_limit() -> None:
    t = ConnectionTracker(per_client=1, total=10)
    for _ in range(5):
        assert t.admit("127.0.0.1", exempt=True) is None
    assert t.active == 5
    # Exempt connections still count towards the client's tally.
    assert t.admit("127.0.0.1", exempt=False) is R.TOO_MANY_CONNECTIONS


def test_tracker_zero_per_client_means_unlimited() -> None:
    t = ConnectionTracker(per_client=0, total=50)
    for _ in range(20):
        assert t.admit("192.0.2.9", exempt=False) is None


def test_tracker_global_cap_applies_to_everyone() -> None:
    t = ConnectionTracker(per_client=10, total=3)
    assert t.admit("192.0.2.1", exempt=False) is None
    assert t.admit("192.0.2.2", exempt=False) is None
    assert t.admit("127.0.0.1", exempt=True) is None
    assert t.admit("192.0.2.3", exempt=False) is R.TOO_MANY_CONNECTIONS
    assert t.admit("127.0.0.1", exempt=True) is R.TOO_MANY_CONNECTIONS
    t.release("192.0.2.2")
    assert t.admit("192.0.2.3", exempt=False) is None
    assert t.active == 3


def test_tracker_release_all_returns_to_zero() -> None:
    t = ConnectionTracker(per_client=3, total=10)
    for addr in ["a", "a", "b", "a"]:
        assert t.admit(addr, exempt=False) is None
    for addr in ["a", "b", "a", "a"]:
        t.release(addr)
    assert t.active == 0
    for _ in range(3):
        assert t.admit("a", exempt=False) is None
    assert t.admit("a", exempt=False) is R.TOO_MANY_CONNECTIONS


# -- DiskSpace ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smtpd_options() -> SmtpdOptions:
    loaded = load_texts(
        "myhostname = mail.example.test\n",
        None,
        main_file="main.cf",
        master_file="master.cf",
        config_dir=None,
    )
    return SmtpdOptions.from_settings(loaded.settings)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_disk_has_room_thresholds(tmp_path: Path, smtpd_options: SmtpdOptions) -> None:
    disk = DiskSpace(tmp_path, clock=FakeClock())
    free = disk.free_bytes()
    st_ = os.statvfs(tmp_path)
    assert free > 0
    assert abs(free - st_.f_bavail * st_.f_frsize) < 1 << 30
    small = dataclasses.replace(smtpd_options, queue_minfree=0, max_message_size=1024)
    assert disk.has_room(small)
    # queue_minfree above the free space: no room.
    assert not disk.has_room(dataclasses.replace(small, queue_minfree=free * 2))
    # 1.5 x message_size_limit above the free space: no room, even with queue_minfree 0.
    big = dataclasses.replace(small, max_message_size=free)
    assert not disk.has_room(big)
    # Just below the 1.5x rule is fine.
    assert disk.has_room(dataclasses.replace(small, max_message_size=free // 2))


def test_disk_samples_at_most_once_a_second(tmp_path: Path, smtpd_options: SmtpdOptions) -> None:
    queue = tmp_path / "queue"
    queue.mkdir()
    clock = FakeClock()
    disk = DiskSpace(queue, clock=clock)
    opts = dataclasses.replace(smtpd_options, queue_minfree=0, max_message_size=1)
    assert disk.has_room(opts)
    queue.rmdir()  # statvfs would now fail …
    clock.now += 0.5
    assert disk.free_bytes() > 0  # … but the sample is still fresh
    assert disk.has_room(opts)
    clock.now += 0.5
    assert disk.free_bytes() == 0  # resampled: an unreadable queue has no room
    assert not disk.has_room(opts)


def test_disk_missing_path_fails_closed(tmp_path: Path, smtpd_options: SmtpdOptions) -> None:
    disk = DiskSpace(tmp_path / "nope", clock=FakeClock())
    assert disk.free_bytes() == 0
    assert not disk.has_room(dataclasses.replace(smtpd_options, queue_minfree=0))


# -- Transaction.envelope -------------------------------------------------------------

CLIENT = ClientInfo(address="192.0.2.1", name="client.example", helo="h", protocol="ESMTP")


def _transaction() -> Transaction:
    return Transaction(
        sender="sender@remote.test",
        size_hint=123,
        body_type="8BITMIME",
        smtputf8=False,
        ret="HDRS",
        envid="ENV1",
    )


def test_envelope_dedupes_expanded_recipients_keeping_first_original() -> None:
    t = _transaction()
    t.recipients = [
        AcceptedRecipient(
            "team@example.test",
            ["alice@example.test", "bob@example.test"],
            ("SUCCESS", "FAILURE"),
            "rfc822;team@example.test",
        ),
        AcceptedRecipient("alice@example.test", ["alice@example.test"], None, None),
        AcceptedRecipient("Bob@Example.TEST", ["Bob@Example.TEST"], None, None),
        AcceptedRecipient("carol@example.test", ["carol@example.test"], ("NEVER",), None),
    ]
    env = t.envelope(CLIENT, size=456, arrival=NOW)
    assert [(r.address, r.original) for r in env.recipients] == [
        ("alice@example.test", "team@example.test"),
        ("bob@example.test", "team@example.test"),
        ("carol@example.test", "carol@example.test"),
    ]
    assert env.recipients[0].notify == ("SUCCESS", "FAILURE")
    assert env.recipients[0].orcpt == "rfc822;team@example.test"
    assert env.recipients[2].notify == ("NEVER",)
    assert env.sender == "sender@remote.test"
    assert env.size == 456 and env.arrival == NOW and env.client is CLIENT
    assert (env.body_type, env.smtputf8, env.ret, env.envid) == ("8BITMIME", False, "HDRS", "ENV1")


def test_envelope_no_expansion_is_identity() -> None:
    t = _transaction()
    t.recipients = [
        AcceptedRecipient(f"u{i}@example.test", [f"u{i}@example.test"], None, None)
        for i in range(3)
    ]
    env = t.envelope(CLIENT, size=1, arrival=NOW)
    assert [r.address for r in env.recipients] == [f"u{i}@example.test" for i in range(3)]
    assert all(r.address == r.original for r in env.recipients)


def test_transaction_content_joins_chunks() -> None:
    t = _transaction()
    t.add_chunk(b"Subject: x\r\n")
    t.add_chunk(b"\r\nbody\r\n")
    assert t.size == 20
    assert t.content(b"Received: y\r\n") == b"Received: y\r\nSubject: x\r\n\r\nbody\r\n"


# -- TLS ------------------------------------------------------------------------------


def test_self_signed_created_private_and_reused(tmp_path: Path) -> None:
    pair = ensure_self_signed(tmp_path, "mail.example.test")
    assert pair.generated
    assert pair.chain.is_file() and pair.key.is_file()
    assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(pair.key.parent.stat().st_mode) & 0o077 == 0
    cert = x509.load_pem_x509_certificate(pair.chain.read_bytes())
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "mail.example.test"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "mail.example.test" in san.get_values_for_type(x509.DNSName)
    # The key on disk is the certificate's key.
    key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()
    # No temporary files are left beside them.
    assert sorted(p.name for p in pair.chain.parent.iterdir()) == [
        "selfsigned.key",
        "selfsigned.pem",
    ]

    before = (pair.chain.read_bytes(), pair.key.read_bytes())
    again = ensure_self_signed(tmp_path, "mail.example.test")
    assert not again.generated
    assert (again.chain, again.key) == (pair.chain, pair.key)
    assert (again.chain.read_bytes(), again.key.read_bytes()) == before


def test_server_context_loads_and_floors_tls12(tmp_path: Path) -> None:
    pair = ensure_self_signed(tmp_path, "mail.example.test")
    ctx = server_context(pair.chain, pair.key)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.options & ssl.OP_NO_COMPRESSION

    # A real handshake in memory (no sockets) proves the pair is usable.
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="mail.example.test")
    server = ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for name, obj, out, peer_in in (("c", client, c_out, s_in), ("s", server, s_out, c_in)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            break
    assert all(done.values())
    assert server.version() in ("TLSv1.2", "TLSv1.3")
    der = client.getpeercert(binary_form=True)
    assert der == x509.load_pem_x509_certificate(pair.chain.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )


def test_server_context_missing_files_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError, match="cannot load TLS certificate"):
        server_context(tmp_path / "missing.pem", tmp_path / "missing.key")


def test_server_context_combined_chain_file(tmp_path: Path) -> None:
    pair = ensure_self_signed(tmp_path, "mail.example.test")
    combined = tmp_path / "combined.pem"
    combined.write_bytes(pair.key.read_bytes() + pair.chain.read_bytes())
    assert server_context(combined, None).minimum_version == ssl.TLSVersion.TLSv1_2


MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# -- MailLog --------------------------------------------------------------------------

LINE = re.compile(
    r"^(?P<mon>Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (?P<day>[ \d]\d) "
    r"(?P<time>\d\d:\d\d:\d\d) (?P<host>\S+) (?P<tag>\S+)\[(?P<pid>\d+)\]: (?P<text>.*)\n$"
)


def _log() -> tuple[MailLog, io.StringIO]:
    out = io.StringIO()
    return MailLog(out, hostname="mail.example.test", clock=lambda: NOW), out


def test_maillog_line_format() -> None:
    log, out = _log()
    log.emit("smtpd", "connect from client.example[192.0.2.1]")
    m = LINE.match(out.getvalue())
    assert m is not None, out.getvalue()
    t = time.localtime(NOW)
    assert m["mon"] == MONTHS[t.tm_mon - 1]  # English, whatever the locale
    assert int(m["day"]) == t.tm_mday and len(m["day"]) == 2
    assert m["time"] == f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    assert m["host"] == "mail"  # short hostname, as syslog writes it
    assert m["tag"] == "ironpost/smtpd"
    assert int(m["pid"]) == os.getpid()
    assert m["text"] == "connect from client.example[192.0.2.1]"


def test_maillog_syslog_name_and_day_padding() -> None:
    out = io.StringIO()
    # 2026-03-05 12:00 UTC: a single-digit day in any timezone within ±11h.
    when = 1_772_712_000.0
    log = MailLog(out, hostname="mx", syslog_name="ironpost/submission", clock=lambda: when)
    log.emit("smtpd", "x")
    m = LINE.match(out.getvalue())
    assert m is not None
    assert m["day"] == f"{time.localtime(when).tm_mday:2d}"
    assert m["host"] == "mx" and m["tag"] == "ironpost/submission/smtpd"


@pytest.mark.parametrize(
    "hostile",
    [
        "a\nJan  1 00:00:00 mail ironpost/smtpd[1]: forged",
        "a\r\nb",
        "a\rb",
        "nul\x00byte",
        "esc\x1b[31m",
        "line\u2028sep",
        "next\x85line",
    ],
)
def test_maillog_control_characters_cannot_split_a_line(hostile: str) -> None:
    log, out = _log()
    log.emit("smtpd", f"reject: RCPT from x: {hostile}")
    value = out.getvalue()
    assert value.count("\n") == 1 and value.endswith("\n")
    assert value[:-1].isprintable()
    assert len(value.splitlines()) == 1
    assert LINE.match(value) is not None


@given(st.text(max_size=200))
def test_maillog_property_one_event_one_line(text: str) -> None:
    log, out = _log()
    log.emit("qmgr", text)
    value = out.getvalue()
    assert value.endswith("\n") and value[:-1].isprintable()
    assert len(value.splitlines()) == 1
    if text.isprintable():
        assert value.endswith(f": {text}\n")


def test_maillog_delivery_wording() -> None:
    log, out = _log()
    log.delivery(
        "virtual",
        "4XyZabc",
        to="alice@example.test",
        orig_to="team@example.test",
        relay="virtual",
        delay=0.5,
        delays=(0.001, 0.02, 0.5, 12.3),
        dsn="2.0.0",
        status="sent",
        detail="delivered to maildir",
    )
    m = LINE.match(out.getvalue())
    assert m is not None and m["tag"] == "ironpost/virtual"
    assert m["text"] == (
        "4XyZabc: to=<alice@example.test>, orig_to=<team@example.test>, relay=virtual, "
        "delay=0.5, delays=0/0.02/0.5/12, dsn=2.0.0, status=sent (delivered to maildir)"
    )


def test_maillog_delivery_omits_orig_to_when_same_or_absent() -> None:
    for orig in ("bob@example.test", None):
        log, out = _log()
        log.delivery(
            "smtp",
            "Q1",
            to="bob@example.test",
            orig_to=orig,
            relay="mx.remote.test[192.0.2.7]:25",
            delay=42.4,
            delays=(0.0, 0.0, 1.25, 41.0),
            dsn="4.4.1",
            status="deferred",
            detail="connect to mx.remote.test[192.0.2.7]:25: Connection refused",
        )
        m = LINE.match(out.getvalue())
        assert m is not None
        assert m["text"] == (
            "Q1: to=<bob@example.test>, relay=mx.remote.test[192.0.2.7]:25, delay=42, "
            "delays=0/0/1.2/41, dsn=4.4.1, status=deferred "
            "(connect to mx.remote.test[192.0.2.7]:25: Connection refused)"
        )


def test_maillog_delivery_escapes_hostile_detail() -> None:
    log, out = _log()
    log.delivery(
        "smtp",
        "Q2",
        to="x@remote.test",
        orig_to=None,
        relay="none",
        delay=1,
        delays=(0, 0, 0, 1),
        dsn="5.0.0",
        status="bounced",
        detail="host said: 550 no\r\nJan  1 00:00:00 mail ironpost/smtp[1]: Q3: status=sent",
    )
    value = out.getvalue()
    assert len(value.splitlines()) == 1
    assert "status=bounced (host said: 550 no\\r\\nJan" in value
