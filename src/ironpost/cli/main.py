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


#: The command word -> the module that defines it. A known word imports only its own
#: module (the doctor, DKIM and metrics code cost a few hundred ms to import, which
#: `ironpost queue list` must not pay); anything else builds the whole parser for help.
COMMAND_MODULES = {
    "run": "run",
    "config": "config_cmd",
    "postconf": "postconf",
    "queue": "queue",
    "passwd": "passwd",
    "dns": "dns_records",
    "dkim": "dkim",
    "doctor": "doctor",
    "stop": "control",
    "reload": "control",
    "status": "control",
    "privacy": "privacy",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ironpost", description="A hardened, Postfix-compatible mail transfer agent."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    only = COMMAND_MODULES.get(command or "")
    for name in SUBCOMMANDS if only is None else (only,):
        module = importlib.import_module(f"ironpost.cli.{name}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0] == "sendmail":
        from ironpost.cli.sendmail import sendmail_main

        return sendmail_main(words[1:], program="sendmail")
    parser = build_parser(words[0] if words else None)
    args = parser.parse_args(words)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
