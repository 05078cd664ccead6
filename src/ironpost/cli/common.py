"""Options and helpers every subcommand shares: ``-c DIR`` and loading the config.

Owns how the CLI finds and reports the configuration: ``-c DIR`` (default
``$MAIL_CONFIG``; neither means the embedded default) and diagnostics printed to
stderr as ``ironpost: warning: file:line: message``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn, TextIO

from ironpost.config import ConfigError, Diagnostic, LoadedConfig, load


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        dest="config_dir",
        metavar="DIR",
        default=os.environ.get("MAIL_CONFIG") or None,
        help="configuration directory holding main.cf (default: $MAIL_CONFIG, "
        "else the embedded default)",
    )


def format_diagnostic(d: Diagnostic) -> str:
    return f"ironpost: {d.severity}: {d.file}:{d.line}: {d.message}"


def print_diagnostics(diags: tuple[Diagnostic, ...], stream: TextIO | None = None) -> None:
    out = stream or sys.stderr
    for d in diags:
        print(format_diagnostic(d), file=out)


def load_or_exit(args: argparse.Namespace) -> LoadedConfig:
    """Load ``args.config_dir``; print diagnostics; exit 1 when there is an error."""
    config_dir = getattr(args, "config_dir", None)
    data_dir = getattr(args, "data_dir", None)
    try:
        loaded = load(
            Path(config_dir) if config_dir else None,
            data_dir=Path(data_dir) if data_dir else None,
        )
    except ConfigError as exc:
        print_diagnostics(exc.diagnostics)
        _exit(1)
    print_diagnostics(loaded.diagnostics)
    return loaded


def _exit(code: int) -> NoReturn:
    raise SystemExit(code)
