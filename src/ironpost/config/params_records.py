"""Parameter table, DNS records family: what ``ironpost dns records`` publishes (issue #5).

Owns the rows that only shape the records an administrator publishes (addresses, TTL,
DMARC policy and report addresses, MTA-STS mode). All are ironpost's own names; none
changes how mail is received or sent. See params_smtpd.py for the conventions.
"""

from __future__ import annotations

from ironpost.config.paramdef import Param, i, lst, s

RECORDS: tuple[Param, ...] = (
    lst(
        "dns_records_addresses",
        "",
        "Public IP addresses of this host for A/AAAA, SPF and PTR records "
        "(empty: the public addresses among inet_interfaces, proxy_interfaces "
        "and smtp_bind_address[6]).",
        origin="ironpost",
    ),
    i(
        "dns_records_ttl",
        "3600",
        "TTL of the published records, in seconds.",
        lo=60,
        hi=604800,
        origin="ironpost",
    ),
    s(
        "dns_records_dmarc_policy",
        "quarantine",
        "DMARC p= of the published _dmarc record.",
        choices=("none", "quarantine", "reject"),
        origin="ironpost",
    ),
    s(
        "dns_records_dmarc_rua",
        "",
        "DMARC aggregate report address (empty: postmaster@ each domain).",
        origin="ironpost",
    ),
    s(
        "dns_records_tlsrpt_rua",
        "",
        "TLS-RPT report address (empty: postmaster@ each domain).",
        origin="ironpost",
    ),
    s(
        "dns_records_mta_sts_mode",
        "testing",
        "MTA-STS policy mode: testing, enforce, or none (withdraws a policy).",
        choices=("testing", "enforce", "none"),
        origin="ironpost",
    ),
)
