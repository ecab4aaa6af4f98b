"""Fleet upgrades with real ``tenantctl`` processes: parallel jobs, failures
recorded and skipped, and a run killed mid-way (SIGKILL) that leaves every
tenant at its old or new revision, the ledger true, and the next run finishing.

The tenant migration ``0002`` (``fleet_probe.GATED_REVISION``) waits at a gate
in a tenant holding an item "block", so the kill lands while that tenant's
upgrade is in flight, whatever the machine's speed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fleet_probe
import pytest
from cli_data_probe import Base, Item
from test_cli_data import write_migrations

from dispatcher import Tenant, TenantRegistry
from dispatcher.changes import Operation
from dispatcher.data import TenantData
from dispatcher.data_migrations import TenantMigrations
from dispatcher.fleet import Status
from dispatcher.ledger import parse_revision
from dispatcher.maintenance import DATA_UPGRADE

TENANTCTL = Path(sys.executable).with_name("tenantctl")
TESTS = Path(__file__).resolve().parent
SLUGS = ["t1", "t2", "t3", "t4", "t5", "t6"]


@pytest.fixture
def releases(tmp_path: Path) -> tuple[Path, Path]:
    """The migrations at 0001 (where tenants are made) and at 0002 (gated)."""
    v1 = write_migrations(tmp_path / "v1", "0001")
    v2 = write_migrations(tmp_path / "v2", "0001")
    (v2 / "versions" / "0002_gated.py").write_text(fleet_probe.GATED_REVISION)
    return v1, v2


@pytest.fixture
def fleet(
    registry: TenantRegistry,
    tenant_data_location: dict[str, Any],
    releases: tuple[Path, Path],
) -> Any:
    """Six tenants at 0001, recorded so in the ledger; the data at 0002."""
    v1, v2 = releases
    made = TenantData(
        metadata=Base.metadata, migrations=v1, registry=registry, **tenant_data_location
    )
    newer = TenantData(metadata=Base.metadata, migrations=v2, **tenant_data_location)
    tenants = {}
    try:
        for slug in SLUGS:
            tenant = registry.create_tenant(slug, owner_email=f"o@{slug}.test")
            made.create(tenant)
            tenants[slug] = tenant
        yield newer, tenants
    finally:
        made.dispose()
        newer.dispose()


def put_item(data: TenantData, tenant: Tenant, title: str) -> None:
    with data.sessionmaker_for(tenant)() as session, session.begin():
        session.add(Item(title=title))


def environment(
    tenant_data_location: dict[str, Any], migrations: Path, gate: Path
) -> dict[str, str]:
    environ = {
        **os.environ,
        "DISPATCHER_TENANT_DATA": "fleet_probe:data",
        fleet_probe.URL_VARIABLE: str(tenant_data_location["url"]),
        fleet_probe.MIGRATIONS_VARIABLE: str(migrations),
        fleet_probe.GATE_VARIABLE: str(gate),
        "PYTHONPATH": os.pathsep.join(
            [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    if "directory" in tenant_data_location:
        environ[fleet_probe.DIRECTORY_VARIABLE] = str(tenant_data_location["directory"])
    return environ


def upgrade_args(database_url: str, *args: str) -> list[str]:
    return [str(TENANTCTL), "--database-url", database_url, "data", "upgrade", *args]


@contextmanager
def stopped_at_the_gate(
    database_url: str, environ: dict[str, str], gate: Path, *args: str
) -> Iterator[subprocess.Popen[str]]:
    """A ``data upgrade`` run with ``args``, once t3's migration waits at
    ``gate``; killed after the block if it still runs."""
    process = subprocess.Popen(
        upgrade_args(database_url, *args),
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (gate / "reached").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "t3's upgrade never started"
            time.sleep(0.02)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def run(
    database_url: str, environ: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        upgrade_args(database_url, *args),
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def json_lines(stdout: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    lines = [json.loads(line) for line in stdout.splitlines()]
    *tenants, summary = lines
    return {line["slug"]: line for line in tenants}, summary["summary"]


def gone(pid: int) -> bool:
    """Whether the process ended (a zombie counts: nothing may reap it here),
    waiting for it at most 30 s."""
    deadline = time.monotonic() + 30
    status = Path(f"/proc/{pid}/status")
    while time.monotonic() < deadline:
        try:
            state = status.read_text().split("State:")[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.02)
    return False


def assert_ledger_true(registry: TenantRegistry, data: TenantData) -> None:
    """Each tenant's data is at its recorded revision, or at the in-flight
    target; nothing is recorded at a revision its data is not at."""
    for entry in registry.data_ledger():
        actual = data.revision(entry.tenant)
        possible = [entry.revision]
        if entry.target is not None:
            possible.append(parse_revision(entry.target))
        assert actual in possible, (entry.slug, actual, entry)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_killed_run_leaves_the_ledger_true_and_the_next_run_finishes(
    fleet: Any,
    registry: TenantRegistry,
    database_url: str,
    tenant_data_location: dict[str, Any],
    releases: tuple[Path, Path],
    tmp_path: Path,
    jobs: str,
) -> None:
    data, tenants = fleet
    put_item(data, tenants["t3"], "block")
    gate = tmp_path / "gate"
    gate.mkdir()
    environ = environment(tenant_data_location, releases[1], gate)
    with stopped_at_the_gate(
        database_url, environ, gate, "--jobs", jobs, "--json"
    ) as process:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    # The job running t3 dies with the run (with one job, it is the run).
    assert gone(int((gate / "reached").read_text()))
    # t3 was mid-migration: rolled back, at its old revision.
    assert data.revision(tenants["t3"]) == ("0001",)
    assert_ledger_true(registry, data)
    assert "t3" in [entry.slug for entry in registry.data_ledger(behind="0002")]

    (gate / "release").touch()
    generation = registry.latest_generation()
    second = run(database_url, environ, "--json", "--jobs", jobs)
    assert second.returncode == 0, second.stderr
    lines, summary = json_lines(second.stdout)
    assert "t3" in lines and lines["t3"]["status"] == "upgraded"
    assert summary["failed"] == 0
    for slug, tenant in tenants.items():
        assert data.revision(tenant) == ("0002",), slug
    entries = registry.data_ledger()
    assert {(e.revision, e.target, e.error) for e in entries} == {
        (("0002",), None, None)
    }
    assert registry.data_ledger(behind="0002") == []
    changed = {
        change.slug
        for change in registry.changes_since(generation)
        if change.operation is Operation.DATA_REVISION
    }
    assert {slug for slug, line in lines.items() if line["status"] == "upgraded"} == (
        changed
    )


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_failing_tenant_is_recorded_and_skipped_and_retried_next_run(
    fleet: Any,
    registry: TenantRegistry,
    database_url: str,
    tenant_data_location: dict[str, Any],
    releases: tuple[Path, Path],
    tmp_path: Path,
    jobs: str,
) -> None:
    data, tenants = fleet
    put_item(data, tenants["t2"], "fail")
    environ = environment(tenant_data_location, releases[1], tmp_path)
    first = run(database_url, environ, "--jobs", jobs, "--json")
    assert first.returncode == 1
    assert "Traceback" not in first.stderr
    [line] = first.stderr.splitlines()
    assert "1 tenant(s) failed ('t2')" in line
    lines, summary = json_lines(first.stdout)
    assert sorted(lines) == SLUGS
    assert (summary["upgraded"], summary["failed"]) == (5, 1)
    failed = lines["t2"]
    assert failed["status"] == "failed"
    assert failed["from"] == ["0001"] and failed["to"] is None
    assert "refuses revision 0002" in failed["error"]
    assert set(lines["t1"]) == {
        "slug",
        "status",
        "from",
        "to",
        "error",
        "seconds",
        "left_in_maintenance",
    }
    assert (lines["t1"]["from"], lines["t1"]["to"]) == (["0001"], ["0002"])
    assert data.revision(tenants["t2"]) == ("0001",)  # rolled back, whole
    [behind] = registry.data_ledger(behind="0002")
    assert (behind.slug, behind.revision, behind.target) == ("t2", ("0001",), "0002")
    assert behind.error is not None and "refuses revision 0002" in behind.error
    assert_ledger_true(registry, data)
    # The next run looks at t2 only; once its data is fixed, it goes through.
    again = run(database_url, environ, "--jobs", jobs, "--json")
    assert again.returncode == 1
    assert sorted(json_lines(again.stdout)[0]) == ["t2"]
    with data.sessionmaker_for(tenants["t2"])() as session, session.begin():
        session.query(Item).delete()
    fixed = run(database_url, environ, "--jobs", jobs)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.splitlines() == [
        "tenant 't2': upgraded from 0001 to 0002",
        "1 upgraded, 0 needed nothing, 0 failed",
    ]
    nothing = run(database_url, environ, "--jobs", jobs)
    assert (nothing.returncode, nothing.stdout) == (
        0,
        "nothing to upgrade: no tenant is behind 0002\n",
    )


def test_a_job_holds_one_data_connection(
    fleet: Any,
    registry: TenantRegistry,
    database_url: str,
    tenant_data_location: dict[str, Any],
    releases: tuple[Path, Path],
    tmp_path: Path,
    backend: str,
) -> None:
    """With a tenant held at the gate, the run's data connections are counted."""
    if backend != "postgresql":
        pytest.skip("connections are counted on PostgreSQL")
    from sqlalchemy import create_engine, make_url, text

    data, tenants = fleet
    put_item(data, tenants["t1"], "block")
    gate = tmp_path / "gate"
    gate.mkdir()
    # The run's data connections carry a name of their own, this test's not.
    tag = f"fleet_run_{os.getpid()}"
    url = make_url(str(tenant_data_location["url"]))
    tagged = url.update_query_dict({"application_name": tag})
    location = {"url": tagged.render_as_string(hide_password=False)}
    environ = environment(location, releases[1], gate)
    process = subprocess.Popen(
        upgrade_args(database_url, "--jobs", "3"),
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    admin = create_engine(make_url(database_url).set(query={}))
    try:
        deadline = time.monotonic() + 60
        while not (gate / "reached").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        count = text(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"
        )
        with admin.connect() as connection:
            assert 1 <= connection.scalar(count, {"a": tag}) <= 3
        (gate / "release").touch()
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        admin.dispose()
    assert process.returncode == 0, err


def test_the_heads_read_from_the_files_are_alembics(tmp_path: Path) -> None:
    for directory in (TESTS / "tenant_migrations", tmp_path):
        if directory == tmp_path:
            write_migrations(tmp_path / "m", "a1", "b2", "c3")
            directory = tmp_path / "m"
            # A branch: two heads.
            (directory / "versions" / "d4_branch.py").write_text(
                "revision: str = 'd4'\ndown_revision: str | None = 'b2'\n"
                "branch_labels = None\ndepends_on = None\n"
                "def upgrade():\n    pass\n\ndef downgrade():\n    pass\n"
            )
        fast = TenantMigrations(directory)
        slow = TenantMigrations(directory)
        slow._scripts()
        assert fast.heads == tuple(sorted(slow.heads))


def test_the_heads_are_read_without_importing_alembic() -> None:
    """What lets a fleet upgrade with nothing to do stop early."""
    code = (
        "import sys\n"
        "from dispatcher.data_migrations import TenantMigrations\n"
        f"heads = TenantMigrations({str(TESTS / 'tenant_migrations')!r}).heads\n"
        "print(heads, 'alembic' in sys.modules)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert completed.stdout == "('0002',) False\n"


def test_a_revision_spelled_dynamically_defers_to_alembic(tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", "a1")
    (directory / "versions" / "b2_dynamic.py").write_text(
        "revision = 'b' + '2'\ndown_revision = 'a1'\n"
        "branch_labels = None\ndepends_on = None\n"
        "def upgrade():\n    pass\n\ndef downgrade():\n    pass\n"
    )
    assert TenantMigrations(directory).heads == ("b2",)


def test_a_new_tenants_data_is_recorded_at_the_heads(
    registry: TenantRegistry,
    tenant_data_location: dict[str, Any],
    releases: tuple[Path, Path],
) -> None:
    data = TenantData(
        metadata=Base.metadata,
        migrations=releases[1],
        registry=registry,
        **tenant_data_location,
    )
    try:
        generation = registry.latest_generation()
        data.create(registry.create_tenant("new", owner_email="o@new.test"))
        [entry] = registry.data_ledger()
        assert (entry.revision, entry.target) == (("0002",), None)
        assert registry.data_ledger(behind="0002") == []
        operations = [c.operation for c in registry.changes_since(generation)]
        assert Operation.DATA_REVISION not in operations
    finally:
        data.dispose()


@pytest.mark.parametrize(
    "second_run", [["--maintenance"], []], ids=["with-maintenance", "without"]
)
def test_a_killed_maintenance_run_leaves_its_window_and_the_next_run_ends_it(
    fleet: Any,
    registry: TenantRegistry,
    database_url: str,
    tenant_data_location: dict[str, Any],
    releases: tuple[Path, Path],
    tmp_path: Path,
    second_run: list[str],
) -> None:
    data, tenants = fleet
    put_item(data, tenants["t3"], "block")
    registry.start_maintenance("t5", message="moving house")  # an operator's
    gate = tmp_path / "gate"
    gate.mkdir()
    environ = environment(tenant_data_location, releases[1], gate)
    with stopped_at_the_gate(
        database_url, environ, gate, "--maintenance", "--json"
    ) as process:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert gone(int((gate / "reached").read_text()))
    # The run died inside t3's window: it stays, recorded as the run's.
    left = registry.get_tenant("t3").maintenance
    assert left is not None and left.opened_by == DATA_UPGRADE

    (gate / "release").touch()
    second = run(database_url, environ, "--json", *second_run)
    assert second.returncode == 0, second.stderr
    lines, summary = json_lines(second.stdout)
    assert lines["t3"]["status"] == "upgraded"
    assert summary["left_in_maintenance"] == []
    for slug in SLUGS:
        if slug != "t5":
            assert registry.get_tenant(slug).maintenance is None, slug
    # The operator's window is theirs to end, run after run.
    kept = registry.get_tenant("t5").maintenance
    assert kept is not None and kept.message == "moving house"
    assert kept.opened_by is None


def test_a_failed_tenant_keeps_the_runs_window_until_a_run_upgrades_it(
    fleet: Any,
    registry: TenantRegistry,
    database_url: str,
    tenant_data_location: dict[str, Any],
    releases: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    data, tenants = fleet
    put_item(data, tenants["t2"], "fail")
    environ = environment(tenant_data_location, releases[1], tmp_path)
    first = run(database_url, environ, "--maintenance", "--json")
    assert first.returncode == 1
    lines, summary = json_lines(first.stdout)
    assert lines["t2"]["left_in_maintenance"] is True
    assert summary["left_in_maintenance"] == ["t2"]
    # A run without --maintenance that fails again keeps it, and says so.
    again = run(database_url, environ)
    assert again.returncode == 1
    assert again.stdout.splitlines() == [
        "tenant 't2': failed: RuntimeError: this tenant refuses revision 0002;"
        " left in maintenance mode (the run that upgrades it ends it, or"
        " 'tenantctl maintenance off t2')",
        "0 upgraded, 0 needed nothing, 1 failed; 1 left in maintenance mode: 't2'",
    ]
    window = registry.get_tenant("t2").maintenance
    assert window is not None and window.opened_by == DATA_UPGRADE
    with data.sessionmaker_for(tenants["t2"])() as session, session.begin():
        session.query(Item).delete()
    fixed = run(database_url, environ)
    assert fixed.returncode == 0, fixed.stderr
    assert registry.get_tenant("t2").maintenance is None


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_records_what_finished_and_the_next_run_finishes(
    fleet: Any,
    registry: TenantRegistry,
    database_url: str,
    tenant_data_location: dict[str, Any],
    releases: tuple[Path, Path],
    tmp_path: Path,
    jobs: str,
) -> None:
    data, tenants = fleet
    put_item(data, tenants["t3"], "block")
    gate = tmp_path / "gate"
    gate.mkdir()
    environ = environment(tenant_data_location, releases[1], gate)
    with stopped_at_the_gate(database_url, environ, gate, "--jobs", jobs) as process:
        os.kill(process.pid, signal.SIGINT)
        # One job: the interrupt lands in t3's migration, which rolls back.
        # Several: the jobs ignore it, t3 finishes once let through.
        (gate / "release").touch()
        out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.splitlines() == [
        "interrupted: what finished is recorded; run 'tenantctl data upgrade'"
        " again to finish"
    ]
    upgraded = {line.split("'")[1] for line in out.splitlines() if "upgraded" in line}
    for entry in registry.data_ledger():
        if entry.slug in upgraded:  # reported, so recorded
            assert (entry.revision, entry.target) == (("0002",), None)
    assert_ledger_true(registry, data)
    finish = run(database_url, environ, "--jobs", jobs)
    assert finish.returncode == 0, finish.stderr
    assert registry.data_ledger(behind="0002") == []
    for slug, tenant in tenants.items():
        assert data.revision(tenant) == ("0002",), slug


def test_a_job_that_dies_stops_the_run_with_one_line_and_the_ledger_true(
    fleet: Any,
    registry: TenantRegistry,
    database_url: str,
    tenant_data_location: dict[str, Any],
    releases: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    data, tenants = fleet
    put_item(data, tenants["t2"], "die")
    environ = environment(tenant_data_location, releases[1], tmp_path)
    died = run(database_url, environ, "--jobs", "2")
    assert died.returncode == 1
    assert "Traceback" not in died.stderr
    [line] = died.stderr.splitlines()
    assert "a job's process died" in line
    assert data.revision(tenants["t2"]) == ("0001",)
    assert_ledger_true(registry, data)
    with data.sessionmaker_for(tenants["t2"])() as session, session.begin():
        session.query(Item).delete()
    again = run(database_url, environ, "--jobs", "2")
    assert again.returncode == 0, again.stderr
    assert registry.data_ledger(behind="0002") == []


def test_an_upgraded_tenants_app_is_rebuilt_and_a_current_ones_kept(
    registry: TenantRegistry,
    tenant_data_location: dict[str, Any],
    releases: tuple[Path, Path],
) -> None:
    """The DATA_REVISION change reaches the dispatcher through the feed."""
    from flask import Flask
    from werkzeug.test import Client

    from dispatcher import TenantDispatcher
    from dispatcher.fleet import FleetUpgrade

    v1, v2 = releases
    old = TenantData(
        metadata=Base.metadata, migrations=v1, registry=registry, **tenant_data_location
    )
    new = TenantData(metadata=Base.metadata, migrations=v2, **tenant_data_location)
    builds: list[str] = []

    def create_app(tenant: Tenant) -> Flask:
        builds.append(tenant.slug)
        app = Flask(tenant.slug)
        app.add_url_rule("/", "index", lambda: tenant.slug)
        return app

    dispatcher = TenantDispatcher(registry, create_app, base_domain="example.test")
    client = Client(dispatcher)
    try:
        for slug in ("web", "shop"):
            old.create(
                registry.create_tenant(
                    slug, owner_email=f"o@{slug}.test", subdomain=slug
                )
            )
        # shop is at the target already (its ledger says 0001, its data 0002).
        assert new.upgrade(registry.get_tenant("shop")) == ("0002",)
        for slug in ("web", "shop"):
            assert (
                client.get("/", headers={"Host": f"{slug}.example.test"}).text == slug
            )
        assert sorted(builds) == ["shop", "web"]
        fleet = FleetUpgrade(new, registry)
        summary = fleet.run(fleet.behind())
        assert (summary.counts[Status.UPGRADED], summary.counts[Status.CURRENT]) == (
            1,
            1,
        )
        for slug in ("web", "shop"):
            assert (
                client.get("/", headers={"Host": f"{slug}.example.test"}).text == slug
            )
        assert sorted(builds) == ["shop", "web", "web"]
    finally:
        dispatcher.close()
        old.dispose()
        new.dispose()
