"""master.cf: listeners, endpoints, -o overrides."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ironpost.config import ConfigError, LoadedConfig

Loader = Callable[..., LoadedConfig]
MAIN = "myhostname = h.x.org\ninet_protocols = ipv4\n"


def test_services_endpoints_and_overrides(load_main: Loader) -> None:
    cfg = load_main(
        MAIN,
        "# comment\n"
        "smtp      inet  n - n - - smtpd\n"
        "submission inet n - n - - smtpd\n"
        "  -o syslog_name=postfix/submission\n"
        "  -o smtpd_client_restrictions={ permit_sasl_authenticated, reject }\n"
        "  -o { smtpd_banner = $myhostname says hi }\n"
        "[::1]:2525 inet n - n - - smtpd -v\n"
        "127.0.0.1:smtps inet n - n - - smtpd -o smtpd_tls_wrappermode=yes\n"
        "pickup    unix  n - n 60 1 pickup\n"
        "qmgr      unix  n - n 300 1 qmgr\n",
    )
    got = [(s.name, s.host, s.port, s.role, s.source.rsplit("/", 1)[1]) for s in cfg.services]
    assert got == [
        ("smtp", None, 25, "smtp", "master.cf:2"),
        ("submission", None, 587, "submission", "master.cf:3"),
        ("[::1]:2525", "::1", 2525, "smtp", "master.cf:7"),
        ("127.0.0.1:smtps", "127.0.0.1", 465, "submissions", "master.cf:8"),
    ]
    sub = cfg.services[1]
    assert sub.overrides["smtpd_client_restrictions"] == "permit_sasl_authenticated, reject"
    assert sub.settings.words("smtpd_client_restrictions") == (
        "permit_sasl_authenticated",
        "reject",
    )
    assert sub.settings.raw("smtpd_banner") == "h.x.org says hi"
    assert cfg.services[0].settings is cfg.settings
    assert cfg.services[0].bind_hosts() == ("0.0.0.0",)
    assert cfg.services[2].bind_hosts() == ("::1",)


def test_no_master_cf_means_one_smtp_service(load_main: Loader) -> None:
    cfg = load_main(MAIN + "inet_interfaces = loopback-only\n")
    (svc,) = cfg.services
    assert (svc.name, svc.host, svc.port) == ("smtp", None, 25)
    assert svc.bind_hosts() == ("127.0.0.1",)


@pytest.mark.parametrize(
    ("master", "expected"),
    [
        ("smtp inet n - n - - smtpd -o smtpd_timeout=soon\n", "master.cf:1: error: smtpd_timeout"),
        ("smtp inet n - n - -\n", "master.cf:1: error: expected at least 8 fields"),
        ("smtp socket n - n - - smtpd\n", "unknown service type"),
        ("x\n  -o a=b\nsmtp inet n - n - - smtpd -o\n", "-o without name=value"),
        ("smtp inet n - n - - smtpd -o novalue\n", "expected name=value"),
        ("::1:25 inet n - n - - smtpd\n", "[brackets]"),
        ("nosuchport inet n - n - - smtpd\n", "unknown service port"),
        ("smtp inet n - n - - smtpd\n25 inet n - n - - smtpd\n", "master.cf:2: error: 25: dup"),
        ("smtp inet n - n - - smtpd -o smtpd_bogus=1\n", "unknown parameter 'smtpd_bogus'"),
    ],
)
def test_master_errors(load_main: Loader, master: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_main(MAIN, master)
    assert expected in str(info.value)


def test_non_smtpd_inet_service_warns(load_main: Loader) -> None:
    cfg = load_main(MAIN, "smtp inet n - n - 1 postscreen\n")
    assert cfg.services == ()
    assert "not implemented by ironpost: no listener" in cfg.warnings[0].message
