"""Assembling the delivery side from settings: transports, scheduler, notices, manager.

Owns the one place that knows which transport object serves which agent name
(``maildir``, ``smtp``, ``lmtp``, ``discard``, ``error``), so that the server and the
tests build the same queue manager from the same main.cf.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from ironpost.delivery.cluster_gate import ClusterGate
from ironpost.delivery.local import DiscardTransport, ErrorTransport, MaildirTransport
from ironpost.delivery.manager import QueueManager
from ironpost.delivery.notices import Notices
from ironpost.delivery.transport import Transport
from ironpost.scheduler import Scheduler, SchedulerConfig

if TYPE_CHECKING:
    from ironpost.config.settings import Settings
    from ironpost.dns.types import Resolver
    from ironpost.maillog import MailLog
    from ironpost.queue.store import QueueStore
    from ironpost.routing import Router


def build_transports(
    settings: Settings, router: Router, maillog: MailLog, resolver: Resolver | None
) -> dict[str, Transport]:
    hostname = settings.text("myhostname")
    transports: dict[str, Transport] = {
        "maildir": MaildirTransport(router, hostname=hostname, maillog=maillog),
        "discard": DiscardTransport(),
        "error": ErrorTransport(),
    }
    if resolver is not None:
        from ironpost.delivery.smtp import SmtpOptions, SmtpTransport

        # "Mail loops back to myself": the addresses we listen on are ours too.
        ours = router.config.local_addresses
        smtp = replace(SmtpOptions.from_settings(settings), my_addresses=ours)
        lmtp = replace(SmtpOptions.from_settings(settings, lmtp=True), my_addresses=ours)
        transports["smtp"] = SmtpTransport(resolver, smtp, maillog=maillog)
        transports["lmtp"] = SmtpTransport(resolver, lmtp, maillog=maillog)
    return transports


def build_queue_manager(
    settings: Settings,
    store: QueueStore,
    router: Router,
    maillog: MailLog,
    *,
    resolver: Resolver | None = None,
    transports: dict[str, Transport] | None = None,
    clock: Callable[[], float] = time.time,
    gate: ClusterGate | None = None,
) -> QueueManager:
    scheduler = Scheduler(SchedulerConfig.from_settings(settings), clock=clock)
    if transports is None:
        transports = build_transports(settings, router, maillog, resolver)
    manager: QueueManager | None = None

    def wake() -> None:
        if manager is not None:
            manager.wake()

    notices = Notices(
        store,
        router,
        maillog,
        settings,
        scheduler.lifetime,
        hostname=settings.text("myhostname"),
        bounce_size_limit=settings.integer("bounce_size_limit"),
        on_queued=wake,
        clock=clock,
    )
    manager = QueueManager(
        store,
        router,
        maillog,
        transports=transports,
        limiter=scheduler.destinations,
        backoff=scheduler.backoff,
        lifetime=scheduler.lifetime,
        notices=notices,
        clock=clock,
        gate=gate,
    )
    return manager
