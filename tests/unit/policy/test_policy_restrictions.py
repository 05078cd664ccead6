"""Each restriction family: HELO syntax, FQDN checks, unlisted users, generic ones, codes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ironpost.policy import Stage, Verdict
from ironpost.policy.helo import valid_helo


@pytest.mark.parametrize(
    ("helo", "valid"),
    [
        ("mail.example.com", True),
        ("mail.example.com.", True),
        ("host_name.example", True),  # Postfix tolerates underscores
        ("xn--bcher-kva.example", True),
        ("bücher.example", True),
        ("[192.0.2.1]", True),
        ("[IPv6:2001:db8::1]", True),
        ("192.0.2.1", True),  # a bare IP address is accepted as such
        ("localhost", True),
        ("-bad.example", False),
        ("bad-.example", False),
        ("a..b", False),
        ("1.2.3", False),  # all-numeric, not an address
        ("[192.0.2.300]", False),
        ("[garbage]", False),
        ("bad name", False),
        ("semi;colon.example", False),
        ("a" * 64 + ".example", False),
        ("", False),
    ],
)
def test_valid_helo(helo: str, valid: bool) -> None:
    assert valid_helo(helo) is valid


def test_reject_invalid_helo_hostname(harness) -> None:
    h = harness({Stage.HELO: ["reject_invalid_helo_hostname"]})
    h.ctx.set_helo("bad name!")
    assert (
        str(h.check(Stage.HELO).reply)
        == "501 5.5.2 <bad name!>: Helo command rejected: Invalid name"
    )
    h.ctx.set_helo("ok.example")
    assert h.check(Stage.HELO).verdict is Verdict.PERMIT
    h.ctx.set_helo(None)  # no HELO at all: smtpd_helo_required's business
    assert h.check(Stage.HELO).verdict is Verdict.PERMIT


@pytest.mark.parametrize("name", ["reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname"])
def test_reject_non_fqdn_helo(harness, name: str) -> None:
    h = harness({Stage.HELO: [name]})
    for helo, refused in [
        ("box", True),
        ("box.", True),
        ("box.example", False),
        ("[192.0.2.1]", False),
    ]:
        h.ctx.set_helo(helo)
        d = h.check(Stage.HELO)
        assert d.refuses is refused, helo
        if refused:
            assert str(d.reply) == (
                f"504 5.5.2 <{helo}>: Helo command rejected: need fully-qualified hostname"
            )


def test_old_helo_name_alias(harness) -> None:
    h = harness({Stage.HELO: ["reject_invalid_hostname"]})
    h.ctx.set_helo("-x")
    assert h.check(Stage.HELO).verdict is Verdict.REJECT


@pytest.mark.parametrize(
    ("sender", "refused"),
    [
        ("user", True),
        ("user@box", True),
        ("user@box.", True),
        ("user@box.example", False),
        ("user@[192.0.2.1]", False),
        ("", False),
    ],
)
def test_reject_non_fqdn_sender(harness, sender: str, refused: bool) -> None:
    h = harness({Stage.SENDER: ["reject_non_fqdn_sender"]})
    h.ctx.set_sender(sender)
    d = h.check(Stage.SENDER)
    assert d.refuses is refused
    if refused:
        assert str(d.reply) == (
            f"504 5.5.2 <{sender}>: Sender address rejected: need fully-qualified address"
        )


def test_reject_non_fqdn_recipient(harness) -> None:
    h = harness({Stage.RECIPIENT: ["reject_non_fqdn_recipient"]}, reject_unlisted_recipient=False)
    d = h.rcpt("postmaster@localhost")
    assert str(d.reply) == (
        "504 5.5.2 <postmaster@localhost>: Recipient address rejected: need fully-qualified address"
    )
    assert h.rcpt("postmaster@example.com").verdict is Verdict.PERMIT


@pytest.mark.parametrize(
    ("address", "text", "param"),
    [
        (
            "nobody@example.com",
            "User unknown in local recipient table",
            "unknown_local_recipient_reject_code",
        ),
        (
            "nobody@vmail.test",
            "User unknown in virtual mailbox table",
            "unknown_virtual_mailbox_reject_code",
        ),
        (
            "nobody@alias.test",
            "User unknown in virtual alias table",
            "unknown_virtual_alias_reject_code",
        ),
    ],
)
def test_reject_unlisted_recipient_codes(harness, address: str, text: str, param: str) -> None:
    maps = {
        "local": {"root": "x"},
        "mailboxes": {"a@vmail.test": "a/"},
        "virtual": {"b@alias.test": "a@vmail.test"},
    }
    h = harness({Stage.RECIPIENT: ["reject_unlisted_recipient"]}, maps=maps)
    assert (
        str(h.rcpt(address).reply) == f"550 5.1.1 <{address}>: Recipient address rejected: {text}"
    )
    h.ctx.params = replace(h.ctx.params, **{param: 450})
    assert (
        str(h.rcpt(address).reply) == f"450 4.1.1 <{address}>: Recipient address rejected: {text}"
    )
    for ok in ("root@example.com", "a+x@vmail.test", "b@alias.test", "x@relay.test"):
        assert h.rcpt(ok).verdict is Verdict.PERMIT, ok


def test_generic_reject_and_defer_codes(harness) -> None:
    h = harness({Stage.SENDER: ["reject"]})
    h.ctx.set_sender("s@sender.test")
    assert (
        str(h.check(Stage.SENDER).reply)
        == "554 5.7.1 <s@sender.test>: Sender address rejected: Access denied"
    )
    h.ctx.params = replace(h.ctx.params, reject_code=550)
    h.ctx.set_sender("s@sender.test")
    assert h.check(Stage.SENDER).reply.code == 550
    h = harness({Stage.DATA: ["defer"]})
    d = h.check(Stage.DATA)
    assert d.verdict is Verdict.DEFER
    assert str(d.reply) == "450 4.7.1 <DATA>: Data command rejected: Try again later"


def test_reject_unauth_pipelining(harness) -> None:
    h = harness({Stage.CLIENT: ["reject_unauth_pipelining"]})
    assert h.check(Stage.CLIENT).verdict is Verdict.PERMIT
    h.ctx.pipelined = True
    h.ctx.list_cache.clear()
    assert str(h.check(Stage.CLIENT).reply) == (
        "503 5.5.0 <unknown[198.51.100.7]>: Client host rejected: "
        "Improper use of SMTP command pipelining"
    )


def test_permit_sasl_authenticated_and_plaintext(harness) -> None:
    h = harness({Stage.CLIENT: ["permit_sasl_authenticated", "reject_plaintext_session"]})
    assert str(h.check(Stage.CLIENT).reply).startswith(
        "450 4.7.1 <unknown[198.51.100.7]>: Client host rejected: Session encryption"
    )
    h.ctx.sasl_username = "alice"
    h.ctx.list_cache.clear()
    assert h.check(Stage.CLIENT).verdict is Verdict.PERMIT
    h = harness({Stage.CLIENT: ["reject_plaintext_session"]})
    h.ctx.tls = True
    assert h.check(Stage.CLIENT).verdict is Verdict.PERMIT


def test_reject_multi_recipient_bounce(harness) -> None:
    h = harness(
        {Stage.RECIPIENT: ["reject_multi_recipient_bounce"]}, reject_unlisted_recipient=False
    )
    assert h.rcpt("a@example.com", sender="").verdict is Verdict.PERMIT
    h.ctx.recipient_count = 1
    d = h.rcpt("b@example.com", sender=None)
    assert (
        str(d.reply)
        == "550 5.5.3 <b@example.com>: Recipient address rejected: Multi-recipient bounce"
    )
    h.ctx.set_sender("s@sender.test")
    h.ctx.recipient_count = 1
    assert h.rcpt("b@example.com", sender=None).verdict is Verdict.PERMIT


def test_permit_mynetworks(harness) -> None:
    h = harness({Stage.CLIENT: ["permit_mynetworks", "reject"]}, client="127.0.0.9")
    assert h.check(Stage.CLIENT).verdict is Verdict.PERMIT
    assert h.ctx.is_mynetworks
    h = harness({Stage.CLIENT: ["permit_mynetworks", "reject"]}, client="192.0.2.200")
    assert h.check(Stage.CLIENT).verdict is Verdict.REJECT
