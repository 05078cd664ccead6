"""``ironpost run [-c DIR]``: start the MTA in the foreground.

With no ``-c`` (and no MAIL_CONFIG) it runs the embedded default: loopback
listeners, a demo domain, and a data directory it prints on start (started as
root: /var/lib/ironpost, which mail_owner can reach; root's home it could not).

Started as root it decides whom to run as (``server.privileges.plan``) before it
opens anything, takes the pid file (``cli.control``), and leaves the drop itself to
the server, which does it after binding and before serving.

``--workers N`` (``ironpost_workers``; 0 = one per CPU) > 1: before any event loop
starts, every listener is bound once per worker with SO_REUSEPORT, and the master starts
N SMTP worker processes (``server.workers``), each a fresh
``ironpost run --worker-of PID --listen-fds JSON`` holding only its own set. The master
serves no SMTP: it is the queue authority and delivers. It alone holds the pid file, so
``ironpost stop/status/reload`` act on it and it forwards the signal to its workers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ironpost.cli.common import add_config_option, load_or_exit

if TYPE_CHECKING:
    from ironpost.config import LoadedConfig
    from ironpost.server.privileges import Plan


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("run", help="start the MTA in the foreground")
    add_config_option(p)
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        default=None,
        help="SMTP processes (default: ironpost_workers, 1; 0 = one per CPU); N > 1: N"
        " workers share the listeners with SO_REUSEPORT and the master delivers",
    )
    # Internal: how the master starts a worker (server.workers.WorkerPool).
    p.add_argument("--worker-of", type=int, metavar="PID", default=None, help=argparse.SUPPRESS)
    p.add_argument("--listen-fds", metavar="JSON", default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _raise_open_files() -> None:
    """One descriptor per session: lift the soft limit to the hard one (often 1024 vs
    much more), as Postfix's master does for its children."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and target > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run(args: argparse.Namespace) -> int:
    from ironpost.cli.control import AlreadyRunning, PidFile, pid_path
    from ironpost.config import load
    from ironpost.dns.resolver import parse_nameserver
    from ironpost.maillog import MailLog
    from ironpost.metrics.server import MetricsError, metrics_address
    from ironpost.server import privileges
    from ironpost.server.app import MtaServer
    from ironpost.server.tls import TlsConfigError
    from ironpost.server.workers import WorkerPool, bind_sets, close_sets, resolve_workers

    if args.worker_of is not None:
        from ironpost.server.workers import die_with_master

        if not die_with_master(args.worker_of):
            return 0  # the master is gone already
    loaded = load_or_exit(args)
    settings = loaded.settings
    for entry in settings.words("dns_nameservers"):
        try:
            parse_nameserver(entry)
        except ValueError as exc:
            print(f"ironpost: fatal: dns_nameservers: {exc}", file=sys.stderr)
            return 1
    try:
        metrics_address(settings)
    except MetricsError as exc:
        print(f"ironpost: fatal: {exc}", file=sys.stderr)
        return 1
    try:
        plan = privileges.plan(settings)
    except privileges.PrivilegeError as exc:
        print(f"ironpost: fatal: {exc}", file=sys.stderr)
        return 1
    # Postfix's master runs with umask 077: nothing ironpost creates (queue, Maildirs and
    # every parent directory made on the way, keys, logs) is readable by other users.
    os.umask(0o077)
    _raise_open_files()
    data_dir = Path(settings.text("data_directory"))
    queue_dir = Path(settings.text("queue_directory"))
    for directory in (data_dir, queue_dir):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if args.worker_of is not None:
        return _run_worker(args, loaded, plan)
    try:
        processes = resolve_workers(
            settings.integer("ironpost_workers") if args.workers is None else args.workers
        )
    except ValueError as exc:
        print(f"ironpost: fatal: --workers: {exc}", file=sys.stderr)
        return 1
    pid_file = PidFile(pid_path(queue_dir))
    try:
        pid_file.acquire()
    except AlreadyRunning as exc:
        print(f"ironpost: fatal: {queue_dir}: the mail system is {exc}", file=sys.stderr)
        return 1
    maillog = MailLog.from_settings(settings)
    where = "embedded default" if loaded.config_dir is None else str(loaded.config_dir)
    print(f"ironpost: configuration: {where}", file=sys.stderr)
    print(f"ironpost: queue: {queue_dir}", file=sys.stderr)
    print(f"ironpost: mailboxes: {settings.text('virtual_mailbox_base')}", file=sys.stderr)
    print(f"ironpost: maillog: {settings.text('maillog_file') or 'stderr'}", file=sys.stderr)
    for service in loaded.services:
        for host in service.bind_hosts():
            where = f"[{host}]" if ":" in host else host
            print(f"ironpost: listening: {service.role} on {where}:{service.port}", file=sys.stderr)
    for note in plan.notes:
        maillog.emit("master", note)
    config_dir = loaded.config_dir
    data_arg = Path(args.data_dir) if getattr(args, "data_dir", None) else None
    sets = []
    pool = None
    try:
        if processes > 1:
            # Before any loop runs, and still root for ports below 1024.
            binds = [(h, svc.port) for svc in loaded.services for h in svc.bind_hosts()]
            sets = bind_sets(binds, processes)
            pool = WorkerPool(
                sets,
                lambda fds: _worker_argv(args, fds),
                log=lambda text: maillog.emit("master", text),
            )
            print(
                f"ironpost: processes: the master (queue, delivery) and {processes} SMTP workers",
                file=sys.stderr,
            )
        server = MtaServer(
            loaded,
            maillog,
            mail_owner=plan.account,
            load_config=lambda: load(config_dir, data_dir=data_arg),
            workers=pool,
        )
        _event_loop_runner()(server.run())
    except (OSError, TlsConfigError, privileges.PrivilegeError) as exc:
        maillog.emit("master", f"fatal: {exc}")
        print(f"ironpost: fatal: {exc}", file=sys.stderr)
        return 1
    finally:
        close_sets(sets)
        pid_file.release()
        maillog.close()
    return 0


def _worker_argv(args: argparse.Namespace, fds: str) -> list[str]:
    """How the master starts a worker: this interpreter, this configuration."""
    argv = [sys.executable, "-m", "ironpost", "run", "--worker-of", str(os.getpid())]
    if args.config_dir:
        argv += ["-c", str(args.config_dir)]
    return [*argv, "--listen-fds", fds]


def _run_worker(args: argparse.Namespace, loaded: LoadedConfig, plan: Plan) -> int:
    """A worker process: SMTP sessions on the inherited sockets, nothing else. Its own
    MailLog, so that its lines carry its own pid (``ironpost/smtpd[pid]``)."""
    from ironpost.config import load
    from ironpost.maillog import MailLog
    from ironpost.server import privileges
    from ironpost.server.app import MtaServer
    from ironpost.server.tls import TlsConfigError
    from ironpost.server.workers import decode_fds

    settings = loaded.settings
    try:
        sockets = decode_fds(args.listen_fds or "[]")
    except ValueError as exc:
        print(f"ironpost: fatal: {exc}", file=sys.stderr)
        return 1
    try:
        maillog = MailLog.from_settings(settings)
    except OSError as exc:
        # A restarted worker runs as mail_owner already: the log may be root's alone.
        maillog = MailLog(sys.stderr, hostname=settings.text("myhostname"))
        maillog.emit("smtpd", f"warning: maillog: {exc}; logging to stderr")
    config_dir = loaded.config_dir
    server = MtaServer(
        loaded,
        maillog,
        mail_owner=plan.account,
        load_config=lambda: load(config_dir),
        sockets=sockets,
        worker_of=args.worker_of,
    )
    try:
        _event_loop_runner()(server.run())
    except (OSError, TlsConfigError, privileges.PrivilegeError) as exc:
        maillog.emit("smtpd", f"fatal: {exc}")
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
