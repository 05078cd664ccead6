"""``ironpost dkim keygen|rotate|list``: DKIM signing keys and the records to publish.

``keygen`` takes opendkim-genkey's options (``-d``, ``-s``, ``-D``, ``--bits``) and
writes the same two files, ``SELECTOR.private`` (0600) and ``SELECTOR.txt``; without
``-D`` the key goes where the signing table finds it by default
(``$dkim_key_directory/DOMAIN``). ``rotate`` is keygen with a fresh selector (default
``sYYYYMM``) plus the steps that follow: publish the record, wait for the old record's
TTL, then point the signing table at the new selector; ``--activate`` does that last
step itself when ``dkim_signing_table`` is one text table file (texthash:, hash:…),
rewriting only the domain's line, atomically. ``list`` prints the signing table's keys.
Exit status: 0 on success, 1 with a one-line message on stderr otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from ironpost.auth.dkim_keys import (
    DkimKeyError,
    generate_key,
    key_directory,
    key_from_file,
    load_signing_keys,
    signing_entries,
    zone_line,
)
from ironpost.cli.common import add_config_option, load_or_exit
from ironpost.config import LoadedConfig
from ironpost.fsutil import write_atomic

PROG = "ironpost dkim"
TEXT_TABLES = ("texthash", "hash", "lmdb", "btree", "cdb", "dbm", "sdbm")


def keygen(
    directory: Path,
    domain: str,
    selector: str,
    *,
    bits: int,
    ed25519: bool,
    out: TextIO,
    err: TextIO,
) -> int:
    try:
        key = generate_key(directory, domain, selector, bits=bits, ed25519=ed25519)
    except DkimKeyError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 1
    except OSError as exc:
        print(f"{PROG}: {exc.filename or directory}: {exc.strerror or exc}", file=err)
        return 1
    print(f"{PROG}: private key written to {key.private_path}", file=err)
    print(f"{PROG}: DNS TXT record written to {directory / (selector + '.txt')}", file=err)
    out.write(zone_line(key))
    return 0


def new_selector(directory: Path, now: float | None = None) -> str:
    """``sYYYYMM``, with a letter appended when that key exists (several a month)."""
    base = time.strftime("s%Y%m", time.gmtime(now))
    for suffix in ("", *list("abcdefghijklmnopqrstuvwxyz")):
        if not (directory / f"{base}{suffix}.private").exists():
            return f"{base}{suffix}"
    raise DkimKeyError(f"{directory}: no free selector for {base}")


def activate(table_path: Path, domain: str, selector: str, old: list[str]) -> str:
    """Rewrite ``domain``'s line of a text signing table: ``selector`` replaces the items
    in ``old`` (the items of the same key type); returns the new value."""
    try:
        lines = table_path.read_text(encoding="utf-8").splitlines(keepends=True)
    except FileNotFoundError:
        lines = []
    value = ""
    for n, line in enumerate(lines):
        fields = line.split(None, 1)
        if line[:1] not in ("", " ", "\t", "#") and fields and fields[0].lower() == domain:
            items = (fields[1] if len(fields) > 1 else "").replace(",", " ").split()
            kept = [i for i in items if i.partition(":")[0] not in old]
            value = ", ".join([selector, *kept])
            lines[n] = f"{fields[0]} {value}\n"
            break
    else:
        value = selector
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f"{domain} {value}\n")
    mode = table_path.stat().st_mode & 0o7777 if table_path.exists() else 0o644
    write_atomic(table_path, "".join(lines).encode("utf-8"), mode=mode)
    return value


def rotate(args: argparse.Namespace, loaded: LoadedConfig, out: TextIO, err: TextIO) -> int:
    domain = args.domain.lower()
    settings = loaded.settings
    directory = Path(args.directory) if args.directory else None
    if directory is None:
        directory = key_directory(settings, loaded.config_dir) / domain
    try:
        selector = args.selector or new_selector(directory)
    except DkimKeyError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 1
    code = keygen(
        directory, domain, selector, bits=args.bits, ed25519=args.ed25519, out=out, err=err
    )
    if code:
        return code
    algorithm = "ed25519" if args.ed25519 else "rsa"
    old = []
    for d, s, path in signing_entries(settings, loaded.config_dir):
        if d != domain:
            continue
        try:
            if key_from_file(d, s, path)[0].algorithm == algorithm:
                old.append(s)
        except DkimKeyError:
            continue
    # A key outside the default place must be named in the table.
    item = f"{selector}:{directory / (selector + '.private')}" if args.directory else selector
    print(file=out)
    print(f"1. Publish the record above at {selector}._domainkey.{domain}.", file=out)
    print("2. Wait until it resolves everywhere (at least the old record's TTL).", file=out)
    step3 = f"3. Sign with it: in dkim_signing_table, {domain} = {item}"
    if old:
        step3 += f" (replacing {', '.join(old)})"
    print(step3 + "; reload ironpost.", file=out)
    print(
        "4. Keep the old selector's record published for a week (mail in transit), "
        "then remove it (or publish it with an empty p= to revoke it).",
        file=out,
    )
    if not args.activate:
        return 0
    specs = settings.words("dkim_signing_table")
    kind, _, name = specs[0].partition(":") if len(specs) == 1 else ("", "", "")
    if kind not in TEXT_TABLES:
        print(
            f"{PROG}: --activate needs dkim_signing_table to be one text table file "
            f"(texthash:FILE); edit it by hand as in step 3",
            file=err,
        )
        return 1
    path = Path(name)
    if not path.is_absolute() and loaded.config_dir is not None:
        path = loaded.config_dir / path
    value = activate(path, domain, item, old)
    print(f"{PROG}: {path}: {domain} {value} (reload ironpost to sign with it)", file=out)
    return 0


def list_keys(loaded: LoadedConfig, out: TextIO, err: TextIO) -> int:
    try:
        keys = load_signing_keys(loaded.settings, loaded.config_dir)
    except DkimKeyError as exc:
        print(f"{PROG}: {exc}", file=err)
        return 1
    for key in keys:
        print(
            f"{key.domain}\t{key.selector}\t{key.algorithm}\t{key.bits}\t{key.private_path}",
            file=out,
        )
    return 0


def run(args: argparse.Namespace) -> int:
    out, err = sys.stdout, sys.stderr
    if args.dkim_command == "keygen":
        if args.directory:
            directory = Path(args.directory)
        else:
            loaded = load_or_exit(args)
            base = key_directory(loaded.settings, loaded.config_dir)
            directory = base / args.domain.lower()
        return keygen(
            directory,
            args.domain,
            args.selector,
            bits=args.bits,
            ed25519=args.ed25519,
            out=out,
            err=err,
        )
    loaded = load_or_exit(args)
    if args.dkim_command == "rotate":
        return rotate(args, loaded, out, err)
    return list_keys(loaded, out, err)


def _key_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-d", "--domain", required=True, help="the signing domain (d=)")
    p.add_argument(
        "-D",
        "--directory",
        metavar="DIR",
        help="output directory (default: $dkim_key_directory/DOMAIN)",
    )
    p.add_argument("-b", "--bits", type=int, choices=(1024, 2048, 4096), default=2048)
    p.add_argument("--ed25519", action="store_true", help="an ed25519 key (RFC 8463)")
    add_config_option(p)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser("dkim", help="DKIM signing keys: keygen, rotate, list")
    sub = parser.add_subparsers(dest="dkim_command", metavar="ACTION")
    sub.required = True
    text = "write SELECTOR.private and SELECTOR.txt as opendkim-genkey does; print the record"
    p = sub.add_parser("keygen", help=text, description=text)
    p.add_argument("-s", "--selector", required=True, help="the selector (s=)")
    _key_options(p)
    text = "make a new selector's key, print its record and the steps to switch to it"
    p = sub.add_parser("rotate", help=text, description=text)
    p.add_argument("-s", "--selector", help="the new selector (default: sYYYYMM)")
    p.add_argument(
        "--activate",
        action="store_true",
        help="also point the signing table file at the new selector (publish the record first)",
    )
    _key_options(p)
    p = sub.add_parser("list", help="the signing table's keys: domain, selector, type, bits, file")
    add_config_option(p)
    parser.set_defaults(func=run)
