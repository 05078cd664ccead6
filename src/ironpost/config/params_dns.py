"""Parameter table, dns family (issue #5): DNS restrictions and DNSBL replies.

See params_smtpd.py for the conventions. The reply-code rows these restrictions also
read (``unknown_address_reject_code``, ``unknown_client_reject_code``,
``unknown_hostname_reject_code``, ``maps_rbl_reject_code``) live in params_smtpd.py.
"""

from __future__ import annotations

from ironpost.config.paramdef import Param, lst, m, s

_TEMPFAIL_ACTIONS = ("defer", "defer_if_permit")

DNS: tuple[Param, ...] = (
    s(
        "reject_tempfail_action",
        "defer_if_permit",
        "What a reject-type restriction does when DNS fails temporarily (always 4xx).",
        choices=_TEMPFAIL_ACTIONS,
    ),
    s(
        "unknown_address_tempfail_action",
        "$reject_tempfail_action",
        "reject_unknown_sender/recipient_domain on a DNS TEMPFAIL.",
        choices=_TEMPFAIL_ACTIONS,
    ),
    s(
        "unknown_helo_hostname_tempfail_action",
        "$reject_tempfail_action",
        "reject_unknown_helo_hostname on a DNS TEMPFAIL.",
        choices=_TEMPFAIL_ACTIONS,
    ),
    m("rbl_reply_maps", "", "DNSBL domain -> reply template (default: $default_rbl_reply)."),
    s(
        "default_rbl_reply",
        "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
        "$rbl_domain${rbl_reason?; $rbl_reason}",
        "Reply template for a DNSBL/RHSBL listing.",
        expand=False,
    ),
    lst("maps_rbl_domains", "", "DNSBL domains of the deprecated reject_maps_rbl."),
)
