"""Every metric ironpost exports, defined once: its name, help text and labels.

Owns :data:`REGISTRY` (ironpost's own ``CollectorRegistry``: what a scrape returns is
exactly what is listed here plus the process and Python collectors, whatever other
libraries register globally), the metric objects, the small ``record_*``/``count_*``
functions that the instrumented modules call, and the collectors that read state at
scrape time (the queue by state, the DNSBL error counts of :mod:`ironpost.policy.dnsbl`).

Invariants:

- A label value comes from a bounded set: the configuration (master.cf service and
  transport names, restriction names, DNSBL domains), a fixed vocabulary (delivery status,
  DNS type and status, queue state), or an allow-list (an AUTH mechanism outside it is
  ``other``). Never from an address, a mail domain, or any other text a peer chooses, so
  that a hostile client cannot blow up the number of series.
- The hot paths (per command, per recipient, per DNS query) call one function here that
  finds the labelled child in a dict keyed by the label values and increments it: no
  ``.labels()`` lock, no label string built per call. Unlabelled and fixed-label children
  are bound at import.
- A collector that reads state at scrape time never raises into the scrape: if the queue
  cannot be read, its series are left out and ``ironpost_queue_scrape_errors_total``
  counts the failure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from ironpost import __version__

#: A node of a shared queue: (name, started, heartbeat, pid, messages held).
NodeRow = tuple[str, float, float, int, int]

if TYPE_CHECKING:
    from ironpost.queue.model import QueueState

__all__ = [
    "AUTH_FAILURES",
    "CONNECTIONS",
    "CONNECTIONS_ACTIVE",
    "DELIVERIES",
    "DELIVERY_DELAY",
    "DNS_LOOKUPS",
    "DNS_LOOKUP_SECONDS",
    "MESSAGES_RECEIVED",
    "RECEIVED_BYTES",
    "REGISTRY",
    "REJECTIONS",
    "DnsblErrorCollector",
    "QueueCollector",
    "connection_closed",
    "connection_opened",
    "count_auth_failure",
    "count_rejection",
    "message_received",
    "record_delivery",
    "record_dns_lookup",
]

# No ``*_created`` series: they double the series count, and rate() does not need them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)

# The process (CPU, memory, open files), platform and GC collectors are the ones
# prometheus_client registers on its global registry; a scrape of ours has them too.
for _standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_standard)

M = TypeVar("M", Counter, Gauge, Histogram)


class _Children(Generic[M]):
    """The labelled children of one metric, bound once per distinct label values."""

    __slots__ = ("_bound", "_metric")

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._bound: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._bound.get(values)
        if child is None:
            child = self._bound[values] = self._metric.labels(*values)
        return child


# -- build ------------------------------------------------------------------------------

BUILD_INFO = Info("ironpost_build", "The running ironpost's version.", registry=REGISTRY)
BUILD_INFO.info({"version": __version__})

# -- smtpd: connections, messages, rejections, AUTH -------------------------------------

CONNECTIONS = Counter(
    "ironpost_smtpd_connections_total",
    "SMTP sessions that ended, by master.cf service and by whether they ended under TLS "
    '(tls="yes": STARTTLS or a wrapper-mode port; "no": plaintext throughout).',
    ["service", "tls"],
    registry=REGISTRY,
)
CONNECTIONS_ACTIVE = Gauge(
    "ironpost_smtpd_connections_active",
    "SMTP sessions open now (admitted past the connection limits).",
    registry=REGISTRY,
)
MESSAGES_RECEIVED = Counter(
    "ironpost_smtpd_messages_received_total",
    "Messages committed to the queue (the 250 queued as ... was sent), by service.",
    ["service"],
    registry=REGISTRY,
)
RECEIVED_BYTES = Counter(
    "ironpost_smtpd_received_bytes_total",
    "Size of the messages committed to the queue, headers we added included, by service.",
    ["service"],
    registry=REGISTRY,
)
REJECTIONS = Counter(
    "ironpost_smtpd_rejections_total",
    "NOQUEUE rejections (4xx and 5xx) by SMTP stage and by the restriction that made them; "
    'restriction="protocol" when no restriction list decided (limits, bad sequence, '
    "content checks).",
    ["stage", "restriction"],
    registry=REGISTRY,
)
AUTH_FAILURES = Counter(
    "ironpost_smtpd_auth_failures_total",
    'Failed SMTP AUTH exchanges by mechanism; kind="failed" for refused credentials, '
    '"tempfail" when the back-end could not answer.',
    ["mechanism", "kind"],
    registry=REGISTRY,
)

# -- delivery ---------------------------------------------------------------------------

DELIVERIES = Counter(
    "ironpost_deliveries_total",
    "Delivery attempts per recipient by outcome (sent, deferred, bounced) and by the "
    "master.cf transport that made them (smtp, relay, lmtp, virtual, local, error, ...). "
    "Destination domains are not labels: their number is unbounded (see ironpost queue "
    "shape and the maillog for per-domain views).",
    ["transport", "status"],
    registry=REGISTRY,
)
#: Seconds from arrival in the queue to a final outcome: from an instant local delivery
#: to the five days of maximal_queue_lifetime.
DELAY_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4 * 3600.0,
    86400.0,
    5 * 86400.0,
)
DELIVERY_DELAY = Histogram(
    "ironpost_delivery_delay_seconds",
    "Seconds from a message's arrival to a recipient's final outcome (sent or bounced), "
    "by transport and status; deferrals are not final and are not observed.",
    ["transport", "status"],
    buckets=DELAY_BUCKETS,
    registry=REGISTRY,
)

# -- DNS --------------------------------------------------------------------------------

DNS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DNS_LOOKUP_SECONDS = Histogram(
    "ironpost_dns_lookup_duration_seconds",
    "Seconds per DNS query sent to the nameservers (cache hits and callers sharing an "
    "in-flight query are not observed), by record type.",
    ["type"],
    buckets=DNS_BUCKETS,
    registry=REGISTRY,
)
DNS_LOOKUPS = Counter(
    "ironpost_dns_lookups_total",
    'DNS queries sent to the nameservers by record type and result; status="tempfail" '
    "is an error (SERVFAIL, REFUSED, timeout, unreachable server).",
    ["type", "status"],
    registry=REGISTRY,
)

# -- the recording functions (hot paths) ------------------------------------------------

_CONNECTIONS = _Children(CONNECTIONS)
_RECEIVED = _Children(MESSAGES_RECEIVED)
_RECEIVED_BYTES = _Children(RECEIVED_BYTES)
_REJECTIONS = _Children(REJECTIONS)
_AUTH_FAILURES = _Children(AUTH_FAILURES)
_DELIVERIES = _Children(DELIVERIES)
_DELIVERY_DELAY = _Children(DELIVERY_DELAY)
_DNS_SECONDS = _Children(DNS_LOOKUP_SECONDS)
_DNS_LOOKUPS = _Children(DNS_LOOKUPS)

_TLS = {True: "yes", False: "no"}
_AUTH_KIND = {True: "tempfail", False: "failed"}
_FINAL = frozenset({"sent", "bounced"})
#: SASL mechanisms worth a series of their own (IANA registry names ironpost or Dovecot
#: may offer); anything else is counted as "other".
AUTH_MECHANISMS = frozenset(
    {
        "PLAIN",
        "LOGIN",
        "CRAM-MD5",
        "DIGEST-MD5",
        "SCRAM-SHA-1",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-256-PLUS",
        "XOAUTH2",
        "OAUTHBEARER",
        "EXTERNAL",
        "ANONYMOUS",
        "GSSAPI",
        "GSS-SPNEGO",
        "NTLM",
        "OTP",
    }
)


def connection_opened() -> None:
    """A session was admitted (past the connection count and rate limits)."""
    CONNECTIONS_ACTIVE.inc()


def connection_closed(service: str, tls: bool) -> None:
    """An admitted session ended; ``tls``: it was encrypted when it ended."""
    CONNECTIONS_ACTIVE.dec()
    _CONNECTIONS(service, _TLS[tls]).inc()


def message_received(service: str, size: int) -> None:
    _RECEIVED(service).inc()
    _RECEIVED_BYTES(service).inc(size)


def count_rejection(stage: str, restriction: str) -> None:
    """``stage``: the command as the NOQUEUE line names it (RCPT, END-OF-MESSAGE, ...)."""
    _REJECTIONS(stage, restriction or "protocol").inc()


def count_auth_failure(mechanism: str, temporary: bool) -> None:
    mech = mechanism if mechanism in AUTH_MECHANISMS else "other"
    _AUTH_FAILURES(mech, _AUTH_KIND[temporary]).inc()


def record_delivery(transport: str, status: str, delay: float) -> None:
    """One recipient's outcome; ``delay``: seconds since the message arrived."""
    _DELIVERIES(transport, status).inc()
    if status in _FINAL:
        _DELIVERY_DELAY(transport, status).observe(delay)


def record_dns_lookup(rdtype: str, status: str, seconds: float) -> None:
    _DNS_SECONDS(rdtype).observe(seconds)
    _DNS_LOOKUPS(rdtype, status).inc()


# -- collectors: state read at scrape time ----------------------------------------------

QUEUE_SCRAPE_ERRORS = Counter(
    "ironpost_queue_scrape_errors_total",
    "Scrapes at which the queue could not be read (its message counts are then absent).",
    registry=REGISTRY,
)


class QueueCollector(Collector):
    """``ironpost_queue_messages{state}``: messages per queue state, counted at scrape time.

    ``counts`` is the store's ``stats()`` (one indexed ``GROUP BY state``); it runs on the
    metrics server's thread, which is safe for both engines (their admin connection is
    shared under a lock and not tied to a thread). With PostgreSQL the counts are the
    whole cluster's.
    """

    def __init__(
        self,
        counts: Callable[[], Mapping[QueueState, int]],
        nodes: Callable[[], Sequence[NodeRow]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``nodes``: a shared (PostgreSQL) queue's nodes, ``(name, started, heartbeat,
        pid, messages held)``, for the per-node gauges of the cluster."""
        self._counts = counts
        self._nodes = nodes
        self._clock = clock

    def describe(self) -> Iterable[GaugeMetricFamily]:
        yield self._family()
        if self._nodes is not None:
            yield from self._node_families()

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            counts = self._counts()
            rows = self._nodes() if self._nodes is not None else None
        except Exception:  # SQLite's errors, or PostgreSQL away: the scrape goes on
            QUEUE_SCRAPE_ERRORS.inc()
            return
        family = self._family()
        for state, count in sorted(counts.items()):
            family.add_metric([state.value], count)
        yield family
        if rows is not None:
            age, held = self._node_families()
            now = self._clock()
            for name, _started, heartbeat, _pid, active in rows:
                age.add_metric([name], max(0.0, now - heartbeat))
                held.add_metric([name], active)
            yield age
            yield held

    @staticmethod
    def _node_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "ironpost_cluster_node_heartbeat_age_seconds",
                "Seconds since each node of the shared queue last renewed its leases; a node"
                " silent for longer than queue_lease_time has its mail taken over.",
                labels=["node"],
            ),
            GaugeMetricFamily(
                "ironpost_cluster_node_active_messages",
                "Messages each node of the shared queue holds under a lease (being delivered).",
                labels=["node"],
            ),
        )

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "ironpost_queue_messages",
            "Messages in the queue by state (incoming, active, deferred, hold, corrupt).",
            labels=["state"],
        )


class DnsblErrorCollector(Collector):
    """``ironpost_dnsbl_errors_total{list,kind}`` from :data:`ironpost.policy.dnsbl.LOOKUP_ERRORS`.

    The DNSBL code keeps its own plain ``collections.Counter`` (no dependency on this
    package); a scrape copies it. ``dict.copy`` runs under the GIL in one step, so a scrape
    on the server thread never sees the dict change size under it.
    """

    def __init__(self, source: Mapping[tuple[str, str], int] | None = None) -> None:
        self._source = source

    def describe(self) -> Iterable[CounterMetricFamily]:
        yield self._family()

    def collect(self) -> Iterable[CounterMetricFamily]:
        source = self._source
        if source is None:
            # Imported here, not at the top: the resolver imports this module, and the
            # policy package imports the resolver's types.
            from ironpost.policy.dnsbl import LOOKUP_ERRORS

            source = LOOKUP_ERRORS
        family = self._family()
        for (domain, kind), count in sorted(dict(source).items()):
            family.add_metric([domain, kind.replace(" ", "_")], count)
        yield family

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "ironpost_dnsbl_errors",
            "DNSBL lookups that gave no usable answer, by list domain: "
            'kind="tempfail" (SERVFAIL, timeout) or "error_answer" (an error code such as '
            "Spamhaus's 127.255.255.254, or an answer outside 127.0.0.0/8). The client was "
            "treated as not listed.",
            labels=["list", "kind"],
        )


REGISTRY.register(DnsblErrorCollector())
