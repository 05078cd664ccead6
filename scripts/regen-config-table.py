"""Rewrite the parameter table in docs/configuration.md from the parameter table in code.

The table is the last section of the file, from its header row to the end; a unit test
checks that docs and code agree (tests/unit/config/test_config_settings.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ironpost.config.params import render_table_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def main() -> int:
    text = DOC.read_text()
    table = render_table_markdown()
    first_line = table.splitlines()[0]
    start = text.find(first_line)
    if start < 0:
        print(f"cannot find the table header {first_line!r} in {DOC}", file=sys.stderr)
        return 1
    end = start
    for line in text[start:].splitlines(keepends=True):  # the old table: every |… line
        if not (line.startswith("|") or line.startswith("**") or line.strip() == ""):
            break
        end += len(line)
    DOC.write_text(text[:start] + table + ("\n" if not table.endswith("\n") else "") + text[end:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
