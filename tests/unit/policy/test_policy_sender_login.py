"""smtpd_sender_login_maps and the *_sender_login_mismatch restrictions (Postfix semantics)."""

from __future__ import annotations

import pytest

from ironpost.policy import Stage, Verdict

LOGINS = {
    "owned@example.com": "alice, Carol",
    "shared": "bob",  # a bare local part: only for local domains ($mydestination)
    "@vmail.test": "dave",
}


def _harness(harness, restriction: str, login: str | None):
    h = harness(
        {Stage.SENDER: [restriction]},
        {"dict:logins": LOGINS},
        sender_login_maps=["dict:logins"],
    )
    h.ctx.sasl_username = login
    return h


@pytest.mark.parametrize(
    ("login", "sender", "ok"),
    [
        ("alice", "owned@example.com", True),
        ("carol", "owned@example.com", True),  # logins compare case-insensitively
        ("bob", "owned@example.com", False),
        ("bob", "shared@example.com", True),  # user part, local domain
        ("bob", "shared@vmail.test", False),  # ... not for a virtual domain: @domain wins
        ("dave", "anyone@vmail.test", True),  # @domain entry
        ("eve", "nobody@example.org", False),  # no owner at all: an authenticated mismatch
        ("eve@example.org", "Eve@EXAMPLE.org", True),  # a login that is an address owns it
        ("eve", "", True),  # the null sender is never a mismatch
    ],
)
def test_authenticated_mismatch(harness, login: str, sender: str, ok: bool) -> None:
    h = _harness(harness, "reject_authenticated_sender_login_mismatch", login)
    decision = h.rcpt("user@example.com", sender=sender)
    if ok:
        assert decision.verdict is Verdict.PERMIT
    else:
        assert decision.verdict is Verdict.REJECT
        assert str(decision.reply) == (
            f"553 5.7.1 <{sender}>: Sender address rejected: not owned by user {login}"
        )


def test_unauthenticated_use_of_an_owned_address(harness) -> None:
    h = _harness(harness, "reject_unauthenticated_sender_login_mismatch", None)
    refused = h.rcpt("user@example.com", sender="owned@example.com")
    assert str(refused.reply) == (
        "553 5.7.1 <owned@example.com>: Sender address rejected: not logged in"
    )
    assert h.rcpt("user@example.com", sender="free@example.org").verdict is Verdict.PERMIT


def test_known_mismatch_only_judges_addresses_with_an_owner(harness) -> None:
    h = _harness(harness, "reject_known_sender_login_mismatch", "eve")
    assert h.rcpt("user@example.com", sender="nobody@example.org").verdict is Verdict.PERMIT
    assert h.rcpt("user@example.com", sender="owned@example.com").verdict is Verdict.REJECT


def test_sender_login_mismatch_is_both(harness) -> None:
    h = _harness(harness, "reject_sender_login_mismatch", None)
    assert h.rcpt("user@example.com", sender="owned@example.com").verdict is Verdict.REJECT
    h.ctx.sasl_username = "alice"
    h.ctx.list_cache.clear()
    assert h.rcpt("user@example.com", sender="owned@example.com").verdict is Verdict.PERMIT
    h.ctx.set_sender(None)
    assert h.rcpt("user@example.com", sender="nobody@example.org").verdict is Verdict.REJECT
