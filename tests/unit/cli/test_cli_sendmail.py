"""sendmail(1) compatibility: options, message preparation, sysexits, -bs, MAIL_CONFIG."""

from __future__ import annotations

import email
import email.policy
import io
import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.cli import common
from ironpost.cli.sendmail import (
    EX_CONFIG,
    EX_DATAERR,
    EX_OK,
    EX_USAGE,
    Injector,
    SendmailError,
    command_line_recipients,
    envelope_sender,
    header_recipients,
    load_settings,
    parse_invocation,
    prepare_message,
    qualify,
    read_message,
    sendmail_main,
    split_header,
)
from ironpost.cli.sendmail_bs import smtp_session
from ironpost.queue import open_queue

NOW = 1_700_000_000.0


def prepare(content: bytes, **kw: object) -> tuple[bytes, list[str]]:
    args: dict[str, object] = {
        "sender": "alice@example.test",
        "full_name": None,
        "hostname": "mail.example.test",
        "queue_id": "QID0000000000001",
        "uid": 1000,
        "now": NOW,
    }
    args.update(kw)
    return prepare_message(content, **args)  # type: ignore[arg-type]


# -- options --------------------------------------------------------------------------


def test_options_postfix_style() -> None:
    inv = parse_invocation(["-t", "-oi", "-f", "bob@x.test", "-F", "Bob", "-C", "/cfg", "a@b.c"])
    assert inv.extract and inv.ignore_dots
    assert (inv.sender, inv.full_name, inv.config_dir) == ("bob@x.test", "Bob", "/cfg")
    assert inv.recipients == ["a@b.c"]
    assert inv.mode == "deliver"
    assert parse_invocation(["-i"]).ignore_dots
    assert not parse_invocation([]).ignore_dots
    assert parse_invocation(["-rbob@x.test"]).sender == "bob@x.test"


def test_modes() -> None:
    assert parse_invocation(["-bs"]).mode == "smtp"
    assert parse_invocation(["-bp"]).mode == "list"
    assert parse_invocation(["-bm", "x@y.z"]).mode == "deliver"
    assert parse_invocation([], program="mailq").mode == "list"
    assert parse_invocation(["-q"]).mode == "flush"


@pytest.mark.parametrize(
    "ignored", [["-odi"], ["-odb"], ["-oem"], ["-v"], ["-O", "Timeout=1"], ["-oA/x"], ["-m"]]
)
def test_ignored_options(ignored: list[str]) -> None:
    inv = parse_invocation([*ignored, "a@b.c"])
    assert inv.recipients == ["a@b.c"]


def test_dsn_options_are_honoured() -> None:
    inv = parse_invocation(["-N", "success,delay", "-R", "hdrs", "-V", "ENV1", "-B", "8bitmime"])
    assert inv.notify == ("SUCCESS", "DELAY")
    assert (inv.ret, inv.envid, inv.body_type) == ("HDRS", "ENV1", "8BITMIME")
    assert parse_invocation(["-N", "never"]).notify == ("NEVER",)


@pytest.mark.parametrize(
    "argv", [["-Z"], ["-f"], ["-bd"], ["-bi"], ["-I"], ["-N", "bogus"], ["-R", "x"], ["-B", "x"]]
)
def test_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SendmailError) as exc:
        parse_invocation(argv)
    assert exc.value.status == EX_USAGE


# -- reading the message ------------------------------------------------------------------


def test_lone_dot_ends_input_without_i() -> None:
    data = b"Subject: x\n\nline\n.\nnot part of it\n"
    assert read_message(data, ignore_dots=False) == b"Subject: x\r\n\r\nline\r\n"
    assert read_message(data, ignore_dots=True) == (
        b"Subject: x\r\n\r\nline\r\n.\r\nnot part of it\r\n"
    )


def test_dot_rules_details() -> None:
    # Only a line that is exactly "." ends input; ".." and ".x" are kept, not unstuffed.
    assert read_message(b"a\n..\n.x\n", ignore_dots=False) == b"a\r\n..\r\n.x\r\n"
    assert read_message(b"a\r\n.\r\nb", ignore_dots=False) == b"a\r\n"
    assert read_message(b".\n", ignore_dots=False) == b""
    assert read_message(b"a\n.", ignore_dots=False) == b"a\r\n"


def test_lf_to_crlf_and_mbox_from_line() -> None:
    assert read_message(b"From alice Mon Jan 1\nA: 1\n\nb\n", ignore_dots=True) == (
        b"A: 1\r\n\r\nb\r\n"
    )


@given(st.binary(max_size=500), st.booleans())
def test_read_message_always_crlf(data: bytes, ignore_dots: bool) -> None:
    out = read_message(data, ignore_dots=ignore_dots)
    assert b"\n" not in out.replace(b"\r\n", b"")
    assert b"\r" not in out.replace(b"\r\n", b"")


# -- headers ------------------------------------------------------------------------------


def test_missing_headers_are_added() -> None:
    content, _ = prepare(b"Subject: hi\r\n\r\nbody\r\n")
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert msg["Message-ID"] == "<20231114221320.QID0000000000001@mail.example.test>"
    assert msg["Date"] is not None
    assert msg["From"] == "alice@example.test"
    assert msg["Subject"] == "hi"
    assert content.startswith(b"Received: by mail.example.test (ironpost, from userid 1000)\r\n")
    assert b"\tid QID0000000000001; " in content
    assert msg.get_content().strip() == "body"


def test_present_headers_are_kept() -> None:
    original = b"From: Me <me@x.test>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    original += b"Message-ID: <keep@x.test>\r\n\r\nbody\r\n"
    content, _ = prepare(original)
    assert content.endswith(original)
    assert content.count(b"Message-ID") == 1


def test_full_name_in_from() -> None:
    content, _ = prepare(b"\r\nbody\r\n", full_name="Alice Liddell")
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert str(msg["From"]) == "Alice Liddell <alice@example.test>"


def test_bcc_removed_and_t_recipients() -> None:
    original = (
        b"To: Bob <bob@example.test>, carol@example.test\r\n"
        b"Cc: dave@example.test\r\n"
        b"Bcc: hidden@example.test,\r\n\tother@example.test\r\n"
        b"Subject: x\r\n\r\nbody\r\n"
    )
    content, rcpts = prepare(original)
    assert rcpts == [
        "bob@example.test",
        "carol@example.test",
        "dave@example.test",
        "hidden@example.test",
        "other@example.test",
    ]
    assert b"hidden" not in content and b"Bcc" not in content
    assert b"Cc: dave@example.test\r\n" in content


def test_resent_headers_take_precedence_for_t() -> None:
    fields, _ = split_header(b"To: a@x.test\r\nResent-To: b@x.test\r\nResent-Bcc: c@x.test\r\n\r\n")
    assert header_recipients(fields) == ["b@x.test", "c@x.test"]


def test_body_without_header_gets_a_separator() -> None:
    fields, body = split_header(b"just text\r\nmore\r\n")
    assert fields == [] and body == b"\r\njust text\r\nmore\r\n"
    fields, body = split_header(b"A: 1\r\nnot a header\r\n")
    assert fields == [b"A: 1\r\n"] and body == b"\r\nnot a header\r\n"
    content, _ = prepare(b"just text\r\n")
    msg = email.message_from_bytes(content, policy=email.policy.default)
    assert msg.get_content().strip() == "just text"


# -- addresses ------------------------------------------------------------------------------


def test_qualify() -> None:
    assert qualify("bob", myorigin="example.test", append=True) == "bob@example.test"
    assert qualify("<bob@x.test>", myorigin="example.test", append=True) == "bob@x.test"
    for bad in ("bob", "a b@x.test", "x@", "@x"):
        with pytest.raises(SendmailError) as exc:
            qualify(bad, myorigin="example.test", append=False)
        assert exc.value.status == EX_DATAERR


def test_envelope_sender() -> None:
    kw = {"user": "www", "myorigin": "example.test", "append": True}
    assert envelope_sender(None, **kw) == "www@example.test"  # type: ignore[arg-type]
    assert envelope_sender("", **kw) == ""  # type: ignore[arg-type]
    assert envelope_sender("<>", **kw) == ""  # type: ignore[arg-type]
    assert envelope_sender("Bob <bob@x.test>", **kw) == "bob@x.test"  # type: ignore[arg-type]


def test_command_line_recipients() -> None:
    assert command_line_recipients(["a@x.test, b@x.test", "c"]) == ["a@x.test", "b@x.test", "c"]
    with pytest.raises(SendmailError):
        command_line_recipients(["bad address@"])


# -- with a configuration and a real queue ----------------------------------------------------


@pytest.fixture
def config(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (tmp_path / "main.cf").write_text(
        textwrap.dedent(f"""\
        myhostname = mail.example.test
        mydomain = example.test
        myorigin = $mydomain
        mydestination = localhost
        virtual_mailbox_domains = example.test
        virtual_mailbox_maps = inline:{{ alice@example.test=example.test/alice/ }}
        virtual_alias_maps = inline:{{ {{ team@example.test = alice@example.test, b@x.test }} }}
        virtual_mailbox_base = {data}/mail
        queue_directory = {data}/queue
        data_directory = {data}
        maillog_file = {data}/maillog
        message_size_limit = 2000
        """)
    )
    return tmp_path


def run_main(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], stdin: bytes
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    code = sendmail_main(argv, program="sendmail")
    return code, out.getvalue(), err.getvalue()


def queued(config: Path) -> list[tuple[str, list[str], bytes]]:
    store = open_queue(config / "data" / "queue")
    try:
        return [
            (m.envelope.sender, [r.spec.address for r in m.recipients], store.read_content(m.id))
            for m in store.list_messages()
        ]  # type: ignore[misc]
    finally:
        store.close()


def test_injection_into_the_queue(monkeypatch: pytest.MonkeyPatch, config: Path) -> None:
    code, _, err = run_main(
        monkeypatch, ["-C", str(config), "-f", "web", "team"], b"Subject: t\n\nhello\n"
    )
    assert (code, err) == (EX_OK, "")
    [(sender, rcpts, content)] = queued(config)
    assert sender == "web@example.test"
    assert rcpts == ["alice@example.test", "b@x.test"]  # aliases expanded, as cleanup does
    assert content.endswith(b"\r\n\r\nhello\r\n")
    assert "pickup" in (config / "data" / "maillog").read_text()


def test_sysexits(monkeypatch: pytest.MonkeyPatch, config: Path, tmp_path: Path) -> None:
    c = str(config)
    assert run_main(monkeypatch, ["-C", c], b"x")[0] == EX_USAGE
    code, _, err = run_main(monkeypatch, ["-C", c, "-t"], b"Subject: no rcpt\n\nx\n")
    assert code == EX_USAGE and "No recipient" in err
    assert run_main(monkeypatch, ["-C", c, "a b@"], b"x")[0] == EX_DATAERR
    code, _, err = run_main(monkeypatch, ["-C", c, "a@x.test"], b"x" * 5000)
    assert code == EX_DATAERR and "too big" in err
    code, _, err = run_main(monkeypatch, ["-C", str(tmp_path / "nowhere"), "a@x.test"], b"x")
    assert code == EX_CONFIG and "sendmail: fatal:" in err
    assert queued(config) == []


def test_mailq_lists_the_queue(monkeypatch: pytest.MonkeyPatch, config: Path) -> None:
    code, out, _ = run_main(monkeypatch, ["-C", str(config), "-bp"], b"")
    assert (code, out) == (EX_OK, "Mail queue is empty\n")
    assert not (config / "data" / "queue").exists()  # listing creates nothing
    run_main(monkeypatch, ["-C", str(config), "alice"], b"x\n")
    code, out, _ = run_main(monkeypatch, ["-C", str(config), "-bp"], b"")
    assert "alice@example.test" in out and "1 Request." in out


def test_bs_session_queues_at_end_of_data(config: Path) -> None:
    injector = Injector(load_settings(str(config)), uid=1000)
    script = (
        b"EHLO client\r\nMAIL FROM:<web@example.test>\r\nRCPT TO:<alice@example.test>\r\n"
        b"RCPT TO:<bad address>\r\nDATA\r\nSubject: bs\r\n\r\nhello\r\n.\r\nQUIT\r\n"
    )
    r, w = os.pipe()
    os.write(w, script)
    os.close(w)
    out = io.BytesIO()
    with os.fdopen(r, "rb") as stdin:
        assert smtp_session(injector, stdin, out) == EX_OK
    lines = out.getvalue().split(b"\r\n")
    assert lines[0] == b"220 mail.example.test ESMTP ironpost"
    assert any(line.startswith(b"250 2.0.0 Ok: queued as ") for line in lines)
    assert b"501 5.1.3" in out.getvalue()
    assert lines[-2] == b"221 2.0.0 Bye"
    [(sender, rcpts, content)] = queued(config)
    assert (sender, rcpts) == ("web@example.test", ["alice@example.test"])
    assert b"Subject: bs\r\n" in content and content.endswith(b"\r\n\r\nhello\r\n")


# -- MAIL_CONFIG ----------------------------------------------------------------------------


def test_config_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    etc = tmp_path / "etc-ironpost"
    monkeypatch.setattr(common, "DEFAULT_CONFIG_DIR", etc)
    monkeypatch.delenv("MAIL_CONFIG", raising=False)
    assert common.default_config_dir() is None  # nothing: the embedded default
    etc.mkdir()
    assert common.default_config_dir() is None  # no main.cf there: still embedded
    (etc / "main.cf").write_text("")
    assert common.default_config_dir() == str(etc)
    monkeypatch.setenv("MAIL_CONFIG", "/from/env")
    assert common.default_config_dir() == "/from/env"
    from ironpost.cli.main import build_parser

    args = build_parser().parse_args(["queue", "list"])
    assert args.config_dir == "/from/env"
    args = build_parser().parse_args(["queue", "list", "-c", "/explicit"])
    assert args.config_dir == "/explicit"
