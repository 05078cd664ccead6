"""DNS for ironpost: the :class:`Resolver` contract, its typed results, and the
dnspython-backed :class:`DnsResolver` with its TTL cache.

Callers depend on the ``Resolver`` protocol only; unit tests pass
``ironpost.testing.dns.FakeResolver``. A ``TEMPFAIL`` result is temporary by contract:
never a 5xx and never a bounce because of it.
"""

from ironpost.dns.resolver import DnsResolver, normalize_name, parse_nameserver
from ironpost.dns.types import MxRecord, Resolver, Result, Status

__all__ = [
    "DnsResolver",
    "MxRecord",
    "Resolver",
    "Result",
    "Status",
    "normalize_name",
    "parse_nameserver",
]
