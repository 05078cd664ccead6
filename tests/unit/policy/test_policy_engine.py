"""Engine semantics: list order, PERMIT scope, delay_reject, caching, warn_if_reject, config."""

from __future__ import annotations

import asyncio

import pytest

from ironpost.policy import PolicyConfigError, Stage, Verdict, parse_restrictions


def test_permit_ends_only_its_own_list(harness) -> None:
    h = harness({Stage.CLIENT: ["permit"], Stage.RECIPIENT: ["reject"]})
    d = h.rcpt("user@example.com")
    assert d.verdict is Verdict.REJECT
    assert str(d.reply) == "554 5.7.1 <user@example.com>: Recipient address rejected: Access denied"


def test_first_decision_wins_within_a_list(harness) -> None:
    h = harness({Stage.RECIPIENT: ["dunno", "permit", "reject"]})
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT


def test_delayed_client_reject_is_reported_at_rcpt_with_client_wording(harness) -> None:
    h = harness({Stage.CLIENT: ["reject"]})
    assert asyncio.run(h.engine.check_command(Stage.CLIENT, h.ctx)).verdict is Verdict.PERMIT
    d = h.rcpt("user@example.com")
    assert str(d.reply) == "554 5.7.1 <unknown[198.51.100.7]>: Client host rejected: Access denied"


def test_no_delay_reject_runs_lists_at_their_command(harness) -> None:
    h = harness({Stage.CLIENT: ["reject"], Stage.HELO: ["reject"]}, delay_reject=False)
    assert asyncio.run(h.engine.check_command(Stage.CLIENT, h.ctx)).verdict is Verdict.REJECT
    # ... and RCPT runs only the relay and recipient lists.
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT


def test_lists_run_client_helo_sender_relay_recipient(harness) -> None:
    h = harness(
        {
            Stage.HELO: ["reject"],
            Stage.SENDER: ["reject"],
            Stage.RECIPIENT: ["reject"],
        }
    )
    h.ctx.set_helo("client.example.net")
    assert "Helo command rejected" in str(h.rcpt("user@example.com").reply)


def test_relay_list_before_recipient_list(harness) -> None:
    h = harness({Stage.RECIPIENT: ["reject"]})
    assert "Relay access denied" in str(h.rcpt("x@remote.test").reply)
    h = harness({Stage.RECIPIENT: ["reject"]}, relay_before_recipient=False)
    assert "Recipient address rejected" in str(h.rcpt("x@remote.test").reply)


def test_empty_lists_permit(harness) -> None:
    h = harness({Stage.RELAY: ["reject_unauth_destination"]})
    assert h.check(Stage.CLIENT).verdict is Verdict.PERMIT
    assert h.check(Stage.DATA).verdict is Verdict.PERMIT


def test_warn_if_reject_logs_instead_of_rejecting(harness) -> None:
    h = harness({Stage.RECIPIENT: ["warn_if_reject", "reject", "permit"]})
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT
    assert len(h.warnings) == 1
    assert h.warnings[0].startswith("reject_warning: unknown[198.51.100.7]: 554 5.7.1")
    # Only the next restriction is softened.
    h = harness({Stage.RECIPIENT: ["warn_if_reject", "dunno", "reject"]})
    assert h.rcpt("user@example.com").verdict is Verdict.REJECT


def test_client_list_result_is_cached_until_mail(harness) -> None:
    h = harness({Stage.CLIENT: ["check_client_access", "dict:clients"]}, {"dict:clients": {}})
    table = h.tables["dict:clients"]
    h.rcpt("a@example.com")
    n = len(table.lookups)
    assert n > 0
    h.rcpt("b@example.com")
    assert len(table.lookups) == n  # second RCPT: cached
    h.ctx.set_sender("other@sender.test")
    h.rcpt("c@example.com")
    assert len(table.lookups) == 2 * n  # MAIL invalidates
    h.ctx.set_helo("x.example.net")
    h.rcpt("d@example.com", sender=None)
    assert len(table.lookups) == 3 * n  # so does HELO


def test_recipient_dependent_client_list_is_not_cached(harness) -> None:
    h = harness(
        {Stage.CLIENT: ["check_recipient_access", "dict:rcpt"]},
        {"dict:rcpt": {"b@example.com": "REJECT"}},
    )
    assert h.rcpt("a@example.com").verdict is Verdict.PERMIT
    d = h.rcpt("b@example.com")
    assert d.verdict is Verdict.REJECT
    assert str(d.reply) == "554 5.7.1 <b@example.com>: Recipient address rejected: Access denied"


def test_unlisted_recipient_is_rejected_even_when_not_listed(harness) -> None:
    h = harness({}, client="127.0.0.1", maps={"local": {"root": "x"}})
    d = h.rcpt("nobody@example.com")  # permit_mynetworks does not save an unknown user
    assert str(d.reply) == (
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: "
        "User unknown in local recipient table"
    )
    assert h.rcpt("root@example.com").verdict is Verdict.PERMIT
    h = harness(
        {}, client="127.0.0.1", maps={"local": {"root": "x"}}, reject_unlisted_recipient=False
    )
    assert h.rcpt("nobody@example.com").verdict is Verdict.PERMIT


def test_unlisted_sender_when_enabled(harness) -> None:
    h = harness({}, maps={"local": {"root": "x"}}, reject_unlisted_sender=True)
    h.ctx.set_sender("nobody@example.com")
    d = h.check(Stage.SENDER)
    assert str(d.reply) == (
        "550 5.1.1 <nobody@example.com>: Sender address rejected: "
        "User unknown in local recipient table"
    )
    h.ctx.set_sender("")
    assert h.check(Stage.SENDER).verdict is Verdict.PERMIT


@pytest.mark.parametrize(
    ("lists", "message"),
    [
        ({Stage.RELAY: ["reject_unauth_destination", "no_such_thing"]}, "unknown restriction"),
        ({Stage.RELAY: ["reject_unauth_destination", "check_client_access"]}, "argument"),
        ({Stage.RELAY: ["permit_mynetworks"]}, "open relay"),
        ({}, "open relay"),
    ],
)
def test_bad_configurations_fail_at_build(make_engine, lists, message: str) -> None:
    with pytest.raises(PolicyConfigError, match=message):
        make_engine(lists)


def test_not_implemented_names_are_listed_and_dunno(harness) -> None:
    h = harness(
        {
            Stage.CLIENT: ["check_client_mx_access", "hash:x", "reject_unverified_sender"],
            Stage.RECIPIENT: [
                "check_policy_service",
                "unix:private/policy",
                "check_client_mx_access",
                "hash:x",
            ],
        },
        {"hash:x": {}},
    )
    assert h.engine.not_implemented == (
        "check_client_mx_access",
        "reject_unverified_sender",
        "check_policy_service",
    )
    assert h.rcpt("user@example.com").verdict is Verdict.PERMIT


def test_parse_restrictions_groups_arguments() -> None:
    assert parse_restrictions(["permit_mynetworks,", "check_client_access hash:/x, reject"]) == [
        ("permit_mynetworks", ()),
        ("check_client_access", ("hash:/x",)),
        ("reject", ()),
    ]


def test_bare_table_is_the_lists_implicit_access_check(harness) -> None:
    h = harness({Stage.CLIENT: ["dict:c"]}, {"dict:c": {"198.51.100.7": "REJECT"}})
    assert h.engine.restrictions(Stage.CLIENT) == ("check_client_access",)
    assert "Client host rejected" in str(h.rcpt("user@example.com").reply)
    with pytest.raises(PolicyConfigError, match="no meaning"):
        harness({Stage.DATA: ["dict:c"]}, {"dict:c": {}})


def test_registry_agrees_with_config_grammar() -> None:
    from ironpost.config.restrictions import RESTRICTION_ARITY
    from ironpost.policy import arity_table

    ours = arity_table()
    assert {n: ours.get(n) for n in RESTRICTION_ARITY} == RESTRICTION_ARITY


def test_tables_are_opened_once_per_spec(make_engine, dict_table) -> None:
    opened = []

    def opener(spec):
        opened.append(spec)
        return dict_table({}, spec)

    make_engine(
        {
            Stage.CLIENT: ["check_client_access", "dict:a"],
            Stage.RELAY: ["check_client_access", "dict:a", "reject_unauth_destination"],
        },
        open_table=opener,
    )
    assert opened == ["dict:a"]
