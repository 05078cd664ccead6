"""Entry point: ``ironpost [run|config|postconf|queue|passwd|sendmail|dns|dkim] …``.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``; the
parser it adds sets ``func(args) -> int``. Every subcommand accepts ``-c DIR`` (else
``$MAIL_CONFIG``, else /etc/ironpost; see ``cli/common.py``) so that it acts on the same
configuration and queue as the server. ``sendmail`` keeps Postfix's getopt-style options
(``-oi``, ``-bs``, ``-C DIR``), which argparse cannot parse, so it is dispatched first.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS = (
    "run",
    "config_cmd",
    "postconf",
    "queue",
    "passwd",
    "sendmail",
    "dns_records",
    "dkim",
    "doctor",
    "control",
    "privacy",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ironpost", description="A hardened, Postfix-compatible mail transfer agent."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"ironpost.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] == "sendmail":
        from ironpost.cli.sendmail import sendmail_main

        return sendmail_main(words[1:], program="sendmail")
    parser = build_parser()
    args = parser.parse_args(words)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
