"""``ironpost dns records [-c DIR] [--format zone|json] [--ip ADDR …] [-d DOMAIN …]``.

Prints every DNS record an administrator must publish for our mail domains (see
docs/deliverability.md): zone-file fragments with absolute names, or JSON. Warnings go
both into the output (as comments / a ``warnings`` list, so they travel with the
records) and to stderr. Exit status: 0; 1 when the configuration cannot be loaded, the
host name is unusable, or a DKIM key of the signing table cannot be read (the records
are still printed, without that key, so the rest can be published).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from ironpost.cli.common import add_config_option, load_or_exit
from ironpost.config import PARAMS, Settings
from ironpost.deliverability import (
    DkimPublicKey,
    RecordsError,
    build_records,
    options_from_settings,
    render_json,
    render_zone,
)

PROG = "ironpost dns records"


def add_parser(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dns", help="DNS tools", description="DNS tools."
    )
    sub = parser.add_subparsers(dest="dns_command", metavar="SUBCOMMAND")
    sub.required = True
    records = sub.add_parser(
        "records",
        help="print the DNS records to publish (MX, A/AAAA, SPF, DKIM, DMARC, MTA-STS, …)",
        description="Print every DNS record to publish for this host and its mail domains.",
    )
    add_config_option(records)
    records.add_argument(
        "--format", choices=("zone", "json"), default="zone", help="output form (default: zone)"
    )
    records.add_argument(
        "--ip",
        action="append",
        default=[],
        metavar="ADDR",
        help="public address of this host (repeatable; default: dns_records_addresses, "
        "else the public addresses among inet_interfaces and smtp_bind_address[6])",
    )
    records.add_argument(
        "-d",
        "--domain",
        action="append",
        default=[],
        metavar="DOMAIN",
        help="mail domain to print (repeatable; default: the configured domains)",
    )
    records.set_defaults(func=run_records)


def dkim_public_keys(
    settings: Settings, config_dir: Path | None
) -> tuple[list[DkimPublicKey], str | None]:
    """The signing table's public keys, and an error text when they cannot be read."""
    if "dkim_signing_table" not in PARAMS:  # DKIM signing is not part of this build
        return [], None
    from ironpost.auth.dkim_keys import (
        DkimKeyError,
        ensure_auto_keys,
        load_signing_keys,
        txt_record,
    )

    try:
        ensure_auto_keys(settings)  # the keys the server would make at its first start
    except (DkimKeyError, OSError) as exc:
        return [], f"DKIM keys not made: {exc}"
    try:
        keys = load_signing_keys(settings, config_dir)
    except DkimKeyError as exc:
        return [], f"DKIM keys not loaded: {exc}"
    return [DkimPublicKey(k.domain, k.selector, txt_record(k)) for k in keys], None


def run_records(args: argparse.Namespace) -> int:
    loaded = load_or_exit(args)
    keys, key_error = dkim_public_keys(loaded.settings, loaded.config_dir)
    options = options_from_settings(loaded.settings, dkim=keys, ips=args.ip, domains=args.domain)
    if key_error:
        options = dataclasses.replace(options, warnings=(*options.warnings, key_error))
    try:
        records = build_records(options, keys)
    except RecordsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    for warning in records.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    sys.stdout.write(render_json(records) if args.format == "json" else render_zone(records))
    return 1 if key_error else 0
