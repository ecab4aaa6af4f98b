"""The collector module through a real dispatcher: evicted apps freed by
reference counting, builds frozen, what survives counted, and off means off.

The collector is disabled during each test (no test calls ``gc.collect()``
unless it says so): an app still alive is one only the collector would free.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import Client

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry, collector
from dispatcher.reclaim import break_cycles

BASE = "example.com"


@pytest.fixture(autouse=True)
def _fresh_collector() -> Iterator[None]:
    managed = collector.managed()
    collector._collector.reset()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()
        collector._collector.reset()
        collector.set_managed(managed)


class Built:
    """A create_app that keeps a weak reference to every app it builds."""

    def __init__(self, keep: bool = False) -> None:
        self.apps: list[weakref.ref[Flask]] = []
        self.kept: list[Flask] = []
        self.keep = keep

    def __call__(self, tenant: Tenant) -> Flask:
        app = Flask(f"app_of_{tenant.slug}")

        @app.route("/")
        def index() -> str:
            return app.name  # a view closing over its app: a cycle

        self.apps.append(weakref.ref(app))
        if self.keep:
            self.kept.append(app)
        return app


class Memoized:
    """A create_app handing out one app per tenant, kept in ``apps``."""

    def __init__(self, apps: dict[str, Flask]) -> None:
        self.apps = apps

    def __call__(self, tenant: Tenant) -> Flask:
        if tenant.slug not in self.apps:
            self.apps[tenant.slug] = Built()(tenant)
        return self.apps[tenant.slug]


@pytest.fixture
def two_tenants(registry: TenantRegistry) -> TenantRegistry:
    for slug in ("acme", "beta"):
        registry.create_tenant(slug, owner_email=f"o@{slug}.test", subdomain=slug)
    return registry


def _dispatcher(registry: TenantRegistry, create_app: Callable[[Tenant], Any]) -> Any:
    return TenantDispatcher(
        registry, create_app, base_domain=BASE, policy=CachePolicy(max_apps=1)
    )


def _get(dispatcher: Any, slug: str) -> int:
    response = Client(dispatcher).get("/", headers={"Host": f"{slug}.{BASE}"})
    response.close()
    return response.status_code


def test_an_evicted_app_is_freed_without_the_collector(
    two_tenants: TenantRegistry,
) -> None:
    built = Built()
    dispatcher = _dispatcher(two_tenants, built)
    assert _get(dispatcher, "acme") == 200
    assert _get(dispatcher, "beta") == 200  # evicts acme's app
    # Held whole while create_app may still hand it out again...
    assert built.apps[0]() is not None
    for _ in range(collector.QUARANTINE // 2 + 1):
        assert _get(dispatcher, "acme") == 200  # each evicts the other's
        assert _get(dispatcher, "beta") == 200
    # ...then cut, and freed by reference counting alone.
    assert built.apps[0]() is None
    assert built.apps[-1]() is not None
    stats = collector.stats()
    assert stats.apps_frozen == len(built.apps)
    assert stats.apps_freed >= 1
    assert stats.apps_survived == 0


def test_each_build_freezes_the_heap(two_tenants: TenantRegistry) -> None:
    dispatcher = _dispatcher(two_tenants, Built())
    gc.unfreeze()
    assert _get(dispatcher, "acme") == 200
    assert gc.get_freeze_count() > 0


def test_off_leaves_evicted_apps_to_the_collector(
    two_tenants: TenantRegistry,
) -> None:
    collector.set_managed(False)
    built = Built()
    dispatcher = _dispatcher(two_tenants, built)
    assert _get(dispatcher, "acme") == 200
    assert _get(dispatcher, "beta") == 200
    assert gc.get_freeze_count() == 0
    assert built.apps[0]() is not None  # garbage, in a cycle
    gc.collect()
    assert built.apps[0]() is None
    assert collector.stats().apps_frozen == 0


def test_an_app_held_elsewhere_is_counted_and_named_once(
    two_tenants: TenantRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    built = Built(keep=True)
    dispatcher = _dispatcher(two_tenants, built)
    caplog.set_level(logging.WARNING, logger="dispatcher.collector")
    for _ in range(collector.SURVIVOR_AGE + 2):
        assert _get(dispatcher, "acme") == 200
        assert _get(dispatcher, "beta") == 200
    stats = collector.stats()
    assert stats.apps_survived >= 2
    assert stats.apps_freed == 0
    named = [r.getMessage() for r in caplog.records if "app_of_acme" in r.getMessage()]
    assert len(named) == 1
    assert "something outside the dispatcher holds it" in named[0]


def test_survivors_of_many_names_are_named_a_few_times_then_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Apps are often named after their tenant: one line per app would flood
    # the log of a deployment whose apps all survive.
    caplog.set_level(logging.WARNING, logger="dispatcher.collector")
    kept = [Flask(f"app_of_t{i}") for i in range(40)]
    for app in kept:
        collector.released(app)
    for _ in range(collector.QUARANTINE + collector.SURVIVOR_AGE + 1):
        collector.released(Flask("filler"))
    assert collector.stats().apps_survived >= 40
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == collector.NAMED_SURVIVORS + 1
    assert "further survivors are only counted" in lines[-1]


def test_releases_and_builds_on_many_threads_never_trip_over_the_quarantine() -> None:
    # gthread workers build and release on several threads at once: looking
    # for a handed-out app in the quarantine while another thread releases
    # into it raised "deque mutated during iteration" (a 500 for the build).
    apps = [Flask(f"app_{i}") for i in range(1500)]
    errors: list[BaseException] = []

    def release() -> None:
        for app in apps:
            collector.released(app)

    def look() -> None:
        try:
            for _ in range(20_000):
                collector._collector._rescue(apps[0])
        except BaseException as e:  # noqa: BLE001 - what the thread met
            errors.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=release), threading.Thread(target=look)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def test_an_app_returned_again_after_its_teardown_is_refused(
    two_tenants: TenantRegistry,
) -> None:
    apps: dict[str, Flask] = {}
    dispatcher = _dispatcher(two_tenants, Memoized(apps))
    assert _get(dispatcher, "acme") == 200
    break_cycles(apps["acme"])  # as if cut once out of quarantine
    # acme's app was torn down and its cycles cut: a clear failure, not a
    # half-working app.
    assert _get(dispatcher, "beta") == 200
    assert _get(dispatcher, "acme") == 500


def test_an_app_handed_out_again_while_released_is_never_cut(
    two_tenants: TenantRegistry,
) -> None:
    apps: dict[str, Flask] = {}
    dispatcher = _dispatcher(two_tenants, Memoized(apps))
    for _ in range(collector.QUARANTINE + 2):
        assert _get(dispatcher, "acme") == 200
        assert _get(dispatcher, "beta") == 200
    assert len(apps) == 2
    assert all("url_map" in vars(app) for app in apps.values())


def test_full_collections_are_counted_with_their_pause() -> None:
    before = collector.stats().collections
    gc.collect()
    after = collector.stats()
    assert after.collections[2] == before[2] + 1
    assert after.longest_full_pause > 0


def test_frozen_garbage_is_reclaimed_once_the_heap_has_grown(
    two_tenants: TenantRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    dispatcher = _dispatcher(two_tenants, Built())
    assert _get(dispatcher, "acme") == 200
    assert _get(dispatcher, "beta") == 200  # the first eviction: the baseline
    node = _Node()
    node.me = node
    freed = weakref.ref(node)
    gc.freeze()
    del node  # garbage in a cycle, frozen: no collection would see it
    monkeypatch.setattr(collector, "RECLAIM_GROWTH", 0.0)
    assert _get(dispatcher, "acme") == 200  # the next build reclaims
    assert collector.stats().reclaims == 1
    assert freed() is None


class _Node:
    me: Any = None


def test_gunicorns_master_freezes_what_it_imported_before_forking() -> None:
    from dispatcher.gunicorn_conf import pre_fork

    gc.unfreeze()
    pre_fork(None, None)
    assert gc.get_freeze_count() > 0


def test_gunicorns_master_freezes_nothing_when_off() -> None:
    from dispatcher.gunicorn_conf import pre_fork

    collector.set_managed(False)
    pre_fork(None, None)
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(
    ("value", "managed"),
    [
        pytest.param(None, True, id="unset: managed"),
        pytest.param("managed", True, id="managed"),
        pytest.param(" OFF ", False, id="off, any case"),
    ],
)
def test_the_setting(value: str | None, managed: bool) -> None:
    environ = {} if value is None else {collector.SETTING: value}
    assert collector.managed_from(environ) is managed


def test_a_wrong_setting_is_named() -> None:
    with pytest.raises(ValueError, match=r"DISPATCHER_GC='of': must be 'managed'"):
        collector.managed_from({"DISPATCHER_GC": "of"})


def test_one_app_returned_for_several_tenants_is_never_cut(
    two_tenants: TenantRegistry,
) -> None:
    app = Flask("everyone")

    @app.route("/")
    def index() -> str:
        return "one app"

    dispatcher = _dispatcher(two_tenants, lambda tenant: app)
    for _ in range(3):
        assert _get(dispatcher, "acme") == 200
        assert _get(dispatcher, "beta") == 200
    assert "url_map" in vars(app)
