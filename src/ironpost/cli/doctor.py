"""``ironpost doctor [-c DIR] [--json] [--ip ADDR …] [-d DOMAIN …] [--relay-test HOST:PORT]
[--source ADDR] [--skip FAMILY …]``: the deliverability audit (see docs/doctor.md).

Prints one line per check (``PASS``/``WARN``/``FAIL``, what, what was found) and, for
every warning and failure, the fix. Exit status: 1 when any check failed or the
configuration cannot be loaded, else 0 (warnings alone do not fail).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from ironpost.cli.common import add_config_option, load_or_exit
from ironpost.doctor import FAMILIES, Options, exit_status, gather, render_json, render_text
from ironpost.doctor.runner import run


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "doctor",
        help="audit deliverability: DNS, PTR, SPF, DKIM, DMARC, TLS, DNSBLs, config, relay",
        description="Check everything receivers judge this server by; print the fixes.",
    )
    add_config_option(parser)
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument(
        "--ip",
        action="append",
        default=[],
        metavar="ADDR",
        help="our public address, taken as given (repeatable; default: "
        "dns_records_addresses, else the public addresses of inet_interfaces)",
    )
    parser.add_argument(
        "-d",
        "--domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="mail domain to check (repeatable; default: the configured domains)",
    )
    parser.add_argument(
        "--relay-test",
        metavar="HOST:PORT",
        help="listener for the open-relay test (default: the first smtp listener)",
    )
    parser.add_argument(
        "--source",
        metavar="ADDR",
        help="local address the relay test connects from (must be outside mynetworks)",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=FAMILIES,
        help="skip a family of checks (repeatable)",
    )
    parser.set_defaults(func=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    loaded = load_or_exit(args)
    if args.relay_test and ":" not in args.relay_test:
        print("ironpost doctor: --relay-test needs HOST:PORT", file=sys.stderr)
        return 1
    options = Options(
        ips=tuple(args.ip),
        domains=tuple(args.domain),
        relay_target=args.relay_test,
        source=args.source,
        skip=frozenset(args.skip),
    )
    inputs = gather(loaded, options)
    checks = asyncio.run(run(inputs, options))
    if args.json:
        sys.stdout.write(
            render_json(
                checks,
                hostname=inputs.hostname,
                addresses=[str(a) for a in inputs.addresses],
                domains=list(inputs.domains),
                notes=list(inputs.notes),
            )
        )
    else:
        addresses = ", ".join(str(a) for a in inputs.addresses) or "no public address"
        header = f"ironpost doctor: {inputs.hostname} ({addresses})"
        for note in inputs.notes:
            header += f"\nnote: {note}"
        sys.stdout.write(render_text(checks, header))
    return exit_status(checks)


def main(argv: list[str] | None = None) -> int:
    """``python -m ironpost.cli.doctor …``: the same command without the other subcommands."""
    parser = argparse.ArgumentParser(prog="ironpost")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["doctor", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
