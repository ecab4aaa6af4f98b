"""Review of issue 13 (fleet operations): each test shows a defect found in
review, fixed in the commit that added it."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_cli_data
import test_fleet
from cli_data_probe import Base
from click.testing import CliRunner
from sqlalchemy import make_url, text
from test_cli_data import Tenantctl, Use, write_migrations
from test_fleet import (
    environment,
    json_lines,
    put_item,
    stopped_at_the_gate,
    upgrade_args,
)
from werkzeug.exceptions import NotFound
from werkzeug.test import Client

from dispatcher import TenantRegistry
from dispatcher.answers import TenantInMaintenance
from dispatcher.cli import cli
from dispatcher.data import TenantData
from dispatcher.fleet import FleetUpgrade, Outcome, Status
from dispatcher.ledger import DataResult
from dispatcher.maintenance import BYPASS_PATH
from dispatcher.maintenance_gate import MaintenanceGate
from dispatcher.retention import FeedRetention, parse_duration

# tenantctl (CliRunner on this test's registry) and use (the deployment's data).
tenantctl = test_cli_data.tenantctl
use = test_cli_data.use


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


# -- --maintenance and a window the operator opened after the run started ---------


@pytest.fixture
def behind_fleet(
    registry: TenantRegistry, tenant_data_location: dict[str, Any], tmp_path: Path
) -> Iterator[TenantData]:
    """Tenants t1 and t2 with data at 0001, recorded so; the data at 0002."""
    made = TenantData(
        metadata=Base.metadata,
        migrations=write_migrations(tmp_path / "v1", "0001"),
        registry=registry,
        **tenant_data_location,
    )
    newer = TenantData(
        metadata=Base.metadata,
        migrations=write_migrations(tmp_path / "v2", "0001", "0002"),
        **tenant_data_location,
    )
    try:
        for slug in ("t1", "t2"):
            made.create(registry.create_tenant(slug, owner_email=f"o@{slug}.test"))
        yield newer
    finally:
        made.dispose()
        newer.dispose()


def test_maintenance_an_operator_started_during_the_run_is_left_alone(
    registry: TenantRegistry, behind_fleet: TenantData
) -> None:
    fleet = FleetUpgrade(behind_fleet, registry, maintenance=True)
    entries = fleet.behind()  # read as the run starts: t1 not in maintenance
    registry.start_maintenance("t1", message="Back at 14:00")
    summary = fleet.run(entries)
    assert summary.counts[Status.UPGRADED] == 2
    window = registry.get_tenant("t1").maintenance
    assert window is not None, "the run ended the operator's maintenance"
    assert window.message == "Back at 14:00"
    assert registry.get_tenant("t2").maintenance is None


# -- --jobs beyond the tenants to upgrade -----------------------------------------


def test_a_run_forks_no_more_jobs_than_it_has_tenants(
    registry: TenantRegistry, behind_fleet: TenantData
) -> None:
    """--jobs 64 with two tenants behind forks two processes, not 64 (forked
    pools start every worker at once)."""
    fleet = FleetUpgrade(behind_fleet, registry, jobs=64)
    children: list[int] = []

    def report(outcome: Outcome) -> None:
        children.append(len(multiprocessing.active_children()))

    summary = fleet.run(fleet.behind(), report=report)
    assert summary.counts[Status.UPGRADED] == 2
    assert max(children) <= 2


# -- restoring an archive older than the data it replaces --------------------------


def test_a_restored_archive_is_upgraded_by_the_next_run(
    tenantctl: Tenantctl,
    use: Use,
    registry: TenantRegistry,
    tenant_data_location: dict[str, Any],
    tmp_path: Path,
) -> None:
    """acme's data archived at 0001, the ledger at 0002 (data created anew and
    archived), the old archive restored: the ledger must say 0001, or no
    fleet run ever upgrades it."""
    acme = registry.create_tenant("acme", owner_email="o@acme.test")
    old = TenantData(
        metadata=Base.metadata,
        migrations=write_migrations(tmp_path / "v1", "0001"),
        **tenant_data_location,
    )
    try:
        old.create(acme)
        archive = old.archive(acme)
    finally:
        old.dispose()
    assert archive is not None
    new = use(
        TenantData(
            metadata=Base.metadata,
            migrations=write_migrations(tmp_path / "v2", "0001", "0002"),
            registry=registry,
            **tenant_data_location,
        )
    )
    # As acme's data created anew at 0002 and archived again records it.
    registry.record_data_results([DataResult("acme", ("0002",))])

    restored = tenantctl("data", "restore", archive, "acme")
    assert restored.exit_code == 0, restored.output
    assert new.revision(acme) == ("0001",)
    upgraded = tenantctl("data", "upgrade", "--only", "acme")
    assert upgraded.exit_code == 0, upgraded.output
    assert "tenant 'acme': upgraded from 0001 to 0002" in upgraded.output
    assert new.revision(acme) == ("0002",)


# -- two runs upgrading one tenant at once -----------------------------------------


def test_a_run_upgrading_a_tenant_another_run_has_in_flight_waits_for_it(
    database_url: str,
    backend: str,
    registry: TenantRegistry,
    behind_fleet: TenantData,
    tenant_data_location: dict[str, Any],
    tmp_path: Path,
) -> None:
    """Two 'tenantctl data upgrade' runs at once: the second finds t1 being
    upgraded by the first (its transaction open here), waits for it, and finds
    it at 0002, instead of replaying 0002 and failing (and recording an error)
    once the first commits."""
    if backend != "postgresql":
        pytest.skip("a tenant's schema is upgraded under a row lock on PostgreSQL")
    migrations = behind_fleet.migrations
    assert migrations is not None
    t1 = registry.get_tenant("t1")
    application = make_url(tenant_data_location["url"]).query["application_name"]
    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"
        " AND wait_event_type = 'Lock'"
    )
    gate = tmp_path / "gate"
    gate.mkdir()
    environ = environment(tenant_data_location, tmp_path / "v2", gate)
    engine = behind_fleet.engine_for(t1)
    with engine.connect() as watcher, engine.begin() as first:
        migrations.upgrade_from(first, behind_fleet.schema_name(t1))
        second = subprocess.Popen(
            upgrade_args(database_url, "--only", "t1", "--json"),
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            # pg_stat_activity is read once per transaction: one per look.
            while not watcher.execute(waiting, {"name": application}).scalar():
                watcher.rollback()
                assert second.poll() is None, second.communicate()
                assert time.monotonic() < deadline, "the second run never waited"
                time.sleep(0.05)
        except BaseException:
            second.kill()
            second.wait()
            raise
    stdout, stderr = second.communicate(timeout=60)
    assert second.returncode == 0, stderr
    outcomes, summary = json_lines(stdout)
    assert outcomes["t1"]["status"] == "current"
    [entry] = [each for each in registry.data_ledger() if each.slug == "t1"]
    assert (entry.revision, entry.target, entry.error) == (("0002",), None, None)


# -- a spent bypass token replayed -------------------------------------------------


def test_a_spent_bypass_token_replayed_never_reaches_the_registry_again(
    registry: TenantRegistry,
) -> None:
    """A one-time token seen once (spent or refused) is refused by the gate
    itself: replaying a leaked link costs no write transaction per request."""
    registry.create_tenant("acme", owner_email="o@acme.test")
    tenant, token = registry.start_maintenance("acme")
    asked: list[str] = []

    def redeem(slug: str, token: str) -> bool:
        asked.append(token)
        return registry.redeem_bypass(slug, token)

    gate = MaintenanceGate(tenant, NotFound, TenantInMaintenance(), redeem)
    client = Client(gate)
    assert client.get(BYPASS_PATH + token).status_code == 303
    for _ in range(3):
        assert client.get(BYPASS_PATH + token).status_code == 403
    assert asked == [token]


# -- Ctrl-C during a tenant's upgrade with --maintenance ---------------------------

fleet = test_fleet.fleet
releases = test_fleet.releases


def test_ctrl_c_with_maintenance_and_one_job_leaves_no_tenant_in_maintenance(
    fleet: Any,
    registry: TenantRegistry,
    database_url: str,
    tenant_data_location: dict[str, Any],
    releases: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """One job: the interrupt lands in t3's migration, which rolls back; t3's
    data is at its old revision, and the window the run opened for it ends
    (else t3 answers 503 until someone notices, and the next run, finding it
    in maintenance, takes the window for the operator's and keeps it)."""
    data, tenants = fleet
    put_item(data, tenants["t3"], "block")
    gate = tmp_path / "gate"
    gate.mkdir()
    environ = environment(tenant_data_location, releases[1], gate)
    with stopped_at_the_gate(
        database_url, environ, gate, "--jobs", "1", "--maintenance"
    ) as process:
        assert registry.get_tenant("t3").maintenance is not None
        os.kill(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert data.revision(tenants["t3"]) == ("0001",)
    assert registry.get_tenant("t3").maintenance is None
