"""The /metrics endpoint: parsing and refusing ``metrics_listen``, and the server itself,
started in-process on loopback and scraped over real HTTP."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from ironpost.config import load_texts
from ironpost.config.settings import Settings
from ironpost.metrics import MetricsError, start_metrics_server
from ironpost.metrics import registry as m
from ironpost.metrics.server import metrics_address, parse_listen
from ironpost.queue import open_queue


def settings(main_cf: str) -> Settings:
    loaded = load_texts(main_cf, "", main_file="main.cf", master_file="master.cf", config_dir=None)
    return loaded.settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# -- metrics_listen -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9154", ("127.0.0.1", 9154)),
        ("127.0.0.1:9154", ("127.0.0.1", 9154)),
        (" 127.0.0.2:80 ", ("127.0.0.2", 80)),
        ("[::1]:9154", ("::1", 9154)),
        ("0.0.0.0:9154", ("0.0.0.0", 9154)),
        ("[2001:DB8::1]:9154", ("2001:db8::1", 9154)),
    ],
)
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "localhost:9154",  # names are refused: the loopback check is about the address
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "::1:9154",  # IPv6 needs brackets
        "[::1]9154",
        "[::1",
        ":9154",
        "127.0.0.1:91a",
        "0",
        "²",
        "127.0.0.1:٣",
    ],
)
def test_parse_listen_refuses(value: str) -> None:
    with pytest.raises(MetricsError, match="metrics_listen"):
        parse_listen(value)


@given(st.text(max_size=60))
def test_parse_listen_never_raises_anything_else(value: str) -> None:
    try:
        host, port = parse_listen(value)
    except MetricsError:
        return
    assert 0 < port < 65536
    assert parse_listen(f"[{host}]:{port}" if ":" in host else f"{host}:{port}") == (host, port)


def test_off_by_default() -> None:
    assert metrics_address(settings("")) is None
    handle = start_metrics_server(settings(""))
    assert handle.address is None and handle.url is None
    handle.close()  # a no-op, but the lead's code calls it unconditionally


@pytest.mark.parametrize("address", ["0.0.0.0:9154", "192.0.2.1:9154", "[::]:9154"])
def test_remote_address_refused_unless_allowed(address: str) -> None:
    with pytest.raises(MetricsError, match="not a loopback address"):
        metrics_address(settings(f"metrics_listen = {address}\n"))
    with pytest.raises(MetricsError, match="metrics_allow_remote"):
        start_metrics_server(settings(f"metrics_listen = {address}\n"))
    allowed = settings(f"metrics_listen = {address}\nmetrics_allow_remote = yes\n")
    assert metrics_address(allowed) == parse_listen(address)


def test_loopback_v6_is_loopback() -> None:
    assert metrics_address(settings("metrics_listen = [::1]:9154\n")) == ("::1", 9154)


# -- the server -----------------------------------------------------------------------------


def test_serves_metrics_on_loopback_and_nothing_else(tmp_path: Path) -> None:
    port = free_port()
    store = open_queue(tmp_path / "queue")
    handle = start_metrics_server(settings(f"metrics_listen = {port}\n"), store=store)
    try:
        assert handle.address == ("127.0.0.1", port)
        assert handle.url == f"http://127.0.0.1:{port}/metrics"
        before = _sample(get(handle.url)[1], "ironpost_smtpd_messages_received_total", "smtp")
        m.message_received("smtp", 100)
        status, text = get(handle.url)
        assert status == 200
        assert _sample(text, "ironpost_smtpd_messages_received_total", "smtp") == before + 1
        queue = {
            s.labels["state"]: s.value
            for f in text_string_to_metric_families(text)
            if f.name == "ironpost_queue_messages"
            for s in f.samples
        }
        assert queue == {"incoming": 0, "active": 0, "deferred": 0, "hold": 0, "corrupt": 0}
        assert get(f"http://127.0.0.1:{port}/")[0] == 404
        assert get(f"http://127.0.0.1:{port}/metricsx")[0] == 404
    finally:
        handle.close()
        store.close()
    handle.close()  # twice is harmless
    # Closed: the port is free again and the queue collector is gone from the registry.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    names = {f.name for f in m.REGISTRY.collect()}
    assert "ironpost_queue_messages" not in names


def test_bind_failure_names_the_parameter() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(OSError, match=f"metrics_listen = 127.0.0.1:{port}"):
            start_metrics_server(settings(f"metrics_listen = 127.0.0.1:{port}\n"))


def _sample(text: str, name: str, service: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels.get("service") == service:
                return s.value
    return 0.0
