"""The config-facing CLI: ``ironpost config check`` and ``ironpost postconf``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ironpost.cli.main import main
from ironpost.config import PARAMS

Writer = Callable[..., Path]
MAIN = "myhostname = mx.example.org\nsmtpd_banner = $my_own ready\nmy_own = $myhostname\n"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_postconf_n_shows_explicit_sorted_unexpanded(
    write_config: Writer, capsys: pytest.CaptureFixture[str]
) -> None:
    d = write_config(MAIN)
    code, out, _ = _run(capsys, "postconf", "-c", str(d), "-n")
    assert code == 0
    assert out.splitlines() == [
        "my_own = $myhostname",
        "myhostname = mx.example.org",
        "smtpd_banner = $my_own ready",
    ]
    _, out, _ = _run(capsys, "postconf", "-c", str(d), "-nx", "smtpd_banner")
    assert out == "smtpd_banner = mx.example.org ready\n"


def test_postconf_d_and_effective(write_config: Writer, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_config(MAIN)
    _, out, _ = _run(capsys, "postconf", "-c", str(d), "-d", "smtpd_banner", "message_size_limit")
    assert out == "smtpd_banner = $myhostname ESMTP $mail_name\nmessage_size_limit = 10240000\n"
    _, out, _ = _run(capsys, "postconf", "-c", str(d))
    lines = out.splitlines()
    assert len(lines) == len(PARAMS) + 1  # + the user-defined my_own
    assert lines == sorted(lines)
    assert "smtpd_banner = $my_own ready" in lines
    assert "smtpd_timeout = 300s" in lines
    _, out, _ = _run(capsys, "postconf", "-c", str(d), "-h", "-x", "smtpd_banner")
    assert out == "mx.example.org ready\n"


def test_postconf_unknown_name_warns(
    write_config: Writer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "postconf", "-c", str(write_config(MAIN)), "nosuch")
    assert code == 0 and out == ""
    assert "postconf: warning: nosuch: unknown parameter" in err


def test_postconf_embedded(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MAIL_CONFIG", raising=False)
    monkeypatch.setenv("IRONPOST_DATA_DIR", str(tmp_path))
    code, out, err = _run(capsys, "postconf", "-n", "myhostname", "queue_directory")
    assert (code, err) == (0, "")
    assert out == f"myhostname = mail.example.test\nqueue_directory = {tmp_path}/queue\n"


def test_config_check_ok_and_warnings(
    write_config: Writer, capsys: pytest.CaptureFixture[str]
) -> None:
    d = write_config(MAIN + "smtp_sasl_auth_cache_name = btree:/var/lib/postfix/sasl_auth_cache\n")
    code, out, err = _run(capsys, "config", "check", "-c", str(d))
    assert code == 0
    assert out == "config OK (1 warning)\n"
    assert err.startswith(f"ironpost: warning: {d}/main.cf:4: smtp_sasl_auth_cache_name")


def test_config_check_error_exit_status(
    write_config: Writer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = write_config("myhostname = h.x.org\nmessage_size_limit = big\n")
    monkeypatch.setenv("MAIL_CONFIG", str(d))  # -c defaults to $MAIL_CONFIG
    code, _, err = _run(capsys, "config", "check")
    assert code == 1
    assert f"ironpost: error: {d}/main.cf:2: message_size_limit = big: not a number" in err
    with pytest.raises(SystemExit) as info:
        main(["postconf", "-n"])
    assert info.value.code == 1 and "not a number" in capsys.readouterr().err
