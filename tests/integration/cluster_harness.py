"""Three real ironpost nodes sharing one PostgreSQL queue (issue #8), and the load they
take.

``Cluster`` writes one config directory per node (``queue_engine = postgresql``, its own
``queue_node_name``, a short ``queue_lease_time``) and runs ``ironpost run`` for each,
listening on its own loopback address (127.0.0.11-13): started together, then stopped
or ``kill9``'d one at a time. Mail for ``relay.test`` goes to the next hop the test names.

``Load`` is the client side: threads of smtplib clients, round-robin over the nodes,
each message carrying a unique marker (its Subject and a last body line), recording the
queue id of every ``250`` and every refusal. ``deliveries`` counts, per queue id, the
messages a sink received whole (the last body line is there), read from its dumps.

Clients bind 127.0.0.1, the nodes' only ``$mynetworks``: a test that wants a stranger
(the anvil's limits exempt mynetworks) binds another address.
"""

from __future__ import annotations

import itertools
import re
import smtplib
import socket
import subprocess
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from mta_harness import BASE_MAIN_CF, HOST, IRONPOST, Mta, _env, wait_listening
from null_dns import null_dns

NODE_HOSTS = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
RELAY_DOMAIN = "relay.test"

CLUSTER_MAIN_CF = """\
queue_engine = postgresql
queue_database_url = {url}
queue_node_name = {name}
queue_lease_time = {lease}
relay_domains = relay.test
"""

_QUEUED_AS = re.compile(r"queued as (\S+)")
_RECEIVED_ID = re.compile(rb"^Received: .*?\(ironpost\) with \S+ id (\S+)", re.M | re.S)
_END = re.compile(rb"^end (\S+)\r?$", re.M)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Node(Mta):
    """An :class:`Mta` listening on its own address (``Mta.start`` waits on 127.0.0.1)."""

    host: str = HOST
    name: str = ""

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        log = open(self.dir / "stderr.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [*IRONPOST, "run", "-c", str(self.dir)], stdout=log, stderr=log, env=_env()
        )

    def wait_ready(self) -> None:
        assert self.process is not None
        wait_listening(self.host, self.port, self.process, self.dir / "stderr.log")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def write_node_config(directory: Path, host: str, main_extra: str) -> int:
    """A node's main.cf and master.cf in ``directory``; returns its SMTP port."""
    data = directory / "data"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port(host)
    main = BASE_MAIN_CF.replace("{data}", str(data)).replace("{nulldns}", null_dns())
    main = main.replace("inet_interfaces = 127.0.0.1", f"inet_interfaces = {host}")
    (directory / "main.cf").write_text(main + textwrap.dedent(main_extra))
    (directory / "master.cf").write_text(f"{host}:{port} inet n - n - - smtpd\n")
    return port


class Cluster:
    """Three nodes (``node1``..``node3`` on :data:`NODE_HOSTS`) on the database ``url``.
    ``relay`` is the next hop of ``relay.test`` (e.g. ``SmtpSink.nexthop``)."""

    def __init__(
        self, root: Path, url: str, *, relay: str, main_extra: str = "", lease: str = "5s"
    ) -> None:
        self.url = url
        self.nodes: list[Node] = []
        for i, host in enumerate(NODE_HOSTS, 1):
            name = f"node{i}"
            directory = root / name
            directory.mkdir(parents=True)
            extra = CLUSTER_MAIN_CF.format(url=url, name=name, lease=lease)
            extra += f"transport_maps = inline:{{ {RELAY_DOMAIN}=smtp:{relay} }}\n"
            port = write_node_config(directory, host, extra + textwrap.dedent(main_extra))
            self.nodes.append(Node(directory, port, host=host, name=name))

    def __getitem__(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def start(self) -> None:
        """All three at once: they also race to create the schema (under its lock)."""
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def query(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` on the shared queue database (its own short connection)."""
        with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
            return list(conn.execute(sql, params).fetchall())

    def queued(self) -> int:
        """Messages in the shared queue, any state, any node."""
        return int(self.query("SELECT COUNT(*) FROM messages")[0][0])


class ClusterFactory:
    def start(self, url: str, *, relay: str, main_extra: str = "", lease: str = "5s") -> Cluster:
        raise NotImplementedError


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    """``cluster_factory.start(url, relay=..., main_extra=...)``: a started cluster,
    stopped at teardown."""
    started: list[Cluster] = []

    class Factory(ClusterFactory):
        def start(
            self, url: str, *, relay: str, main_extra: str = "", lease: str = "5s"
        ) -> Cluster:
            root = tmp_path / f"cluster{len(started)}"
            cluster = Cluster(root, url, relay=relay, main_extra=main_extra, lease=lease)
            started.append(cluster)
            cluster.start()
            return cluster

    yield Factory()
    for cluster in started:
        cluster.stop()


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` passes (never asserts on time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def message(marker: str, lines: int = 20) -> bytes:
    """A message whose Subject and last line carry ``marker``: a dump with the last line
    was received whole."""
    head = (
        f"From: load@sender.test\r\nTo: rcpt@{RELAY_DOMAIN}\r\nSubject: {marker}\r\n"
        f"Message-ID: <{marker}@load.test>\r\n\r\n"
    )
    return head.encode() + (b"z" * 70 + b"\r\n") * lines + f"end {marker}\r\n".encode()


@dataclass
class Load:
    """Clients spread over ``nodes``; ``total`` messages in all (None: until stopped)."""

    nodes: list[Node]
    prefix: str = "m"
    total: int | None = None
    per_connection: int = 5
    acked: dict[str, str] = field(default_factory=dict)  # marker -> queue id
    acked_by: Counter[str] = field(default_factory=Counter)  # node name -> 250s
    refused: Counter[str] = field(default_factory=Counter)  # "451 4.3.0" -> times
    errors: int = 0  # connections lost or refused
    _stop: threading.Event = field(default_factory=threading.Event)
    _seq: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, threads: int = 6) -> Load:
        for i in range(threads):
            t = threading.Thread(target=self._client, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.join()

    def join(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def _next(self) -> str | None:
        with self._lock:
            n = next(self._seq)
        if self._stop.is_set() or (self.total is not None and n >= self.total):
            return None
        return f"{self.prefix}{n}"

    def _client(self, index: int) -> None:
        for turn in itertools.count(index):
            if self._stop.is_set():
                return
            node = self.nodes[turn % len(self.nodes)]
            try:
                if not self._session(node):
                    return
            except (OSError, smtplib.SMTPException):
                with self._lock:
                    self.errors += 1
                time.sleep(0.05)

    def _session(self, node: Node) -> bool:
        """One connection, up to ``per_connection`` messages; False when the load is done."""
        with smtplib.SMTP(node.host, node.port, timeout=15, source_address=(HOST, 0)) as s:
            s.ehlo("loader.test")
            for _ in range(self.per_connection):
                marker = self._next()
                if marker is None:
                    return False
                code, text = self._transaction(s, marker)
                reply = text.decode(errors="replace")
                with self._lock:
                    if code == 250:
                        found = _QUEUED_AS.search(reply)
                        assert found is not None, reply
                        self.acked[marker] = found.group(1)
                        self.acked_by[node.name] += 1
                    else:
                        self.refused[f"{code} {reply[:5]}"] += 1
                if code != 250:
                    s.rset()
        return True

    @staticmethod
    def _transaction(s: smtplib.SMTP, marker: str) -> tuple[int, bytes]:
        """The first refusal or the end-of-data reply of one message."""
        code, text = s.mail("load@sender.test")
        if code != 250:
            return code, text
        code, text = s.rcpt(f"rcpt@{RELAY_DOMAIN}")
        if code != 250:
            return code, text
        try:
            return s.data(message(marker))
        except smtplib.SMTPDataError as refused:  # refused DATA itself, before the content
            error = refused.smtp_error
            return refused.smtp_code, error if isinstance(error, bytes) else error.encode()


def deliveries(dumps: Path) -> tuple[Counter[str], dict[str, str]]:
    """(times each queue id was received whole, marker -> queue id) from a sink's dumps."""
    times: Counter[str] = Counter()
    markers: dict[str, str] = {}
    for path in dumps.iterdir():
        data = path.read_bytes()
        end = _END.search(data)
        queue_id = _RECEIVED_ID.search(data)
        if end is None or queue_id is None:  # cut off mid-DATA: not a delivery
            continue
        qid = queue_id.group(1).decode()
        times[qid] += 1
        markers[end.group(1).decode()] = qid
    return times, markers
