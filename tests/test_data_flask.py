"""Flask-SQLAlchemy on tenant data, and 503 for a tenant whose data is unreachable.

Real databases throughout: the tenant apps run behind a real TenantDispatcher;
an unreachable PostgreSQL server is a TcpProxy taken down, an unreachable
SQLite tenant a file moved away.
"""

from __future__ import annotations

import gc
import logging
import sqlite3
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import psycopg
import psycopg.errors
import pytest
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from helpers import make_tenant
from sqlalchemy import MetaData, String, create_engine, insert, make_url, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from tcp_proxy import TcpProxy
from werkzeug.test import Client

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry
from dispatcher.data import TENANT_SCHEMA, TenantData, schema_name
from dispatcher.data_flask import bind_flask_sqlalchemy, is_unreachable

BASE = "example.com"
#: Unlike the dispatcher's own 503s (5 s): says the tenant app answered.
RETRY_AFTER = 7


class Base(DeclarativeBase):
    metadata = MetaData()


# As a user writes it: one extension for every tenant app.
db = SQLAlchemy(model_class=Base)


class Item(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100), unique=True)


@pytest.fixture
def data(tenant_data_location: dict[str, Any]) -> Iterator[TenantData]:
    data = TenantData(
        metadata=db.metadata, retry_after=RETRY_AFTER, **tenant_data_location
    )
    yield data
    data.dispose()


def postgres_url(location: dict[str, Any]) -> str:
    url = location.get("url", "")
    if make_url(url).get_backend_name() != "postgresql":
        pytest.skip("needs DISPATCHER_TEST_DATABASE_URL (PostgreSQL)")
    return str(url)


def create_app_for(data_of: Callable[[Tenant], TenantData]) -> Any:
    """The tenant app a user writes: every view through the one ``db``."""

    def create_app(tenant: Tenant) -> Flask:
        app = Flask(f"tenant_{tenant.slug}")
        data_of(tenant).init_app(app, tenant, db=db)

        @app.get("/items")
        def items() -> list[str]:
            return list(db.session.scalars(select(Item.title).order_by(Item.title)))

        @app.post("/items")
        def add() -> tuple[str, int]:
            db.session.add(Item(title=request.get_data(as_text=True)))
            db.session.commit()
            return "", 201

        @app.get("/raw")
        def raw() -> list[str]:
            query = text(f"SELECT title FROM {TENANT_SCHEMA}.items ORDER BY title")
            return list(db.session.scalars(query))

        @app.post("/raw")
        def add_raw() -> tuple[str, int]:
            db.session.execute(
                text(f"INSERT INTO {TENANT_SCHEMA}.items (title) VALUES (:title)"),
                {"title": request.get_data(as_text=True)},
            )
            db.session.commit()
            return "", 201

        @app.get("/engine")
        def engine() -> list[str]:
            with db.engine.connect() as connection:
                return list(connection.scalars(select(Item.title).order_by(Item.id)))

        return app

    return create_app


def serve(
    registry: TenantRegistry, create_app: Callable[[Tenant], Flask]
) -> TenantDispatcher:
    return TenantDispatcher(
        registry, create_app, base_domain=BASE, policy=CachePolicy(poll_interval=None)
    )


def call(client: Client, method: str, slug: str, path: str, body: str = "") -> Any:
    return client.open(
        path,
        method=method,
        data=body,
        environ_overrides={"HTTP_HOST": f"{slug}.{BASE}"},
        buffered=True,
    )


# -- Flask-SQLAlchemy -----------------------------------------------------------


def test_tenant_apps_sharing_one_db_never_see_each_others_rows(
    data: TenantData, registry: TenantRegistry, tenant_data_location: dict[str, Any]
) -> None:
    if data.directory is None:
        # A decoy where search_path points: an unqualified name would find it.
        decoy = create_engine(tenant_data_location["url"])
        with decoy.begin() as connection:
            db.metadata.create_all(connection)
            connection.execute(insert(Item.__table__), {"title": "decoy"})
        decoy.dispose()
    for slug in ("acme", "bravo"):
        data.create(
            registry.create_tenant(slug, owner_email=f"o@{slug}.test", subdomain=slug)
        )
    dispatcher = serve(registry, create_app_for(lambda _tenant: data))
    client = Client(dispatcher)
    try:
        # Interleaved: acme's app, bravo's, then acme's again, all on one db.
        for n, slug in enumerate(("acme", "bravo", "acme")):
            for path, way in (("/items", "orm"), ("/raw", "raw")):
                response = call(client, "POST", slug, path, f"{way}-{slug}-{n}")
                assert response.status_code == 201
        expected = {
            "acme": {"orm-acme-0", "raw-acme-0", "orm-acme-2", "raw-acme-2"},
            "bravo": {"orm-bravo-1", "raw-bravo-1"},
        }
        for slug, titles in expected.items():
            for path in ("/items", "/raw", "/engine"):
                assert set(call(client, "GET", slug, path).json) == titles, path
    finally:
        dispatcher.close()


def test_many_tenant_apps_hold_one_pool_within_its_bound(
    tenant_data_location: dict[str, Any], registry: TenantRegistry
) -> None:
    url = make_url(postgres_url(tenant_data_location))
    data = TenantData(
        metadata=db.metadata, pool_size=2, max_overflow=1, **tenant_data_location
    )
    slugs = [f"t{n}" for n in range(40)]
    application = url.query["application_name"]
    monitor = create_engine(url.set(query={}), isolation_level="AUTOCOMMIT")
    count = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a")
    local = threading.local()
    seen: list[int] = []
    pools: set[int] = set()
    answers: dict[str, Any] = {}
    errors: list[BaseException] = []

    def create_app(tenant: Tenant) -> Flask:
        app = Flask(f"tenant_{tenant.slug}")
        data.init_app(app, tenant, db=db)

        @app.post("/count")
        def add_and_count() -> list[str]:
            db.session.add(Item(title=tenant.slug))
            db.session.flush()  # holds a pooled connection while counting
            seen.append(local.watcher.scalar(count, {"a": application}))
            pools.add(id(db.engine.pool))
            return list(db.session.scalars(select(Item.title)))

        return app

    for slug in slugs:
        data.create(
            registry.create_tenant(slug, owner_email=f"o@{slug}.test", subdomain=slug)
        )
    dispatcher = serve(registry, create_app)

    def work(part: list[str]) -> None:
        client = Client(dispatcher)
        try:
            with monitor.connect() as local.watcher:
                for slug in part:
                    answers[slug] = call(client, "POST", slug, "/count").json
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    try:
        threads = [threading.Thread(target=work, args=(slugs[n::8],)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert answers == {slug: [slug] for slug in slugs}
        # One pool for 40 apps, the one TenantData's engines share.
        assert pools == {id(data.engine_for(make_tenant("x")).pool)}
        assert len(seen) == 40
        assert 1 <= max(seen) <= data.bound == 3
    finally:
        dispatcher.close()
        data.dispose()
        monitor.dispose()


def test_a_bound_app_gets_no_engine_of_its_own_and_is_freed(data: TenantData) -> None:
    acme = make_tenant("acme")
    data.create(acme)
    app = Flask("acme")
    data.init_app(app, acme, db=db)
    with app.app_context():
        assert app.extensions["sqlalchemy"] is db
        assert db.engine.pool is data.engine_for(acme).pool
        assert db.session.get_bind() is db.engine
        assert db.session.scalars(select(Item)).all() == []
        session = db.session()
    with app.app_context():
        assert db.session() is not session  # removed at the context's teardown
    freed = weakref.ref(app)
    del app
    gc.collect()
    # An evicted tenant app is not kept alive by the db every app shares.
    assert freed() is None


def test_a_bound_app_cut_after_teardown_is_freed_by_reference_counting(
    data: TenantData,
) -> None:
    """What the binding adds to an app (its 503 handler, its session's
    teardown) makes no cycle of its own: once the collector has cut what
    Flask makes, reference counting alone frees the app."""
    from dispatcher.entries import default_teardown
    from dispatcher.reclaim import break_cycles

    acme = make_tenant("acme")
    data.create(acme)
    gc.disable()
    try:
        app = Flask("acme")
        data.init_app(app, acme, db=db)
        with app.app_context():
            assert db.session.scalars(select(Item)).all() == []
        freed = weakref.ref(app)
        default_teardown(app, acme)
        break_cycles(app)
        del app
        assert freed() is None
    finally:
        gc.enable()


def test_flask_sqlalchemy_keeps_each_apps_engines_where_the_binding_puts_them() -> None:
    """Fails loudly if Flask-SQLAlchemy moves the private ``_app_engines``
    that ``data_flask._set_app_engines`` writes (the only private use)."""
    plain = SQLAlchemy()
    assert isinstance(plain._app_engines, WeakKeyDictionary)
    app = Flask("plain")
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    plain.init_app(app)
    with app.app_context():
        assert plain._app_engines[app] == {None: plain.engine}
        assert plain.session.get_bind() is plain.engine
    plain._app_engines[app][None].dispose()


def test_two_apps_nested_each_use_their_own_tenants_engine(data: TenantData) -> None:
    acme, bravo = make_tenant("acme"), make_tenant("bravo")
    apps = {}
    for tenant in (acme, bravo):
        data.create(tenant)
        apps[tenant.slug] = Flask(tenant.slug)
        data.init_app(apps[tenant.slug], tenant, db=db)
        with apps[tenant.slug].app_context():
            db.session.add(Item(title=tenant.slug))
            db.session.commit()
    with apps["acme"].app_context():
        outer = db.session()
        with apps["bravo"].app_context():
            assert db.session() is not outer
            assert db.session.scalars(select(Item.title)).all() == ["bravo"]
        assert db.session() is outer
        assert db.session.scalars(select(Item.title)).all() == ["acme"]


def test_a_session_left_by_a_dead_context_never_reaches_another_tenant(
    data: TenantData,
) -> None:
    """db.session is one scoped session for every app, keyed by the context's
    id(). A teardown that raised before it was removed leaves it behind; a
    later context of another tenant at the same address must not inherit it."""
    acme, bravo = make_tenant("acme"), make_tenant("bravo")
    apps = {}
    for tenant in (acme, bravo):
        data.create(tenant)
        apps[tenant.slug] = Flask(tenant.slug)
        data.init_app(apps[tenant.slug], tenant, db=db)
    with apps["acme"].app_context():
        db.session.add(Item(title="acme's"))
        db.session.commit()
    context = apps["bravo"].app_context()
    # What a dead acme context at the same address would have left.
    stale = Session(bind=data.engine_for(acme))
    db.session.registry.registry[id(context)] = stale
    with context:
        assert db.session() is not stale
        assert db.session.scalars(select(Item.title)).all() == []
    assert id(context) not in db.session.registry.registry


# -- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [pytest.param(object(), id="object"), pytest.param("db", id="str")]
)
def test_db_must_be_a_flask_sqlalchemy_extension(data: TenantData, value: Any) -> None:
    app = Flask("acme")
    with pytest.raises(
        TypeError, match="flask_sqlalchemy.SQLAlchemy, not (object|str)"
    ):
        data.init_app(app, make_tenant("acme"), db=value)
    assert "sqlalchemy" not in app.extensions


def test_without_flask_sqlalchemy_only_db_fails(
    data: TenantData, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if not installed: importing it raises ImportError.
    monkeypatch.setitem(sys.modules, "flask_sqlalchemy", None)
    data.init_app(Flask("acme"), make_tenant("acme"))
    with pytest.raises(
        TypeError, match="not object .Flask-SQLAlchemy is not installed"
    ):
        data.init_app(Flask("bravo"), make_tenant("bravo"), db=object())


def test_an_app_with_an_engine_of_its_own_is_refused(data: TenantData) -> None:
    app = Flask("acme")
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    with pytest.raises(ValueError, match="SQLALCHEMY_DATABASE_URI"):
        bind_flask_sqlalchemy(db, app, data.engine_for(make_tenant("acme")))
    own = SQLAlchemy()
    own.init_app(app)
    app.config.pop("SQLALCHEMY_DATABASE_URI")
    with pytest.raises(RuntimeError, match="instead of calling db.init_app"):
        bind_flask_sqlalchemy(db, app, data.engine_for(make_tenant("acme")))
    with app.app_context():
        own.engine.dispose()


def test_a_db_with_other_models_than_the_data_is_refused(data: TenantData) -> None:
    """data.create makes data.metadata's tables: db's models must be those."""

    class Other(DeclarativeBase):
        metadata = MetaData()

    app = Flask("acme")
    with pytest.raises(ValueError, match="db.metadata is not this TenantData's"):
        data.init_app(app, make_tenant("acme"), db=SQLAlchemy(model_class=Other))
    assert "sqlalchemy" not in app.extensions
    assert "dispatcher.data" not in app.extensions


def test_models_with_a_bind_key_are_refused(data: TenantData) -> None:
    class Other(DeclarativeBase):
        metadata = MetaData()

    keyed = SQLAlchemy(model_class=Other)

    class Shared(keyed.Model):  # type: ignore[name-defined,misc]
        __bind_key__ = "shared"
        id: Mapped[int] = mapped_column(primary_key=True)

    app = Flask("acme")
    with pytest.raises(ValueError, match=r"__bind_key__ \['shared'\]"):
        bind_flask_sqlalchemy(keyed, app, data.engine_for(make_tenant("acme")))
    assert "sqlalchemy" not in app.extensions


# -- unreachable data: 503 ------------------------------------------------------


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "dispatcher.data_flask"
    ]


def assert_unavailable(response: Any, *hidden: str) -> None:
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(RETRY_AFTER)
    body = response.get_data(as_text=True)
    assert "unavailable" in body
    for secret in hidden:
        assert secret not in body


def test_a_tenant_on_a_server_that_is_down_gets_503_and_recovers(
    tenant_data_location: dict[str, Any],
    registry: TenantRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = make_url(postgres_url(tenant_data_location))
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    proxy.up()
    behind_proxy = url.set(host="127.0.0.1", port=proxy.port)
    down_data = TenantData(behind_proxy, metadata=db.metadata, retry_after=RETRY_AFTER)
    direct_data = TenantData(url, metadata=db.metadata, retry_after=RETRY_AFTER)
    datas = {"acme": down_data, "bravo": direct_data}
    for slug, data in datas.items():
        data.create(
            registry.create_tenant(slug, owner_email=f"o@{slug}.test", subdomain=slug)
        )
    create_app = create_app_for(lambda tenant: datas[tenant.slug])

    def tenant_app(tenant: Tenant) -> Flask:
        app = create_app(tenant)

        @app.get("/driver")
        def driver() -> str:
            # A driver error no engine wrapped: a connection of the app's own.
            psycopg.connect(
                behind_proxy.set(drivername="postgresql").render_as_string(
                    hide_password=False
                ),
                connect_timeout=2,
            ).close()
            return "connected"

        return app

    dispatcher = serve(registry, tenant_app)
    client = Client(dispatcher)
    try:
        for slug in datas:
            assert (
                call(client, "POST", slug, "/items", f"before-{slug}").status_code
                == 201
            )
        proxy.down()
        caplog.set_level(logging.WARNING, logger="dispatcher.data_flask")
        for method, path in (("GET", "/items"), ("POST", "/raw"), ("GET", "/driver")):
            caplog.clear()
            response = call(client, method, "acme", path, "during")
            assert_unavailable(response, str(proxy.port), "127.0.0.1", "Connection")
            [message] = refusals(caplog)
            assert "tenant 'acme'" in message and "answered 503" in message
            # Another server's tenant is served meanwhile.
            assert call(client, "GET", "bravo", "/items").json == ["before-bravo"]
        assert call(client, "POST", "bravo", "/items", "during").status_code == 201
        proxy.up()
        # Nothing restarted: the pool reconnects, the app is the cached one.
        assert call(client, "GET", "acme", "/items").json == ["before-acme"]
        assert call(client, "POST", "acme", "/items", "after").status_code == 201
        assert call(client, "GET", "acme", "/driver").get_data() == b"connected"
        assert call(client, "GET", "bravo", "/items").json == ["before-bravo", "during"]
    finally:
        dispatcher.close()
        proxy.down()
        down_data.dispose()
        direct_data.dispose()


def test_a_sqlite_tenant_whose_file_is_gone_gets_503_and_recovers(
    data: TenantData, registry: TenantRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    if data.directory is None:
        pytest.skip("a tenant's own file is SQLite's")
    tenants = {
        slug: registry.create_tenant(slug, owner_email=f"o@{slug}.test", subdomain=slug)
        for slug in ("acme", "bravo")
    }
    for tenant in tenants.values():
        data.create(tenant)
    dispatcher = serve(registry, create_app_for(lambda _tenant: data))
    client = Client(dispatcher)
    path = data.directory / f"{schema_name(tenants['acme'])}.sqlite3"
    aside = path.with_name("aside")
    try:
        assert call(client, "POST", "acme", "/items", "kept").status_code == 201
        path.rename(aside)  # an unmounted or failing disk, for one tenant
        caplog.set_level(logging.WARNING, logger="dispatcher.data_flask")
        assert_unavailable(call(client, "GET", "acme", "/items"), str(data.directory))
        assert len(refusals(caplog)) == 1
        assert call(client, "GET", "bravo", "/items").json == []
        aside.rename(path)
        assert call(client, "GET", "acme", "/items").json == ["kept"]
    finally:
        dispatcher.close()


@pytest.fixture
def unreachable(
    tenant_data_location: dict[str, Any],
) -> Iterator[tuple[TenantData, Tenant]]:
    """A TenantData and a tenant whose data cannot be reached.

    PostgreSQL: a loopback port nothing listens on; SQLite: no file.
    """
    location = dict(tenant_data_location)
    if "url" in location and make_url(location["url"]).get_backend_name() != "sqlite":
        nowhere = TcpProxy(("127.0.0.1", 9))  # never up: connections are refused
        location["url"] = make_url(location["url"]).set(
            host="127.0.0.1", port=nowhere.port
        )
    data = TenantData(metadata=db.metadata, retry_after=RETRY_AFTER, **location)
    yield data, make_tenant("acme")
    data.dispose()


def test_the_apps_own_503_page_is_used_and_keeps_retry_after(
    unreachable: tuple[TenantData, Tenant], caplog: pytest.LogCaptureFixture
) -> None:
    data, acme = unreachable
    app = create_app_for(lambda _tenant: data)(acme)

    @app.errorhandler(503)
    def branded(_error: Exception) -> tuple[str, int]:
        return "our own page", 503

    caplog.set_level(logging.WARNING, logger="dispatcher.data_flask")
    response = app.test_client().get("/items")
    assert response.status_code == 503
    assert response.get_data(as_text=True) == "our own page"
    assert response.headers["Retry-After"] == str(RETRY_AFTER)
    # Called directly, not through the dispatcher: the slug is the binding's.
    [message] = refusals(caplog)
    assert message.startswith("tenant 'acme': its data is unreachable")


def test_data_session_gets_503_too(unreachable: tuple[TenantData, Tenant]) -> None:
    data, acme = unreachable
    app = Flask("acme")
    data.init_app(app, acme)

    @app.get("/")
    def index() -> list[str]:
        return list(data.session.scalars(select(Item.title)))

    assert_unavailable(app.test_client().get("/"))


def test_a_pool_with_no_free_connection_in_time_gets_503(
    tenant_data_location: dict[str, Any],
) -> None:
    postgres_url(tenant_data_location)
    data = TenantData(
        metadata=db.metadata,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.05,
        retry_after=RETRY_AFTER,
        **tenant_data_location,
    )
    acme = make_tenant("acme")
    try:
        data.create(acme)
        client = create_app_for(lambda _tenant: data)(acme).test_client()
        with data.engine_for(acme).connect() as held:
            held.execute(text("SELECT 1"))  # the pool's only connection
            assert_unavailable(client.get("/items"))
        assert client.get("/items").json == []
    finally:
        data.dispose()


# -- other database errors stay the app's ---------------------------------------


@pytest.mark.parametrize(
    "handled",
    [
        pytest.param(None, id="no handler: 500"),
        pytest.param(Exception, id="Exception"),
        pytest.param(sa_exc.SQLAlchemyError, id="SQLAlchemyError"),
        pytest.param(sa_exc.IntegrityError, id="IntegrityError"),
    ],
)
def test_ordinary_sql_errors_go_to_the_apps_handler_or_500(
    data: TenantData, handled: type[Exception] | None
) -> None:
    acme = make_tenant("acme")
    data.create(acme)
    app = create_app_for(lambda _tenant: data)(acme)
    if handled is not None:

        @app.errorhandler(handled)
        def mine(error: Exception) -> tuple[str, int]:
            return type(error).__name__, 418

    @app.get("/duplicate")
    def duplicate() -> str:
        for _ in range(2):
            db.session.add(Item(title="same"))
            db.session.commit()
        return "unreachable"

    @app.get("/missing")
    def missing() -> str:
        # PostgreSQL: ProgrammingError; SQLite: an OperationalError, "no such table".
        db.session.execute(text(f"SELECT * FROM {TENANT_SCHEMA}.missing"))
        return "unreachable"

    @app.get("/timeout")
    def timeout() -> str:
        # An OperationalError (57014) the server answered: not an outage.
        db.session.execute(text("SET LOCAL statement_timeout = '1ms'"))
        db.session.execute(text("SELECT pg_sleep(1)"))
        return "unreachable"

    paths = ["/duplicate", "/missing"]
    if data.directory is None:
        paths.append("/timeout")
    client = app.test_client()
    for path in paths:
        response = client.get(path)
        caught = handled is not None and (
            handled is not sa_exc.IntegrityError or path == "/duplicate"
        )
        assert response.status_code == (418 if caught else 500), path
        assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    ("error", "unreachable"),
    [
        pytest.param(sa_exc.TimeoutError("QueuePool limit"), True, id="pool timeout"),
        pytest.param(
            sa_exc.OperationalError("", {}, psycopg.OperationalError("refused")),
            True,
            id="connection refused",
        ),
        pytest.param(
            sa_exc.InterfaceError(
                "", {}, psycopg.InterfaceError("closed"), connection_invalidated=True
            ),
            True,
            id="invalidated connection",
        ),
        pytest.param(
            sa_exc.OperationalError("", {}, psycopg.errors.AdminShutdown()),
            True,
            id="57P01 admin shutdown",
        ),
        pytest.param(
            sa_exc.OperationalError("", {}, psycopg.errors.CannotConnectNow()),
            True,
            id="57P03 cannot connect now",
        ),
        pytest.param(
            sa_exc.OperationalError("", {}, psycopg.errors.TooManyConnections()),
            True,
            id="53300 too many connections",
        ),
        pytest.param(
            sa_exc.OperationalError("", {}, psycopg.errors.ConnectionFailure()),
            True,
            id="08006 connection failure",
        ),
        pytest.param(psycopg.OperationalError("refused"), True, id="raw psycopg"),
        pytest.param(
            sa_exc.OperationalError("", {}, psycopg.errors.QueryCanceled()),
            False,
            id="57014 statement timeout",
        ),
        pytest.param(
            sa_exc.OperationalError("", {}, psycopg.errors.SerializationFailure()),
            False,
            id="40001 serialization",
        ),
        pytest.param(
            sa_exc.OperationalError("", {}, psycopg.errors.DeadlockDetected()),
            False,
            id="40P01 deadlock",
        ),
        pytest.param(psycopg.errors.DeadlockDetected(), False, id="raw deadlock"),
        pytest.param(
            sa_exc.IntegrityError("", {}, psycopg.errors.UniqueViolation()),
            False,
            id="unique violation",
        ),
        pytest.param(
            sa_exc.ProgrammingError("", {}, psycopg.errors.UndefinedTable()),
            False,
            id="undefined table",
        ),
        pytest.param(sa_exc.NoResultFound(), False, id="not a driver error"),
        pytest.param(ValueError("x"), False, id="not a database error"),
    ],
)
def test_is_unreachable(error: BaseException, unreachable: bool) -> None:
    assert is_unreachable(error) is unreachable


def sqlite_error(tmp_path: Path, sql: str | None) -> sqlite3.Error:
    try:
        connection = sqlite3.connect(f"file:{tmp_path / 'x.db'}?mode=rw", uri=True)
        if sql is not None:
            connection.execute(sql)
    except sqlite3.Error as error:
        return error
    raise AssertionError("no error")


def test_is_unreachable_for_sqlite(tmp_path: Path) -> None:
    cannot_open = sqlite_error(tmp_path, None)
    assert is_unreachable(cannot_open)
    assert is_unreachable(sa_exc.OperationalError("", {}, cannot_open))
    sqlite3.connect(tmp_path / "x.db").close()
    no_table = sqlite_error(tmp_path, "SELECT * FROM missing")
    assert not is_unreachable(no_table)
    assert not is_unreachable(sa_exc.OperationalError("", {}, no_table))


def test_binding_an_app_to_sqlite_data_imports_no_postgresql_driver(
    tmp_path: Path,
) -> None:
    # `tenantctl each` builds one app per forked child: importing psycopg
    # there (for error classes SQLite data can never raise) cost each tenant
    # 0.1-0.2 s.
    import subprocess

    probe = f"""
import sys
from flask import Flask
from sqlalchemy import MetaData
from dispatcher.data import TenantData
from helpers import make_tenant
data = TenantData("sqlite://", metadata=MetaData(), directory={str(tmp_path)!r})
data.init_app(Flask("probe"), make_tenant("acme"))
print(sorted(name for name in ("psycopg", "psycopg2") if name in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parent,
    )

    assert done.stdout.strip() == "[]"
