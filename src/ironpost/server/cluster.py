"""What a process of a cluster node adds when the queue is PostgreSQL: the cluster-wide
anvil (:mod:`ironpost.anvil.cluster`) and destination gate
(:mod:`ironpost.delivery.cluster_gate`).

Owns :class:`ClusterServices`, built once per process from the settings (``None`` with
the SQLite queue, where the anvil and the limiter of the one process are the whole
truth). Each process is its own anvil node (``queue_node_name`` plus its pid), so that
the SMTP workers of one node share their counts too; the gate has one connection per
delivering process.

Invariants: nothing here is on the path of an SMTP command or a delivery decision except
through the anvil's in-memory stores and the gate's try-lock, and neither ever raises
into its caller when PostgreSQL is away (limits fall back to per process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

from ironpost.anvil import Anvil, AnvilConfig
from ironpost.config.settings import Settings
from ironpost.delivery.cluster_gate import ClusterGate
from ironpost.queue.engines import engine_of


class ClusterServices:
    """The cluster-wide anvil and the destination gate of one process."""

    def __init__(self, settings: Settings, log: Callable[[str], None]) -> None:
        from ironpost.anvil.cluster import ClusterAnvil

        url = settings.text("queue_database_url").strip()
        self.node = settings.text("queue_node_name").strip()
        self.sync = ClusterAnvil(
            url,
            f"{self.node}:{os.getpid()}",
            sync_interval=settings.seconds("anvil_cluster_sync_time"),
            log=log,
            clock=time.time,
        )
        self.gate = ClusterGate(url, log=log)
        self._task: asyncio.Task[None] | None = None

    def anvil(self, config: AnvilConfig) -> Anvil:
        """The process's anvil, its counts shared through the database (wall clock: the
        nodes' slots must line up)."""
        return Anvil(
            config, rate_store=self.sync.rate_store, ban_store=self.sync.ban_store, clock=time.time
        )

    def start(self) -> None:
        self._task = asyncio.create_task(self.sync.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sync.close()
        await self.gate.close()


def cluster_services(settings: Settings, log: Callable[[str], None]) -> ClusterServices | None:
    """The services when the queue is shared (PostgreSQL), else None."""
    if engine_of(settings) != "postgresql":
        return None
    return ClusterServices(settings, log)
