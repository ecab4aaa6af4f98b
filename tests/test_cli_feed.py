"""``tenantctl feed``: prune the change feed now and show it, as the real program."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, update
from test_cli import TENANTCTL_SCRIPT

from dispatcher import TenantRegistry
from dispatcher.cli import cli
from dispatcher.models.tables import changes as change_table
from dispatcher.tenant import utcnow


@pytest.fixture
def writer(database_url: str) -> Iterator[TenantRegistry]:
    """A migrated registry holding six changes, the first three 30 days old."""
    registry = TenantRegistry(database_url, retention=None)
    registry.migrate()
    registry.create_tenant("acme", owner_email="o@acme.test")
    for i in range(5):
        registry.update_config("acme", {"i": i})
    old = [change.generation for change in registry.changes_since(0)][:3]
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                update(change_table)
                .where(change_table.c.generation.in_(old))
                .values(changed_at=utcnow() - dt.timedelta(days=30))
            )
    finally:
        engine.dispose()
    yield registry
    registry.close()


def tenantctl(
    database_url: str, cwd: Path, *args: str, **environ: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TENANTCTL_SCRIPT), "--database-url", database_url, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **environ},
        timeout=60,
        check=False,
    )


def generations(registry: TenantRegistry) -> list[int]:
    return [change.generation for change in registry.changes_since(0)]


def test_prune_by_count_as_json(
    writer: TenantRegistry, database_url: str, tmp_path: Path
) -> None:
    before = generations(writer)

    done = tenantctl(
        database_url, tmp_path, "feed", "prune", "--max-changes", "2", "--json"
    )

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    printed = json.loads(done.stdout)
    assert printed["removed"] == 4
    assert (printed["changes"], printed["oldest"], printed["newest"]) == (
        2,
        before[-2],
        before[-1],
    )
    assert printed["resync_below"] == before[-3]
    assert dt.datetime.fromisoformat(printed["oldest_at"]).tzinfo is not None
    assert generations(writer) == before[-3:]


def test_prune_by_age(
    writer: TenantRegistry, database_url: str, tmp_path: Path
) -> None:
    before = generations(writer)

    done = tenantctl(database_url, tmp_path, "feed", "prune", "--max-age", "7d")

    assert done.returncode == 0, done.stderr
    assert re.fullmatch(
        rf"removed 3 changes; kept 3 changes, generations {before[3]} to"
        rf" {before[-1]}, the oldest written \S+; a process behind generation"
        rf" {before[2]} resynchronises\n",
        done.stdout,
    ), done.stdout
    assert generations(writer) == before[2:]


def test_prune_reads_the_servers_settings(
    writer: TenantRegistry, database_url: str, tmp_path: Path
) -> None:
    done = tenantctl(
        database_url,
        tmp_path,
        "feed",
        "prune",
        "--json",
        DISPATCHER_FEED_MAX_CHANGES="1",
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == 5


@pytest.mark.parametrize(
    ("args", "environ", "message"),
    [
        pytest.param(
            ["--max-age", "-1d"], {}, "--max-age: duration '-1d' must be", id="negative"
        ),
        pytest.param(
            ["--max-age", "soon"], {}, "--max-age: duration 'soon'", id="unparseable"
        ),
        pytest.param(["--max-age", "0h"], {}, "longer than zero", id="zero age"),
        pytest.param(
            ["--max-changes", "0"], {}, "--max-changes '0' must be", id="zero changes"
        ),
        pytest.param(["--max-changes", "-3"], {}, "'-3'", id="negative changes"),
        pytest.param(["--max-changes", "many"], {}, "'many'", id="not a number"),
        pytest.param(
            [],
            {"DISPATCHER_FEED_MAX_AGE": "7 days"},
            "DISPATCHER_FEED_MAX_AGE: duration '7 days'",
            id="bad setting",
        ),
    ],
)
def test_bad_input_changes_nothing(
    writer: TenantRegistry,
    database_url: str,
    tmp_path: Path,
    args: list[str],
    environ: dict[str, str],
    message: str,
) -> None:
    before = generations(writer)

    done = tenantctl(database_url, tmp_path, "feed", "prune", *args, **environ)

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("Error: ")
    assert message in done.stderr
    assert generations(writer) == before


def test_show(writer: TenantRegistry, database_url: str) -> None:
    before = generations(writer)
    runner = CliRunner()

    shown = runner.invoke(
        cli, ["--database-url", database_url, "feed", "show", "--json"]
    )
    text = runner.invoke(cli, ["--database-url", database_url, "feed", "show"])

    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output) | {"oldest_at": None} == {
        "changes": 6,
        "newest": before[-1],
        "oldest": before[0],
        "oldest_at": None,
        "resync_below": None,
    }
    assert text.output.startswith(f"kept 6 changes, generations {before[0]} to ")
    assert generations(writer) == before


def test_show_an_empty_feed(registry: TenantRegistry, database_url: str) -> None:
    shown = CliRunner().invoke(cli, ["--database-url", database_url, "feed", "show"])

    assert (shown.exit_code, shown.output) == (0, "the feed is empty\n")


def test_tenantctl_writes_prune_with_the_servers_retention(
    writer: TenantRegistry, database_url: str, tmp_path: Path
) -> None:
    # A process's first write prunes: tenantctl's must keep what the server
    # keeps (DISPATCHER_FEED_*), not the library's defaults.
    done = tenantctl(
        database_url,
        tmp_path,
        "config",
        "set",
        "acme",
        "plan",
        "pro",
        DISPATCHER_FEED_MAX_CHANGES="2",
    )

    assert done.returncode == 0, done.stderr
    kept = [c for c in writer.changes_since(0) if c.operation.value != "resync"]
    assert len(kept) == 2


def test_tenantctl_refuses_a_bad_retention_setting(
    writer: TenantRegistry, database_url: str, tmp_path: Path
) -> None:
    before = generations(writer)

    done = tenantctl(
        database_url,
        tmp_path,
        "config",
        "set",
        "acme",
        "plan",
        "pro",
        DISPATCHER_FEED_MAX_AGE="soon",
    )

    assert done.returncode == 2
    assert "DISPATCHER_FEED_MAX_AGE" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert generations(writer) == before
