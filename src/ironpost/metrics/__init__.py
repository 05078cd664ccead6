"""Prometheus metrics: what ironpost counts, and the endpoint that serves it.

Owns :mod:`ironpost.metrics.registry` (every metric, defined once, and the recording
functions the server, delivery, DNS and AUTH code call) and
:mod:`ironpost.metrics.server` (``/metrics`` on ``metrics_listen``, off by default and
loopback-only unless ``metrics_allow_remote = yes``). docs/metrics.md lists the metrics;
docs/grafana-dashboard.json charts them.
"""

from __future__ import annotations

from ironpost.metrics.server import MetricsError, MetricsServer, start_metrics_server

__all__ = ["MetricsError", "MetricsServer", "start_metrics_server"]
