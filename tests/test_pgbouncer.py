"""Behind a real PgBouncer 1.18 in transaction mode (Debian's package).

In transaction mode a server connection serves one client for one
transaction, then whichever client comes next. What a transaction carries
(``SET LOCAL``, schema-qualified names) is safe there; what a session
carries (``SET``, prepared statements, ``LISTEN``) is not: it stays on the
server connection for the next client. These tests show both sides with a
real pooler: the registry's reads and writes work through it (their timeouts
are ``SET LOCAL``), and a plain ``SET search_path`` leaks from one client to
another, the hazard behind django-tenants #545/#1112/#732 and the reason
tenant data is addressed with ``schema_translate_map``.

Each test gets its own PgBouncer (``tests/pgbouncer.py``) in front of its own
schema: PgBouncer refuses the ``options`` startup parameter that puts that
schema on the direct URL's search path, so its database entry sets the
search path when it opens a server connection instead (``connect_query``).
Engines through it are made with ``connect_args=NO_PREPARE``: psycopg 3
prepares a query it has run five times, and a prepared statement stays on
the server connection, where the next client's clashes with it. The
registry's engine (``dispatcher.database``) and TenantData's do the same.
Skipped on SQLite and where PgBouncer is not installed.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from pgbouncer import NO_PREPARE, PgBouncer, running_pgbouncer
from registry_helpers import ACME_SETTINGS
from sqlalchemy import (
    Column,
    Engine,
    MetaData,
    String,
    Table,
    create_engine,
    func,
    make_url,
    select,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dispatcher import Tenant, TenantRegistry
from dispatcher.data import TENANT_SCHEMA, TenantData
from dispatcher.exceptions import RegistryUnavailable
from dispatcher.notify import PostgresNotifier

THREADS = 8
READS_PER_THREAD = 20  # well past psycopg's prepare threshold (5)


@contextmanager
def _bouncer(database_url: str, backend: str, *, pool_size: int) -> Iterator[PgBouncer]:
    if backend != "postgresql":
        pytest.skip(
            "PgBouncer pools PostgreSQL; this run tests SQLite "
            "(set DISPATCHER_TEST_DATABASE_URL to a PostgreSQL server)"
        )
    with running_pgbouncer(database_url, pool_size=pool_size) as bouncer:
        yield bouncer


@pytest.fixture
def pgbouncer_url(database_url: str, backend: str) -> Iterator[str]:
    """A URL through PgBouncer (transaction mode, 5 server connections) to the
    test's database and schema."""
    with _bouncer(database_url, backend, pool_size=5) as bouncer:
        yield bouncer.url


@pytest.fixture
def one_connection_url(database_url: str, backend: str) -> Iterator[str]:
    """As ``pgbouncer_url``, with one server connection that every client shares."""
    with _bouncer(database_url, backend, pool_size=1) as bouncer:
        yield bouncer.url


def _engine(url: str, **options: object) -> Engine:
    return create_engine(url, connect_args=NO_PREPARE, **options)


# -- the registry through PgBouncer ----------------------------------------------


@pytest.fixture
def pooled_registry(
    registry: TenantRegistry, pgbouncer_url: str
) -> Iterator[TenantRegistry]:
    """A registry through PgBouncer on the schema ``registry`` migrated directly."""
    engine = _engine(pgbouncer_url)
    pooled = TenantRegistry(engine, timeout=1.0)
    yield pooled
    pooled.close()
    engine.dispose()


def test_the_registry_writes_and_reads_through_pgbouncer(
    registry: TenantRegistry, pooled_registry: TenantRegistry
) -> None:
    created = pooled_registry.create_tenant("acme", owner_name="Ada", **ACME_SETTINGS)

    assert pooled_registry.find_by_slug("acme") == created
    assert pooled_registry.find_by_host("shop.acme.com") == created
    assert pooled_registry.find_by_path_prefix("acme") == created
    # Written through the pooler into the test's schema, where a direct
    # connection finds it.
    assert registry.find_by_slug("acme") == created


def test_concurrent_registry_reads_through_pgbouncer(
    pooled_registry: TenantRegistry,
) -> None:
    """Each read is ``BEGIN; SET LOCAL ...; SELECT; COMMIT`` on whichever server
    connection PgBouncer hands out; many threads, many repeats, no errors."""
    pooled_registry.create_tenant("acme", owner_name="Ada", **ACME_SETTINGS)
    pooled_registry.create_tenant(
        "globex", owner_name="Grace", owner_email="grace@globex.test"
    )

    def reads(_: int) -> set[str | None]:
        seen = set()
        for _ in range(READS_PER_THREAD):
            for slug in ("acme", "globex"):
                tenant = pooled_registry.find_by_slug(slug)
                seen.add(tenant.slug if tenant else None)
        return seen

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(reads, range(THREADS)))

    assert results == [{"acme", "globex"}] * THREADS


def test_the_read_timeout_holds_through_pgbouncer_and_stays_in_its_transaction(
    registry: TenantRegistry, one_connection_url: str
) -> None:
    """The read timeout is ``SET LOCAL``: it stops a slow read behind the
    pooler, and the one server connection has no timeout left afterwards."""
    engine = _engine(one_connection_url, isolation_level="AUTOCOMMIT")
    pooled = TenantRegistry(engine, timeout=0.2)
    try:
        with pytest.raises(RegistryUnavailable):
            pooled.database.read(select(func.pg_sleep(2)))
        with engine.connect() as other:
            assert other.execute(text("SHOW statement_timeout")).scalar() == "0"
    finally:
        pooled.close()
        engine.dispose()


def test_a_registry_made_from_a_url_reads_through_pgbouncer(
    registry: TenantRegistry, pgbouncer_url: str
) -> None:
    registry.create_tenant("acme", owner_name="Ada", **ACME_SETTINGS)
    pooled = TenantRegistry(pgbouncer_url, notifier=None)

    def reads(_: int) -> None:
        for _ in range(READS_PER_THREAD):
            assert pooled.find_by_slug("acme") is not None

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(reads, range(THREADS)))
    finally:
        pooled.close()


def test_writes_through_pgbouncer_wake_a_listener_connected_directly(
    registry: TenantRegistry, database_url: str, pgbouncer_url: str
) -> None:
    """``pg_notify`` travels with the write's transaction, so it works through
    the pooler; ``LISTEN`` is session state, so the notifier's listener needs
    the direct URL: one through PgBouncer never hears a thing."""
    notifier = PostgresNotifier(database_url, channel=f"c_{uuid.uuid4().hex[:12]}")
    through_pooler = PostgresNotifier(pgbouncer_url, channel=notifier.channel)
    engine = _engine(pgbouncer_url)
    pooled = TenantRegistry(engine, notifier=notifier)
    try:
        with notifier.listen() as direct, through_pooler.listen() as pooled_listener:
            pooled.create_tenant("acme", owner_name="Ada", **ACME_SETTINGS)

            assert direct.wait(5.0)
            assert not pooled_listener.wait(0.5)
    finally:
        pooled.close()
        engine.dispose()


# -- session state in transaction mode -------------------------------------------


@pytest.fixture
def two_schemas(database_url: str, backend: str) -> Iterator[tuple[str, str]]:
    """Two schemas standing for two tenants, each with ``items`` holding its name."""
    if backend != "postgresql":
        pytest.skip("schemas are PostgreSQL's")
    base = make_url(database_url)
    direct = create_engine(
        base.set(query={k: v for k, v in base.query.items() if k != "options"}),
        isolation_level="AUTOCOMMIT",
    )
    names = tuple(f"s_{uuid.uuid4().hex[:12]}" for _ in range(2))
    try:
        with direct.connect() as connection:
            for name in names:
                connection.execute(text(f'CREATE SCHEMA "{name}"'))
                connection.execute(text(f'CREATE TABLE "{name}".items (owner text)'))
                connection.execute(
                    text(f'INSERT INTO "{name}".items VALUES (:owner)'), {"owner": name}
                )
        yield names[0], names[1]
    finally:
        with direct.connect() as connection:
            for name in names:
                connection.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        direct.dispose()


ITEMS = Table("items", MetaData(), Column("owner", String))


def test_a_set_search_path_leaks_to_another_client_in_transaction_mode(
    one_connection_url: str, two_schemas: tuple[str, str]
) -> None:
    """django-tenants' hazard, made deterministic with one server connection:
    client B sets its tenant's search path, client A sets its own, and B's
    next query reads A's rows."""
    schema_a, schema_b = two_schemas
    engine = _engine(one_connection_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as client_a, engine.connect() as client_b:
            client_b.execute(text(f'SET search_path TO "{schema_b}"'))
            client_a.execute(text(f'SET search_path TO "{schema_a}"'))

            assert client_b.execute(text("SHOW search_path")).scalar() == schema_a
            assert client_b.execute(select(ITEMS.c.owner)).scalars().all() == [schema_a]
    finally:
        engine.dispose()


def test_schema_translate_map_is_immune_to_a_leaked_search_path(
    one_connection_url: str, two_schemas: tuple[str, str]
) -> None:
    """The same interleaving, with each client's tenant in the statement's
    names (how tenant data is addressed): each reads its own rows."""
    schema_a, schema_b = two_schemas
    engine = _engine(one_connection_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as client_a, engine.connect() as client_b:
            as_a = client_a.execution_options(schema_translate_map={None: schema_a})
            as_b = client_b.execution_options(schema_translate_map={None: schema_b})
            # Another client's SET lands on the shared server connection.
            client_a.execute(text(f'SET search_path TO "{schema_a}"'))

            assert as_b.execute(select(ITEMS.c.owner)).scalars().all() == [schema_b]
            assert as_a.execute(select(ITEMS.c.owner)).scalars().all() == [schema_a]
    finally:
        engine.dispose()


def test_a_set_local_does_not_leak_to_another_client(
    one_connection_url: str, two_schemas: tuple[str, str]
) -> None:
    """What the registry's reads do: a ``SET LOCAL`` ends with its transaction,
    so the next client on the same server connection does not see it."""
    schema_a, _ = two_schemas
    transactional = _engine(one_connection_url)
    autocommit = _engine(one_connection_url, isolation_level="AUTOCOMMIT")
    try:
        with transactional.connect() as client_a, autocommit.connect() as client_b:
            before = client_b.execute(text("SHOW search_path")).scalar()
            with client_a.begin():
                client_a.execute(text(f'SET LOCAL search_path TO "{schema_a}"'))
                shown = client_a.execute(text("SHOW search_path")).scalar()
                assert shown == schema_a

            assert client_b.execute(text("SHOW search_path")).scalar() == before
            assert before != schema_a
    finally:
        transactional.dispose()
        autocommit.dispose()


def test_pgbouncer_serves_many_clients_on_one_server_connection(
    one_connection_url: str,
) -> None:
    """The pool bound is PgBouncer's: 8 client threads, one backend pid."""
    engine = _engine(one_connection_url, pool_size=THREADS, max_overflow=0)
    pids: set[int] = set()
    lock = threading.Lock()

    def query(_: int) -> None:
        with engine.connect() as connection:
            pid = connection.execute(select(func.pg_backend_pid())).scalar_one()
        with lock:
            pids.add(pid)

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(query, range(THREADS * 4)))
    finally:
        engine.dispose()
    assert len(pids) == 1


# -- tenant data through PgBouncer ------------------------------------------------

TENANTS = ("acme", "globex", "initech", "umbrella")
WRITERS_PER_TENANT = 3
ROUNDS = 15
# Reads of one statement per transaction: below psycopg's prepare threshold
# (5), which TenantData's engine keeps; see the xfail test after this one.
REPEATS = 3


class Base(DeclarativeBase):
    metadata = MetaData()


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(50))
    writer: Mapped[int]


def test_many_threads_of_several_tenants_never_cross_through_pgbouncer(
    registry: TenantRegistry,
    tenant_data_location: dict[str, Any],  # drops the tenants' schemas afterwards
    one_connection_url: str,
) -> None:
    """Tenant data in transaction mode, the hardest case: one server connection
    shared by every thread of every tenant. Each writer inserts rows marked
    with its tenant and reads its tenant's rows back (ORM, Core and ``text()``
    with ``TENANT_SCHEMA``): not one row of another tenant, none lost."""
    data = TenantData(one_connection_url, metadata=Base.metadata, pool_size=4)
    tenants = [
        registry.create_tenant(slug, owner_name=None, owner_email=f"o@{slug}.test")
        for slug in TENANTS
    ]
    for tenant in tenants:
        data.create(tenant)
    start = threading.Barrier(len(tenants) * WRITERS_PER_TENANT)

    def write_and_read(tenant: Tenant, writer: int) -> set[str]:
        seen: set[str] = set()
        sessions = data.sessionmaker_for(tenant)
        engine = data.engine_for(tenant)
        raw = text(f"SELECT owner FROM {TENANT_SCHEMA}.items")
        start.wait()
        for _ in range(ROUNDS):
            with sessions.begin() as session:
                session.add(Item(owner=tenant.slug, writer=writer))
            with sessions() as session:
                for _ in range(REPEATS):
                    seen.update(session.scalars(select(Item.owner)))
            with engine.connect() as connection:
                seen.update(connection.scalars(select(Item.__table__.c.owner)))
                seen.update(connection.scalars(raw))
        return seen

    try:
        with ThreadPoolExecutor(len(tenants) * WRITERS_PER_TENANT) as pool:
            futures = {
                (tenant.slug, writer): pool.submit(write_and_read, tenant, writer)
                for tenant in tenants
                for writer in range(WRITERS_PER_TENANT)
            }
            seen = {key: future.result() for key, future in futures.items()}
        assert seen == {key: {key[0]} for key in futures}
        for tenant in tenants:
            with data.sessionmaker_for(tenant)() as session:
                rows = session.execute(select(Item.owner, Item.writer)).all()
            assert sorted(rows) == sorted(
                (tenant.slug, writer)
                for writer in range(WRITERS_PER_TENANT)
                for _ in range(ROUNDS)
            )
    finally:
        data.dispose()


def test_tenant_data_repeating_a_statement_in_a_transaction_through_pgbouncer(
    registry: TenantRegistry,
    tenant_data_location: dict[str, Any],  # drops the tenants' schemas afterwards
    one_connection_url: str,
) -> None:
    """Two clients on PgBouncer's one server connection, one after the other,
    each reading its tenant's rows six times in a transaction."""
    data = TenantData(one_connection_url, metadata=Base.metadata)
    acme, globex = (
        registry.create_tenant(slug, owner_name=None, owner_email=f"o@{slug}.test")
        for slug in ("acme", "globex")
    )
    try:
        for tenant in (acme, globex):
            data.create(tenant)
            with data.sessionmaker_for(tenant).begin() as session:
                session.add(Item(owner=tenant.slug, writer=0))
        read_six_times(data, acme)  # prepares _pg3_0 on the server connection
        # Held idle, outside a transaction: it holds no server connection, but
        # makes the pool open a second client connection for globex.
        with data.engine_for(acme).connect():
            read_six_times(data, globex)  # prepares its own _pg3_0 there too
    finally:
        data.dispose()


def read_six_times(data: TenantData, tenant: Tenant) -> None:
    with data.sessionmaker_for(tenant).begin() as session:
        for _ in range(6):
            assert session.scalars(select(Item.owner)).all() == [tenant.slug]
