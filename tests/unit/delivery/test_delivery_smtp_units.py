"""Pure parts of the SMTP delivery agent: TLS policy, name matching, options, reply texts."""

from __future__ import annotations

import pytest

from ironpost.config.settings import build_settings
from ironpost.config.syntax import Entry
from ironpost.delivery.smtp import SmtpOptions, format_reply
from ironpost.delivery.tls_policy import (
    TlsLevel,
    TlsPolicies,
    TlsPolicy,
    certificate_names,
    name_matches,
    parse_policy,
)
from ironpost.protocol import Reply
from ironpost.protocol.client import Command


class Table:
    def __init__(self, data: dict[str, str]) -> None:
        self._data = data

    @property
    def spec(self) -> str:
        return "inline:test"

    def lookup(self, key: str) -> str | None:
        return self._data.get(key)


def test_levels_and_fail_closed_for_unsupported() -> None:
    assert parse_policy("may") == TlsPolicy(TlsLevel.MAY)
    assert parse_policy("") == TlsPolicy(TlsLevel.NONE)
    assert parse_policy("dane") == TlsPolicy(TlsLevel.MAY)  # no DNSSEC: Postfix degrades
    enc = parse_policy("encrypt")
    assert enc.mandatory and not enc.verify
    assert parse_policy("verify").verify
    for word in ("dane-only", "fingerprint", "bogus"):
        p = parse_policy(word)
        assert p.unsupported == word and p.mandatory


def test_policy_map_lookup_order() -> None:
    table = Table(
        {
            "[relay.example]:587": "encrypt",
            "example.com": "secure match=.example.com",
            ".example.net": "verify",
        }
    )
    pol = TlsPolicies("may", [table])
    assert pol.for_nexthop("[relay.example]:587", "relay.example").level is TlsLevel.ENCRYPT
    assert pol.for_nexthop("relay.example", "relay.example").level is TlsLevel.MAY
    sec = pol.for_nexthop("example.com", "example.com")
    assert sec.level is TlsLevel.SECURE and sec.match == (".example.com",)
    assert pol.for_nexthop("a.b.example.net", "a.b.example.net").level is TlsLevel.VERIFY
    assert pol.for_nexthop("example.net", "example.net").level is TlsLevel.MAY
    assert TlsPolicies("none").for_nexthop("x", "x").level is TlsLevel.NONE


def test_policy_names() -> None:
    assert TlsPolicy(TlsLevel.VERIFY).names("mx.example.com", "example.com") == ("mx.example.com",)
    assert TlsPolicy(TlsLevel.SECURE).names("mx.example.com", "example.com") == (
        "example.com",
        ".example.com",
    )
    custom = parse_policy("secure match=hostname:Other.Example")
    assert custom.names("mx.example.com", "example.com") == ("mx.example.com", "other.example")


@pytest.mark.parametrize(
    ("pattern", "name", "ok"),
    [
        ("mx.example.com", "mx.example.com", True),
        ("mx.example.com", "MX.Example.com.", True),
        ("mx.example.com", "example.com", False),
        ("mx.example.com", "*.example.com", True),
        ("a.mx.example.com", "*.example.com", False),
        ("example.com", "*.example.com", False),
        (".example.com", "mx.example.com", True),
        (".example.com", "example.com", False),
        (".example.com", "*.example.com", True),
        (".example.com", "evilexample.com", False),
    ],
)
def test_name_matches(pattern: str, name: str, ok: bool) -> None:
    assert name_matches(pattern, name) is ok


def test_certificate_names() -> None:
    cert: dict[str, object] = {
        "subject": ((("commonName", "cn.example"),),),
        "subjectAltName": (("DNS", "a.example"), ("IP Address", "127.0.0.1")),
    }
    assert certificate_names(cert) == ["a.example"]
    assert certificate_names({"subject": cert["subject"]}) == ["cn.example"]
    assert certificate_names(None) == []


def test_format_reply() -> None:
    assert format_reply(Reply(550, "5.1.1", ("<x@y>: no such", "user"))) == (
        "550 5.1.1 <x@y>: no such user"
    )
    assert format_reply(Reply(421, None, ("",))) == "421"


def test_options_from_settings() -> None:
    entries = [
        Entry(name, value, "main.cf", n)
        for n, (name, value) in enumerate(
            {
                "myhostname": "mail.example.org",
                "smtp_connect_timeout": "7s",
                "smtp_data_done_timeout": "2m",
                "smtp_tls_security_level": "encrypt",
                "inet_protocols": "ipv4",
                "smtp_mx_session_limit": "3",
            }.items(),
            1,
        )
    ]
    settings, diags = build_settings(entries, base=None)
    assert not [d for d in diags if d.is_error]
    o = SmtpOptions.from_settings(settings)
    assert o.helo_name == "mail.example.org"
    assert o.connect_timeout == 7.0 and o.data_done_timeout == 120.0
    assert o.tls_level == "encrypt" and o.inet_protocols == "ipv4"
    assert o.mx_session_limit == 3 and o.skip_5xx_greeting
    assert "mail.example.org" in o.my_names
    assert o.timeout(Command.DOT) == 120.0 and o.timeout(Command.RCPT) == 300.0
    assert SmtpOptions.from_settings(settings, lmtp=True).lmtp
