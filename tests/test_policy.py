"""CachePolicy: the cache's settings, checked once, read from the environment."""

from __future__ import annotations

import math
from typing import Any

import pytest

from dispatcher import CachePolicy


def test_defaults() -> None:
    policy = CachePolicy()

    assert (policy.max_apps, policy.app_ttl, policy.poll_interval) == (1000, 3600, 1)
    # Served stale while the database is down for as long as an app lives.
    assert policy.stale_window == policy.app_ttl


def test_stale_window_follows_stale_if_error() -> None:
    assert CachePolicy(stale_if_error=0).stale_window == 0
    assert CachePolicy(app_ttl=10).stale_window == 10


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        pytest.param({"max_apps": 0}, ValueError, "max_apps must be at least 1, not 0"),
        pytest.param({"max_apps": 1.5}, TypeError, "max_apps must be an integer"),
        pytest.param({"max_apps": True}, TypeError, "max_apps must be an integer"),
        pytest.param({"negative_size": 0}, ValueError, "negative_size .* not 0"),
        pytest.param({"max_waiters": -1}, ValueError, "max_waiters .* not -1"),
        pytest.param({"app_ttl": 0}, ValueError, "app_ttl must be greater than 0"),
        pytest.param({"negative_ttl": -1}, ValueError, "negative_ttl .* not -1"),
        pytest.param({"failure_backoff": math.nan}, ValueError, "failure_backoff"),
        pytest.param({"app_ttl": "60"}, TypeError, "app_ttl must be a number"),
        pytest.param({"build_timeout": math.inf}, ValueError, "build_timeout .*finite"),
        pytest.param({"build_timeout": 0}, ValueError, "build_timeout .* than 0"),
        pytest.param({"poll_interval": math.inf}, ValueError, "poll_interval .*finite"),
        pytest.param({"poll_interval": 0}, ValueError, "poll_interval .* than 0"),
        pytest.param({"stale_if_error": -1}, ValueError, "stale_if_error .* not -1"),
    ],
)
def test_bad_settings_name_the_value_and_the_rule(
    settings: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        CachePolicy(**settings)


def test_replace_checks_like_a_new_one() -> None:
    policy = CachePolicy(max_apps=5)

    assert policy.replace(app_ttl=9) == CachePolicy(max_apps=5, app_ttl=9)
    with pytest.raises(ValueError, match="max_apps"):
        policy.replace(max_apps=0)


def test_every_setting_has_its_variable() -> None:
    environ = {
        "DISPATCHER_MAX_APPS": "7",
        "DISPATCHER_APP_TTL": "60.5",
        "DISPATCHER_NEGATIVE_SIZE": "8",
        "DISPATCHER_NEGATIVE_TTL": "2",
        "DISPATCHER_BUILD_TIMEOUT": "3",
        "DISPATCHER_MAX_WAITERS": "0",
        "DISPATCHER_FAILURE_BACKOFF": "4",
        "DISPATCHER_STALE_IF_ERROR": "0",
        "DISPATCHER_POLL_INTERVAL": "0.25",
    }

    assert CachePolicy.from_environ(environ) == CachePolicy(
        max_apps=7,
        app_ttl=60.5,
        negative_size=8,
        negative_ttl=2,
        build_timeout=3,
        max_waiters=0,
        failure_backoff=4,
        stale_if_error=0,
        poll_interval=0.25,
    )


def test_unset_and_empty_variables_keep_the_defaults() -> None:
    environ = {"DISPATCHER_MAX_APPS": " ", "OTHER": "1"}

    assert CachePolicy.from_environ(environ) == CachePolicy()


def test_poll_interval_zero_turns_following_off() -> None:
    policy = CachePolicy.from_environ({"DISPATCHER_POLL_INTERVAL": "0"})

    assert policy.poll_interval is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        pytest.param(
            {"DISPATCHER_MAX_APPS": "many"},
            "DISPATCHER_MAX_APPS='many' must be a whole number",
            id="not a number",
        ),
        pytest.param(
            {"DISPATCHER_MAX_APPS": "1.5"},
            "DISPATCHER_MAX_APPS='1.5' must be a whole number",
            id="not whole",
        ),
        pytest.param(
            {"DISPATCHER_APP_TTL": "soon"},
            "DISPATCHER_APP_TTL='soon' must be a number",
            id="not seconds",
        ),
        pytest.param(
            {"DISPATCHER_MAX_APPS": "0"},
            "DISPATCHER_MAX_APPS: max_apps must be at least 1, not 0",
            id="out of range",
        ),
        pytest.param(
            {"DISPATCHER_BUILD_TIMEOUT": "inf"},
            "DISPATCHER_BUILD_TIMEOUT: build_timeout must be a finite",
            id="infinite",
        ),
    ],
)
def test_bad_variables_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CachePolicy.from_environ(environ)
