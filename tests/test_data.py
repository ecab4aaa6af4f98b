"""TenantData: a schema (or file) per tenant on one bounded pool, real databases."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from forking import run_in_child
from helpers import T0, make_tenant
from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    insert,
    make_url,
    select,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.test import Client

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry
from dispatcher.data import (
    TENANT_SCHEMA,
    TenantData,
    archived_name,
    schema_name,
    tenant_tables,
)
from dispatcher.exceptions import TenantDataError
from dispatcher.provisioning import Provisioner, ProvisioningFailed

BASE = "example.com"
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


class Base(DeclarativeBase):
    metadata = MetaData()


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))


class Note(Base):
    """A second table with a foreign key: the translate map must follow it."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))


@pytest.fixture
def data(tenant_data_location: dict[str, Any]) -> Iterator[TenantData]:
    data = TenantData(metadata=Base.metadata, **tenant_data_location)
    yield data
    data.dispose()


def archive_exists(data: TenantData, name: str) -> bool:
    if data.directory is not None:
        return (data.directory / f"{name}.sqlite3").exists()
    engine = create_engine(data.url)
    try:
        with engine.connect() as connection:
            query = text("SELECT 1 FROM pg_namespace WHERE nspname = :name")
            return connection.scalar(query, {"name": name}) is not None
    finally:
        engine.dispose()


# -- schema names ---------------------------------------------------------------


@pytest.mark.parametrize(
    "slug",
    [
        "acme",
        "my-shop",
        "UPPER",
        'a"; DROP SCHEMA public CASCADE; --',
        "x" * 200,
        "---",
        "ünïcødé",
        "",
        "a_b",
    ],
)
def test_schema_name_is_a_short_safe_identifier(slug: str) -> None:
    name = schema_name(make_tenant(slug))
    assert IDENTIFIER.match(name), name
    archived = archived_name(name, T0)
    assert IDENTIFIER.match(archived) and len(archived) <= 63, archived
    assert schema_name(make_tenant(slug)) == name


def test_schema_name_is_stable_and_fresh_for_a_recreated_slug() -> None:
    name = schema_name(make_tenant("my-shop"))
    assert re.fullmatch(r"t_my_shop_[0-9a-f]{8}", name)
    naive = T0.replace(tzinfo=None)
    assert schema_name(make_tenant("my-shop", naive)) == name
    elsewhere = T0.astimezone(dt.timezone(dt.timedelta(hours=2)))
    assert schema_name(make_tenant("my-shop", elsewhere)) == name
    later = T0 + dt.timedelta(microseconds=1)
    assert schema_name(make_tenant("my-shop", later)) != name
    # Slugs that read alike still get names of their own.
    assert schema_name(make_tenant("my_shop")) != name


def test_schema_name_needs_a_tenant() -> None:
    with pytest.raises(TypeError, match="tenant must be a Tenant, not str"):
        schema_name("acme")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("keywords", "error", "message"),
    [
        ({"url": "mysql://db/x"}, ValueError, "backend 'mysql'"),
        ({"url": "sqlite://"}, ValueError, "needs directory="),
        ({"url": "sqlite:///x.db", "directory": "d"}, ValueError, "names a database"),
        ({"url": "postgresql://db/x", "directory": "d"}, ValueError, "SQLite only"),
        ({"url": "postgresql://db/x", "pool_size": 0}, ValueError, "pool_size"),
        ({"url": "postgresql://db/x", "max_overflow": -1}, ValueError, "max_overflow"),
        ({"url": "postgresql://db/x", "pool_timeout": 0}, ValueError, "pool_timeout"),
        ({"url": "postgresql://db/x", "pool_timeout": "1"}, TypeError, "pool_timeout"),
        ({"url": "postgresql://db/x", "metadata": {}}, TypeError, "MetaData"),
    ],
)
def test_configuration_errors_name_the_value(
    keywords: dict[str, Any], error: type[Exception], message: str
) -> None:
    keywords = {"metadata": Base.metadata, **keywords}
    with pytest.raises(error, match=message):
        TenantData(**keywords)


def test_tables_with_a_schema_of_their_own_are_shared_not_created() -> None:
    metadata = MetaData()
    mine = Table("mine", metadata, Column("id", Integer, primary_key=True))
    Table("plans", metadata, Column("id", Integer, primary_key=True), schema="shared")
    assert tenant_tables(metadata) == [mine]


def test_bound_is_stated() -> None:
    data = TenantData(
        "postgresql://db/x", metadata=Base.metadata, pool_size=3, max_overflow=2
    )
    assert data.bound == 5


# -- isolation ------------------------------------------------------------------


def test_two_tenants_never_see_each_others_rows(
    data: TenantData, tenant_data_location: dict[str, Any]
) -> None:
    acme, bravo = make_tenant("acme"), make_tenant("bravo")
    if data.directory is None:
        # A decoy where search_path points: an unqualified name would find it.
        decoy = create_engine(tenant_data_location["url"])
        with decoy.begin() as connection:
            Base.metadata.create_all(connection)
            connection.execute(insert(Item.__table__), {"title": "decoy"})
        decoy.dispose()
    data.create(acme)
    data.create(bravo)
    for tenant in (acme, bravo):
        with data.sessionmaker_for(tenant)() as session, session.begin():
            item = Item(title=f"orm-{tenant.slug}")
            session.add(item)
            session.flush()
            session.add(Note(item_id=item.id))
        with data.engine_for(tenant).begin() as connection:
            connection.execute(insert(Item), {"title": f"core-{tenant.slug}"})
            connection.execute(
                text(f"INSERT INTO {TENANT_SCHEMA}.items (title) VALUES (:title)"),
                {"title": f"text-{tenant.slug}"},
            )
    for tenant in (acme, bravo):
        expected = {f"{way}-{tenant.slug}" for way in ("orm", "core", "text")}
        with data.sessionmaker_for(tenant)() as session:
            assert set(session.scalars(select(Item.title))) == expected
            assert session.scalar(select(func.count()).select_from(Note)) == 1
            raw = text(f"SELECT title FROM {TENANT_SCHEMA}.items")
            assert set(session.scalars(raw)) == expected
        with data.engine_for(tenant).connect() as connection:
            assert set(connection.scalars(select(Item.title))) == expected


def test_no_connection_keeps_a_tenants_search_path(data: TenantData) -> None:
    if data.directory is not None:
        pytest.skip("search_path is PostgreSQL's")
    acme = make_tenant("acme")
    data.create(acme)
    shared = data.engine_for(acme).execution_options(schema_translate_map=None)
    with shared.connect() as connection:
        before = connection.scalar(text("SHOW search_path"))
    with data.sessionmaker_for(acme)() as session:
        session.scalars(select(Item)).all()
        assert session.scalar(text("SHOW search_path")) == before


def test_one_process_with_many_tenants_stays_within_the_pool_bound(
    tenant_data_location: dict[str, Any],
) -> None:
    url = make_url(tenant_data_location.get("url", ""))
    if url.get_backend_name() != "postgresql":
        pytest.skip("pg_stat_activity is PostgreSQL's")
    data = TenantData(
        metadata=Base.metadata, pool_size=2, max_overflow=1, **tenant_data_location
    )
    tenants = [make_tenant(f"t{n}", T0 + dt.timedelta(seconds=n)) for n in range(200)]
    application = url.query["application_name"]
    monitor = create_engine(url.set(query={}), isolation_level="AUTOCOMMIT")
    count = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a")
    seen: list[int] = []
    errors: list[BaseException] = []
    try:
        for tenant in tenants:
            data.create(tenant)

        def serve(part: list[Tenant], watch: Any) -> None:
            try:
                for tenant in part:
                    with data.sessionmaker_for(tenant)() as session, session.begin():
                        session.add(Item(title=tenant.slug))
                        session.flush()
                        titles = session.scalars(select(Item.title)).all()
                        assert titles == [tenant.slug]
                        seen.append(watch.scalar(count, {"a": application}))
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)

        watchers = [monitor.connect() for _ in range(8)]
        threads = [
            threading.Thread(target=serve, args=(tenants[n::8], watchers[n]))
            for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for watcher in watchers:
            watcher.close()
        assert not errors, errors
        assert len(seen) == 200
        assert 1 <= max(seen) <= data.bound == 3
    finally:
        data.dispose()
        monitor.dispose()


# -- provisioning ---------------------------------------------------------------


def test_create_archive_round_trip(data: TenantData) -> None:
    acme = make_tenant("acme")
    assert not data.exists(acme)
    assert data.archive(acme) is None  # nothing to archive: no error
    data.create(acme)
    assert data.exists(acme)
    with data.sessionmaker_for(acme)() as session, session.begin():
        session.add(Item(title="kept"))
    archive = data.archive(acme)
    assert archive is not None
    assert re.fullmatch(rf"{schema_name(acme)}_archived_\d{{14}}(\.sqlite3)?", archive)
    assert not data.exists(acme)
    assert archive_exists(data, archive.removesuffix(".sqlite3"))
    assert data.archive(acme) is None


def test_creating_twice_is_a_clear_error_and_keeps_the_data(data: TenantData) -> None:
    acme = make_tenant("acme")
    data.create(acme)
    with data.sessionmaker_for(acme)() as session, session.begin():
        session.add(Item(title="kept"))
    with pytest.raises(TenantDataError, match=f"{schema_name(acme)}.*exists already"):
        data.create(acme)
    with data.sessionmaker_for(acme)() as session:
        assert session.scalars(select(Item.title)).all() == ["kept"]


def test_a_failing_create_leaves_nothing_behind(
    tenant_data_location: dict[str, Any],
) -> None:
    broken = MetaData()
    Table("fine", broken, Column("id", Integer, primary_key=True))
    Table(
        "broken",
        broken,
        Column("id", Integer, primary_key=True),
        CheckConstraint("no_such_column > 0"),
    )
    data = TenantData(metadata=broken, **tenant_data_location)
    acme = make_tenant("acme")
    try:
        with pytest.raises(TenantDataError, match="'acme'"):
            data.create(acme)
        assert not data.exists(acme)
        if data.directory is not None:
            assert list(data.directory.iterdir()) == []
    finally:
        data.dispose()


def test_a_refused_schema_creation_names_the_schema(
    tenant_data_location: dict[str, Any],
) -> None:
    url = make_url(tenant_data_location.get("url", ""))
    if url.get_backend_name() != "postgresql":
        pytest.skip("privileges are PostgreSQL's")
    role = f"{url.query['application_name']}_nocreate"
    admin = create_engine(url.set(query={}), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        connection.execute(
            text(f'REVOKE CREATE ON DATABASE "{url.database}" FROM "{role}"')
        )
    data = TenantData(url.set(username=role), metadata=Base.metadata)
    acme = make_tenant("acme")
    try:
        with pytest.raises(TenantDataError, match=f"refused.*{schema_name(acme)}"):
            data.create(acme)
        owner = TenantData(url, metadata=Base.metadata)
        assert not owner.exists(acme)
        owner.dispose()
    finally:
        data.dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def test_provisioner_hooks_create_and_archive(
    data: TenantData, registry: TenantRegistry
) -> None:
    def refuse(_tenant: Tenant) -> None:
        raise RuntimeError("no")

    failing = Provisioner(
        registry, on_create=[data.create, refuse], on_delete=[data.archive]
    )
    with pytest.raises(ProvisioningFailed):
        failing.create("acme", owner_email="ada@acme.test")
    provisioner = Provisioner(
        registry, on_create=[data.create], on_delete=[data.archive]
    )
    tenant = provisioner.create("bravo", owner_email="bo@bravo.test")
    assert data.exists(tenant)
    provisioner.delete("bravo")
    assert not data.exists(tenant)


# -- Flask ----------------------------------------------------------------------


def create_app_for(data: TenantData) -> Any:
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

    return create_app


def test_flask_apps_behind_the_dispatcher_see_only_their_tenant(
    data: TenantData, registry: TenantRegistry
) -> None:
    provisioner = Provisioner(
        registry, on_create=[data.create], on_delete=[data.archive]
    )
    for slug in ("acme", "bravo"):
        provisioner.create(slug, owner_email=f"o@{slug}.test", subdomain=slug)
    dispatcher = TenantDispatcher(
        registry,
        create_app_for(data),
        base_domain=BASE,
        policy=CachePolicy(poll_interval=None),
    )
    client = Client(dispatcher)
    try:
        for slug in ("acme", "bravo", "acme"):
            environ = {"HTTP_HOST": f"{slug}.{BASE}"}
            response = client.post(
                "/items", data=slug, environ_overrides=environ, buffered=True
            )
            assert response.status_code == 201
        answers = {
            slug: client.get(
                "/items",
                environ_overrides={"HTTP_HOST": f"{slug}.{BASE}"},
                buffered=True,
            ).json
            for slug in ("acme", "bravo")
        }
        assert answers == {"acme": ["acme", "acme"], "bravo": ["bravo"]}
    finally:
        dispatcher.close()


def test_sqlite_engines_are_disposed_with_the_app(data: TenantData) -> None:
    if data.directory is None:
        pytest.skip("the shared PostgreSQL engine is never disposed per app")
    acme = make_tenant("acme")
    data.create(acme)
    app = create_app_for(data)(acme)
    first = data.engine_for(acme)
    assert data.engine_for(acme) is first
    for dispose in app.extensions["dispatcher.teardown"]:
        dispose()
    assert data.engine_for(acme) is not first


def test_session_needs_a_bound_app_context(data: TenantData, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="outside a Flask app context"):
        data.session  # noqa: B018
    with Flask("plain").app_context(), pytest.raises(RuntimeError, match="'plain'"):
        data.session  # noqa: B018
    app = Flask("bound")
    data.init_app(app, make_tenant("acme"))
    with pytest.raises(RuntimeError, match="already bound"):
        data.init_app(app, make_tenant("acme"))


def test_the_session_lives_for_one_app_context(data: TenantData) -> None:
    acme = make_tenant("acme")
    data.create(acme)
    app = Flask("acme")
    data.init_app(app, acme)
    with app.app_context():
        session = data.session
        assert data.session is session
        session.add(Item(title="pending"))
    with app.app_context():
        assert data.session is not session
        assert data.session.scalars(select(Item)).all() == []


def test_an_evicted_apps_sqlite_engine_is_disposed_by_the_dispatcher(
    data: TenantData, registry: TenantRegistry
) -> None:
    if data.directory is None:
        pytest.skip("the shared PostgreSQL engine is never disposed per app")
    provisioner = Provisioner(registry, on_create=[data.create])
    acme, _ = (
        provisioner.create(slug, owner_email=f"o@{slug}.test", subdomain=slug)
        for slug in ("acme", "bravo")
    )
    dispatcher = TenantDispatcher(
        registry,
        create_app_for(data),
        base_domain=BASE,
        policy=CachePolicy(max_apps=1, poll_interval=None),
    )
    client = Client(dispatcher)
    try:
        host = {"HTTP_HOST": f"acme.{BASE}"}
        assert client.get("/items", environ_overrides=host, buffered=True).json == []
        served = data.engine_for(acme)
        assert data.engine_for(acme) is served
        host = {"HTTP_HOST": f"bravo.{BASE}"}
        assert client.get("/items", environ_overrides=host, buffered=True).json == []
        # acme's app was evicted for bravo's: its engine went with it.
        assert data.engine_for(acme) is not served
    finally:
        dispatcher.close()


@pytest.mark.filterwarnings(
    # Python 3.12+ warns on any fork of a threaded process: forking one is the test.
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)
def test_a_forked_child_never_uses_the_parents_pooled_connections(
    data: TenantData,
) -> None:
    """A server forking workers after the pool was made (``--preload``): two
    processes on one socket would interleave their protocol messages."""
    if data.directory is not None:
        pytest.skip("SQLite engines hold no connection between sessions")
    acme = make_tenant("acme")
    data.create(acme)
    backend_pid = text("SELECT pg_backend_pid()")
    with data.sessionmaker_for(acme)() as session:
        parents = session.scalar(backend_pid)  # its connection goes back to the pool

    def child() -> bool:
        with data.sessionmaker_for(acme)() as session:
            return bool(session.scalar(backend_pid) != parents)

    assert run_in_child(child) == 0


def test_create_makes_what_create_all_makes_in_the_tenants_schema(
    tenant_data_location: dict[str, Any],
) -> None:
    """The one-batch creation script: enum types, sequences, indexes, keys."""
    import enum

    from sqlalchemy import Enum, Index, Sequence, inspect

    class Mood(enum.Enum):
        happy = "happy"
        sad = "sad"

    metadata = MetaData()
    Table(
        "people",
        metadata,
        Column("id", Integer, Sequence("people_id_seq"), primary_key=True),
        Column("mood", Enum(Mood, name="mood")),
        Column("name", String(50)),
        Index("ix_people_name_mood", "name", "mood", unique=True),
    )
    Table(
        "pets",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("owner_id", ForeignKey("people.id", ondelete="CASCADE")),
    )
    data = TenantData(metadata=metadata, **tenant_data_location)
    acme, bravo = make_tenant("acme"), make_tenant("bravo")
    try:
        data.create(acme)
        data.create(bravo)
        schema = None if data.directory is not None else schema_name(acme)
        with data.engine_for(acme).begin() as connection:
            found = inspect(connection)
            assert set(found.get_table_names(schema=schema)) == {"people", "pets"}
            indexes = found.get_indexes("people", schema=schema)
            assert [(i["name"], i["unique"]) for i in indexes] == [
                ("ix_people_name_mood", True)
            ]
            (key,) = found.get_foreign_keys("pets", schema=schema)
            assert key["referred_table"] == "people"
            assert key["referred_schema"] in (None, schema)
            people = metadata.tables["people"]
            connection.execute(insert(people), {"mood": Mood.sad, "name": "Ada"})
            assert connection.scalar(select(people.c.mood)) is Mood.sad
            if schema is not None:
                enums = found.get_enums(schema=schema)  # type: ignore[attr-defined]
                assert [e["name"] for e in enums] == ["mood"]
                assert "people_id_seq" in found.get_sequence_names(schema=schema)
    finally:
        data.dispose()
