"""The queue manager: claims due mail, routes each recipient to a transport, records.

Owns Postfix qmgr's job: one loop that claims due messages from the store, groups each
message's pending recipients by ``transport:nexthop``, hands each group to its delivery
agent under the per-destination concurrency gate, turns the results into per-recipient
outcomes (with the retry time from the backoff schedule, or a bounce when the queue
lifetime is over), queues the notices the senders asked for, and records.

It never touches the network itself (the transports do) and never decides policy about
*when* (the scheduler does): it is the glue between store, scheduler and transports.

Invariants:
- Every claimed recipient gets exactly one outcome in the message's ``record()``, also
  when routing, content reading or a transport raises (all of which defer); should even
  that fail, the message is given back, deferred (``QueueStore.abandon``).
- A recipient is recorded DELIVERED only after its transport said SENT, which the
  transports say only once the next hop (or the Maildir file) has the message durably.
- Notices (bounces, delay warnings, success reports) are queued *before* the outcomes
  are recorded: a crash in between sends a notice twice, never not at all. If queueing a
  notice fails, the recipients it reports on are deferred instead of recorded final.
- DNS trouble (a TEMPFAIL) defers; only a transport's 5xx, an ``error:`` route or the
  end of the queue lifetime bounces.
- A dead destination's mail is deferred without a connection attempt.
- Deliveries waiting for a destination slot queue in FIFO order per destination, and a
  released slot is handed to the next waiter directly (no wake-everyone event): the cost
  of a release does not grow with the number of messages waiting.
- With a queue shared by several nodes, a network delivery also holds one of its
  destination's cluster-wide slots (``gate``), taken after the local slot and released
  with it, so the destination's concurrency limit holds across the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ironpost.delivery.cluster_gate import ClusterGate, Slot
from ironpost.delivery.notices import Attempt, Notices
from ironpost.delivery.transport import (
    BatchRecipient,
    DeliveryRequest,
    Disposition,
    NextHop,
    RecipientResult,
    Transport,
)
from ironpost.metrics import registry as metrics
from ironpost.queue.model import Outcome, QueuedMessage, RecipientStatus
from ironpost.routing import AddressClass
from ironpost.scheduler import Backoff, DestinationLimiter, Lifetime, feedback_of

if TYPE_CHECKING:
    from ironpost.maillog import MailLog
    from ironpost.queue.store import QueueStore
    from ironpost.routing import Resolution, Router

__all__ = ["QueueManager"]

_LOCAL_ERROR = "4.3.0 mail system error"
_LOCAL_AGENTS = frozenset({"maildir", "discard", "error"})
_GATE_FIRST_PAUSE = 0.05  # seconds between tries for a cluster slot, doubling ...
_GATE_LAST_PAUSE = 1.0  # ... up to this


@dataclass(slots=True)
class _Group:
    hop: NextHop
    service: str  # the log's service name: smtp, relay, lmtp, virtual, local, error, …
    recipients: list[BatchRecipient]


@dataclass(slots=True)
class _Done:
    """One recipient's result plus what the log line and the notices need."""

    rcpt: BatchRecipient
    result: RecipientResult
    service: str
    agent: str
    to: str
    start: float
    end: float


class QueueManager:
    """Delivers the queue. One instance per process; :meth:`run` until :meth:`stop`."""

    def __init__(
        self,
        store: QueueStore,
        router: Router,
        maillog: MailLog,
        *,
        transports: Mapping[str, Transport],
        limiter: DestinationLimiter,
        backoff: Backoff,
        lifetime: Lifetime,
        notices: Notices,
        batch: int = 64,
        active_limit: int = 2000,
        poll_interval: float = 5.0,
        clock: Callable[[], float] = time.time,
        gate: ClusterGate | None = None,
    ) -> None:
        """``gate``: the cluster-wide destination slots of a PostgreSQL queue shared by
        several nodes (:mod:`ironpost.delivery.cluster_gate`); None on one machine."""
        self._store = store
        self._gate = gate
        self._router = router
        self._log = maillog
        self._transports = transports
        self._limiter = limiter
        self._backoff = backoff
        self._lifetime = lifetime
        self._notices = notices
        self._batch = batch
        self._active_limit = active_limit
        self._poll_interval = poll_interval
        self._clock = clock
        self._wakeup = asyncio.Event()
        # Deliveries waiting for a slot, per destination, oldest first; a waiter's
        # future gets True with the slot already taken for it, or False (dead).
        self._waiters: dict[NextHop, deque[asyncio.Future[bool]]] = {}
        self._active: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._running: asyncio.Future[None] | None = None
        self._next_due: float | None = None

    # -- control -------------------------------------------------------------------

    def wake(self) -> None:
        """New or released mail: claim now instead of at the next poll."""
        self._wakeup.set()

    def flush(self) -> None:
        """``ironpost queue flush``: the store made deferred mail due; dead destinations
        get a fresh chance too, as with ``postqueue -f``."""
        revived = self._limiter.revive_all()
        if revived:
            self._log.emit("qmgr", f"flush: {revived} dead destination(s) revived")
            self._grant()
        self._wakeup.set()

    async def run(self) -> None:
        self._stopping = False
        self._running = asyncio.get_running_loop().create_future()
        try:
            while not self._stopping:
                self._wakeup.clear()
                claimed = 0
                try:
                    claimed = await self.claim_once()
                except Exception as exc:  # the loop must survive a broken store
                    self._log.emit("qmgr", f"warning: queue scan failed: {exc!r}")
                if self._stopping:
                    break
                self._grant()  # a safety net: slots are normally handed on at release
                if claimed >= self._batch and len(self._active) < self._active_limit:
                    await asyncio.sleep(0)  # a full batch: more mail is probably due
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._idle_timeout())
        finally:
            if not self._running.done():
                self._running.set_result(None)
            self._running = None

    async def stop(self) -> None:
        """Finish the deliveries under way (deliver and record), then close transports."""
        self._stopping = True
        self._wakeup.set()
        running = self._running
        if running is not None:
            await asyncio.shield(running)
        if self._active:
            await asyncio.gather(*self._active, return_exceptions=True)
        for transport in self._transports.values():
            with contextlib.suppress(Exception):
                await transport.close()

    async def drain(self) -> None:
        """Claim and deliver until nothing is due (tests and ``queue flush`` use it)."""
        while await self.claim_once():
            await asyncio.gather(*self._active, return_exceptions=True)
        await asyncio.gather(*self._active, return_exceptions=True)

    def _idle_timeout(self) -> float:
        timeout = self._poll_interval
        if self._next_due is not None:
            until = self._next_due - self._clock()
            if until <= 0:
                self._next_due = None
                return 0.0
            timeout = min(timeout, until)
        return max(timeout, 0.0)

    # -- claiming ------------------------------------------------------------------

    async def claim_once(self) -> int:
        room = self._active_limit - len(self._active)
        if room <= 0:
            return 0
        now = self._clock()
        messages = await self._store.claim(now=now, limit=min(self._batch, room))
        for msg in messages:
            task = asyncio.create_task(self._message(msg, now))
            self._active.add(task)
            task.add_done_callback(self._finished)
        return len(messages)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.emit("qmgr", f"warning: delivery task failed: {task.exception()!r}")
        if not self._stopping and len(self._active) == self._active_limit - 1:
            # The active queue was full, so due mail may be waiting: claim more. (Waking
            # on every finished message would cost a claim transaction per message.)
            self._wakeup.set()

    # -- one message ---------------------------------------------------------------

    async def _message(self, msg: QueuedMessage, claimed: float) -> None:
        try:
            await self._deliver_message(msg, claimed)
        except Exception as exc:
            # No outcome could be recorded (a bug, or the queue failing at the end): give
            # the message back, deferred, rather than leave it ACTIVE until a restart.
            retry = self._backoff.next_attempt(self._clock(), 1)
            self._log.emit("qmgr", f"warning: {msg.id}: delivery failed: {exc!r}; deferred")
            with contextlib.suppress(Exception):
                await self._store.abandon([msg.id], next_attempt=retry)
            raise

    async def _deliver_message(self, msg: QueuedMessage, claimed: float) -> None:
        pending = [BatchRecipient(r.index, r.spec) for r in msg.recipients if not r.status.is_final]
        attempts = {r.index: r.attempts for r in msg.recipients}
        done: list[_Done] = []
        content = b""
        try:
            content = await self._store.content(msg.id)
        except Exception as exc:
            self._log.emit("qmgr", f"warning: {msg.id}: queue file read error: {exc!r}")
            done = [self._local(msg, r, "qmgr", r.spec.address, _LOCAL_ERROR) for r in pending]
        else:
            groups, early = self._route(msg, pending)
            done.extend(early)
            if groups:
                parts = await asyncio.gather(
                    *(self._deliver(msg, content, g, claimed) for g in groups)
                )
                for part in parts:
                    done.extend(part)
        outcomes = self._outcomes(msg, done, attempts, claimed)
        tried = [Attempt(d.rcpt.spec, d.result, d.agent, d.end) for d in done]
        outcomes, warned = await self._notices.send(msg, tried, outcomes, content, self._clock())
        for o in outcomes:
            if o.next_attempt is not None and (
                self._next_due is None or o.next_attempt < self._next_due
            ):
                self._next_due = o.next_attempt
        for queue_id in await self._store.record(outcomes):
            self._log.emit("qmgr", f"{queue_id}: removed")
        if warned:
            await self._store.mark_warned([msg.id])

    def _route(
        self, msg: QueuedMessage, pending: list[BatchRecipient]
    ) -> tuple[list[_Group], list[_Done]]:
        groups: dict[NextHop, _Group] = {}
        early: list[_Done] = []
        for rcpt in pending:
            try:
                res = self._router.resolve(rcpt.spec.address)
            except Exception as exc:  # a table lookup failure defers, as in Postfix
                self._log.emit("qmgr", f"warning: {msg.id}: address resolution failed: {exc!r}")
                early.append(self._local(msg, rcpt, "qmgr", rcpt.spec.address, _LOCAL_ERROR))
                continue
            hop, service = _hop(res)
            if hop.transport not in self._transports:
                self._log.emit(
                    "qmgr",
                    f"warning: {msg.id}: transport {res.transport_name or res.transport!r} "
                    "is not available",
                )
                early.append(
                    self._local(msg, rcpt, service, res.address, "4.3.5 mail transport unavailable")
                )
                continue
            group = groups.get(hop)
            if group is None:
                group = groups[hop] = _Group(hop, service, [])
            group.recipients.append(rcpt)
        # Split groups at the transport's recipient limit.
        out: list[_Group] = []
        for g in groups.values():
            limit = self._limiter.recipient_limit(g.hop.transport) or len(g.recipients)
            for i in range(0, len(g.recipients), limit):
                out.append(_Group(g.hop, g.service, g.recipients[i : i + limit]))
        return out, early

    async def _deliver(
        self, msg: QueuedMessage, content: bytes, group: _Group, claimed: float
    ) -> list[_Done]:
        hop = group.hop
        # Local agents (Maildir, discard, error) have no remote host to protect: their
        # concurrency is the Maildir thread pool's. The per-destination gate, slow start
        # and dead marks are for network next hops.
        gated = hop.transport not in _LOCAL_AGENTS
        if gated and not await self._acquire(hop):
            reason = self._limiter.dead_reason(hop) or "destination not reachable"
            now = self._clock()
            return [
                _Done(
                    r,
                    RecipientResult(
                        r.index,
                        Disposition.DEFERRED,
                        "4.4.1",
                        f"delivery temporarily suspended: {reason}",
                        "none",
                    ),
                    group.service,
                    hop.transport,
                    r.spec.address,
                    now,
                    now,
                )
                for r in group.recipients
            ]
        start = self._clock()
        request = DeliveryRequest(msg.id, msg.envelope, tuple(group.recipients), content, hop)
        results: list[RecipientResult] = []
        slot: Slot | None = None
        try:
            if gated and self._gate is not None:
                slot = await self._cluster_slot(self._gate, hop)
            results = await self._transports[hop.transport].deliver(request)
        except Exception as exc:  # an agent bug defers its batch; it must not lose it
            self._log.emit("qmgr", f"warning: {msg.id}: {hop} delivery failed: {exc!r}")
        finally:
            if slot is not None and self._gate is not None:
                self._gate.release(slot)
            if gated:
                feedback = feedback_of(results)
                failure = next((r.reply for r in results if r.destination_failed), None)
                self._limiter.release(hop, feedback, failure)
                self._grant()
        end = self._clock()
        by_index = {r.index: r for r in results}
        out = []
        for rcpt in group.recipients:
            result = by_index.get(rcpt.index)
            if result is None:  # the agent forgot one: defer it, never drop it
                result = RecipientResult(
                    rcpt.index, Disposition.DEFERRED, "4.3.0", "mail system error", "none"
                )
            out.append(
                _Done(rcpt, result, group.service, hop.transport, rcpt.spec.address, start, end)
            )
        return out

    async def _acquire(self, hop: NextHop) -> bool:
        """Wait for a delivery slot; False when the destination is dead."""
        limiter = self._limiter
        if hop not in self._waiters and limiter.acquire(hop):  # nobody is ahead of us
            return True
        if limiter.is_dead(hop):
            return False
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(hop, deque()).append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                limiter.give_back(hop)  # granted, but we are gone: not a delivery
                self._grant()
            raise

    async def _cluster_slot(self, gate: ClusterGate, hop: NextHop) -> Slot | None:
        """Wait for one of the destination's cluster-wide slots (this delivery already
        holds a local one); None when the destination has no concurrency limit."""
        limit = self._limiter.concurrency_limit(hop.transport)
        if limit is None:
            return None
        pause = _GATE_FIRST_PAUSE
        while True:
            slot = await gate.acquire(str(hop), limit)
            if slot is not None:
                return slot
            # Other nodes hold every slot: their deliveries end in their own time, and
            # nothing tells us when, so poll, backing off to a second.
            await asyncio.sleep(pause)
            pause = min(pause * 2, _GATE_LAST_PAUSE)

    def _grant(self) -> None:
        """Hand free slots to waiting deliveries, oldest first per destination; tell the
        waiters of a dead destination at once (their mail is deferred)."""
        limiter = self._limiter
        for hop, waiting in list(self._waiters.items()):
            while waiting:
                waiter = waiting[0]
                if waiter.done():  # cancelled while waiting
                    waiting.popleft()
                elif limiter.acquire(hop):
                    waiting.popleft()
                    waiter.set_result(True)
                elif limiter.is_dead(hop):
                    waiting.popleft()
                    waiter.set_result(False)
                else:
                    break
            if not waiting:
                del self._waiters[hop]

    # -- results -------------------------------------------------------------------

    def _local(
        self, msg: QueuedMessage, rcpt: BatchRecipient, service: str, to: str, reply: str
    ) -> _Done:
        dsn, _, text = reply.partition(" ")
        now = self._clock()
        disposition = Disposition.BOUNCED if dsn.startswith("5") else Disposition.DEFERRED
        result = RecipientResult(rcpt.index, disposition, dsn, text, "none")
        return _Done(rcpt, result, service, "none", to, now, now)

    def _outcomes(
        self,
        msg: QueuedMessage,
        done: list[_Done],
        attempts: dict[int, int],
        claimed: float,
    ) -> list[Outcome]:
        env = msg.envelope
        null_sender = not env.sender
        outcomes: list[Outcome] = []
        expired = False
        for d in done:
            r = d.result
            stored = f"{r.dsn} {r.reply}"
            status = r.disposition.value
            if r.disposition is Disposition.SENT:
                outcome = Outcome(msg.id, d.rcpt.index, RecipientStatus.DELIVERED, stored)
            elif r.disposition is Disposition.BOUNCED:
                outcome = Outcome(msg.id, d.rcpt.index, RecipientStatus.BOUNCED, stored)
            else:
                proposed = self._backoff.next_attempt(d.end, attempts.get(d.rcpt.index, 0) + 1)
                retry = self._lifetime.retry_at(env.arrival, d.end, null_sender, proposed)
                if retry is None:  # the queue lifetime is over: this deferral bounces
                    outcome = Outcome(msg.id, d.rcpt.index, RecipientStatus.BOUNCED, stored)
                    d.result = _expired(r)
                    expired = True
                    status = "bounced"
                else:
                    outcome = Outcome(msg.id, d.rcpt.index, RecipientStatus.DEFERRED, stored, retry)
            outcomes.append(outcome)
            delay = max(0.0, d.end - env.arrival)
            delays = (
                max(0.0, claimed - env.arrival),
                max(0.0, d.start - claimed),
                r.conn_delay,
                max(r.xfer_delay, d.end - d.start - r.conn_delay) if r.relay != "none" else 0.0,
            )
            self._log.delivery(
                d.service,
                msg.id,
                to=d.to,
                orig_to=d.rcpt.spec.original,
                relay=r.relay,
                delay=delay,
                delays=delays,
                dsn=r.dsn,
                status=status,
                detail=r.reply,
            )
            metrics.record_delivery(d.service, status, delay)
        if expired:
            self._log.emit(
                "qmgr", f"{msg.id}: from=<{env.sender}>, status=expired, returned to sender"
            )
        return outcomes


def _hop(res: Resolution) -> tuple[NextHop, str]:
    """The delivery agent and next hop of a resolution, and its log service name."""
    if res.transport == "maildir":
        service = "virtual" if res.klass is AddressClass.VIRTUAL_MAILBOX else "local"
        return NextHop("maildir", ""), service
    if res.transport == "error":
        text = res.error or "User unknown"
        if not (text[:2] in ("5.", "4.") and " " in text):
            text = f"5.1.1 {text}" if text.startswith("User unknown") else f"5.0.0 {text}"
        return NextHop("error", text), "error"
    return NextHop(res.transport, res.nexthop or ""), res.transport_name or res.transport


def _expired(r: RecipientResult) -> RecipientResult:
    """A deferral at the end of the queue lifetime: the last reason, made permanent."""
    dsn = r.dsn if r.dsn[:1] in ("4", "5") else "4.4.7"
    reply = r.reply or "message expired in queue"
    return RecipientResult(
        r.index, Disposition.BOUNCED, dsn, reply, r.relay, r.conn_delay, r.xfer_delay
    )
