"""RFC 3464 notices: structure checked by parsing the bytes with the ``email`` package."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from email.message import EmailMessage, Message

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ironpost.delivery.bounce import (
    Action,
    NoticeKind,
    RecipientReport,
    bounce_recipient_for,
    build_dsn,
    double_bounce_sender,
    header_section,
    notice_kind,
    should_notify,
    to_crlf,
)
from ironpost.queue.model import ClientInfo, Envelope, RecipientSpec

NOW = 1_700_100_000.0
ARRIVAL = 1_700_000_000.0
HOST = "mail.example.org"
ORIGINAL = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: hello\r\n"
    b"Message-ID: <orig-1@example.org>\r\n"
    b"\r\n"
    b"The body line one.\r\n"
    b"SECRET-BODY-MARKER\r\n"
)


def envelope(
    *, ret: str | None = None, envid: str | None = None, smtputf8: bool = False, sender: str = ""
) -> Envelope:
    return Envelope(
        sender=sender or "alice@example.org",
        recipients=(RecipientSpec("bob@example.net", "bob@example.net"),),
        size=len(ORIGINAL),
        body_type=None,
        smtputf8=smtputf8,
        ret=ret,
        envid=envid,
        client=ClientInfo("192.0.2.7", "client.example.org", "client.example.org", "ESMTP"),
        arrival=ARRIVAL,
    )


FAILED = RecipientReport(
    final_recipient="bob@example.net",
    action=Action.FAILED,
    status="5.1.1",
    reason="host mx.example.net[192.0.2.1] said: 550 5.1.1 no such user (in reply to RCPT TO)",
    remote_mta="mx.example.net",
    diagnostic="550 5.1.1 no such user",
    last_attempt=NOW - 10,
)
DELAYED = RecipientReport(
    final_recipient="carol@example.net",
    action=Action.DELAYED,
    status="4.4.1",
    reason="connect to mx.example.net[192.0.2.1]:25: Connection refused",
    last_attempt=NOW - 5,
    will_retry_until=ARRIVAL + 5 * 86400,
)
DELIVERED = RecipientReport(
    final_recipient="dave@example.net",
    action=Action.DELIVERED,
    status="2.0.0",
    reason="delivered to mailbox",
)
RELAYED = RecipientReport(
    final_recipient="erin@example.net",
    action=Action.RELAYED,
    status="2.0.0",
    reason="relayed to non-DSN-aware mailer",
    remote_mta="mx.example.net",
    diagnostic="250 2.0.0 Ok: queued as ABC",
)


def build(reports: list[RecipientReport], *, env: Envelope | None = None, **kw: object) -> bytes:
    args: dict[str, object] = {
        "envelope": env or envelope(),
        "queue_id": "0123456789ABCDEF",
        "reports": reports,
        "content": ORIGINAL,
        "hostname": HOST,
        "bounce_size_limit": 50000,
        "now": NOW,
        "message_id": lambda: "<dsn-1@mail.example.org>",
    }
    args.update(kw)
    return build_dsn(**args)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(msg: EmailMessage) -> list[Message]:
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    payload = msg.get_payload()
    assert isinstance(payload, list)
    assert len(payload) == 3
    return payload


def status_blocks(part: Message) -> list[Message]:
    """message/delivery-status parses into [per-message, per-recipient...] blocks."""
    blocks = part.get_payload()
    assert isinstance(blocks, list)
    return blocks


def assert_crlf_only(data: bytes) -> None:
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")


# -- structure ------------------------------------------------------------------------


def test_failure_dsn_structure() -> None:
    data = build([FAILED])
    assert_crlf_only(data)
    msg = parse(data)
    assert b"\r\nFrom: MAILER-DAEMON@mail.example.org (Mail Delivery System)\r\n" in b"\r\n" + data
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mail.example.org"
    assert msg["To"].addresses[0].addr_spec == "alice@example.org"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Message-ID"] == "<dsn-1@mail.example.org>"
    assert msg["Date"] is not None
    human, report, original = parts(msg)
    assert human.get_content_type() == "text/plain"
    text = human.get_payload(decode=True).decode()
    assert "This is the mail system at host mail.example.org." in text
    assert "I'm sorry to have to inform you" in text
    assert "<bob@example.net>: host mx.example.net[192.0.2.1] said: 550 5.1.1" in text
    assert report.get_content_type() == "message/delivery-status"
    per_message, per_rcpt = status_blocks(report)
    assert per_message["Reporting-MTA"] == "dns; mail.example.org"
    assert per_message["X-Ironpost-Queue-ID"] == "0123456789ABCDEF"
    assert per_message["Arrival-Date"] is not None
    assert per_message["Original-Envelope-Id"] is None
    assert per_rcpt["Final-Recipient"] == "rfc822; bob@example.net"
    assert per_rcpt["Action"] == "failed"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Remote-MTA"] == "dns; mx.example.net"
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert per_rcpt["Last-Attempt-Date"] is not None
    assert per_rcpt["Will-Retry-Until"] is None
    # No RET: Postfix's choice, the full message.
    assert original.get_content_type() == "message/rfc822"
    inner = original.get_payload()[0]
    assert inner["Subject"] == "hello"
    assert b"SECRET-BODY-MARKER" in data


def test_ret_hdrs_returns_headers_only() -> None:
    data = build([FAILED], env=envelope(ret="HDRS"))
    original = parts(parse(data))[2]
    assert original.get_content_type() == "text/rfc822-headers"
    assert b"Subject: hello" in data
    assert b"SECRET-BODY-MARKER" not in data


def test_ret_full_returns_everything() -> None:
    data = build([FAILED], env=envelope(ret="FULL"))
    assert parts(parse(data))[2].get_content_type() == "message/rfc822"
    assert b"SECRET-BODY-MARKER" in data


def test_delay_warning() -> None:
    data = build([DELAYED])
    msg = parse(data)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    human, report, original = parts(msg)
    text = human.get_payload(decode=True).decode()
    assert "THIS IS A WARNING ONLY" in text
    assert "for more than 27 hour(s)" in text
    assert "until it is 5 day(s) old" in text
    rcpt = status_blocks(report)[1]
    assert rcpt["Action"] == "delayed"
    assert rcpt["Status"] == "4.4.1"
    assert rcpt["Will-Retry-Until"] is not None
    assert rcpt["Diagnostic-Code"].startswith("X-Ironpost; connect to mx.example.net")
    assert rcpt["Remote-MTA"] is None
    # Delay notices return the headers only, unless RET=FULL.
    assert original.get_content_type() == "text/rfc822-headers"
    assert b"SECRET-BODY-MARKER" not in data
    assert b"SECRET-BODY-MARKER" in build([DELAYED], env=envelope(ret="FULL"))


@pytest.mark.parametrize("report", [DELIVERED, RELAYED])
def test_success_notice(report: RecipientReport) -> None:
    data = build([report])
    msg = parse(data)
    assert msg["Subject"] == "Successful Mail Delivery Report"
    human, status, original = parts(msg)
    assert "successfully delivered" in human.get_payload(decode=True).decode()
    assert status_blocks(status)[1]["Action"] == report.action.value
    assert original.get_content_type() == "text/rfc822-headers"


def test_several_recipients_one_block_each() -> None:
    data = build([FAILED, dataclasses.replace(FAILED, final_recipient="zed@example.net")])
    blocks = status_blocks(parts(parse(data))[1])
    assert [b["Final-Recipient"] for b in blocks[1:]] == [
        "rfc822; bob@example.net",
        "rfc822; zed@example.net",
    ]


def test_envid_and_orcpt() -> None:
    report = dataclasses.replace(
        FAILED, orcpt="rfc822;Bob@Example.NET", original_recipient="bob@example.net"
    )
    data = build([report], env=envelope(envid="QQ314159"))
    per_message, per_rcpt = status_blocks(parts(parse(data))[1])
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert per_rcpt["Original-Recipient"] == "rfc822;Bob@Example.NET"


def test_original_recipient_without_orcpt_is_the_address_as_received() -> None:
    report = dataclasses.replace(FAILED, original_recipient="team@example.net")
    data = build([report])
    per_rcpt = status_blocks(parts(parse(data))[1])[1]
    assert per_rcpt["Original-Recipient"] == "rfc822; team@example.net"
    text = parts(parse(data))[0].get_payload(decode=True).decode()
    assert "<bob@example.net> (expanded from <team@example.net>)" in text


def test_truncation_at_bounce_size_limit_cuts_at_a_line_end() -> None:
    body = b"".join(b"line %05d of the body\r\n" % i for i in range(5000))
    content = b"Subject: big\r\n\r\n" + body
    data = build([FAILED], content=content, bounce_size_limit=1000)
    inner = parts(parse(data))[2].get_payload()[0]
    returned = inner.as_bytes()
    assert len(data) < 5000
    assert b"line 00000" in data
    assert b"line 04999" not in data
    # Whole lines only.
    assert data.count(b" of the body\r\n") == data.count(b"line 0")
    assert returned


def test_recipient_override_for_double_bounce() -> None:
    data = build([FAILED], env=envelope(sender=""), recipient="postmaster@example.org")
    assert parse(data)["To"].addresses[0].addr_spec == "postmaster@example.org"


def test_message_id_brackets_added() -> None:
    data = build([FAILED], message_id=lambda: "abc@mail.example.org")
    assert parse(data)["Message-ID"] == "<abc@mail.example.org>"


def test_no_reports_is_an_error() -> None:
    with pytest.raises(ValueError):
        build([])


# -- hostile input ----------------------------------------------------------------------


def test_hostile_diagnostic_cannot_inject_fields_or_parts() -> None:
    evil = "550 no\r\nAction: delivered\r\n\r\n--0123456789ABCDEF\r\nContent-Type: text/html"
    report = dataclasses.replace(FAILED, diagnostic=evil, reason=evil, remote_mta="a\nb")
    data = build([report])
    assert_crlf_only(data)
    blocks = status_blocks(parts(parse(data))[1])
    assert len(blocks) == 2
    assert blocks[1]["Action"] == "failed"
    assert b"\r\nAction: delivered" not in data


def test_long_diagnostic_is_folded() -> None:
    report = dataclasses.replace(FAILED, diagnostic="550 " + "word " * 500)
    data = build([report])
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    rcpt = status_blocks(parts(parse(data))[1])[1]
    assert rcpt["Diagnostic-Code"].startswith("smtp; 550 word word")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"no header separator at all",
        b"\r\nbody without headers\r\n",
        b"\x00\x01\x02\xff\xfe binary\n\rmixed\rline\nends",
        b"Subject: x\n\nbare LF message\n",
        b"--0123456789ABCDEF.1700100000/mail.example.org\r\n\r\n--x--\r\n",
        b"Subject: \xe9t\xe9\r\n\r\n8-bit body \xc3\xa9\r\n",
    ],
)
@pytest.mark.parametrize("ret", [None, "HDRS", "FULL"])
def test_weird_original_content(content: bytes, ret: str | None) -> None:
    data = build([FAILED], env=envelope(ret=ret), content=content)
    assert_crlf_only(data)
    msg = parse(data)
    _, report, original = parts(msg)
    assert status_blocks(report)[1]["Action"] == "failed"
    expected = "text/rfc822-headers" if ret == "HDRS" else "message/rfc822"
    assert original.get_content_type() == expected
    assert not msg.defects


def test_boundary_look_alike_in_content_changes_the_boundary() -> None:
    look_alike = b"--0123456789ABCDEF.1700100000/mail.example.org\r\n"
    data = build([FAILED], content=b"Subject: x\r\n\r\n" + look_alike)
    msg = parse(data)
    assert msg.get_boundary() != "0123456789ABCDEF.1700100000/mail.example.org"
    assert len(parts(msg)) == 3


def test_smtputf8_uses_global_types() -> None:
    report = dataclasses.replace(FAILED, final_recipient="jürgen@exämple.net")
    env = dataclasses.replace(envelope(smtputf8=True), sender="ålice@example.org")
    data = build([report], env=env)
    msg = parse(data)
    # UTF-8 in the header itself (RFC 6532); the email package reads it surrogate-escaped.
    assert "\r\nTo: <ålice@example.org>\r\n" in data.decode("utf-8")
    human, status, original = msg.get_payload()
    assert human.get_content_charset() == "utf-8"
    assert status.get_content_type() == "message/global-delivery-status"
    assert original.get_content_type() == "message/global"
    assert "Final-Recipient: utf-8; jürgen@exämple.net" in data.decode("utf-8")


def test_non_ascii_in_classic_dsn_is_xtext_encoded() -> None:
    report = dataclasses.replace(FAILED, final_recipient="jürgen@example.net")
    data = build([report])
    assert data.isascii()
    assert b"Final-Recipient: utf-8; j\\x{FC}rgen@example.net" in data


@settings(max_examples=200, deadline=None)
@given(
    content=st.binary(max_size=3000),
    ret=st.sampled_from([None, "HDRS", "FULL"]),
    limit=st.integers(min_value=1, max_value=4000),
    diagnostic=st.text(max_size=300),
)
def test_any_content_gives_a_parseable_dsn(
    content: bytes, ret: str | None, limit: int, diagnostic: str
) -> None:
    report = dataclasses.replace(FAILED, diagnostic=diagnostic or None, reason=diagnostic)
    data = build([report], env=envelope(ret=ret), content=content, bounce_size_limit=limit)
    assert_crlf_only(data)
    msg = parse(data)
    _, status, _ = parts(msg)
    blocks = status_blocks(status)
    assert len(blocks) == 2
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Final-Recipient"] == "rfc822; bob@example.net"


# -- helpers ----------------------------------------------------------------------------


def test_to_crlf_and_header_section() -> None:
    assert to_crlf(b"a\nb\rc\r\nd") == b"a\r\nb\r\nc\r\nd"
    assert header_section(b"A: 1\r\nB: 2\r\n\r\nbody") == b"A: 1\r\nB: 2\r\n"
    assert header_section(b"\r\nbody") == b""
    assert header_section(b"A: 1\r\n") == b"A: 1\r\n"


@pytest.mark.parametrize(
    ("notify", "action", "expected"),
    [
        (None, Action.FAILED, True),
        (None, Action.DELAYED, True),
        (None, Action.DELIVERED, False),
        (None, Action.RELAYED, False),
        (("NEVER",), Action.FAILED, False),
        (("NEVER",), Action.DELAYED, False),
        (("SUCCESS",), Action.DELIVERED, True),
        (("SUCCESS",), Action.RELAYED, True),
        (("SUCCESS",), Action.EXPANDED, True),
        (("SUCCESS",), Action.FAILED, False),
        (("FAILURE",), Action.FAILED, True),
        (("FAILURE",), Action.DELAYED, False),
        (("DELAY",), Action.DELAYED, True),
        (("SUCCESS", "FAILURE", "DELAY"), Action.DELAYED, True),
    ],
)
def test_should_notify(notify: tuple[str, ...] | None, action: Action, expected: bool) -> None:
    assert should_notify(notify, action) is expected


class FakeSettings:
    def __init__(self, **values: str) -> None:
        self.values = {
            "myorigin": "example.org",
            "double_bounce_sender": "double-bounce",
            "2bounce_notice_recipient": "postmaster",
            **values,
        }

    def text(self, name: str) -> str:
        return self.values[name]


def test_bounce_recipient_rules() -> None:
    s = FakeSettings()
    assert double_bounce_sender(s) == "double-bounce@example.org"
    normal = bounce_recipient_for("alice@example.net", s)
    assert (normal.recipient, normal.sender, normal.is_double_bounce) == (
        "alice@example.net",
        "",
        False,
    )
    double = bounce_recipient_for("", s)
    assert (double.recipient, double.sender, double.is_double_bounce) == (
        "postmaster@example.org",
        "double-bounce@example.org",
        True,
    )
    # A failed double bounce is discarded: no loop.
    assert bounce_recipient_for("Double-Bounce@example.org", s).recipient is None
    # The null sender never gets a delay or success notice.
    assert bounce_recipient_for("", s, NoticeKind.DELAY).recipient is None
    assert bounce_recipient_for("", s, NoticeKind.SUCCESS).recipient is None
    assert bounce_recipient_for("a@b.example", s, NoticeKind.DELAY).recipient == "a@b.example"
    qualified = FakeSettings(**{"2bounce_notice_recipient": "admin@ops.example"})
    assert bounce_recipient_for("", qualified).recipient == "admin@ops.example"


def test_notice_kind() -> None:
    assert notice_kind([DELIVERED, DELAYED, FAILED]) is NoticeKind.FAILURE
    assert notice_kind([DELIVERED, DELAYED]) is NoticeKind.DELAY
    assert notice_kind([DELIVERED, RELAYED]) is NoticeKind.SUCCESS
