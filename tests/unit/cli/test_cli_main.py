"""The top-level command: each command word loads only its own module."""

from __future__ import annotations


def test_every_command_word_builds_its_parser_alone() -> None:
    from ironpost.cli.main import COMMAND_MODULES, SUBCOMMANDS, build_parser

    assert set(COMMAND_MODULES.values()) | {"sendmail"} == set(SUBCOMMANDS)
    for word in COMMAND_MODULES:
        # The word's own module defines it: parsing "WORD --help" would exit 0.
        parser = build_parser(word)
        choices = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
        assert word in choices
