"""maillog_format = json: one object per line, Postfix's fields parsed, privacy first."""

from __future__ import annotations

import io
import json
import os

from ironpost.maillog import MailLog
from ironpost.maillog.privacy import Pseudonymizer

NOW = 1_772_712_000.25  # 2026-03-05T12:00:00.250Z


def _log(**kw: object) -> tuple[MailLog, io.StringIO]:
    out = io.StringIO()
    log = MailLog(
        out,
        hostname="mx.example.test",
        syslog_name="ironpost/submission",
        clock=lambda: NOW,
        log_format="json",
        **kw,  # type: ignore[arg-type]
    )
    return log, out


def test_delivery_line_as_json() -> None:
    log, out = _log()
    log.delivery(
        "smtp",
        "HOFIJWA41V000CH4",
        to="carol@relay.test",
        orig_to="team@example.test",
        relay="mx.relay.test[192.0.2.5]:25",
        delay=1.5,
        delays=(0, 0, 0.5, 1),
        dsn="2.0.0",
        status="sent",
        detail="250 2.0.0 Ok (queued as X)",
    )
    record = json.loads(out.getvalue())
    assert record["ts"] == "2026-03-05T12:00:00.250Z"
    assert record["host"] == "mx" and record["pid"] == os.getpid()
    assert record["service"] == "ironpost/submission/smtp"
    assert record["queue_id"] == "HOFIJWA41V000CH4" and record["event"] == "delivery"
    assert record["to"] == "carol@relay.test" and record["orig_to"] == "team@example.test"
    assert record["relay"] == "mx.relay.test[192.0.2.5]:25"
    assert record["delay"] == 1.5 and record["delays"] == "0/0/0.5/1.0"
    assert record["dsn"] == "2.0.0" and record["status"] == "sent"
    assert record["detail"] == "250 2.0.0 Ok (queued as X)"
    assert record["text"].startswith("HOFIJWA41V000CH4: to=<carol@relay.test>")


def test_events_and_numbers() -> None:
    log, out = _log()
    log.emit("qmgr", "Q1ABCDEF: from=<>, size=842, nrcpt=2 (queue active)")
    log.emit("smtpd", "connect from unknown[192.0.2.1]")
    log.emit("smtpd", "NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 5.7.1 x; from=<a@b.c>")
    log.emit("smtpd", "warning: something odd")
    queued, connect, reject, warning = (json.loads(x) for x in out.getvalue().splitlines())
    assert queued["event"] == "queued" and queued["from"] == "" and queued["size"] == 842
    assert queued["nrcpt"] == 2
    assert connect["event"] == "connect" and connect["queue_id"] is None
    assert reject["event"] == "reject" and reject["queue_id"] is None and reject["from"] == "a@b.c"
    assert warning["event"] == "warning" and warning["queue_id"] is None


def test_json_fields_come_from_the_scrubbed_text() -> None:
    log, out = _log(scrub=Pseudonymizer(bytes(32)))
    log.emit("smtpd", "Q1ABCDEF: client=host.example[192.0.2.1], sasl_username=alice@example.test")
    text = out.getvalue()
    assert "192.0.2.1" not in text and "alice" not in text and "host.example" not in text
    record = json.loads(text)
    assert record["client"].startswith("h-") and record["sasl_username"].startswith("u-")


def test_hostile_text_stays_one_json_line() -> None:
    log, out = _log()
    log.emit("smtpd", 'a\n{"forged": true}\r\x00"quote"')
    [line] = out.getvalue().splitlines()
    assert "forged" in json.loads(line)["text"]
