"""Recipient routing: address classes, final destination, alias expansion, mailbox resolution.

The public names below are what the server (RCPT checks) and delivery (expansion and
resolution) code against; see :mod:`ironpost.routing.router` for the invariants.
"""

from ironpost.routing.addresses import split_address, split_extension
from ironpost.routing.domains import DomainList
from ironpost.routing.router import (
    AddressClass,
    ExpansionLimitError,
    Resolution,
    Router,
    RoutingConfig,
)
from ironpost.routing.settings import SettingsLike

__all__ = [
    "AddressClass",
    "DomainList",
    "ExpansionLimitError",
    "Resolution",
    "Router",
    "RoutingConfig",
    "SettingsLike",
    "split_address",
    "split_extension",
]
