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


#: The embedded default's data directory for root: the server drops to mail_owner,
#: which cannot reach root's home.
ROOT_DATA_DIR = Path("/var/lib/ironpost")


def default_data_dir() -> Path:
    """``$IRONPOST_DATA_DIR``; else, for root, /var/lib/ironpost; else
    ``$XDG_DATA_HOME/ironpost`` or ~/.local/share/ironpost. Every command agrees, so
    ``ironpost passwd`` and ``ironpost stop`` find what ``ironpost run`` uses."""
    env = os.environ.get("IRONPOST_DATA_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return ROOT_DATA_DIR
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
# Started as root (make run), the demo makes its unprivileged account if it is missing.
create_mail_owner = yes
"""


#: The settings of Postfix's commented submission example, hardened: AUTH over TLS
#: only, AUTH before MAIL, the login must own the envelope sender and the From:
#: address, and the client's address stays out of Received:.
SUBMISSION_OPTIONS = (
    ("smtpd_sasl_auth_enable", "yes"),
    ("smtpd_tls_auth_only", "yes"),
    ("smtpd_sasl_auth_required", "yes"),
    ("smtpd_reject_unlisted_recipient", "no"),
    ("smtpd_greet_pause", "0"),
    # Judge each command when it comes: a mail client shows the 553 of a sender it
    # may not use at MAIL FROM, where the user can understand it.
    ("smtpd_delay_reject", "no"),
    ("smtpd_client_restrictions", ""),
    ("smtpd_helo_restrictions", ""),
    ("smtpd_sender_restrictions", "reject_non_fqdn_sender,reject_sender_login_mismatch"),
    ("smtpd_relay_restrictions", "permit_sasl_authenticated,reject"),
    ("smtpd_recipient_restrictions", "reject_non_fqdn_recipient"),
    ("smtpd_sasl_from_header_check", "enforce"),
    ("smtpd_sasl_hide_client", "yes"),
)


def submission_options() -> str:
    """The ``-o`` lines of a submission service, for master.cf."""
    return "\n".join(f"  -o {name}={value}" for name, value in SUBMISSION_OPTIONS)


def embedded_master_cf() -> str:
    return """\
# service          type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:2525     inet  n       -       n       -       -       smtpd
127.0.0.1:2587     inet  n       -       n       -       -       smtpd
  -o syslog_name=ironpost/submission
  -o smtpd_tls_security_level=encrypt
{submission}
127.0.0.1:2465     inet  n       -       n       -       -       smtpd
  -o syslog_name=ironpost/smtps
  -o smtpd_tls_wrappermode=yes
{submission}
""".format(submission=submission_options())
