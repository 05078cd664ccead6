"""Runs the protocol fuzz target under hypothesis, and checks the package does no I/O."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path
from types import ModuleType

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ironpost.protocol

ROOT = Path(__file__).resolve().parents[3]


def _load_fuzz() -> ModuleType:
    path = ROOT / "tests" / "fuzz" / "fuzz_protocol.py"
    spec = importlib.util.spec_from_file_location("fuzz_protocol", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FUZZ = _load_fuzz()
_smtpish = st.lists(st.sampled_from(FUZZ.FRAGMENTS), max_size=10).map(b"".join)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=3, max_size=3), _smtpish, st.binary(max_size=8))
def test_fuzz_target_never_crashes(head: bytes, tail: bytes, noise: bytes) -> None:
    FUZZ.TestOneInput(head + tail + noise)


def test_fuzz_script_mode_runs() -> None:
    assert FUZZ.main(["fuzz_protocol", "300", "7"]) == 0


def test_protocol_package_imports_no_io() -> None:
    forbidden = {"asyncio", "socket", "ssl", "selectors"}
    package = Path(ironpost.protocol.__file__).parent
    files = sorted(package.glob("*.py"))
    assert len(files) >= 5
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in forbidden, f"{file.name} imports {name}"
