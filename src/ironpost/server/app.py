"""The MTA's process lifecycle: start (queue, listeners from master.cf, privilege drop,
workers), signals, reload (build, then swap), and stop (drain sessions and deliveries).

What a configuration builds into (tables, TLS, SASL, policy, router, queue manager) is
made by :class:`~ironpost.server.generation.GenerationBuilder`; this module decides
when a generation is built and swaps it in, and owns the listening sockets.

Roles stay apart as in Postfix: sessions only accept and commit; the queue manager
only reads the queue and hands mail to transports. They meet at the store, and a
commit wakes the manager.

Lifecycle invariants:

- **start**: every listener is bound with ``start_serving=False``; the privilege drop
  (``server.privileges``) happens after the binds and before ``start_serving()``, so
  no byte from the network is read with root's rights;
- **reload** (SIGHUP): a whole new :class:`~ironpost.server.generation.Generation`
  (config, tables, TLS, SASL, policy, router, queue manager) is built first; only if
  every part builds is it swapped in. New sessions get the new one; sessions in
  progress keep the context they started with. A config that does not build is
  logged and refused;
- **stop** (SIGTERM, SIGINT): listeners close at once; an idle session gets 421 at
  once, a transaction in flight may finish (its 250 is written after the commit, as
  always) until ``shutdown_timeout``, then it is cut without a 250: the client still
  holds the message, nothing is lost. Deliveries get the same deadline; one cut
  there stays in the active queue and is redelivered after the restart
  (at-least-once).

Processes (``ironpost_workers``, :mod:`server.workers`): with one process (the default)
this object is the whole MTA. With N > 1 the master's MtaServer (``workers=`` a pool of
N SMTP workers) is the one queue authority (recovery, queue manager and deliveries,
trigger socket, metrics) and serves no SMTP itself, as Postfix's master and qmgr leave
smtpd to their own processes: deliveries get a core of their own instead of slowing the
master's share of the sessions. Each worker's MtaServer (``worker_of=`` the master's
pid) serves SMTP only on its SO_REUSEPORT sockets, commits to the same queue file
through its own writer and pokes the master after each commit. Signals reach the
workers through the master.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ironpost import __version__
from ironpost.anvil import Anvil, AnvilConfig
from ironpost.config import ConfigError, load
from ironpost.maillog import MailLog
from ironpost.metrics import start_metrics_server
from ironpost.metrics.server import MetricsServer
from ironpost.protocol import replies as R
from ironpost.queue.engines import open_store
from ironpost.queue.sqlite import SqliteQueue
from ironpost.queue.trigger import FLUSH, TriggerListener, trigger_path
from ironpost.server import privileges
from ironpost.server import tls as tlsmod
from ironpost.server.cluster import cluster_services
from ironpost.server.context import ConnectionTracker, DiskSpace, ListenerContext
from ironpost.server.generation import Bind, Generation, GenerationBuilder
from ironpost.server.session import SmtpSession
from ironpost.server.workers import MasterPoke, WorkerPool, die_with_master

if TYPE_CHECKING:
    from ironpost.config import LoadedConfig, Service


class _LiveSession(SmtpSession):
    """A session the server can find again at stop: it registers itself while open."""

    def __init__(self, ctx: ListenerContext, live: set[_LiveSession]) -> None:
        super().__init__(ctx)
        self._live = live

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._live.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self)
        super().connection_lost(exc)

    @property
    def busy(self) -> bool:
        """In a mail transaction, or waiting for a commit, a lookup or a TLS handshake."""
        return self.tx is not None or self._waiting

    def shut_down(self) -> None:
        self._drop(R.SHUTTING_DOWN, f"service shutting down after {self.last_command}")

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()


class MtaServer:
    def __init__(
        self,
        loaded: LoadedConfig,
        maillog: MailLog,
        *,
        mail_owner: privileges.Account | None = None,
        load_config: Callable[[], LoadedConfig] | None = None,
        sockets: dict[Bind, list[socket.socket]] | None = None,
        workers: WorkerPool | None = None,
        worker_of: int | None = None,
    ) -> None:
        """``sockets``: listening sockets bound before the loop (SO_REUSEPORT, one set
        per worker); binds without one are bound here. ``workers``: the master's pool of
        SMTP worker processes (the master then serves no SMTP). ``worker_of``: this
        process is a worker of that pid."""
        self.loaded = loaded
        self.settings = loaded.settings
        self.maillog = maillog
        self.mail_owner = mail_owner
        self._load_config = load_config or (lambda: load(loaded.config_dir))
        self._sockets = dict(sockets or {})  # consumed by the first _listen of each bind
        # Binds added by a reload are shared with the other processes too.
        self._reuse_port = sockets is not None
        self._pool = workers
        self._worker_of = worker_of
        self._serves_smtp = workers is None  # a master with workers leaves SMTP to them
        self._servers: dict[Bind, list[asyncio.base_events.Server]] = {}
        self._fronts: dict[Bind, ssl.SSLContext] = {}  # wrapper-mode listeners' contexts
        self._live: set[_LiveSession] = set()
        self._stopping = asyncio.Event()
        self._signal: int | None = None
        self._reloading = asyncio.Lock()
        self._retiring: set[asyncio.Task[Any]] = set()  # old queue managers finishing
        # A node of a cluster (PostgreSQL queue) shares its anvil counts and its
        # destination slots with the others; on one machine both are this process's.
        self._cluster = cluster_services(
            self.settings, lambda text: self.maillog.emit("cluster", text)
        )
        config = AnvilConfig.from_settings(self.settings)
        self.anvil = Anvil(config) if self._cluster is None else self._cluster.anvil(config)
        self._tracker = ConnectionTracker(
            per_client=self.settings.integer("smtpd_client_connection_count_limit"),
            total=self.settings.integer("smtpd_connection_limit"),
        )

    # -- the whole life ----------------------------------------------------------------

    async def run(self) -> None:
        settings = self.settings
        queue_dir = Path(settings.text("queue_directory"))
        worker = self._worker_of is not None
        # A worker opens its own connection (and writer thread) to the same queue file;
        # it never delivers, so it keeps no bodies for a first delivery.
        store = open_store(settings, delivers=not worker)
        if self._cluster is not None and not worker:
            self.maillog.emit(
                "qmgr", f"queue: postgresql, shared by a cluster; this node is {self._cluster.node}"
            )
        if not worker:  # the queue authority alone: workers never claim nor recover
            recovered = await store.recover()
            if recovered:
                self.maillog.emit("qmgr", f"recovered {recovered} message(s) from the active queue")
            if store.orphans_removed:
                self.maillog.emit(
                    "qmgr", f"removed {store.orphans_removed} orphaned queue body file(s)"
                )
        # Builds this process's generations: the one now and one at each reload.
        self._builder = GenerationBuilder(
            self.maillog,
            store=store,
            tracker=self._tracker,
            anvil=self.anvil,
            disk=DiskSpace(queue_dir),
            poke=MasterPoke(queue_dir),
            delivers=not worker,
            gate=None if self._cluster is None else self._cluster.gate,
        )
        if self._cluster is not None:
            self._cluster.start()
        # Metrics live in the master (off unless metrics_listen).
        nodes = None if isinstance(store, SqliteQueue) else store.nodes
        metrics = (
            MetricsServer() if worker else start_metrics_server(settings, store=store, nodes=nodes)
        )
        loop = asyncio.get_running_loop()
        pool = self._pool
        try:
            gen = self._gen = await self._builder.build(self.loaded)
            if self._serves_smtp:
                for bind, (service, ctx) in gen.listeners.items():
                    await self._listen(bind, service, ctx, gen, start=False)
            # sendmail and the queue CLI poke this socket after they change the queue.
            trigger = None
            if not worker:
                trigger = await TriggerListener.start(
                    trigger_path(queue_dir),
                    self._on_trigger,
                    log=lambda text: self.maillog.emit("qmgr", text),
                )
            if pool is not None:
                pool.start()  # still root: each worker drops privileges itself
            self._drop_privileges()
            if self._worker_of is not None and not die_with_master(self._worker_of):
                self._stopping.set()  # the drop cleared PDEATHSIG; the master is gone
            for servers in self._servers.values():
                for server in servers:
                    await server.start_serving()
            runner_task = asyncio.create_task(self._run_queue_manager(gen))
            supervisor = asyncio.create_task(pool.supervise()) if pool is not None else None
            flusher = asyncio.create_task(self._flush_log_periodically())
            statistics = asyncio.create_task(
                self._anvil_statistics(settings.seconds("anvil_status_update_time"))
            )
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._on_signal, sig)
            if worker:
                self.maillog.emit("smtpd", f"worker started -- master pid {self._worker_of}")
            else:
                self.maillog.emit(
                    "master",
                    f"daemon started -- version {__version__}, configuration {self._where()}",
                )
            await self._stopping.wait()
            why = f" on signal {self._signal}" if self._signal is not None else ""
            self.maillog.emit(self._who, f"terminating{why}")
            if trigger is not None:
                trigger.close()
            # The workers drain at the same time as we do; then we wait for them.
            workers_done = None
            if pool is not None:
                workers_done = asyncio.create_task(self._stop_workers(pool))
            await self._shut_down()
            if supervisor is not None:
                supervisor.cancel()
            if workers_done is not None:
                await workers_done
            flusher.cancel()
            statistics.cancel()
            runner_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner_task
        finally:
            if pool is not None:  # idempotent; here for a start that failed half-way
                await self._stop_workers(pool)
            metrics.close()
            await self._builder.close()
            if self._cluster is not None:
                await self._cluster.close()
            store.close()
            self.maillog.emit(self._who, "daemon stopped")
            self.maillog.flush()

    def stop(self) -> None:
        self._stopping.set()

    async def _run_queue_manager(self, gen: Generation) -> None:
        if gen.runner is not None:
            await gen.runner.run()

    async def _stop_workers(self, pool: WorkerPool) -> None:
        sig = signal.SIGINT if self._signal == signal.SIGINT else signal.SIGTERM
        await pool.stop(sig, self.settings.seconds("shutdown_timeout") + 5.0)

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGHUP and self._pool is not None:
            self._pool.signal(sig)  # each worker reloads its own generation
        if sig == signal.SIGHUP:
            task = asyncio.ensure_future(self.reload())
            self._retiring.add(task)  # keep a reference until it is done
            task.add_done_callback(self._retiring.discard)
            return
        self._signal = sig
        self._stopping.set()

    def _on_trigger(self, request: bytes) -> None:
        runner = self._gen.runner
        if runner is None:
            return
        if request == FLUSH:
            runner.flush()
        else:
            runner.wake()

    @property
    def _who(self) -> str:
        """The log tag of this process's own lines: Postfix's master, or an smtpd."""
        return "master" if self._worker_of is None else "smtpd"

    def _where(self) -> str:
        d = self.loaded.config_dir
        return "embedded default" if d is None else str(d)

    # -- privileges ---------------------------------------------------------------------

    def _drop_privileges(self) -> None:
        """Hand the writable paths to mail_owner, then become it (before any byte is read)."""
        account = self.mail_owner
        if account is None:
            return
        s = self.settings
        paths = [Path(s.text("queue_directory")), Path(s.text("data_directory"))]
        if s.text("virtual_mailbox_base"):
            base = Path(s.text("virtual_mailbox_base"))
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
            paths.append(base)
        # The SASL passwd file is re-read on every change: it must stay readable by
        # mail_owner. `ironpost passwd` keeps the owner when it rewrites it.
        paths += self._builder.passwd_files()
        changed = privileges.take_ownership(paths, account)
        if changed:
            self.maillog.emit(
                self._who, f"gave {len(changed)} file(s) to {account.name}, e.g. {changed[0]}"
            )
        privileges.drop_to(account)
        self.maillog.emit(
            self._who, f"running as {account.name} (uid {account.uid}, gid {account.gid})"
        )

    # -- reload ---------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Re-read the configuration; True when the new one is in force."""
        async with self._reloading:
            if self._stopping.is_set():
                return False
            try:
                loaded = self._load_config()
            except ConfigError as exc:
                for d in exc.diagnostics:
                    self.maillog.emit("master", f"warning: {d.file}:{d.line}: {d.message}")
                self.maillog.emit(
                    "master",
                    "warning: reload refused: configuration errors; still running"
                    " the previous configuration",
                )
                return False
            for d in loaded.diagnostics:
                self.maillog.emit("master", f"{d.severity}: {d.file}:{d.line}: {d.message}")
            try:
                gen = await self._builder.build(loaded)
            except Exception as exc:  # a certificate, a key, a table: refuse, keep serving
                self.maillog.emit(
                    "master",
                    f"warning: reload refused: {exc} (files read at reload must be readable"
                    " by mail_owner); still running the previous configuration",
                )
                return False
            await self._swap(gen)
            self.maillog.emit(
                "master", f"reload -- version {__version__}, configuration {self._where()}"
            )
            return True

    async def _swap(self, gen: Generation) -> None:
        old = self._gen
        self.loaded, self.settings, self._gen = gen.loaded, gen.loaded.settings, gen
        s = self.settings
        self._tracker.per_client = s.integer("smtpd_client_connection_count_limit")
        self._tracker.total = s.integer("smtpd_connection_limit")
        if AnvilConfig.from_settings(s) != self.anvil.config:
            self.maillog.emit("master", "warning: anvil limits changed: restart to apply them")
        if self._pool is not None:
            for bind in [b for b in old.listeners if b not in gen.listeners]:
                self._pool.forget(bind)  # its workers' sockets would queue connections
        for bind in [b for b in self._servers if b not in gen.listeners]:
            for server in self._servers.pop(bind):
                server.close()
            self._fronts.pop(bind, None)
            self.maillog.emit("master", f"no longer listening on {bind[0]}:{bind[1]}")
        if self._serves_smtp:  # else the workers apply the new listeners themselves
            for bind, (service, ctx) in gen.listeners.items():
                if bind not in self._servers:
                    try:
                        await self._listen(bind, service, ctx, gen, start=True)
                    except OSError as exc:
                        self.maillog.emit(
                            "master",
                            f"warning: cannot listen on {bind[0]}:{bind[1]}: {exc};"
                            " restart ironpost to apply",
                        )
                elif (bind in self._fronts) != ctx.options.wrappermode:
                    self.maillog.emit(
                        "master",
                        f"warning: {bind[0]}:{bind[1]}: a change of wrapper mode needs a restart",
                    )
                elif bind in self._fronts and bind in gen.wrapper_certs:
                    # The listening socket keeps its SSLContext: load the (renewed) files
                    # into it. Handshakes from now on present the new certificate.
                    chain, key = gen.wrapper_certs[bind]
                    self._fronts[bind].load_cert_chain(chain, key or None)
        # The old queue manager stops claiming and finishes what it holds; the new one
        # claims from now on (a claim moves mail to the active queue: never both).
        if gen.runner is None or old.runner is None:
            return  # a worker: no queue manager
        runner_task = asyncio.create_task(gen.runner.run())
        self._retiring.add(runner_task)
        runner_task.add_done_callback(self._retiring.discard)
        stopping = asyncio.create_task(old.runner.stop())
        self._retiring.add(stopping)
        stopping.add_done_callback(self._retiring.discard)

    # -- stop -----------------------------------------------------------------------------

    async def _shut_down(self) -> None:
        loop = asyncio.get_running_loop()
        for servers in self._servers.values():
            for server in servers:
                server.close()  # no new connections; sessions in progress go on
        deadline = loop.time() + self.settings.seconds("shutdown_timeout")
        _, finished = await asyncio.gather(
            self._drain_sessions(deadline), self._stop_delivery(deadline)
        )
        if not finished:
            self.maillog.emit(
                "qmgr",
                "warning: shutdown_timeout: abandoning deliveries in progress; they stay in"
                " the active queue and are delivered after the restart",
            )
            # Sessions are gone by now: what is left is delivery (and the log flusher).
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
            for task in rest:
                task.cancel()
            if rest:
                await asyncio.wait(rest, timeout=2.0)

    async def _drain_sessions(self, deadline: float) -> None:
        """421 to idle sessions now; transactions may finish until the deadline."""
        loop = asyncio.get_running_loop()
        told: dict[_LiveSession, float] = {}
        while self._live:
            now = loop.time()
            late = now >= deadline
            for session in list(self._live):
                if session in told:
                    # A TLS close waits for the peer's close_notify: not for long.
                    if now - told[session] > 2.0:
                        session.abort()
                elif late or not session.busy:
                    session.shut_down()
                    told[session] = now
            if late:
                break
            await asyncio.sleep(0.05)
        if self._live:
            await asyncio.sleep(0.2)  # let the 421s out
            for session in list(self._live):
                session.abort()

    async def _stop_delivery(self, deadline: float) -> bool:
        """Stop the queue managers (old ones from reloads too); False when deliveries
        were still under way at the deadline."""
        loop = asyncio.get_running_loop()
        runner = self._gen.runner
        stops = [*self._retiring]
        if runner is not None:
            stops.append(asyncio.create_task(runner.stop()))
        if not stops:
            return True
        _done, pending = await asyncio.wait(stops, timeout=max(0.0, deadline - loop.time()))
        return not pending

    # -- listening and background chores ---------------------------------------------

    async def _listen(
        self, bind: Bind, service: Service, ctx: ListenerContext, gen: Generation, *, start: bool
    ) -> None:
        host, port = bind
        front: ssl.SSLContext | None = None
        if ctx.options.wrappermode and ctx.ssl_context is not None:
            # Its own context, so that a reload can load renewed files into it.
            chain, key = gen.wrapper_certs[bind]
            front = tlsmod.server_context(Path(chain), Path(key) if key else None)
            self._fronts[bind] = front
        loop = asyncio.get_running_loop()

        def session() -> _LiveSession:
            return _LiveSession(self._gen.listeners[bind][1], self._live)

        prebound = self._sockets.pop(bind, None)
        if prebound:
            self._servers[bind] = [
                await loop.create_server(
                    session, sock=sock, ssl=front, backlog=1024, start_serving=start
                )
                for sock in prebound
            ]
        else:
            server = await loop.create_server(
                session,
                host=host,
                port=port,
                ssl=front,
                reuse_address=True,
                reuse_port=self._reuse_port or None,
                backlog=1024,
                start_serving=start,
            )
            self._servers[bind] = [server]
        self.maillog.emit(self._who, f"listening on {host}:{port} ({service.role})")

    async def _flush_log_periodically(self, interval: float = 0.1) -> None:
        while True:
            await asyncio.sleep(interval)
            self.maillog.flush()

    async def _anvil_statistics(self, interval: float) -> None:
        """Postfix's anvil logs its peaks every anvil_status_update_time; so does ours."""
        while True:
            await asyncio.sleep(interval)
            for line in self.anvil.statistics():
                self.maillog.emit("anvil", line)
