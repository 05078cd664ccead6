"""docs/metrics.md and docs/grafana-dashboard.json stay in step with the registry: every
metric is documented, and every metric the dashboard queries exists."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ironpost.metrics.registry import REGISTRY

DOCS = Path(__file__).resolve().parents[3] / "docs"
_NAME = re.compile(r"\b((?:ironpost|process)_[a-z_]+)\b")
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
    "info": ("_info",),
}


def exported() -> dict[str, str]:
    """Every sample name the registry can export -> its family name."""
    names = {"ironpost_queue_messages": "ironpost_queue_messages"}  # registered at start
    for family in REGISTRY.collect():
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = family.name
    return names


def dashboard() -> dict[str, Any]:
    return json.loads((DOCS / "grafana-dashboard.json").read_text())


def expressions(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p.get("targets", ())]


def test_every_ironpost_metric_is_documented() -> None:
    text = (DOCS / "metrics.md").read_text()
    families = {f for f in exported().values() if f.startswith("ironpost_")}
    counters = {f.name for f in REGISTRY.collect() if f.type == "counter"}
    for family in sorted(families):
        shown = f"{family}_total" if family in counters else family
        if family == "ironpost_build":
            shown = "ironpost_build_info"
        assert f"`{shown}`" in text, family


def test_dashboard_queries_only_metrics_that_exist() -> None:
    known = exported()
    board = dashboard()
    used = {name for expr in expressions(board) for name in _NAME.findall(expr)}
    assert used, "the dashboard has no queries"
    assert used <= known.keys(), used - known.keys()


def test_dashboard_has_the_panels_the_issue_asks_for() -> None:
    board = dashboard()
    exprs = "\n".join(expressions(board))
    for needed in (
        'ironpost_smtpd_connections_total{instance=~"$instance",tls="yes"}',
        "sum by (tls) (rate(ironpost_smtpd_connections_total",
        "ironpost_smtpd_messages_received_total",
        "sum by (restriction) (rate(ironpost_smtpd_rejections_total",
        "sum by (transport, status) (rate(ironpost_deliveries_total",
        "sum by (state) (ironpost_queue_messages",
        "histogram_quantile(0.99, sum by (le) (rate(ironpost_delivery_delay_seconds_bucket",
        "ironpost_dns_lookup_duration_seconds_bucket",
        'ironpost_dns_lookups_total{instance=~"$instance",status="tempfail"}',
        "ironpost_dnsbl_errors_total",
        "ironpost_smtpd_auth_failures_total",
    ):
        assert needed in exprs, needed


def test_dashboard_is_importable_shape() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and board["schemaVersion"] >= 30
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
            assert panel["targets"], panel["title"]
