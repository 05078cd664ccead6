"""The seeds' main.cf blocks, pasted verbatim (column-0 continuation lines included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ironpost.config import load

# /work/shared/seeds/000_*.txt: the main.cf block, the RBL block, the performance block.
SEED_000_MAIN = """\
# /etc/postfix/main.cf
myhostname = mail.yourdomain.no
mydomain = yourdomain.no
myorigin = $mydomain
inet_interfaces = all
inet_protocols = ipv4
# DATA PRIVACY & ENCRYPTION (Essential for Norwegian Compliance)
# We use Opportunistic TLS. It's 2012; cleartext is unacceptable.
smtpd_tls_security_level = may
smtpd_tls_cert_file = /etc/pki/tls/certs/mail.pem
smtpd_tls_key_file = /etc/pki/tls/private/mail.key
smtpd_tls_loglevel = 1
# RELAY CONTROL
# Strictly limit who can send mail through us
mynetworks = 127.0.0.0/8 [::1]/128
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination
"""

SEED_000_RBL = """\
smtpd_recipient_restrictions =
permit_mynetworks,
permit_sasl_authenticated,
reject_unauth_destination,
reject_invalid_hostname,
reject_non_fqdn_hostname,
reject_non_fqdn_sender,
reject_non_fqdn_recipient,
reject_unknown_sender_domain,
reject_unknown_recipient_domain,
# The Heavy Hitters:
reject_rbl_client zen.spamhaus.org,
reject_rbl_client bl.spamcop.net,
permit
"""

SEED_000_PERF = """\
# /etc/postfix/main.cf
default_process_limit = 100
initial_destination_concurrency = 5
default_destination_concurrency_limit = 20
"""

# /work/shared/seeds/001_*.txt: the HELO block, the RBL block, the TLS block.
SEED_001_HELO = """\
smtpd_helo_required = yes
smtpd_helo_restrictions =
permit_mynetworks,
reject_non_fqdn_helo_hostname,
reject_invalid_helo_hostname,
permit
"""

SEED_001_RBL = """\
smtpd_recipient_restrictions =
permit_mynetworks,
permit_sasl_authenticated,
reject_unauth_destination,
reject_non_fqdn_sender,
reject_non_fqdn_recipient,
reject_rbl_client zen.spamhaus.org,
reject_rbl_client bl.spamcop.net,
permit
"""

SEED_001_TLS = """\
# /etc/postfix/main.cf
smtpd_tls_security_level = may
smtpd_tls_cert_file = /etc/pki/tls/certs/mail.yourdomain.no.crt
smtpd_tls_key_file = /etc/pki/tls/private/mail.yourdomain.no.key
smtpd_tls_loglevel = 1
"""


def _load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    (tmp_path / "main.cf").write_text(text)
    return load(tmp_path)


def test_seed_000_loads_with_quirk_warnings_only(tmp_path: Path) -> None:
    text = SEED_000_MAIN + SEED_000_RBL + SEED_000_PERF
    cfg = _load(tmp_path, text)
    s = cfg.settings
    main_cf = str(tmp_path / "main.cf")
    assert s.raw("myorigin") == "yourdomain.no"
    assert s.words("smtpd_recipient_restrictions") == (
        "permit_mynetworks",
        "permit_sasl_authenticated",
        "reject_unauth_destination",
        "reject_invalid_hostname",
        "reject_non_fqdn_hostname",
        "reject_non_fqdn_sender",
        "reject_non_fqdn_recipient",
        "reject_unknown_sender_domain",
        "reject_unknown_recipient_domain",
        "reject_rbl_client",
        "zen.spamhaus.org",
        "reject_rbl_client",
        "bl.spamcop.net",
        "permit",
    )
    assert s.integer("default_destination_concurrency_limit") == 20
    quirks = [d for d in cfg.warnings if "indent this line with a space" in d.message]
    lines = text.splitlines()
    # Every column-0 list item (13 lines minus the comment) is reported at its own line.
    assert len(quirks) == 12
    for d in quirks:
        assert d.file == main_cf
        assert not lines[d.line - 1].startswith((" ", "#"))
        assert "=" not in lines[d.line - 1]
    assert quirks[0].line == 18 and "smtpd_recipient_restrictions" in quirks[0].message
    # Every restriction of the seed is live (issue #5): nothing is "not yet implemented".
    assert not [d for d in cfg.warnings if "not yet implemented" in d.message]


def test_seed_001_loads(tmp_path: Path) -> None:
    cfg = _load(tmp_path, SEED_001_HELO + SEED_001_RBL + SEED_001_TLS)
    s = cfg.settings
    assert s.boolean("smtpd_helo_required") is True
    assert s.words("smtpd_helo_restrictions")[-1] == "permit"
    assert s.raw("smtpd_tls_key_file") == "/etc/pki/tls/private/mail.yourdomain.no.key"
    assert sum("indent this line" in d.message for d in cfg.warnings) == 4 + 8
    assert sum("not yet implemented" in d.message for d in cfg.warnings) == 0


@pytest.mark.parametrize(
    "block",
    [SEED_000_MAIN, SEED_000_RBL, SEED_000_PERF, SEED_001_HELO, SEED_001_RBL, SEED_001_TLS],
)
def test_each_seed_block_loads_alone(tmp_path: Path, block: str) -> None:
    assert not any(d.is_error for d in _load(tmp_path, block).diagnostics)


def test_column0_item_after_a_non_list_parameter_is_still_an_error(tmp_path: Path) -> None:
    from ironpost.config import ConfigError

    with pytest.raises(ConfigError, match=r"main.cf:2: error: missing '='"):
        _load(tmp_path, "smtpd_helo_required = yes\npermit_mynetworks,\n")
