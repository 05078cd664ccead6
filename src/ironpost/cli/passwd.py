"""``ironpost passwd add|set|delete|list [USER]``: manage the built-in SASL passwd file.

The file is ``smtpd_sasl_passwd_file`` of the configuration found as every subcommand
finds it (``-c DIR``, ``$MAIL_CONFIG``…), resolved by
:func:`ironpost.sasl.passwd.passwd_path`, the function the server uses: the running
server sees the edit within a second, without a restart.

A password is never taken from argv (it would show in ``ps`` and shell history): it is
asked twice at a terminal, or read as the first line of stdin when stdin is not a
terminal (for scripts: ``printf '%s\\n' "$pw" | ironpost passwd add USER``). New entries
get an argon2id hash and SCRAM-SHA-256 credentials (``--no-scram`` leaves SCRAM out:
SCRAM keys resist offline guessing less well than argon2id does).
Exit status: 0 on success, 1 with a one-line message on stderr otherwise.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ironpost.cli.common import add_config_option, load_or_exit
from ironpost.sasl.passwd import PasswdError, PasswdFile, passwd_path, user_problem

PROG = "ironpost passwd"


class PasswordInputError(Exception):
    pass


def read_password(
    stdin: TextIO | None = None,
    prompt: Callable[[str], str] = getpass.getpass,
) -> str:
    """A new password: prompted twice on a terminal, else stdin's first line."""
    stream = stdin or sys.stdin
    if stream.isatty():
        first = prompt("New password: ")
        if prompt("Retype new password: ") != first:
            raise PasswordInputError("passwords do not match")
    else:
        first = stream.readline()
        if first.endswith("\n"):
            first = first[:-1]
        if first.endswith("\r"):
            first = first[:-1]
    if not first:
        raise PasswordInputError("empty password")
    return first


def run_action(
    action: str,
    path: Path,
    user: str | None,
    *,
    get_password: Callable[[], str],
    out: TextIO,
    err: TextIO,
    scram: bool = True,
) -> int:
    """One action on the file at ``path``; testable without a configuration."""

    def warn(message: str) -> None:
        print(f"{PROG}: warning: {message}", file=err)

    passwd = PasswdFile(path, warn=warn)
    try:
        if action == "list":
            for name in passwd.users():
                print(name, file=out)
            return 0
        assert user is not None  # argparse requires USER for the other actions
        if action == "delete":
            passwd.delete(user)
            print(f"{PROG}: {user}: deleted from {path}", file=out)
            return 0
        # Check before prompting, so a typo is reported before the password is typed.
        problem = user_problem(user)
        if problem:
            raise PasswdError(f"refused user name: {problem}")
        exists = passwd.lookup(user) is not None
        if action == "add" and exists:
            raise PasswdError(f"{user}: user already exists in {path}")
        if action == "set" and not exists:
            raise PasswdError(f"{user}: no such user in {path}")
        password = get_password()
        if action == "add":
            # The embedded config's data_directory may not exist yet on a fresh machine.
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            passwd.add(user, password, scram=scram)
            print(f"{PROG}: {user}: added to {path}", file=out)
        else:
            passwd.set(user, password, scram=scram)
            print(f"{PROG}: {user}: password changed in {path}", file=out)
        return 0
    except (PasswdError, PasswordInputError) as exc:
        print(f"{PROG}: {exc}", file=err)
    except OSError as exc:
        print(f"{PROG}: {exc.filename or path}: {exc.strerror or exc}", file=err)
    except EOFError:
        print(f"{PROG}: no password given", file=err)
    return 1


def run(args: argparse.Namespace) -> int:
    loaded = load_or_exit(args)
    path = passwd_path(loaded.settings, loaded.config_dir)
    return run_action(
        args.passwd_command,
        path,
        getattr(args, "user", None),
        get_password=read_password,
        out=sys.stdout,
        err=sys.stderr,
        scram=not getattr(args, "no_scram", False),
    )


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "passwd", help="manage SMTP AUTH users of the built-in back-end (smtpd_sasl_type=ironpost)"
    )
    sub = parser.add_subparsers(dest="passwd_command", metavar="ACTION")
    sub.required = True
    for name, text in (
        ("add", "add a user; the password is prompted for, or read from stdin"),
        ("set", "change a user's password; prompted for, or read from stdin"),
        ("delete", "remove a user"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("user", metavar="USER")
        if name != "delete":
            p.add_argument(
                "--no-scram",
                action="store_true",
                help="store no SCRAM-SHA-256 credentials (SCRAM is then not offered)",
            )
        add_config_option(p)
    p = sub.add_parser("list", help="print the user names, one per line")
    add_config_option(p)
    parser.set_defaults(func=run)
