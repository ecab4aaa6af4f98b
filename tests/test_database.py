"""Database: engine set-up, bounded waits, the write lock and the driver errors
mapped to the registry's own."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from registry_helpers import Write
from sqlalchemy import Connection, create_engine, make_url, text
from werkzeug.exceptions import NotFound
from werkzeug.test import Client, TestResponse

from dispatcher import (
    RegistryUnavailable,
    SchemaMissing,
    TenantDispatcher,
    TenantRegistry,
    TenantStatus,
)
from dispatcher.policy import CachePolicy

# -- errors -----------------------------------------------------------------------


def test_type_error_for_non_url() -> None:
    with pytest.raises(TypeError, match="int"):
        TenantRegistry(42)  # type: ignore[arg-type]


def test_value_error_for_bad_url() -> None:
    with pytest.raises(ValueError, match="'not a url'"):
        TenantRegistry("not a url")


def test_value_error_for_unknown_driver() -> None:
    with pytest.raises(ValueError, match="nosuchdb://"):
        TenantRegistry("nosuchdb://host/db")


def test_repr_hides_password() -> None:
    with TenantRegistry("postgresql+psycopg://user:secret@127.0.0.1:1/db") as r:
        assert "secret" not in repr(r)
        assert "127.0.0.1" in repr(r)


@pytest.mark.parametrize("option", ["password", "sslpassword"])
def test_repr_hides_a_password_given_in_the_query(option: str) -> None:
    url = f"postgresql+psycopg://user@127.0.0.1:1/db?{option}=secret&sslmode=disable"
    with TenantRegistry(url) as r:
        assert "secret" not in repr(r) and "secret" not in r.url
        assert f"{option}=***" in r.url and "sslmode=disable" in r.url


def test_registry_on_engine(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with TenantRegistry(engine) as registry:
            registry.migrate()
            tenant = registry.create_tenant("acme", owner_email="o@acme.test")

        # close() leaves an engine it was given alone: it still has its pool.
        assert engine.pool.checkedin() > 0
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT 1").scalar_one() == 1
    finally:
        engine.dispose()

    assert tenant.slug == "acme"


def test_two_registries_on_one_engine(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with TenantRegistry(engine) as first:
            first.migrate()
            first.create_tenant("acme", owner_email="o@acme.test")

        with TenantRegistry(engine) as second:
            second.create_tenant("beta", owner_email="o@beta.test")
            slugs = [tenant.slug for tenant in second.list_tenants()]
    finally:
        engine.dispose()

    assert slugs == ["acme", "beta"]


UNAVAILABLE_CALLS = [
    pytest.param(lambda r: r.list_tenants(), id="list"),
    pytest.param(lambda r: r.get_tenant("acme"), id="get"),
    pytest.param(lambda r: r.find_by_host("shop.acme.com"), id="find"),
    pytest.param(lambda r: r.latest_generation(), id="generation"),
    pytest.param(lambda r: r.changes_since(0), id="changes"),
    pytest.param(
        lambda r: r.create_tenant("acme", owner_email="o@acme.test"), id="create"
    ),
    pytest.param(lambda r: r.update_config("acme", {"a": 1}), id="update"),
    pytest.param(
        lambda r: list(
            r.import_tenants([r.new_tenant("acme", owner_email="o@acme.test")])
        ),
        id="import",
    ),
]


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite-missing-directory"),
        pytest.param("postgresql", id="postgresql-refused"),
    ]
)
def unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'missing' / 'registry.sqlite3'}"
    return "postgresql+psycopg://postgres@127.0.0.1:1/test"


@pytest.mark.parametrize(
    "call", [*UNAVAILABLE_CALLS, pytest.param(lambda r: r.migrate(), id="migrate")]
)
def test_registry_unavailable(unreachable_url: str, call: Write) -> None:
    with TenantRegistry(unreachable_url) as registry:
        with pytest.raises(RegistryUnavailable) as exc_info:
            call(registry)

    assert registry.url in str(exc_info.value)


@pytest.mark.parametrize("call", UNAVAILABLE_CALLS)
def test_schema_missing(database_url: str, call: Write) -> None:
    with TenantRegistry(database_url) as registry:
        with pytest.raises(SchemaMissing, match="upgrade"):
            call(registry)


def test_pooled_connections_killed_by_the_server_are_replaced(
    database_url: str, backend: str
) -> None:
    """After a database restart, the next read and write succeed: no pre-ping,
    one retry on a fresh connection."""
    if backend != "postgresql":
        pytest.skip("only a server can kill the pool's connections")
    name = f"probe_{uuid.uuid4().hex[:10]}"
    url = make_url(database_url).update_query_dict({"application_name": name})
    registry = TenantRegistry(url.render_as_string(hide_password=False))
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        registry.migrate()
        registry.create_tenant("acme", owner_email="owner@acme.test", subdomain="acme")
        assert registry.find_by_subdomain("acme") is not None  # pool warm

        for operation in ("read", "write"):
            with admin.connect() as connection:
                # In the select list, so it runs only for the rows kept.
                killed = connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid, 5000) "
                        "FROM pg_stat_activity WHERE application_name = :name"
                    ),
                    {"name": name},
                ).all()
            assert killed and all(ok for (ok,) in killed)
            if operation == "read":
                found = registry.find_by_subdomain("acme")
                assert found is not None and found.slug == "acme"
            else:
                assert registry.disable_tenant("acme").status is TenantStatus.DISABLED
    finally:
        registry.close()
        admin.dispose()


#: The registry's timeout in these tests: small, so the tests are quick.
TIMEOUT = 0.5
#: How long a test lets a call run before it calls it hung; far above TIMEOUT.
HUNG = 30.0
#: What "gave up in a bounded time" means here: TIMEOUT plus slack for a busy CI.
BOUNDED = 10.0


def call_bounded(call: Callable[[], object]) -> tuple[object, float]:
    """Run ``call`` in a thread; its result or exception and how long it took.

    A call still running after ``HUNG`` seconds fails the test (the thread is
    left behind, a daemon; the lock holder's release then ends it).
    """
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as e:  # reported by the test's assertions
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(HUNG)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"the call still waits after {HUNG} s"
    return outcome[0], elapsed


@pytest.fixture
def quick(database_url: str, registry: TenantRegistry) -> Iterator[TenantRegistry]:
    """A registry with a small timeout on the migrated database, one tenant in it."""
    registry.create_tenant(
        "acme", owner_email="o@acme.test", subdomain="acme", domains=["acme.test"]
    )
    with TenantRegistry(database_url, timeout=TIMEOUT) as quick:
        assert quick.find_by_host("acme.test") is not None  # pool warm
        yield quick


# -- no lookup waits without bound (issue 9, A2) ----------------------------------


@contextmanager
def lock_tenants(
    database_url: str, backend: str, *registries: TenantRegistry
) -> Iterator[None]:
    """Another connection holds an exclusive lock on the tenants, as a
    migration's ALTER TABLE or ``LOCK TABLE`` would."""
    if backend == "postgresql":
        engine = create_engine(database_url)
        try:
            with engine.connect() as connection:
                connection.execute(text("LOCK TABLE tenants IN ACCESS EXCLUSIVE MODE"))
                yield
                connection.rollback()
        finally:
            engine.dispose()
        return
    # SQLite: exclusive locking mode keeps the write lock after the write. In
    # WAL mode it can be taken only while no other connection is open.
    for registry in registries:
        registry.engine.dispose()
    holder = sqlite3.connect(make_url(database_url).database or "", timeout=0)
    try:
        holder.isolation_level = None
        holder.execute("PRAGMA locking_mode = EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("UPDATE tenants SET version = version")
        yield
    finally:
        holder.close()


@pytest.fixture
def table_locked(
    database_url: str, backend: str, registry: TenantRegistry, quick: TenantRegistry
) -> Iterator[None]:
    with lock_tenants(database_url, backend, registry, quick):
        yield


@pytest.mark.parametrize(
    "lookup",
    [
        pytest.param(lambda r: r.find_by_host("acme.test"), id="host"),
        pytest.param(
            lambda r: r.find_by_host_or_subdomain("acme.example.com", "acme"),
            id="host-or-subdomain",
        ),
        pytest.param(lambda r: r.find_by_path_prefix("acme"), id="path"),
        pytest.param(lambda r: r.list_tenants(), id="list"),
    ],
)
def test_lookup_behind_a_lock_gives_up(
    quick: TenantRegistry,
    table_locked: None,
    lookup: Callable[[TenantRegistry], object],
) -> None:
    result, elapsed = call_bounded(lambda: lookup(quick))

    assert isinstance(result, RegistryUnavailable), result
    assert quick.url in str(result)
    assert TIMEOUT * 0.8 <= elapsed < BOUNDED


def test_a_request_behind_a_lock_gets_503_in_bounded_time(
    quick: TenantRegistry, table_locked: None
) -> None:
    """What the issue asks of the server: a 503, not a worker hung till killed."""
    dispatcher = TenantDispatcher(
        quick,
        lambda tenant: NotFound(),
        base_domain="example.com",
        policy=CachePolicy(poll_interval=None),
    )
    client = Client(dispatcher)
    try:
        response, elapsed = call_bounded(
            lambda: client.get("/", base_url="http://acme.example.com/")
        )
    finally:
        dispatcher.close()

    assert isinstance(response, TestResponse), response
    assert response.status_code == 503
    assert response.headers["Retry-After"]
    assert elapsed < BOUNDED


def test_lookup_after_the_lock_is_released(
    registry: TenantRegistry, quick: TenantRegistry, database_url: str, backend: str
) -> None:
    # The connection that timed out went back to the pool in a usable state.
    with lock_tenants(database_url, backend, registry, quick):
        result, _ = call_bounded(lambda: quick.find_by_host("acme.test"))
        assert isinstance(result, RegistryUnavailable)

    tenant = quick.find_by_host("acme.test")
    assert tenant is not None and tenant.slug == "acme"


def test_pool_checkout_gives_up(quick: TenantRegistry) -> None:
    # Every connection the pool may open is in use by a stuck caller.
    pool: Any = quick.engine.pool
    held: list[Connection] = []
    try:
        for _ in range(pool.size() + max(pool._max_overflow, 0)):
            held.append(quick.engine.connect())

        result, elapsed = call_bounded(lambda: quick.find_by_host("acme.test"))
    finally:
        for connection in held:
            connection.close()

    assert isinstance(result, RegistryUnavailable), result
    assert elapsed < BOUNDED


def test_writes_wait_longer_than_reads(quick: TenantRegistry) -> None:
    assert quick.timeout == TIMEOUT
    assert quick.write_timeout > quick.timeout


def test_default_timeout_is_a_few_seconds(registry: TenantRegistry) -> None:
    assert 1.0 <= registry.timeout <= 10.0


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        pytest.param(0, ValueError, id="zero"),
        pytest.param(-1.0, ValueError, id="negative"),
        pytest.param(float("inf"), ValueError, id="infinite"),
        pytest.param(float("nan"), ValueError, id="nan"),
        pytest.param(None, TypeError, id="none"),
        pytest.param("5", TypeError, id="string"),
    ],
)
def test_timeout_invalid(database_url: str, timeout: Any, error: type) -> None:
    with pytest.raises(error, match="timeout"):
        TenantRegistry(database_url, timeout=timeout)
