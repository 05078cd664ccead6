"""The embedded default configuration: what ``ironpost`` runs with no config directory.

Owns the text of the embedded main.cf and master.cf. They are plain Postfix text,
parsed by the same code path as files on disk, so ``postconf -n`` shows them the
same way. Invariant: the embedded configuration loads with zero diagnostics
(tested) and listens on loopback only, on unprivileged ports.
"""

from __future__ import annotations

import os
from pathlib import Path

EMBEDDED_DIR = "(embedded)"


def default_data_dir() -> Path:
    """``$IRONPOST_DATA_DIR``, else ``$XDG_DATA_HOME/ironpost``, else ~/.local/share/ironpost."""
    env = os.environ.get("IRONPOST_DATA_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "ironpost"


def embedded_main_cf(data_dir: Path) -> str:
    return f"""\
# ironpost embedded default configuration (used when no -c DIR / MAIL_CONFIG is given).
# A demo domain with two mailboxes and one alias; the restrictions are the hardened
# defaults of the parameter table (see ironpost postconf -d).
myhostname = mail.example.test
mydomain = example.test
mydestination = localhost
inet_interfaces = loopback-only
virtual_mailbox_domains = example.test
virtual_mailbox_maps = inline:{{ postmaster@example.test=example.test/postmaster/,
    demo@example.test=example.test/demo/ }}
virtual_alias_maps = inline:{{ abuse@example.test=postmaster@example.test }}
virtual_mailbox_base = {data_dir}/mail
queue_directory = {data_dir}/queue
data_directory = {data_dir}
maillog_file = {data_dir}/maillog
"""


def embedded_master_cf() -> str:
    return """\
# service          type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:2525     inet  n       -       n       -       -       smtpd
127.0.0.1:2587     inet  n       -       n       -       -       smtpd
  -o syslog_name=ironpost/submission
127.0.0.1:2465     inet  n       -       n       -       -       smtpd
  -o syslog_name=ironpost/submissions
  -o smtpd_tls_wrappermode=yes
"""
