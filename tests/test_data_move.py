"""Moving a tenant's data between two data servers (dispatcher.data_move).

Two PostgreSQL databases stand for two servers: ``main`` (the run's database)
and ``eu`` (one of this module's own). Everything is real: the copy, the
locks that hold writers off, the registry that records the move, and a
TenantDispatcher answering requests during it. SQLite runs only check that a
move is refused there.
"""

from __future__ import annotations

import enum
import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from helpers import Background, make_tenant
from sqlalchemy import (
    CheckConstraint,
    Computed,
    Connection,
    Engine,
    ForeignKey,
    Identity,
    Index,
    MetaData,
    String,
    event,
    insert,
    select,
    text,
)
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.test import Client

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry
from dispatcher.data import TenantData, schema_name
from dispatcher.data_move import MOVE_LOCK, MOVING, move, move_data
from dispatcher.exceptions import DispatcherError, TenantDataError
from dispatcher.tenant import TenantStatus

BASE = "example.com"
#: Bound of every wait for another connection's state; reached only on failure.
PATIENCE = 30.0


class Base(DeclarativeBase):
    metadata = MetaData()


class Mood(enum.Enum):
    CALM = "calm"
    BUSY = "busy"


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        CheckConstraint("length(title) > 0", name="ck_items_title"),
        Index("ix_items_busy", "id", postgresql_where=text("mood = 'BUSY'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    mood: Mapped[Mood] = mapped_column(SqlEnum(Mood, name="mood"), default=Mood.CALM)
    shout: Mapped[str] = mapped_column(
        String(100), Computed("upper(title)", persisted=True)
    )


class Note(Base):
    """Foreign keys to another table and to itself."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("notes.id"))


class Counter(Base):
    """An identity column that refuses explicit values in plain INSERTs."""

    __tablename__ = "counters"

    id: Mapped[int] = mapped_column(Identity(always=True), primary_key=True)
    name: Mapped[str] = mapped_column(String(20))


ITEMS = Item.__table__


# -- fixtures -----------------------------------------------------------------


_TENANT_SCHEMAS = text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%'")


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A tenant migrations environment at revision 0001."""
    directory = tmp_path / "tenant_migrations"
    (directory / "versions").mkdir(parents=True)
    (directory / "env.py").write_text(
        "from dispatcher.data_migrations import run_migrations\nrun_migrations()\n"
    )
    (directory / "versions" / "0001_first.py").write_text(
        'revision = "0001"\ndown_revision = None\nbranch_labels = None\n'
        "depends_on = None\n\n\ndef upgrade():\n    pass\n\n\n"
        "def downgrade():\n    pass\n"
    )
    return directory


@pytest.fixture
def data(
    tenant_data_location: dict[str, Any],
    eu: Engine,
    registry: TenantRegistry,
    migrations: Path,
) -> Iterator[TenantData]:
    data = TenantData(
        {"main": tenant_data_location["url"], "eu": eu.url},
        metadata=Base.metadata,
        registry=registry,
        migrations=migrations,
    )
    yield data
    data.dispose()


@pytest.fixture
def main(data: TenantData) -> Engine:
    """The ``main`` server's shared engine."""
    return data._shared("main")


@pytest.fixture
def acme(data: TenantData, registry: TenantRegistry) -> Tenant:
    """Tenant ``acme`` on ``main``, with rows in every table."""
    tenant = registry.create_tenant(
        "acme", owner_email="o@acme.test", subdomain="acme", data_server="main"
    )
    tenant = data.create(tenant)
    with data.engine_for(tenant).begin() as connection:
        connection.execute(
            insert(ITEMS),
            [
                {"title": "one", "mood": Mood.CALM},
                {"title": "two", "mood": Mood.BUSY},
                {"title": "three", "mood": Mood.BUSY},
            ],
        )
        connection.execute(
            insert(Note.__table__),
            [
                {"id": 1, "item_id": 1, "parent_id": None},
                {"id": 2, "item_id": 2, "parent_id": 1},
            ],
        )
        # Now row 1 (stored after row 2) points at row 2: no copy order
        # satisfies a foreign key checked row by row.
        connection.execute(text(_in(tenant, "UPDATE {}.notes SET parent_id = 2")))
        connection.execute(insert(Counter.__table__), [{"name": "a"}, {"name": "b"}])
        # The last id handed out is gone: a new row must still not reuse it.
        connection.execute(text(_in(tenant, "DELETE FROM {}.items WHERE id = 3")))
        # What the models do not know about: the move copies the real table.
        connection.execute(text(_in(tenant, "ALTER TABLE {}.items ADD gone int")))
        connection.execute(text(_in(tenant, "ALTER TABLE {}.items DROP gone")))
        connection.execute(
            text(_in(tenant, "ALTER TABLE {}.items ADD extra text DEFAULT 'x%y'"))
        )
    return tenant


def _in(tenant: Tenant, statement: str) -> str:
    return statement.replace("{}", f'"{schema_name(tenant)}"')


# -- what the tests look at -----------------------------------------------------


def contents(engine: Engine, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of ``schema``, in order."""
    with engine.connect() as connection:
        tables = connection.scalars(
            text("SELECT tablename FROM pg_tables WHERE schemaname = :s ORDER BY 1"),
            {"s": schema},
        ).all()
        return {
            table: [
                tuple(row)
                for row in connection.exec_driver_sql(
                    f'SELECT * FROM "{schema}"."{table}" ORDER BY 1'
                )
            ]
            for table in tables
        }


_SHAPE = {
    "columns": "SELECT table_name, column_name, data_type, udt_schema, udt_name,"
    " is_nullable, column_default, is_identity, identity_generation,"
    " is_generated, generation_expression,"
    " pg_get_serial_sequence(quote_ident(table_schema) || '.'"
    " || quote_ident(table_name), column_name)"
    " FROM information_schema.columns WHERE table_schema = :s"
    " ORDER BY table_name, ordinal_position",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s"
    " ORDER BY 1",
    "constraints": "SELECT conrelid::regclass::text, conname,"
    " pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE connamespace = (SELECT oid FROM pg_namespace WHERE nspname = :s)"
    " ORDER BY 1, 2",
    "sequences": "SELECT sequencename, data_type, start_value, min_value,"
    " max_value, increment_by, cycle, cache_size, last_value FROM pg_sequences"
    " WHERE schemaname = :s ORDER BY 1",
    "enums": "SELECT t.typname, e.enumlabel FROM pg_type t"
    " JOIN pg_enum e ON e.enumtypid = t.oid"
    " WHERE t.typnamespace = (SELECT oid FROM pg_namespace WHERE nspname = :s)"
    " ORDER BY 1, e.enumsortorder",
}


def shape(engine: Engine, schema: str) -> dict[str, list[tuple[Any, ...]]]:
    """The schema's tables, columns, keys, indexes, sequences and enum types."""
    with engine.connect() as connection:
        return {
            name: [tuple(row) for row in connection.execute(text(query), {"s": schema})]
            for name, query in _SHAPE.items()
        }


def schemas(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(connection.scalars(_TENANT_SCHEMAS))


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll another connection's state until ``condition`` holds (bounded)."""
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def lock_waiters(engine: Engine, schema: str, table: str) -> int:
    """How many lock requests on ``schema.table`` are waiting."""
    query = text(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = :schema AND c.relname = :table AND NOT l.granted"
    )
    with engine.connect() as connection:
        return int(connection.scalar(query, {"schema": schema, "table": table}))


def titles(engine: Engine, schema: str) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.scalars(text(f'SELECT title FROM "{schema}".items ORDER BY id'))
        )


# -- the move -------------------------------------------------------------------


def test_a_move_copies_everything_and_archives_the_old_copy(
    data: TenantData, acme: Tenant, main: Engine, eu: Engine, registry: TenantRegistry
) -> None:
    schema = schema_name(acme)
    rows_before = contents(main, schema)
    shape_before = shape(main, schema)
    version = registry.get_tenant("acme").version

    moved = move_data(data, acme, "eu")

    assert (moved.source, moved.target) == ("main", "eu")
    assert moved.rows == sum(map(len, rows_before.values()))
    tenant = moved.tenant
    assert tenant.data_server == "eu" and tenant.is_active
    assert tenant.version > version
    assert registry.get_tenant("acme") == tenant
    assert data.server_of(tenant) == "eu"
    # The same tables, keys, indexes, enum, sequence states and rows, on eu.
    assert contents(eu, schema) == rows_before
    assert shape(eu, schema) == shape_before
    assert data.revision(tenant) == ("0001",)
    # The old copy is an archive on main, whole.
    [archive] = data.archives()
    assert (archive.name, archive.server, archive.original) == (
        moved.archive,
        "main",
        schema,
    )
    assert schema not in schemas(main)
    assert contents(main, moved.archive) == rows_before

    with data.engine_for(tenant).begin() as connection:
        item = connection.scalar(
            insert(ITEMS).values(title="four").returning(ITEMS.c.id)
        )
        counter = connection.scalar(
            insert(Counter.__table__).values(name="c").returning(Counter.id)
        )
    assert (item, counter) == (4, 3)  # item 3 was handed out before the move
    # Foreign keys hold on the copy.
    with pytest.raises(DBAPIError, match="foreign key"):
        with data.engine_for(tenant).begin() as connection:
            connection.execute(insert(Note.__table__).values(id=9, item_id=99))


def test_a_move_leaves_other_tenants_alone(
    data: TenantData, acme: Tenant, registry: TenantRegistry, main: Engine, eu: Engine
) -> None:
    bravo = data.create(
        registry.create_tenant("bravo", owner_email="o@bravo.test", data_server="main")
    )
    with data.engine_for(bravo).begin() as connection:
        connection.execute(insert(ITEMS).values(title="bravo's"))
    bravo = registry.get_tenant("bravo")
    move(data, acme, "eu")
    assert registry.get_tenant("bravo") == bravo
    assert titles(main, schema_name(bravo)) == ["bravo's"]
    assert schemas(eu) == {schema_name(acme)}


def test_moving_back_and_forth_keeps_the_data(
    data: TenantData, acme: Tenant, main: Engine
) -> None:
    rows = contents(main, schema_name(acme))
    there = move(data, acme, "eu")
    back = move(data, there, "main")
    assert back.data_server == "main"
    assert contents(main, schema_name(back)) == rows
    assert sorted(archive.server for archive in data.archives()) == ["eu", "main"]


def test_a_disabled_tenant_stays_disabled(
    data: TenantData, acme: Tenant, registry: TenantRegistry
) -> None:
    registry.disable_tenant("acme", "unpaid")
    moved = data.move(acme, "eu")
    assert moved.status is TenantStatus.DISABLED
    assert moved.disabled_reason == "unpaid"
    assert moved.data_server == "eu"


# -- refusals: nothing changes ---------------------------------------------------


def unchanged(
    data: TenantData,
    registry: TenantRegistry,
    tenant: Tenant,
    main: Engine,
    *,
    refused: bool = True,
) -> None:
    """``tenant`` is as it was, its data on main, and there is no archive.

    A refusal writes nothing at all; a failed move disabled the tenant and
    enabled it again, so only its version differs.
    """
    after = registry.get_tenant(tenant.slug)
    if refused:
        assert after == tenant
    else:
        assert after.version > tenant.version
        assert (after.status, after.disabled_reason, after.data_server) == (
            tenant.status,
            tenant.disabled_reason,
            tenant.data_server,
        )
    assert schema_name(tenant) in schemas(main)
    assert data.archives() == []


@pytest.mark.parametrize(
    ("server", "message"),
    [
        pytest.param("mars", "data server 'mars' of tenant 'acme' is not configured"),
        pytest.param("main", "on data server 'main' already", id="its own server"),
    ],
)
def test_a_move_to_a_wrong_server_is_refused(
    data: TenantData,
    acme: Tenant,
    registry: TenantRegistry,
    main: Engine,
    eu: Engine,
    server: str,
    message: str,
) -> None:
    acme = registry.get_tenant("acme")
    with pytest.raises(TenantDataError, match=message):
        move(data, acme, server)
    unchanged(data, registry, acme, main)
    assert schemas(eu) == set()


def test_a_move_needs_a_registry(
    data: TenantData, acme: Tenant, registry: TenantRegistry, main: Engine
) -> None:
    acme = registry.get_tenant("acme")
    data.registry = None
    with pytest.raises(TenantDataError, match="no registry= to record"):
        move(data, acme, "eu")
    data.registry = registry
    unchanged(data, registry, acme, main)


def test_a_schema_of_the_same_name_on_the_target_is_refused(
    data: TenantData, acme: Tenant, registry: TenantRegistry, main: Engine, eu: Engine
) -> None:
    acme = registry.get_tenant("acme")
    schema = schema_name(acme)
    with eu.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    with pytest.raises(TenantDataError, match=f"'{schema}' exists already on data"):
        move(data, acme, "eu")
    unchanged(data, registry, acme, main)


def test_a_second_move_of_the_same_tenant_is_refused_while_one_runs(
    data: TenantData, acme: Tenant, registry: TenantRegistry, main: Engine, eu: Engine
) -> None:
    """Two moves at once: the second must not start, let alone re-enable the
    tenant while the first is still switching it over."""
    acme = registry.get_tenant("acme")
    with main.connect() as holder:
        # What a move in progress holds, on the first configured server.
        assert holder.scalar(MOVE_LOCK, {"slug": "acme"}) is True
        with pytest.raises(TenantDataError, match="a move of tenant 'acme' is"):
            move(data, acme, "eu")
        unchanged(data, registry, acme, main)
        # Another tenant's move is not held up.
        other = registry.create_tenant(
            "other", owner_email="o@other.test", data_server="main"
        )
        data.create(other)
        assert move(data, other, "eu").data_server == "eu"
        holder.rollback()
    assert move(data, acme, "eu").data_server == "eu"


def test_a_tenant_without_data_is_refused(
    data: TenantData, registry: TenantRegistry, eu: Engine
) -> None:
    bare = registry.create_tenant("bare", owner_email="o@bare.test")
    with pytest.raises(TenantDataError, match=r"'bare' has no data \('t_bare_"):
        move(data, bare, "eu")
    assert registry.get_tenant("bare") == bare
    assert schemas(eu) == set()


def test_what_a_move_cannot_copy_is_refused_by_name(
    data: TenantData, acme: Tenant, registry: TenantRegistry, main: Engine
) -> None:
    with data.engine_for(acme).begin() as connection:
        connection.execute(
            text(_in(acme, "CREATE VIEW {}.busy AS SELECT id FROM {}.items"))
        )
    acme = registry.get_tenant("acme")
    with pytest.raises(TenantDataError, match="does not copy: view 'busy'"):
        move(data, acme, "eu")
    unchanged(data, registry, acme, main)


def test_a_move_of_sqlite_files_is_refused(tmp_path: Path) -> None:
    data = TenantData("sqlite://", metadata=Base.metadata, directory=tmp_path)
    tenant = make_tenant("acme")
    with pytest.raises(TenantDataError, match="moving is between PostgreSQL servers"):
        move(data, tenant, "eu")


# -- failures: rolled back, or compensated -----------------------------------------


def test_a_copy_the_target_refuses_changes_nothing(
    data: TenantData, acme: Tenant, registry: TenantRegistry, main: Engine, eu: Engine
) -> None:
    """A foreign key to a table only main has: the target fails late, at the
    constraint after the rows, and both sides roll back."""
    shared = f"shared_{uuid.uuid4().hex[:8]}"
    with main.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{shared}"'))
        connection.execute(text(f'CREATE TABLE "{shared}".plans (id int PRIMARY KEY)'))
        connection.execute(
            text(
                _in(acme, "ALTER TABLE {}.items ADD plan_id int")
                + f' REFERENCES "{shared}".plans (id)'
            )
        )
    acme = registry.get_tenant("acme")
    with pytest.raises(
        TenantDataError, match=f'schema "{shared}" does not exist; nothing'
    ):
        move(data, acme, "eu")
    unchanged(data, registry, acme, main, refused=False)
    assert schemas(eu) == set()


def test_a_failed_source_commit_drops_the_copy_again(
    data: TenantData,
    acme: Tenant,
    registry: TenantRegistry,
    main: Engine,
    eu: Engine,
) -> None:
    """The target has committed when the source's connection dies at COMMIT."""
    acme = registry.get_tenant("acme")
    target_committed = threading.Event()

    def on_target_commit(_connection: Connection) -> None:
        target_committed.set()

    def on_source_commit(connection: Connection) -> None:
        if not target_committed.is_set():
            return
        pid = connection.connection.driver_connection.info.backend_pid
        with eu.connect() as admin:
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        def gone() -> bool:
            with main.connect() as watcher:
                query = text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid")
                return watcher.scalar(query, {"pid": pid}) is None

        wait_until(gone, "the source connection is terminated")

    event.listen(data._shared("eu"), "commit", on_target_commit)
    event.listen(main, "commit", on_source_commit)
    try:
        with pytest.raises(TenantDataError) as raised:
            move(data, acme, "eu")
    finally:
        event.remove(main, "commit", on_source_commit)
        event.remove(data._shared("eu"), "commit", on_target_commit)
    assert "nothing was changed; the copy on 'eu' was dropped" in str(raised.value)
    unchanged(data, registry, acme, main, refused=False)
    assert schemas(eu) == set()
    assert titles(main, schema_name(acme)) == ["one", "two"]


def test_a_move_the_registry_cannot_record_is_undone(
    data: TenantData,
    acme: Tenant,
    registry: TenantRegistry,
    main: Engine,
    eu: Engine,
) -> None:
    """The registry's database refuses the new server (a trigger): the data
    goes back to main and the tenant is served from there again."""
    with registry.database.engine.begin() as connection:
        connection.execute(
            text(
                "CREATE FUNCTION refuse_move() RETURNS trigger LANGUAGE plpgsql AS"
                " $$BEGIN RAISE EXCEPTION 'no moves today'; END$$"
            )
        )
        connection.execute(
            text(
                "CREATE TRIGGER refuse_move BEFORE UPDATE OF data_server ON tenants"
                " FOR EACH ROW EXECUTE FUNCTION refuse_move()"
            )
        )
    acme = registry.get_tenant("acme")
    with pytest.raises(TenantDataError, match="no moves today.*the move was undone"):
        move(data, acme, "eu")
    after = registry.get_tenant("acme")
    assert after.is_active and after.data_server == "main"
    assert schema_name(acme) in schemas(main)
    assert data.archives() == []
    assert schemas(eu) == set()


# -- writers during the move -----------------------------------------------------


def test_a_writer_waiting_for_the_lock_fails_instead_of_writing_into_the_archive(
    data: TenantData, acme: Tenant, main: Engine, eu: Engine
) -> None:
    """PostgreSQL looks a table's name up again after waiting for its lock:
    once the schema is renamed, the waiting INSERT finds no table."""
    schema = schema_name(acme)
    engine = data.engine_for(acme)  # what a process that missed the disable holds
    with engine.connect() as in_flight:
        in_flight.begin()
        in_flight.execute(insert(ITEMS).values(title="in flight"))
        moving = Background(lambda: move_data(data, acme, "eu"))
        wait_until(lambda: lock_waiters(main, schema, "items") == 1, "the move waits")

        def late_write() -> None:
            with engine.begin() as connection:
                connection.execute(insert(ITEMS).values(title="late"))

        late = Background(late_write)
        wait_until(lambda: lock_waiters(main, schema, "items") == 2, "the writer waits")
        in_flight.commit()
    moved = moving.join()
    with pytest.raises(DBAPIError, match=f'relation "{schema}.items" does not exist'):
        late.join()
    assert titles(eu, schema) == ["one", "two", "in flight"]
    assert titles(main, moved.archive) == ["one", "two", "in flight"]


def test_requests_during_a_move_get_the_disabled_answer_then_the_new_server(
    data: TenantData, acme: Tenant, registry: TenantRegistry, main: Engine, eu: Engine
) -> None:
    def create_app(tenant: Tenant) -> Flask:
        app = Flask(f"tenant_{tenant.slug}")
        data.init_app(app, tenant)

        @app.get("/items")
        def items() -> list[str]:
            return list(data.session.scalars(select(Item.title).order_by(Item.id)))

        @app.post("/items")
        def add() -> tuple[str, int]:
            data.session.add(Item(title=request.get_data(as_text=True)))
            data.session.commit()
            return "", 201

        return app

    dispatcher = TenantDispatcher(
        registry, create_app, base_domain=BASE, policy=CachePolicy(poll_interval=None)
    )
    client = Client(dispatcher)
    environ = {"HTTP_HOST": f"acme.{BASE}"}

    def get() -> Any:
        return client.get("/items", environ_overrides=environ, buffered=True)

    schema = schema_name(acme)
    try:
        assert get().json == ["one", "two"]
        # A write in flight holds the move at its lock, with the tenant disabled.
        with data.engine_for(acme).connect() as in_flight:
            in_flight.begin()
            in_flight.execute(insert(ITEMS).values(title="in flight"))
            moving = Background(lambda: move(data, acme, "eu"))
            wait_until(lambda: lock_waiters(main, schema, "items") == 1, "move waits")
            assert registry.get_tenant("acme").disabled_reason == MOVING
            assert get().status_code == 403
            in_flight.commit()
        assert moving.join().data_server == "eu"
        response = get()
        assert response.status_code == 200
        assert response.json == ["one", "two", "in flight"]
        posted = client.post(
            "/items", data="after", environ_overrides=environ, buffered=True
        )
        assert posted.status_code == 201
        assert titles(eu, schema)[-1] == "after"
    finally:
        dispatcher.close()


def test_a_move_under_load_loses_no_acknowledged_write(
    data: TenantData, acme: Tenant, registry: TenantRegistry, main: Engine, eu: Engine
) -> None:
    """Writers that never look at the tenant's status, each write on a fresh
    snapshot from the registry, retried on any error: every write they saw
    committed is on eu afterwards, and none is only in the archive."""
    writers, per_phase = 4, 15
    acknowledged: list[list[str]] = [[] for _ in range(writers)]
    failures = [0] * writers
    stop = threading.Event()

    def write(number: int) -> None:
        for attempt in itertools.count():
            if stop.is_set():
                return
            title = f"w{number}-{attempt}"  # never reused, even after a failure
            try:
                tenant = registry.get_tenant("acme")
                with data.engine_for(tenant).begin() as connection:
                    connection.execute(insert(ITEMS).values(title=title))
            except (DBAPIError, DispatcherError):
                failures[number] += 1
                continue
            acknowledged[number].append(title)

    threads = [Background(lambda n=n: write(n)) for n in range(writers)]
    try:

        def each_wrote(count: int) -> Callable[[], bool]:
            return lambda: all(len(done) >= count for done in acknowledged)

        wait_until(each_wrote(per_phase), "every writer writes")
        moved = move_data(data, acme, "eu")
        after = [len(done) for done in acknowledged]
        wait_until(
            lambda: all(
                len(done) >= before + per_phase
                for done, before in zip(acknowledged, after, strict=True)
            ),
            "every writer writes after the move",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.wait()
    for thread in threads:
        thread.join()
    schema = schema_name(acme)
    on_eu = titles(eu, schema)
    in_archive = titles(main, moved.archive)
    written = [title for done in acknowledged for title in done]
    assert len(on_eu) == len(set(on_eu))
    assert set(written) <= set(on_eu)
    assert set(in_archive) <= set(on_eu)
    assert set(on_eu) - {"one", "two"} == set(written)
