"""Following the change feed: another registry object stands for another process."""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import weakref
from collections.abc import Iterator

import pytest
from flask import Flask
from forking import held_by_another_thread, run_in_child
from sqlalchemy import create_engine, delete, insert
from werkzeug.test import Client

from dispatcher import (
    CachePolicy,
    Tenant,
    TenantChange,
    TenantDispatcher,
    TenantRegistry,
)
from dispatcher.changes import Operation
from dispatcher.follower import ChangeFollower
from dispatcher.models.tables import changes as change_table
from dispatcher.notify import DEFAULT_CHANNEL, PostgresListener, PostgresNotifier
from dispatcher.retention import FeedRetention
from dispatcher.tenant import utcnow

RESYNC = Operation.RESYNC

#: Bounds a real wait for a notification; far above the expected ~10 ms.
NOTIFY_TIMEOUT = 5.0


@pytest.fixture
def other(database_url: str, registry: TenantRegistry) -> Iterator[TenantRegistry]:
    """A second registry object on the same database: "another process"."""
    other = TenantRegistry(database_url)
    yield other
    other.close()


def create_app(tenant: Tenant) -> Flask:
    app = Flask(tenant.slug)

    @app.route("/")
    def index() -> dict[str, object]:
        return {"tenant": tenant.slug, "config": dict(tenant.config)}

    return app


def test_poll_publishes_exactly_the_changes_since_start(
    registry: TenantRegistry, other: TenantRegistry
) -> None:
    registry.create_tenant("before", owner_email="o@x.test")
    seen: list[TenantChange] = []
    follower = ChangeFollower(other, seen.append, poll_interval=60)
    follower.generation = other.latest_generation()

    registry.create_tenant("acme", owner_email="o@x.test")
    registry.disable_tenant("acme", "unpaid")
    registry.delete_tenant("acme")

    assert follower.poll() == 3
    assert [(c.slug, c.operation) for c in seen] == [
        ("acme", "created"),
        ("acme", "disabled"),
        ("acme", "deleted"),
    ]
    assert follower.poll() == 0


def test_poll_pages_through_a_long_backlog(
    registry: TenantRegistry, other: TenantRegistry
) -> None:
    seen: list[TenantChange] = []
    follower = ChangeFollower(other, seen.append, poll_interval=60)
    follower.generation = other.latest_generation()
    specs = [registry.new_tenant(f"t{i}", owner_email="o@x.test") for i in range(1500)]
    list(registry.import_tenants(specs, batch_size=1500))

    assert follower.poll() == 1500
    assert len({change.generation for change in seen}) == 1500


def test_first_poll_without_a_generation_publishes_resync(
    other: TenantRegistry,
) -> None:
    seen: list[TenantChange] = []
    follower = ChangeFollower(other, seen.append, poll_interval=60)

    follower.poll()

    assert [change.operation for change in seen] == [RESYNC]


def test_own_writes_are_not_published_twice(registry: TenantRegistry) -> None:
    seen: list[TenantChange] = []
    registry.feed.subscribe(seen.append)
    follower = registry.feed.follow(poll_interval=60)

    registry.create_tenant("acme", owner_email="o@x.test")
    follower.poll()

    assert [change.operation for change in seen] == ["created"]


def test_another_process_write_evicts_the_dispatchers_app(
    registry: TenantRegistry, other: TenantRegistry
) -> None:
    registry.create_tenant(
        "acme", owner_email="o@x.test", subdomain="acme", config={"colour": "red"}
    )
    dispatcher = TenantDispatcher(
        other,
        create_app,
        base_domain="example.com",
        policy=CachePolicy(poll_interval=60),
    )
    client = Client(dispatcher)
    assert client.get("/", headers={"Host": "acme.example.com"}).json == {
        "tenant": "acme",
        "config": {"colour": "red"},
    }
    follower = other.feed.follow()

    registry.update_config("acme", {"colour": "blue"})
    follower.poll()
    blue = client.get("/", headers={"Host": "acme.example.com"})
    registry.disable_tenant("acme")
    follower.poll()
    disabled = client.get("/", headers={"Host": "acme.example.com"})
    registry.delete_tenant("acme")
    follower.poll()
    deleted = client.get("/", headers={"Host": "acme.example.com"})
    dispatcher.close()

    assert blue.json == {"tenant": "acme", "config": {"colour": "blue"}}
    assert disabled.status_code == 403
    assert deleted.status_code == 404


def test_a_tenant_created_elsewhere_clears_negative_answers(
    registry: TenantRegistry, other: TenantRegistry
) -> None:
    dispatcher = TenantDispatcher(
        other,
        create_app,
        base_domain="example.com",
        policy=CachePolicy(negative_ttl=3600),
    )
    client = Client(dispatcher)
    assert client.get("/", headers={"Host": "new.example.com"}).status_code == 404
    follower = other.feed.follow()

    registry.create_tenant("new", owner_email="o@x.test", subdomain="new")
    follower.poll()
    response = client.get("/", headers={"Host": "new.example.com"})
    dispatcher.close()

    assert response.status_code == 200


def test_notify_wakes_the_follower_at_once(
    registry: TenantRegistry, other: TenantRegistry, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("NOTIFY is PostgreSQL's; SQLite is followed by polling")
    arrived = threading.Event()

    def on_change(change: TenantChange) -> None:
        if change.slug == "acme":
            arrived.set()

    other.feed.subscribe(on_change)
    # An hour between polls: only a notification can deliver within the bound.
    follower = other.feed.follow(poll_interval=3600)
    listening = threading.Event()
    # The listener wakes the poller once when it connects; wait for that poll.
    other.feed.subscribe(lambda change: None)
    deadline_hit = not _wait_until(
        lambda: len(follower._threads) == 2 and follower.generation is not None
    )
    assert not deadline_hit
    listening.set()
    _wait_for_listener(registry)

    registry.create_tenant("acme", owner_email="o@x.test")

    assert arrived.wait(NOTIFY_TIMEOUT)


def test_stop_ends_the_threads(other: TenantRegistry) -> None:
    follower = other.feed.follow(poll_interval=3600)
    threads = list(follower._threads)

    other.close()

    assert not follower.running
    assert not threads[0].is_alive()


def _wait_until(condition: object, timeout: float = NOTIFY_TIMEOUT) -> bool:
    event = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if condition():  # type: ignore[operator]
            return True
        event.wait(0.01)
    return False


def _wait_for_listener(registry: TenantRegistry) -> None:
    """Until some session LISTENs on the registry's channel (bounded)."""
    from sqlalchemy import text

    def listening() -> bool:
        with registry.engine.connect() as connection:
            return bool(
                connection.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE query = :listen"),
                    {"listen": f"LISTEN {DEFAULT_CHANNEL}"},
                ).scalar()
            )

    assert _wait_until(listening)


def test_a_worker_forked_from_a_warm_parent_follows_changes(
    registry: TenantRegistry, other: TenantRegistry
) -> None:
    """Apps the parent built must not serve in the child: the child's follower
    starts at its own first lookup and could not evict them."""
    registry.create_tenant(
        "acme", owner_email="o@x.test", subdomain="acme", config={"n": 0}
    )
    dispatcher = TenantDispatcher(
        other,
        create_app,
        base_domain="example.com",
        policy=CachePolicy(poll_interval=3600),
    )
    client = Client(dispatcher)
    assert client.get("/", headers={"Host": "acme.example.com"}).json == {
        "tenant": "acme",
        "config": {"n": 0},
    }
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report through the pipe, never return to pytest
        status = 1
        try:
            first = client.get("/", headers={"Host": "acme.example.com"}).json
            assert other.feed.follower is not None
            following = other.feed.follower.running  # its threads, in this process
            registry.update_config("acme", {"n": 1})
            other.feed.follower.poll()
            second = client.get("/", headers={"Host": "acme.example.com"}).json
            os.write(write, json.dumps([following, first, second]).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read) as answers:
        reported = answers.read()
    _, status = os.waitpid(pid, 0)
    dispatcher.close()

    assert status == 0, "the child failed"
    assert json.loads(reported) == [
        True,
        {"tenant": "acme", "config": {"n": 0}},
        {"tenant": "acme", "config": {"n": 1}},
    ]


def test_a_failed_start_is_tried_again(other: TenantRegistry) -> None:
    calls = []
    original = other.latest_generation

    def flaky() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("pool exhausted")
        return original()

    other.latest_generation = flaky  # type: ignore[method-assign]
    seen: list[TenantChange] = []
    follower = ChangeFollower(other, seen.append, poll_interval=3600)

    follower.start()
    try:
        # Started from an unknown generation: the first poll resyncs.
        assert follower.running
        assert follower.generation is None or seen[:1] == [
            TenantChange(follower.generation, "", RESYNC)
        ]
    finally:
        follower.stop()


# -- fork from a warm parent ---------------------------------------------------------

#: Bounds the child's wait for a change; far above the expected poll interval.
CHILD_TIMEOUT = 5.0


@pytest.mark.filterwarnings(
    # Python 3.12+ warns on any fork of a threaded process: forking one is the test.
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)
@pytest.mark.parametrize(
    "lock",
    [
        pytest.param("_poll_lock", id="while the parent polls"),
        pytest.param("_lock", id="while the parent starts or stops"),
    ],
)
def test_a_child_forked_while_a_lock_is_held_follows_changes(
    registry: TenantRegistry, database_url: str, lock: str
) -> None:
    follower = ChangeFollower(
        registry, lambda change: None, notifier=registry.notifier, poll_interval=0.05
    )
    follower.start()

    def child() -> bool:
        published = threading.Event()

        def on_change(change: TenantChange) -> None:
            if change.slug == "acme":
                published.set()

        follower.publish = on_change
        follower.start()
        # Another registry object: the change reaches this one only by the feed.
        with TenantRegistry(database_url) as writer:
            writer.create_tenant("acme", owner_email="o@x.test")
        return published.wait(CHILD_TIMEOUT)

    try:
        with held_by_another_thread(getattr(follower, lock)):
            status = run_in_child(child, CHILD_TIMEOUT + 10.0)
    finally:
        follower.stop()

    assert status is not None, "the child hung: it inherited a held lock"
    assert status == 0, f"the child never published the change (status {status})"


# -- the listener never storms -------------------------------------------------------


class _EarlyListener(PostgresListener):
    """A real LISTEN connection whose waits return at once, as with psycopg 3.1."""

    notifier: _CountingNotifier

    def wait(self, timeout: float) -> bool:
        self.notifier.waits += 1
        return False


class _BrokenListener(_EarlyListener):
    """A real LISTEN connection that is closed before each wait, so waits raise."""

    def wait(self, timeout: float) -> bool:
        self.notifier.waits += 1
        self.close()
        return super(_EarlyListener, self).wait(timeout)


class _CountingNotifier(PostgresNotifier):
    """Counts the listener's connections and waits; ``listener`` makes them."""

    listener: type[_EarlyListener] = _EarlyListener

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.connects = 0
        self.waits = 0

    def listen(self) -> PostgresListener:
        self.connects += 1
        listener = self.listener(self.url, self.channel, self.timeout)
        listener.notifier = self
        return listener


@pytest.mark.parametrize(
    "listener",
    [
        pytest.param(_EarlyListener, id="waits return early"),
        pytest.param(_BrokenListener, id="waits raise"),
    ],
)
def test_a_listener_whose_waits_fail_at_once_backs_off(
    database_url: str,
    registry: TenantRegistry,
    backend: str,
    listener: type[_EarlyListener],
) -> None:
    if backend != "postgresql":
        pytest.skip("only PostgreSQL has a listener")
    counting = _CountingNotifier(database_url)
    counting.listener = listener
    follower = ChangeFollower(
        registry, lambda change: None, notifier=counting, poll_interval=3600
    )
    follower.start()
    listen_thread = follower._threads[1]
    try:
        # A window to count connections in, not a timeout.
        threading.Event().wait(1.0)
    finally:
        follower.stop()
        listen_thread.join(NOTIFY_TIMEOUT)

    # Backing off from 0.5 s doubles to 1 s within the window: 2 attempts.
    assert 1 <= counting.connects <= 3, f"{counting.connects} connections in 1 s"
    assert 1 <= counting.waits <= 3, f"{counting.waits} waits in 1 s"
    assert not listen_thread.is_alive()


# -- logging --------------------------------------------------------------------------


class _CountingFollower(ChangeFollower):
    """Counts its polls, failed or not, so a test can wait for a few of them."""

    polls = 0

    def poll(self) -> int:
        self.polls += 1
        return super().poll()


@pytest.mark.parametrize(
    "from_start",
    [
        pytest.param(False, id="while following"),
        pytest.param(True, id="from the start, as a worker booted in an outage"),
    ],
)
def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    registry: TenantRegistry, caplog: pytest.LogCaptureFixture, from_start: bool
) -> None:
    published = threading.Event()

    def on_change(change: TenantChange) -> None:
        if change.slug == "acme":
            published.set()

    caplog.set_level(logging.INFO, logger="dispatcher.follower")
    follower = _CountingFollower(registry, on_change, poll_interval=0.01)
    # A real failure of every query: the feed's table is gone for a while.
    if from_start:
        _rename_table(registry, "tenant_changes", "tenant_changes_away")
    follower.start()
    try:
        assert _wait_until(lambda: follower.polls >= 1)
        if not from_start:
            _rename_table(registry, "tenant_changes", "tenant_changes_away")
        polls = follower.polls
        assert _wait_until(lambda: follower.polls >= polls + 10)
        _rename_table(registry, "tenant_changes_away", "tenant_changes")
        # After the first good poll: one from the start has resynced by then.
        polls = follower.polls
        assert _wait_until(lambda: follower.polls >= polls + 2)
        registry.create_tenant("acme", owner_email="o@x.test")
        assert published.wait(NOTIFY_TIMEOUT)
    finally:
        follower.stop()

    warnings = [
        record.getMessage()
        for record in caplog.records
        if record.name == "dispatcher.follower" and record.levelno >= logging.WARNING
    ]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("cannot follow the registry's changes: ")
    assert "tenant tables" in warnings[0]
    assert warnings[1].startswith("following the registry's changes again after ")


def _rename_table(registry: TenantRegistry, old: str, new: str) -> None:
    from sqlalchemy import text

    with registry.engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))


def test_a_follower_nobody_uses_is_collected_and_its_threads_end(
    registry: TenantRegistry, backend: str
) -> None:
    follower = ChangeFollower(
        registry, lambda change: None, notifier=registry.notifier, poll_interval=0.01
    )
    follower.start()
    threads = list(follower._threads)
    if backend == "postgresql":
        _wait_for_listener(registry)
    collected = weakref.ref(follower)

    del follower

    # Neither thread may hold the follower while it waits (the poll thread
    # holds it during a poll: collect again until it waits).
    assert _wait_until(lambda: gc.collect() >= 0 and collected() is None)
    for thread in threads:
        thread.join(NOTIFY_TIMEOUT)
        assert not thread.is_alive(), thread.name


# -- a follower behind the pruned part of the feed (issue 13, part 4) ------------------


def _writes(registry: TenantRegistry, count: int) -> list[int]:
    for i in range(count):
        registry.update_config("acme", {"i": i})
    return [c.generation for c in registry.changes_since(0)]


def test_a_follower_behind_the_pruned_changes_resyncs_then_goes_on(
    registry: TenantRegistry, other: TenantRegistry
) -> None:
    registry.create_tenant("acme", owner_email="o@x.test")
    seen: list[TenantChange] = []
    follower = ChangeFollower(other, seen.append, poll_interval=60)
    follower.generation = other.latest_generation()
    generations = _writes(registry, 5)

    registry.prune_feed(FeedRetention(max_changes=2))
    published = follower.poll()

    assert [(c.generation, c.operation) for c in seen] == [
        (generations[3], RESYNC),
        (generations[4], "config"),
        (generations[5], "config"),
    ]
    assert published == 3
    assert follower.generation == generations[5]
    registry.update_config("acme", {"after": True})
    seen.clear()
    assert follower.poll() == 1
    assert [c.operation for c in seen] == ["config"]


def test_a_follower_that_read_the_last_pruned_change_does_not_resync(
    registry: TenantRegistry, other: TenantRegistry
) -> None:
    registry.create_tenant("acme", owner_email="o@x.test")
    seen: list[TenantChange] = []
    follower = ChangeFollower(other, seen.append, poll_interval=60)
    follower.generation = other.latest_generation()
    _writes(registry, 3)
    follower.poll()
    seen.clear()
    generations = _writes(registry, 2)

    # Keeps the two it has not read; the marker is the last one it read.
    registry.prune_feed(FeedRetention(max_changes=2))
    follower.poll()

    assert [(c.generation, c.operation) for c in seen] == [
        (generations[-2], "config"),
        (generations[-1], "config"),
    ]


def test_a_follower_keeping_up_never_resyncs_however_often_the_feed_is_pruned(
    registry: TenantRegistry, other: TenantRegistry
) -> None:
    registry.create_tenant("acme", owner_email="o@x.test")
    seen: list[TenantChange] = []
    follower = ChangeFollower(other, seen.append, poll_interval=60)
    follower.generation = other.latest_generation()

    for i in range(6):
        registry.update_config("acme", {"i": i})
        follower.poll()
        registry.prune_feed(FeedRetention(max_changes=1))
        follower.poll()

    assert [c.operation for c in seen] == ["config"] * 6


def test_a_gap_in_the_generations_causes_no_resync(
    registry: TenantRegistry, other: TenantRegistry, database_url: str
) -> None:
    # A generation no change has: on PostgreSQL a rolled-back insert leaves
    # one; here a committed row is deleted again, which looks the same.
    registry.create_tenant("acme", owner_email="o@x.test")
    seen: list[TenantChange] = []
    follower = ChangeFollower(other, seen.append, poll_interval=60)
    follower.generation = start = other.latest_generation()
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            gap = connection.execute(
                insert(change_table).returning(change_table.c.generation),
                {"slug": "x", "operation": "config", "changed_at": utcnow()},
            ).scalar_one()
            connection.execute(
                delete(change_table).where(change_table.c.generation == gap)
            )
    finally:
        engine.dispose()
    [*_, newest] = _writes(registry, 1)

    # Everything but the newest goes: the marker is the follower's own position.
    registry.prune_feed(FeedRetention(max_changes=1))
    follower.poll()

    assert start < gap < newest
    assert [(c.generation, c.operation) for c in seen] == [(newest, "config")]


def test_a_dispatcher_behind_the_pruned_changes_drops_its_apps(
    registry: TenantRegistry, other: TenantRegistry
) -> None:
    registry.create_tenant(
        "acme", owner_email="o@x.test", subdomain="acme", config={"colour": "red"}
    )
    registry.create_tenant("beta", owner_email="o@x.test", subdomain="beta")
    built: list[str] = []

    def counting_create_app(tenant: Tenant) -> Flask:
        built.append(tenant.slug)
        return create_app(tenant)

    dispatcher = TenantDispatcher(
        other,
        counting_create_app,
        base_domain="example.com",
        policy=CachePolicy(poll_interval=60),
    )
    client = Client(dispatcher)
    red = client.get("/", headers={"Host": "acme.example.com"})
    client.get("/", headers={"Host": "beta.example.com"})
    follower = other.feed.follow()
    # Away: acme's change is pruned before this process reads it.
    registry.update_config("acme", {"colour": "blue"})
    registry.update_config("beta", {"seen": True})
    registry.prune_feed(FeedRetention(max_changes=1))

    follower.poll()
    blue = client.get("/", headers={"Host": "acme.example.com"})
    client.get("/", headers={"Host": "beta.example.com"})
    dispatcher.close()

    assert red.json == {"tenant": "acme", "config": {"colour": "red"}}
    assert blue.json == {"tenant": "acme", "config": {"colour": "blue"}}
    # Everything built before the resync was built again.
    assert built == ["acme", "beta", "acme", "beta"]
