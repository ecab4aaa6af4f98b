"""Review of issue 12 with an attacker's eye: where cutting evicted apps, the
shared apps and the new settings can hurt.

Tests marked ``xfail(strict=True)`` reproduce defects reported but not fixed
here: each turns into a failure (an unexpected pass) once it is fixed.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, url_for
from werkzeug.test import Client

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry, collector
from dispatcher.wsgi import make_application

BASE = "example.com"


@pytest.fixture(autouse=True)
def _fresh_collector() -> Iterator[None]:
    """Managed, as by default; whatever a test does, the next starts clean."""
    managed = collector.managed()
    collector._collector.reset()
    collector.set_managed(True)
    try:
        yield
    finally:
        gc.unfreeze()
        collector._collector.reset()
        collector.set_managed(managed)


@pytest.fixture
def two_tenants(registry: TenantRegistry) -> TenantRegistry:
    for slug in ("acme", "beta"):
        registry.create_tenant(slug, owner_email=f"o@{slug}.test", subdomain=slug)
    return registry


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _get(dispatcher: Any, host: str) -> int:
    response = Client(dispatcher).get("/", headers={"Host": host})
    response.close()
    return response.status_code


def _own_app(name: str) -> Flask:
    app = Flask(name)

    @app.route("/")
    def index() -> str:
        return url_for("index")

    return app


def _dispatcher(
    registry: TenantRegistry,
    create_app: Callable[[Tenant], Any],
    **options: Any,
) -> TenantDispatcher:
    return TenantDispatcher(registry, create_app, base_domain=BASE, **options)


# -- 5. settings ----------------------------------------------------------------


def test_a_wrong_dispatcher_gc_stops_the_boot_naming_it(
    cwd_tmp: None,
) -> None:
    # Read lazily at the first build, a typo made every tenant's request a
    # 500 ("building the app of tenant ... failed") instead of one error.
    with pytest.raises(ValueError, match=r"DISPATCHER_GC='of': must be 'managed'"):
        make_application({"DISPATCHER_GC": "of"})


@pytest.fixture
def cwd_tmp(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


# -- 2. cutting an app that still serves ----------------------------------------


def test_default_app_returned_by_create_app_is_never_cut(
    two_tenants: TenantRegistry,
) -> None:
    # A tenant not set up yet gets the landing page, which is also the
    # answer to requests that name no tenant.
    landing = _own_app("landing")
    dispatcher = _dispatcher(two_tenants, lambda tenant: landing, default_app=landing)
    assert _get(dispatcher, f"acme.{BASE}") == 200
    dispatcher.evict("acme")
    assert "url_map" in vars(landing)
    assert _get(dispatcher, BASE) == 200  # the landing page itself
    assert _get(dispatcher, f"acme.{BASE}") == 200


def test_one_module_level_app_served_one_tenant_at_a_time_keeps_serving(
    two_tenants: TenantRegistry,
) -> None:
    everyone = _own_app("everyone")  # the pre-shared_app= way to share an app
    clock = Clock()
    dispatcher = _dispatcher(
        two_tenants,
        lambda tenant: everyone,
        policy=CachePolicy(app_ttl=60, stale_if_error=0),
        timer=clock,
    )
    assert _get(dispatcher, f"acme.{BASE}") == 200
    clock.now += 61  # acme's entry expires while nobody else is cached
    assert _get(dispatcher, f"beta.{BASE}") == 200
    assert _get(dispatcher, f"acme.{BASE}") == 200


def test_a_thread_a_view_started_can_still_use_its_app_after_eviction(
    two_tenants: TenantRegistry,
) -> None:
    go = threading.Event()
    outcome: list[object] = []
    built: list[Flask] = []

    def create_app(tenant: Tenant) -> Flask:
        app = Flask(f"app_of_{tenant.slug}")

        def send_mail_later(app: Flask) -> None:
            go.wait(timeout=10)
            try:
                with app.app_context():
                    outcome.append(app.config["DEBUG"])
            except BaseException as e:  # noqa: BLE001 - what the thread met
                outcome.append(e)

        @app.route("/")
        def index() -> str:
            threading.Thread(target=send_mail_later, args=(app,)).start()
            return "queued"

        built.append(app)
        return app

    dispatcher = _dispatcher(two_tenants, create_app)
    assert _get(dispatcher, f"acme.{BASE}") == 200
    dispatcher.evict("acme")  # a config change, a disable, app_ttl...
    # Released apps past the quarantine: acme's is next to be cut, while its
    # thread still waits with it.
    for _ in range(collector.QUARANTINE):
        collector.released(_own_app("filler"))
    assert "config" in vars(built[0])  # put off, not cut
    go.set()
    for thread in threading.enumerate():
        if thread.name != threading.current_thread().name and not thread.daemon:
            thread.join(timeout=10)
    assert outcome == [False]


def test_a_leaked_body_collected_while_the_collector_is_busy_never_deadlocks(
    two_tenants: TenantRegistry,
) -> None:
    # A server that drops a body without close() (the Leases safety net): if
    # the body sits in a reference cycle, its lease is released from inside a
    # collection, which can start at any allocation, also one the collector
    # makes while it holds its own lock (counting, noting a build). The
    # release tears the app down and tells the collector: the same thread
    # takes the same lock again.
    dispatcher = _dispatcher(two_tenants, lambda tenant: _own_app(tenant.slug))
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "SERVER_NAME": "x",
        "SERVER_PORT": "80",
        "HTTP_HOST": f"acme.{BASE}",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": None,
    }
    gc.disable()
    try:
        body = dispatcher(environ, lambda status, headers, exc_info=None: None)
        cycle: list[Any] = [body]
        cycle.append(cycle)  # dropped without close(), in a cycle
        del body, cycle
        dispatcher.evict("acme")  # retired; torn down at the last lease

        done = threading.Event()

        def collect_while_counting() -> None:
            with collector._collector._lock:
                gc.collect()  # as any allocation under the lock may trigger
            done.set()

        worker = threading.Thread(target=collect_while_counting, daemon=True)
        worker.start()
        finished = done.wait(timeout=10)
    finally:
        gc.enable()
    if not finished:
        collector._collector.reset()  # a fresh lock for the tests after this
    assert finished, "the collector's lock was taken again by its own thread"
