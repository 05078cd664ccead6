"""``ironpost postconf [-c DIR] [-n | -d] [-h] [-x] [NAME...]``, as Postfix's postconf.

Prints ``name = value`` lines sorted by name: no flag gives the effective value of
every parameter ironpost honours, ``-n`` only those set explicitly (main.cf),
``-d`` the defaults from the parameter table. Values are shown as written
(``$name`` unexpanded) unless ``-x``. ``-h`` prints values only. An unknown NAME
gives ``postconf: warning: NAME: unknown parameter`` and does not change the exit
status, as in Postfix.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ironpost.cli.common import add_config_option, load_or_exit
from ironpost.config import PARAMS
from ironpost.config.params import default_hostname


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "postconf",
        help="show configuration parameters (as Postfix postconf)",
        add_help=False,  # -h means "values only", as in Postfix
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    add_config_option(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("-n", action="store_true", help="only parameters set in main.cf")
    mode.add_argument("-d", action="store_true", help="default values")
    parser.add_argument("-h", action="store_true", dest="value_only", help="values only")
    parser.add_argument("-x", action="store_true", help="expand $name references")
    parser.add_argument("names", nargs="*", metavar="NAME")
    parser.set_defaults(func=run)


def _default(name: str) -> str:
    if name == "myhostname":
        return default_hostname()
    if name == "mydomain":
        return default_hostname().partition(".")[2] or "localdomain"
    return PARAMS[name].default


def run(args: argparse.Namespace) -> int:
    loaded = load_or_exit(args)
    settings = loaded.settings
    if args.d:
        items = {name: _default(name) for name in PARAMS}
    elif args.n:
        items = dict(settings.explicit_items())
        if args.x:
            items = {k: settings.raw(k) if k in PARAMS else v for k, v in items.items()}
    else:
        show = settings.raw if args.x else settings.unexpanded
        items = {name: show(name) for name in PARAMS}
        items.update((k, v) for k, v in settings.explicit_items() if k not in items)
    if args.names:
        selected: dict[str, str] = {}
        for name in args.names:
            if name in items:
                selected[name] = items[name]
            elif name in PARAMS:
                continue  # -n with a name that is not set: nothing, as Postfix
            else:
                print(f"postconf: warning: {name}: unknown parameter", file=sys.stderr)
        items = selected
        ordered = list(items.items())
    else:
        ordered = sorted(items.items())
    for name, value in ordered:
        print(value if args.value_only else f"{name} = {value}".rstrip())
    return 0
