"""The record set built from settings: which domains, which addresses, which records."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ironpost.config import Settings, load_texts
from ironpost.deliverability import (
    DkimPublicKey,
    Record,
    RecordOptions,
    RecordsError,
    build_records,
    mail_domains,
    options_from_settings,
    public_addresses,
)
from ironpost.deliverability.records import absolute, mta_sts_id, mta_sts_policy, spf_value

V4 = ipaddress.ip_address("203.0.113.9")  # documentation range: not global
PUB4 = ipaddress.ip_address("8.8.4.4")
PUB6 = ipaddress.ip_address("2a00:1450::25")


def settings(text: str) -> Settings:
    loaded = load_texts(text, None, main_file="main.cf", master_file="master.cf", config_dir=None)
    return loaded.settings


BASE = "myhostname = mail.example.org\nmydomain = example.org\n"


def opts(**kw: object) -> RecordOptions:
    base: dict[str, object] = {
        "hostname": "mail.example.org",
        "domains": ("example.org",),
        "addresses": (PUB4, PUB6),
    }
    base.update(kw)
    return RecordOptions(**base)  # type: ignore[arg-type]


def by(records: list[Record] | tuple[Record, ...], name: str, rtype: str) -> list[str]:
    return [r.value for r in records if r.name == name and r.type == rtype]


# -- which domains are ours ------------------------------------------------------------


def test_domains_come_from_destination_virtual_lists_and_myorigin() -> None:
    s = settings(
        BASE + "myorigin = $mydomain\n"
        "mydestination = $myhostname, localhost.$mydomain, localhost\n"
        "virtual_mailbox_domains = Mailbox.example\n"
        "virtual_alias_domains = alias.example, alias.example\n"
        "relay_domains = relayed.example\n"
    )
    domains, warnings = mail_domains(s)
    # The host name is left out once another domain exists; relay_domains is not ours.
    assert domains == ("mailbox.example", "alias.example", "example.org")
    assert warnings == ()


def test_the_host_name_is_the_mail_domain_when_it_is_the_only_one() -> None:
    domains, _ = mail_domains(settings(BASE))
    assert domains == ("mail.example.org",)


def test_dkim_signing_domains_are_ours() -> None:
    key = DkimPublicKey("signed.example", "s1", "v=DKIM1; k=rsa; p=AAAA")
    domains, _ = mail_domains(settings(BASE + "myorigin = $mydomain\n"), [key])
    assert domains == ("example.org", "signed.example")


def test_tables_and_wildcards_cannot_be_listed_and_say_so() -> None:
    s = settings(BASE + "virtual_mailbox_domains = inline:{ a.example=x }, .wild.example\n")
    domains, warnings = mail_domains(s)
    assert "wild.example" not in domains and "a.example" not in domains
    assert any("inline:{ a.example=x } cannot be listed" in w for w in warnings)
    assert any(".wild.example are not listed" in w for w in warnings)


def test_default_virtual_domain_lists_name_address_maps_and_are_skipped_quietly() -> None:
    s = settings(BASE + "virtual_alias_maps = inline:{ a@alias.example=b@example.org }\n")
    assert mail_domains(s) == (("mail.example.org",), ())


def test_file_entries_are_read(tmp_path: Path) -> None:
    listing = tmp_path / "domains"
    listing.write_text("# ours\nfile1.example, file2.example\n")
    domains, _ = mail_domains(settings(BASE + f"virtual_alias_domains = {listing}\n"))
    assert domains[:2] == ("file1.example", "file2.example")


def test_localhost_like_names_are_never_ours() -> None:
    s = settings(
        "myhostname = localhost.localdomain\n"
        "mydestination = localhost, box.local, x.localhost, localdomain\n"
    )
    domains, warnings = mail_domains(s)
    assert domains == ()
    assert any("no mail domain" in w for w in warnings)


# -- which addresses are published -----------------------------------------------------


def test_loopback_and_private_listeners_are_not_published() -> None:
    s = settings(BASE + "inet_interfaces = 127.0.0.1, 10.1.2.3, [::1], 8.8.4.4\n")
    addresses, warnings = public_addresses(s)
    assert addresses == (PUB4,)
    assert "127.0.0.1 is a loopback address: not published" in warnings
    assert "10.1.2.3 is a private address: not published" in warnings
    assert "::1 is a loopback address: not published" in warnings


def test_wildcard_listener_asks_for_the_address() -> None:
    addresses, warnings = public_addresses(settings(BASE))  # inet_interfaces = all
    assert addresses == ()
    assert any("inet_interfaces = all" in w for w in warnings)
    assert any("no public address known" in w for w in warnings)


def test_outbound_and_proxy_addresses_are_published() -> None:
    s = settings(
        BASE + "inet_interfaces = loopback-only\nproxy_interfaces = 8.8.4.4\n"
        "smtp_bind_address6 = 2a00:1450::25\nsmtp_bind_address = 8.8.4.4\n"
    )
    addresses, warnings = public_addresses(s)
    assert addresses == (PUB4, PUB6)
    assert warnings == ()


def test_explicit_addresses_win_and_are_published_even_if_not_global() -> None:
    s = settings(BASE + "dns_records_addresses = 8.8.4.4\ninet_interfaces = 1.1.1.1\n")
    assert public_addresses(s)[0] == (PUB4,)
    addresses, warnings = public_addresses(s, ["203.0.113.9", "::ffff:8.8.4.4", "mail.host"])
    assert addresses == (V4, PUB4)  # the v4-mapped form is the same address
    assert "203.0.113.9 is a private address: published as you asked" in warnings
    assert "mail.host is not an IP address: not published" in warnings


# -- record values ---------------------------------------------------------------------


def test_spf_value() -> None:
    assert spf_value([PUB4, PUB6]) == "v=spf1 mx a ip4:8.8.4.4 ip6:2a00:1450::25 -all"
    assert spf_value([], host_only=True) == "v=spf1 a -all"


def test_mta_sts_policy_and_id() -> None:
    policy = mta_sts_policy("enforce", ["mail.example.org."])
    assert policy == (
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.org\r\nmax_age: 604800\r\n"
    )
    assert mta_sts_id(policy) == mta_sts_id(mta_sts_policy("enforce", ["mail.example.org"]))
    assert mta_sts_id(policy) != mta_sts_id(mta_sts_policy("testing", ["mail.example.org"]))


@given(st.text(max_size=300))
def test_mta_sts_id_is_always_valid(policy: str) -> None:
    sts_id = mta_sts_id(policy)
    assert 1 <= len(sts_id) <= 32 and sts_id.isalnum() and sts_id.isascii()


def test_absolute_names_are_idna_and_validated() -> None:
    assert absolute("Bücher.Example.") == "xn--bcher-kva.example."
    with pytest.raises(RecordsError):
        absolute("a" * 64 + ".example")
    with pytest.raises(RecordsError):
        absolute(" ")


# -- the record set --------------------------------------------------------------------


def test_a_domain_gets_every_record() -> None:
    keys = [
        DkimPublicKey("example.org", "s2", "v=DKIM1; k=ed25519; p=XX"),
        DkimPublicKey("example.org", "s1", "v=DKIM1; k=rsa; p=YY"),
    ]
    rs = build_records(opts(), keys)
    (zone,) = rs.zones
    recs = zone.records
    assert zone.domain == "example.org"
    assert by(recs, "example.org.", "MX") == ["10 mail.example.org."]
    assert by(recs, "mail.example.org.", "A") == ["8.8.4.4"]
    assert by(recs, "mail.example.org.", "AAAA") == ["2a00:1450::25"]
    assert by(recs, "example.org.", "TXT") == ["v=spf1 mx a ip4:8.8.4.4 ip6:2a00:1450::25 -all"]
    assert by(recs, "mail.example.org.", "TXT") == ["v=spf1 a ip4:8.8.4.4 ip6:2a00:1450::25 -all"]
    dkim_names = [r.name for r in recs if "_domainkey" in r.name]
    assert dkim_names == ["s1._domainkey.example.org.", "s2._domainkey.example.org."]
    assert by(recs, "_dmarc.example.org.", "TXT") == [
        "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org"
    ]
    assert by(recs, "_smtp._tls.example.org.", "TXT") == [
        "v=TLSRPTv1; rua=mailto:postmaster@example.org"
    ]
    assert zone.mta_sts is not None
    assert by(recs, "_mta-sts.example.org.", "TXT") == [f"v=STSv1; id={zone.mta_sts.policy_id}"]
    assert zone.mta_sts.url == "https://mta-sts.example.org/.well-known/mta-sts.txt"
    assert "mx: mail.example.org\r\n" in zone.mta_sts.policy
    assert [(r.name, r.value) for r in rs.ptr] == [
        ("4.4.8.8.in-addr.arpa.", "mail.example.org."),
        (
            "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.5.4.1.0.0.a.2.ip6.arpa.",
            "mail.example.org.",
        ),
    ]
    assert rs.expected() == [*recs, *rs.ptr]
    assert not any("no DKIM key" in n for n in zone.notes)


def test_host_records_go_into_the_deepest_domain_holding_the_host() -> None:
    rs = build_records(opts(domains=("org.example", "example.org", "sub.example.org")))
    hosts = {z.domain: [r for r in z.records if r.name == "mail.example.org."] for z in rs.zones}
    assert hosts["org.example"] == [] and hosts["sub.example.org"] == []
    assert len(hosts["example.org"]) == 3  # A, AAAA, HELO SPF
    assert "no DKIM key for org.example" in " ".join(rs.zones[0].notes)


def test_a_host_outside_every_domain_gets_its_own_fragment() -> None:
    rs = build_records(opts(hostname="mx1.provider.net"))
    assert [z.domain for z in rs.zones] == ["example.org", "mx1.provider.net"]
    host = rs.zones[1]
    assert host.mta_sts is None
    assert {r.type for r in host.records} == {"A", "AAAA", "TXT"}
    assert by(rs.zones[0].records, "example.org.", "MX") == ["10 mx1.provider.net."]


def test_the_host_as_mail_domain_has_one_spf_record() -> None:
    rs = build_records(opts(domains=("mail.example.org",)))
    spf = [r for r in rs.zones[0].records if r.type == "TXT" and r.name == "mail.example.org."]
    assert [r.value for r in spf] == ["v=spf1 mx a ip4:8.8.4.4 ip6:2a00:1450::25 -all"]


def test_no_addresses_means_no_address_records() -> None:
    rs = build_records(opts(addresses=()))
    assert {r.type for r in rs.expected()} == {"MX", "TXT"}
    assert rs.ptr == ()


def test_report_addresses_policy_mode_and_relayhost() -> None:
    rs = build_records(
        opts(
            dmarc_rua="reports@dmarc.example.net",
            tlsrpt_rua="https://tlsrpt.example.net/v1",
            dmarc_policy="reject",
            mta_sts_mode="enforce",
            relayhost="[smtp.relay.example]:587",
            ttl=300,
        )
    )
    zone = rs.zones[0]
    assert by(zone.records, "_dmarc.example.org.", "TXT") == [
        "v=DMARC1; p=reject; rua=mailto:reports@dmarc.example.net"
    ]
    assert by(zone.records, "_smtp._tls.example.org.", "TXT") == [
        "v=TLSRPTv1; rua=https://tlsrpt.example.net/v1"
    ]
    assert zone.mta_sts is not None and "mode: enforce" in zone.mta_sts.policy
    notes = " ".join(zone.notes)
    assert 'example.org._report._dmarc.dmarc.example.net. TXT "v=DMARC1"' in notes
    assert "relayhost = [smtp.relay.example]:587" in notes
    assert rs.ttl == 300


def test_bad_host_name_is_an_error_and_bad_domains_are_warnings() -> None:
    with pytest.raises(RecordsError, match="not a public host name"):
        build_records(opts(hostname="localhost.localdomain"))
    rs = build_records(opts(domains=("a" * 70 + ".example", "example.org")))
    assert [z.domain for z in rs.zones] == ["example.org"]
    assert any("bad domain name" in w for w in rs.warnings)


def test_a_key_for_an_unlisted_domain_is_a_warning() -> None:
    rs = build_records(opts(), [DkimPublicKey("elsewhere.example", "s", "v=DKIM1; p=")])
    assert any("elsewhere.example" in w for w in rs.warnings)
    assert not any("elsewhere" in r.name for r in rs.expected())


# -- from settings ---------------------------------------------------------------------


def test_options_from_settings() -> None:
    s = settings(
        BASE + "myorigin = $mydomain\ndns_records_addresses = 8.8.4.4\n"
        "dns_records_ttl = 600\ndns_records_dmarc_policy = none\n"
        "dns_records_dmarc_rua = bad;address\ndns_records_tlsrpt_rua = tls@example.org\n"
        "dns_records_mta_sts_mode = enforce\nrelayhost = [relay.example]\n"
    )
    o = options_from_settings(s)
    assert o.hostname == "mail.example.org"
    assert o.domains == ("example.org",)
    assert o.addresses == (PUB4,)
    assert (o.ttl, o.dmarc_policy, o.mta_sts_mode) == (600, "none", "enforce")
    assert o.dmarc_rua == "" and o.tlsrpt_rua == "tls@example.org"
    assert o.relayhost == "[relay.example]"
    assert any("dns_records_dmarc_rua = bad;address" in w for w in o.warnings)
    assert any("no smtpd TLS certificate" in w for w in o.warnings)
    rs = build_records(o)
    assert (
        "rua=mailto:tls@example.org" in by(rs.zones[0].records, "_smtp._tls.example.org.", "TXT")[0]
    )


def test_explicit_domains_and_ips_replace_the_configuration() -> None:
    s = settings(BASE + "myorigin = $mydomain\ninet_interfaces = 127.0.0.1\n")
    o = options_from_settings(s, domains=["Other.Example.", "other.example"], ips=["8.8.4.4"])
    assert o.domains == ("other.example",)
    assert o.addresses == (PUB4,)
    assert o.warnings == ()


def test_dmarc_rua_must_be_mailto() -> None:
    s = settings(BASE + "dns_records_dmarc_rua = https://x.example/r\n")
    o = options_from_settings(s)
    assert o.dmarc_rua == ""
    assert any("dns_records_dmarc_rua" in w for w in o.warnings)
