"""``ironpost run [-c DIR]``: start the MTA in the foreground.

With no ``-c`` (and no MAIL_CONFIG) it runs the embedded default: loopback
listeners, a demo domain, and a data directory it prints on start.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from ironpost.cli.common import add_config_option, load_or_exit


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("run", help="start the MTA in the foreground")
    add_config_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ironpost.dns.resolver import parse_nameserver
    from ironpost.maillog import MailLog
    from ironpost.server.app import MtaServer
    from ironpost.server.tls import TlsConfigError

    loaded = load_or_exit(args)
    settings = loaded.settings
    for entry in settings.words("dns_nameservers"):
        try:
            parse_nameserver(entry)
        except ValueError as exc:
            print(f"ironpost: fatal: dns_nameservers: {exc}", file=sys.stderr)
            return 1
    data_dir = Path(settings.text("data_directory"))
    queue_dir = Path(settings.text("queue_directory"))
    for directory in (data_dir, queue_dir):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    maillog = MailLog.open(
        settings.text("maillog_file"),
        hostname=settings.text("myhostname"),
        syslog_name=settings.text("syslog_name"),
    )
    where = "embedded default" if loaded.config_dir is None else str(loaded.config_dir)
    print(f"ironpost: configuration: {where}", file=sys.stderr)
    print(f"ironpost: queue: {queue_dir}", file=sys.stderr)
    print(f"ironpost: mailboxes: {settings.text('virtual_mailbox_base')}", file=sys.stderr)
    print(f"ironpost: maillog: {settings.text('maillog_file') or 'stderr'}", file=sys.stderr)
    for service in loaded.services:
        for host in service.bind_hosts():
            where = f"[{host}]" if ":" in host else host
            print(f"ironpost: listening: {service.role} on {where}:{service.port}", file=sys.stderr)
    server = MtaServer(loaded, maillog)
    try:
        _event_loop_runner()(server.run())
    except (OSError, TlsConfigError) as exc:
        print(f"ironpost: fatal: {exc}", file=sys.stderr)
        return 1
    finally:
        maillog.close()
    return 0


def _event_loop_runner() -> Any:
    """uvloop when installed (the ``speed`` extra), the stdlib loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run
