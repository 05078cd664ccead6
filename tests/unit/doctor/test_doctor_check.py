"""The Check type, the exit status and both renderings."""

from __future__ import annotations

import json

import pytest

from ironpost.doctor.check import Check, exit_status, render_json, render_text


def test_a_problem_without_a_fix_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a fix"):
        Check("names", "fail", "PTR", "none")
    with pytest.raises(ValueError, match="bad status"):
        Check("names", "ok", "PTR", "none")  # type: ignore[arg-type]


def test_exit_status_is_nonzero_only_on_a_fail() -> None:
    ok = Check("a", "pass", "t", "d")
    warn = Check("a", "warn", "t", "d", "f")
    fail = Check("a", "fail", "t", "d", "f")
    assert exit_status([ok, warn]) == 0
    assert exit_status([ok, warn, fail]) == 1
    assert exit_status([]) == 0


def test_text_shows_status_title_detail_and_fix() -> None:
    checks = [
        Check("names", "pass", "MX example.org", "MX mail.example.org"),
        Check("names", "fail", "PTR 192.0.2.10", "no PTR record", "ask the provider"),
    ]
    text = render_text(checks, "header")
    assert text.splitlines() == [
        "header",
        "PASS  MX example.org: MX mail.example.org",
        "FAIL  PTR 192.0.2.10: no PTR record",
        "      fix: ask the provider",
        "1 passed, 0 warnings, 1 failed",
    ]


def test_json_carries_every_field_and_the_verdict() -> None:
    checks = [Check("tls", "warn", "TLS", "self-signed", "get a certificate")]
    document = json.loads(render_json(checks, hostname="mail.example.org"))
    assert document["ok"] is True
    assert document["hostname"] == "mail.example.org"
    assert document["summary"] == {"pass": 0, "warn": 1, "fail": 0}
    assert document["checks"] == [
        {
            "family": "tls",
            "status": "warn",
            "title": "TLS",
            "detail": "self-signed",
            "fix": "get a certificate",
        }
    ]
