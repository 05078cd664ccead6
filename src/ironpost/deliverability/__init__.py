"""Deliverability: the DNS records that make our mail trusted (SPF, DKIM, DMARC,
MTA-STS, TLS-RPT, MX, A/AAAA, PTR), built from the configuration.

``records`` builds the expected record set (pure values, also what a doctor compares
with live DNS); ``zone`` renders it as zone-file text or JSON.
"""

from __future__ import annotations

from ironpost.deliverability.records import (
    DkimPublicKey,
    DomainRecords,
    MtaSts,
    Record,
    RecordOptions,
    RecordsError,
    RecordSet,
    build_records,
    mail_domains,
    options_from_settings,
    public_addresses,
)
from ironpost.deliverability.zone import render_fragment, render_json, render_zone

__all__ = [
    "DkimPublicKey",
    "DomainRecords",
    "MtaSts",
    "Record",
    "RecordOptions",
    "RecordSet",
    "RecordsError",
    "build_records",
    "mail_domains",
    "options_from_settings",
    "public_addresses",
    "render_fragment",
    "render_json",
    "render_zone",
]
