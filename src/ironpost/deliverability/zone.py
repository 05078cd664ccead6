"""Render a :class:`~ironpost.deliverability.records.RecordSet` as zone-file text or JSON.

Owns the presentation forms. Invariants of the zone text: no ``$ORIGIN`` or ``$TTL``
directive, every owner name absolute and every record carrying its TTL, so a fragment
pasted into any zone (or loaded by an authoritative server) means the same thing;
TXT values are split into character-strings of at most 255 octets (RFC 1035 §3.3),
with ``"`` and ``\\`` escaped and every byte outside printable ASCII written ``\\DDD``;
anything that is not a record (warnings, the MTA-STS policy, the PTRs to ask a provider
for) is a ``;`` comment, one line each, so it can never become a record by accident.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from ironpost.deliverability.records import DomainRecords, Record, RecordSet

MAX_STRING = 255  # octets in one DNS character-string
_SAFE = frozenset(range(0x20, 0x7F)) - {ord('"'), ord("\\")}


def split_txt(value: str) -> list[bytes]:
    """The UTF-8 octets of ``value`` in chunks of at most 255 (one chunk when empty)."""
    data = value.encode("utf-8")
    return [data[i : i + MAX_STRING] for i in range(0, len(data), MAX_STRING)] or [b""]


def quote(chunk: bytes) -> str:
    """One zone-file character-string: ``"..."`` with RFC 1035 §5.1 escapes."""
    if all(b in _SAFE for b in chunk):  # the common case: plain ASCII, nothing to escape
        return f'"{chunk.decode("ascii")}"'
    parts = []
    for b in chunk:
        if b in _SAFE:
            parts.append(chr(b))
        elif b in (0x22, 0x5C):
            parts.append("\\" + chr(b))
        else:
            parts.append(f"\\{b:03d}")
    return '"' + "".join(parts) + '"'


def rdata(record: Record) -> str:
    """The record's data in zone-file form (TXT quoted and split)."""
    if record.type != "TXT":
        return record.value
    strings = [quote(c) for c in split_txt(record.value)]
    if len(strings) == 1:
        return strings[0]
    # Parentheses let the strings sit on their own lines, as opendkim-genkey writes them.
    return "( " + "\n\t".join(strings) + " )"


def _comment(text: str) -> str:
    # One physical line per comment: a newline would end the comment and start a record.
    return "; " + " ".join(text.split())


def record_line(record: Record, ttl: int) -> str:
    return f"{record.name}\t{ttl}\tIN\t{record.type}\t{rdata(record)}"


def _fragment_lines(zone: DomainRecords, ttl: int) -> Iterator[str]:
    yield _comment(f"---- {zone.domain}: records to publish ----")
    for note in zone.notes:
        yield _comment(f"NOTE: {note}")
    for record in zone.records:
        if record.comment:
            yield _comment(record.comment)
        yield record_line(record, ttl)
    if zone.mta_sts is not None:
        sts = zone.mta_sts
        yield _comment(f"MTA-STS policy (id {sts.policy_id}): serve this file at {sts.url}")
        yield _comment(
            f"over HTTPS with a certificate valid for {sts.host.rstrip('.')}, "
            f"and point that name at the web server, e.g.:"
        )
        yield _comment(f"{sts.host}\t{ttl}\tIN\tCNAME\t<your web server>.")
        for line in sts.policy.splitlines():
            yield ";\t" + " ".join(line.split())


def render_fragment(zone: DomainRecords, ttl: int) -> str:
    """One domain's zone-file fragment (no SOA/NS: those belong to the zone's owner)."""
    return "\n".join(_fragment_lines(zone, ttl)) + "\n"


def render_zone(records: RecordSet) -> str:
    """The whole set: warnings, one fragment per domain, then the PTRs to ask for."""
    lines = [
        _comment(f"DNS records for {records.hostname} and its mail domains (TTL {records.ttl})")
    ]
    lines.extend(_comment(f"WARNING: {w}") for w in records.warnings)
    for zone in records.zones:
        lines.append("")
        lines.extend(_fragment_lines(zone, records.ttl))
    if records.ptr:
        lines.append("")
        lines.append(_comment("---- reverse DNS: not in your zones ----"))
        lines.append(_comment("ask the provider of each address to publish:"))
        lines.extend(_comment(record_line(r, records.ttl)) for r in records.ptr)
    return "\n".join(lines) + "\n"


def _record_dict(record: Record, ttl: int) -> dict[str, object]:
    return {
        "name": record.name,
        "type": record.type,
        "ttl": ttl,
        "value": record.value,
        "comment": record.comment,
    }


def as_dict(records: RecordSet) -> dict[str, object]:
    """The set as plain JSON-able data (``render_json`` dumps it)."""
    ttl = records.ttl
    return {
        "hostname": records.hostname,
        "addresses": list(records.addresses),
        "ttl": ttl,
        "warnings": list(records.warnings),
        "domains": [
            {
                "domain": z.domain,
                "records": [_record_dict(r, ttl) for r in z.records],
                "notes": list(z.notes),
                "mta_sts": None
                if z.mta_sts is None
                else {
                    "url": z.mta_sts.url,
                    "id": z.mta_sts.policy_id,
                    "policy": z.mta_sts.policy,
                    "host": z.mta_sts.host,
                },
            }
            for z in records.zones
        ],
        "ptr": [_record_dict(r, ttl) for r in records.ptr],
    }


def render_json(records: RecordSet) -> str:
    return json.dumps(as_dict(records), indent=2, ensure_ascii=False) + "\n"
