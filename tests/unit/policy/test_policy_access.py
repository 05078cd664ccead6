"""access(5) maps: lookup key order, first-hit-wins, and every action."""

from __future__ import annotations

import pytest

from ironpost.policy import Stage, Verdict
from ironpost.policy.access import address_keys, client_keys


def test_address_key_order() -> None:
    assert address_keys("User+Ext", "a.b.test", delimiter="+", parent_style=True) == [
        "user+ext@a.b.test",
        "user@a.b.test",
        "a.b.test",
        "b.test",
        "test",
        "user+ext@",
        "user@",
    ]
    assert address_keys("u", "a.b.test", delimiter="", parent_style=False) == [
        "u@a.b.test",
        "a.b.test",
        ".b.test",
        ".test",
        "u@",
    ]


def test_client_key_order() -> None:
    assert client_keys("Mail.Example.NET", "192.0.2.7", parent_style=True) == [
        "mail.example.net",
        "example.net",
        "net",
        "192.0.2.7",
        "192.0.2",
        "192.0",
        "192",
    ]
    assert client_keys("unknown", "2001:db8:0:1::7", parent_style=True) == [
        "2001:db8:0:1::7",
        "2001:db8:0:1",
        "2001:db8:0",
        "2001:db8",
        "2001",
    ]


def _client(harness, value: str, **kw):
    h = harness(
        {Stage.CLIENT: ["check_client_access", "dict:c"]},
        {"dict:c": {"192.0.2": value}},
        client="192.0.2.7",
        client_name="mail.example.net",
        **kw,
    )
    return h, h.check(Stage.CLIENT)


@pytest.mark.parametrize(
    ("value", "verdict", "reply"),
    [
        ("OK", Verdict.PERMIT, None),
        ("ok", Verdict.PERMIT, None),
        ("1", Verdict.PERMIT, None),  # all-numeric is OK
        ("DUNNO", Verdict.PERMIT, None),  # list falls through → permit
        (
            "REJECT",
            Verdict.REJECT,
            "554 5.7.1 <mail.example.net[192.0.2.7]>: Client host rejected: Access denied",
        ),
        (
            "REJECT go away",
            Verdict.REJECT,
            "554 5.7.1 <mail.example.net[192.0.2.7]>: Client host rejected: go away",
        ),
        (
            "DEFER busy",
            Verdict.DEFER,
            "450 4.7.1 <mail.example.net[192.0.2.7]>: Client host rejected: busy",
        ),
        (
            "550 no thanks",
            Verdict.REJECT,
            "550 5.7.1 <mail.example.net[192.0.2.7]>: Client host rejected: no thanks",
        ),
        (
            "421 4.7.0 later",
            Verdict.DEFER,
            "421 4.7.0 <mail.example.net[192.0.2.7]>: Client host rejected: later",
        ),
        (
            "reject",
            Verdict.REJECT,
            "554 5.7.1 <mail.example.net[192.0.2.7]>: Client host rejected: Access denied",
        ),
        (
            "permit_mynetworks, reject",
            Verdict.REJECT,
            "554 5.7.1 <mail.example.net[192.0.2.7]>: Client host rejected: Access denied",
        ),
        ("BOGUS_ACTION", Verdict.DEFER, "451 4.3.5 Server configuration error"),
        ("check_client_access dict:c", Verdict.DEFER, "451 4.3.5 Server configuration error"),
    ],
)
def test_actions(harness, value: str, verdict: Verdict, reply: str | None) -> None:
    h, d = _client(harness, value)
    assert d.verdict is verdict
    assert (str(d.reply) if d.reply else None) == reply
    if reply and "configuration" in reply:
        assert any("dict:c" in w for w in h.warnings)  # the log names the table; the reply not


def test_access_codes_follow_parameters(harness) -> None:
    from dataclasses import replace

    h = harness(
        {Stage.CLIENT: ["check_client_access", "dict:c"]},
        {"dict:c": {"192.0.2.7": "REJECT"}},
        client="192.0.2.7",
    )
    h.ctx.params = replace(h.ctx.params, access_map_reject_code=550)
    assert str(h.check(Stage.CLIENT).reply).startswith("550 5.7.1 ")


def test_dunno_stops_the_lookup(harness) -> None:
    h = harness(
        {Stage.CLIENT: ["check_client_access", "dict:c", "reject"]},
        {"dict:c": {"mail.example.net": "DUNNO", "192.0.2.7": "OK"}},
        client="192.0.2.7",
        client_name="mail.example.net",
    )
    assert h.check(Stage.CLIENT).verdict is Verdict.REJECT  # DUNNO: the IP key is never tried


def test_hold_discard_warn(harness) -> None:
    h, d = _client(harness, "HOLD")
    assert d.verdict is Verdict.PERMIT and h.ctx.hold and not h.ctx.discard
    h, d = _client(harness, "DISCARD")
    assert d.verdict is Verdict.PERMIT and h.ctx.discard
    h, d = _client(harness, "WARN odd client")
    assert d.verdict is Verdict.PERMIT and "odd client" in h.warnings[0]
    h.ctx.set_sender("s@x.test")
    assert not h.ctx.hold and not h.ctx.discard


def test_control_characters_never_reach_the_wire(harness) -> None:
    _, d = _client(harness, "REJECT bad\r\n250 ok")
    assert "\r" not in str(d.reply) and "\n" not in str(d.reply)


def test_sender_access_uses_null_key_and_domains(harness) -> None:
    h = harness(
        {Stage.SENDER: ["check_sender_access", "dict:s"]},
        {"dict:s": {"<>": "REJECT no bounces", "spam.test": "REJECT", "abuse@": "OK"}},
    )
    cases = [
        ("", Verdict.REJECT),
        ("x@sub.spam.test", Verdict.REJECT),
        ("abuse@sub.spam.test", Verdict.REJECT),  # domain keys come before user@
        ("abuse@fine.test", Verdict.PERMIT),
        ("x@fine.test", Verdict.PERMIT),
    ]
    for sender, verdict in cases:
        h.ctx.set_sender(sender)
        assert h.check(Stage.SENDER).verdict is verdict, sender
    h.ctx.set_sender("")
    assert str(h.check(Stage.SENDER).reply) == "554 5.7.1 <>: Sender address rejected: no bounces"


def test_recipient_access_sees_the_final_address(harness) -> None:
    h = harness(
        {Stage.RECIPIENT: ["check_recipient_access", "dict:r"]},
        {"dict:r": {"secret@example.com": "REJECT", "user@": "550 5.1.1 gone"}},
        reject_unlisted_recipient=False,
    )
    assert h.rcpt("secret+x@example.com").verdict is Verdict.REJECT
    assert h.rcpt("secret%example.com@example.com").verdict is Verdict.REJECT
    assert str(h.rcpt("user@example.com").reply) == (
        "550 5.1.1 <user@example.com>: Recipient address rejected: gone"
    )


def test_helo_access(harness) -> None:
    h = harness(
        {Stage.HELO: ["check_helo_access", "dict:h"]},
        {"dict:h": {"example.com": "REJECT You are not me"}},
    )
    h.ctx.set_helo("Mail.Example.COM.")
    assert str(h.check(Stage.HELO).reply) == (
        "554 5.7.1 <Mail.Example.COM.>: Helo command rejected: You are not me"
    )
