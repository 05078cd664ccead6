"""Every folder in tests/bad_configs must fail to load with the message in expected.txt."""

from __future__ import annotations

from pathlib import Path

import pytest

from ironpost.config import ConfigError, load

BAD = Path(__file__).resolve().parents[2] / "bad_configs"
CASES = sorted(p for p in BAD.iterdir() if p.is_dir())


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_config_fails_clearly(case: Path) -> None:
    expected = (case / "expected.txt").read_text().strip()
    with pytest.raises(ConfigError) as info:
        load(case)
    text = "\n".join(str(d) for d in info.value.errors)
    assert expected in text, text
