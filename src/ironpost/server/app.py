"""The MTA assembled: listeners from master.cf, the queue, the queue manager.

Roles stay apart as in Postfix: sessions only accept and commit; the queue manager
only reads the queue and hands mail to transports. They meet at the store, and a
commit wakes the manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ironpost.anvil import Anvil, AnvilConfig
from ironpost.auth.dkim_keys import ensure_auto_keys
from ironpost.auth.dkim_sign import DkimSigner
from ironpost.auth.inbound import InboundAuth
from ironpost.delivery.assemble import build_queue_manager
from ironpost.delivery.manager import QueueManager
from ironpost.dns.resolver import DnsResolver
from ironpost.maillog import MailLog
from ironpost.policy.engine import PolicyEngine
from ironpost.policy.networks import NetworkList
from ironpost.queue.sqlite import open_queue
from ironpost.queue.trigger import FLUSH, TriggerListener, trigger_path
from ironpost.routing import Router, RoutingConfig
from ironpost.sasl.backend import SaslBackend
from ironpost.sasl.builtin import BuiltinBackend
from ironpost.sasl.dovecot import DovecotBackend
from ironpost.sasl.passwd import PasswdFile, passwd_path
from ironpost.server import tls as tlsmod
from ironpost.server.context import ConnectionTracker, DiskSpace, ListenerContext
from ironpost.server.options import SmtpdOptions
from ironpost.server.session import SmtpSession

if TYPE_CHECKING:
    from ironpost.config import LoadedConfig, Service
    from ironpost.config.settings import Settings


class MtaServer:
    def __init__(self, loaded: LoadedConfig, maillog: MailLog) -> None:
        self.loaded = loaded
        self.settings = loaded.settings
        self.maillog = maillog
        self._servers: list[asyncio.base_events.Server] = []
        self._stopping = asyncio.Event()
        self._tls_cache: dict[tuple[str, ...], ssl.SSLContext] = {}
        self._sasl: dict[tuple[str, str], SaslBackend] = {}
        self.anvil = Anvil(AnvilConfig.from_settings(self.settings))

    async def run(self) -> None:
        settings = self.settings
        queue_dir = Path(settings.text("queue_directory"))
        store = open_queue(queue_dir)
        recovered = await store.recover()
        if recovered:
            self.maillog.emit("qmgr", f"recovered {recovered} message(s) from the active queue")
        router = Router(RoutingConfig.from_settings(settings))
        resolver = self.resolver = DnsResolver.from_settings(settings)
        runner = build_queue_manager(settings, store, router, self.maillog, resolver=resolver)
        tracker = ConnectionTracker(
            per_client=settings.integer("smtpd_client_connection_count_limit"),
            total=settings.integer("smtpd_connection_limit"),
        )
        disk = DiskSpace(queue_dir)
        for key in ensure_auto_keys(settings):
            self.maillog.emit(
                "cleanup",
                f"made DKIM key {key.private_path} for {key.domain}; publish its record"
                f" (ironpost dns records): {key.dns_name}",
            )
        signer = DkimSigner.from_settings(settings, self.loaded.config_dir)
        for domain in sorted(signer.domains()):
            self.maillog.emit("cleanup", f"DKIM signing mail from {domain}")
        inbound = InboundAuth.from_settings(settings, resolver, asyncio.get_running_loop())
        loop = asyncio.get_running_loop()
        try:
            for service in self.loaded.services:
                ctx = self._listener_context(service, store, router, tracker, disk, runner)
                ctx.sasl = await self._sasl_backend(service)
                ctx.signer, ctx.inbound = signer, inbound
                for host in service.bind_hosts():
                    server = await loop.create_server(
                        lambda ctx=ctx: SmtpSession(ctx),
                        host=host,
                        port=service.port,
                        ssl=ctx.ssl_context if ctx.options.wrappermode else None,
                        reuse_address=True,
                        backlog=1024,
                    )
                    self._servers.append(server)
                    self.maillog.emit(
                        "master", f"listening on {host}:{service.port} ({service.role})"
                    )
            # sendmail and the queue CLI poke this socket after they change the queue.
            trigger = await TriggerListener.start(
                trigger_path(queue_dir),
                lambda request: runner.flush() if request == FLUSH else runner.wake(),
                log=lambda text: self.maillog.emit("qmgr", text),
            )
            runner_task = asyncio.create_task(runner.run())
            flusher = asyncio.create_task(self._flush_log_periodically())
            statistics = asyncio.create_task(
                self._anvil_statistics(settings.seconds("anvil_status_update_time"))
            )
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self._stopping.set)
            self.maillog.emit("master", "daemon started -- version ironpost, configuration ok")
            await self._stopping.wait()
            self.maillog.emit("master", "terminating on signal")
            for server in self._servers:
                server.close()
            trigger.close()
            await runner.stop()
            flusher.cancel()
            statistics.cancel()
            runner_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner_task
        finally:
            for backend in self._sasl.values():
                with contextlib.suppress(Exception):
                    await backend.close()
            store.close()
            self.maillog.flush()

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

    def stop(self) -> None:
        self._stopping.set()

    def _listener_context(
        self,
        service: Service,
        store: object,
        router: Router,
        tracker: ConnectionTracker,
        disk: DiskSpace,
        runner: QueueManager,
    ) -> ListenerContext:
        s = service.settings
        options = SmtpdOptions.from_settings(s)
        mynetworks = self._networks(s, "mynetworks")
        exclusions = self._networks(s, "smtpd_forbid_bare_newline_exclusions")
        policy = PolicyEngine.from_settings(s, router, mynetworks, resolver=self.resolver)
        for name in policy.not_implemented:
            self.maillog.emit(
                "smtpd",
                f"warning: {service.name}: restriction {name} is not yet implemented"
                " and is evaluated as dunno",
            )
        ssl_context = self._tls(s, options)
        return ListenerContext(
            service=service.name,
            options=options,
            ssl_context=ssl_context,
            policy=policy,
            router=router,
            store=store,  # type: ignore[arg-type]
            maillog=self.maillog,
            tracker=tracker,
            mynetworks=mynetworks,
            bare_newline_exclusions=exclusions,
            disk=disk,
            event_exceptions=self._networks(s, "smtpd_client_event_limit_exceptions"),
            anvil=self.anvil,
            on_queued=lambda _qid: runner.wake(),
        )

    async def _sasl_backend(self, service: Service) -> SaslBackend | None:
        """The listener's SASL back-end (shared by listeners that name the same one)."""
        s = service.settings
        if not s.boolean("smtpd_sasl_auth_enable"):
            return None
        kind = s.text("smtpd_sasl_type")
        warn = self._warner("smtpd")
        if kind == "dovecot":
            path = s.text("smtpd_sasl_path")
            if not path.startswith("inet:") and not path.startswith("/"):
                path = str(Path(s.text("queue_directory")) / path)
            key = (kind, path)
            if key not in self._sasl:
                dovecot = DovecotBackend(
                    path, service=s.text("smtpd_sasl_service"), log_warning=warn
                )
                await dovecot.start()
                self._sasl[key] = dovecot
        else:
            file = passwd_path(s, self.loaded.config_dir)
            key = (kind, str(file))
            if key not in self._sasl:
                self._sasl[key] = BuiltinBackend(PasswdFile(file, warn=warn), log_warning=warn)
        self.maillog.emit("smtpd", f"{service.name}: SASL back-end {kind} ({key[1]})")
        return self._sasl[key]

    def _warner(self, program: str) -> Callable[[str], None]:
        return lambda text: self.maillog.emit(program, f"warning: {text}")

    def _networks(self, s: Settings, name: str) -> NetworkList:
        return NetworkList.build(
            s.words(name),
            open_table=s.table,
            warn=lambda text: self.maillog.emit("smtpd", f"warning: {text}"),
        )

    def _tls(self, s: Settings, options: SmtpdOptions) -> ssl.SSLContext | None:
        if options.tls_level == "none" and not options.wrappermode:
            return None
        chain_files = s.words("smtpd_tls_chain_files")
        cert = s.text("smtpd_tls_cert_file")
        key = s.text("smtpd_tls_key_file") or cert
        if chain_files:
            pair = (chain_files[0], chain_files[-1] if len(chain_files) > 1 else "")
        elif cert:
            pair = (cert, key)
        else:
            generated = tlsmod.ensure_self_signed(
                Path(s.text("data_directory")), s.text("myhostname")
            )
            if generated.generated:
                self.maillog.emit(
                    "smtpd",
                    f"warning: no smtpd_tls_cert_file configured: generated a self-signed "
                    f"certificate {generated.chain}",
                )
            pair = (str(generated.chain), str(generated.key))
        cached = self._tls_cache.get(pair)
        if cached is None:
            try:
                cached = tlsmod.server_context(Path(pair[0]), Path(pair[1]) if pair[1] else None)
            except tlsmod.TlsConfigError as exc:
                if options.tls_level == "encrypt" or options.wrappermode:
                    raise  # TLS is mandatory here: refuse to start rather than run open
                # Postfix at level "may": warn and serve without STARTTLS.
                self.maillog.emit("smtpd", f"warning: {exc}; STARTTLS is disabled")
                return None
            self._tls_cache[pair] = cached
        return cached
