"""Never an open relay: the classic relay-test patterns, at the restriction level.

The server passes the recipient as (local, domain) after stripping any source route, with
the local part dequoted; the table gives those two parts (and the text the client sent).
"""

from __future__ import annotations

import pytest

from ironpost.policy import Stage, Verdict

# (what the client wrote, local part, domain) — all must be refused for a stranger.
RELAY_ATTEMPTS = [
    ("user@remote.test", "user", "remote.test"),
    ("user%remote.test@example.com", "user%remote.test", "example.com"),
    ('"user@remote.test"@example.com', "user@remote.test", "example.com"),
    ("user@remote.test@example.com", "user@remote.test", "example.com"),
    ("@example.com:user@remote.test", "user", "remote.test"),  # source route stripped
    ("remote.test!user@example.com", "remote.test!user", "example.com"),
    ("example.com!remote.test!user@example.com", "example.com!remote.test!user", "example.com"),
    ("user%remote.test@[192.0.2.1]", "user%remote.test", "[192.0.2.1]"),
    ('"user%remote.test"@example.com', "user%remote.test", "example.com"),
    ("user@remote.test.", "user", "remote.test."),
    ("USER@REMOTE.TEST", "USER", "REMOTE.TEST"),
    ("user%REMOTE.test@EXAMPLE.COM", "user%REMOTE.test", "EXAMPLE.COM"),
    ("user%remote.test%example.com@example.com", "user%remote.test%example.com", "example.com"),
    ("user@[198.51.100.99]", "user", "[198.51.100.99]"),
    ("remote.test!user@[192.0.2.1]", "remote.test!user", "[192.0.2.1]"),
    ("user%remote.test@relay.test", "user%remote.test", "relay.test"),  # routed via backup MX
    ('"user@remote.test"@[192.0.2.1]', "user@remote.test", "[192.0.2.1]"),
    ("user%remote.test@vmail.test", "user%remote.test", "vmail.test"),  # routed via virtual
    ("user@example.com@remote.test", "user@example.com", "remote.test"),
]


def _rcpt(h, written: str, local: str, domain: str):
    import asyncio

    h.ctx.set_sender("s@sender.test")
    h.ctx.set_recipient(written, local, domain)
    return asyncio.run(h.engine.check_recipient(h.ctx))


@pytest.mark.parametrize(("written", "local", "domain"), RELAY_ATTEMPTS)
def test_relay_attempts_are_refused(harness, written: str, local: str, domain: str) -> None:
    d = _rcpt(harness({}), written, local, domain)
    assert d.verdict is Verdict.REJECT
    assert str(d.reply) == f"554 5.7.1 <{written}>: Relay access denied"
    assert d.restriction == "reject_unauth_destination"


@pytest.mark.parametrize(("written", "local", "domain"), RELAY_ATTEMPTS)
def test_defer_unauth_destination(harness, written: str, local: str, domain: str) -> None:
    h = harness({Stage.RELAY: ["permit_mynetworks", "defer_unauth_destination"]})
    d = _rcpt(h, written, local, domain)
    assert d.verdict is Verdict.DEFER
    assert str(d.reply) == f"454 4.7.1 <{written}>: Relay access denied"


@pytest.mark.parametrize(
    "address",
    [
        "user@example.com",
        "user@EXAMPLE.com.",
        "user@vmail.test",
        "user@alias.test",
        "user@relay.test",
        "user@deep.relay.test",
        "user@[192.0.2.1]",
        "user%mail.example.com@example.com",  # percent hack to ourselves: still local
    ],
)
def test_our_destinations_pass_the_relay_check(harness, address: str) -> None:
    h = harness({}, reject_unlisted_recipient=False)
    assert h.rcpt(address).verdict is Verdict.PERMIT


def test_trusted_clients_may_relay(harness) -> None:
    assert harness({}, client="127.0.0.1").rcpt("x@remote.test").verdict is Verdict.PERMIT
    assert harness({}, client="2001:db8::5").rcpt("x@remote.test").verdict is Verdict.PERMIT
    h = harness({})
    h.ctx.sasl_username = "alice"
    assert h.rcpt("x@remote.test").verdict is Verdict.PERMIT


def test_untrusted_routing_can_be_allowed(harness) -> None:
    from dataclasses import replace

    h = harness({})
    h.ctx.params = replace(h.ctx.params, allow_untrusted_routing=True)
    assert h.rcpt("user%remote.test@relay.test").verdict is Verdict.PERMIT


def test_relay_reject_code_follows_parameter(harness) -> None:
    from dataclasses import replace

    h = harness({})
    h.ctx.params = replace(h.ctx.params, relay_domains_reject_code=550)
    assert str(h.rcpt("x@remote.test").reply) == "550 5.7.1 <x@remote.test>: Relay access denied"
