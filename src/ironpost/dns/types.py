"""The resolver contract: typed DNS results and the :class:`Resolver` protocol.

Every caller of DNS in ironpost (outbound SMTP, DNS restrictions, SPF/DKIM/DMARC)
speaks to a :class:`Resolver`; the dnspython implementation and the unit-test fake
(``ironpost.testing.dns``) both satisfy it.

Invariant: a lookup never raises for a DNS outcome. SERVFAIL, timeouts, refused and
network errors are all ``Status.TEMPFAIL``; callers must treat TEMPFAIL as temporary
(never a 5xx, never a bounce).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class Status(StrEnum):
    ANSWER = "answer"  # at least one record of the type asked for
    NXDOMAIN = "nxdomain"  # the name does not exist
    NODATA = "nodata"  # the name exists, no record of this type
    TEMPFAIL = "tempfail"  # SERVFAIL, timeout, refused, unreachable server


@dataclass(frozen=True, slots=True)
class MxRecord:
    preference: int
    host: str  # lowercased, no trailing dot; "" for the null MX target "."


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    status: Status
    records: tuple[T, ...] = ()
    ttl: int = 0
    error: str | None = None  # human-readable cause of a TEMPFAIL, for logs

    @property
    def ok(self) -> bool:
        return self.status is Status.ANSWER


class Resolver(Protocol):
    """Async DNS lookups. Names are given without a trailing dot."""

    async def mx(self, name: str) -> Result[MxRecord]: ...

    async def a(self, name: str) -> Result[str]: ...

    async def aaaa(self, name: str) -> Result[str]: ...

    async def txt(self, name: str) -> Result[str]:
        """Each record's strings joined without separator (as SPF/DKIM require)."""
        ...

    async def ptr(self, address: str) -> Result[str]:
        """Reverse lookup of an IPv4/IPv6 address; records are host names."""
        ...
