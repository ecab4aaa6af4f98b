"""Tenant migrations: one tenant's schema (PostgreSQL) or file (SQLite) at a time.

Real databases: SQLite files by default, schemas of the run's PostgreSQL
database with ``DISPATCHER_TEST_DATABASE_URL``, and a real PgBouncer in
transaction mode. The environment is ``tests/tenant_migrations`` (models in
``tests/tenant_models.py``): ``0001`` creates ``items`` and its index,
``0002`` adds ``slug`` and fills it with a raw ``UPDATE items``.

On PostgreSQL a table ``items`` (one row, ``DECOY``) sits in the schema an
unqualified name reaches without the run's ``SET LOCAL search_path`` (the
test's own, on its URL's search path): a statement that escaped the tenant's
schema would land there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.util import CommandError
from helpers import make_tenant
from pgbouncer import NO_PREPARE, running_pgbouncer
from sqlalchemy import (
    Connection,
    Engine,
    create_engine,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.pool import NullPool
from tenant_models import Base, Item

from dispatcher.data_migrations import TenantMigrations, run_migrations
from dispatcher.exceptions import TenantDataError

TESTS = Path(__file__).resolve().parent
EXAMPLE = TESTS / "tenant_migrations"
HEADS = ("0002",)

NEXT_REVISION = '''"""Items get a price.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("items", sa.Column("price", sa.Integer(), nullable=True))
    op.create_index("ix_items_price", "items", ["price"])
    op.execute("UPDATE items SET price = 1")
'''
# The same, failing after all of it.
FAILING_REVISION = (
    NEXT_REVISION + '    op.execute("UPDATE no_such_table SET price = 2")\n'
)


class Tenants:
    """Where the tests' tenants live: schemas of one PostgreSQL database, or
    SQLite files in a directory."""

    def __init__(self, location: dict[str, Any]) -> None:
        self.directory: Path | None = location.get("directory")
        self.engine: Engine | None = None
        if self.directory is None:
            self.engine = create_engine(location["url"], poolclass=NullPool)
        self.backend = "sqlite" if self.engine is None else "postgresql"

    def new(self) -> str:
        """An empty schema (or file) for a new tenant; its name."""
        name = f"tm_{uuid.uuid4().hex[:12]}"
        if self.engine is None:
            assert self.directory is not None
            self.directory.mkdir(parents=True, exist_ok=True)
            self._path(name).touch(exist_ok=False)
        else:
            with self.engine.begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{name}"'))
        return name

    def schema(self, name: str) -> str | None:
        """What the migrations take: the schema, or None for the file's own."""
        return None if self.engine is None else name

    @contextmanager
    def begin(self, name: str) -> Iterator[Connection]:
        """A transaction on the tenant's database, committed unless it raises."""
        engine = self._engine(name)
        try:
            with engine.begin() as connection:
                yield connection
        finally:
            if engine is not self.engine:
                engine.dispose()

    def where(self, name: str) -> str:
        """How errors name the tenant's data."""
        if self.engine is not None:
            return f"tenant schema {name!r}"
        return f"tenant file {str(self._path(name).resolve())!r}"

    def columns(self, name: str, table: str = "items") -> list[str]:
        with self.begin(name) as connection:
            if not inspect(connection).has_table(table, schema=self.schema(name)):
                return []
            found = inspect(connection).get_columns(table, schema=self.schema(name))
        return [column["name"] for column in found]

    def indexes(self, name: str, table: str = "items") -> list[str]:
        with self.begin(name) as connection:
            found = inspect(connection).get_indexes(table, schema=self.schema(name))
        return sorted(str(index["name"]) for index in found)

    def version_table(self, name: str) -> tuple[Any, ...]:
        """Its columns (name, type, nullable) and primary key."""
        with self.begin(name) as connection:
            found = inspect(connection)
            schema = self.schema(name)
            columns = found.get_columns("alembic_version", schema=schema)
            key = found.get_pk_constraint("alembic_version", schema=schema)
        return (
            [(c["name"], str(c["type"]), c["nullable"]) for c in columns],
            key["constrained_columns"],
            key["name"],
        )

    def rows(self, name: str) -> list[tuple[Any, ...]]:
        with self.begin(name) as connection:
            tenant = connection.execution_options(
                schema_translate_map={None: self.schema(name)}
            )
            table = Item.__table__
            columns = [c for c in table.c if c.name in self.columns(name)]
            return [tuple(row) for row in tenant.execute(select(*columns))]

    def dispose(self) -> None:
        if self.engine is not None:
            self.engine.dispose()

    def _engine(self, name: str) -> Engine:
        if self.engine is not None:
            return self.engine
        return create_engine(f"sqlite:///{self._path(name)}", poolclass=NullPool)

    def _path(self, name: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{name}.sqlite3"


@pytest.fixture
def tenants(tenant_data_location: dict[str, Any]) -> Iterator[Tenants]:
    """The test's tenants; on PostgreSQL their schemas are dropped after it."""
    tenants = Tenants(tenant_data_location)
    yield tenants
    tenants.dispose()


@pytest.fixture
def migrations() -> TenantMigrations:
    return TenantMigrations(EXAMPLE)


@pytest.fixture
def decoy(tenants: Tenants) -> str | None:
    """PostgreSQL: ``items`` where unqualified names land outside a run; its schema."""
    if tenants.engine is None:
        return None
    with tenants.engine.begin() as connection:
        connection.execute(text("CREATE TABLE items (id integer, title text)"))
        connection.execute(text("INSERT INTO items VALUES (1, 'DECOY')"))
        return str(connection.scalar(text("SELECT current_schema()")))


def copy_of_example(tmp_path: Path, env_py: str | None = None) -> Path:
    directory = tmp_path / "tenant_migrations"
    shutil.copytree(EXAMPLE, directory, ignore=shutil.ignore_patterns("__pycache__"))
    if env_py is not None:
        (directory / "env.py").write_text(env_py)
    return directory


def create_and_stamp(tenants: Tenants, migrations: TenantMigrations, name: str) -> None:
    """What a signup does: the models' tables, then the heads recorded."""
    schema = tenants.schema(name)
    with tenants.begin(name) as connection:
        tenant = connection.execution_options(schema_translate_map={None: schema})
        Base.metadata.create_all(tenant, checkfirst=False)
        migrations.stamp(connection, schema)


def at_first_revision(
    tenants: Tenants, migrations: TenantMigrations, name: str, *titles: str
) -> None:
    schema = tenants.schema(name)
    with tenants.begin(name) as connection:
        assert migrations.upgrade(connection, schema, "0001") == ("0001",)
        table = Item.__table__
        tenant = connection.execution_options(schema_translate_map={None: schema})
        for title in titles:
            tenant.execute(insert(table).values(title=title))


def current(
    tenants: Tenants, migrations: TenantMigrations, name: str
) -> tuple[str, ...]:
    with tenants.begin(name) as connection:
        return migrations.current(connection, tenants.schema(name))


def version_tables(tenants: Tenants, *schemas: str | None) -> list[str]:
    """PostgreSQL: which of ``schemas`` (and public) have an alembic_version."""
    assert tenants.engine is not None
    with tenants.engine.connect() as connection:
        return sorted(
            connection.scalars(
                text(
                    "SELECT table_schema FROM information_schema.tables"
                    " WHERE table_name = 'alembic_version'"
                    " AND table_schema = ANY(:schemas)"
                ),
                {"schemas": [*schemas, "public"]},
            )
        )


# -- the environment ---------------------------------------------------------------


def test_the_example_has_two_revisions_and_one_head(
    migrations: TenantMigrations,
) -> None:
    assert migrations.heads == HEADS
    assert migrations.heads is migrations.heads  # read once


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda tmp: tmp / "missing", id="missing directory"),
        pytest.param(lambda tmp: tmp, id="directory without env.py"),
        pytest.param(lambda tmp: EXAMPLE / "versions", id="its versions folder"),
    ],
)
def test_a_directory_that_is_not_an_environment_is_refused(
    tmp_path: Path, make: Any
) -> None:
    path = make(tmp_path)
    message = re.escape(f"'{path}' must be a directory with an env.py")
    with pytest.raises(ValueError, match=message):
        TenantMigrations(path)


# -- stamp -------------------------------------------------------------------------


def test_created_and_stamped_tenant_is_at_the_head(
    tenants: Tenants, migrations: TenantMigrations, decoy: str | None
) -> None:
    name = tenants.new()

    create_and_stamp(tenants, migrations, name)

    assert current(tenants, migrations, name) == HEADS
    with tenants.begin(name) as connection:
        schema = tenants.schema(name)
        assert inspect(connection).has_table("alembic_version", schema=schema)
    if tenants.engine is not None:
        assert version_tables(tenants, name, decoy) == [name]


def test_stamp_runs_no_env_py(tenants: Tenants, tmp_path: Path) -> None:
    """Signup stays fast: stamping reads the revisions once and runs nothing."""
    refusing = copy_of_example(tmp_path, 'raise AssertionError("env.py ran")\n')
    migrations = TenantMigrations(refusing)
    name = tenants.new()

    create_and_stamp(tenants, migrations, name)

    assert current(tenants, migrations, name) == HEADS


def test_stamp_refuses_a_tenant_that_has_a_version_table(
    tenants: Tenants, migrations: TenantMigrations
) -> None:
    name = tenants.new()
    at_first_revision(tenants, migrations, name)

    with pytest.raises(TenantDataError, match=r"has a version table already.*0001"):
        with tenants.begin(name) as connection:
            migrations.stamp(connection, tenants.schema(name))
    assert current(tenants, migrations, name) == ("0001",)


# -- upgrade -----------------------------------------------------------------------


def test_upgrading_one_tenant_leaves_another_untouched(
    tenants: Tenants, migrations: TenantMigrations, decoy: str | None
) -> None:
    acme, globex = tenants.new(), tenants.new()
    at_first_revision(tenants, migrations, acme, "Anvil", "Rocket")
    at_first_revision(tenants, migrations, globex, "Hammock")

    with tenants.begin(acme) as connection:
        assert migrations.upgrade(connection, tenants.schema(acme)) == HEADS

    # add_column and the raw UPDATE reached acme's table...
    assert current(tenants, migrations, acme) == HEADS
    assert tenants.columns(acme) == ["id", "title", "slug"]
    assert sorted(tenants.rows(acme)) == [
        (1, "Anvil", "anvil"),
        (2, "Rocket", "rocket"),
    ]
    # ...and nothing of globex's: its version, its columns, its rows.
    assert current(tenants, migrations, globex) == ("0001",)
    assert tenants.columns(globex) == ["id", "title"]
    assert tenants.rows(globex) == [(1, "Hammock")]
    if tenants.engine is not None:
        assert version_tables(tenants, acme, globex, decoy) == sorted([acme, globex])
        with tenants.engine.connect() as connection:
            assert connection.execute(text("SELECT * FROM items")).all() == [
                (1, "DECOY")
            ]
            with_slug = connection.scalars(
                text(
                    "SELECT table_schema FROM information_schema.columns"
                    " WHERE table_name = 'items' AND column_name = 'slug'"
                )
            ).all()
        assert with_slug == [acme]  # not public, not the decoy's, not globex's


def test_upgrade_from_nothing_matches_create_and_stamp(
    tenants: Tenants, migrations: TenantMigrations
) -> None:
    """The migrations and the models describe the same tables."""
    migrated, created = tenants.new(), tenants.new()
    with tenants.begin(migrated) as connection:
        assert migrations.upgrade(connection, tenants.schema(migrated)) == HEADS
    create_and_stamp(tenants, migrations, created)

    assert tenants.columns(migrated) == tenants.columns(created)
    assert tenants.indexes(migrated) == tenants.indexes(created) == ["ix_items_title"]
    # stamp writes the version table itself, as Alembic would have made it.
    assert tenants.version_table(migrated) == tenants.version_table(created)


def test_a_stamped_tenant_upgrades_to_a_newer_head(
    tenants: Tenants, tmp_path: Path
) -> None:
    """A release adds 0003: Alembic finds 0002 in the version table stamp wrote."""
    directory = copy_of_example(tmp_path)
    name = tenants.new()
    create_and_stamp(tenants, TenantMigrations(directory), name)
    (directory / "versions" / "0003_price.py").write_text(NEXT_REVISION)

    with tenants.begin(name) as connection:
        upgraded = TenantMigrations(directory).upgrade(connection, tenants.schema(name))

    assert upgraded == ("0003",)
    assert tenants.columns(name) == ["id", "title", "slug", "price"]


def test_upgrade_at_the_head_changes_nothing(
    tenants: Tenants, migrations: TenantMigrations
) -> None:
    name = tenants.new()
    create_and_stamp(tenants, migrations, name)

    with tenants.begin(name) as connection:
        assert migrations.upgrade(connection, tenants.schema(name)) == HEADS


def test_a_failing_migration_rolls_back_wholly(
    tenants: Tenants, tmp_path: Path
) -> None:
    """0003 adds a column and an index, updates, then fails: the caller's
    rollback takes back all of it (on SQLite too: the run opened the file's
    transaction before the first DDL)."""
    directory = copy_of_example(tmp_path)
    (directory / "versions" / "0003_fails.py").write_text(FAILING_REVISION)
    migrations = TenantMigrations(directory)
    name = tenants.new()
    at_first_revision(tenants, migrations, name, "Anvil")
    with tenants.begin(name) as connection:
        migrations.upgrade(connection, tenants.schema(name), "0002")

    with pytest.raises(TenantDataError, match="no_such_table") as raised:
        with tenants.begin(name) as connection:
            migrations.upgrade(connection, tenants.schema(name))

    assert tenants.where(name) in str(raised.value)
    assert current(tenants, migrations, name) == ("0002",)
    assert tenants.columns(name) == ["id", "title", "slug"]
    assert tenants.indexes(name) == ["ix_items_title"]
    assert tenants.rows(name) == [(1, "Anvil", "anvil")]


@pytest.mark.parametrize("revision", ["0099", "nope@head", "-1"])
def test_an_unknown_revision_is_refused(
    tenants: Tenants, migrations: TenantMigrations, revision: str
) -> None:
    name = tenants.new()
    create_and_stamp(tenants, migrations, name)

    with pytest.raises(TenantDataError, match=f"to revision '{revision}'") as raised:
        with tenants.begin(name) as connection:
            migrations.upgrade(connection, tenants.schema(name), revision)

    assert tenants.where(name) in str(raised.value)
    assert current(tenants, migrations, name) == HEADS


def test_upgrade_leaves_the_connection_as_it_found_it(
    tenants: Tenants, migrations: TenantMigrations
) -> None:
    """The rest of the caller's transaction runs with its own search_path and
    translate map, not the tenant's."""
    name = tenants.new()
    schema = tenants.schema(name)
    with tenants.begin(name) as connection:
        connection.execution_options(schema_translate_map={"shared": "elsewhere"})
        before = _search_path(connection)

        migrations.upgrade(connection, schema)

        assert _search_path(connection) == before
        assert connection.get_execution_options()["schema_translate_map"] == {
            "shared": "elsewhere"
        }


@pytest.mark.parametrize("method", ["stamp", "upgrade"])
def test_an_autocommit_connection_is_refused(
    tenants: Tenants, migrations: TenantMigrations, decoy: str | None, method: str
) -> None:
    """Each statement would commit alone, and on PostgreSQL the SET LOCAL would
    end before the migration's first statement, leaving it the connection's
    own search path (the decoy's schema)."""
    name = tenants.new()
    engine = tenants._engine(name).execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        with pytest.raises(ValueError, match="autocommit.*engine.begin"):
            getattr(migrations, method)(connection, tenants.schema(name))
    assert current(tenants, migrations, name) == ()
    if tenants.engine is not None:
        assert tenants.columns(name) == []
        with tenants.engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM items")).all()
        assert rows == [(1, "DECOY")]


def _search_path(connection: Connection) -> str | None:
    if connection.dialect.name != "postgresql":
        return None
    return str(connection.scalar(text("SHOW search_path")))


def test_concurrent_upgrades_of_several_tenants(
    tenants: Tenants, migrations: TenantMigrations
) -> None:
    """Alembic's ``context`` and ``op`` are process globals: runs in threads
    take turns, and each tenant gets its own migration."""
    names = [tenants.new() for _ in range(4)]
    for name in names:
        at_first_revision(tenants, migrations, name, name)

    def upgrade(name: str) -> tuple[str, ...]:
        with tenants.begin(name) as connection:
            return migrations.upgrade(connection, tenants.schema(name))

    with ThreadPoolExecutor(len(names)) as pool:
        assert list(pool.map(upgrade, names)) == [HEADS] * len(names)
    assert [tenants.rows(name) for name in names] == [
        [(1, name, name)] for name in names
    ]


# -- where the data is -------------------------------------------------------------


@pytest.mark.parametrize("method", ["stamp", "upgrade", "current"])
def test_a_schema_that_does_not_exist_is_refused(
    tenants: Tenants, migrations: TenantMigrations, method: str
) -> None:
    if tenants.engine is None:
        pytest.skip("a SQLite tenant's file is its connection: it exists")
    with pytest.raises(TenantDataError, match="tenant schema 'tm_missing' does not"):
        with tenants.engine.begin() as connection:
            getattr(migrations, method)(connection, "tm_missing")


def test_the_schema_argument_follows_the_backend(
    tenants: Tenants, migrations: TenantMigrations
) -> None:
    name = tenants.new()
    with tenants.begin(name) as connection:
        if tenants.engine is None:
            with pytest.raises(ValueError, match="schema='main' is for PostgreSQL"):
                migrations.current(connection, "main")
        else:
            with pytest.raises(ValueError, match="schema must name .* not None"):
                migrations.current(connection, None)


# -- outside a run -----------------------------------------------------------------


def test_run_migrations_outside_a_run_says_how_to_run_them() -> None:
    with pytest.raises(CommandError, match="tenantctl data upgrade --only SLUG"):
        run_migrations(Base.metadata)


def test_plain_alembic_is_refused_with_one_line(tmp_path: Path) -> None:
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        "[alembic]\n"
        f"script_location = {EXAMPLE}\n"
        f"sqlalchemy.url = sqlite:///{tmp_path / 'plain.sqlite3'}\n"
    )
    environ = {**os.environ, "PYTHONPATH": str(TESTS)}

    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )

    # Alembic prints its errors on stdout, as one line.
    assert done.returncode != 0
    assert done.stdout.startswith("FAILED: tenant migrations run in one tenant's")
    assert "tenantctl data upgrade --only SLUG" in done.stdout
    assert len(done.stdout.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "plain.sqlite3").exists()


# -- behind PgBouncer --------------------------------------------------------------


def test_an_upgrade_through_pgbouncer_leaves_no_search_path_behind(
    database_url: str,
    tenants: Tenants,
    migrations: TenantMigrations,
    decoy: str | None,
) -> None:
    """Transaction mode, one server connection for every client: after one
    tenant's upgrade (``SET LOCAL search_path`` inside), the next client on
    that server connection has the search path it started with, and its
    unqualified and translated queries see nothing of the upgraded tenant."""
    if tenants.engine is None:
        pytest.skip("PgBouncer pools PostgreSQL; this run tests SQLite")
    acme, globex = tenants.new(), tenants.new()
    at_first_revision(tenants, migrations, acme, "Anvil")
    at_first_revision(tenants, migrations, globex, "Hammock")
    with tenants.engine.connect() as direct:
        search_path = _search_path(direct)

    with running_pgbouncer(database_url, pool_size=1) as bouncer:
        pooled = create_engine(bouncer.url, connect_args=NO_PREPARE)
        other = create_engine(
            bouncer.url, connect_args=NO_PREPARE, isolation_level="AUTOCOMMIT"
        )
        try:
            with pooled.begin() as connection:
                upgraded_on = connection.scalar(select(func.pg_backend_pid()))
                assert migrations.upgrade(connection, acme) == HEADS

            with other.connect() as client:
                assert client.scalar(select(func.pg_backend_pid())) == upgraded_on
                assert _search_path(client) == search_path
                assert client.execute(text("SELECT * FROM items")).all() == [
                    (1, "DECOY")
                ]
                as_globex = client.execution_options(
                    schema_translate_map={None: globex}
                )
                titles = as_globex.scalars(select(Item.__table__.c.title)).all()
                assert titles == ["Hammock"]
                assert migrations.current(client, globex) == ("0001",)

            # The next upgrade on the same server connection is globex's alone.
            with pooled.begin() as connection:
                assert migrations.upgrade(connection, globex) == HEADS
        finally:
            pooled.dispose()
            other.dispose()
    assert tenants.rows(acme) == [(1, "Anvil", "anvil")]
    assert tenants.rows(globex) == [(1, "Hammock", "hammock")]


# -- through TenantData ------------------------------------------------------------


@pytest.fixture
def data(tenant_data_location: dict[str, Any]) -> Iterator[Any]:
    from dispatcher.data import TenantData

    data = TenantData(
        metadata=Base.metadata, migrations=EXAMPLE, **tenant_data_location
    )
    yield data
    data.dispose()


def test_tenant_data_creates_at_the_head_and_upgrades_one_tenant(
    data: Any, tmp_path: Path
) -> None:
    """create() stamps the head; upgrade() moves one tenant and no other."""
    from dispatcher.data import TenantData

    acme, bravo = make_tenant("acme"), make_tenant("bravo")
    data.create(acme)
    data.create(bravo)
    assert data.revision(acme) == data.revision(bravo) == HEADS
    assert data.upgrade(acme) == HEADS  # at the head: nothing to do

    directory = copy_of_example(tmp_path)
    (directory / "versions" / "0003_price.py").write_text(NEXT_REVISION)
    newer = TenantData(
        metadata=Base.metadata,
        migrations=directory,
        url=data.url,
        directory=data.directory,
    )
    try:
        assert newer.upgrade(acme) == ("0003",)
        assert newer.revision(acme) == ("0003",)
        assert newer.revision(bravo) == HEADS
        # The inspector reads no translate map: name the schema (None: the file).
        schema = None if data.directory is not None else data.schema_name(acme)
        with newer.engine_for(acme).connect() as connection:
            found = inspect(connection).get_columns("items", schema=schema)
            columns = {column["name"] for column in found}
        assert "price" in columns
    finally:
        newer.dispose()


def test_tenant_data_without_migrations_or_data_says_so(
    data: Any, tenant_data_location: dict[str, Any]
) -> None:
    from dispatcher.data import TenantData

    acme = make_tenant("acme")
    with pytest.raises(TenantDataError, match="'acme' has no data"):
        data.upgrade(acme)
    plain = TenantData(metadata=Base.metadata, **tenant_data_location)
    try:
        with pytest.raises(TenantDataError, match="no tenant migrations"):
            plain.upgrade(acme)
    finally:
        plain.dispose()
