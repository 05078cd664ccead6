"""Building a configuration generation: one loaded main.cf/master.cf and everything made
from it (router, resolver, queue manager, DKIM signer, inbound checks, and per listener
its options, policy, networks, TLS context and SASL back-end).

:class:`GenerationBuilder` owns what outlives one generation: the TLS context cache and
the SASL back-end registry. :mod:`server.app` (the lifecycle) builds a generation at
start and a whole new one at each reload, and decides whether to swap it in.

Invariants:

- :meth:`GenerationBuilder.build` returns a complete :class:`Generation` or raises; it
  never touches the listeners or the generation in force, so a configuration that does
  not build changes nothing that is serving. What a failed build may leave behind is
  only reusable state: a SASL back-end in the registry, a DKIM key it generated, TLS
  contexts in the cache;
- certificates are read again at every build (the TLS cache lives for one build), so a
  reload picks up renewed files; listeners naming the same pair share one context;
- a SASL back-end is shared by every listener naming the same (type, path) and kept
  across generations (the passwd file is re-read whenever it changes); back-ends are
  closed once, by :meth:`GenerationBuilder.close` at the end of the process;
- a worker process's generation has no queue manager (the master delivers): its
  sessions poke the master instead of waking a runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ironpost.auth.dkim_keys import ensure_auto_keys
from ironpost.auth.dkim_sign import DkimSigner
from ironpost.auth.inbound import InboundAuth
from ironpost.delivery.assemble import build_queue_manager
from ironpost.dns.resolver import DnsResolver
from ironpost.policy.engine import PolicyEngine
from ironpost.policy.networks import NetworkList
from ironpost.routing import Router, RoutingConfig
from ironpost.sasl.builtin import BuiltinBackend
from ironpost.sasl.dovecot import DovecotBackend
from ironpost.sasl.passwd import PasswdFile, passwd_path
from ironpost.server import tls as tlsmod
from ironpost.server.context import ListenerContext
from ironpost.server.options import SmtpdOptions

if TYPE_CHECKING:
    from ironpost.anvil import Anvil
    from ironpost.config import LoadedConfig, Service
    from ironpost.config.settings import Settings
    from ironpost.delivery.cluster_gate import ClusterGate
    from ironpost.delivery.manager import QueueManager
    from ironpost.maillog import MailLog
    from ironpost.queue.store import QueueStore
    from ironpost.sasl.backend import SaslBackend
    from ironpost.server.context import ConnectionTracker, DiskSpace

#: A listening socket: (host, port).
Bind = tuple[str, int]


@dataclass
class Generation:
    """One loaded configuration and everything built from it."""

    loaded: LoadedConfig
    #: The queue manager; None in a worker process (the master delivers).
    runner: QueueManager | None
    #: Per bind: the master.cf service and its sessions' shared context.
    listeners: dict[Bind, tuple[Service, ListenerContext]]
    #: Per bind of a wrapper-mode (smtps) listener: its certificate files.
    wrapper_certs: dict[Bind, tuple[str, str]]


class GenerationBuilder:
    """Builds generations for one process; holds the TLS cache and the SASL registry.

    The process-wide parts every generation shares (the store, the connection tracker,
    anvil, the disk-space probe) are given once here, as the lifecycle owns them.
    """

    def __init__(
        self,
        maillog: MailLog,
        *,
        store: QueueStore,
        tracker: ConnectionTracker,
        anvil: Anvil,
        disk: DiskSpace,
        poke: Callable[[str], None],
        delivers: bool,
        gate: ClusterGate | None = None,
    ) -> None:
        """``poke``: a worker's ``on_queued`` (wakes the master's queue manager).
        ``delivers``: False in a worker process, whose generations have no queue manager.
        ``gate``: a cluster node's destination slots (PostgreSQL queue), else None."""
        self.maillog = maillog
        self._store = store
        self._tracker = tracker
        self._anvil = anvil
        self._disk = disk
        self._poke = poke
        self._delivers = delivers
        self._gate = gate
        self._tls_cache: dict[tuple[str, str], ssl.SSLContext] = {}
        self._sasl: dict[tuple[str, str], SaslBackend] = {}

    async def build(self, loaded: LoadedConfig) -> Generation:
        """Everything a configuration needs, or an exception (nothing is swapped in)."""
        settings = loaded.settings
        store = self._store
        router = Router(RoutingConfig.from_settings(settings))
        resolver = DnsResolver.from_settings(settings)
        runner = None
        if self._delivers:  # a worker never delivers
            runner = build_queue_manager(
                settings, store, router, self.maillog, resolver=resolver, gate=self._gate
            )
        for key in ensure_auto_keys(settings):
            self.maillog.emit(
                "cleanup",
                f"made DKIM key {key.private_path} for {key.domain}; publish its record"
                f" (ironpost dns records): {key.dns_name}",
            )
        signer = DkimSigner.from_settings(settings, loaded.config_dir)
        for domain in sorted(signer.domains()):
            self.maillog.emit("cleanup", f"DKIM signing mail from {domain}")
        inbound = InboundAuth.from_settings(settings, resolver, asyncio.get_running_loop())
        self._tls_cache = {}  # certificates are read again: renewals take effect
        gen = Generation(loaded, runner, {}, {})
        for service in loaded.services:
            ctx = self._listener_context(service, store, router, resolver, runner)
            ctx.sasl = await self._sasl_backend(service, loaded.config_dir)
            ctx.signer, ctx.inbound = signer, inbound
            for host in service.bind_hosts():
                gen.listeners[(host, service.port)] = (service, ctx)
                if ctx.options.wrappermode:
                    gen.wrapper_certs[(host, service.port)] = self._tls_pair(service.settings)
        return gen

    def passwd_files(self) -> list[Path]:
        """The built-in back-ends' passwd files: mail_owner must keep reading them."""
        return [Path(key[1]) for key in self._sasl if key[0] != "dovecot"]

    async def close(self) -> None:
        """Close every SASL back-end (at the end of the process); errors are ignored."""
        for backend in self._sasl.values():
            with contextlib.suppress(Exception):
                await backend.close()

    def _listener_context(
        self,
        service: Service,
        store: QueueStore,
        router: Router,
        resolver: DnsResolver,
        runner: QueueManager | None,
    ) -> ListenerContext:
        s = service.settings
        options = SmtpdOptions.from_settings(s)
        mynetworks = self._networks(s, "mynetworks")
        exclusions = self._networks(s, "smtpd_forbid_bare_newline_exclusions")
        policy = PolicyEngine.from_settings(s, router, mynetworks, resolver=resolver)
        for name in policy.not_implemented:
            self.maillog.emit(
                "smtpd",
                f"warning: {service.name}: restriction {name} is not yet implemented"
                " and is evaluated as dunno",
            )
        ssl_context = self._tls(s, options)
        # A worker pokes the master's queue manager through the trigger socket.
        on_queued: Callable[[str], None] = self._poke
        if runner is not None:
            wake = runner.wake
            on_queued = lambda _qid: wake()  # noqa: E731
        return ListenerContext(
            service=service.name,
            options=options,
            ssl_context=ssl_context,
            policy=policy,
            router=router,
            store=store,
            maillog=self.maillog,
            tracker=self._tracker,
            mynetworks=mynetworks,
            bare_newline_exclusions=exclusions,
            disk=self._disk,
            event_exceptions=self._networks(s, "smtpd_client_event_limit_exceptions"),
            anvil=self._anvil,
            on_queued=on_queued,
        )

    async def _sasl_backend(self, service: Service, config_dir: Path | None) -> SaslBackend | None:
        """The listener's SASL back-end (shared by listeners that name the same one, and
        kept across reloads: the passwd file is re-read whenever it changes)."""
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
            file = passwd_path(s, config_dir)
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

    def _tls_pair(self, s: Settings) -> tuple[str, str]:
        """(chain file, key file or "") from smtpd_tls_*, else the self-signed pair."""
        chain_files = s.words("smtpd_tls_chain_files")
        cert = s.text("smtpd_tls_cert_file")
        if chain_files:
            return (chain_files[0], chain_files[-1] if len(chain_files) > 1 else "")
        if cert:
            return (cert, s.text("smtpd_tls_key_file") or cert)
        generated = tlsmod.ensure_self_signed(Path(s.text("data_directory")), s.text("myhostname"))
        if generated.generated:
            self.maillog.emit(
                "smtpd",
                f"warning: no smtpd_tls_cert_file configured: generated a self-signed "
                f"certificate {generated.chain}",
            )
        return (str(generated.chain), str(generated.key))

    def _tls(self, s: Settings, options: SmtpdOptions) -> ssl.SSLContext | None:
        if options.tls_level == "none" and not options.wrappermode:
            return None
        pair = self._tls_pair(s)
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
