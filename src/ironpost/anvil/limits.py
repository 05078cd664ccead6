"""The anvil: per-client event rates, AUTH failure throttling and bans, per-login limits.

Owns :class:`Anvil`, the one object the SMTP server asks "may this client do this now?",
modelled on Postfix's anvil(8) but in-process, plus :class:`BanStore` / :class:`BanList`
for temporary bans. The counting lives behind :class:`~ironpost.anvil.rates.RateStore`
and :class:`BanStore`, so that a shared, database-backed store (issue #8) can replace the
in-memory ones without touching the policy here.

Invariants:

* A refused event is not counted, so a client that backs off recovers after one time
  unit (see :mod:`ironpost.anvil.rates` for the window's exact guarantee).
* A limit of 0 means no limit, and such events are not tracked at all (no memory).
* Login names are keys after :func:`login_key` (strip, casefold, at most
  ``LOGIN_KEY_MAX`` characters): ``Alice`` and ``alice `` share one count, and a junk name
  of a megabyte costs as much memory as any other.
* AUTH failures count per client IP and per login within ``auth_ban_time``; a key whose
  count reaches ``auth_ban_threshold`` is banned for ``auth_ban_time`` and its count
  starts again from zero (the ban was its penalty; a ban that ends must not be renewed
  by the very next failure). The IP and the login are banned independently.
* A success forgets the login's failures but never the IP's: one good password from a
  botnet IP must not reset its count against other names.
* Every table is bounded (``AnvilConfig.max_keys``, least recently used evicted) and
  every call does O(1) amortised work. Under a flood of distinct keys larger than the
  cap, an evicted key loses its count: memory wins over memory of the past, and the
  ``statistics`` lines say when it happens.
* Names and IPs are never shown raw in log lines: non-printable characters are escaped.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ironpost.anvil.config import AnvilConfig
from ironpost.anvil.rates import RateStore, RateTable

LOGIN_KEY_MAX = 256  # SASL user names are far shorter; anything longer is junk
_SWEEP_PER_CALL = 2
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


#: How long a successful (login, IP) pair stays familiar: exempt from that login's ban.
FAMILIAR_TIME = 30 * 86400.0


def login_key(login: str | None) -> str | None:
    """The key a login name counts under, or None for no (or an empty) name."""
    if login is None:
        return None
    # Cut before casefold (which can grow a string) so a huge name costs little.
    key = login.strip()[: LOGIN_KEY_MAX * 2].casefold()[:LOGIN_KEY_MAX]
    return key or None


class BanStore(Protocol):
    """Keys banned until a point in time (on the anvil's clock)."""

    def until(self, key: str, now: float) -> float:
        """When the key's ban ends; 0.0 (or any time <= now) when it is not banned."""
        ...

    def ban(self, key: str, until: float) -> None:
        """Ban ``key`` until ``until`` (replacing any earlier ban)."""
        ...

    def __len__(self) -> int: ...


class BanList:
    """In-memory :class:`BanStore`, in order of ban end: every ban lasts as long, so the
    next one to expire is at the front and expired bans go a few per call."""

    __slots__ = ("_bans", "evicted", "max_keys")

    def __init__(self, max_keys: int) -> None:
        self._bans: OrderedDict[str, float] = OrderedDict()
        self.max_keys = max_keys
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._bans)

    def _sweep(self, now: float) -> None:
        bans = self._bans
        for _ in range(_SWEEP_PER_CALL):
            if not bans:
                return
            key, until = next(iter(bans.items()))
            if until > now:
                return
            del bans[key]

    def until(self, key: str, now: float) -> float:
        self._sweep(now)
        until = self._bans.get(key, 0.0)
        if until and until <= now:
            del self._bans[key]
            return 0.0
        return until

    def ban(self, key: str, until: float) -> None:
        bans = self._bans
        bans.pop(key, None)
        bans[key] = until
        if len(bans) > self.max_keys:
            # The ban nearest its end goes: the least loss if the cap is ever reached.
            bans.popitem(last=False)
            self.evicted += 1


RateStoreFactory = Callable[[str, float, int], RateStore]  # (name, time unit, max keys)
BanStoreFactory = Callable[[str, int], BanStore]  # (name, max keys)


def _rate_table(name: str, time_unit: float, max_keys: int) -> RateStore:
    return RateTable(time_unit, max_keys=max_keys)


def _ban_list(name: str, max_keys: int) -> BanStore:
    return BanList(max_keys)


@dataclass(slots=True)
class _Peak:
    """The highest count one kind of event reached since the last statistics."""

    value: int = 0
    key: str = ""
    when: float = 0.0  # wall-clock time


def _stamp(when: float) -> str:
    t = time.localtime(when)
    return f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


def _printable(text: str) -> str:
    # IPs and login names reach the log; a name with CR LF must not forge a log line.
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _seconds(value: float) -> str:
    return f"{value:.0f}s" if value == int(value) else f"{value:g}s"


class Anvil:
    """Rate limits, AUTH failure throttling and bans for one process (see module doc)."""

    def __init__(
        self,
        config: AnvilConfig,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall_clock: Callable[[], float] = time.time,
        rate_store: RateStoreFactory = _rate_table,
        ban_store: BanStoreFactory = _ban_list,
    ) -> None:
        self.config = config
        self._clock = clock
        self._wall = wall_clock  # only for the "at ..." of statistics lines
        cap = config.max_keys
        unit, user_unit, ban_time = config.time_unit, config.user_time_unit, config.auth_ban_time
        self._connections = rate_store("connection", unit, cap)
        self._messages = rate_store("message", unit, cap)
        self._recipients = rate_store("recipient", unit, cap)
        self._auths = rate_store("auth", unit, cap)
        self._user_messages = rate_store("user message", user_unit, cap)
        self._user_recipients = rate_store("user recipient", user_unit, cap)
        self._failures_ip = rate_store("auth failure ip", ban_time, cap)
        self._failures_login = rate_store("auth failure login", ban_time, cap)
        self._bans_ip = ban_store("auth ban ip", cap)
        self._bans_login = ban_store("auth ban login", cap)
        # (login, IP) pairs that authenticated: a login's ban spares them (see ban_left).
        self._familiar = ban_store("familiar device", cap)
        self._peaks: dict[str, _Peak] = {}
        self._refused: dict[str, int] = {}
        self._cache_peak = _Peak()
        self._auth_failures = 0
        self._auth_bans = 0

    # --- per-client and per-login rates ----------------------------------------------

    def _admit(self, kind: str, store: RateStore, key: str, limit: int, n: int = 1) -> bool:
        if limit <= 0:
            return True
        count = store.admit(key, self._clock(), limit, n)
        if count is None:
            self._refused[kind] = self._refused.get(kind, 0) + 1
            return False
        peak = self._peaks.get(kind)
        if peak is None:
            peak = self._peaks[kind] = _Peak()
        if count > peak.value:
            peak.value, peak.key, peak.when = count, key, self._wall()
        self._note_size(store)
        return True

    def _note_size(self, store: RateStore) -> None:
        size = len(store)
        if size > self._cache_peak.value:
            cache = self._cache_peak
            cache.value, cache.when = size, self._wall()

    def connect(self, client: str) -> bool:
        """Count a connection; False when it exceeds ``connection_rate``."""
        return self._admit("connection", self._connections, client, self.config.connection_rate)

    def message(self, client: str) -> bool:
        """Count a message (MAIL FROM); False when it exceeds ``message_rate``."""
        return self._admit("message", self._messages, client, self.config.message_rate)

    def recipient(self, client: str) -> bool:
        """Count a recipient (RCPT TO); False when it exceeds ``recipient_rate``."""
        return self._admit("recipient", self._recipients, client, self.config.recipient_rate)

    def auth(self, client: str) -> bool:
        """Count an AUTH command; False when it exceeds ``auth_rate``."""
        return self._admit("auth", self._auths, client, self.config.auth_rate)

    def user_message(self, login: str) -> bool:
        """Count a message of an authenticated login over ``user_time_unit``."""
        key = login_key(login)
        if key is None:
            return True  # not a login: the per-client limits apply, not these
        return self._admit("user message", self._user_messages, key, self.config.user_message_rate)

    def user_recipients(self, login: str, count: int = 1) -> bool:
        """Count ``count`` recipients of an authenticated login; all or none are counted,
        so a refused batch leaves the login's quota as it was."""
        key = login_key(login)
        if key is None or count <= 0:
            return True
        return self._admit(
            "user recipient", self._user_recipients, key, self.config.user_recipient_rate, count
        )

    # --- AUTH failures and bans ------------------------------------------------------

    def ban_left(self, client: str, login: str | None = None) -> float:
        """Seconds of ban left for the client IP, or for the login if given; 0.0 if none.

        A login's ban does not apply from an address that authenticated as that login
        within FAMILIAR_TIME (a familiar device): otherwise anyone who knows a user's name
        could lock that user out. The IP's own ban has no such exception.
        """
        now = self._clock()
        until = self._bans_ip.until(client, now)
        key = login_key(login)
        if key is not None and not self._familiar.until(f"{key}\0{client}", now):
            until = max(until, self._bans_login.until(key, now))
        return max(until - now, 0.0)

    def _count_failure(self, store: RateStore, bans: BanStore, key: str, now: float) -> int:
        n = store.add(key, now)
        if n >= self.config.auth_ban_threshold:
            bans.ban(key, now + self.config.auth_ban_time)
            store.forget(key)
            self._auth_bans += 1
        self._note_size(store)
        return n

    def auth_failed(self, client: str, login: str | None) -> float:
        """Record one failed AUTH; return how long to wait before the 535 reply.

        ``auth_failure_delay * 2**(n-1)``, capped at ``auth_failure_max_delay``, where
        ``n`` is the larger of the recent failure counts of the IP and of the login. The
        count that reaches ``auth_ban_threshold`` bans its key for ``auth_ban_time``.
        """
        self._auth_failures += 1
        now = self._clock()
        n = self._count_failure(self._failures_ip, self._bans_ip, client, now)
        key = login_key(login)
        if key is not None:
            n = max(n, self._count_failure(self._failures_login, self._bans_login, key, now))
        cfg = self.config
        # 2**64 times any sane delay is past any cap; the bound keeps the float finite.
        return min(cfg.auth_failure_max_delay, cfg.auth_failure_delay * 2.0 ** min(n - 1, 64))

    def auth_succeeded(self, client: str, login: str) -> None:
        """Forget the login's failures; the client IP's failures stay counted.

        A login that is banned at the moment is not forgiven here (the server refuses
        it anyway), and its device does not become familiar.
        """
        key = login_key(login)
        if key is None:
            return
        now = self._clock()
        if self._bans_login.until(key, now) and not self._familiar.until(f"{key}\0{client}", now):
            return
        self._failures_login.forget(key)
        self._familiar.ban(f"{key}\0{client}", now + FAMILIAR_TIME)

    # --- observability ---------------------------------------------------------------

    def statistics(self) -> list[str]:
        """Postfix anvil-style summary lines since the last call; resets the maxima."""
        lines: list[str] = []
        units = {
            "connection": self.config.time_unit,
            "message": self.config.time_unit,
            "recipient": self.config.time_unit,
            "auth": self.config.time_unit,
            "user message": self.config.user_time_unit,
            "user recipient": self.config.user_time_unit,
        }
        for kind, unit in units.items():
            peak = self._peaks.get(kind)
            if peak is not None and peak.value:
                lines.append(
                    f"statistics: max {kind} rate {peak.value}/{_seconds(unit)}"
                    f" for ({_printable(peak.key)}) at {_stamp(peak.when)}"
                )
        if self._cache_peak.value:
            lines.append(
                f"statistics: max cache size {self._cache_peak.value}"
                f" at {_stamp(self._cache_peak.when)}"
            )
        refused = ", ".join(f"{n} {kind}" for kind, n in self._refused.items() if n)
        if refused:
            lines.append(f"statistics: refused {refused}")
        if self._auth_failures:
            lines.append(
                f"statistics: {self._auth_failures} auth failures, {self._auth_bans} auth bans"
            )
        evicted = sum(
            getattr(store, "evicted", 0)
            for store in (
                self._connections,
                self._messages,
                self._recipients,
                self._auths,
                self._user_messages,
                self._user_recipients,
                self._failures_ip,
                self._failures_login,
                self._bans_ip,
                self._bans_login,
            )
        )
        if evicted:
            lines.append(f"statistics: {evicted} keys evicted from full tables since start")
        self._peaks.clear()
        self._refused.clear()
        self._cache_peak = _Peak()
        self._auth_failures = self._auth_bans = 0
        return lines
