"""A throwaway ironpost living entirely under one directory, for the benchmarks.

Owns how the benchmark runs ironpost: ``<repo>/.venv/bin/ironpost run -c <root>/etc`` with the
same main.cf as Postfix (`common.MAIN_CF`) and a one-line Postfix-syntax master.cf
(``host:port inet n - n - - smtpd``). The ``hash:`` map is read from its text source, so no
postmap step. ironpost's stdout/stderr go to ``<root>/ironpost.out``.

Invariant: the server runs in its own session, so `stop` can signal its whole process group
(any worker it forks) by that group's id, and nothing of it survives `stop`.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from pathlib import Path

from common import MAIL_USER, MAIN_CF, REPO, BenchError, prepare_root, wait_for_banner

IRONPOST = REPO / ".venv" / "bin" / "ironpost"


def ironpost_unavailable(binary: Path = IRONPOST) -> str | None:
    """Why ``ironpost run -c DIR`` cannot be benchmarked yet, or None when it can."""
    if not binary.exists():
        return f"{binary} not found (run `make` to build the venv)"
    try:
        done = subprocess.run(
            [str(binary), "run", "--help"], capture_output=True, text=True, timeout=30
        )
    except subprocess.TimeoutExpired:
        return "`ironpost run --help` timed out"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"`ironpost run` is not usable yet ({last})"
    if "-c" not in done.stdout:
        return "`ironpost run` has no -c CONFIG_DIR option yet"
    return None


class IronpostInstance:
    """ironpost under ``root``, listening on ``host:port``."""

    name = "ironpost"

    def __init__(
        self,
        root: Path,
        host: str = "127.0.0.21",
        port: int = 2525,
        binary: Path = IRONPOST,
        main_cf: str = MAIN_CF,
        workers: int | None = None,
    ) -> None:
        self.binary = binary
        self.main_cf = main_cf  # a `common.MAIN_CF`-style template
        self.root = root
        self.host = host
        self.port = port
        self.config_dir = root / "etc"
        self.proc: subprocess.Popen[bytes] | None = None
        self.workers = workers  # `ironpost run --workers N`; None: the configured default

    def setup(self) -> None:
        prepare_root(self.root, self.main_cf)
        (self.config_dir / "master.cf").write_text(
            f"{self.host}:{self.port} inet n - n - - smtpd\n"
        )
        # The same starting point Postfix gets from `postfix check`: an empty data_directory
        # owned by mail_owner (the queue directory was made by prepare_root).
        pw = pwd.getpwnam(MAIL_USER)
        (self.root / "data").mkdir(mode=0o700, exist_ok=True)
        os.chown(self.root / "data", pw.pw_uid, pw.pw_gid)

    def start(self, timeout: float = 30.0) -> None:
        if not (self.config_dir / "master.cf").exists():
            self.setup()
        out = (self.root / "ironpost.out").open("ab")
        try:
            workers = [] if self.workers is None else ["--workers", str(self.workers)]
            self.proc = subprocess.Popen(
                [str(self.binary), "run", "-c", str(self.config_dir), *workers],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.root,
            )
        finally:
            out.close()
        proc = self.proc
        try:
            wait_for_banner(self.host, self.port, timeout, alive=lambda: proc.poll() is None)
        except BenchError as exc:
            self.stop()
            raise BenchError(f"{exc}\n{self.output_tail()}") from exc

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pgid = proc.pid  # start_new_session: the server leads its own process group
        if proc.poll() is None:
            _signal_group(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Workers the server forked may outlive it; they are still in its group.
        _signal_group(pgid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(5)
        time.sleep(0.05)

    def output_tail(self, lines: int = 15) -> str:
        try:
            text = (self.root / "ironpost.out").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
