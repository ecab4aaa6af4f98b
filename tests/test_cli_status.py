"""``tenantctl status``: the registry at a glance, read from a real database.

Each test writes tenants through a real registry (a SQLite file or a
PostgreSQL schema of its own, see ``conftest.py``), then reads the screen
with click's runner or the installed ``tenantctl`` program.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from servers import COMMAND_TIMEOUT, TENANTCTL, tenantctl
from sqlalchemy import insert, make_url, text
from test_cli import error_line, succeeded

from dispatcher import TenantRegistry
from dispatcher.cli import cli
from dispatcher.models.tables import changes as change_table
from dispatcher.tenant import utcnow

Status = Callable[..., Result]

#: A PostgreSQL nobody listens on: port 1 refuses at once.
UNREACHABLE = "postgresql+psycopg://ops:s3cret-pw@127.0.0.1:1/registry"


@pytest.fixture
def status(database_url: str) -> Status:
    """Run ``tenantctl --database-url <this test's database> status ARGS...``."""

    def invoke(*args: str, url: str = database_url) -> Result:
        return CliRunner().invoke(
            cli, ["--database-url", url, "status", *args], prog_name="tenantctl"
        )

    return invoke


@pytest.fixture
def fleet(registry: TenantRegistry) -> TenantRegistry:
    """Five tenants: two disabled, two in maintenance (one of them disabled),
    and one whose maintenance has ended."""
    for slug in ("acme", "beta", "gamma", "delta", "eps"):
        registry.create_tenant(slug, owner_email=f"owner@{slug}.test")
    registry.disable_tenant("beta", "unpaid")
    registry.disable_tenant("gamma")
    registry.start_maintenance("acme")
    registry.start_maintenance("gamma")
    registry.start_maintenance("delta")
    registry.end_maintenance("delta")  # stores JSON null: no window
    return registry


def test_counts_by_status_and_maintenance(
    fleet: TenantRegistry, status: Status
) -> None:
    printed = json.loads(succeeded(status("--json")).stdout)

    assert printed["tenants"] == {
        "total": 5,
        "active": 3,
        "disabled": 2,
        "in_maintenance": 2,
    }


def test_the_screen(fleet: TenantRegistry, status: Status) -> None:
    newest = fleet.latest_generation()

    lines = succeeded(status("--changes", "3")).stdout.splitlines()

    assert lines[0] == f"database:  {fleet.url}"
    assert lines[1] == "schema:    0004, the newest"
    assert lines[2] == "tenants:   5 (3 active, 2 disabled); 2 in maintenance"
    assert re.fullmatch(
        rf"feed:      newest generation {newest}, {newest} changes kept"
        r" \(the oldest 1, written \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\)",
        lines[3],
    ), lines[3]
    assert lines[4] == ""
    assert lines[5].split() == ["GENERATION", "TIME", "SLUG", "OPERATION"]
    rows = [line.split() for line in lines[6:]]
    assert [(row[0], row[2], row[3]) for row in rows] == [
        (str(newest), "delta", "maintenance"),
        (str(newest - 1), "delta", "maintenance"),
        (str(newest - 2), "gamma", "maintenance"),
    ]


def test_json_has_the_screens_facts(fleet: TenantRegistry, status: Status) -> None:
    printed = json.loads(succeeded(status("--json", "--changes", "2")).stdout)

    assert set(printed) == {"database", "schema", "tenants", "feed", "changes"}
    assert printed["database"] == fleet.url
    assert printed["schema"] == {
        "revision": "0004",
        "newest": "0004",
        "state": "current",
    }
    assert set(printed["feed"]) == {
        "changes",
        "newest",
        "oldest",
        "oldest_at",
        "resync_below",
    }
    assert printed["feed"]["newest"] == fleet.latest_generation()
    assert [set(change) for change in printed["changes"]] == 2 * [
        {"generation", "changed_at", "slug", "operation"}
    ]
    assert [change["slug"] for change in printed["changes"]] == ["delta", "delta"]


def test_ten_changes_by_default(registry: TenantRegistry, status: Status) -> None:
    registry.create_tenant("acme", owner_email="o@acme.test")
    for i in range(11):
        registry.update_config("acme", {"i": i})

    printed = json.loads(succeeded(status("--json")).stdout)

    assert [change["generation"] for change in printed["changes"]] == list(
        range(12, 2, -1)
    )


def test_no_changes(registry: TenantRegistry, status: Status) -> None:
    result = succeeded(status())

    assert "tenants:   0 (0 active, 0 disabled); 0 in maintenance\n" in result.stdout
    assert "feed:      empty\n" in result.stdout
    assert result.stdout.endswith("\n\nno changes\n")


def test_changes_zero_shows_none(fleet: TenantRegistry, status: Status) -> None:
    assert (
        json.loads(succeeded(status("--json", "--changes", "0")).stdout)["changes"]
        is None
    )
    assert "GENERATION" not in succeeded(status("--changes", "0")).stdout


@pytest.mark.parametrize("value", ["1001", "-1", "ten", "", "1e3"])
def test_changes_out_of_range(
    fleet: TenantRegistry, status: Status, value: str
) -> None:
    line = error_line(status("--changes", value), 2)

    assert line == (f"Error: --changes {value!r} must be a whole number from 0 to 1000")


def test_control_characters_in_a_slug_are_escaped(
    registry: TenantRegistry, status: Status
) -> None:
    # The CLI refuses such a slug; raw SQL (or an older version) need not.
    with registry.database.write_connection() as connection:
        connection.execute(
            insert(change_table).values(
                slug="ev\x1b[2Jil\u202e", operation="created", changed_at=utcnow()
            )
        )

    result = succeeded(status())

    assert "\x1b" not in result.stdout
    assert "\u202e" not in result.stdout
    assert re.search(r"  ev\\x1b\[2Jil\\u202e  created$", result.stdout, re.M)
    printed = json.loads(succeeded(status("--json")).stdout)
    assert printed["changes"][0]["slug"] == "ev\x1b[2Jil\u202e"


def test_the_password_is_hidden(
    registry: TenantRegistry, database_url: str, backend: str, status: Status
) -> None:
    if backend != "postgresql":
        pytest.skip("a SQLite URL has no password")
    # The test server trusts loopback: it ignores the password, and so it
    # answers, and the screen must not show it.
    url = make_url(database_url).set(password="s3cret-pw")

    result = succeeded(status(url=url.render_as_string(hide_password=False)))

    assert "s3cret-pw" not in result.stdout
    assert result.stdout.startswith("database:  postgresql+psycopg://postgres:***@")


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_an_unreachable_database(status: Status, as_json: bool) -> None:
    result = status(*(["--json"] if as_json else []), url=UNREACHABLE)

    line = error_line(result, 1)
    assert line.startswith(
        "Error: the database postgresql+psycopg://ops:***@127.0.0.1:1/registry"
        " is unavailable: "
    )
    assert "s3cret-pw" not in result.output
    assert result.stdout == ""


def test_a_malformed_url_is_one_line(status: Status) -> None:
    result = status(url="postgresql+psycopg://ops:s3cret-pw@[::1/registry")

    assert error_line(result, 2).startswith("Error: ")
    assert "s3cret-pw" not in result.output


def test_an_unreachable_database_from_the_program(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(TENANTCTL), "--database-url", UNREACHABLE, "status"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )

    assert done.returncode == 1
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "is unavailable" in done.stderr
    assert "s3cret-pw" not in done.stderr


def test_an_unmigrated_database(
    database_url: str, backend: str, status: Status
) -> None:
    if backend == "sqlite":
        Path(make_url(database_url).database or "").touch()  # there, but empty

    result = status()

    line = error_line(result, 1)
    assert line.endswith("is not migrated; run 'tenantctl db upgrade'")
    assert result.stdout.splitlines()[1] == "schema:    not migrated"
    printed = json.loads(status("--json").stdout)
    assert printed["schema"] == {
        "revision": None,
        "newest": "0004",
        "state": "unmigrated",
    }
    assert (printed["tenants"], printed["feed"], printed["changes"]) == (None,) * 3


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path, status: Status) -> None:
    file = tmp_path / "nowhere.sqlite3"

    line = error_line(status(url=f"sqlite:///{file}"), 1)

    assert line == (
        f"Error: no registry at {file}: the file does not exist;"
        " run 'tenantctl db upgrade'"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_relative_sqlite_path_is_checked_where_it_is_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: Status
) -> None:
    monkeypatch.chdir(tmp_path)

    line = error_line(status(url="sqlite:///registry.sqlite3"), 1)

    assert f"no registry at {tmp_path / 'registry.sqlite3'}:" in line
    assert list(tmp_path.iterdir()) == []


def test_a_schema_behind_says_what_to_run(database_url: str, status: Status) -> None:
    with TenantRegistry(database_url) as registry:
        registry.migrate("0003")

    line = error_line(status(), 1)

    # 0004 adds the maintenance column this code counts.
    assert line.endswith(
        "(the schema is at 0003, behind 0004; run 'tenantctl db upgrade')"
    )


def test_a_schema_ahead_is_shown(registry: TenantRegistry, status: Status) -> None:
    with registry.database.write_connection() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    result = succeeded(status())

    assert (
        "schema:    9999, newer than 0004 (this tenantctl's newest)\n" in result.stdout
    )
    assert json.loads(status("--json").stdout)["schema"]["state"] == "ahead"


def test_the_program_after_tenantctl_writes(database_url: str) -> None:
    tenantctl(database_url, "db", "upgrade")
    with TenantRegistry(database_url) as registry:
        registry.create_tenant("acme", owner_email="o@acme.test")
        registry.create_tenant("beta", owner_email="o@beta.test")
    tenantctl(database_url, "disable", "beta")
    tenantctl(database_url, "maintenance", "on", "acme")

    printed = json.loads(tenantctl(database_url, "status", "--json").stdout)

    assert printed["tenants"] == {
        "total": 2,
        "active": 1,
        "disabled": 1,
        "in_maintenance": 1,
    }
    assert [(c["slug"], c["operation"]) for c in printed["changes"]] == [
        ("acme", "maintenance"),
        ("beta", "disabled"),
        ("beta", "created"),
        ("acme", "created"),
    ]
