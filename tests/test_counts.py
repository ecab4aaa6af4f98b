"""Requests counted by outcome, and what the dispatcher tells its observer.

A real registry and real Flask apps behind :class:`TenantDispatcher`; each
request goes through werkzeug's test client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import Client

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry
from dispatcher.changes import TenantChange
from dispatcher.counts import OUTCOMES, Observer

BASE = "example.com"


def create_app(tenant: Tenant) -> Flask:
    if tenant.config.get("broken"):
        raise RuntimeError("this tenant's app does not build")
    app = Flask(tenant.slug)
    app.add_url_rule("/", "index", lambda: tenant.slug)
    return app


class Recorder(Observer):
    def __init__(self) -> None:
        self.lookups: list[str] = []
        self.builds: list[float] = []
        self.applied_changes: list[tuple[TenantChange, float | None]] = []

    def looked_up(self, seconds: float, result: str) -> None:
        assert seconds >= 0
        self.lookups.append(result)

    def built(self, seconds: float) -> None:
        self.builds.append(seconds)

    def applied(self, change: TenantChange, lag: float | None) -> None:
        self.applied_changes.append((change, lag))


def get(dispatcher: TenantDispatcher, host: str, path: str = "/") -> int:
    response = Client(dispatcher).get(path, headers={"Host": host})
    response.close()  # the app's lease goes back now, not when collected
    return response.status_code


def outcomes(**counted: int) -> dict[str, int]:
    return {name: counted.get(name, 0) for name in OUTCOMES}


@pytest.fixture
def dispatcher(registry: TenantRegistry) -> Any:
    registry.create_tenant("acme", owner_email="o@acme.test", subdomain="acme")
    registry.create_tenant("initech", owner_email="o@initech.test", subdomain="initech")
    registry.create_tenant(
        "broken",
        owner_email="o@broken.test",
        subdomain="broken",
        config={"broken": True},
    )
    dispatcher = TenantDispatcher(registry, create_app, base_domain=BASE)
    yield dispatcher
    dispatcher.close()


def test_each_request_counts_once_under_its_outcome(
    dispatcher: TenantDispatcher, registry: TenantRegistry
) -> None:
    assert get(dispatcher, f"acme.{BASE}") == 200  # miss
    assert get(dispatcher, f"acme.{BASE}") == 200  # hit (the hot path)
    assert get(dispatcher, f"acme.{BASE}") == 200
    assert get(dispatcher, f"nobody.{BASE}") == 404  # unknown
    assert get(dispatcher, f"nobody.{BASE}") == 404  # unknown, remembered
    assert get(dispatcher, BASE) == 404  # names no tenant
    assert get(dispatcher, "bad host!") == 400
    assert get(dispatcher, f"broken.{BASE}") == 500
    registry.disable_tenant("initech", reason="unpaid")
    assert get(dispatcher, f"initech.{BASE}") == 403  # disabled, a miss
    assert get(dispatcher, f"initech.{BASE}") == 403  # disabled, a hit
    registry.start_maintenance("acme", retry_after=30, message="Upgrading")
    assert get(dispatcher, f"acme.{BASE}") == 503
    assert get(dispatcher, f"acme.{BASE}") == 503

    assert dispatcher.outcomes() == outcomes(
        miss=1,
        hit=2,
        unknown=2,
        no_tenant=1,
        bad_host=1,
        failed=1,
        disabled=2,
        maintenance=2,
    )


def test_a_path_routed_hit_counts_as_a_hit(registry: TenantRegistry) -> None:
    registry.create_tenant("acme", owner_email="o@acme.test", path_prefix="acme")
    dispatcher = TenantDispatcher(
        registry, create_app, base_domain=BASE, path_routing=True
    )
    assert get(dispatcher, BASE, "/acme/") == 200
    assert get(dispatcher, BASE, "/acme/") == 200  # a lease, not the hot path
    assert dispatcher.outcomes() == outcomes(miss=1, hit=1)
    assert dispatcher.stats().hits == 1


def test_an_unreachable_registry_counts_as_unavailable(tmp_path: Path) -> None:
    # A database without the schema: every lookup fails, as in an outage.
    registry = TenantRegistry(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
    dispatcher = TenantDispatcher(registry, create_app, base_domain=BASE)
    recorder = Recorder()
    dispatcher.observer = recorder
    assert get(dispatcher, f"acme.{BASE}") == 503
    assert dispatcher.outcomes() == outcomes(unavailable=1)
    assert recorder.lookups == ["error"]
    registry.close()


def test_the_observer_hears_lookups_builds_and_changes(
    dispatcher: TenantDispatcher, registry: TenantRegistry
) -> None:
    recorder = Recorder()
    dispatcher.observer = recorder
    get(dispatcher, f"acme.{BASE}")
    get(dispatcher, f"acme.{BASE}")
    get(dispatcher, f"nobody.{BASE}")
    get(dispatcher, f"broken.{BASE}")
    assert recorder.lookups == ["found", "unknown", "found"]
    assert len(recorder.builds) == 1  # a failed build is no build
    registry.update_config("acme", {"greeting": "hi"})
    [(change, lag)] = recorder.applied_changes
    assert change.slug == "acme" and change.changed_at is not None
    assert lag is not None and 0 <= lag < 5


def test_follow_starts_the_follower_before_any_request(
    registry: TenantRegistry,
) -> None:
    dispatcher = TenantDispatcher(registry, create_app, base_domain=BASE)
    follower = dispatcher.follow()
    assert follower is not None and follower.running
    assert follower.read_at is not None
    unfollowed = TenantDispatcher(
        registry,
        create_app,
        base_domain=BASE,
        policy=CachePolicy(poll_interval=None),
    )
    assert unfollowed.follow() is None
    registry.close()


class Raising(Observer):
    def looked_up(self, seconds: float, result: str) -> None:
        raise OSError("no space left on device")

    def built(self, seconds: float) -> None:
        raise OSError("no space left on device")

    def applied(self, change: TenantChange, lag: float | None) -> None:
        raise OSError("no space left on device")


def test_an_observer_that_raises_never_fails_a_request(
    dispatcher: TenantDispatcher,
    registry: TenantRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    torn_down: list[str] = []
    dispatcher.teardown = lambda app, tenant: torn_down.append(tenant.slug)
    dispatcher.observer = Raising()
    assert get(dispatcher, f"acme.{BASE}") == 200
    assert get(dispatcher, f"nobody.{BASE}") == 404
    registry.update_config("acme", {"greeting": "hi"})  # evicts acme's app
    assert get(dispatcher, f"acme.{BASE}") == 200
    assert dispatcher.outcomes() == outcomes(miss=2, unknown=1)
    assert torn_down == ["acme"]  # the app built once is torn down, not leaked
    assert "observer" in caplog.text
