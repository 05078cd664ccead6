"""``ironpost config check [-c DIR]``: validate main.cf/master.cf and report.

Exit status 0 when the configuration has no error (warnings are printed), 1 otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ironpost.cli.common import add_config_option, print_diagnostics
from ironpost.config import ConfigError, load


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "config", help="configuration tools", description="Configuration tools."
    )
    sub = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    sub.required = True
    check = sub.add_parser("check", help="validate the configuration")
    add_config_option(check)
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    config_dir = Path(args.config_dir) if args.config_dir else None
    try:
        loaded = load(config_dir)
    except ConfigError as exc:
        print_diagnostics(exc.diagnostics)
        n = len(exc.errors)
        print(f"config has {n} error{'s' if n != 1 else ''}")
        return 1
    print_diagnostics(loaded.diagnostics)
    n = len(loaded.warnings)
    print(f"config OK ({n} warning{'s' if n != 1 else ''})")
    return 0
