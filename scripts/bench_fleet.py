"""Fleet upgrades on PostgreSQL: ``tenantctl data upgrade`` against plain Alembic.

    DISPATCHER_BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        python scripts/bench_fleet.py [--quick] [--profile]

Rows, each a whole ``tenantctl`` process timed from outside (Python's start
included): a one-column migration (``ALTER TABLE items ADD COLUMN``) over
1,000 tenant schemas with ``--jobs`` 1, 2 and 4; the same schemas replayed
with plain Alembic (a hand-written loop: ``command.upgrade`` per schema, with
an ``env.py`` that sets the schema), the baseline; and a run with nothing to
do over 10,000 tenants (all recorded at the target in the ledger; a no-op run
reads the ledger only, so only the first 1,000 have schemas). ``--profile``
prints where one tenant's upgrade spends its time (cProfile, in process).

Everything lives in a database of its own (``bench_fleet_<hex>``), dropped at
the end: it never touches test data. ``bench_fleet(url, ...)`` returns the
rows for ``scripts/bench.py``; nothing here is a test.

This module is also the ``DISPATCHER_TENANT_DATA`` the timed ``tenantctl``
processes name (``bench_fleet:data``), so its top level imports nothing heavy.
"""

from __future__ import annotations

import os
import sys
from typing import Any

URL_VARIABLE = "BENCH_FLEET_DATA_URL"
MIGRATIONS_VARIABLE = "BENCH_FLEET_MIGRATIONS"
POSTGRES_VARIABLE = "DISPATCHER_BENCH_POSTGRES_URL"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

ENV_PY = "from dispatcher.data_migrations import run_migrations\nrun_migrations()\n"
#: The baseline's env.py: what a hand-written per-schema loop sets up.
BASELINE_ENV_PY = """\
from alembic import context

connection = context.config.attributes["connection"]
schema = context.config.attributes["schema"]
connection.exec_driver_sql(f'SET search_path TO "{schema}"')
context.configure(connection=connection, version_table_schema=schema)
with context.begin_transaction():
    context.run_migrations()
"""
REVISION = """\
import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None


def upgrade():
{body}


def downgrade():
    pass
"""
ADD_COLUMN = '    op.add_column("items", sa.Column("note", sa.String(50)))'


def __getattr__(name: str) -> Any:
    # The timed tenantctl's tenant data, built when it names it.
    if name == "data":
        from dispatcher.data import TenantData

        return TenantData(
            os.environ[URL_VARIABLE],
            metadata=items_metadata(),
            migrations=os.environ[MIGRATIONS_VARIABLE],
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def items_metadata() -> Any:
    """The tenants' one table, ``items`` (Core: the ORM is not needed)."""
    from sqlalchemy import Column, Integer, MetaData, String, Table

    metadata = MetaData()
    Table(
        "items",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("title", String(200)),
    )
    return metadata


def write_migrations(directory: Any, *, column: bool, env: str = ENV_PY) -> Any:
    """0001 (the tables as created) and, with ``column``, 0002 adding one."""
    (directory / "versions").mkdir(parents=True)
    (directory / "env.py").write_text(env)
    (directory / "versions" / "0001_items.py").write_text(
        REVISION.format(revision="0001", down=None, body="    pass")
    )
    if column:
        (directory / "versions" / "0002_note.py").write_text(
            REVISION.format(revision="0002", down="0001", body=ADD_COLUMN)
        )
    return directory


def bench_fleet(
    base: str,
    *,
    tenants: int = 1000,
    noop_tenants: int = 10_000,
    jobs: tuple[int, ...] = (1, 2, 4),
    profile: bool = False,
    say: Any = print,
) -> list[tuple[str, str, str]]:
    """The rows: (what, figure, against the baseline and the target)."""
    import tempfile
    import time
    import uuid
    from pathlib import Path

    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.pool import NullPool

    name = f"bench_fleet_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(base).set(database=name).render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory() as temporary:
            scratch = Path(temporary)
            return _bench(
                url,
                scratch,
                tenants,
                noop_tenants,
                jobs,
                profile,
                say,
                time.perf_counter,
            )
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


def _bench(
    url: str,
    scratch: Any,
    tenants: int,
    noop_tenants: int,
    jobs: tuple[int, ...],
    profile: bool,
    say: Any,
    clock: Any,
) -> list[tuple[str, str, str]]:
    from dispatcher import TenantRegistry
    from dispatcher.data import TenantData
    from dispatcher.ledger import DataResult

    v1 = write_migrations(scratch / "v1", column=False)
    v2 = write_migrations(scratch / "v2", column=True)
    baseline = write_migrations(scratch / "plain", column=True, env=BASELINE_ENV_PY)
    registry = TenantRegistry(url)
    registry.migrate()
    os.environ[URL_VARIABLE] = url
    made = TenantData(url, metadata=items_metadata(), migrations=v1, registry=registry)
    try:
        say(f"creating {tenants} tenants and their schemas ...")
        started = clock()
        slugs = [f"bench{index:05d}" for index in range(tenants)]
        _import(registry, slugs)
        snapshots = registry.list_tenants()
        for tenant in snapshots:
            made.create(tenant)
        schemas = [made.schema_name(tenant) for tenant in snapshots]
        say(f"  {clock() - started:.1f} s")
        rows: list[tuple[str, str, str]] = []
        timings: dict[str, float] = {}

        timings["baseline"] = _timed(
            clock, [sys.executable, __file__, "_baseline", url, str(baseline)], schemas
        )
        _reset(url, schemas, registry, DataResult)
        for count in jobs:
            say(f"tenantctl data upgrade --jobs {count} over {tenants} schemas ...")
            timings[f"jobs {count}"] = _timed(
                clock, _tenantctl(url, "--jobs", str(count)), None, v2
            )
            assert registry.data_ledger(behind="0002") == [], "tenants left behind"
            _reset(url, schemas, registry, DataResult)
        base_seconds = timings["baseline"]
        rows.append(
            (
                f"fleet: plain Alembic loop, {tenants} schemas (baseline)",
                f"{base_seconds:.2f} s",
                f"{base_seconds / tenants * 1e3:.1f} ms per tenant",
            )
        )
        for count in jobs:
            seconds = timings[f"jobs {count}"]
            target = " (target < 10 s)" if count == 2 else ""
            rows.append(
                (
                    f"fleet: tenantctl data upgrade --jobs {count}, {tenants} schemas",
                    f"{seconds:.2f} s",
                    f"{base_seconds / seconds:.1f}x faster than the baseline,"
                    f" {seconds / tenants * 1e3:.1f} ms per tenant{target}",
                )
            )
        if profile:
            _profile(url, v2, registry, snapshots[: min(200, tenants)], say)
        # The no-op: every tenant recorded at the target.
        say(f"recording {noop_tenants} tenants at the target ...")
        extra = [f"noop{index:05d}" for index in range(max(0, noop_tenants - tenants))]
        _import(registry, extra)
        registry.record_data_results(
            DataResult(slug, ("0002",)) for slug in [*slugs, *extra]
        )
        noop = [
            _timed(clock, _tenantctl(url), None, v2, expect="nothing to upgrade")
            for _ in range(5)
        ]
        floor = [
            _timed(clock, [sys.executable, "-c", "import dispatcher.cli"], None)
            for _ in range(5)
        ]
        best, median = min(noop), sorted(noop)[len(noop) // 2]
        rows.append(
            (
                f"fleet: nothing to do, {noop_tenants} tenants (whole process)",
                f"median {median:.2f} s, best {best:.2f} s",
                f"target < 1 s; 'import dispatcher.cli' alone takes"
                f" {sorted(floor)[len(floor) // 2]:.2f} s here",
            )
        )
        return rows
    finally:
        made.dispose()
        registry.close()


def _import(registry: Any, slugs: list[str]) -> None:
    specs = (registry.new_tenant(slug, owner_email=f"o@{slug}.test") for slug in slugs)
    for result in registry.import_tenants(specs, batch_size=1000):
        assert result.error is None, result.error


def _tenantctl(url: str, *args: str) -> list[str]:
    return [
        str(os.path.join(os.path.dirname(sys.executable), "tenantctl")),
        "--database-url",
        url,
        "data",
        "upgrade",
        *args,
    ]


def _timed(
    clock: Any,
    command: list[str],
    schemas: list[str] | None,
    migrations: Any = None,
    expect: str | None = None,
) -> float:
    """Seconds the command takes, start to exit."""
    import subprocess

    environ = {
        **os.environ,
        "DISPATCHER_TENANT_DATA": "bench_fleet:data",
        "PYTHONPATH": os.pathsep.join(
            [
                os.path.dirname(os.path.abspath(__file__)),
                os.environ.get("PYTHONPATH", ""),
            ]
        ),
    }
    if migrations is not None:
        environ[MIGRATIONS_VARIABLE] = str(migrations)
    started = clock()
    completed = subprocess.run(
        command,
        env=environ,
        input="\n".join(schemas or []),
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    seconds = clock() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{command[:1]} failed: {completed.stderr[-2000:]}")
    if expect is not None and expect not in completed.stdout:
        raise RuntimeError(f"expected {expect!r}, got {completed.stdout[:500]!r}")
    return seconds


def _reset(url: str, schemas: list[str], registry: Any, result: Any) -> None:
    """Every schema back at 0001 (column dropped), and the ledger saying so."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.begin() as connection:
        for start in range(0, len(schemas), 200):
            script = ";\n".join(
                f'ALTER TABLE "{schema}".items DROP COLUMN IF EXISTS note;\n'
                f"UPDATE \"{schema}\".alembic_version SET version_num = '0001'"
                for schema in schemas[start : start + 200]
            )
            connection.exec_driver_sql(script)
    engine.dispose()
    slugs = [tenant.slug for tenant in registry.list_tenants()]
    registry.record_data_results(result(slug, ("0001",)) for slug in slugs)


def _profile(
    url: str, migrations: Any, registry: Any, tenants: list[Any], say: Any
) -> None:
    """Where one tenant's upgrade spends its time: cProfile over a few."""
    import cProfile
    import io
    import pstats

    from dispatcher.data import TenantData

    data = TenantData(url, metadata=items_metadata(), migrations=migrations)
    assert data.migrations is not None
    data.migrations.heads  # noqa: B018 - read once, as a run does first
    profiler = cProfile.Profile()
    profiler.enable()
    for tenant in tenants:
        with data.engine_for(tenant).begin() as connection:
            data.migrations.upgrade_from(connection, data.schema_name(tenant))
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(25)
    say(f"profile of {len(tenants)} tenant upgrades (cumulative):")
    say(stream.getvalue())
    data.dispose()
    from dispatcher.ledger import DataResult

    _reset(url, [data.schema_name(tenant) for tenant in tenants], registry, DataResult)


def _baseline(url: str, directory: str) -> None:
    """The plain-Alembic loop: ``command.upgrade`` per schema read from stdin."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", directory)
    for schema in sys.stdin.read().split():
        with engine.begin() as connection:
            config.attributes.update(connection=connection, schema=schema)
            command.upgrade(config, "head")
    engine.dispose()


def main() -> None:
    import argparse

    if len(sys.argv) == 4 and sys.argv[1] == "_baseline":
        _baseline(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer tenants")
    parser.add_argument("--profile", action="store_true", help="cProfile one run")
    args = parser.parse_args()
    base = os.environ.get(POSTGRES_VARIABLE, DEFAULT_POSTGRES)
    sizes = {"tenants": 100, "noop_tenants": 1000} if args.quick else {}
    rows = bench_fleet(base, profile=args.profile, **sizes)
    width = max(len(row[0]) for row in rows)
    for what, figure, note in rows:
        print(f"{what:<{width}}  {figure:>24}  {note}")


if __name__ == "__main__":
    main()
