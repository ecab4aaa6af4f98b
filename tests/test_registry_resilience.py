"""The registry under stress: bounded waits, forks, concurrent publication.

Issue 9: A2 (no lookup waits without bound), B5 (fork while a registry lock is
held), B7 (every change published exactly once per process).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from forking import held_by_another_thread, run_in_child
from sqlalchemy import Connection, create_engine, make_url, text
from werkzeug.exceptions import NotFound
from werkzeug.test import Client, TestResponse

from dispatcher import (
    RegistryUnavailable,
    TenantChange,
    TenantDispatcher,
    TenantRegistry,
)
from dispatcher.policy import CachePolicy

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


# -- A2: no lookup waits without bound ---------------------------------------------


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


# -- B5: a fork while another thread holds a registry lock --------------------------


def test_fork_while_the_follow_lock_is_held(registry: TenantRegistry) -> None:
    registry.create_tenant("acme", owner_email="o@acme.test", subdomain="acme")
    registry.feed.follow(poll_interval=3600)

    def child() -> bool:
        follower = registry.feed.follow(poll_interval=3600)
        return follower.running and registry.find_by_subdomain("acme") is not None

    with held_by_another_thread(registry.feed._follow_lock):
        status = run_in_child(child, HUNG)

    assert status == 0, "the forked child hung on a lock or could not look up"


# -- B7: every change published exactly once per process ---------------------------

WRITERS = 16
WRITES_PER_WRITER = 25


def test_concurrent_writes_are_published_exactly_once(database_url: str) -> None:
    """Polls race commits: each generation still reaches subscribers once, and
    the registry's record of its own publications drains."""
    with TenantRegistry(database_url, timeout=HUNG) as following:
        following.migrate()
        following.create_tenant("acme", owner_email="o@acme.test")
        received: list[int] = []
        lock = threading.Lock()

        def collect(change: TenantChange) -> None:
            with lock:
                received.append(change.generation)

        following.feed.subscribe(collect)
        # Polls as often as it can, so it keeps racing the writers' commits.
        follower = following.feed.follow(poll_interval=0.001)
        start = following.latest_generation()

        def write(writer: int) -> None:
            for n in range(WRITES_PER_WRITER):
                following.update_config("acme", {"writer": writer, "n": n})

        threads = [
            threading.Thread(target=write, args=(w,), daemon=True)
            for w in range(WRITERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(HUNG)
        assert not any(thread.is_alive() for thread in threads)

        written = [c.generation for c in following.changes_since(start, limit=10_000)]
        assert len(written) == WRITERS * WRITES_PER_WRITER
        deadline = time.monotonic() + HUNG
        while (follower.generation or 0) < written[-1]:
            assert time.monotonic() < deadline, "the follower fell behind"
            follower.wake()
            time.sleep(0.01)
        follower.stop()

        with lock:
            mine = [g for g in received if g > start]
        twice = sorted(g for g, n in Counter(mine).items() if n > 1)
        assert twice == [], f"{len(twice)} of {len(written)} published twice"
        assert sorted(mine) == written
        assert following.feed._published == set()
