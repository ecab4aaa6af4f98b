"""Names in use: conflicts found before a write, between racing writers, and
past the write lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from registry_helpers import Write, state, unchanged_after
from sqlalchemy import create_engine, event, insert
from sqlalchemy.exc import IntegrityError

from dispatcher import (
    Conflict,
    DomainTaken,
    NewTenant,
    Tenant,
    TenantExists,
    TenantRegistry,
)
from dispatcher.models import Tenant as TenantRow
from dispatcher.models import User as UserRow

ROUNDS = 10


# -- uniqueness -------------------------------------------------------------------


def _other(**kwargs: Any) -> Write:
    return lambda r: r.create_tenant("other", owner_email="o@other.test", **kwargs)


@pytest.mark.parametrize(
    ("write", "error", "value"),
    [
        pytest.param(
            lambda r: r.create_tenant("acme", owner_email="x@x.test"),
            TenantExists,
            "acme",
            id="slug",
        ),
        pytest.param(
            lambda r: r.create_tenant("ACME", owner_email="x@x.test"),
            TenantExists,
            "acme",
            id="slug-upper",
        ),
        pytest.param(
            _other(subdomain="ACME"), DomainTaken, "acme", id="subdomain-upper"
        ),
        pytest.param(_other(path_prefix="acme"), DomainTaken, "acme", id="path"),
        pytest.param(
            _other(domains=["shop.acme.com"]), DomainTaken, "shop.acme.com", id="host"
        ),
        pytest.param(
            _other(domains=["SHOP.acme.com."]),
            DomainTaken,
            "shop.acme.com",
            id="host-spelling",
        ),
        pytest.param(
            _other(domains=["new.other.com", "www.acme.com"]),
            DomainTaken,
            "www.acme.com",
            id="second-host",
        ),
    ],
)
def test_create_tenant_conflict(
    registry: TenantRegistry, acme: Tenant, write: Write, error: type, value: str
) -> None:
    before = state(registry)

    with pytest.raises(error) as exc_info:
        write(registry)

    assert isinstance(exc_info.value, Conflict)
    assert repr(value) in str(exc_info.value)
    assert state(registry) == before


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda r: r.set_subdomain("other", "acme"), id="subdomain"),
        pytest.param(lambda r: r.set_subdomain("other", "ACME"), id="subdomain-upper"),
        pytest.param(lambda r: r.set_path_prefix("other", "acme"), id="path"),
        pytest.param(lambda r: r.set_path_prefix("other", "ACME"), id="path-upper"),
        pytest.param(lambda r: r.add_domain("other", "shop.acme.com"), id="host"),
        pytest.param(
            lambda r: r.add_domain("other", "SHOP.acme.com.", primary=True),
            id="host-spelling",
        ),
    ],
)
def test_update_conflict(registry: TenantRegistry, acme: Tenant, write: Write) -> None:
    registry.create_tenant("other", owner_email="owner@other.test")

    unchanged_after(registry, write, DomainTaken)


def test_subdomain_and_path_prefix_are_separate(registry: TenantRegistry) -> None:
    registry.create_tenant("acme", owner_email="owner@acme.test", subdomain="shop")

    tenant = registry.create_tenant(
        "other", owner_email="owner@other.test", path_prefix="shop"
    )

    assert tenant.path_prefix == "shop"


# -- concurrency ------------------------------------------------------------------


def race(registries: list[TenantRegistry], writes: list[Write]) -> list[object]:
    """Run one write per registry, each in its own thread, released together."""
    barrier = threading.Barrier(len(writes))
    results: list[object] = [None] * len(writes)

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = writes[index](registries[index])
        except BaseException as e:  # reported by the assertions, not by the thread
            results[index] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.fixture
def racers(
    database_url: str, registry: TenantRegistry
) -> Iterator[list[TenantRegistry]]:
    """Two registries of their own on the migrated database, connections warm."""
    with TenantRegistry(database_url) as one, TenantRegistry(database_url) as two:
        one.latest_generation()
        two.latest_generation()
        yield [one, two]


def _winner_and_loser(results: list[object], error: type) -> tuple[Tenant, Exception]:
    winners = [r for r in results if isinstance(r, Tenant)]
    losers = [r for r in results if not isinstance(r, Tenant)]
    assert len(winners) == 1, results
    assert len(losers) == 1, results
    assert type(losers[0]) is error, results
    return winners[0], losers[0]


def test_race_same_subdomain(
    registry: TenantRegistry, racers: list[TenantRegistry]
) -> None:
    for n in range(ROUNDS):
        results = race(
            racers,
            [
                lambda r, n=n: r.create_tenant(
                    f"left{n}", owner_email="o@left.test", subdomain=f"acme{n}"
                ),
                lambda r, n=n: r.create_tenant(
                    f"right{n}", owner_email="o@right.test", subdomain=f"ACME{n}"
                ),
            ],
        )

        winner, _ = _winner_and_loser(results, DomainTaken)
        assert registry.find_by_subdomain(f"acme{n}") == winner

    assert len(registry.list_tenants()) == ROUNDS
    assert len(registry.changes_since(0)) == ROUNDS


def test_race_same_slug(registry: TenantRegistry, racers: list[TenantRegistry]) -> None:
    for n in range(ROUNDS):
        results = race(
            racers,
            [
                lambda r, n=n: r.create_tenant(
                    f"acme{n}", owner_email="o@left.test", subdomain=f"left{n}"
                ),
                lambda r, n=n: r.create_tenant(
                    f" ACME{n}", owner_email="o@right.test", subdomain=f"right{n}"
                ),
            ],
        )

        winner, _ = _winner_and_loser(results, TenantExists)
        assert registry.get_tenant(f"acme{n}") == winner

    assert len(registry.list_tenants()) == ROUNDS
    assert len(registry.changes_since(0)) == ROUNDS


def test_race_same_host(registry: TenantRegistry, racers: list[TenantRegistry]) -> None:
    registry.create_tenant("left", owner_email="o@left.test")
    registry.create_tenant("right", owner_email="o@right.test")

    for n in range(ROUNDS):
        results = race(
            racers,
            [
                lambda r, n=n: r.add_domain("left", f"shop{n}.acme.com"),
                lambda r, n=n: r.add_domain("right", f"SHOP{n}.acme.com."),
            ],
        )

        winner, _ = _winner_and_loser(results, DomainTaken)
        assert registry.find_by_host(f"shop{n}.acme.com") == winner


def test_race_versions_distinct(
    registry: TenantRegistry, racers: list[TenantRegistry]
) -> None:
    registry.create_tenant("left", owner_email="o@left.test")
    registry.create_tenant("right", owner_email="o@right.test")

    for n in range(ROUNDS):
        results = race(
            racers,
            [
                lambda r, n=n: r.update_config("left", {"n": n}),
                lambda r, n=n: r.update_config("right", {"n": n}),
            ],
        )

        assert all(isinstance(result, Tenant) for result in results), results

    changes = registry.changes_since(0)
    assert [c.generation for c in changes] == sorted({c.generation for c in changes})
    assert len(changes) == 2 + 2 * ROUNDS


# -- a write refused past the write lock ------------------------------------------
# Only a writer that ignores the registry's lock can take a name between the
# registry's check and its commit; the database then refuses the write, and the
# registry asks which name is taken instead of reading the driver's message.


@contextmanager
def taken_behind_the_lock(
    registry: TenantRegistry, database_url: str, subdomain: str
) -> Iterator[None]:
    """Just before the registry inserts a tenant, another writer that ignores
    the registry's write lock commits a tenant routed by ``subdomain``."""
    bypass = create_engine(database_url)
    done: list[bool] = []

    def take(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if done or not statement.startswith("INSERT INTO tenants"):
            return
        done.append(True)
        with bypass.begin() as connection:
            owner = connection.execute(
                insert(UserRow).values(email="o@bypass.test").returning(UserRow.id)
            ).scalar_one()
            connection.execute(
                insert(TenantRow).values(
                    slug="bypass", owner_id=owner, subdomain=subdomain, version=0
                )
            )

    event.listen(registry.engine, "before_cursor_execute", take)
    try:
        yield
    finally:
        event.remove(registry.engine, "before_cursor_execute", take)
        bypass.dispose()
    assert done, "the registry inserted no tenant"


def test_a_name_taken_past_the_lock_is_found_by_asking_not_by_the_message(
    registry: TenantRegistry, database_url: str, backend: str
) -> None:
    """PostgreSQL's message names the taken value, here one with 'slug' in it:
    the conflict is still the subdomain's."""
    if backend != "postgresql":
        pytest.skip("SQLite's write lock keeps every other writer out")
    with taken_behind_the_lock(registry, database_url, "slugs"):
        with pytest.raises(Conflict) as exc_info:
            registry.create_tenant("acme", owner_email="o@acme.test", subdomain="slugs")

    assert type(exc_info.value) is DomainTaken
    assert str(exc_info.value) == "subdomain 'slugs' is already taken"
    assert registry.find_by_slug("acme") is None
    assert registry.latest_generation() == 0


def test_a_refused_write_that_took_no_name_is_a_conflict_naming_the_tenant(
    registry: TenantRegistry,
) -> None:
    """A spec built by hand, past new_tenant(), breaks the slug's CHECK
    constraint; no name is taken, so it is no TenantExists."""
    spec = NewTenant("ACME", "o@acme.test")

    with pytest.raises(Conflict) as exc_info:
        list(registry.import_tenants([spec]))

    assert not isinstance(exc_info.value, TenantExists | DomainTaken)
    assert "'ACME'" in str(exc_info.value)
    assert isinstance(exc_info.value.__cause__, IntegrityError)
    assert registry.list_tenants() == []
    assert registry.latest_generation() == 0
