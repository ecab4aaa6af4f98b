"""Review of issue 13 (fleet operations): each test shows a defect found in
review, fixed in the commit that added it."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner

from dispatcher import TenantRegistry
from dispatcher.cli import cli
from dispatcher.retention import FeedRetention, parse_duration


@pytest.fixture
def fed(database_url: str) -> TenantRegistry:
    registry = TenantRegistry(database_url, retention=None)
    registry.migrate()
    registry.create_tenant("acme", owner_email="o@acme.test")
    registry.update_config("acme", {"i": 1})
    return registry


# -- a duration or count too large for a date or the database ---------------------


@pytest.mark.parametrize("text", ["9999999999999d", "99999999999999999999s"])
def test_a_duration_too_long_for_a_timedelta_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_a_max_age_reaching_before_year_one_prunes_by_count_only(
    fed: TenantRegistry,
) -> None:
    retention = FeedRetention(max_age=dt.timedelta(days=1_000_000), max_changes=1)
    pruned = fed.prune_feed(retention)
    assert pruned.removed == 1  # the older of two changes, by count
    fed.close()


def test_a_max_changes_beyond_the_database_integers_is_refused() -> None:
    with pytest.raises(ValueError, match="max_changes"):
        FeedRetention(max_changes=2**64)


@pytest.mark.parametrize(
    ("args", "environ", "named"),
    [
        pytest.param(["--max-age", "9999999999999d"], {}, "9999999999999d", id="age"),
        pytest.param(["--max-age", "1000000d"], {}, None, id="age before year one"),
        pytest.param(
            ["--max-changes", "99999999999999999999"],
            {},
            "99999999999999999999",
            id="count",
        ),
        pytest.param(
            [],
            {"DISPATCHER_FEED_MAX_AGE": "9999999999999d"},
            "DISPATCHER_FEED_MAX_AGE",
            id="age variable",
        ),
        pytest.param(
            [],
            {"DISPATCHER_FEED_MAX_CHANGES": "99999999999999999999"},
            "DISPATCHER_FEED_MAX_CHANGES",
            id="count variable",
        ),
    ],
)
def test_feed_prune_with_huge_values_is_one_line_or_works(
    fed: TenantRegistry,
    database_url: str,
    args: list[str],
    environ: dict[str, str],
    named: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable, value in environ.items():
        monkeypatch.setenv(variable, value)
    before = fed.changes_since(0)
    result = CliRunner().invoke(
        cli, ["--database-url", database_url, "feed", "prune", *args]
    )
    assert "Traceback" not in result.output, result.output
    assert not isinstance(result.exception, OverflowError), result.exception
    if named is None:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 2, result.output
        assert named in result.output
        assert fed.changes_since(0) == before
    fed.close()
