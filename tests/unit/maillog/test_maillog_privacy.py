"""maillog_privacy transforms: no address or IP survives; tokens are stable and keyed."""

from __future__ import annotations

import ipaddress
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ironpost.maillog.privacy import Pseudonymizer, Redactor, parse_ip

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))

_local = st.text(string.ascii_letters + string.digits + "._+-", min_size=1, max_size=20).filter(
    lambda s: s.strip(".") == s and ".." not in s
)
_label = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=10)
_domain = st.lists(_label, min_size=2, max_size=4).map(".".join)
addresses = st.builds(lambda lp, d: f"{lp}@{d}", _local, _domain)

ADDRESS_TEMPLATES = [
    "{q}: from=<{a}>, size=842, nrcpt=1 (queue active)",
    "{q}: to=<{a}>, orig_to=<{a}>, relay=maildir, delay=0.02, delays=0/0/0/0, dsn=2.0.0, "
    "status=sent (delivered to maildir)",
    "{q}: client=mx.example[192.0.2.1], sasl_method=PLAIN, sasl_username={a}",
    "NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 550 5.1.1 <{a}>: Recipient address "
    "rejected: User unknown; from=<{a}> to=<{a}> proto=ESMTP helo=<x>",
    "{q}: to=<x@y.test>, relay=mx[192.0.2.9]:25, delay=1, delays=0/0/0/1, dsn=5.1.1, "
    "status=bounced (host mx[192.0.2.9] said: 550 5.1.1 {a}... User unknown)",
]
IP_TEMPLATES = [
    "connect from client.example[{ip}]",
    "{q}: client=unknown[{ip}]",
    "disconnect from host.example[{ip}] ehlo=1 quit=1 commands=2",
    "warning: hostname x.example does not resolve to address {ip}",
    "warning: hostname x.example does not resolve to address {ip}: Name or service not known",
    "NOQUEUE: reject: RCPT from x[{ip}]: 554 5.7.1 Service unavailable; helo=<[{ip}]>",
]
ips = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))


def _ip_forms(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
    if isinstance(ip, ipaddress.IPv4Address):
        return [str(ip)]
    return [str(ip), ip.exploded]


@settings(max_examples=200)
@given(address=addresses, template=st.sampled_from(ADDRESS_TEMPLATES))
def test_no_address_survives_pseudonymisation(address: str, template: str) -> None:
    text = template.format(a=address, q="HOFIJW9X5W000CH4")
    out = Pseudonymizer(KEY)(text)
    assert address.lower() not in out.lower()
    local = address.split("@")[0]
    assert not re.search(rf"(?<![\w.+-]){re.escape(local)}@", out, re.IGNORECASE)
    assert "HOFIJW9X5W000CH4" in out or "NOQUEUE" in out  # structure kept


@settings(max_examples=200)
@given(address=addresses, template=st.sampled_from(ADDRESS_TEMPLATES))
def test_redaction_removes_every_local_part(address: str, template: str) -> None:
    text = template.format(a=address, q="HOFIJW9X5W000CH4")
    out = Redactor()(text)
    domain = address.partition("@")[2]
    assert address.lower() not in out.lower()
    assert f"*@{domain}" in out


@settings(max_examples=300)
@given(ip=ips, template=st.sampled_from(IP_TEMPLATES))
def test_no_ip_survives_pseudonymisation(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, template: str
) -> None:
    out = Pseudonymizer(KEY)(template.format(ip=ip, q="HOFIJW9X5W000CH4"))
    for form in _ip_forms(ip):
        assert form not in out
    assert "ip-" in out


@settings(max_examples=300)
@given(ip=ips, template=st.sampled_from(IP_TEMPLATES))
def test_redaction_keeps_only_the_network(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, template: str
) -> None:
    out = Redactor()(template.format(ip=ip, q="HOFIJW9X5W000CH4"))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        assert str(ip) not in out
        ip = ip.ipv4_mapped  # ::ffff:192.0.2.1 is redacted as 192.0.2.1
    if isinstance(ip, ipaddress.IPv4Address):
        assert str(ip) not in out
        assert str(ip).rsplit(".", 1)[0] + ".x" in out
    else:
        network = ipaddress.IPv6Network((int(ip) >> 80 << 80, 48))
        assert str(network) in out
        if int(ip) & ((1 << 80) - 1):  # something below the /48 to remove
            assert not re.search(rf"(?<![\w:]){re.escape(str(ip))}(?![\w:/])", out)


@given(address=addresses)
def test_tokens_are_stable_case_insensitive_and_keyed(address: str) -> None:
    p = Pseudonymizer(KEY)
    token = p.address(address)
    assert re.fullmatch(r"u-[0-9a-f]{12}@d-[0-9a-f]{8}", token)
    assert Pseudonymizer(KEY).address(address.upper()) == token
    assert Pseudonymizer(OTHER_KEY).address(address) != token
    # One domain, one domain token: tools still group by (pseudonymous) domain.
    domain = address.partition("@")[2]
    assert token.split("@")[1] == p.address(f"someone.else@{domain}").split("@")[1]


@given(ip=ips)
def test_ip_tokens_do_not_depend_on_spelling(ip: ipaddress.IPv4Address) -> None:
    p = Pseudonymizer(KEY)
    forms = _ip_forms(ip)
    assert len({p(f"x[{form}]") for form in forms}) == 1
    if isinstance(ip, ipaddress.IPv4Address):
        assert p(f"[::ffff:{ip}]") == p(f"[{ip}]")
    assert Pseudonymizer(OTHER_KEY)(f"[{ip}]") != p(f"[{ip}]")


def test_the_log_shape_survives_for_pflogsumm() -> None:
    p = Pseudonymizer(KEY)
    out = p("connect from mail.client.example[192.0.2.7]")
    assert re.fullmatch(r"connect from h-[0-9a-f]{8}\[ip-[0-9a-f]{12}\]", out)
    out = p("Q1: from=<>, size=1, nrcpt=1 (queue active)")
    assert out == "Q1: from=<>, size=1, nrcpt=1 (queue active)"  # the null sender is no one
    out = p("disconnect from unknown[2001:db8::1] ehlo=1 commands=1")
    assert out.startswith("disconnect from unknown[ip-")  # "unknown" is no one either
    out = p("to=<postmaster>, relay=maildir")
    assert re.fullmatch(r"to=<u-[0-9a-f]{12}>, relay=maildir", out)


@pytest.mark.parametrize(
    "text",
    [
        "delay=0.02, delays=0/0/0.01/0, dsn=2.0.0, status=sent (250 2.0.0 Ok)",
        "daemon started -- version 1.2.3, configuration ok at 13:49:08",
        "disconnect from unknown[ip-0123456789ab] ehlo=1 mail=1 rcpt=0/2 commands=3/5",
        "warning: pid [12345] is not an address; neither is 999.1.1.1",
    ],
)
def test_text_that_only_looks_personal_is_left_alone(text: str) -> None:
    assert Pseudonymizer(KEY)(text) == text
    assert Redactor()(text) == text


def test_redaction_forms() -> None:
    r = Redactor()
    assert r("from=<Alice@Example.COM>") == "from=<*@example.com>"
    assert r("connect from 192-0-2-10.dsl.example.net[192.0.2.10]") == (
        "connect from *.dsl.example.net[192.0.2.x]"
    )
    assert r("client=unknown[2001:db8:aa:bb::1]") == "client=unknown[2001:db8:aa::/48]"


def test_parse_ip_accepts_literal_prefixes() -> None:
    assert parse_ip("IPv6:2001:db8::1") == ipaddress.ip_address("2001:db8::1")
    assert parse_ip("::ffff:192.0.2.1") == ipaddress.ip_address("192.0.2.1")
    assert parse_ip("13:49:08") is None


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError):
        Pseudonymizer(b"short")


_LOG_ALPHABET = "ab.-_:@<>[]=, 019fF" + "from client=sasl_username=helo=<IPv6:"


@settings(max_examples=400)
@given(
    st.lists(
        st.sampled_from(
            [
                "from ",
                "client=",
                "sasl_username=",
                "helo=<",
                "=<",
                "IPv6:",
                "192.0.2.1",
                "2001:db8::1",
                "::1",
                "1:2:f",
                "a@b.example",
                "[",
                "]",
                "<",
                ">",
            ]
        )
        | st.text(_LOG_ALPHABET, max_size=6),
        max_size=12,
    ).map("".join)
)
def test_scanning_only_for_the_kinds_a_line_can_hold_changes_nothing(text: str) -> None:
    """The per-line pattern (only the kinds whose quick test passes) finds exactly what
    the one pattern of every kind finds: same spans, same kinds."""
    from ironpost.maillog.privacy import _PATTERN, _pattern_for

    def found(pattern: re.Pattern[str]) -> list[tuple[str | None, int, int]]:
        return [(m.lastgroup, m.start(), m.end()) for m in pattern.finditer(text)]

    assert found(_pattern_for(text)) == found(_PATTERN)
