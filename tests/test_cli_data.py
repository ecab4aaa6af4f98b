"""Tests of ``tenantctl data``, on real tenant data (SQLite files or schemas).

The deployment's TenantData is found through ``DISPATCHER_TENANT_DATA``
(``cli_data_probe:data``), as a deployment's would be. The contract is
tenantctl's: exit 0, 1 for a failure, 2 for bad input; an error is one line on
stderr, never a traceback; a refused command changes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cli_data_probe
import pytest
from cli_data_probe import Base, Item
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select

from dispatcher import Tenant, TenantRegistry
from dispatcher.cli import cli
from dispatcher.data import TenantData, schema_name

Tenantctl = Callable[..., Result]
Use = Callable[[TenantData], TenantData]

TENANTCTL_SCRIPT = Path(sys.executable).with_name("tenantctl")
TESTS = Path(__file__).resolve().parent
NAMED = "cli_data_probe:data"


@pytest.fixture
def tenantctl(database_url: str) -> Tenantctl:
    """Run ``tenantctl --database-url <this test's registry> ARGS...``."""
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None) -> Result:
        return runner.invoke(
            cli,
            ["--database-url", database_url, *args],
            input=stdin,
            prog_name="tenantctl",
        )

    return invoke


@pytest.fixture
def use(monkeypatch: pytest.MonkeyPatch) -> Iterator[Use]:
    """Make ``DISPATCHER_TENANT_DATA`` name the TenantData given."""
    made: list[TenantData] = []

    def use(data: TenantData) -> TenantData:
        monkeypatch.setenv("DISPATCHER_TENANT_DATA", NAMED)
        # Into the module's namespace, where its __getattr__ is never asked.
        monkeypatch.setitem(vars(cli_data_probe), "data", data)
        made.append(data)
        return data

    yield use
    for data in made:
        data.dispose()


def write_migrations(directory: Path, *revisions: str) -> Path:
    """A tenant migrations environment with ``revisions`` in a line."""
    (directory / "versions").mkdir(parents=True)
    (directory / "env.py").write_text(
        "from dispatcher.data_migrations import run_migrations\nrun_migrations()\n"
    )
    previous = None
    for revision in revisions:
        (directory / "versions" / f"{revision}_step.py").write_text(
            f"revision = {revision!r}\ndown_revision = {previous!r}\n"
            "branch_labels = None\ndepends_on = None\n\n\n"
            "def upgrade():\n    pass\n\n\ndef downgrade():\n    pass\n"
        )
        previous = revision
    return directory


@pytest.fixture
def data(
    use: Use,
    tenant_data_location: dict[str, Any],
    tmp_path: Path,
    registry: TenantRegistry,
) -> TenantData:
    """The deployment's tenant data, at tenant migration 0001, beside a
    migrated registry."""
    migrations = write_migrations(tmp_path / "v1", "0001")
    return use(
        TenantData(
            metadata=Base.metadata, migrations=migrations, **tenant_data_location
        )
    )


@pytest.fixture
def acme(data: TenantData, registry: TenantRegistry) -> Tenant:
    tenant = registry.create_tenant("acme", owner_email="o@acme.test")
    data.create(tenant)
    with data.sessionmaker_for(tenant)() as session, session.begin():
        session.add(Item(title="kept"))
    return tenant


def succeeded(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result


def failed(result: Result, code: int, *fragments: str) -> str:
    """The one line of stderr of a command that exited with ``code``."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def titles(data: TenantData, tenant: Tenant) -> list[str]:
    with data.sessionmaker_for(tenant)() as session:
        return list(session.scalars(select(Item.title).order_by(Item.id)))


# -- finding the tenant data ------------------------------------------------------

COMMANDS = [
    ("upgrade",),
    ("archives",),
    ("restore", "t_acme_00000000_archived_20260101000000", "acme"),
    ("purge", "--older-than", "1", "--yes"),
    ("move", "acme", "eu"),
    ("servers",),
    ("show", "acme"),
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: args[0])
def test_without_tenant_data_each_command_says_what_to_set(
    tenantctl: Tenantctl, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    monkeypatch.setenv("DISPATCHER_TENANT_DATA", "")
    failed(tenantctl("data", *args), 2, "set DISPATCHER_TENANT_DATA=module:attribute")


def test_a_tenant_data_that_cannot_be_loaded_is_bad_input(
    tenantctl: Tenantctl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCHER_TENANT_DATA", "no_such_module:data")
    failed(tenantctl("data", "archives"), 2, "'no_such_module:data'")


# -- show -------------------------------------------------------------------------


def test_show_says_where_the_data_is(
    tenantctl: Tenantctl, data: TenantData, acme: Tenant, registry: TenantRegistry
) -> None:
    shown = json.loads(succeeded(tenantctl("data", "show", "acme", "--json")).stdout)
    assert shown == {
        "slug": "acme",
        "server": "default",
        "schema": schema_name(acme),
        "exists": True,
        "revision": ["0001"],
    }
    lines = succeeded(tenantctl("data", "show", "acme")).stdout.splitlines()
    assert [line.split() for line in lines] == [
        ["slug:", "acme"],
        ["server:", "default"],
        ["schema:", schema_name(acme)],
        ["exists:", "yes"],
        ["revision:", "0001"],
    ]
    bare = registry.create_tenant("bare", owner_email="o@bare.test")
    shown = json.loads(succeeded(tenantctl("data", "show", "bare", "--json")).stdout)
    assert (shown["schema"], shown["exists"], shown["revision"]) == (
        schema_name(bare),
        False,
        None,
    )


def test_show_of_an_unknown_tenant_fails(
    tenantctl: Tenantctl, data: TenantData
) -> None:
    failed(tenantctl("data", "show", "nobody"), 1, "'nobody'")


def test_an_unreachable_data_server_is_one_line(
    tenantctl: Tenantctl, use: Use, registry: TenantRegistry
) -> None:
    use(
        TenantData(
            "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
            metadata=Base.metadata,
            connect_timeout=2,
        )
    )
    registry.create_tenant("acme", owner_email="o@acme.test")
    failed(tenantctl("data", "show", "acme"), 1, "a data server failed:")


# -- archives, restore, purge -----------------------------------------------------


def test_archives_restore_and_purge_round_trip(
    tenantctl: Tenantctl, data: TenantData, acme: Tenant
) -> None:
    assert succeeded(tenantctl("data", "archives")).stdout == "no archives\n"
    archive = data.archive(acme)
    assert archive is not None

    listed = json.loads(succeeded(tenantctl("data", "archives", "--json")).stdout)
    assert [(each["name"], each["original"]) for each in listed] == [
        (archive, schema_name(acme))
    ]
    lines = succeeded(tenantctl("data", "archives")).stdout.splitlines()
    assert lines[0].split() == ["ARCHIVE", "SERVER", "ORIGINAL", "ARCHIVED", "AT"]
    assert lines[1].split()[:3] == [archive, "default", schema_name(acme)]

    result = succeeded(tenantctl("data", "restore", archive, "acme"))
    assert result.stdout.splitlines() == [
        f"restored archive {archive!r} as the data of tenant 'acme' on data"
        " server 'default'",
        "it is at revision 0001 as archived; 'tenantctl data upgrade --only acme'"
        " upgrades it",
    ]
    assert titles(data, acme) == ["kept"]
    assert data.archives() == []

    # Restoring over existing data is refused, and changes nothing.
    again = data.archive(acme)
    assert again is not None
    data.create(acme)
    failed(tenantctl("data", "restore", again, "acme"), 1, "has data already")
    failed(tenantctl("data", "restore", "t_nope_archived_1", "acme"), 1, "'t_nope")
    assert [each.name for each in data.archives()] == [again]


def test_a_removed_tenant_is_brought_back_from_its_archive(
    tenantctl: Tenantctl, data: TenantData, acme: Tenant, registry: TenantRegistry
) -> None:
    """Re-created tenants get fresh data: archive it, then restore the old copy."""
    old = data.archive(acme)
    assert old is not None
    registry.delete_tenant("acme")
    again = registry.create_tenant("acme", owner_email="o@acme.test")
    data.create(again)
    failed(tenantctl("data", "restore", old, "acme"), 1, "has data already")
    fresh = succeeded(tenantctl("data", "archive", "acme")).stdout
    assert fresh.startswith("archived the data of tenant 'acme' as 't_acme_")
    succeeded(tenantctl("data", "restore", old, "acme"))
    assert titles(data, again) == ["kept"]


def test_another_tenants_archive_needs_saying_so(
    tenantctl: Tenantctl, data: TenantData, acme: Tenant, registry: TenantRegistry
) -> None:
    archive = data.archive(acme)
    assert archive is not None
    registry.create_tenant("mallory", owner_email="m@mallory.test")
    failed(
        tenantctl("data", "restore", archive, "mallory"),
        1,
        "archive of tenant 'acme'",
        "--other-tenant",
    )
    succeeded(tenantctl("data", "restore", archive, "mallory", "--other-tenant"))
    assert titles(data, registry.get_tenant("mallory")) == ["kept"]


def test_purge_asks_first(tenantctl: Tenantctl, data: TenantData, acme: Tenant) -> None:
    archive = data.archive(acme)
    assert archive is not None
    refused = tenantctl("data", "purge", "--older-than", "0", stdin="n\n")
    # No is the answer the question invited: not an error, as for remove.
    assert refused.exit_code == 0
    assert archive in refused.stdout  # what would go is listed
    assert "Delete these 1 archive(s) for good?" in refused.stderr
    assert refused.stdout.endswith("\nnothing purged\n")
    assert [each.name for each in data.archives()] == [archive]

    # Not old enough: nothing to ask about.
    kept = succeeded(tenantctl("data", "purge", "--older-than", "1"))
    assert kept.stdout == "no archive is older than 1 days\n"

    done = tenantctl("data", "purge", "--older-than", "0", stdin="y\n")
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[-1] == (
        f"purged archive {archive!r} on data server 'default'"
    )
    assert data.archives() == []


def test_purge_with_yes_does_not_ask(
    tenantctl: Tenantctl, data: TenantData, acme: Tenant
) -> None:
    archive = data.archive(acme)
    result = succeeded(tenantctl("data", "purge", "--older-than", "0", "--yes"))
    assert result.stdout == f"purged archive {archive!r} on data server 'default'\n"
    assert data.archives() == []


@pytest.mark.parametrize("days", ["-1", "1.5", "x", "", "1d", "٣"])
def test_purge_days_must_be_a_whole_number(
    tenantctl: Tenantctl, data: TenantData, acme: Tenant, days: str
) -> None:
    archive = data.archive(acme)
    failed(
        tenantctl("data", "purge", "--older-than", days, "--yes"),
        2,
        f"--older-than {days!r} must be a whole number of days, 0 or more",
    )
    assert [each.name for each in data.archives()] == [archive]


def test_purge_of_more_days_than_a_calendar_holds_purges_nothing(
    tenantctl: Tenantctl, data: TenantData, acme: Tenant
) -> None:
    data.archive(acme)
    days = "9" * 30
    result = succeeded(tenantctl("data", "purge", "--older-than", days, "--yes"))
    assert result.stdout == f"no archive is older than {days} days\n"
    assert len(data.archives()) == 1


# -- upgrade ----------------------------------------------------------------------


@pytest.fixture
def newer(
    use: Use, data: TenantData, tenant_data_location: dict[str, Any], tmp_path: Path
) -> TenantData:
    """The deployment after a release: its tenant migrations are at 0002."""
    migrations = write_migrations(tmp_path / "v2", "0001", "0002")
    return use(
        TenantData(
            metadata=Base.metadata, migrations=migrations, **tenant_data_location
        )
    )


def test_upgrade_only_one_tenant(
    tenantctl: Tenantctl, data: TenantData, registry: TenantRegistry, newer: TenantData
) -> None:
    acme = registry.create_tenant("acme", owner_email="o@acme.test")
    other = registry.create_tenant("other", owner_email="o@other.test")
    data.create(acme)
    data.create(other)
    result = succeeded(tenantctl("data", "upgrade", "--only", "acme"))
    assert result.stdout.splitlines() == [
        "tenant 'acme': upgraded from 0001 to 0002",
        "1 upgraded, 0 needed nothing, 0 failed",
    ]
    result = succeeded(tenantctl("data", "upgrade", "--only", "acme"))
    assert result.stdout.splitlines() == [
        "tenant 'acme': at 0002 already",
        "0 upgraded, 1 needed nothing, 0 failed",
    ]
    assert newer.revision(other) == ("0001",)


@pytest.fixture
def three(data: TenantData, registry: TenantRegistry) -> dict[str, Tenant]:
    """acme, bravo and charlie at 0001; the ledger has not heard of them."""
    made = {}
    for slug in ("acme", "bravo", "charlie"):
        made[slug] = registry.create_tenant(slug, owner_email=f"o@{slug}.test")
        data.create(made[slug])
    return made


def test_upgrade_only_several_tenants_and_exclude_others(
    tenantctl: Tenantctl,
    three: dict[str, Tenant],
    registry: TenantRegistry,
    newer: TenantData,
) -> None:
    result = succeeded(tenantctl("data", "upgrade", "--exclude", "charlie"))
    assert result.stdout.splitlines()[:2] == [
        "tenant 'acme': upgraded from 0001 to 0002",
        "tenant 'bravo': upgraded from 0001 to 0002",
    ]
    assert newer.revision(three["charlie"]) == ("0001",)
    result = succeeded(tenantctl("data", "upgrade", "--only", "Acme,charlie"))
    assert result.stdout.splitlines() == [
        "tenant 'acme': at 0002 already",
        "tenant 'charlie': upgraded from 0001 to 0002",
        "1 upgraded, 1 needed nothing, 0 failed",
    ]
    result = succeeded(
        tenantctl("data", "upgrade", "--only", "acme", "--only", "bravo")
    )
    assert result.stdout.splitlines()[-1] == "0 upgraded, 2 needed nothing, 0 failed"
    assert registry.data_ledger(behind="0002") == []


def test_upgrade_records_a_failing_tenant_and_goes_on(
    tenantctl: Tenantctl, data: TenantData, registry: TenantRegistry, newer: TenantData
) -> None:
    made = {
        slug: registry.create_tenant(slug, owner_email=f"o@{slug}.test")
        for slug in ("acme", "bare", "zeta")
    }
    data.create(made["acme"])
    data.create(made["zeta"])  # bare has no data: its upgrade fails
    result = tenantctl("data", "upgrade")
    failed(
        result,
        1,
        "1 tenant(s) failed ('bare'), each recorded with its error;"
        " the next run retries them",
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "tenant 'acme': upgraded from 0001 to 0002"
    # SQLite: "tenant 'bare' has no data"; PostgreSQL: "tenant schema ... does
    # not exist" (found by the upgrade's first query, not a query of its own).
    assert lines[1].startswith("tenant 'bare': failed: tenant ")
    assert "has no data" in lines[1] or "does not exist" in lines[1]
    assert lines[2:] == [
        "tenant 'zeta': upgraded from 0001 to 0002",
        "2 upgraded, 0 needed nothing, 1 failed",
    ]
    assert newer.revision(made["zeta"]) == ("0002",)
    [bare] = registry.data_ledger(behind="0002")
    assert bare.slug == "bare" and bare.error is not None
    # The next run tries bare only; without it, there is nothing left to do.
    result = tenantctl("data", "upgrade")
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == "0 upgraded, 0 needed nothing, 1 failed"
    registry.delete_tenant("bare")
    result = succeeded(tenantctl("data", "upgrade"))
    assert result.stdout == "nothing to upgrade: no tenant is behind 0002\n"


def test_upgrade_json_is_a_line_per_tenant_and_a_summary(
    tenantctl: Tenantctl, three: dict[str, Tenant], newer: TenantData
) -> None:
    result = succeeded(tenantctl("data", "upgrade", "--json"))
    *tenants, summary = [json.loads(line) for line in result.stdout.splitlines()]
    assert [
        (t["slug"], t["status"], t["from"], t["to"], t["error"]) for t in tenants
    ] == [
        (slug, "upgraded", ["0001"], ["0002"], None)
        for slug in ("acme", "bravo", "charlie")
    ]
    assert all(isinstance(t["seconds"], float) for t in tenants)
    assert summary["summary"]["upgraded"] == 3
    assert summary["summary"]["failed"] == 0
    again = succeeded(tenantctl("data", "upgrade", "--json"))
    assert json.loads(again.stdout)["summary"]["upgraded"] == 0


def test_upgrade_canary_stops_when_one_fails(
    tenantctl: Tenantctl, data: TenantData, registry: TenantRegistry, newer: TenantData
) -> None:
    made = {
        slug: registry.create_tenant(slug, owner_email=f"o@{slug}.test")
        for slug in ("acme", "bare", "charlie", "delta")
    }
    for slug in ("acme", "charlie", "delta"):
        data.create(made[slug])
    result = tenantctl("data", "upgrade", "--canary", "2")
    failed(
        result,
        1,
        "the canary failed ('bare'): stopped before the other 2 tenant(s),"
        " which are untouched",
    )
    assert result.stdout.splitlines()[-1] == (
        "1 upgraded, 0 needed nothing, 1 failed, 2 not tried"
    )
    for slug in ("charlie", "delta"):
        assert newer.revision(made[slug]) == ("0001",)
    entries = {entry.slug: entry for entry in registry.data_ledger()}
    assert (entries["charlie"].revision, entries["charlie"].target) == (None, None)
    # A canary that passes goes on with the rest.
    registry.delete_tenant("bare")
    result = succeeded(tenantctl("data", "upgrade", "--canary", "1"))
    assert result.stdout.splitlines() == [
        "tenant 'charlie': upgraded from 0001 to 0002",
        "tenant 'delta': upgraded from 0001 to 0002",
        "2 upgraded, 0 needed nothing, 0 failed",
    ]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param(
            ("--jobs", "0"), "--jobs '0' must be a whole number, 1 or more", id="jobs 0"
        ),
        pytest.param(("--jobs", "two"), "--jobs 'two'", id="jobs text"),
        pytest.param(
            ("--canary", "-1"),
            "--canary '-1' must be a whole number, 0 or more",
            id="canary -1",
        ),
        pytest.param(
            ("--only", "nobody"), "--only 'nobody' names no tenant", id="unknown only"
        ),
        pytest.param(
            ("--only", "acme,nobody"),
            "--only 'nobody' names no tenant",
            id="one unknown of several",
        ),
        pytest.param(
            ("--exclude", "nobody"),
            "--exclude 'nobody' names no tenant",
            id="unknown exclude",
        ),
        pytest.param(
            ("--only", "acme", "--exclude", "acme"),
            "--only and --exclude both name tenant 'acme'",
            id="conflict",
        ),
        pytest.param(("--revision", " "), "--revision ' '", id="blank revision"),
    ],
)
def test_upgrade_bad_input_changes_nothing(
    tenantctl: Tenantctl,
    three: dict[str, Tenant],
    registry: TenantRegistry,
    newer: TenantData,
    args: tuple[str, ...],
    fragment: str,
) -> None:
    failed(tenantctl("data", "upgrade", *args), 2, fragment)
    for slug, tenant in three.items():
        assert newer.revision(tenant) == ("0001",), slug
    assert {(e.revision, e.target) for e in registry.data_ledger()} == {(None, None)}


def test_upgrade_to_an_unknown_revision_fails(
    tenantctl: Tenantctl, newer: TenantData, acme: Tenant
) -> None:
    failed(tenantctl("data", "upgrade", "--revision", "nope"), 1, "'nope'")
    assert newer.revision(acme) == ("0001",)
    failed(tenantctl("data", "upgrade", "--revision", " "), 2, "--revision ' '")


def test_upgrade_to_a_named_revision(
    tenantctl: Tenantctl, newer: TenantData, acme: Tenant, registry: TenantRegistry
) -> None:
    result = succeeded(tenantctl("data", "upgrade", "--revision", "0001"))
    assert result.stdout.splitlines()[0] == "tenant 'acme': at 0001 already"
    assert registry.data_ledger(behind="0001") == []
    result = succeeded(tenantctl("data", "upgrade", "--revision", "0002"))
    assert result.stdout.splitlines()[0] == "tenant 'acme': upgraded from 0001 to 0002"


def test_upgrade_needs_migrations(
    tenantctl: Tenantctl, use: Use, tenant_data_location: dict[str, Any]
) -> None:
    use(TenantData(metadata=Base.metadata, **tenant_data_location))
    failed(tenantctl("data", "upgrade"), 1, "has no tenant migrations")


def test_upgrade_of_no_tenants(tenantctl: Tenantctl, data: TenantData) -> None:
    result = succeeded(tenantctl("data", "upgrade"))
    assert result.stdout == "nothing to upgrade: no tenant is behind 0001\n"


# -- servers and moves (two PostgreSQL databases stand for two servers) -------------


@pytest.fixture
def servers(
    use: Use, tenant_data_location: dict[str, Any], eu: Engine, registry: TenantRegistry
) -> TenantData:
    return use(
        TenantData(
            {"main": tenant_data_location["url"], "eu": eu.url},
            metadata=Base.metadata,
            registry=registry,
        )
    )


def test_servers_lists_each_server_and_its_tenants(
    tenantctl: Tenantctl, servers: TenantData, registry: TenantRegistry
) -> None:
    for slug, server in (("a", "main"), ("b", "eu"), ("c", "eu"), ("d", None)):
        registry.create_tenant(slug, owner_email=f"o@{slug}.test", data_server=server)
    registry.create_tenant("e", owner_email="o@e.test", data_server="gone")
    listed = json.loads(succeeded(tenantctl("data", "servers", "--json")).stdout)
    assert [
        (each["name"], each["tenants"], each["default"], each["configured"])
        for each in listed
    ] == [
        ("main", 2, True, True),  # d has no server recorded: the default's
        ("eu", 2, False, True),
        ("gone", 1, False, False),
    ]
    assert listed[1]["location"] == servers.servers.urls["eu"].render_as_string()
    lines = succeeded(tenantctl("data", "servers")).stdout.splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["SERVER", "TENANTS", "LOCATION"],
        ["main", "(default)", "2"],
        ["eu", "2", eu_location(servers)],
        ["gone", "(not", "configured)"],
    ]


def eu_location(data: TenantData) -> str:
    assert data.servers is not None
    return data.servers.urls["eu"].render_as_string()


def test_servers_of_one_location(
    tenantctl: Tenantctl, data: TenantData, acme: Tenant
) -> None:
    listed = json.loads(succeeded(tenantctl("data", "servers", "--json")).stdout)
    assert [(each["name"], each["tenants"], each["default"]) for each in listed] == [
        ("default", 1, True)
    ]


def test_move_switches_the_tenant_to_the_other_server(
    tenantctl: Tenantctl, servers: TenantData, registry: TenantRegistry, eu: Engine
) -> None:
    acme = servers.create(
        registry.create_tenant("acme", owner_email="o@acme.test", data_server="main")
    )
    with servers.sessionmaker_for(acme)() as session, session.begin():
        session.add(Item(title="kept"))
    result = succeeded(tenantctl("data", "move", "acme", "eu"))
    [archive] = servers.archives()
    assert result.stdout == (
        "moved tenant 'acme' from data server 'main' to 'eu' (1 rows); the old"
        f" copy is archive {archive.name!r} on 'main'\n"
    )
    moved = registry.get_tenant("acme")
    assert moved.data_server == "eu" and moved.is_active
    assert titles(servers, moved) == ["kept"]
    shown = json.loads(succeeded(tenantctl("data", "show", "acme", "--json")).stdout)
    assert (shown["server"], shown["exists"]) == ("eu", True)

    failed(tenantctl("data", "move", "acme", "eu"), 1, "on data server 'eu' already")
    failed(tenantctl("data", "move", "acme", "mars"), 1, "'mars'", "not configured")
    failed(tenantctl("data", "move", "nobody", "main"), 1, "'nobody'")
    assert registry.get_tenant("acme") == moved


def test_show_of_a_tenant_on_a_server_no_longer_configured(
    tenantctl: Tenantctl, servers: TenantData, registry: TenantRegistry
) -> None:
    registry.create_tenant("acme", owner_email="o@acme.test", data_server="gone")
    shown = json.loads(succeeded(tenantctl("data", "show", "acme", "--json")).stdout)
    assert (shown["server"], shown["configured"]) == ("gone", False)


def test_move_of_sqlite_files_is_refused(
    tenantctl: Tenantctl, use: Use, registry: TenantRegistry, tmp_path: Path
) -> None:
    data = use(TenantData("sqlite://", metadata=Base.metadata, directory=tmp_path))
    data.create(registry.create_tenant("acme", owner_email="o@acme.test"))
    failed(
        tenantctl("data", "move", "acme", "eu"),
        1,
        "moving is between PostgreSQL servers",
    )


# -- the installed script -----------------------------------------------------------


def test_the_installed_script_finds_the_data_and_never_shows_a_traceback(
    database_url: str, registry: TenantRegistry, tenant_data_location: dict[str, Any]
) -> None:
    environ = {
        **os.environ,
        "DISPATCHER_TENANT_DATA": NAMED,
        cli_data_probe.URL_VARIABLE: str(tenant_data_location["url"]),
        "PYTHONPATH": os.pathsep.join(
            [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    if "directory" in tenant_data_location:
        environ[cli_data_probe.DIRECTORY_VARIABLE] = str(
            tenant_data_location["directory"]
        )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(TENANTCTL_SCRIPT), "--database-url", database_url, "data", *args],
            env=environ,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listed = run("archives")
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "no archives\n", "")
    for args, code in ((("purge", "--older-than", "soon"), 2), (("show", "x"), 1)):
        completed = run(*args)
        assert completed.returncode == code, completed.stderr
        assert "Traceback" not in completed.stderr
        assert len(completed.stderr.splitlines()) == 1, completed.stderr


# -- upgrade --maintenance (last: it needs dispatcher.maintenance) -----------------


def maintenance_changes(registry: TenantRegistry, since: int) -> list[tuple[str, str]]:
    return [
        (change.slug, change.operation.value)
        for change in registry.changes_since(since)
        if change.operation.value in ("maintenance", "data_revision")
    ]


def test_upgrade_with_maintenance_takes_each_tenant_down_for_its_own_upgrade(
    tenantctl: Tenantctl,
    three: dict[str, Tenant],
    registry: TenantRegistry,
    newer: TenantData,
) -> None:
    generation = registry.latest_generation()
    succeeded(tenantctl("data", "upgrade", "--maintenance", "--only", "acme,bravo"))
    changes = maintenance_changes(registry, generation)
    # Each tenant: on, off, then the ledger's record of its new revision.
    for slug in ("acme", "bravo"):
        assert [op for who, op in changes if who == slug] == [
            "maintenance",
            "maintenance",
            "data_revision",
        ]
    # One tenant down at a time: acme is back before bravo goes down.
    assert [who for who, op in changes if op == "maintenance"] == [
        "acme",
        "acme",
        "bravo",
        "bravo",
    ]
    for slug in ("acme", "bravo", "charlie"):
        assert registry.get_tenant(slug).maintenance is None


def test_upgrade_with_maintenance_leaves_a_tenant_in_it_already_and_a_failed_one(
    tenantctl: Tenantctl,
    data: TenantData,
    registry: TenantRegistry,
    newer: TenantData,
) -> None:
    for slug in ("acme", "bare"):
        tenant = registry.create_tenant(slug, owner_email=f"o@{slug}.test")
        if slug == "acme":
            data.create(tenant)
    registry.start_maintenance("acme", message="moving house")
    generation = registry.latest_generation()
    result = tenantctl("data", "upgrade", "--maintenance")
    failed(result, 1, "1 tenant(s) failed ('bare')")
    lines = result.stdout.splitlines()
    assert lines[0] == "tenant 'acme': upgraded from 0001 to 0002"
    assert lines[1].endswith(
        "; left in maintenance mode (the run that upgrades it ends it, or"
        " 'tenantctl maintenance off bare')"
    )
    assert lines[2] == (
        "1 upgraded, 0 needed nothing, 1 failed; 1 left in maintenance mode: 'bare'"
    )
    acme = registry.get_tenant("acme")
    assert acme.maintenance is not None and acme.maintenance.message == "moving house"
    assert registry.get_tenant("bare").maintenance is not None
    assert maintenance_changes(registry, generation)[0] == ("bare", "maintenance")
    assert ("acme", "maintenance") not in maintenance_changes(registry, generation)
    shown = json.loads(succeeded(tenantctl("data", "show", "bare", "--json")).stdout)
    assert shown["maintenance"] == "data upgrade"
    shown = json.loads(succeeded(tenantctl("data", "show", "acme", "--json")).stdout)
    assert shown["maintenance"] == "operator"


def test_an_operator_taking_a_runs_window_keeps_it_through_the_next_run(
    tenantctl: Tenantctl,
    data: TenantData,
    registry: TenantRegistry,
    newer: TenantData,
) -> None:
    bare = registry.create_tenant("bare", owner_email="o@bare.test")
    failed(tenantctl("data", "upgrade", "--maintenance"), 1, "('bare')")
    succeeded(tenantctl("maintenance", "on", "bare", "--message", "mine now"))
    data.create(bare)  # at 0001: the next run upgrades it
    succeeded(tenantctl("data", "upgrade"))
    window = registry.get_tenant("bare").maintenance
    assert window is not None and window.message == "mine now"
    shown = json.loads(succeeded(tenantctl("data", "show", "bare", "--json")).stdout)
    assert shown["maintenance"] == "operator"


def test_upgrade_to_an_older_revision_claims_no_tenant_is_at_it(
    tenantctl: Tenantctl,
    three: dict[str, Tenant],
    registry: TenantRegistry,
    newer: TenantData,
) -> None:
    succeeded(tenantctl("data", "upgrade"))

    result = succeeded(
        tenantctl("data", "upgrade", "--only", "acme", "--revision", "0001")
    )

    # Alembic never downgrades on upgrade: acme stays at 0002, and says so.
    assert newer.revision(three["acme"]) == ("0002",)
    assert result.stdout.splitlines() == [
        "tenant 'acme': at 0002 already",
        "0 upgraded, 1 needed nothing, 0 failed",
    ]


def test_the_data_write_commands_print_one_json_object(
    tenantctl: Tenantctl, data: TenantData, acme: Tenant
) -> None:
    archived = json.loads(
        succeeded(tenantctl("data", "archive", "acme", "--json")).stdout
    )
    name = archived["archive"]
    assert archived == {"slug": "acme", "archive": name}
    assert [each.name for each in data.archives()] == [name]

    restored = json.loads(
        succeeded(tenantctl("data", "restore", name, "acme", "--json")).stdout
    )
    assert (restored["archive"], restored["slug"]) == (name, "acme")

    again = data.archive(acme)
    purged = json.loads(
        succeeded(
            tenantctl("data", "purge", "--older-than", "0", "--yes", "--json")
        ).stdout
    )
    assert [each["name"] for each in purged["purged"]] == [again]
    assert data.archives() == []
