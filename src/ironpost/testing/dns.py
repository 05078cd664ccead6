"""An in-memory :class:`~ironpost.dns.types.Resolver` for unit tests.

Owns :class:`FakeResolver`: zones written as plain data, answers with the same
semantics as :class:`ironpost.dns.DnsResolver` (status, record shapes, invalid names),
and a log of every question asked.

Zone format (shared with the integration harness ``tests/integration/dns_server.py``)::

    {
        "example.com": {"MX": [(10, "mx1.example.com")], "TXT": ["v=spf1 -all"]},
        "mx1.example.com": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]},
        "null.example": {"MX": [(0, ".")]},             # null MX -> MxRecord(0, "")
        "192.0.2.1": {"PTR": ["mx1.example.com"]},      # an IP key means its reverse name
        "split.example": {"TXT": [("v=DKIM1; ", "p=AB")]},  # strings of one record
    }

Semantics: a name present with no records of the asked type is NODATA, and so is an
"empty non-terminal" (a parent of a listed name); any other name is NXDOMAIN. A name
in ``tempfail`` or below it answers TEMPFAIL for every type.

Invariant: every call is appended to :attr:`FakeResolver.calls` as ``(TYPE, name)``
with the name exactly as the caller passed it, before anything else happens.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import dns.reversename

from ironpost.dns.resolver import INVALID_ADDRESS, INVALID_NAME, normalize_name
from ironpost.dns.types import MxRecord, Resolver, Result, Status

RECORD_TYPES = ("MX", "A", "AAAA", "TXT", "PTR")

Zones = Mapping[str, Mapping[str, Sequence[Any]]]


def zone_key(name: str) -> str:
    """The normalized owner name of a zone key (an IP address becomes its reverse name)."""
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        key = normalize_name(name)
        if key is None:
            raise ValueError(f"invalid name in zone: {name!r}") from None
        return key
    return dns.reversename.from_address(str(ip)).to_text(omit_final_dot=True)


def _mx(record: Any) -> MxRecord:
    if isinstance(record, MxRecord):
        return record
    preference, host = record
    host = str(host).rstrip(".").lower()
    return MxRecord(int(preference), host)


def _txt(record: Any) -> str:
    return record if isinstance(record, str) else "".join(record)


def _host(record: Any) -> str:
    return str(record).rstrip(".").lower()


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "MX": _mx,
    "A": str,
    "AAAA": str,
    "TXT": _txt,
    "PTR": _host,
}


class FakeResolver:
    """Answers from ``zones``; see the module docstring for the format."""

    def __init__(
        self,
        zones: Zones | None = None,
        *,
        tempfail: Iterable[str] = (),
        ttl: int = 300,
    ) -> None:
        self.ttl = ttl
        self.calls: list[tuple[str, str]] = []
        self._records: dict[str, dict[str, tuple[Any, ...]]] = {}
        self._tempfail: set[str] = set()
        for name, rrsets in (zones or {}).items():
            for rtype, records in rrsets.items():
                self.set(name, rtype, records)
        for name in tempfail:
            self.fail(name)

    # --- changing the zones during a test -------------------------------------------------

    def set(self, name: str, rtype: str, records: Sequence[Any]) -> None:
        """Replace the ``rtype`` records of ``name`` (an empty list makes it NODATA)."""
        rtype = rtype.upper()
        if rtype not in _CONVERT:
            raise ValueError(f"unsupported record type {rtype!r}")
        convert = _CONVERT[rtype]
        records = [records] if isinstance(records, str) else records
        self._records.setdefault(zone_key(name), {})[rtype] = tuple(convert(r) for r in records)

    def remove(self, name: str) -> None:
        """Make ``name`` NXDOMAIN (unless it is a parent of another name)."""
        self._records.pop(zone_key(name), None)

    def fail(self, name: str) -> None:
        """Make ``name`` and every name below it TEMPFAIL."""
        self._tempfail.add(zone_key(name))

    def heal(self, name: str) -> None:
        self._tempfail.discard(zone_key(name))

    def asked(self, rtype: str | None = None) -> list[str]:
        """The names asked so far (of one type, if given), in order."""
        return [n for t, n in self.calls if rtype is None or t == rtype.upper()]

    # --- the Resolver protocol ----------------------------------------------------------

    async def mx(self, name: str) -> Result[MxRecord]:
        return self._answer("MX", name, name)

    async def a(self, name: str) -> Result[str]:
        return self._answer("A", name, name)

    async def aaaa(self, name: str) -> Result[str]:
        return self._answer("AAAA", name, name)

    async def txt(self, name: str) -> Result[str]:
        return self._answer("TXT", name, name)

    async def ptr(self, address: str) -> Result[str]:
        self.calls.append(("PTR", address))
        try:
            ip = ipaddress.ip_address(address.strip())
        except ValueError:
            return Result(Status.NXDOMAIN, error=INVALID_ADDRESS)
        reverse = dns.reversename.from_address(str(ip)).to_text(omit_final_dot=True)
        return self._answer("PTR", reverse, None)

    def _answer(self, rtype: str, name: str, logged: str | None) -> Result[Any]:
        if logged is not None:
            self.calls.append((rtype, logged))
        key = normalize_name(name)
        if key is None:
            return Result(Status.NXDOMAIN, error=INVALID_NAME)
        if self._is_tempfail(key):
            return Result(Status.TEMPFAIL, error="fake tempfail")
        rrsets = self._records.get(key)
        if rrsets is None:
            suffix = "." + key
            if any(owner.endswith(suffix) for owner in self._records):
                return Result(Status.NODATA, ttl=self.ttl)
            return Result(Status.NXDOMAIN, ttl=self.ttl)
        records = rrsets.get(rtype)
        if not records:
            return Result(Status.NODATA, ttl=self.ttl)
        if rtype == "MX":
            records = tuple(sorted(records, key=lambda r: r.preference))
        return Result(Status.ANSWER, records, self.ttl)

    def _is_tempfail(self, key: str) -> bool:
        if not self._tempfail:
            return False
        labels = key.split(".")
        return any(".".join(labels[i:]) in self._tempfail for i in range(len(labels)))


def _conforms(fake: FakeResolver) -> Resolver:
    return fake  # mypy proves FakeResolver satisfies the Resolver protocol
