"""``ironpost passwd``: the file the config names, passwords from stdin or a prompt."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ironpost.cli.common import DEFAULT_CONFIG_DIR
from ironpost.cli.main import main
from ironpost.cli.passwd import PasswordInputError, read_password
from ironpost.sasl.hashes import verify
from ironpost.sasl.passwd import PasswdFile

PW = "Correct-Horse-7"


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    d = tmp_path / "etc"
    d.mkdir()
    (d / "main.cf").write_text("")
    return d


def cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(["passwd", *argv])
    out, err = capsys.readouterr()
    assert PW not in out and PW not in err
    return code, out, err


def test_add_list_set_delete(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config_dir / "passwd"
    code, out, _ = cli(monkeypatch, capsys, "add", "-c", str(config_dir), "alice", stdin=PW + "\n")
    assert code == 0 and f"alice: added to {path}" in out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = PasswdFile(path).lookup("alice")
    assert entry is not None and verify(entry.password, PW) and entry.scram is not None

    code, _, err = cli(monkeypatch, capsys, "add", "-c", str(config_dir), "alice", stdin="x\n")
    assert code == 1 and "alice: user already exists" in err

    cli(monkeypatch, capsys, "add", "-c", str(config_dir), "bob@Example.org", stdin="b\r\n")
    code, out, _ = cli(monkeypatch, capsys, "list", "-c", str(config_dir))
    assert code == 0 and out == "alice\nbob@example.org\n"  # names only

    code, out, _ = cli(
        monkeypatch, capsys, "set", "-c", str(config_dir), "--no-scram", "alice", stdin="new\n"
    )
    assert code == 0 and "password changed" in out
    entry = PasswdFile(path).lookup("alice")
    assert entry is not None and verify(entry.password, "new") and entry.scram is None
    bob = PasswdFile(path).lookup("bob@example.org")
    assert bob is not None and verify(bob.password, "b")  # the CR of CRLF is not kept

    code, _, err = cli(monkeypatch, capsys, "set", "-c", str(config_dir), "carol", stdin="x\n")
    assert code == 1 and "carol: no such user" in err

    code, out, _ = cli(monkeypatch, capsys, "delete", "-c", str(config_dir), "alice")
    assert code == 0 and "alice: deleted" in out
    code, _, err = cli(monkeypatch, capsys, "delete", "-c", str(config_dir), "alice")
    assert code == 1 and "no such user" in err
    assert PasswdFile(path).users() == ["bob@example.org"]


def test_mail_config_selects_the_file(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (config_dir / "main.cf").write_text("smtpd_sasl_passwd_file = auth/users\n")
    (config_dir / "auth").mkdir()
    monkeypatch.setenv("MAIL_CONFIG", str(config_dir))
    code, _, _ = cli(monkeypatch, capsys, "add", "alice", stdin=PW + "\n")
    assert code == 0
    assert PasswdFile(config_dir / "auth" / "users").users() == ["alice"]


def test_embedded_config_uses_data_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if (DEFAULT_CONFIG_DIR / "main.cf").is_file():
        pytest.skip("a system configuration exists; this test must not touch it")
    monkeypatch.delenv("MAIL_CONFIG", raising=False)
    monkeypatch.setenv("IRONPOST_DATA_DIR", str(tmp_path / "data"))
    code, _, err = cli(monkeypatch, capsys, "add", "alice", stdin=PW + "\n")
    assert code == 0, err
    assert PasswdFile(tmp_path / "data" / "passwd").users() == ["alice"]


@pytest.mark.parametrize("stdin", ["", "\n"])
def test_empty_password_is_refused(
    config_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stdin: str,
) -> None:
    code, _, err = cli(monkeypatch, capsys, "add", "-c", str(config_dir), "alice", stdin=stdin)
    assert code == 1 and "empty password" in err
    assert not (config_dir / "passwd").exists()


def test_bad_user_name_is_refused_before_the_password_is_read(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(monkeypatch, capsys, "add", "-c", str(config_dir), "a:b", stdin="")
    assert code == 1 and "refused user name" in err and "':'" in err


def test_password_is_not_an_argument(config_dir: Path) -> None:
    with pytest.raises(SystemExit):
        main(["passwd", "add", "-c", str(config_dir), "alice", PW])


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_prompt_asks_twice_on_a_terminal() -> None:
    answers = iter([PW, PW])
    prompts: list[str] = []

    def prompt(text: str) -> str:
        prompts.append(text)
        return next(answers)

    assert read_password(Tty(), prompt) == PW
    assert len(prompts) == 2
    answers = iter([PW, PW + "x"])
    with pytest.raises(PasswordInputError, match="do not match"):
        read_password(Tty(), prompt)


def test_installed_command_reads_stdin(config_dir: Path) -> None:
    exe = Path(sys.executable).with_name("ironpost")
    if not exe.exists():
        pytest.skip("ironpost entry point not installed in this environment")
    env = {**os.environ, "MAIL_CONFIG": str(config_dir)}
    done = subprocess.run(
        [str(exe), "passwd", "add", "alice"],
        input=PW + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    entry = PasswdFile(config_dir / "passwd").lookup("alice")
    assert entry is not None and verify(entry.password, PW)
