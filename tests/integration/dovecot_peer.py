"""A real Dovecot on loopback: an auth server (SASL back-end tests) and optionally LMTP.

``DovecotPeer`` writes a dovecot.conf into its own short temporary directory (unix
socket paths must stay under 108 bytes, which pytest's tmp_path does not promise),
with its own base_dir, state_dir and log, no IMAP/POP3, ``ssl = no``, a passwd-file
passdb and userdb (SHA512-CRYPT hashes made by ``doveadm pw``), and runs
``dovecot -F -c CONF`` in the background until stop().

Run as root, Dovecot's defaults work: ``default_internal_user = dovecot`` and
``default_login_user = dovenull`` exist on Debian. Its unprivileged processes (auth and
stats run as dovecot) must reach base_dir and the passwd file, so the directory is 0755.
Dovecot refuses to deliver mail as uid 0 ("userdb returned 0 as uid"): LMTP delivers
as Debian's ``mail`` user (uid 8, hence ``first_valid_uid = 1``) into a Maildir tree
that user owns.

Addresses: each xdist worker gets 127.0.0.{200 + w}; the auth inet listener there on
port 12345 and LMTP on port 24 (the smtp-sink peers that may share the address use 25).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
AUTH_PORT = 12345
LMTP_PORT = 24
MAIL_USER = "mail"  # Debian's uid 8: Dovecot refuses to deliver as root

_hashes: dict[str, str] = {}


def dovecot_address() -> str:
    """This xdist worker's Dovecot address."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = "".join(c for c in worker if c.isdigit()) or "0"
    return f"127.0.0.{200 + int(digits) % 50}"


def sha512_crypt(password: str) -> str:
    """``{SHA512-CRYPT}$6$…`` from Dovecot's own tool (cached: it costs a process)."""
    if password not in _hashes:
        out = subprocess.run(
            [DOVEADM, "pw", "-s", "SHA512-CRYPT", "-p", password],
            capture_output=True,
            text=True,
            check=True,
            timeout=20,
        )
        _hashes[password] = out.stdout.strip()
    return _hashes[password]


CONF = """\
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
instance_name = ironpost-test-{name}
protocols = {protocols}
listen = {host}
ssl = no
auth_mechanisms = {mechanisms}
# Tests want answers now; ironpost applies its own failure delays.
auth_failure_delay = 0
auth_verbose = yes
disable_plaintext_auth = no
first_valid_uid = 1
mail_location = maildir:{dir}/mail/%d/%n
{passdb}
userdb {{
  driver = passwd-file
  args = {dir}/passwd
  default_fields = uid={mail_user} gid={mail_user} home={dir}/home/%d/%n
}}
service auth {{
  unix_listener {dir}/auth {{
    mode = 0666
  }}
  inet_listener {{
    address = {host}
    port = {auth_port}
  }}
}}
{lmtp}
"""

PASSDB = """\
passdb {{
  driver = passwd-file
  args = scheme=SHA512-CRYPT {dir}/passwd
}}"""

# checkpassword's exit status 111 is its "temporary failure": Dovecot answers FAIL temp.
TEMPFAIL_PASSDB = """\
passdb {{
  driver = checkpassword
  args = {dir}/tempfail.sh
}}"""

LMTP_CONF = """\
# Quota is checked after DATA, so that a full mailbox is a per-recipient DATA reply.
lmtp_rcpt_check_quota = no
mail_plugins = $mail_plugins quota
plugin {{
  quota = maildir:User quota
}}
service lmtp {{
  inet_listener lmtp {{
    address = {host}
    port = {lmtp_port}
  }}
}}
"""


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DovecotPeer:
    def __init__(
        self,
        users: dict[str, str],
        *,
        lmtp: bool = False,
        mechanisms: str = "plain login",
        tempfail: bool = False,
        full: tuple[str, ...] = (),
        host: str | None = None,
        auth_port: int = AUTH_PORT,
        lmtp_port: int = LMTP_PORT,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dv", dir="/tmp"))
        # Dovecot's unprivileged processes (auth, stats as dovecot; deliveries as mail)
        # must reach base_dir and the mail store.
        self.dir.chmod(0o755)
        mail = self.dir / "mail"
        mail.mkdir()
        shutil.chown(mail, MAIL_USER, MAIL_USER)
        self.host = host or dovecot_address()
        self.auth_port = auth_port
        self.lmtp_port = lmtp_port
        self.lmtp = lmtp
        self.process: subprocess.Popen[bytes] | None = None
        self.conf = self.dir / "dovecot.conf"
        self.full = full
        self.set_users(users)
        if tempfail:
            script = self.dir / "tempfail.sh"
            script.write_text("#!/bin/sh\nexit 111\n")
            script.chmod(0o755)
        self.conf.write_text(
            CONF.format(
                dir=self.dir,
                name=self.dir.name,
                mail_user=MAIL_USER,
                mechanisms=mechanisms,
                passdb=(TEMPFAIL_PASSDB if tempfail else PASSDB).format(dir=self.dir),
                host=self.host,
                protocols="lmtp" if lmtp else "",
                auth_port=auth_port,
                lmtp=LMTP_CONF.format(host=self.host, lmtp_port=lmtp_port) if lmtp else "",
            )
        )

    # -- where to reach it ---------------------------------------------------------

    @property
    def auth_socket(self) -> str:
        return str(self.dir / "auth")

    @property
    def auth_inet(self) -> str:
        return f"inet:{self.host}:{self.auth_port}"

    @property
    def lmtp_nexthop(self) -> str:
        """For transport_maps: ``lmtp:<this>``."""
        return f"inet:{self.host}:{self.lmtp_port}"

    @property
    def log(self) -> str:
        path = self.dir / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- users and mail ------------------------------------------------------------

    def set_users(self, users: dict[str, str]) -> None:
        """Rewrite the passwd-file (Dovecot rereads it when it changes). The users in
        ``full`` get a 1-byte quota: LMTP refuses them at DATA (552 5.2.2)."""
        lines = [
            f"{user}:{sha512_crypt(pw)}::::::"
            + ("userdb_quota_rule=*:storage=1B" if user in self.full else "")
            + "\n"
            for user, pw in users.items()
        ]
        (self.dir / "passwd").write_text("".join(lines))

    def maildir(self, user: str, domain: str) -> Path:
        return self.dir / "mail" / domain / user

    def messages(self, user: str, domain: str) -> list[bytes]:
        new = self.maildir(user, domain) / "new"
        if not new.exists():
            return []
        return [p.read_bytes() for p in sorted(new.iterdir())]

    def wait_for_messages(
        self, user: str, domain: str, count: int, timeout: float = 20.0
    ) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(user, domain)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"dovecot {user}@{domain}: expected {count} messages")

    # -- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        log = open(self.dir / "stderr.log", "ab")  # noqa: SIM115 - lives with the process
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends every child
        )
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        ports = [self.auth_port] + ([self.lmtp_port] if self.lmtp else [])
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"dovecot exited with {self.process.returncode}:\n"
                    f"{(self.dir / 'stderr.log').read_text()}\n{self.log}"
                )
            if Path(self.auth_socket).exists() and all(map(self._listening, ports)):
                return
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not start:\n{self.log}")

    def _listening(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop Dovecot as a service manager would: every process of it, at once.

        Signalling the master alone is not enough: its children notice the master's
        death, stop listening, and serve the connections they hold for a while longer.
        """
        if self.process is None:
            return
        group = self.process.pid  # start() made it a process group leader
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        deadline = time.monotonic() + 5
        while _group_alive(group):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
                break
            time.sleep(0.05)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
