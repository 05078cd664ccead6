"""SchedulerConfig.from_settings: table parameters, per-transport overrides, bad values."""

from __future__ import annotations

import pytest

from ironpost.config.diagnostics import ConfigError
from ironpost.config.settings import Settings, build_settings
from ironpost.config.syntax import Entry
from ironpost.scheduler import FeedbackRule, SchedulerConfig, TransportOverride


def _settings(**values: str) -> Settings:
    entries = [Entry(k, v, "main.cf", n) for n, (k, v) in enumerate(values.items(), 1)]
    settings, diags = build_settings(entries, base=None)
    assert not [d for d in diags if d.is_error], diags
    return settings


def test_defaults_match_the_parameter_table() -> None:
    cfg = SchedulerConfig.from_settings(_settings())
    assert cfg.queue_run_delay == 300
    assert (cfg.minimal_backoff_time, cfg.maximal_backoff_time) == (300, 4000)
    assert cfg.maximal_queue_lifetime == cfg.bounce_queue_lifetime == 5 * 86400
    assert cfg.delay_warning_time == 4 * 3600
    assert cfg.initial_destination_concurrency == 5
    assert cfg.default_destination_concurrency_limit == 20
    assert cfg.default_destination_recipient_limit == 50
    assert cfg.default_process_limit == 100
    assert cfg.transport_retry_time == 60
    assert cfg.default_destination_concurrency_failed_cohort_limit == 1
    assert str(cfg.default_destination_concurrency_positive_feedback) == "1/concurrency"
    # The smtp/relay/lmtp rows default to the default_* values: no effective override.
    for transport in ("smtp", "relay", "lmtp"):
        assert cfg.limits(transport) == cfg.limits("any-other-transport")
    assert cfg.startup_spread == 60


def test_explicit_values_and_units() -> None:
    cfg = SchedulerConfig.from_settings(
        _settings(
            minimal_backoff_time="10m",
            maximal_backoff_time="2h",
            maximal_queue_lifetime="3",  # days, Postfix's unit for this parameter
            delay_warning_time="0",
            default_process_limit="7",
            queue_run_delay="20s",
        )
    )
    assert cfg.minimal_backoff_time == 600
    assert cfg.maximal_backoff_time == 7200
    assert cfg.maximal_queue_lifetime == 3 * 86400
    assert cfg.delay_warning_time == 0
    assert cfg.default_process_limit == 7
    assert cfg.startup_spread == 20


def test_per_transport_overrides_and_feedback_knobs() -> None:
    cfg = SchedulerConfig.from_settings(
        _settings(
            smtp_destination_concurrency_limit="4",
            smtp_destination_recipient_limit="$default_destination_recipient_limit",
            lmtp_destination_recipient_limit="1",
            relay_initial_destination_concurrency="2",
            default_destination_concurrency_failed_cohort_limit="10",
            default_destination_concurrency_positive_feedback="1",
            smtp_destination_concurrency_negative_feedback="0.5/concurrency",
        )
    )
    assert cfg.default_destination_concurrency_failed_cohort_limit == 10
    assert cfg.default_destination_concurrency_positive_feedback == FeedbackRule(1, False)
    assert cfg.transport_overrides["smtp"] == TransportOverride(
        concurrency_limit=4, recipient_limit=50, negative_feedback=FeedbackRule(0.5, True)
    )
    smtp = cfg.limits("smtp")
    assert (smtp.initial_concurrency, smtp.concurrency_limit, smtp.recipient_limit) == (4, 4, 50)
    assert cfg.limits("lmtp").recipient_limit == 1
    assert cfg.limits("lmtp").concurrency_limit == 20
    assert cfg.limits("relay").initial_concurrency == 2
    assert cfg.limits("unknown").failed_cohort_limit == 10


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # Names outside the parameter table (any master.cf transport) are checked here;
        # smtp_/relay_/lmtp_ rows are checked by the config loader with the same line.
        ("pipe_destination_concurrency_limit", "lots"),
        ("pipe_destination_concurrency_limit", "-1"),
        ("default_destination_concurrency_positive_feedback", "2"),
        ("smtp_destination_concurrency_negative_feedback", "1/recipient"),
    ],
)
def test_bad_values_name_their_line(name: str, value: str) -> None:
    settings = _settings(myorigin="example.com", **{name: value})
    with pytest.raises(ConfigError) as info:
        SchedulerConfig.from_settings(settings)
    assert f"main.cf:2: error: {name}: " in str(info.value)


def test_tuning_fields() -> None:
    cfg = SchedulerConfig.from_settings(_settings(), backoff_jitter=0.2, max_destinations=5)
    assert cfg.backoff_jitter == 0.2
    assert cfg.max_destinations == 5
    with pytest.raises(TypeError):
        SchedulerConfig.from_settings(_settings(), queue_run_delay=1)  # a main.cf name
    with pytest.raises(TypeError):
        SchedulerConfig.from_settings(_settings(), no_such_field=1)


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("1/concurrency", FeedbackRule(1, True)),
        ("1 / concurrency", FeedbackRule(1, True)),
        ("0.25", FeedbackRule(0.25, False)),
        ("1", FeedbackRule(1, False)),
    ],
)
def test_feedback_syntax(text: str, rule: FeedbackRule) -> None:
    assert FeedbackRule.parse(text) == rule
    assert FeedbackRule.parse(str(rule)) == rule


@pytest.mark.parametrize("text", ["0", "1.5", "", "concurrency", "1/window", "-1"])
def test_bad_feedback(text: str) -> None:
    with pytest.raises(ValueError):
        FeedbackRule.parse(text)
