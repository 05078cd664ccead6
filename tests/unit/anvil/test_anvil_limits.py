"""Anvil: client rate limits, AUTH failure delays and bans, per-login limits, statistics."""

from __future__ import annotations

import re

import pytest

from ironpost.anvil import (
    LOGIN_KEY_MAX,
    Anvil,
    AnvilConfig,
    BanList,
    RateStore,
    RateTable,
    login_key,
)
from ironpost.config.settings import Settings, build_settings
from ironpost.config.syntax import Entry
from ironpost.testing.clock import FakeClock

W = 10.0  # slot width of a 60 s unit (six slots); FakeClock starts on a slot boundary


def _settings(**values: str) -> Settings:
    entries = [Entry(k, v, "main.cf", n) for n, (k, v) in enumerate(values.items(), 1)]
    settings, diags = build_settings(entries, base=None)
    assert not [d for d in diags if d.is_error], diags
    return settings


def _anvil(**overrides: float) -> tuple[Anvil, FakeClock]:
    clock = FakeClock()
    config = AnvilConfig(**overrides)  # type: ignore[arg-type]
    return Anvil(config, clock, wall_clock=clock), clock


# --- config ----------------------------------------------------------------------------


def test_config_defaults_match_the_parameter_table() -> None:
    cfg = AnvilConfig.from_settings(_settings())
    assert cfg == AnvilConfig()


def test_config_reads_every_parameter() -> None:
    cfg = AnvilConfig.from_settings(
        _settings(
            anvil_rate_time_unit="2m",
            smtpd_client_connection_rate_limit="10",
            smtpd_client_message_rate_limit="11",
            smtpd_client_recipient_rate_limit="12",
            smtpd_client_auth_rate_limit="13",
            smtpd_auth_failure_delay="2s",
            smtpd_auth_failure_max_delay="30s",
            smtpd_auth_ban_threshold="5",
            smtpd_auth_ban_time="1h",
            smtpd_sasl_user_rate_time_unit="1d",
            smtpd_sasl_user_message_rate_limit="100",
            smtpd_sasl_user_recipient_rate_limit="300",
        )
    )
    assert cfg == AnvilConfig(
        time_unit=120,
        connection_rate=10,
        message_rate=11,
        recipient_rate=12,
        auth_rate=13,
        auth_failure_delay=2,
        auth_failure_max_delay=30,
        auth_ban_threshold=5,
        auth_ban_time=3600,
        user_time_unit=86400,
        user_message_rate=100,
        user_recipient_rate=300,
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"time_unit": 0},
        {"user_time_unit": -1},
        {"auth_ban_time": float("inf")},
        {"auth_failure_delay": -1},
        {"auth_failure_max_delay": float("nan")},
        {"connection_rate": -1},
        {"user_recipient_rate": -5},
        {"auth_ban_threshold": 0},
        {"max_keys": 0},
    ],
)
def test_config_refuses_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        AnvilConfig(**bad)  # type: ignore[arg-type]


# --- per-client rates --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "field"),
    [
        ("connect", "connection_rate"),
        ("message", "message_rate"),
        ("recipient", "recipient_rate"),
        ("auth", "auth_rate"),
    ],
)
def test_client_limit_is_hit_exactly_at_n_plus_one_and_recovers(method: str, field: str) -> None:
    anvil, clock = _anvil(**{field: 3})
    event = getattr(anvil, method)
    assert [event("192.0.2.1") for _ in range(4)] == [True, True, True, False]
    assert event("192.0.2.2")  # another client has its own count
    for _ in range(60):  # hammering while refused does not prolong the refusal
        clock.advance(1)
        assert not event("192.0.2.1")
    clock.advance(W)
    assert [event("192.0.2.1") for _ in range(4)] == [True, True, True, False]


def test_each_kind_of_event_counts_apart() -> None:
    anvil, _ = _anvil(connection_rate=1, message_rate=1, recipient_rate=1, auth_rate=1)
    client = "2001:db8::1"
    assert anvil.connect(client) and anvil.message(client)
    assert anvil.recipient(client) and anvil.auth(client)
    assert not (anvil.connect(client) or anvil.message(client))
    assert not (anvil.recipient(client) or anvil.auth(client))


def test_zero_means_no_limit_and_no_memory() -> None:
    anvil, _ = _anvil()
    assert all(anvil.connect(f"198.51.100.{i % 256}") for i in range(10_000))
    assert all(anvil.recipient("198.51.100.1") for _ in range(10_000))
    assert anvil.statistics() == []  # nothing was tracked


# --- AUTH failures -------------------------------------------------------------------------


def test_failure_delay_doubles_and_is_capped() -> None:
    anvil, _ = _anvil(auth_failure_delay=1, auth_failure_max_delay=16, auth_ban_threshold=100)
    delays = [anvil.auth_failed("192.0.2.9", "alice") for _ in range(7)]
    assert delays == [1, 2, 4, 8, 16, 16, 16]


def test_failure_delay_never_overflows() -> None:
    anvil, _ = _anvil(auth_failure_delay=60, auth_failure_max_delay=300, auth_ban_threshold=5000)
    delays = [anvil.auth_failed("192.0.2.9", None) for _ in range(2000)]
    assert delays[-1] == 300


def test_delay_follows_the_worse_of_ip_and_login() -> None:
    anvil, _ = _anvil(auth_ban_threshold=100)
    # A slow distributed guess at one name: each IP is new, the login's count grows.
    delays = [anvil.auth_failed(f"203.0.113.{i}", "Bob") for i in range(1, 5)]
    assert delays == [1, 2, 4, 8]
    # One IP spraying names: each name is new, the IP's count grows.
    delays = [anvil.auth_failed("192.0.2.50", f"user{i}") for i in range(4)]
    assert delays == [1, 2, 4, 8]


def test_failures_age_out_after_the_ban_time() -> None:
    anvil, clock = _anvil(auth_ban_time=600)
    assert [anvil.auth_failed("192.0.2.1", "x") for _ in range(3)] == [1, 2, 4]
    clock.advance(600 + 100)  # one unit and one slot (600 / 6)
    assert anvil.auth_failed("192.0.2.1", "x") == 1


def test_ip_is_banned_at_the_threshold_whatever_the_names() -> None:
    anvil, clock = _anvil(auth_ban_threshold=3, auth_ban_time=900)
    ip = "192.0.2.66"
    assert anvil.auth_failed(ip, "a") and anvil.auth_failed(ip, "b")
    assert anvil.ban_left(ip) == 0.0
    anvil.auth_failed(ip, "c")
    assert anvil.ban_left(ip) == 900
    assert anvil.ban_left(ip, "someone-else") == 900
    # The names were each tried once: none of them is banned, nor is another IP.
    assert anvil.ban_left("192.0.2.67", "a") == 0.0
    clock.advance(899)
    assert anvil.ban_left(ip) == pytest.approx(1.0)
    clock.advance(1)
    assert anvil.ban_left(ip) == 0.0
    # The ban was the penalty: the count starts again (no renewal by the next failure).
    assert anvil.auth_failed(ip, "d") == 1
    assert anvil.ban_left(ip) == 0.0


def test_login_is_banned_at_the_threshold_from_any_ips() -> None:
    anvil, clock = _anvil(auth_ban_threshold=3, auth_ban_time=900)
    for i in range(3):
        anvil.auth_failed(f"203.0.113.{i}", "Carol")
    assert anvil.ban_left("198.51.100.7", "carol") == 900  # from anywhere, any case
    assert anvil.ban_left("198.51.100.7") == 0.0  # the IPs are not banned
    assert anvil.ban_left("203.0.113.0", "dave") == 0.0
    clock.advance(900)
    assert anvil.ban_left("198.51.100.7", "carol") == 0.0


def test_a_login_ban_spares_the_users_familiar_device() -> None:
    anvil, _ = _anvil(auth_ban_threshold=3, auth_ban_time=900)
    anvil.auth_succeeded("198.51.100.7", "carol")  # carol's laptop, before the attack
    for _ in range(3):
        anvil.auth_failed("203.0.113.9", "carol")
    assert anvil.ban_left("203.0.113.200", "carol") == 900  # a new address: banned
    assert anvil.ban_left("198.51.100.7", "carol") == 0.0  # her laptop: not
    # Success from a stranger under the ban makes no new familiar device.
    anvil.auth_succeeded("203.0.113.200", "carol")
    assert anvil.ban_left("203.0.113.200", "carol") == 900
    # The IP's own ban has no exception.
    for _ in range(3):
        anvil.auth_failed("198.51.100.7", "someone")
    assert anvil.ban_left("198.51.100.7", "carol") == 900


def test_unknown_and_junk_names_count_under_bounded_keys() -> None:
    anvil, _ = _anvil(auth_ban_threshold=2)
    huge = "  Admin" + "x" * 1_000_000
    anvil.auth_failed("192.0.2.1", huge)
    anvil.auth_failed("192.0.2.2", huge.upper())
    assert anvil.ban_left("192.0.2.3", huge) == 900
    assert login_key(huge) is not None and len(login_key(huge) or "") == LOGIN_KEY_MAX
    assert login_key("  Alice ") == login_key("ALICE") == "alice"
    assert login_key("   ") is None and login_key(None) is None
    assert login_key("Straße") == "strasse"


def test_success_forgets_the_login_but_not_the_ip() -> None:
    anvil, _ = _anvil(auth_ban_threshold=4)
    ip = "192.0.2.77"
    assert [anvil.auth_failed(ip, "erin") for _ in range(3)] == [1, 2, 4]
    anvil.auth_succeeded(ip, "Erin")
    # From a fresh IP the login starts from scratch...
    assert anvil.auth_failed("203.0.113.1", "erin") == 1
    # ...but the botnet IP that found one password keeps its count against other names.
    assert anvil.auth_failed(ip, "frank") == 8
    assert anvil.ban_left(ip) == 900
    assert anvil.ban_left("203.0.113.1", "erin") == 0.0


def test_failure_without_a_name_counts_the_ip_only() -> None:
    anvil, _ = _anvil(auth_ban_threshold=2)
    anvil.auth_failed("192.0.2.5", None)
    anvil.auth_failed("192.0.2.5", "")
    assert anvil.ban_left("192.0.2.5") == 900


# --- per-login sending limits ----------------------------------------------------------


def test_user_message_limit_and_recovery() -> None:
    anvil, clock = _anvil(user_message_rate=500, user_time_unit=3600)
    assert all(anvil.user_message("grace") for _ in range(500))
    assert not anvil.user_message("Grace ")  # the same login, normalised
    assert anvil.user_message("heidi")
    clock.advance(3600 + 600)
    assert anvil.user_message("grace")


def test_user_recipients_count_batches_all_or_nothing() -> None:
    anvil, clock = _anvil(user_recipient_rate=10, user_time_unit=3600)
    assert anvil.user_recipients("ivan", 6)
    assert not anvil.user_recipients("ivan", 5)
    assert anvil.user_recipients("ivan", 4)
    assert not anvil.user_recipients("ivan")
    assert anvil.user_recipients("ivan", 0)  # nothing to count
    clock.advance(3600 + 600)
    assert anvil.user_recipients("ivan", 10)


def test_user_limits_of_zero_mean_none() -> None:
    anvil, _ = _anvil(user_message_rate=0, user_recipient_rate=0)
    assert all(anvil.user_message("judy") for _ in range(5000))
    assert anvil.user_recipients("judy", 10**6)


# --- memory ------------------------------------------------------------------------------


def test_memory_stays_bounded_under_a_flood_of_distinct_ips_and_names() -> None:
    clock = FakeClock()
    tables: dict[str, RateTable] = {}

    def keep(name: str, time_unit: float, max_keys: int) -> RateStore:
        tables[name] = RateTable(time_unit, max_keys=max_keys)
        return tables[name]

    config = AnvilConfig(connection_rate=5, auth_ban_threshold=3, max_keys=2000)
    anvil = Anvil(config, clock, wall_clock=clock, rate_store=keep)
    for i in range(30_000):
        ip = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        anvil.connect(ip)
        anvil.auth_failed(ip, f"guess{i}")
    for name in ("connection", "auth failure ip", "auth failure login"):
        assert len(tables[name]) == 2000
    assert any("evicted" in line for line in anvil.statistics())
    # Time alone empties them as traffic goes on (a few idle keys per call).
    clock.advance(900 + 150)
    for i in range(1000):
        anvil.connect(f"172.16.{i >> 8}.{i & 255}")
    assert len(tables["connection"]) == 1000


def test_bans_are_bounded_and_expire() -> None:
    bans = BanList(max_keys=3)
    for i in range(5):
        bans.ban(f"k{i}", 100.0 + i)
    assert len(bans) == 3 and bans.evicted == 2
    assert bans.until("k0", 50.0) == 0.0 and bans.until("k4", 50.0) == 104.0
    bans.ban("k2", 200.0)  # a renewed ban moves to the back
    assert bans.until("k3", 103.5) == 0.0  # expired: dropped on sight
    assert bans.until("k2", 150.0) == 200.0
    assert len(bans) == 1


# --- statistics ------------------------------------------------------------------------


def test_statistics_report_the_maxima_and_reset() -> None:
    anvil, _ = _anvil(connection_rate=10, user_message_rate=5, auth_ban_threshold=2)
    for _ in range(3):
        anvil.connect("192.0.2.1")
    anvil.connect("192.0.2.2")
    for _ in range(12):
        anvil.connect("192.0.2.3\r\nfake log line")  # attacker text is escaped
    anvil.user_message("kim")
    anvil.auth_failed("192.0.2.4", "kim")
    anvil.auth_failed("192.0.2.4", "kim")
    lines = anvil.statistics()
    stamp = r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
    assert re.fullmatch(
        rf"statistics: max connection rate 10/60s for \(192\.0\.2\.3\\x0d\\x0afake log line\)"
        rf" at {stamp}",
        lines[0],
    )
    assert re.fullmatch(
        rf"statistics: max user message rate 1/3600s for \(kim\) at {stamp}", lines[1]
    )
    assert re.fullmatch(rf"statistics: max cache size 3 at {stamp}", lines[2])
    assert lines[3:] == [
        "statistics: refused 2 connection",
        "statistics: 2 auth failures, 2 auth bans",
    ]
    assert all("\n" not in line and "\r" not in line for line in lines)
    assert anvil.statistics() == []
