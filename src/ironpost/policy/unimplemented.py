"""Restrictions ironpost knows by name but does not implement yet.

Each is registered with its Postfix arity so configurations parse, and answers DUNNO
(no effect). The engine lists the ones a configuration uses in
``PolicyEngine.not_implemented`` so the server logs a warning at startup: an
administrator must not believe an RBL or a policy service is protecting them when it is
not. (The DNS existence checks and DNS lists live in ``dnscheck`` and ``dnsbl``.)
"""

from __future__ import annotations

from ironpost.policy.context import PolicyContext
from ironpost.policy.registry import restriction
from ironpost.policy.verdicts import Decision, Verdict

NO_ARGUMENT = (
    "reject_unverified_sender",
    "reject_unverified_recipient",
    "reject_unlisted_relay_recipient",
    "permit_mx_backup",
    "permit_tls_clientcerts",
    "permit_tls_all_clientcerts",
    "defer_if_permit",
    "defer_if_reject",
)

ONE_ARGUMENT = (
    "check_policy_service",
    "check_reverse_client_hostname_access",
    "check_client_a_access",
    "check_client_mx_access",
    "check_client_ns_access",
    "check_reverse_client_hostname_a_access",
    "check_reverse_client_hostname_mx_access",
    "check_reverse_client_hostname_ns_access",
    "check_helo_a_access",
    "check_helo_mx_access",
    "check_helo_ns_access",
    "check_sender_a_access",
    "check_sender_mx_access",
    "check_sender_ns_access",
    "check_recipient_a_access",
    "check_recipient_mx_access",
    "check_recipient_ns_access",
    "check_ccert_access",
    "check_sasl_access",
    "sleep",
)


def _not_implemented(ctx: PolicyContext, args: tuple[str, ...]) -> Decision:
    return Decision(Verdict.DUNNO, None, "not_implemented")


restriction(*NO_ARGUMENT, implemented=False)(_not_implemented)
restriction(*ONE_ARGUMENT, arity=1, implemented=False)(_not_implemented)
