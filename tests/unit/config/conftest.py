"""Helpers for the config tests: write a config directory and load it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ironpost.config import LoadedConfig, load

WriteConfig = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    def write(main: str, master: str | None = None, **files: str) -> Path:
        d = tmp_path / "etc"
        d.mkdir(exist_ok=True)
        (d / "main.cf").write_text(main)
        if master is not None:
            (d / "master.cf").write_text(master)
        for name, text in files.items():
            (d / name.replace("__", ".")).write_text(text)
        return d

    return write


@pytest.fixture
def load_main(write_config: WriteConfig) -> Callable[..., LoadedConfig]:
    def run(main: str, master: str | None = None, **files: str) -> LoadedConfig:
        return load(write_config(main, master, **files))

    return run
