"""write_atomic: mode, owner, no temporary file left behind, failures leave the old file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ironpost.fsutil import write_atomic


def test_replaces_with_mode_and_leaves_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old")
    write_atomic(path, b"new" * 10000, mode=0o640, owner=(os.getuid(), os.getgid()))
    assert path.read_bytes() == b"new" * 10000
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_failure_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
