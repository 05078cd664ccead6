"""The passwd file: Dovecot lines, live reload, atomic rewrite, user-name rules."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ironpost.config import load
from ironpost.sasl.hashes import verify
from ironpost.sasl.passwd import (
    PasswdError,
    PasswdFile,
    canonical_user,
    passwd_path,
    user_problem,
)

SHA512 = (
    "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcb"
    "YEdFCoEOfaS35inz1"
)  # "Hello world!"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def open_file(path: Path, **kw: object) -> tuple[PasswdFile, list[str], Clock]:
    warnings: list[str] = []
    clock = Clock()
    return PasswdFile(path, warn=warnings.append, clock=clock, **kw), warnings, clock  # type: ignore[arg-type]


def test_missing_file_has_no_users(tmp_path: Path) -> None:
    pf, warnings, _ = open_file(tmp_path / "passwd")
    assert pf.lookup("alice") is None
    assert not pf.exists and pf.users() == [] and not pf.all_scram()
    assert warnings == []


def test_dovecot_line_is_read(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(
        "# Dovecot passwd-file\n"
        "\n"
        f"alice@example.org:{{SHA512-CRYPT}}{SHA512}:1000:1000::/home/alice::userdb_mail=x\n"
        "bob:{PLAIN}pw\n"
    )
    pf, warnings, _ = open_file(path)
    entry = pf.lookup("alice@example.org")
    assert entry is not None and entry.line == 3 and entry.scram is None
    assert verify(entry.password, "Hello world!")
    assert SHA512 not in repr(entry)
    assert pf.users() == ["alice@example.org", "bob"]
    assert pf.exists and warnings == []


def test_malformed_lines_are_reported_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_bytes(
        b"hunter2\n"  # a password pasted on its own line
        b"ok:{PLAIN}x\n"
        b"bad user:{PLAIN}x\n"
        b"\xff\xfe:{PLAIN}x\n"
        b"ok:{PLAIN}y\n"
        b"carol:{PLAIN}z::::::scram=garbage\n"
    )
    pf, warnings, _ = open_file(path)
    assert pf.users() == ["ok", "carol"]
    entry = pf.lookup("carol")
    assert entry is not None and entry.scram is None
    assert [w.split(": ", 1)[0] for w in warnings] == [f"{path}:{n}" for n in (1, 3, 4, 5, 6)]
    assert "duplicate" in warnings[3]
    assert not any("hunter2" in w or "garbage" in w or "{PLAIN}" in w for w in warnings)


def test_reload_after_edit_at_most_once_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("alice:{PLAIN}one\n")
    pf, _, clock = open_file(path)
    assert pf.lookup("bob") is None
    path.write_text("alice:{PLAIN}one\nbob:{PLAIN}two\n")
    clock.now = 0.5
    assert pf.lookup("bob") is None  # not looked at again yet
    clock.now = 1.0
    entry = pf.lookup("bob")
    assert entry is not None and entry.password == "{PLAIN}two"
    path.unlink()
    clock.now = 2.5
    assert pf.lookup("alice") is None and not pf.exists


def test_reload_sees_a_same_size_rewrite_by_rename(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("alice:{PLAIN}aaa\n")
    pf, _, clock = open_file(path)
    assert pf.lookup("alice") is not None
    new = tmp_path / "new"
    new.write_text("alice:{PLAIN}bbb\n")
    os.utime(new, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    os.replace(new, path)  # same size, same mtime: only the inode tells
    clock.now = 5
    entry = pf.lookup("alice")
    assert entry is not None and entry.password == "{PLAIN}bbb"


def test_add_set_delete(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text(
        f"# keep me\nalice:{{SHA512-CRYPT}}{SHA512}:1000:100:Alice:/home/a:/bin/sh:k=v\n"
    )
    pf, warnings, _ = open_file(path)
    pf.add("bob@Example.ORG", "bob-pw")
    entry = pf.lookup("bob@example.org")
    assert entry is not None and entry.user == "bob@example.org"
    assert verify(entry.password, "bob-pw") and entry.password.startswith("{ARGON2ID}")
    assert entry.scram is not None and verify(entry.scram, "bob-pw")

    pf.set("alice", "new-pw", scram=False)
    lines = path.read_text().splitlines()
    assert lines[0] == "# keep me"
    fields = lines[1].split(":")
    assert fields[0] == "alice" and fields[2:] == [
        "1000",
        "100",
        "Alice",
        "/home/a",
        "/bin/sh",
        "k=v",
    ]
    alice = pf.lookup("alice")
    assert alice is not None and verify(alice.password, "new-pw") and alice.scram is None
    assert not pf.all_scram()

    pf.set("alice", "again")  # adds scram= to the extra fields, keeps k=v
    assert path.read_text().splitlines()[1].split(":")[7].startswith("k=v scram={SCRAM-SHA-256}")
    assert pf.all_scram()

    pf.delete("BOB@example.org".replace("BOB", "bob"))
    assert pf.users() == ["alice"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd", "passwd.lock"]  # no temp
    assert warnings == []


def test_new_file_is_created_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    pf, _, _ = open_file(path)
    pf.add("alice", "pw")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pf.exists and pf.users() == ["alice"]


def test_rewrite_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.write_text("alice:{PLAIN}x\n")
    os.chmod(path, 0o644)
    inode = path.stat().st_ino
    pf, _, _ = open_file(path)
    pf.add("bob", "pw")
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_edit_errors_name_no_password(tmp_path: Path) -> None:
    pf, _, _ = open_file(tmp_path / "passwd")
    pf.add("alice", "Tr0ub4dor&3")
    with pytest.raises(PasswdError) as info:
        pf.add("alice", "Tr0ub4dor&3")
    assert "already exists" in str(info.value) and "Tr0ub4dor" not in str(info.value)
    with pytest.raises(PasswdError, match="no such user"):
        pf.set("nobody", "Tr0ub4dor&3")
    with pytest.raises(PasswdError, match="no such user"):
        pf.delete("nobody")
    with pytest.raises(PasswdError, match="empty password"):
        pf.add("bob", "")
    assert pf.users() == ["alice"]


@pytest.mark.parametrize(
    "name", ["", "a:b", "a b", "a\tb", "a\x01b", "a\x7fb", "#x", "x" * 256, "a\u2028b"]
)
def test_bad_user_names_are_refused(tmp_path: Path, name: str) -> None:
    pf, _, _ = open_file(tmp_path / "passwd")
    assert user_problem(name) is not None
    with pytest.raises(PasswdError, match="refused user name"):
        pf.add(name, "pw")
    assert not (tmp_path / "passwd").exists()


def test_user_names_compare_exactly_but_domains_ignore_case(tmp_path: Path) -> None:
    assert canonical_user("Alice@Example.ORG") == "Alice@example.org"
    assert canonical_user("Alice") == "Alice"
    assert canonical_user("a@b@C.D") == "a@b@c.d"
    pf, _, _ = open_file(tmp_path / "passwd")
    pf.add("Alice@Example.ORG", "pw")
    assert pf.lookup("Alice@EXAMPLE.org") is not None
    assert pf.lookup("alice@example.org") is None
    with pytest.raises(PasswdError, match="already exists"):
        pf.add("Alice@example.org", "pw")


def test_all_scram_needs_every_user(tmp_path: Path) -> None:
    pf, _, _ = open_file(tmp_path / "passwd")
    pf.add("a", "pw")
    pf.add("b", "pw")
    assert pf.all_scram()
    pf.add("c", "pw", scram=False)
    assert not pf.all_scram()


def test_dovecot_scram_password_field_counts_as_scram(tmp_path: Path) -> None:
    from ironpost.sasl.hashes import scram_credentials

    path = tmp_path / "passwd"
    path.write_text(f"a:{scram_credentials('pw')}\n")
    pf, _, _ = open_file(path)
    entry = pf.lookup("a")
    assert entry is not None and entry.scram == entry.password and pf.all_scram()


def test_unreadable_file_raises_passwd_error(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    path.mkdir()  # exists, cannot be read as a file (also when running as root)
    pf, _, _ = open_file(path)
    with pytest.raises(PasswdError, match="cannot read"):
        pf.lookup("alice")


def test_passwd_path_relative_to_config_dir(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text("")
    loaded = load(tmp_path)
    assert passwd_path(loaded.settings, loaded.config_dir) == tmp_path / "passwd"
    (tmp_path / "main.cf").write_text("smtpd_sasl_passwd_file = /srv/auth/users\n")
    loaded = load(tmp_path)
    assert passwd_path(loaded.settings, loaded.config_dir) == Path("/srv/auth/users")


def test_passwd_path_with_embedded_config_uses_data_directory(tmp_path: Path) -> None:
    loaded = load(None, data_dir=tmp_path / "data")
    assert loaded.config_dir is None
    expected = Path(loaded.settings.text("data_directory")) / "passwd"
    assert passwd_path(loaded.settings, None) == expected
    assert str(expected).startswith(str(tmp_path / "data"))
