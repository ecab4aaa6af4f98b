"""The app cache: directly on :class:`AppCache`, and end to end through
:class:`TenantDispatcher` with real Flask tenant apps and a real registry.

Time is a fake clock (:class:`Timer`, like cachetools' ``tests/test_ttl.py``):
no test sleeps for a TTL. Threads start together on a :class:`threading.Barrier`,
wait for each other on :class:`threading.Event`\\ s and are joined with a bound.
The one real wait is ``build_timeout=0.2`` in the two waiter-timeout tests.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response
from helpers import WAIT, Background, Timer, make_tenant, with_policy
from sqlalchemy import URL, create_engine, make_url, text
from werkzeug.test import Client, EnvironBuilder, TestResponse

from dispatcher import (
    BuildFailed,
    BuildTimeout,
    RegistryUnavailable,
    SchemaMissing,
    Tenant,
    TenantDispatcher,
    TenantRegistry,
    current_tenant,
)
from dispatcher.cache import BURST_WAIT, AppCache, Entry
from dispatcher.policy import CachePolicy
from dispatcher.tenant import thaw

BASE = "example.test"
THREADS = 64
CHUNKS = [b"chunk 0\n", b"chunk 1\n", b"chunk 2\n"]


# -- test doubles that are not mocks: a clock, a build function, recorders -------


class Waits:
    """A build hook that blocks until ``event`` is set; remembers if it was."""

    def __init__(self, event: threading.Event | threading.Barrier) -> None:
        self.event = event
        self.ok: bool | None = None

    def __call__(self) -> None:
        if isinstance(self.event, threading.Barrier):
            self.event.wait(WAIT)  # BrokenBarrierError fails the build
            self.ok = True
        else:
            self.ok = self.event.wait(WAIT)


class _BuildLog:
    """Counts builds per slug, runs a per-slug hook in the build, can fail it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count: Counter[str] = Counter()
        self.hooks: dict[str, Callable[[], object]] = {}
        self.failing: set[str] = set()
        self._started: dict[str, threading.Event] = {}

    def started(self, slug: str) -> threading.Event:
        """Set once a build of ``slug`` has begun."""
        with self.lock:
            return self._started.setdefault(slug, threading.Event())

    def _begin(self, tenant: Tenant) -> None:
        with self.lock:
            self.count[tenant.slug] += 1
        self.started(tenant.slug).set()
        hook = self.hooks.get(tenant.slug)
        if hook is not None:
            hook()
        if tenant.slug in self.failing:
            raise RuntimeError(f"create_app({tenant.slug!r}) failed")


class TinyApp:
    """The WSGI app :class:`Builds` makes: answers with its tenant's slug."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant

    def __call__(self, environ: Any, start_response: Any) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [self.tenant.slug.encode()]


class Builds(_BuildLog):
    """The ``build`` of an :class:`AppCache` under test."""

    def __init__(self) -> None:
        super().__init__()
        self.apps: list[TinyApp] = []

    def __call__(self, tenant: Tenant) -> TinyApp:
        self._begin(tenant)
        app = TinyApp(tenant)
        with self.lock:
            self.apps.append(app)
        return app


class TenantApps(_BuildLog):
    """``create_app`` for the dispatcher: a real Flask app per tenant.

    Each build gets a number, shown by ``GET /``; teardown calls are counted per
    build number through ``app.extensions["dispatcher.teardown"]``, so the
    dispatcher's :func:`default_teardown` is what runs them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.serial = 0
        self.torn: Counter[int] = Counter()

    def __call__(self, tenant: Tenant) -> Flask:
        self._begin(tenant)
        with self.lock:
            self.serial += 1
            number = self.serial
        app = Flask(f"tenant_{tenant.slug}")
        config = thaw(tenant.config)

        @app.get("/")
        def index() -> dict[str, Any]:
            return {
                "slug": tenant.slug,
                "served_as": current_tenant.slug,
                "version": tenant.version,
                "config": config,
                "build": number,
            }

        @app.get("/stream")
        def stream() -> Response:
            def chunks() -> Iterator[bytes]:
                yield from CHUNKS

            return Response(chunks(), mimetype="text/plain")

        app.extensions["dispatcher.teardown"] = [partial(self._torn_down, number)]
        return app

    def _torn_down(self, number: int) -> None:
        with self.lock:
            self.torn[number] += 1


class Teardowns:
    """The ``teardown`` of an :class:`AppCache` under test: records each call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[tuple[object, Tenant]] = []

    def __call__(self, app: object, tenant: Tenant) -> None:
        with self._lock:
            self.calls.append((app, tenant))

    def of(self, app: object) -> int:
        return sum(1 for torn, _ in self.calls if torn is app)


class Lookup:
    """The ``lookup`` of ``AppCache.load``: a snapshot (or None), counted."""

    def __init__(
        self, tenant: Tenant | None, hook: Callable[[], object] | None = None
    ) -> None:
        self.tenant = tenant
        self.hook = hook
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> Tenant | None:
        with self._lock:
            self.calls += 1
        if self.hook is not None:
            self.hook()
        return self.tenant


class CountingRegistry(TenantRegistry):
    """A real registry that counts calls of its ``find_by_*`` methods.

    Every ``find_by_*`` method is counted, whatever the dispatcher uses (one
    per lookup, or a custom-domain query then a subdomain query), and only the
    outermost call. :meth:`pause` stops a lookup after its last query, so a
    test can write to the registry while the lookup's answer is on its way.
    """

    def __init__(self, url: str | URL) -> None:
        super().__init__(url)
        self._count_lock = threading.Lock()
        self._local = threading.local()
        self.lookups: Counter[str] = Counter()
        self._pause: list[Any] | None = None

    def __getattribute__(self, name: str) -> Any:
        attribute = super().__getattribute__(name)
        if name.startswith("find_by_") and callable(attribute):
            counted = object.__getattribute__(self, "_counted")
            return partial(counted, name, attribute)
        return attribute

    def _counted(self, name: str, method: Callable[..., Any], *args: Any) -> Any:
        if getattr(self._local, "inside", False):
            return method(*args)
        with self._count_lock:
            self.lookups[name] += 1
        self._local.inside = True
        try:
            found = method(*args)
        finally:
            self._local.inside = False
        with self._count_lock:
            pause = self._pause
            if pause is not None:
                pause[0] -= 1
                if pause[0] == 0:
                    self._pause = None
                else:
                    pause = None
        if pause is not None:
            _, reached, resume = pause
            reached.set()
            resume.wait(WAIT)
        return found

    def pause(self, after: int) -> tuple[threading.Event, threading.Event]:
        """(reached, resume): the ``after``-th call from now waits on return."""
        reached, resume = threading.Event(), threading.Event()
        self._pause = [after, reached, resume]
        return reached, resume

    @property
    def total(self) -> int:
        return sum(self.lookups.values())


# -- helpers --------------------------------------------------------------------


def create(registry: TenantRegistry, slug: str, **options: Any) -> Tenant:
    return registry.create_tenant(
        slug, owner_email=f"owner@{slug}.test", subdomain=slug, **options
    )


def host(slug: str) -> str:
    return f"{slug}.{BASE}"


def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return lambda data: None


def fetch(cache: AppCache, key: str, lookup: Callable[[], Tenant | None]) -> Any:
    """One request the way the dispatcher makes it; the lease ends at once."""
    entry = cache.get(key, lookup)
    if entry is not None:
        entry.release()
    return entry


def leased(cache: AppCache, key: str, lookup: Callable[[], Tenant | None]) -> Entry:
    """The entry for ``key``, leased: a response still in flight."""
    entry = cache.get(key, lookup)
    assert entry is not None
    return entry


def get(dispatcher: TenantDispatcher, hostname: str, path: str = "/") -> TestResponse:
    # buffered: the body is read and closed, so the lease ends with the request.
    return Client(dispatcher).get(path, base_url=f"http://{hostname}", buffered=True)


def run_threads(count: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``count`` threads released at once by a barrier.

    Returns each result, or the exception it raised.
    """
    results: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def work(index: int) -> None:
        try:
            barrier.wait(WAIT)
            results[index] = target(index)
        except BaseException as e:  # handed to the test
            results[index] = e

    threads = [
        threading.Thread(target=work, args=(i,), daemon=True) for i in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert not any(thread.is_alive() for thread in threads), "threads hung"
    return results


# -- fixtures -------------------------------------------------------------------


@pytest.fixture
def timer() -> Timer:
    return Timer()


@pytest.fixture
def builds() -> Builds:
    return Builds()


@pytest.fixture
def teardowns() -> Teardowns:
    return Teardowns()


@pytest.fixture
def new_cache(
    builds: Builds, teardowns: Teardowns, timer: Timer
) -> Callable[..., AppCache]:
    def new(**options: Any) -> AppCache:
        # Expired apps are dropped at once unless a test is about keeping them
        # for stale_if_error.
        options.setdefault("stale_if_error", 0)
        return AppCache(builds, teardown=teardowns, timer=timer, **with_policy(options))

    return new


@pytest.fixture
def counting(registry: TenantRegistry, database_url: str) -> Iterator[CountingRegistry]:
    """A registry object of its own on the (migrated) test database.

    The dispatcher follows the writes of the registry object it was given, so
    tests write through this one.
    """
    counting = CountingRegistry(database_url)
    yield counting
    counting.close()


@pytest.fixture
def per_lookup(counting: CountingRegistry, apps: TenantApps) -> int:
    """Registry calls the dispatcher makes to look up one ``<label>.<BASE>``.

    Two (custom domain, then subdomain) or one combined query, depending on
    the registry's API; measured, so the tests count lookups either way.
    """
    probe = TenantDispatcher(counting, apps, base_domain=BASE)
    try:
        assert get(probe, host("calibration")).status_code == 404
    finally:
        probe.close()
    calls = counting.total
    assert calls >= 1
    counting.lookups.clear()
    return calls


@pytest.fixture
def apps() -> TenantApps:
    return TenantApps()


@pytest.fixture
def make_dispatcher(
    counting: CountingRegistry, apps: TenantApps, timer: Timer
) -> Iterator[Callable[..., TenantDispatcher]]:
    made: list[TenantDispatcher] = []

    def make(
        registry: TenantRegistry | None = None, **options: Any
    ) -> TenantDispatcher:
        options.setdefault("base_domain", BASE)
        options.setdefault("timer", timer)
        dispatcher = TenantDispatcher(
            registry or counting, apps, **with_policy(options)
        )
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close()


# -- AppCache: single flight ----------------------------------------------------


def test_stampede_on_a_cold_tenant_looks_up_and_builds_once(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    timer: Timer,
) -> None:
    tenant = create(registry, "acme")
    # Counted waiters (see the dispatcher's stampede test): burst waiters
    # would wait BURST_WAIT of real time for a build held until all arrive.
    cache = new_cache(max_waiters=THREADS)
    lookup = Lookup(tenant)
    # The build goes on only once all 64 threads are in load(): 63 wait for it.
    everyone_waits = Waits(timer.watch(THREADS))
    builds.hooks["acme"] = everyone_waits

    entries = run_threads(THREADS, lambda _: fetch(cache, host("acme"), lookup))

    assert everyone_waits.ok
    assert lookup.calls == 1
    assert builds.count == {"acme": 1}
    assert all(isinstance(entry, Entry) for entry in entries)
    assert {id(entry) for entry in entries} == {id(entries[0])}
    assert entries[0].app is builds.apps[0]
    assert entries[0].tenant == tenant
    assert entries[0].inflight == 0
    stats = cache.stats()
    assert (stats.misses, stats.builds, stats.apps) == (1, 1, 1)
    # Later requests are lock-free hits on the same entry.
    assert fetch(cache, host("acme"), lookup) is entries[0]
    assert lookup.calls == 1


def test_different_tenants_build_in_parallel(
    registry: TenantRegistry, new_cache: Callable[..., AppCache], builds: Builds
) -> None:
    tenants = [create(registry, "alpha"), create(registry, "delta")]
    cache = new_cache()
    # Each build waits for the other to be running too: serial builds would
    # break the barrier and fail.
    both_building = threading.Barrier(2)
    builds.hooks["alpha"] = builds.hooks["delta"] = Waits(both_building)

    entries = run_threads(
        2, lambda i: fetch(cache, host(tenants[i].slug), Lookup(tenants[i]))
    )

    assert [entry.tenant.slug for entry in entries] == ["alpha", "delta"]
    assert builds.count == {"alpha": 1, "delta": 1}


def test_slow_build_delays_neither_cached_nor_other_cold_tenants(
    registry: TenantRegistry, new_cache: Callable[..., AppCache], builds: Builds
) -> None:
    alpha, bravo, charlie = (create(registry, s) for s in ("alpha", "bravo", "charlie"))
    cache = new_cache()
    cached = fetch(cache, host("bravo"), Lookup(bravo))
    release_alpha = threading.Event()
    builds.hooks["alpha"] = Waits(release_alpha)

    slow = Background(lambda: fetch(cache, host("alpha"), Lookup(alpha)))
    try:
        assert builds.started("alpha").wait(WAIT)
        bravo_lookup = Lookup(bravo)
        assert fetch(cache, host("bravo"), bravo_lookup) is cached
        assert bravo_lookup.calls == 0
        built = fetch(cache, host("charlie"), Lookup(charlie))
        assert built.tenant.slug == "charlie"
        assert not slow.done.is_set(), "alpha's build should still be blocked"
    finally:
        release_alpha.set()
        slow.wait()
    assert slow.join().tenant.slug == "alpha"
    assert builds.count == {"alpha": 1, "bravo": 1, "charlie": 1}


# -- AppCache: failures and timeouts --------------------------------------------


def test_failed_build_fails_its_waiters_is_not_cached_and_backs_off(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    teardowns: Teardowns,
    timer: Timer,
) -> None:
    tenant = create(registry, "acme")
    cache = new_cache(failure_backoff=5)
    lookup = Lookup(tenant)
    builds.failing.add("acme")
    everyone_waits = Waits(timer.watch(8))
    builds.hooks["acme"] = everyone_waits

    results = run_threads(8, lambda _: cache.load(host("acme"), lookup))

    assert everyone_waits.ok
    assert all(isinstance(result, BuildFailed) for result in results), results
    assert isinstance(results[0].__cause__, RuntimeError)
    assert (builds.count["acme"], lookup.calls) == (1, 1)
    assert "acme" not in cache
    assert len(cache) == 0
    assert cache.lease(host("acme")) is None

    # create_app would work now, but the failure is remembered for 5 s.
    builds.hooks.clear()
    builds.failing.clear()
    timer.tick(4)
    with pytest.raises(BuildFailed):
        fetch(cache, host("acme"), lookup)
    assert (builds.count["acme"], lookup.calls) == (1, 1)

    timer.tick(1)
    entry = fetch(cache, host("acme"), lookup)
    assert entry.tenant == tenant
    assert (builds.count["acme"], lookup.calls) == (2, 2)
    stats = cache.stats()
    assert (stats.build_failures, stats.builds, stats.apps) == (1, 1, 1)
    assert teardowns.calls == []


def test_registry_errors_are_shared_by_waiters_and_never_remembered(
    registry: TenantRegistry, new_cache: Callable[..., AppCache], timer: Timer
) -> None:
    tenant = create(registry, "acme")
    cache = new_cache()
    everyone_waits = Waits(timer.watch(8))

    def database_down() -> None:
        everyone_waits()
        raise RegistryUnavailable("the database is down")

    failing = Lookup(tenant, hook=database_down)
    results = run_threads(8, lambda _: cache.load(host("acme"), failing))

    assert everyone_waits.ok
    assert all(isinstance(r, RegistryUnavailable) for r in results), results
    assert failing.calls == 1
    stats = cache.stats()
    assert (stats.negative_entries, stats.build_failures, stats.apps) == (0, 0, 0)
    # No backoff and no negative answer: the next request asks again at once.
    recovered = Lookup(tenant)
    assert fetch(cache, host("acme"), recovered).tenant == tenant
    assert recovered.calls == 1


def test_waiter_gives_up_after_build_timeout(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
) -> None:
    tenant = create(registry, "acme")
    cache = new_cache(build_timeout=0.2)
    lookup = Lookup(tenant)
    release = threading.Event()
    builds.hooks["acme"] = Waits(release)

    leader = Background(lambda: fetch(cache, host("acme"), lookup))
    try:
        assert builds.started("acme").wait(WAIT)
        with pytest.raises(BuildTimeout, match="not built within 0.2 s"):
            cache.load(host("acme"), lookup)  # waits 0.2 s of real time
        assert not leader.done.is_set()
    finally:
        release.set()
        leader.wait()
    entry = leader.join()
    assert entry.tenant == tenant
    assert fetch(cache, host("acme"), lookup) is entry
    assert (builds.count["acme"], lookup.calls) == (1, 1)


# -- AppCache: expiry, capacity, teardown ------------------------------------


def test_app_is_served_until_its_ttl_then_rebuilt_and_torn_down_once(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    teardowns: Teardowns,
    timer: Timer,
) -> None:
    tenant = create(registry, "acme")
    cache = new_cache(app_ttl=60)
    lookup = Lookup(tenant)
    first = fetch(cache, host("acme"), lookup)

    timer.tick(59)
    assert fetch(cache, host("acme"), lookup) is first
    assert (builds.count["acme"], lookup.calls, teardowns.of(first.app)) == (1, 1, 0)

    timer.tick(1)
    second = fetch(cache, host("acme"), lookup)
    assert second is not first
    assert second.app is not first.app
    assert (builds.count["acme"], lookup.calls) == (2, 2)
    assert teardowns.of(first.app) == 1
    assert fetch(cache, host("acme"), lookup) is second

    timer.tick(30)
    assert fetch(cache, host("acme"), lookup) is second
    assert teardowns.of(first.app) == 1
    assert teardowns.of(second.app) == 0
    assert cache.stats().evictions["expired"] == 1


def test_expired_app_with_a_response_in_flight_is_torn_down_on_release(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    teardowns: Teardowns,
    timer: Timer,
) -> None:
    tenant = create(registry, "acme")
    cache = new_cache(app_ttl=60)
    lookup = Lookup(tenant)
    streaming = leased(cache, host("acme"), lookup)  # a response in flight
    timer.tick(60)

    replacement = fetch(cache, host("acme"), lookup)

    assert replacement is not streaming
    assert teardowns.of(streaming.app) == 0
    assert streaming.acquire() is False  # retired: no new responses
    streaming.release()
    assert teardowns.of(streaming.app) == 1
    # Once torn down, neither a late lease attempt nor another retire repeats it.
    assert streaming.acquire() is False
    streaming.retire()
    assert teardowns.of(streaming.app) == 1
    assert teardowns.of(replacement.app) == 0


def test_capacity_eviction_gives_recently_hit_apps_a_second_chance(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    teardowns: Teardowns,
) -> None:
    a, b, c = (create(registry, s) for s in ("alpha", "bravo", "charlie"))
    cache = new_cache(max_apps=2)
    entry_a = fetch(cache, host("alpha"), Lookup(a))
    entry_b = fetch(cache, host("bravo"), Lookup(b))
    assert fetch(cache, host("alpha"), Lookup(a)) is entry_a  # a hit: A used

    fetch(cache, host("charlie"), Lookup(c))

    assert "alpha" in cache
    assert "bravo" not in cache
    assert "charlie" in cache
    assert teardowns.of(entry_b.app) == 1
    assert teardowns.of(entry_a.app) == 0
    assert cache.lease(host("bravo")) is None
    assert fetch(cache, host("alpha"), Lookup(a)) is entry_a
    assert builds.count == {"alpha": 1, "bravo": 1, "charlie": 1}
    assert cache.stats().evictions == {"capacity": 1, "expired": 0, "invalidated": 0}


def test_capacity_eviction_without_hits_drops_the_oldest(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    teardowns: Teardowns,
) -> None:
    a, b, c = (create(registry, s) for s in ("alpha", "bravo", "charlie"))
    cache = new_cache(max_apps=2)
    entry_a = fetch(cache, host("alpha"), Lookup(a))
    fetch(cache, host("bravo"), Lookup(b))

    fetch(cache, host("charlie"), Lookup(c))

    assert sorted(entry.tenant.slug for entry in cache.entries()) == [
        "bravo",
        "charlie",
    ]
    assert teardowns.of(entry_a.app) == 1


def test_memory_stays_bounded_by_max_apps(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    teardowns: Teardowns,
) -> None:
    specs = [
        registry.new_tenant(
            f"t{i:02d}", owner_email="owner@t.test", subdomain=f"t{i:02d}"
        )
        for i in range(50)
    ]
    list(registry.import_tenants(specs))
    tenants = registry.list_tenants()
    assert len(tenants) == 50
    cache = new_cache(max_apps=5)

    for tenant in tenants:
        assert fetch(cache, host(tenant.slug), Lookup(tenant)).tenant == tenant
        assert len(cache) <= 5

    stats = cache.stats()
    assert len(cache) == stats.apps == len(cache.entries()) == 5
    assert stats.builds == 50
    assert stats.evictions == {"capacity": 45, "expired": 0, "invalidated": 0}
    assert len(teardowns.calls) == 45
    assert all(teardowns.of(app) == 1 for app in builds.apps[:45])
    assert {entry.tenant.slug for entry in cache.entries()} == {
        tenant.slug for tenant in tenants[45:]
    }


def test_teardown_runs_exactly_once_while_requests_race_evictions(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    teardowns: Teardowns,
) -> None:
    tenant = create(registry, "acme")
    cache = new_cache()
    lookup = Lookup(tenant)
    workers = 8
    finished: list[int] = []
    all_finished = threading.Event()
    evicted = threading.Event()

    def requests(index: int) -> None:
        if index == workers:  # the evictor, for as long as requests are made
            while not all_finished.is_set():
                if cache.invalidate("acme"):
                    evicted.set()
            return
        for i in range(100):
            entry = leased(cache, host("acme"), lookup)
            assert entry.app({}, start_response) == [b"acme"]  # serve with it
            if i == 50:  # one eviction at least while this response is open
                assert evicted.wait(WAIT)
            entry.release()
        finished.append(index)
        if len(finished) == workers:
            all_finished.set()

    results = run_threads(workers + 1, requests)
    cache.clear()

    assert results == [None] * (workers + 1)
    assert len(teardowns.calls) == len(builds.apps)
    assert all(teardowns.of(app) == 1 for app in builds.apps)


def test_default_teardown_runs_once_through_the_cache(
    registry: TenantRegistry, timer: Timer
) -> None:
    tenant = create(registry, "acme")
    disposed: list[str] = []

    def build(tenant: Tenant) -> Flask:
        app = Flask(f"tenant_{tenant.slug}")
        app.extensions["dispatcher.teardown"] = [partial(disposed.append, "engine")]
        return app

    cache = AppCache(build, timer=timer)  # default_teardown
    entry = leased(cache, host("acme"), Lookup(tenant))
    assert cache.invalidate("acme") is True
    assert cache.invalidate("acme") is False
    assert disposed == []  # the response is still in flight
    entry.release()
    assert disposed == ["engine"]
    cache.clear()
    assert disposed == ["engine"]


# -- AppCache: negative cache ---------------------------------------------------


def test_unknown_names_are_remembered_for_negative_ttl(
    new_cache: Callable[..., AppCache], timer: Timer
) -> None:
    cache = new_cache(negative_ttl=5)
    nobody = Lookup(None)

    for _ in range(5):
        assert fetch(cache, host("ghost"), nobody) is None
    assert nobody.calls == 1
    assert cache.stats().negative_hits == 4

    timer.tick(4)
    assert fetch(cache, host("ghost"), nobody) is None
    assert nobody.calls == 1

    timer.tick(1)
    assert fetch(cache, host("ghost"), nobody) is None
    assert nobody.calls == 2


def test_negative_cache_is_bounded_and_a_flood_evicts_no_app(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    teardowns: Teardowns,
) -> None:
    alpha, bravo = create(registry, "alpha"), create(registry, "bravo")
    cache = new_cache(max_apps=2, negative_size=10)
    entries = [fetch(cache, host(t.slug), Lookup(t)) for t in (alpha, bravo)]
    nobody = Lookup(None)

    for i in range(1000):
        assert fetch(cache, f"unknown-{i}.{BASE}", nobody) is None

    stats = cache.stats()
    assert nobody.calls == 1000
    assert stats.negative_entries <= 10
    assert stats.apps == 2
    assert stats.evictions == {"capacity": 0, "expired": 0, "invalidated": 0}
    assert teardowns.calls == []
    assert [cache.lease(host(t.slug)) for t in (alpha, bravo)] == entries
    assert builds.count == {"alpha": 1, "bravo": 1}


# -- AppCache: stats ------------------------------------------------------------


def test_stats_count_everything_by_cause(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    teardowns: Teardowns,
    timer: Timer,
) -> None:
    t1, t2, t3, t4, bad = (create(registry, s) for s in ("t1", "t2", "t3", "t4", "bad"))
    # Builds take 1, 2, 3 and 4 fake seconds.
    for seconds, tenant in enumerate((t1, t2, t3, t4), start=1):
        builds.hooks[tenant.slug] = partial(timer.tick, seconds)
    builds.failing.add("bad")
    cache = new_cache(
        max_apps=3, app_ttl=100, negative_ttl=5, negative_size=10, failure_backoff=5
    )
    empty = cache.stats()
    assert (empty.build_time_p50, empty.build_time_p90, empty.build_time_p99) == (
        None,
        None,
        None,
    )
    assert empty.evictions == {"capacity": 0, "expired": 0, "invalidated": 0}

    fetch(cache, "t1", Lookup(t1))  # miss, build (1 s), t=1, expires at 101
    single = cache.stats()
    assert single.build_time_p50 == single.build_time_p90 == single.build_time_p99
    assert single.build_time_p50 == 1
    fetch(cache, "t1", Lookup(t1))  # hit
    fetch(cache, "t1", Lookup(t1))  # hit
    for _ in range(3):
        fetch(cache, "ghost", Lookup(None))  # miss, then 2 negative hits
    for _ in range(2):
        with pytest.raises(BuildFailed):
            fetch(cache, "bad", Lookup(bad))  # miss and failure, then backoff
    fetch(cache, "t2", Lookup(t2))  # miss, build (2 s), t=3
    fetch(cache, "t3", Lookup(t3))  # miss, build (3 s), t=6
    fetch(cache, "t4", Lookup(t4))  # miss, build (4 s): t2 out for capacity
    assert cache.invalidate("t3") is True
    timer.tick(100)  # t1 and t4 expire
    fetch(cache, "t4", Lookup(t4))  # miss, build (4 s)
    fetch(cache, "ghost", Lookup(None))  # miss (invalidate cleared negatives)

    stats = cache.stats()
    assert stats.hits == 2
    assert stats.misses == 8
    assert stats.negative_hits == 2
    assert stats.builds == 5
    assert stats.build_failures == 1
    assert stats.evictions == {"capacity": 1, "expired": 2, "invalidated": 1}
    assert stats.apps == 1
    assert stats.negative_entries == 1
    assert (stats.build_time_p50, stats.build_time_p90, stats.build_time_p99) == (
        3,
        4,
        4,
    )
    assert len(teardowns.calls) == 4
    assert {torn.slug for _, torn in teardowns.calls} == {"t1", "t2", "t3", "t4"}


# -- AppCache: bugs -------------------------------------------------------------


def test_backed_off_failure_is_raised_without_growing_its_traceback(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
) -> None:
    """Each request during the backoff re-raises the one stored BuildFailed.

    Raising an exception object again prepends the new frames to its old
    traceback, so the stored failure keeps every request's frames (and their
    locals: each WSGI environ) alive until the backoff ends.
    """
    tenant = create(registry, "acme")
    builds.failing.add("acme")
    cache = new_cache(failure_backoff=5)
    depths = []
    for _ in range(20):
        try:
            fetch(cache, host("acme"), Lookup(tenant))
        except BuildFailed as e:
            depths.append(len(traceback.extract_tb(e.__traceback__)))
    assert builds.count["acme"] == 1
    assert len(depths) == 20
    # The 2nd request's traceback is as deep as the 20th's.
    assert depths[1:] == [depths[1]] * 19, depths


def test_expired_app_dropped_by_stats_is_torn_down(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    teardowns: Teardowns,
    timer: Timer,
) -> None:
    """stats() and len() expire entries and retire what they drop."""
    tenant = create(registry, "acme")
    cache = new_cache(app_ttl=60, stale_if_error=30)
    entry = fetch(cache, host("acme"), Lookup(tenant))
    timer.tick(60)

    assert cache.stats().apps == len(cache) == 1  # kept for stale_if_error
    assert teardowns.of(entry.app) == 0

    timer.tick(30)
    stats = cache.stats()

    assert stats.evictions["expired"] == 1
    assert stats.apps == len(cache) == 0
    assert entry.inflight == 0
    # Evicted, unreachable and no response in flight: it should be torn down now,
    # not whenever some later request happens to miss.
    assert teardowns.of(entry.app) == 1


class Unreachable:
    """A lookup whose database is down, until ``up`` is set."""

    def __init__(self, tenant: Tenant) -> None:
        self.tenant = tenant
        self.up = False
        self.calls = 0

    def __call__(self) -> Tenant:
        self.calls += 1
        if not self.up:
            raise RegistryUnavailable("the database is down")
        return self.tenant


def test_expired_app_is_served_while_the_database_is_down(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    teardowns: Teardowns,
    timer: Timer,
) -> None:
    tenant = create(registry, "acme")
    cache = new_cache(app_ttl=60, stale_if_error=120, failure_backoff=5)
    entry = fetch(cache, host("acme"), Lookup(tenant))
    lookup = Unreachable(tenant)
    timer.tick(60)

    assert fetch(cache, host("acme"), lookup) is entry
    assert lookup.calls == 1
    # Retried after failure_backoff, not on every request.
    timer.tick(4)
    assert fetch(cache, host("acme"), lookup) is entry
    assert lookup.calls == 1
    timer.tick(1)
    assert fetch(cache, host("acme"), lookup) is entry
    assert lookup.calls == 2

    lookup.up = True
    timer.tick(5)
    rebuilt = fetch(cache, host("acme"), lookup)

    assert rebuilt is not entry
    assert builds.count == {"acme": 2}
    assert teardowns.of(entry.app) == 1


def test_expired_app_is_not_served_past_its_stale_window(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    teardowns: Teardowns,
    timer: Timer,
) -> None:
    tenant = create(registry, "acme")
    cache = new_cache(app_ttl=60, stale_if_error=10)
    entry = fetch(cache, host("acme"), Lookup(tenant))
    timer.tick(70)

    with pytest.raises(RegistryUnavailable):
        fetch(cache, host("acme"), Unreachable(tenant))
    assert teardowns.of(entry.app) == 1


def test_an_app_kept_stale_is_served_no_longer_than_the_cache_keeps_it(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    teardowns: Teardowns,
    timer: Timer,
) -> None:
    """What the lock-free hit path serves agrees with what the cache holds.

    Kept stale two seconds before its stale window ends, the app must not be
    served past that end (for failure_backoff) while the cache no longer
    counts it.
    """
    tenant = create(registry, "acme")
    cache = new_cache(app_ttl=60, stale_if_error=10, failure_backoff=5)
    entry = fetch(cache, host("acme"), Lookup(tenant))
    timer.tick(68)
    assert fetch(cache, host("acme"), Unreachable(tenant)) is entry

    timer.tick(1)
    assert fetch(cache, host("acme"), Unreachable(tenant)) is entry  # a hit
    timer.tick(1)  # the stale window (60 + 10 s) is over

    assert "acme" not in cache
    assert cache.lease(host("acme")) is None
    assert len(cache) == 0
    assert teardowns.of(entry.app) == 1


def test_a_second_chance_does_not_stretch_the_stale_window(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    teardowns: Teardowns,
    timer: Timer,
) -> None:
    """Capacity eviction puts a used app back: it must leave when it would have.

    The cache's expiry heap used to see a kept-stale app's new ``expires_at``
    only when the app was put back, and then counted its whole stale window
    again from there.
    """
    alpha, bravo, charlie = (create(registry, s) for s in ("alpha", "bravo", "charlie"))
    cache = new_cache(max_apps=2, app_ttl=60, stale_if_error=10, failure_backoff=5)
    kept = fetch(cache, host("alpha"), Lookup(alpha))
    fetch(cache, host("bravo"), Lookup(bravo))
    timer.tick(68)  # both expired, in their stale window until 70
    for tenant in (alpha, bravo):
        assert fetch(cache, host(tenant.slug), Unreachable(tenant)).tenant == tenant
    assert fetch(cache, host("alpha"), Unreachable(alpha)) is kept  # used
    # Over capacity: alpha, used, is put back; bravo goes.
    fetch(cache, host("charlie"), Lookup(charlie))
    assert "alpha" in cache and "bravo" not in cache

    timer.tick(7)  # past alpha's stale window

    with pytest.raises(RegistryUnavailable):
        fetch(cache, host("alpha"), Unreachable(alpha))
    assert teardowns.of(kept.app) == 1


# -- Through the dispatcher -----------------------------------------------------


def test_dispatcher_stampede_makes_one_lookup_and_one_build(
    counting: CountingRegistry,
    per_lookup: int,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
    timer: Timer,
) -> None:
    create(counting, "acme")
    # Every request a counted waiter: a burst waiter waits BURST_WAIT seconds
    # of real time, and the build (held until all have arrived) cannot finish
    # within that when starting 64 threads outlasts it on a loaded machine.
    dispatcher = make_dispatcher(max_waiters=THREADS)
    everyone_waits = Waits(timer.watch(THREADS))
    apps.hooks["acme"] = everyone_waits

    responses = run_threads(THREADS, lambda _: get(dispatcher, host("acme")))

    assert everyone_waits.ok
    assert [r.status_code for r in responses] == [200] * THREADS
    assert {r.get_json()["build"] for r in responses} == {1}
    assert {r.get_json()["served_as"] for r in responses} == {"acme"}
    assert counting.total == per_lookup  # one lookup
    assert apps.count == {"acme": 1}
    assert dispatcher.stats().misses == 1


def test_dispatcher_slow_build_blocks_no_other_tenant(
    counting: CountingRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
) -> None:
    for slug in ("alpha", "bravo", "charlie"):
        create(counting, slug)
    dispatcher = make_dispatcher()
    assert get(dispatcher, host("bravo")).status_code == 200
    release_alpha = threading.Event()
    apps.hooks["alpha"] = Waits(release_alpha)

    slow = Background(lambda: get(dispatcher, host("alpha")))
    try:
        assert apps.started("alpha").wait(WAIT)
        cached = get(dispatcher, host("bravo"))
        assert (cached.status_code, cached.get_json()["build"]) == (200, 1)
        cold = get(dispatcher, host("charlie"))
        assert (cold.status_code, cold.get_json()["slug"]) == (200, "charlie")
        assert not slow.done.is_set(), "alpha's build should still be blocked"
    finally:
        release_alpha.set()
        slow.wait()
    response = slow.join()
    assert (response.status_code, response.get_json()["slug"]) == (200, "alpha")
    assert apps.count == {"alpha": 1, "bravo": 1, "charlie": 1}


def test_dispatcher_build_failure_is_500_backed_off_and_retried(
    counting: CountingRegistry,
    per_lookup: int,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
    timer: Timer,
) -> None:
    create(counting, "acme")
    dispatcher = make_dispatcher(failure_backoff=5)
    apps.failing.add("acme")
    everyone_waits = Waits(timer.watch(8))
    apps.hooks["acme"] = everyone_waits

    responses = run_threads(8, lambda _: get(dispatcher, host("acme")))

    assert everyone_waits.ok
    assert [r.status_code for r in responses] == [500] * 8
    assert apps.count["acme"] == 1
    assert counting.total == per_lookup  # one lookup
    assert dispatcher.stats().apps == 0

    apps.hooks.clear()
    apps.failing.clear()
    timer.tick(4)
    assert get(dispatcher, host("acme")).status_code == 500
    assert apps.count["acme"] == 1
    assert counting.total == per_lookup  # not even looked up again

    timer.tick(1)
    response = get(dispatcher, host("acme"))
    assert (response.status_code, response.get_json()["slug"]) == (200, "acme")
    assert apps.count["acme"] == 2
    assert dispatcher.stats().build_failures == 1


def test_dispatcher_change_through_the_registry_ends_the_backoff(
    counting: CountingRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
) -> None:
    create(counting, "acme", config={"broken": True})
    dispatcher = make_dispatcher(failure_backoff=5)
    apps.failing.add("acme")
    assert get(dispatcher, host("acme")).status_code == 500
    apps.failing.clear()

    counting.unset_config("acme", "broken")  # the fix, through the registry

    response = get(dispatcher, host("acme"))
    assert response.status_code == 200
    assert response.get_json()["config"] == {}


def test_dispatcher_build_timeout_is_503_with_retry_after(
    counting: CountingRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
) -> None:
    create(counting, "acme")
    dispatcher = make_dispatcher(build_timeout=0.2, retry_after=7)
    release = threading.Event()
    apps.hooks["acme"] = Waits(release)

    leader = Background(lambda: get(dispatcher, host("acme")))
    try:
        assert apps.started("acme").wait(WAIT)
        waiter = get(dispatcher, host("acme"))  # waits 0.2 s of real time
        assert waiter.status_code == 503
        assert waiter.headers["Retry-After"] == "7"
        assert not leader.done.is_set()
    finally:
        release.set()
        leader.wait()
    assert leader.join().status_code == 200
    assert get(dispatcher, host("acme")).get_json()["build"] == 1
    assert apps.count["acme"] == 1


def test_dispatcher_rebuilds_after_app_ttl_and_tears_down_once(
    counting: CountingRegistry,
    per_lookup: int,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
    timer: Timer,
) -> None:
    create(counting, "acme")
    dispatcher = make_dispatcher(app_ttl=60)
    assert get(dispatcher, host("acme")).get_json()["build"] == 1

    timer.tick(59)
    assert get(dispatcher, host("acme")).get_json()["build"] == 1
    assert apps.torn[1] == 0

    timer.tick(1)
    assert get(dispatcher, host("acme")).get_json()["build"] == 2
    assert get(dispatcher, host("acme")).get_json()["build"] == 2
    assert apps.torn == {1: 1}
    assert counting.total == 2 * per_lookup  # two lookups


def test_dispatcher_tears_down_only_after_the_streaming_response_closes(
    counting: CountingRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
) -> None:
    create(counting, "acme")
    dispatcher = make_dispatcher()
    builder = EnvironBuilder(path="/stream", base_url=f"http://{host('acme')}")
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    started: list[str] = []

    def record_start(status: str, headers: Any, exc_info: Any = None) -> Any:
        started.append(status)
        return lambda data: None

    body = dispatcher(environ, record_start)
    chunks = iter(body)
    first = next(chunks)
    assert started == ["200 OK"]

    assert dispatcher.evict("acme") is True
    assert apps.torn[1] == 0
    # A new request meanwhile gets a fresh app; the old one keeps streaming.
    assert get(dispatcher, host("acme")).get_json()["build"] == 2
    assert [first, *chunks] == CHUNKS
    assert apps.torn[1] == 0

    body.close()  # type: ignore[attr-defined]
    assert apps.torn == {1: 1}
    assert dispatcher.evict("acme") is True  # build 2, nothing in flight
    assert dispatcher.evict("acme") is False
    body.close()  # type: ignore[attr-defined]
    assert apps.torn == {1: 1, 2: 1}


def test_dispatcher_remembers_unknown_names_until_negative_ttl(
    counting: CountingRegistry,
    per_lookup: int,
    make_dispatcher: Callable[..., TenantDispatcher],
    timer: Timer,
) -> None:
    dispatcher = make_dispatcher(negative_ttl=5)

    for _ in range(5):
        assert get(dispatcher, host("ghost")).status_code == 404
    assert counting.total == per_lookup  # one lookup
    assert dispatcher.stats().negative_hits == 4

    timer.tick(4)
    assert get(dispatcher, host("ghost")).status_code == 404
    assert counting.total == per_lookup

    timer.tick(1)
    assert get(dispatcher, host("ghost")).status_code == 404
    assert counting.total == 2 * per_lookup


def test_dispatcher_negative_cache_is_bounded_and_spares_apps(
    counting: CountingRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
) -> None:
    create(counting, "alpha")
    create(counting, "bravo")
    dispatcher = make_dispatcher(max_apps=2, negative_size=10)
    assert get(dispatcher, host("alpha")).status_code == 200
    assert get(dispatcher, host("bravo")).status_code == 200

    for i in range(1000):
        assert get(dispatcher, host(f"unknown-{i}")).status_code == 404

    stats = dispatcher.stats()
    assert stats.negative_entries <= 10
    assert stats.apps == 2
    assert stats.evictions == {"capacity": 0, "expired": 0, "invalidated": 0}
    assert get(dispatcher, host("alpha")).get_json()["build"] == 1
    assert get(dispatcher, host("bravo")).get_json()["build"] == 2
    assert apps.torn == {}


def test_dispatcher_serves_a_new_tenant_whose_name_was_negative_cached(
    counting: CountingRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
) -> None:
    dispatcher = make_dispatcher(negative_ttl=3600)
    assert get(dispatcher, host("late")).status_code == 404
    assert get(dispatcher, host("late")).status_code == 404
    assert dispatcher.stats().negative_entries == 1

    create(counting, "late")  # no tick: only the change notification helps

    response = get(dispatcher, host("late"))
    assert (response.status_code, response.get_json()["slug"]) == (200, "late")


def test_dispatcher_does_not_remember_an_unknown_answer_that_raced_a_creation(
    counting: CountingRegistry,
    per_lookup: int,
    make_dispatcher: Callable[..., TenantDispatcher],
) -> None:
    dispatcher = make_dispatcher(negative_ttl=3600)
    reached, resume = counting.pause(after=per_lookup)
    request = Background(lambda: get(dispatcher, host("late")))
    try:
        assert reached.wait(WAIT)  # the lookup has found nothing...
        create(counting, "late")  # ...and the tenant is created meanwhile
    finally:
        resume.set()
        request.wait()
    assert request.join().status_code == 404  # it answered with what it saw

    response = get(dispatcher, host("late"))
    assert (response.status_code, response.get_json()["slug"]) == (200, "late")
    assert dispatcher.stats().negative_entries == 0


# -- Through the dispatcher: stale entries --------------------------------------


def test_dispatcher_config_change_rebuilds_from_the_new_snapshot(
    counting: CountingRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
) -> None:
    created = create(counting, "acme", config={"color": "red"})
    dispatcher = make_dispatcher()
    assert get(dispatcher, host("acme")).get_json()["config"] == {"color": "red"}

    updated = counting.update_config("acme", {"color": "blue"})

    assert apps.torn == {1: 1}
    body = get(dispatcher, host("acme")).get_json()
    assert body["config"] == {"color": "blue"}
    assert body["version"] == updated.version > created.version
    assert body["build"] == 2


def test_dispatcher_disable_and_enable_take_effect_at_once(
    counting: CountingRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
) -> None:
    create(counting, "acme")
    dispatcher = make_dispatcher()
    assert get(dispatcher, host("acme")).status_code == 200

    counting.disable_tenant("acme", "unpaid")
    assert get(dispatcher, host("acme")).status_code == 403
    assert apps.torn == {1: 1}

    counting.enable_tenant("acme")
    response = get(dispatcher, host("acme"))
    assert (response.status_code, response.get_json()["build"]) == (200, 2)
    assert apps.count["acme"] == 2  # the disabled answer is not a tenant build


def test_dispatcher_domain_changes_take_effect_at_once(
    counting: CountingRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
) -> None:
    create(counting, "acme")
    dispatcher = make_dispatcher()
    assert get(dispatcher, host("acme")).status_code == 200
    assert get(dispatcher, "shop.acme.example").status_code == 404  # remembered

    counting.add_domain("acme", "shop.acme.example")

    assert apps.torn == {1: 1}
    by_domain = get(dispatcher, "shop.acme.example")
    assert (by_domain.status_code, by_domain.get_json()["slug"]) == (200, "acme")
    assert get(dispatcher, host("acme")).get_json()["build"] == 2  # shared entry

    counting.remove_domain("acme", "shop.acme.example")

    assert apps.torn == {1: 1, 2: 1}
    assert get(dispatcher, "shop.acme.example").status_code == 404
    assert get(dispatcher, host("acme")).get_json()["build"] == 3


def test_dispatcher_deleted_tenant_answers_404(
    counting: CountingRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
) -> None:
    create(counting, "acme")
    dispatcher = make_dispatcher()
    assert get(dispatcher, host("acme")).status_code == 200

    counting.delete_tenant("acme")

    assert apps.torn == {1: 1}
    assert get(dispatcher, host("acme")).status_code == 404
    assert dispatcher.stats().apps == 0


def test_dispatcher_does_not_keep_a_build_that_raced_a_change(
    counting: CountingRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
) -> None:
    create(counting, "acme", config={"color": "red"})
    dispatcher = make_dispatcher()
    release = threading.Event()
    apps.hooks["acme"] = Waits(release)

    racing = Background(lambda: get(dispatcher, host("acme")))
    try:
        assert apps.started("acme").wait(WAIT)  # building from the red snapshot
        updated = counting.update_config("acme", {"color": "blue"})
    finally:
        release.set()
        racing.wait()
    assert racing.join().status_code == 200

    body = get(dispatcher, host("acme")).get_json()
    assert body["config"] == {"color": "blue"}
    assert body["version"] == updated.version
    assert apps.torn[1] == 1  # the red build was dropped, and torn down
    assert dispatcher.stats().apps == 1


# -- Through the dispatcher: database outage ------------------------------------


@dataclass
class Outage:
    registry: CountingRegistry
    begin: Callable[[], None]
    end: Callable[[], None]
    #: What the registry raises meanwhile.
    error: type[Exception]


ERRORS = {"unreachable": RegistryUnavailable, "schema-missing": SchemaMissing}


def _sqlite_outage(kind: str, tmp_path: Path) -> Iterator[Outage]:
    volume = tmp_path / "volume"
    volume.mkdir()
    database = volume / "registry.sqlite3"
    away = tmp_path / "away"
    counting = CountingRegistry(f"sqlite:///{database}")
    counting.migrate()

    def begin() -> None:
        counting.engine.dispose()  # open connections would keep the old inode
        if kind == "unreachable":
            volume.rename(away)
        else:
            away.mkdir()
            database.rename(away / database.name)

    def end() -> None:
        if kind == "unreachable":
            if away.exists():
                away.rename(volume)
            return
        if not (away / database.name).exists():
            return
        # Connections to the empty database SQLite made meanwhile are closed
        # (which removes its -wal/-shm files) before the real one comes back.
        counting.engine.dispose()
        for suffix in ("-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
        (away / database.name).rename(database)

    try:
        yield Outage(counting, begin, end, ERRORS[kind])
    finally:
        end()
        counting.close()


def _postgres_outage(kind: str, database_url: str) -> Iterator[Outage]:
    name = f"outage_{uuid.uuid4().hex[:12]}"
    url = make_url(database_url)
    database = url.database
    schema = str(url.query["options"]).removeprefix("-csearch_path=")
    counting = CountingRegistry(url.update_query_dict({"application_name": name}))
    admin = create_engine(
        os.environ["DISPATCHER_TEST_DATABASE_URL"], isolation_level="AUTOCOMMIT"
    )
    owner = create_engine(url, isolation_level="AUTOCOMMIT")  # in the test database

    def allow_connections(allow: bool) -> None:
        with admin.connect() as connection:
            connection.execute(
                text(
                    f'ALTER DATABASE "{database}" '
                    f"WITH ALLOW_CONNECTIONS {'true' if allow else 'false'}"
                )
            )

    def rename_schema(old: str, new: str) -> None:
        with owner.connect() as connection:
            connection.execute(text(f'ALTER SCHEMA "{old}" RENAME TO "{new}"'))

    def begin() -> None:
        if kind == "schema-missing":
            rename_schema(schema, f"{schema}_away")
            return
        allow_connections(False)
        with admin.connect() as connection:
            # pg_terminate_backend in the select list: it runs only for the rows
            # the WHERE clause kept (in the WHERE clause it could run for all).
            killed = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                    "WHERE datname = :database AND application_name = :name"
                ),
                {"database": database, "name": name},
            ).all()
        assert killed and all(ok for (ok,) in killed), killed

    def end() -> None:
        if kind == "unreachable":
            allow_connections(True)
            return
        with owner.connect() as connection:
            away = connection.execute(
                text("SELECT 1 FROM pg_namespace WHERE nspname = :away"),
                {"away": f"{schema}_away"},
            ).first()
        if away is not None:
            rename_schema(f"{schema}_away", schema)

    try:
        yield Outage(counting, begin, end, ERRORS[kind])
    finally:
        end()
        counting.close()
        owner.dispose()
        admin.dispose()


@pytest.fixture(params=["unreachable", "schema-missing"])
def outage(
    request: pytest.FixtureRequest,
    backend: str,
    database_url: str,
    registry: TenantRegistry,
    tmp_path: Path,
) -> Iterator[Outage]:
    """A registry whose database really goes away, then comes back.

    ``unreachable``: new connections fail. SQLite: the pooled connections are
    closed and the database's directory renamed, like an unmounted volume
    ("unable to open database file"). PostgreSQL: the server refuses new
    connections to the test database (``ALLOW_CONNECTIONS false``) and this
    registry's sessions are terminated (found by ``application_name``), like a
    restart; ``pool_pre_ping`` has to notice the dead pooled connections.

    ``schema-missing``: the server answers, but the tables are gone. SQLite:
    the file is moved away, so SQLite makes an empty database in its place.
    PostgreSQL: the test's schema is renamed away from the search path.
    """
    del registry  # it migrated the database this outage works on
    if backend == "sqlite":
        yield from _sqlite_outage(request.param, tmp_path)
    else:
        yield from _postgres_outage(request.param, database_url)


def test_dispatcher_survives_a_database_outage(
    outage: Outage,
    make_dispatcher: Callable[..., TenantDispatcher],
    apps: TenantApps,
) -> None:
    registry = outage.registry
    create(registry, "alpha")
    create(registry, "bravo")
    # No follower: its poll thread could hold a connection to the database
    # file while the outage moves it, and keep writes in a WAL left behind.
    dispatcher = make_dispatcher(
        registry, retry_after=7, negative_ttl=3600, poll_interval=None
    )
    assert get(dispatcher, host("alpha")).get_json()["build"] == 1

    outage.begin()
    try:
        cached = get(dispatcher, host("alpha"))
        assert (cached.status_code, cached.get_json()["build"]) == (200, 1)
        for name in ("bravo", "bravo", "ghost"):
            asked = registry.total
            cold = get(dispatcher, host(name))
            assert cold.status_code == 503, cold.status
            assert cold.headers["Retry-After"] == "7"
            assert registry.total > asked  # asked again: no error remembered
        stats = dispatcher.stats()
        assert (stats.negative_entries, stats.build_failures) == (0, 0)
        with pytest.raises(outage.error):  # the outage is the one intended
            registry.find_by_host(host("bravo"))
    finally:
        outage.end()

    # Back without a restart, and without waiting for any TTL.
    recovered = get(dispatcher, host("bravo"))
    assert (recovered.status_code, recovered.get_json()["slug"]) == (200, "bravo")
    assert get(dispatcher, host("ghost")).status_code == 404
    assert get(dispatcher, host("alpha")).get_json()["build"] == 1
    assert apps.count == {"alpha": 1, "bravo": 1}


# -- Through the dispatcher: bugs -----------------------------------------------


def test_dispatcher_never_tears_down_the_shared_disabled_app(
    counting: CountingRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
) -> None:
    """A disabled tenant's cache entry holds ``disabled_app`` itself.

    Evicting that entry must not run the teardown on the app every disabled
    tenant shares (it did, once per eviction, until 5377fa0).
    """
    disposed: list[str] = []
    maintenance = Flask("maintenance")
    maintenance.get("/")(lambda: ("This site is paused.", 403))
    maintenance.extensions["dispatcher.teardown"] = [
        partial(disposed.append, "maintenance engine")
    ]
    create(counting, "acme")
    create(counting, "beta")
    counting.disable_tenant("acme")
    counting.disable_tenant("beta")
    dispatcher = make_dispatcher(disabled_app=maintenance)
    assert get(dispatcher, host("acme")).status_code == 403
    assert get(dispatcher, host("beta")).status_code == 403

    counting.enable_tenant("acme")

    assert get(dispatcher, host("acme")).status_code == 200
    assert get(dispatcher, host("beta")).status_code == 403
    assert disposed == []


def test_dispatcher_does_not_keep_a_host_route_that_raced_a_new_custom_domain(
    counting: CountingRegistry,
    per_lookup: int,
    make_dispatcher: Callable[..., TenantDispatcher],
) -> None:
    """A custom domain wins over a subdomain, and a new one wins at once.

    The dispatcher drops its host routes when a tenant with a custom domain is
    created, but a lookup already on its way links its host afterwards.
    """
    create(counting, "acme")
    dispatcher = make_dispatcher()
    reached, resume = counting.pause(after=per_lookup)
    request = Background(lambda: get(dispatcher, host("acme")))
    try:
        assert reached.wait(WAIT)  # found "acme" by its subdomain...
        create(counting, "rival", domains=[host("acme")])  # ...now a custom domain
    finally:
        resume.set()
        request.wait()
    assert request.join().get_json()["slug"] == "acme"  # what it saw

    assert get(dispatcher, host("acme")).get_json()["slug"] == "rival"


@pytest.mark.parametrize("evict", ["clear", "evict-without-generation"])
def test_a_build_that_raced_an_eviction_of_everything_is_not_kept(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    teardowns: Teardowns,
    evict: str,
) -> None:
    """clear() (a follower's RESYNC) and evict(slug) carry no version to
    compare a build in flight with: such a build must not be kept either."""
    tenant = create(registry, "acme")
    cache = new_cache()
    lookup = Lookup(tenant)
    release = threading.Event()
    builds.hooks["acme"] = Waits(release)

    leader = Background(lambda: fetch(cache, host("acme"), lookup))
    try:
        assert builds.started("acme").wait(WAIT)
        if evict == "clear":
            cache.clear()
        else:
            cache.invalidate("acme")
    finally:
        release.set()
        leader.wait()
    del builds.hooks["acme"]
    served = leader.join()

    assert fetch(cache, host("acme"), lookup) is served
    assert builds.count["acme"] == 2
    assert teardowns.of(builds.apps[0]) == 1


def test_cold_requests_under_several_names_build_once(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
) -> None:
    """Subdomain, custom domain and path prefix of one cold tenant: one build."""
    tenant = create(registry, "acme")
    cache = new_cache()
    release = threading.Event()
    builds.hooks["acme"] = Waits(release)
    keys = [host("acme"), "shop.acme.test", "/acme"]

    callers = [Background(partial(fetch, cache, k, Lookup(tenant))) for k in keys]
    try:
        assert builds.started("acme").wait(WAIT)
        # The other two lookups are done and waiting for that build.
        assert _wait_until(lambda: cache.stats().misses == len(keys))
    finally:
        release.set()
        for caller in callers:
            caller.wait()
    entries = {id(caller.join()) for caller in callers}

    assert builds.count["acme"] == 1
    assert len(entries) == 1
    assert all(cache.lease(key) is not None for key in keys)


def _wait_until(condition: Callable[[], bool]) -> bool:
    done = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if condition():
            return True
        done.wait(0.01)
    return False


# -- AppCache: a hung build ties up one thread, not every thread ---------------


def _hung(builds: Builds, slug: str) -> threading.Event:
    """Make ``slug``'s builds block until the returned event is set."""
    release = threading.Event()
    builds.hooks[slug] = Waits(release)
    return release


def _waiters(cache: AppCache) -> int:
    """Requests counted against max_waiters, over every build in flight."""
    flights = [*cache._lookups.values(), *cache._building.values()]
    return sum({id(flight.queue): flight.queue.waiters for flight in flights}.values())


def _turned_away(call: Callable[[], object]) -> BuildTimeout:
    """``call()`` raises BuildTimeout without waiting; returns it."""
    began = time.monotonic()
    with pytest.raises(BuildTimeout) as raised:
        call()
    assert time.monotonic() - began < WAIT / 4, "it waited instead of failing fast"
    return raised.value


def test_waiters_beyond_max_waiters_are_turned_away_at_once(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    timer: Timer,
) -> None:
    tenant = create(registry, "acme")
    cache = new_cache(max_waiters=2, build_timeout=WAIT)
    lookup = Lookup(tenant)
    release = _hung(builds, "acme")

    leader = Background(lambda: fetch(cache, host("acme"), lookup))
    waiters: list[Background] = []
    try:
        assert builds.started("acme").wait(WAIT)
        timer.tick(BURST_WAIT)  # past the first moments of the build
        waiters = [
            Background(lambda: fetch(cache, host("acme"), lookup)) for _ in range(2)
        ]
        assert _wait_until(lambda: _waiters(cache) == 2)
        error = _turned_away(lambda: cache.load(host("acme"), lookup))
        assert "2 requests already wait" in str(error)
        assert not any(waiter.done.is_set() for waiter in waiters)
    finally:
        release.set()
        leader.wait()
        for waiter in waiters:
            waiter.wait()
    # The two that waited got the app; only one build and one lookup ran.
    assert {id(w.join()) for w in waiters} == {id(leader.join())}
    assert (builds.count["acme"], lookup.calls) == (1, 1)


def test_a_cold_burst_is_served_whatever_max_waiters(
    registry: TenantRegistry, builds: Builds
) -> None:
    """Requests that arrive in a build's first moments wait for it, however many."""
    tenant = create(registry, "acme")
    cache = AppCache(builds, policy=CachePolicy(max_waiters=0))  # and the real clock
    lookup = Lookup(tenant)
    builds.hooks["acme"] = partial(time.sleep, 0.007)  # a real 7 ms build

    entries = run_threads(THREADS, lambda _: fetch(cache, host("acme"), lookup))

    assert all(isinstance(entry, Entry) for entry in entries), entries
    assert (builds.count["acme"], lookup.calls) == (1, 1)


def test_a_build_past_build_timeout_fails_new_requests_fast_and_backs_off(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    timer: Timer,
) -> None:
    """The deadline is the build's, counted from its start, not each waiter's."""
    tenant = create(registry, "acme")
    cache = new_cache(build_timeout=WAIT, failure_backoff=5)
    lookup = Lookup(tenant)
    release = _hung(builds, "acme")

    leader = Background(lambda: fetch(cache, host("acme"), lookup))
    try:
        assert builds.started("acme").wait(WAIT)
        timer.tick(WAIT)  # the build overran build_timeout
        error = _turned_away(lambda: cache.load(host("acme"), lookup))
        assert f"more than {WAIT:g} s" in str(error)
        # Another name of the same tenant: looked up, then turned away.
        other = Lookup(tenant)
        _turned_away(lambda: cache.load("/acme", other))
        assert other.calls == 1
        # Backed off: the next requests do not even look the tenant up.
        timer.tick(4)
        _turned_away(lambda: cache.load("/acme", other))
        assert other.calls == 1
        assert not leader.done.is_set()
    finally:
        release.set()
        leader.wait()
    # The late build is kept and ends the backoff of every name.
    entry = leader.join()
    assert fetch(cache, "/acme", other) is entry
    assert (builds.count["acme"], other.calls) == (1, 2)


def test_a_build_past_build_timeout_is_logged_once_per_backoff(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    timer: Timer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hammered hung tenant is one warning, not one per request."""
    tenant = create(registry, "acme")
    cache = new_cache(build_timeout=WAIT, failure_backoff=5)
    lookup = Lookup(tenant)
    release = _hung(builds, "acme")

    leader = Background(lambda: fetch(cache, host("acme"), lookup))
    try:
        assert builds.started("acme").wait(WAIT)
        timer.tick(WAIT)
        with caplog.at_level(logging.WARNING, logger="dispatcher.cache"):
            for _ in range(20):
                _turned_away(lambda: cache.load(host("acme"), lookup))
    finally:
        release.set()
        leader.wait()
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "acme" in warning.getMessage()
    assert "failure_backoff" in warning.getMessage()


def test_waiters_under_every_name_of_a_tenant_share_one_bound(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    timer: Timer,
) -> None:
    """Routing keys are single-flight each: their waiters count against the build."""
    tenant = create(registry, "acme")
    cache = new_cache(max_waiters=1, build_timeout=WAIT)
    release = _hung(builds, "acme")

    leader = Background(lambda: fetch(cache, host("acme"), Lookup(tenant)))
    joined: Background | None = None
    try:
        assert builds.started("acme").wait(WAIT)
        timer.tick(BURST_WAIT)
        # Under a second name: looked up, then waits for the same build.
        joined = Background(lambda: fetch(cache, "/acme", Lookup(tenant)))
        assert _wait_until(lambda: _waiters(cache) == 1)
        for key in (host("acme"), "/acme", "shop.acme.test"):
            _turned_away(partial(cache.load, key, Lookup(tenant)))
    finally:
        release.set()
        leader.wait()
        if joined is not None:
            joined.wait()
    assert joined is not None
    assert joined.join() is leader.join()
    assert builds.count["acme"] == 1


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param(-1, ValueError, id="negative"),
        pytest.param(1.5, TypeError, id="float"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param("2", TypeError, id="string"),
    ],
)
def test_max_waiters_is_checked(
    builds: Builds, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=f"max_waiters must be .*{value!r}"):
        AppCache(builds, policy=CachePolicy(max_waiters=value))  # type: ignore[arg-type]


# -- AppCache: a build never outlives a change that raced it -------------------


@pytest.mark.parametrize(
    "when",
    [
        pytest.param("during-build", id="change during the build"),
        pytest.param("after-lookup", id="change between the lookup and the build"),
    ],
)
def test_a_build_that_raced_a_change_is_dropped_however_many_others_change(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    builds: Builds,
    teardowns: Teardowns,
    when: str,
) -> None:
    """No bounded memory of changes may forget the one that matters.

    acme is disabled while its build from the active snapshot runs (or after
    its lookup read that snapshot, before the build began), then 1,001 other
    tenants change: the stale build must still be dropped, not served for
    app_ttl.
    """
    create(registry, "acme")
    others = [create(registry, f"other{i}") for i in range(3)]
    cache = new_cache()

    def change_acme_then_1001_others() -> None:
        disabled = registry.disable_tenant("acme")
        cache.invalidate("acme", disabled.version)
        for i in range(1001):
            cache.invalidate(f"slug{i}", disabled.version + 1 + i)

    raced: list[Tenant] = []

    def lookup() -> Tenant:
        tenant = registry.get_tenant("acme")
        if when == "after-lookup" and not raced:
            raced.append(tenant)
            change_acme_then_1001_others()
        return tenant

    release = threading.Event()
    if when == "during-build":
        builds.hooks["acme"] = Waits(release)
    leader = Background(lambda: fetch(cache, host("acme"), lookup))
    try:
        if when == "during-build":
            assert builds.started("acme").wait(WAIT)
            change_acme_then_1001_others()
            # Other tenants built meanwhile are kept.
            for other in others:
                fetch(cache, host(other.slug), Lookup(other))
    finally:
        release.set()
        leader.wait()
    served = leader.join()

    # The stale build was dropped and torn down; what is kept is the disabled one.
    stale, kept = [app for app in builds.apps if app.tenant.slug == "acme"]
    assert teardowns.of(stale) == 1
    assert stale.tenant.is_active
    assert served.app is kept
    assert not served.tenant.is_active
    assert fetch(cache, host("acme"), lookup) is served
    if when == "during-build":
        assert all(other.slug in cache for other in others)


def test_changes_seen_during_builds_are_forgotten_when_they_end(
    registry: TenantRegistry, new_cache: Callable[..., AppCache]
) -> None:
    tenant = create(registry, "acme")
    cache = new_cache()
    for i in range(100):
        cache.invalidate(f"slug{i}", i + 1)
    fetch(cache, host("acme"), Lookup(tenant))
    assert fetch(cache, host("acme"), Lookup(tenant)).tenant == tenant
    # What invalidate() records lives in the flights in progress: none now.
    assert not cache._lookups and not cache._building


# -- AppCache: create_app must return a WSGI app -------------------------------


@pytest.mark.parametrize(
    "returned",
    [
        pytest.param(None, id="None"),
        pytest.param("an app", id="string"),
    ],
)
def test_a_build_that_returns_no_wsgi_app_fails_and_backs_off(
    registry: TenantRegistry,
    teardowns: Teardowns,
    timer: Timer,
    caplog: pytest.LogCaptureFixture,
    returned: object,
) -> None:
    tenant = create(registry, "acme")
    calls: list[Tenant] = []

    def build(tenant: Tenant) -> Any:
        calls.append(tenant)
        return returned if len(calls) == 1 else TinyApp(tenant)

    cache = AppCache(
        build, teardown=teardowns, timer=timer, policy=CachePolicy(failure_backoff=5)
    )
    with caplog.at_level(logging.ERROR, logger="dispatcher.cache"):
        with pytest.raises(BuildFailed, match="'acme'"):
            fetch(cache, host("acme"), Lookup(tenant))
    assert any(
        "'acme'" in r.getMessage() and "WSGI" in str(r.exc_info) for r in caplog.records
    ), caplog.text

    timer.tick(4)
    with pytest.raises(BuildFailed):
        fetch(cache, host("acme"), Lookup(tenant))
    assert len(calls) == 1
    timer.tick(1)
    assert fetch(cache, host("acme"), Lookup(tenant)).tenant == tenant
    assert cache.stats().build_failures == 1
    assert teardowns.calls == []


def test_dispatcher_answers_500_when_create_app_returns_no_wsgi_app(
    counting: CountingRegistry,
) -> None:
    create(counting, "acme")
    dispatcher = TenantDispatcher(counting, lambda tenant: None, base_domain=BASE)  # type: ignore[arg-type,return-value]
    try:
        assert get(dispatcher, host("acme")).status_code == 500
        assert dispatcher.stats().apps == 0
    finally:
        dispatcher.close()


# -- AppCache: an outage is not logged once per tenant and backoff -------------


def test_serving_expired_apps_during_an_outage_logs_no_warnings(
    registry: TenantRegistry,
    new_cache: Callable[..., AppCache],
    timer: Timer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The dispatcher says once that the registry is down; the cache adds no noise."""
    tenants = [create(registry, slug) for slug in ("alpha", "bravo")]
    cache = new_cache(app_ttl=60, stale_if_error=600, failure_backoff=5)
    for tenant in tenants:
        fetch(cache, host(tenant.slug), Lookup(tenant))
    timer.tick(60)

    with caplog.at_level(logging.DEBUG, logger="dispatcher.cache"):
        for _ in range(10):
            for tenant in tenants:
                assert fetch(cache, host(tenant.slug), Unreachable(tenant))
            timer.tick(5)

    kept = [r for r in caplog.records if "expired app" in r.getMessage()]
    assert len(kept) == 20  # still there for whoever debugs
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- Shared apps: a second store, bounded by max_tenants ------------------------


class SharedBuilds(Builds):
    """Builds an own app for slugs starting with "own", else hands out ``shop``."""

    def __init__(self) -> None:
        super().__init__()
        self.shop = TinyApp(make_tenant("shop"))

    def __call__(self, tenant: Tenant) -> TinyApp:
        if tenant.slug.startswith("own"):
            return super().__call__(tenant)
        self._begin(tenant)
        return self.shop


@pytest.fixture
def shared_cache(
    teardowns: Teardowns, timer: Timer
) -> Callable[..., tuple[AppCache, SharedBuilds]]:
    def new(**options: Any) -> tuple[AppCache, SharedBuilds]:
        options.setdefault("stale_if_error", 0)
        builds = SharedBuilds()
        cache = AppCache(
            builds,
            teardown=teardowns,
            timer=timer,
            shared=lambda app: app is builds.shop,
            **with_policy(options),
        )
        return cache, builds

    return new


def test_shared_entries_are_bounded_apart_from_own_apps(
    shared_cache: Callable[..., tuple[AppCache, SharedBuilds]],
    teardowns: Teardowns,
) -> None:
    cache, builds = shared_cache(max_apps=2, max_tenants=100)
    owns = [make_tenant(f"own{i}") for i in range(3)]
    shared = [make_tenant(f"s{i}") for i in range(50)]
    for tenant in [owns[0], *shared[:25], owns[1], *shared[25:], owns[2]]:
        assert fetch(cache, host(tenant.slug), Lookup(tenant)) is not None

    stats = cache.stats()
    assert (stats.apps, stats.shared_tenants, len(cache)) == (2, 50, 2)
    assert (stats.builds, stats.evictions["capacity"]) == (3, 1)
    assert [tenant.slug for _, tenant in teardowns.calls] == ["own0"]
    assert all(tenant.slug in cache for tenant in shared)
    assert len(cache.entries()) == 52


def test_shared_entries_evict_each_other_at_max_tenants_only(
    shared_cache: Callable[..., tuple[AppCache, SharedBuilds]],
) -> None:
    cache, builds = shared_cache(max_apps=1, max_tenants=3)
    own = make_tenant("own")
    assert fetch(cache, host("own"), Lookup(own)) is not None
    for i in range(5):
        tenant = make_tenant(f"s{i}")
        assert fetch(cache, host(tenant.slug), Lookup(tenant)).app is builds.shop

    stats = cache.stats()
    assert (stats.apps, stats.shared_tenants) == (1, 3)
    assert stats.evictions["capacity"] == 2
    assert "own" in cache and "s4" in cache and "s0" not in cache


def test_shared_records_are_evicted_least_recently_used_without_a_sketch(
    shared_cache: Callable[..., tuple[AppCache, SharedBuilds]],
) -> None:
    """A record's miss costs one query, not a build: frequency admission is
    not worth its sketch there (2 MiB at max_tenants=100,000)."""
    cache, builds = shared_cache(max_apps=1, max_tenants=100_000)
    fetch(cache, host("s0"), Lookup(make_tenant("s0")))
    policy = cache._shared_apps._policy  # type: ignore[attr-defined]
    assert type(policy).__name__ == "SecondChance"


def test_a_shared_entry_is_invalidated_and_served_stale_like_an_own_one(
    shared_cache: Callable[..., tuple[AppCache, SharedBuilds]],
    timer: Timer,
) -> None:
    cache, builds = shared_cache(app_ttl=60, stale_if_error=120, failure_backoff=5)
    tenant = make_tenant("s0")
    entry = fetch(cache, host("s0"), Lookup(tenant))
    assert entry.app is builds.shop

    # Newer generation: evicted; older: kept.
    assert not cache.invalidate("s0", tenant.version)
    assert cache.invalidate("s0", tenant.version + 1)
    assert "s0" not in cache

    entry = fetch(cache, host("s0"), Lookup(tenant))
    timer.tick(60)
    lookup = Unreachable(tenant)
    assert fetch(cache, host("s0"), lookup) is entry  # the database is down
    assert lookup.calls == 1
    assert cache.stats().shared_tenants == 1


def test_without_shared_every_app_is_an_own_app(
    new_cache: Callable[..., AppCache],
) -> None:
    cache = new_cache(max_apps=1, max_tenants=5)
    for slug in ("a", "b"):
        fetch(cache, host(slug), Lookup(make_tenant(slug)))
    stats = cache.stats()
    assert (stats.apps, stats.shared_tenants, stats.evictions["capacity"]) == (1, 0, 1)


# -- AppCache: records of tenants whose app was dropped for capacity -------------
#
# An own app dropped for room leaves its tenant's snapshot behind, one record per
# routing key: the key's next miss builds from it without a lookup. Every change
# that would drop the key's route or its tenant's app drops the record too.


def _evicted_for_room(cache: AppCache, tenant: Tenant, *keys: str) -> None:
    """Build ``tenant``'s app under ``keys``, then have it dropped for capacity."""
    for key in keys:
        assert fetch(cache, key, Lookup(tenant)) is not None
    filler = make_tenant(f"filler{cache.stats().builds}")
    fetch(cache, host(filler.slug), Lookup(filler))
    assert tenant.slug not in cache


def test_a_tenant_dropped_for_capacity_is_rebuilt_without_a_lookup(
    new_cache: Callable[..., AppCache], builds: Builds
) -> None:
    cache = new_cache(max_apps=1)
    acme = make_tenant("acme")
    _evicted_for_room(cache, acme, host("acme"), "/acme")

    lookup = Lookup(acme)
    entry = fetch(cache, host("acme"), lookup)
    assert lookup.calls == 0
    assert entry.tenant is acme and builds.count["acme"] == 2
    # Its other name's record finds the app built meanwhile: no build either.
    assert fetch(cache, "/acme", lookup) is entry
    assert lookup.calls == 0 and builds.count["acme"] == 2
    # Used, the record is gone: the route carries the tenant from now on.
    assert len(cache._records) == 1  # the filler's, dropped for acme
    stats = cache.stats()
    assert (stats.record_hits, stats.misses) == (2, 5)


def test_a_record_lives_no_longer_than_the_app_it_outlived(
    new_cache: Callable[..., AppCache], timer: Timer
) -> None:
    cache = new_cache(max_apps=1, app_ttl=60)
    acme = make_tenant("acme")
    _evicted_for_room(cache, acme, host("acme"))
    timer.tick(60)

    lookup = Lookup(acme)
    assert fetch(cache, host("acme"), lookup).tenant is acme
    assert lookup.calls == 1
    assert cache.stats().record_hits == 0


def test_an_app_served_stale_during_an_outage_leaves_no_record(
    new_cache: Callable[..., AppCache], timer: Timer
) -> None:
    cache = new_cache(max_apps=1, app_ttl=60, stale_if_error=120, failure_backoff=5)
    acme = make_tenant("acme")
    entry = fetch(cache, host("acme"), Lookup(acme))
    timer.tick(60)
    assert fetch(cache, host("acme"), Unreachable(acme)) is entry  # served stale
    _evicted_for_room(cache, acme)

    lookup = Lookup(acme)
    fetch(cache, host("acme"), lookup)
    assert lookup.calls == 1


def test_expired_and_invalidated_apps_leave_no_record(
    new_cache: Callable[..., AppCache], timer: Timer
) -> None:
    cache = new_cache(app_ttl=60)
    acme, bravo = make_tenant("acme"), make_tenant("bravo")
    fetch(cache, host("acme"), Lookup(acme))
    fetch(cache, host("bravo"), Lookup(bravo))
    cache.invalidate("acme")
    timer.tick(60)
    cache.stats()  # drops bravo's expired app

    assert len(cache._records) == 0


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda c: c.invalidate("acme", 2, names_changed=False),
            id="newer-generation",
        ),
        pytest.param(lambda c: c.invalidate("acme", names_changed=False), id="evict"),
        pytest.param(lambda c: c.invalidate("other", 9), id="names-changed"),
        pytest.param(lambda c: c.forget_unknown([host("acme")]), id="forget-unknown"),
        pytest.param(lambda c: c.forget_routes(lambda key: True), id="forget-routes"),
        pytest.param(lambda c: c.clear(), id="clear"),
        pytest.param(lambda c: c.forget_everything(), id="forget-everything"),
    ],
)
def test_every_change_to_a_route_or_tenant_drops_its_record(
    new_cache: Callable[..., AppCache], change: Callable[[AppCache], object]
) -> None:
    cache = new_cache(max_apps=1)
    acme = make_tenant("acme")
    _evicted_for_room(cache, acme, host("acme"))

    change(cache)

    assert host("acme") not in cache._records._records
    newer = replace(acme, version=2)
    lookup = Lookup(newer)
    assert fetch(cache, host("acme"), lookup).tenant is newer
    assert lookup.calls == 1


def test_changes_to_other_tenants_and_names_keep_a_record(
    new_cache: Callable[..., AppCache],
) -> None:
    cache = new_cache(max_apps=1)
    acme = make_tenant("acme")
    _evicted_for_room(cache, acme, host("acme"))

    cache.invalidate("acme", acme.version, names_changed=False)  # not newer
    cache.invalidate("other", 9, names_changed=False)
    cache.forget_unknown([host("other")])
    cache.forget_routes(lambda key: key != host("acme"))

    lookup = Lookup(acme)
    fetch(cache, host("acme"), lookup)
    assert lookup.calls == 0


def test_no_record_survives_a_fork(new_cache: Callable[..., AppCache]) -> None:
    """A record hit starts no change follower: records exist only after a
    lookup in this process, so none may outlive forget_everything()."""
    cache = new_cache(max_apps=1)
    for slug in ("acme", "bravo", "charlie"):
        _evicted_for_room(cache, make_tenant(slug), host(slug))
    assert len(cache._records) > 0

    cache.forget_everything()

    assert len(cache._records) == 0 and not cache._records._keys


@pytest.mark.parametrize("change", ["newer-generation", "clear"])
def test_a_change_during_a_build_from_a_record_discards_it(
    new_cache: Callable[..., AppCache],
    builds: Builds,
    teardowns: Teardowns,
    change: str,
) -> None:
    cache = new_cache(max_apps=1)
    acme = make_tenant("acme")
    _evicted_for_room(cache, acme, host("acme"))
    newer = replace(acme, version=2)
    lookup = Lookup(newer)
    release = threading.Event()
    builds.hooks["acme"] = Waits(release)
    builds.started("acme").clear()

    leader = Background(lambda: fetch(cache, host("acme"), lookup))
    try:
        assert builds.started("acme").wait(WAIT)  # from the record, version 1
        assert lookup.calls == 0
        if change == "clear":
            cache.clear()
        else:
            cache.invalidate("acme", newer.version, names_changed=False)
    finally:
        release.set()
        leader.wait()
    served = leader.join()

    assert served.tenant is newer and lookup.calls == 1
    from_record = builds.apps[-2]
    assert from_record.tenant is acme and teardowns.of(from_record) == 1
    assert fetch(cache, host("acme"), lookup) is served


def test_records_are_bounded_by_max_tenants(
    new_cache: Callable[..., AppCache],
) -> None:
    cache = new_cache(max_apps=2, max_tenants=3)
    tenants = [make_tenant(f"t{i}") for i in range(10)]
    for tenant in tenants:
        fetch(cache, host(tenant.slug), Lookup(tenant))
        fetch(cache, f"/{tenant.slug}", Lookup(tenant))
        assert len(cache._records) <= 3
        assert sum(map(len, cache._records._keys.values())) == len(cache._records)

    # The newest records are kept, the oldest dropped.
    lookups = {tenant.slug: Lookup(tenant) for tenant in tenants[:8]}
    for slug in ("t7", "t0"):
        fetch(cache, host(slug), lookups[slug])
    assert (lookups["t7"].calls, lookups["t0"].calls) == (0, 1)


def test_shared_entries_dropped_for_capacity_leave_no_record(
    shared_cache: Callable[..., tuple[AppCache, SharedBuilds]],
) -> None:
    cache, builds = shared_cache(max_apps=1, max_tenants=1)
    s0, s1 = make_tenant("s0"), make_tenant("s1")
    fetch(cache, host("s0"), Lookup(s0))
    fetch(cache, host("s1"), Lookup(s1))  # drops s0's shared entry for room
    assert "s0" not in cache

    lookup = Lookup(s0)
    fetch(cache, host("s0"), lookup)
    assert lookup.calls == 1
