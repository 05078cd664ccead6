"""The Prometheus endpoint: ``GET /metrics`` on ``metrics_listen``, off by default.

Owns reading and checking ``metrics_listen``/``metrics_allow_remote``, and the small HTTP
server that serves :data:`ironpost.metrics.registry.REGISTRY` from a thread of its own (a
scrape never waits for, or blocks, the event loop; the collectors it runs are
thread-safe).

Invariants:

- Off unless ``metrics_listen`` is set. The endpoint has no authentication, so an
  address that is not loopback (``0.0.0.0`` and ``::`` included) is refused unless
  ``metrics_allow_remote = yes``; a bad value stops ironpost with a message naming the
  parameter rather than being guessed at.
- Only ``/metrics`` answers (404 elsewhere); requests are not logged; a client that
  stalls is dropped after :data:`REQUEST_TIMEOUT` seconds.
- :meth:`MetricsServer.close` stops the thread, closes the socket and unregisters the
  queue collector; calling it twice is harmless.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from socketserver import TCPServer, ThreadingMixIn
from typing import TYPE_CHECKING, Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from ironpost.metrics.registry import REGISTRY, NodeRow, QueueCollector

if TYPE_CHECKING:
    from ironpost.queue.model import QueueState

__all__ = [
    "REQUEST_TIMEOUT",
    "MetricsError",
    "MetricsServer",
    "metrics_address",
    "parse_listen",
    "start_metrics_server",
]

DEFAULT_HOST = "127.0.0.1"
REQUEST_TIMEOUT = 10.0
PATH = "/metrics"


class MetricsError(ValueError):
    """``metrics_listen`` is malformed, or names a remote address that is not allowed."""


class _Settings(Protocol):
    def text(self, name: str) -> str: ...

    def boolean(self, name: str) -> bool: ...


class _Stats(Protocol):
    def stats(self) -> Mapping[QueueState, int]: ...


def parse_listen(value: str) -> tuple[str, int]:
    """``PORT``, ``IP:PORT`` or ``[IPv6]:PORT`` -> (address, port). Raises MetricsError.

    A bare port listens on 127.0.0.1. Host names are not accepted: what a name resolves
    to can change, and the loopback check must be about the address actually bound.
    """
    text = value.strip()
    if _digits(text):
        return DEFAULT_HOST, _port(value, text)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise MetricsError(f"metrics_listen = {value}: expected [IPv6]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise MetricsError(f"metrics_listen = {value}: expected PORT, IP:PORT or [IPv6]:PORT")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise MetricsError(f"metrics_listen = {value}: {host!r} is not an IP address") from None
    return str(address), _port(value, port_text)


def _port(value: str, text: str) -> int:
    if not _digits(text) or not 0 < int(text) < 65536:
        raise MetricsError(f"metrics_listen = {value}: bad port {text!r}")
    return int(text)


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()  # str.isdigit alone takes "²" and "٣"


def metrics_address(settings: _Settings) -> tuple[str, int] | None:
    """Where the endpoint listens, or None when it is off. Raises MetricsError for a bad
    value or a non-loopback address without ``metrics_allow_remote = yes``."""
    value = settings.text("metrics_listen")
    if not value.strip():
        return None
    host, port = parse_listen(value)
    if not ipaddress.ip_address(host).is_loopback and not settings.boolean("metrics_allow_remote"):
        raise MetricsError(
            f"metrics_listen = {value}: not a loopback address; the endpoint has no "
            "authentication (set metrics_allow_remote = yes to serve it anyway)"
        )
    return host, port


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT  # StreamRequestHandler sets it on the socket

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every few seconds is not worth a log line


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a stuck scrape must not hold up the process's exit

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks getfqdn() for a name nobody reads, which may wait
        # on DNS at startup; the address is name enough.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


class _Server6(_Server):
    address_family = socket.AF_INET6


def _app(inner: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """Serve ``/metrics`` on ``metrics_listen`` (a no-op handle when it is empty).

    ``store``: the queue store, whose ``stats()`` gives ``ironpost_queue_messages`` at each
    scrape; ``nodes``: a shared queue's nodes, for the per-node cluster gauges. Raises
    :class:`MetricsError` for a refused value and OSError when the address cannot be
    bound (the message names ``metrics_listen``).
    """

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") != PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"Not Found: try /metrics\n"]
        return inner(environ, start_response)

    return app


@dataclass(eq=False)
class MetricsServer:
    """What :func:`start_metrics_server` returns; ``address`` is None when metrics are off."""

    address: tuple[str, int] | None = None
    _server: _Server | None = None
    _thread: threading.Thread | None = None
    _collector: QueueCollector | None = None

    @property
    def url(self) -> str | None:
        if self.address is None:
            return None
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}{PATH}"

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        collector, self._collector = self._collector, None
        if collector is not None:
            REGISTRY.unregister(collector)


def start_metrics_server(
    settings: _Settings,
    *,
    store: _Stats | None = None,
    nodes: Callable[[], Sequence[NodeRow]] | None = None,
) -> MetricsServer:
    """Serve ``/metrics`` on ``metrics_listen`` (a no-op handle when it is empty).

    ``store``: the queue store, whose ``stats()`` gives ``ironpost_queue_messages`` at each
    scrape; ``nodes``: a shared queue's nodes, for the per-node cluster gauges. Raises
    :class:`MetricsError` for a refused value and OSError when the address cannot be
    bound (the message names ``metrics_listen``).
    """
    address = metrics_address(settings)
    if address is None:
        return MetricsServer()
    host, port = address
    server_class = _Server6 if ":" in host else _Server
    try:
        server = make_server(
            host, port, _app(make_wsgi_app(REGISTRY)), server_class, handler_class=_Handler
        )
    except OSError as exc:
        raise OSError(exc.errno, f"metrics_listen = {host}:{port}: {exc.strerror}") from exc
    assert isinstance(server, _Server)
    collector: QueueCollector | None = None
    if store is not None:
        collector = QueueCollector(store.stats, nodes)
        REGISTRY.register(collector)
    bound = server.server_address
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="ironpost-metrics",
        daemon=True,
    )
    thread.start()
    return MetricsServer((str(bound[0]), int(bound[1])), server, thread, collector)
