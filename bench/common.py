"""What the side-by-side benchmarks share: the one main.cf, the load, the clock, the machine.

Owns the benchmark's fairness invariants:

* Both servers read the **same** main.cf text (`MAIN_CF`, or a benchmark's extension of it such
  as relay.py's). The only thing that differs between the two rendered files is the per-server
  root directory (queue, data, log, Maildir base, map file all live under it); the mail
  uid/gid are the same for both.
* Every load starts on a fresh, empty Maildir, so "end to end" counts only this run's messages.
* Rates are messages / wall time. "Accepted" stops when smtp-source exits (every message got
  its 250 after DATA); "end to end" stops at the last rename into the Maildir's ``new/``, read
  from that directory's mtime, so the polling interval does not inflate or hide anything.
* The relay benchmark's remote end is one fresh `SmtpSink` per run, so its count is that run's;
  `DnsTrap` takes every DNS query ironpost makes, so none leaves loopback.

Nothing here imports ironpost: the benchmark drives both servers from the outside, as a client
would, so it measures the same thing for both.
"""

from __future__ import annotations

import os
import platform
import pwd
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parent.parent
DOMAIN = "bench.test"  # spelled out in MAIN_CF too
SENDER = f"sender@{DOMAIN}"
RECIPIENT = f"user@{DOMAIN}"
# The mailbox path relative to virtual_mailbox_base; the trailing slash means Maildir.
MAILBOX = f"{DOMAIN}/user/"
# Who owns the delivered mail. Postfix's virtual(8) refuses uids below virtual_minimum_uid (100),
# and the postfix account exists wherever the Debian package is installed.
MAIL_USER = "postfix"
SINK_USER = "nobody"  # smtp-sink refuses to keep root privileges

# The shared main.cf. Placeholders: {root} (this server's own directory), {uid}, {gid}.
# Everything a server needs that Postfix would otherwise read from /etc/postfix is set here, so
# neither server touches the system configuration. ironpost warns about the Postfix-only
# parameters it does not implement (compatibility_level, virtual_uid_maps, ...); that is expected.
MAIN_CF = """\
# Shared by Postfix and ironpost in the accept benchmark (bench/common.py).
compatibility_level = 3.6
myhostname = mx.bench.test
mydomain = bench.test
myorigin = $mydomain
mydestination =
alias_maps =
alias_database =
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
message_size_limit = 10240000
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
# ironpost only (Postfix ignores it): no DKIM signing in the accept/relay figures, as
# Postfix signs nothing here; signing has its own scenario (issue #7, S6).
dkim_auto_keys = no

virtual_mailbox_domains = bench.test
virtual_mailbox_maps = hash:{root}/etc/vmailbox
virtual_mailbox_base = {root}/mail
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}

mail_owner = postfix
setgid_group = postdrop

# Per server: these differ only by directory.
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
"""

VMAILBOX = f"{RECIPIENT} {MAILBOX}\n"


def render_main_cf(root: Path, template: str = MAIN_CF) -> str:
    """The shared main.cf (``template``, a `MAIN_CF`-style text) for a server under ``root``."""
    pw = pwd.getpwnam(MAIL_USER)
    return template.format(root=root, uid=pw.pw_uid, gid=pw.pw_gid)


def prepare_root(root: Path, template: str = MAIN_CF) -> None:
    """Create the directories both servers expect under ``root``, with the config files.

    The tree must be traversable by unprivileged daemons (Postfix's virtual(8) runs as the mail
    uid), hence 0755 on the path, and the Maildir base belongs to the mail uid.
    """
    pw = pwd.getpwnam(MAIL_USER)
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    (root / "etc").mkdir(mode=0o755)
    (root / "queue").mkdir(mode=0o755)
    (root / "mail").mkdir(mode=0o755)
    os.chown(root / "mail", pw.pw_uid, pw.pw_gid)
    (root / "etc" / "main.cf").write_text(render_main_cf(root, template))
    (root / "etc" / "vmailbox").write_text(VMAILBOX)


def maildir_new(root: Path) -> Path:
    return root / "mail" / MAILBOX / "new"


class Server(Protocol):
    """A mail server under test, started fresh for one load and stopped after it."""

    name: str
    host: str
    port: int
    root: Path

    def start(self) -> None: ...
    def stop(self) -> None: ...


class BenchError(RuntimeError):
    """The benchmark cannot produce a valid figure (setup failed, messages lost, timeout)."""


# --- readiness -------------------------------------------------------------------------------


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_banner(
    host: str, port: int, timeout: float, alive: Callable[[], bool] | None = None
) -> None:
    """Poll until the server answers with a 220 greeting, then QUIT politely.

    ``alive`` is an optional callable returning False once the server process has died, so a
    server that crashes at startup fails at once instead of after the whole timeout.
    """
    deadline = time.monotonic() + timeout
    last = "no connection"
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            raise BenchError(f"server on {host}:{port} exited during startup")
        try:
            with socket.create_connection((host, port), timeout=2) as sock:
                banner = sock.makefile("rb").readline()
                if banner.startswith(b"220"):
                    sock.sendall(b"QUIT\r\n")
                    return
                last = banner.decode("ascii", "replace").strip() or "empty greeting"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(f"no 220 banner from {host}:{port} within {timeout:.0f}s ({last})")


# --- the load --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadSpec:
    messages: int
    sessions: int
    size: int
    reuse: bool  # smtp-source -d: several messages per connection
    recipient: str = RECIPIENT

    @property
    def mode(self) -> str:
        return "reuse (-d)" if self.reuse else "new connection per message"

    def argv(self, host: str, port: int) -> list[str]:
        argv = ["smtp-source", "-s", str(self.sessions), "-m", str(self.messages)]
        argv += ["-l", str(self.size)]
        if self.reuse:
            argv.append("-d")
        argv += ["-f", SENDER, "-t", self.recipient, f"{host}:{port}"]
        return argv


class Rates:
    """Rates and the JSON form of a result dataclass that has these three fields."""

    messages: int
    accept_seconds: float
    e2e_seconds: float

    @property
    def accepted_rate(self) -> float:
        return self.messages / self.accept_seconds

    @property
    def e2e_rate(self) -> float:
        return self.messages / self.e2e_seconds

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["accepted_rate"] = round(self.accepted_rate, 1)
        out["e2e_rate"] = round(self.e2e_rate, 1)
        return out


@dataclass(frozen=True)
class LoadResult(Rates):
    server: str
    mode: str
    messages: int
    accept_seconds: float
    e2e_seconds: float
    delivered: int


def _count(directory: Path) -> int:
    try:
        return len(os.listdir(directory))
    except FileNotFoundError:  # virtual(8) creates the Maildir on first delivery
        return 0


class SourceRun:
    """smtp-source started now, its exit stamped by a thread so the caller can watch meanwhile.

    Invariant: `started` is the `time.perf_counter()` just before the spawn, and `exited_at`
    the one at which its exit was seen (None while it runs), so their difference is the time
    the server took to accept the whole load.
    """

    def __init__(self, argv: list[str]) -> None:
        self.exited_at: float | None = None
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._reaper = threading.Thread(target=self._reap, daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        self.proc.wait()
        self.exited_at = time.perf_counter()

    def abandon(self) -> None:
        """Kill it if it still runs (the load timed out)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self._reaper.join(5)

    def finish(self, server: str) -> float:
        """Wait for it; the seconds it took, or BenchError if it reported any failure."""
        self._reaper.join()
        _, err = self.proc.communicate()
        if self.proc.returncode != 0 or err.strip():
            # smtp-source reports rejected or dropped transactions on stderr; a run with errors
            # would measure how fast the server fails, not how fast it accepts.
            raise BenchError(
                f"{server}: smtp-source exit {self.proc.returncode}: "
                f"{err.decode(errors='replace').strip()[-2000:]}"
            )
        assert self.exited_at is not None
        return self.exited_at - self.started


def run_load(server: Server, spec: LoadSpec, timeout: float, poll: float = 0.25) -> LoadResult:
    """Drive ``server`` with smtp-source and time acceptance and delivery of every message.

    smtp-source's exit is timed in a thread so the main thread can watch the Maildir meanwhile;
    the Maildir poll is cheap (one listdir per ``poll`` seconds) because both servers share the
    machine's two cores with it.
    """
    new_dir = maildir_new(server.root)
    if _count(new_dir):
        raise BenchError(f"{new_dir} is not empty: end-to-end needs a fresh Maildir")
    argv = spec.argv(server.host, server.port)

    wall0 = time.time()
    source = SourceRun(argv)
    deadline = source.started + timeout
    delivered = 0
    while time.perf_counter() < deadline:
        delivered = _count(new_dir)
        if delivered >= spec.messages and source.exited_at is not None:
            break
        time.sleep(poll)
    else:
        source.abandon()
        raise BenchError(
            f"{server.name}: {delivered}/{spec.messages} messages in {new_dir} after "
            f"{timeout:.0f}s (smtp-source {'running' if source.exited_at is None else 'done'})"
        )
    accept_seconds = source.finish(server.name)
    if delivered != spec.messages:
        raise BenchError(f"{server.name}: {delivered} messages delivered, {spec.messages} sent")
    # The directory's mtime is the time of the last rename into new/ (Maildir delivery's final
    # step), so this does not depend on the polling interval.
    last_delivery = new_dir.stat().st_mtime
    return LoadResult(
        server=server.name,
        mode=spec.mode,
        messages=spec.messages,
        accept_seconds=accept_seconds,
        e2e_seconds=last_delivery - wall0,
        delivered=delivered,
    )


# --- the relay's remote end: smtp-sink, and a DNS trap ---------------------------------------


class SmtpSink:
    """``smtp-sink -c`` on ``host:port``, counting the messages it acknowledged.

    Invariant: `reached_at` is the `time.perf_counter()` at which the reader thread saw the
    counter reach `target`; the counter only grows, so only each chunk's last record matters.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.count = 0
        self.sessions = 0  # connections the sink saw end: shows the servers' connection reuse
        self.target = 0
        self.reached_at: float | None = None
        self.reached = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self, target: int, timeout: float = 10.0) -> None:
        if port_open(self.host, self.port):
            raise BenchError(f"{self.host}:{self.port} is already in use; the sink needs it")
        self.target = target
        self.proc = subprocess.Popen(
            ["smtp-sink", "-c", "-u", SINK_USER, f"{self.host}:{self.port}", "1024"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        proc = self.proc
        try:
            wait_for_banner(self.host, self.port, timeout, alive=lambda: proc.poll() is None)
        except BenchError as exc:
            self.stop()
            raise BenchError(f"smtp-sink: {exc}") from exc

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        tail = b""
        while chunk := os.read(fd, 65536):
            records = (tail + chunk).split(b"\r")
            tail = records.pop()  # an incomplete record, or b""
            if not records:
                continue
            last = records[-1]
            fields = dict(f.split(b"=", 1) for f in last.split() if b"=" in f)
            if b"mesg" not in fields:
                continue
            self.sessions = int(fields.get(b"sess", b"0"))
            self.count = int(fields[b"mesg"])
            if self.count >= self.target and self.reached_at is None:
                self.reached_at = time.perf_counter()
                self.reached.set()

    def stop(self) -> str:
        """Stop the sink; returns what it wrote on stderr (warnings, errors)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        err = proc.stderr.read() if proc.stderr else b""
        return err.decode(errors="replace").strip()


# --- the DNS trap --------------------------------------------------------------------------


class DnsTrap:
    """A UDP and TCP socket on ``host:port`` that counts DNS queries and never answers.

    ironpost's resolver is pointed here, so a lookup cannot leave loopback, and any lookup on
    the relay path (there should be none for a ``[address]`` next hop) is seen and counted.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.queries: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._socks: list[socket.socket] = []

    def start(self) -> None:
        try:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.host, self.port))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((self.host, self.port))
            tcp.listen(16)
        except OSError as exc:
            raise BenchError(f"DNS trap on {self.host}:{self.port}: {exc}") from exc
        self._socks = [udp, tcp]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self.queries.clear()

    def _serve(self) -> None:
        udp, tcp = self._socks
        sel = selectors.DefaultSelector()
        sel.register(udp, selectors.EVENT_READ)
        sel.register(tcp, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in sel.select(0.2):
                if key.fileobj is udp:
                    packet, _ = udp.recvfrom(4096)
                    self._record(packet)
                else:
                    conn, _ = tcp.accept()
                    conn.settimeout(1.0)
                    try:
                        self._record(conn.recv(4096)[2:])  # 2-byte length prefix
                    except OSError:
                        self._record(b"")
                    finally:
                        conn.close()
        sel.close()

    def _record(self, packet: bytes) -> None:
        with self._lock:
            self.queries.append(dns_question(packet))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for sock in self._socks:
            sock.close()


def dns_question(packet: bytes) -> str:
    """``name/type`` of a DNS query's first question, or ``?`` when it cannot be read."""
    labels, at = [], 12
    try:
        while (length := packet[at]) != 0:
            labels.append(packet[at + 1 : at + 1 + length].decode("ascii", "replace"))
            at += 1 + length
        qtype = int.from_bytes(packet[at + 1 : at + 3], "big")
    except IndexError:
        return "?"
    return f"{'.'.join(labels)}./{qtype}"


# --- environment -----------------------------------------------------------------------------


def ensure_tools() -> None:
    """Install smtp-source and Postfix when missing, through the project's install script."""
    needed = ("smtp-source", "postfix", "postmap", "postconf")
    if all(shutil.which(tool) for tool in needed):
        return
    if os.geteuid() != 0:
        raise BenchError("smtp-source/postfix missing; run as root or `make deps` first")
    subprocess.run(["bash", str(REPO / "scripts" / "install-test-deps.sh")], check=True)
    missing = [tool for tool in needed if not shutil.which(tool)]
    if missing:
        raise BenchError(f"still missing after install: {', '.join(missing)}")


def _cmd(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.returncode == 0 and done.stdout.strip()) or "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare figures across machines."""
    try:
        from importlib.metadata import version

        ironpost_version = version("ironpost")
    except Exception:
        ironpost_version = "not installed"
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": sys.version.split()[0],
        "postfix": _cmd(["postconf", "-d", "-h", "mail_version"]),
        "ironpost": ironpost_version,
        "ironpost_commit": _cmd(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "mem_total_mb": _mem_total_mb(),
    }


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "unknown")
    except OSError:
        return "unknown"


def _mem_total_mb() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return 0


SERVERS = ("postfix", "ironpost")


# --- process memory, from /proc (S3 size mix; usable by any scenario) ------------------------

MIB = 1 << 20


@dataclass(frozen=True)
class MemorySample:
    """Memory of a process group at one moment, in bytes, summed over its processes."""

    rss: int  # bytes, summed over the group's processes
    hwm: int  # summed VmHWM of the processes alive now: an upper bound of the peak so far
    pss: int
    procs: int


def group_pids(pgid: int) -> list[int]:
    """Pids of the processes in process group ``pgid`` (field 5 of /proc/PID/stat)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # exited meanwhile
            continue
        # The command name may hold spaces and parentheses; the fields after the last ")" don't.
        if int(stat.rsplit(b")", 1)[1].split()[2]) == pgid:
            pids.append(int(name))
    return pids


def _kib_fields(path: str, names: tuple[bytes, ...]) -> list[int]:
    """The ``Name:  N kB`` values of ``names`` in a /proc file, 0 when absent or gone."""
    values = dict.fromkeys(names, 0)
    try:
        with open(path, "rb") as f:
            for line in f:
                key, _, rest = line.partition(b":")
                if key in values:
                    values[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return [values[n] for n in names]


def sample_group(pgid: int) -> MemorySample:
    rss = hwm = pss = procs = 0
    for pid in group_pids(pgid):
        vm_rss, vm_hwm = _kib_fields(f"/proc/{pid}/status", (b"VmRSS", b"VmHWM"))
        if not vm_rss:  # a zombie or a process that just left
            continue
        rss += vm_rss
        hwm += vm_hwm
        pss += _kib_fields(f"/proc/{pid}/smaps_rollup", (b"Pss",))[0]
        procs += 1
    return MemorySample(rss, hwm, pss, procs)


class MemoryWatch:
    """A thread sampling a process group's memory every ``interval`` s; keeps the maxima."""

    def __init__(self, pgid: int, interval: float = 0.1) -> None:
        self.pgid = pgid
        self.interval = interval
        self.peak = MemorySample(0, 0, 0, 0)
        self.timeline: list[tuple[float, float, float]] = []  # (s since start, RSS, PSS in MiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.wait(self.interval):
            s = sample_group(self.pgid)
            p = self.peak
            self.peak = MemorySample(
                max(p.rss, s.rss), max(p.hwm, s.hwm), max(p.pss, s.pss), max(p.procs, s.procs)
            )
            # The curve tells a per-session cost (a plateau) from a growing one (a leak).
            t = round(time.perf_counter() - t0, 2)
            self.timeline.append((t, round(s.rss / MIB, 1), round(s.pss / MIB, 1)))

    def __enter__(self) -> MemoryWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def markdown_table(
    head: Sequence[str], lines: Sequence[Sequence[str]], *, left: Collection[int] = (0,)
) -> str:
    """The scenarios' result table: columns in ``left`` flush left, the rest flush right."""
    rows = [list(head), *(list(line) for line in lines)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    out = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.append("| " + " | ".join(cells) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)
