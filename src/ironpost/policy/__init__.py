"""The SMTP restriction engine: Postfix restriction lists as data, one module per family.

Importing this package registers every restriction (client, helo, sender, recipient,
relay, generic, DNS checks and DNS lists, and the names not implemented yet) with the
registry.
"""

from ironpost.policy import (  # noqa: F401  (imported to register restrictions)
    authpolicy,
    client,
    dnsbl,
    dnscheck,
    generic,
    helo,
    recipient,
    relay,
    sender,
    sender_login,
    unimplemented,
)
from ironpost.policy.context import PolicyContext, PolicyParams
from ironpost.policy.engine import PolicyConfigError, PolicyEngine, parse_restrictions
from ironpost.policy.networks import NetworkList
from ironpost.policy.registry import REGISTRY, arity_table, restriction
from ironpost.policy.verdicts import Decision, Stage, Verdict

__all__ = [
    "REGISTRY",
    "Decision",
    "NetworkList",
    "PolicyConfigError",
    "PolicyContext",
    "PolicyEngine",
    "PolicyParams",
    "Stage",
    "Verdict",
    "arity_table",
    "parse_restrictions",
    "restriction",
]
