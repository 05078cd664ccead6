"""What every session of one listener shares: options, policy, store, and the limits
that span connections (per-client and global connection counts, free disk space).
"""

from __future__ import annotations

import os
import ssl
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ironpost.protocol import replies as R
from ironpost.protocol.replies import Reply

if TYPE_CHECKING:
    from ironpost.anvil import Anvil
    from ironpost.auth.dkim_sign import DkimSigner
    from ironpost.auth.inbound import InboundAuth
    from ironpost.maillog import MailLog
    from ironpost.policy.engine import PolicyEngine
    from ironpost.policy.networks import NetworkList
    from ironpost.queue.store import QueueStore
    from ironpost.routing import Router
    from ironpost.sasl.backend import SaslBackend
    from ironpost.server.options import SmtpdOptions


class ConnectionTracker:
    """Concurrent sessions per client address and in all, shared by every listener.

    Postfix's anvil counts ``smtpd_client_connection_count_limit`` per client; the
    global cap stands in for the smtpd process limit. Clients in $mynetworks are
    exempt from the per-client limit (``smtpd_client_event_limit_exceptions``).
    """

    def __init__(self, *, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self._by_client: dict[str, int] = {}
        self._count = 0

    def admit(self, address: str, *, exempt: bool) -> Reply | None:
        """Count a new connection, or return the 421 that refuses it."""
        if self._count >= self.total:
            return R.TOO_MANY_CONNECTIONS
        current = self._by_client.get(address, 0)
        if not exempt and self.per_client > 0 and current >= self.per_client:
            return R.TOO_MANY_CONNECTIONS
        self._by_client[address] = current + 1
        self._count += 1
        return None

    def release(self, address: str) -> None:
        current = self._by_client.get(address, 0)
        if current == 0:
            return  # never admitted
        if current <= 1:
            self._by_client.pop(address, None)
        else:
            self._by_client[address] = current - 1
        self._count = max(0, self._count - 1)

    @property
    def active(self) -> int:
        return self._count


class DiskSpace:
    """Free space under the queue directory, sampled at most once a second."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._checked = -1e9
        self._free = 0

    def free_bytes(self) -> int:
        now = self._clock()
        if now - self._checked >= 1.0:
            try:
                st = os.statvfs(self._path)
                self._free = st.f_bavail * st.f_frsize
            except OSError:
                self._free = 0
            self._checked = now
        return self._free

    def has_room(self, options: SmtpdOptions) -> bool:
        """Postfix's rule: free space must exceed queue_minfree and 1.5 x message_size_limit."""
        need = max(options.queue_minfree, int(options.max_message_size * 1.5))
        return self.free_bytes() > need


@dataclass(slots=True)
class ListenerContext:
    service: str
    options: SmtpdOptions
    ssl_context: ssl.SSLContext | None
    policy: PolicyEngine
    router: Router
    store: QueueStore
    maillog: MailLog
    tracker: ConnectionTracker
    mynetworks: NetworkList
    bare_newline_exclusions: NetworkList
    disk: DiskSpace
    event_exceptions: NetworkList  # smtpd_client_event_limit_exceptions
    sasl: SaslBackend | None = None  # None: AUTH not offered on this listener
    anvil: Anvil | None = None
    signer: DkimSigner | None = None  # DKIM keys for our domains (None: sign nothing)
    inbound: InboundAuth | None = None  # SPF/DKIM/DMARC checks (None: check nothing)
    on_queued: Callable[[str], None] = field(default=lambda _qid: None)

    def log_exception(self, where: str, exc: BaseException) -> None:
        tb = "".join(traceback.format_exception(exc)).replace("\n", " | ")
        self.maillog.emit("smtpd", f"panic: {where}: {tb}")
