"""Parameter table, metrics family (issue #6): the Prometheus endpoint.

See params_smtpd.py for the conventions. The values are checked where the endpoint is
started (:func:`ironpost.metrics.server.metrics_address`): an address that is not an IP
literal with a port, or a non-loopback address without ``metrics_allow_remote = yes``,
stops ironpost with a message naming the parameter.
"""

from __future__ import annotations

from ironpost.config.paramdef import Param, b, s

METRICS: tuple[Param, ...] = (
    s(
        "metrics_listen",
        "",
        "Prometheus /metrics endpoint: PORT (on 127.0.0.1), IP:PORT or [IPv6]:PORT; empty: off.",
        origin="ironpost",
    ),
    b(
        "metrics_allow_remote",
        "no",
        "Allow metrics_listen on a non-loopback address (the endpoint has no authentication).",
        origin="ironpost",
    ),
)
