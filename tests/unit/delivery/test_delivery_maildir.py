"""The Maildir writer: layout, headers, line ends, durability steps, unique names, errors."""

from __future__ import annotations

import os
import re
import stat
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ironpost.delivery import maildir as maildir_mod
from ironpost.delivery.maildir import deliver_to_maildir, ensure_maildir, unique_name

MSG = b"From: a@example.org\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n"

NAME_RE = re.compile(
    r"^(?P<sec>\d+)\.M(?P<usec>\d+)P(?P<pid>\d+)Q(?P<q>\d+)R(?P<r>[0-9a-f]{16})\."
    r"(?P<host>[^/:]+?)(,S=(?P<size>\d+))?$"
)


def deliver(md: Path, content: bytes = MSG, **kw: str) -> Path:
    args = {"return_path": "a@example.org", "delivered_to": "b@example.net", "hostname": "mx1"}
    args.update(kw)
    return deliver_to_maildir(md, content, **args)


def test_creates_maildir_and_delivers_into_new(tmp_path: Path) -> None:
    md = tmp_path / "example.net" / "b"
    path = deliver(md)
    assert path.parent == md / "new"
    for sub in ("tmp", "new", "cur"):
        assert (md / sub).is_dir()
        assert stat.S_IMODE((md / sub).stat().st_mode) == 0o700
    assert os.listdir(md / "new") == [path.name]
    assert os.listdir(md / "tmp") == []
    assert os.listdir(md / "cur") == []


def test_headers_prepended_and_lf_line_ends(tmp_path: Path) -> None:
    path = deliver(tmp_path / "md")
    data = path.read_bytes()
    assert b"\r" not in data
    assert data == (
        b"Return-Path: <a@example.org>\nDelivered-To: b@example.net\n" + MSG.replace(b"\r\n", b"\n")
    )


def test_null_sender_return_path(tmp_path: Path) -> None:
    data = deliver(tmp_path / "md", return_path="").read_bytes()
    assert data.startswith(b"Return-Path: <>\nDelivered-To: b@example.net\n")


def test_header_injection_is_neutralised(tmp_path: Path) -> None:
    data = deliver(tmp_path / "md", return_path="a@x\r\nX-Evil: 1").read_bytes()
    head = data.split(b"\n\n", 1)[0]
    assert not any(line.startswith(b"X-Evil") for line in head.split(b"\n"))


def test_file_mode_0600_and_size_in_name(tmp_path: Path) -> None:
    path = deliver(tmp_path / "md")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    m = NAME_RE.match(path.name)
    assert m is not None, path.name
    assert int(m["size"]) == path.stat().st_size
    assert m["host"] == "mx1"
    assert int(m["pid"]) == os.getpid()


def test_existing_maildir_is_used_as_is(tmp_path: Path) -> None:
    md = tmp_path / "md"
    ensure_maildir(md)
    (md / "cur" / "old:2,S").write_bytes(b"x")
    deliver(md)
    assert os.listdir(md / "cur") == ["old:2,S"]
    assert len(os.listdir(md / "new")) == 1


def test_missing_new_is_repaired(tmp_path: Path) -> None:
    md = tmp_path / "md"
    ensure_maildir(md)
    (md / "new").rmdir()
    path = deliver(md)
    assert path.exists() and os.listdir(md / "tmp") == []


def test_link_unsupported_falls_back_to_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: object, dst: object) -> None:
        raise OSError(1, "Operation not permitted")  # EPERM: no hard links on this fs

    monkeypatch.setattr(maildir_mod.os, "link", no_link)
    path = deliver(tmp_path / "md")
    assert path.read_bytes().endswith(b"line two\n")
    assert os.listdir(tmp_path / "md" / "tmp") == []


def test_hostname_slash_and_colon_escaped() -> None:
    name = unique_name("a/b:c")
    assert name.endswith(".a\\057b\\072c")
    assert "/" not in name and ":" not in name


def test_unique_across_threads(tmp_path: Path) -> None:
    md = tmp_path / "md"
    ensure_maildir(md)
    paths: list[Path] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [deliver(md, b"Subject: x\r\n\r\nbody\r\n") for _ in range(125)]
        with lock:
            paths.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.name for p in paths}) == 1000
    assert len(os.listdir(md / "new")) == 1000
    assert os.listdir(md / "tmp") == []


def test_mailbox_path_is_a_file_raises(tmp_path: Path) -> None:
    md = tmp_path / "md"
    md.write_bytes(b"not a maildir")
    with pytest.raises(OSError):
        deliver(md)
    assert md.read_bytes() == b"not a maildir"


def test_failed_write_leaves_no_tmp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md = tmp_path / "md"
    ensure_maildir(md)

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(maildir_mod.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        deliver(md)
    assert os.listdir(md / "tmp") == []
    assert os.listdir(md / "new") == []


def _read_only_attempt(md: Path) -> bool:
    """True when delivering into the read-only ``md`` raises OSError."""
    try:
        deliver(md)
    except OSError:
        return True
    return False


def test_read_only_maildir_raises() -> None:
    # Root ignores permission bits, so as root the attempt runs in a child as "nobody".
    base = Path(tempfile.mkdtemp(prefix="ironpost-ro-"))
    try:
        md = base / "md"
        ensure_maildir(md)
        for sub in ("tmp", "new", "cur", ""):
            (md / sub).chmod(0o555)
        base.chmod(0o755)
        if os.geteuid() != 0:
            assert _read_only_attempt(md)
        else:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                code = 2
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                    code = 0 if _read_only_attempt(md) else 1
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        assert os.listdir(md / "new") == []
    finally:
        for sub in ("tmp", "new", "cur", ""):
            (base / "md" / sub).chmod(0o700)
        for sub in ("tmp", "new", "cur"):
            for f in (base / "md" / sub).iterdir():
                f.unlink()
            (base / "md" / sub).rmdir()
        (base / "md").rmdir()
        base.rmdir()


@settings(max_examples=40, deadline=None)
@given(body=st.binary(max_size=2000))
def test_content_round_trips_with_lf(body: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = deliver(Path(d) / "md", body)
        data = path.read_bytes()
        head, _, rest = data.partition(b"Delivered-To: b@example.net\n")
        assert head == b"Return-Path: <a@example.org>\n"
        assert rest == body.replace(b"\r\n", b"\n")
        assert NAME_RE.match(path.name)["size"] == str(len(data))  # type: ignore[index]


def test_directory_fsyncs_are_shared_but_never_skipped(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Many threads syncing one directory: fewer fsyncs than callers, and each caller
    returns only after an fsync that started after its request."""
    import threading
    import time as _time

    from ironpost.delivery import maildir as md

    started: list[int] = []  # the request count seen when each fsync began
    syncer = md._DirSync()

    def slow_fsync(path) -> None:  # type: ignore[no-untyped-def]
        started.append(syncer.requested)
        _time.sleep(0.01)

    monkeypatch.setattr(md, "fsync_dir", slow_fsync)
    covered: list[bool] = []

    def caller() -> None:
        syncer.sync(tmp_path)
        with syncer.cond:
            covered.append(syncer.done >= 1)

    threads = [threading.Thread(target=caller) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(covered) and len(covered) == 16
    assert 1 <= len(started) < 16
    assert syncer.done == syncer.requested == 16


def test_a_failed_directory_fsync_raises_for_its_caller(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ironpost.delivery import maildir as md

    def broken(path) -> None:  # type: ignore[no-untyped-def]
        raise OSError(5, "Input/output error")

    syncer = md._DirSync()
    monkeypatch.setattr(md, "fsync_dir", broken)
    with pytest.raises(OSError):
        syncer.sync(tmp_path)
    assert syncer.done == 0 and not syncer.running
