"""Options and helpers every subcommand shares: ``-c DIR`` and loading the config.

Owns how the CLI finds and reports the configuration, and diagnostics printed to stderr
as ``ironpost: warning: file:line: message``. The config directory is found as Postfix
finds it (see :func:`default_config_dir`): ``-c DIR`` (``-C DIR`` for sendmail), else
``$MAIL_CONFIG``, else ``/etc/ironpost`` when it holds a main.cf, else the embedded
default (so ``ironpost run`` on a machine without any configuration still starts).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import NoReturn, TextIO

from ironpost.config import ConfigError, Diagnostic, LoadedConfig, load

DEFAULT_CONFIG_DIR = Path("/etc/ironpost")


def default_config_dir() -> str | None:
    """The config dir when none is given: ``$MAIL_CONFIG``, else ``/etc/ironpost`` if it
    has a main.cf, else None (the embedded default). ``$MAIL_CONFIG`` is taken even when
    it names a directory without main.cf: loading it then fails with a clear message,
    rather than silently running another configuration."""
    env = os.environ.get("MAIL_CONFIG")
    if env:
        return env
    if (DEFAULT_CONFIG_DIR / "main.cf").is_file():
        return str(DEFAULT_CONFIG_DIR)
    return None


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        dest="config_dir",
        metavar="DIR",
        default=default_config_dir(),
        help=f"configuration directory holding main.cf (default: $MAIL_CONFIG, else "
        f"{DEFAULT_CONFIG_DIR} if it has a main.cf, else the embedded default)",
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
