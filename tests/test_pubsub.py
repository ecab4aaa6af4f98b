"""ChangeHub: a registry's writes reach its subscribers after commit, each once."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter

import pytest
from forking import held_by_another_thread, run_in_child
from registry_helpers import Write

from dispatcher import (
    DomainTaken,
    InvalidConfig,
    InvalidName,
    Tenant,
    TenantChange,
    TenantExists,
    TenantNotFound,
    TenantRegistry,
)
from dispatcher.changes import Names, Operation
from dispatcher.exceptions import RegistryUnavailable

#: How long a test lets a call run before it calls it hung.
HUNG = 30.0

# -- subscribe --------------------------------------------------------------------


def test_subscribe_receives_change(registry: TenantRegistry) -> None:
    received: list[TenantChange] = []
    registry.feed.subscribe(received.append)

    tenant = registry.create_tenant("acme", owner_email="o@acme.test")
    registry.disable_tenant("acme")

    assert received == registry.changes_since(0)
    assert received[0] == TenantChange(tenant.version, "acme", "created", Names())


def test_subscribe_called_after_commit(
    database_url: str, registry: TenantRegistry
) -> None:
    seen: list[Tenant | None] = []

    with TenantRegistry(database_url) as other:

        def listener(change: TenantChange) -> None:
            seen.append(other.find_by_subdomain("acme"))

        registry.feed.subscribe(listener)
        tenant = registry.create_tenant(
            "acme", owner_email="o@acme.test", subdomain="acme"
        )

    assert seen == [tenant]


@pytest.mark.parametrize(
    ("write", "error"),
    [
        pytest.param(
            lambda r: r.create_tenant("acme", owner_email="o@acme.test"),
            TenantExists,
            id="exists",
        ),
        pytest.param(
            lambda r: r.create_tenant(
                "other", owner_email="o@o.test", subdomain="acme"
            ),
            DomainTaken,
            id="taken",
        ),
        pytest.param(
            lambda r: r.update_config("nobody", {"a": 1}), TenantNotFound, id="missing"
        ),
        pytest.param(
            lambda r: r.set_subdomain("acme", "www"), InvalidName, id="invalid"
        ),
        pytest.param(
            lambda r: r.update_config("acme", {"a": math.nan}),
            InvalidConfig,
            id="invalid-config",
        ),
    ],
)
def test_subscribe_not_called_for_failed_write(
    registry: TenantRegistry, acme: Tenant, write: Write, error: type
) -> None:
    received: list[TenantChange] = []
    registry.feed.subscribe(received.append)

    with pytest.raises(error):
        write(registry)

    assert received == []


def test_unsubscribe(registry: TenantRegistry) -> None:
    received: list[TenantChange] = []
    kept: list[TenantChange] = []
    unsubscribe = registry.feed.subscribe(received.append)
    registry.feed.subscribe(kept.append)
    registry.create_tenant("acme", owner_email="o@acme.test")

    unsubscribe()
    registry.create_tenant("beta", owner_email="o@beta.test")

    assert [c.slug for c in received] == ["acme"]
    assert [c.slug for c in kept] == ["acme", "beta"]


def test_raising_listener_does_not_break_write(
    registry: TenantRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[TenantChange] = []

    def broken(change: TenantChange) -> None:
        raise RuntimeError("listener failed")

    registry.feed.subscribe(broken)
    registry.feed.subscribe(received.append)

    with caplog.at_level(logging.ERROR, logger="dispatcher.pubsub"):
        tenant = registry.create_tenant("acme", owner_email="o@acme.test")

    assert registry.get_tenant("acme") == tenant
    assert received == registry.changes_since(0)
    assert "listener failed" in caplog.text


def test_subscribe_only_this_registry(
    database_url: str, registry: TenantRegistry
) -> None:
    received: list[TenantChange] = []
    registry.feed.subscribe(received.append)

    with TenantRegistry(database_url) as other:
        other.create_tenant("acme", owner_email="o@acme.test")

    assert received == []


# -- a fork while another thread holds the follow lock (issue 9, B5) --------------


def test_fork_while_the_follow_lock_is_held(registry: TenantRegistry) -> None:
    registry.create_tenant("acme", owner_email="o@acme.test", subdomain="acme")
    registry.feed.follow(poll_interval=3600)

    def child() -> bool:
        follower = registry.feed.follow(poll_interval=3600)
        return follower.running and registry.find_by_subdomain("acme") is not None

    with held_by_another_thread(registry.feed._follow_lock):
        status = run_in_child(child, HUNG)

    assert status == 0, "the forked child hung on a lock or could not look up"


# -- every change published exactly once per process (issue 9, B7) ----------------

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


def test_a_resync_is_published_even_at_a_generation_written_here(
    registry: TenantRegistry,
) -> None:
    """The follower could not read where the feed stood when it started, and
    this process wrote a change before it could: its first good poll resyncs
    at that change's generation. The RESYNC says "apps built meanwhile may
    predate changes never delivered", which the writer's own publication of
    the change did not say: it must still reach the subscribers."""
    received: list[TenantChange] = []
    registry.feed.subscribe(received.append)
    latest_generation = registry.latest_generation
    calls: list[None] = []
    tried = threading.Event()
    down = [True]

    def flaky() -> int:
        if down[0]:
            calls.append(None)
            if len(calls) >= 2:
                tried.set()
            raise RegistryUnavailable("the database is down")
        return latest_generation()

    registry.latest_generation = flaky  # type: ignore[method-assign]
    follower = registry.feed.follow(poll_interval=3600)
    # The start and the poll thread's first poll both failed to read it.
    assert tried.wait(HUNG)
    assert follower.generation is None
    created = registry.create_tenant("acme", owner_email="o@acme.test")
    down[0] = False

    follower.poll()

    assert [(c.generation, c.operation) for c in received] == [
        (created.version, Operation.CREATED),
        (created.version, Operation.RESYNC),
    ]


def test_a_closed_registry_starts_no_follower_again(database_url: str) -> None:
    # Something asking to follow after close (a readiness probe, the metrics'
    # thread) would open a pool nobody closes: its connections would be
    # dropped open.
    registry = TenantRegistry(database_url)
    registry.migrate()
    follower = registry.feed.follow(poll_interval=0.05)
    assert follower.running
    registry.close()

    again = registry.feed.follow(poll_interval=0.05)

    assert again is follower and not again.running
