"""A throwaway Postfix instance living entirely under one directory, for the benchmarks.

Owns the steps that make a stock Debian Postfix (3.4+) run without /etc/postfix/main.cf and
without syslog, as root, as many times in a row as the benchmark wants:

1. ``<root>/etc`` holds main.cf (the shared text from `common.MAIN_CF`), a master.cf with the
   standard Debian service lines (chroot off, so nothing needs copying into a jail) plus one
   ``host:port inet`` smtpd line, and the ``hash:`` vmailbox map built with ``postmap -c``.
2. ``<root>/queue`` must exist (root, 0755) before anything else: every Postfix command chdirs
   there first. ``postfix -c <root>/etc check`` then creates the queue subdirectories and
   data_directory with the right owners (post-install create-missing).
3. ``postfix -c <root>/etc start``. No ``alternate_config_directories`` is needed: only the
   set-gid programs (sendmail, postdrop) check it, and the benchmark uses SMTP only.
4. Logging goes to ``maillog_file = <root>/maillog`` through the postlogd service line;
   ``maillog_file_prefixes`` must allow that path or postlogd refuses to write it.

Invariant: `stop` leaves no process of this instance running. Postfix daemons keep their
queue_directory as working directory, which is how leftovers are recognised (by pid).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import MAIN_CF, BenchError, prepare_root, wait_for_banner

# Debian's master.cf (postfix 3.7), the services a virtual-domain MTA uses, with chroot = n.
MASTER_CF_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
        -o syslog_name=postfix/$service_name
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixInstance:
    """Postfix under ``root``, listening on ``host:port``."""

    name = "postfix"

    def __init__(
        self, root: Path, host: str = "127.0.0.20", port: int = 2525, main_cf: str = MAIN_CF
    ) -> None:
        self.root = root
        self.main_cf = main_cf  # a `common.MAIN_CF`-style template
        self.host = host
        self.port = port
        self.config_dir = root / "etc"
        self.queue_dir = root / "queue"

    def _postfix(self, *args: str) -> None:
        done = subprocess.run(
            ["postfix", "-c", str(self.config_dir), *args], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise BenchError(
                f"postfix {' '.join(args)} failed ({done.returncode}): "
                f"{done.stderr.strip()} {self.log_tail()}"
            )

    def setup(self) -> None:
        prepare_root(self.root, self.main_cf)
        master = f"{self.host}:{self.port} inet n - n - - smtpd\n" + MASTER_CF_SERVICES
        (self.config_dir / "master.cf").write_text(master)
        done = subprocess.run(
            ["postmap", "-c", str(self.config_dir), str(self.config_dir / "vmailbox")],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BenchError(f"postmap failed: {done.stderr.strip()}")
        self._postfix("check")

    def start(self, timeout: float = 30.0) -> None:
        if not (self.queue_dir / "active").is_dir():
            self.setup()
        self._postfix("start")
        wait_for_banner(self.host, self.port, timeout, alive=lambda: self.master_pid() is not None)

    def master_pid(self) -> int | None:
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _alive(pid) else None

    def stop(self, timeout: float = 15.0) -> None:
        pid = self.master_pid()
        if pid is not None:
            subprocess.run(["postfix", "-c", str(self.config_dir), "stop"], capture_output=True)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
        for leftover in self._processes():
            try:
                os.kill(leftover, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _processes(self) -> list[int]:
        """Pids of processes working in this instance's queue directory (its daemons)."""
        queue = str(self.queue_dir)
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                cwd = os.readlink(f"/proc/{entry.name}/cwd")
            except OSError:
                continue
            if cwd == queue or cwd.startswith(queue + "/"):
                found.append(int(entry.name))
        return found

    def log_tail(self, lines: int = 10) -> str:
        try:
            text = (self.root / "maillog").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it no longer serves anything.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


if __name__ == "__main__":
    # Manual use: python bench/postfix_instance.py DIR  -> start, wait for Enter, stop.
    instance = PostfixInstance(Path(sys.argv[1]).resolve())
    instance.start()
    print(f"postfix on {instance.host}:{instance.port}, config {instance.config_dir}")
    try:
        input("Enter to stop ")
    finally:
        instance.stop()
