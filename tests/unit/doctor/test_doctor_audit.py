"""The configuration audit against the seeds' hardening checklist (pure)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from test_doctor_support import settings_for

from ironpost.doctor.audit import audit, host_networks, listeners
from ironpost.doctor.check import Check

GIB = 1024**3


def run(extra: str = "", master: str | None = None, **kw: object) -> dict[str, Check]:
    loaded = settings_for(extra, master)
    kw.setdefault("free_bytes", 100 * GIB)
    checks = audit(listeners(loaded.services, loaded.settings), **kw)  # type: ignore[arg-type]
    return {c.title: c for c in checks}


def test_defaults_pass_except_the_missing_dnsbl() -> None:
    checks = run()
    bad = {t: c.status for t, c in checks.items() if c.status != "pass"}
    assert bad == {"DNSBL": "warn"}


@pytest.mark.parametrize(
    ("mynetworks", "status"),
    [
        ("127.0.0.0/8 [::1]/128", "pass"),
        ("0.0.0.0/0", "fail"),
        ("127.0.0.0/8 192.0.2.0/24", "fail"),
        ("10.1.2.0/24", "pass"),  # the host's own network (given below)
        ("10.1.0.0/16", "fail"),
        ("192.0.2.10/32", "pass"),  # our own address
        ("[::]/0", "fail"),
        ("inline:{ 192.0.2.99=ok }", "warn"),
    ],
)
def test_mynetworks(mynetworks: str, status: str) -> None:
    check = run(
        f"mynetworks = {mynetworks}\n",
        host_nets=[ipaddress.ip_network("10.1.2.0/24")],
        addresses=[ipaddress.ip_address("192.0.2.10")],
    )["mynetworks"]
    assert check.status == status, check


@pytest.mark.parametrize(
    ("relay", "recipient", "status"),
    [
        ("permit_mynetworks, reject_unauth_destination", "", "pass"),
        ("permit, reject_unauth_destination", "reject_unlisted_recipient", "fail"),
        (
            "permit, reject_unauth_destination",
            "permit_mynetworks, reject_unauth_destination",
            "pass",
        ),
        ("check_client_access inline:{1.2.3.4=OK}, reject_unauth_destination", "", "warn"),
        ("permit_sasl_authenticated, defer_unauth_destination", "", "pass"),
        ("", "permit_mynetworks, reject", "pass"),
    ],
)
def test_relay_restrictions(relay: str, recipient: str, status: str) -> None:
    extra = f"smtpd_relay_restrictions = {relay}\n"
    if recipient:
        extra += f"smtpd_recipient_restrictions = {recipient}\n"
    [check] = [c for t, c in run(extra).items() if t.startswith("relay restrictions")]
    assert check.status == status, check
    if status == "fail":
        assert "open relay" in check.detail


def test_each_listener_is_audited() -> None:
    master = (
        "127.0.0.1:25 inet n - n - - smtpd\n"
        "127.0.0.1:587 inet n - n - - smtpd -o smtpd_relay_restrictions=permit,reject\n"
    )
    checks = run("", master)
    assert checks["relay restrictions (127.0.0.1:25)"].status == "pass"
    assert checks["relay restrictions (127.0.0.1:587)"].status == "fail"
    assert "TLS offered (127.0.0.1:587)" not in checks  # port 25 only


def test_tls_helo_dnsbl_auth() -> None:
    assert run("smtpd_tls_security_level = none\n")["TLS offered (smtp)"].status == "fail"
    assert run("smtpd_tls_security_level = encrypt\n")["TLS offered (smtp)"].status == "warn"
    assert run("smtpd_helo_required = no\n")["HELO required"].status == "warn"
    dnsbl = run("smtpd_client_restrictions = reject_rbl_client zen.spamhaus.org=127.0.0.[2..11]\n")
    assert dnsbl["DNSBL"].status == "pass" and dnsbl["DNSBL"].detail == "zen.spamhaus.org"
    clear = run("smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\n")["AUTH only over TLS"]
    assert clear.status == "fail" and "clear text" in clear.detail
    assert run("smtpd_sasl_auth_enable = yes\n")["AUTH only over TLS"].status == "pass"


def test_disk_heuristic() -> None:
    extra = "default_process_limit = 100\nmessage_size_limit = 10485760\n"  # 1000 MiB burst
    assert run(extra, free_bytes=10 * GIB)["concurrency vs. disk"].status == "pass"
    assert run(extra, free_bytes=GIB // 2)["concurrency vs. disk"].status == "warn"
    assert run(extra, free_bytes=15 * 2**20)["concurrency vs. disk"].status == "fail"
    assert run(extra, free_bytes=None)["concurrency vs. disk"].status == "pass"


def test_host_networks_from_proc(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n"
        "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
    )
    inet6 = tmp_path / "if_inet6"
    inet6.write_text(
        "20010db8000000000000000000000025 02 40 00 80     eth0\n"
        "fe8000000000000000fc00fffe000001 02 40 20 80     eth0\n"
    )
    assert host_networks(route, inet6) == [
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("2001:db8::/64"),
    ]
    assert host_networks(tmp_path / "none", tmp_path / "none") == []
