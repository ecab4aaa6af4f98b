"""Cache entries on their own: leases, one teardown, one expiry clock.

The entries' tenants are real snapshots from a real registry; the apps are
plain WSGI callables and the clock a fake one.
"""

from __future__ import annotations

import logging
import random
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
from flask import Flask
from helpers import Timer, make_tenant
from sqlalchemy import QueuePool, create_engine, text

from dispatcher import Tenant, TenantRegistry
from dispatcher.entries import Apps, Entry, default_teardown


class Teardowns:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, app: Any, tenant: Tenant) -> None:
        self.calls.append(tenant.slug)


def app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b""]


@pytest.fixture
def acme(registry: TenantRegistry) -> Tenant:
    return registry.create_tenant("acme", owner_email="owner@acme.test")


# -- default_teardown ------------------------------------------------------------


def test_default_teardown_runs_each_registered_callable_once(
    acme: Tenant, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'tenant.sqlite3'}")
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    pool = cast(QueuePool, engine.pool)
    assert pool.checkedin() == 1
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("cannot dispose")

    flask_app = Flask("tenant_acme")
    flask_app.extensions["dispatcher.teardown"] = [
        engine.dispose,
        broken,
        partial(calls.append, "counter"),
    ]
    with caplog.at_level(logging.ERROR, logger="dispatcher.entries"):
        default_teardown(flask_app, acme)

    assert pool.checkedin() == 0  # the engine's connections were closed
    assert engine.pool is not pool
    assert calls == ["broken", "counter"]  # one failure does not stop the rest
    assert "teardown" in caplog.text and "acme" in caplog.text
    # Apps without extensions, or without the key, are left alone.
    default_teardown(app, acme)
    default_teardown(Flask("tenant_plain"), acme)
    engine.dispose()


# -- Entry: leases and teardown --------------------------------------------------


def test_a_retired_entry_is_torn_down_once_after_its_last_lease(acme: Tenant) -> None:
    torn = Teardowns()
    entry = Entry(app, acme, 60, torn)
    assert entry.acquire() and entry.acquire()

    entry.retire()
    assert torn.calls == []
    assert entry.acquire() is False  # no new responses
    entry.release()
    assert (entry.inflight, torn.calls) == (1, [])
    entry.release()

    assert torn.calls == ["acme"]
    entry.retire()
    assert entry.acquire() is False
    assert torn.calls == ["acme"]


def test_a_failing_teardown_is_logged_not_raised(
    acme: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(app: Any, tenant: Tenant) -> None:
        raise RuntimeError("cannot dispose")

    entry = Entry(app, acme, 60, broken)
    with caplog.at_level(logging.ERROR, logger="dispatcher.entries"):
        entry.retire()
    assert "teardown of tenant 'acme' failed" in caplog.text


# -- Entry and Apps: one expiry clock --------------------------------------------


def test_an_entry_is_served_no_longer_than_it_is_kept(acme: Tenant) -> None:
    entry = Entry(app, acme, 60, Teardowns(), kept_until=70)
    entry.serve_until(65)
    assert entry.expires_at == 65
    entry.serve_until(75)
    assert (entry.expires_at, entry.kept_until) == (70, 70)
    # Without a stale window it is kept as long as it is served.
    assert Entry(app, acme, 60, Teardowns()).kept_until == 60


def test_an_entry_cannot_be_kept_shorter_than_it_is_served(acme: Tenant) -> None:
    with pytest.raises(ValueError, match=r"kept_until must be at least .*60.*59"):
        Entry(app, acme, 60, Teardowns(), kept_until=59)


def test_apps_drop_an_entry_at_its_kept_until_whatever_happened_since(
    registry: TenantRegistry, acme: Tenant
) -> None:
    timer = Timer()
    dropped: list[tuple[str, str]] = []
    apps = Apps(
        2, timer, lambda entry, cause: dropped.append((entry.tenant.slug, cause))
    )
    other = registry.create_tenant("other", owner_email="owner@other.test")
    third = registry.create_tenant("third", owner_email="owner@third.test")
    kept = apps["acme"] = Entry(app, acme, 60, Teardowns(), kept_until=70)
    apps["other"] = Entry(app, other, 60, Teardowns(), kept_until=70)
    timer.tick(65)
    kept.serve_until(80)  # no later than kept_until
    kept.used = True

    # Over capacity: acme, used, gets a second chance; other goes.
    apps["third"] = Entry(app, third, 125, Teardowns(), kept_until=130)
    assert dropped == [("other", "capacity")]
    assert "acme" in apps

    timer.tick(5)
    apps.expire()
    assert dropped == [("other", "capacity"), ("acme", "expired")]
    assert list(apps) == ["third"]


# -- Apps: which entry leaves for capacity ----------------------------------------


class Requests:
    """Requests replayed on :class:`Apps` as ``AppCache`` makes them: a held
    slug is a hit that only sets ``used``; any other is built and stored."""

    def __init__(self, maxsize: int, timer: Timer, **options: Any) -> None:
        self.dropped: list[tuple[str, str]] = []
        self.apps = Apps(maxsize, timer, self._dropped, **options)
        self.hits = 0

    def _dropped(self, entry: Entry, cause: str) -> None:
        self.dropped.append((entry.tenant.slug, cause))

    def __call__(self, *slugs: str, ttl: float = 1000) -> None:
        for slug in slugs:
            entry = self.apps.get(slug)
            if entry is not None:
                entry.used = True
                self.hits += 1
                continue
            now = self.apps.timer()
            self.apps[slug] = entry = Entry(app, make_tenant(slug), now + ttl, torn)
            assert self.apps.get(slug) is entry  # never dropped by its own insertion


def torn(app: Any, tenant: Tenant) -> None:
    pass


def scan_over(count: int) -> list[str]:
    return [f"crawled{i:03d}" for i in range(count)]


@pytest.mark.parametrize("admission", [True, False], ids=["w-tinylfu", "lru"])
def test_a_new_entry_is_never_dropped_by_its_own_insertion(admission: bool) -> None:
    for maxsize in (1, 2, 3, 100):
        requests = Requests(maxsize, Timer(), admission=admission)
        for _ in range(3):
            for slug in scan_over(2 * maxsize + 1):
                requests(slug)  # asserts the new entry is held
                for held in list(requests.apps):
                    requests(held)  # everything used: all second chances
        assert len(requests.apps) == requests.apps.currsize == maxsize


def test_a_frequent_tenant_survives_a_scan_that_flushes_plain_lru() -> None:
    hot = ["alpha", "bravo", "charlie"]
    for admission, survivors in ((True, set(hot)), (False, set())):
        requests = Requests(10, Timer(), admission=admission)
        for _ in range(5):
            requests(*hot)  # built once, then hits
            requests(*scan_over(3))  # a little churn: the sweeps count the hits
        requests(*scan_over(40))  # a crawler, each tenant once

        assert set(hot) & set(requests.apps) == survivors, admission
        assert all(cause == "capacity" for _, cause in requests.dropped)


def test_one_hit_wonders_do_not_evict_a_hot_tenant() -> None:
    for admission in (True, False):
        requests = Requests(3, Timer(), admission=admission)
        requests("hot", "warm", "hot")  # hot hit: used
        requests(*scan_over(6))  # tenants seen once each

        # Plain LRU gives hot one second chance, then drops it like the rest.
        assert ("hot" in requests.apps) is admission, admission
        assert ("warm", "capacity") in requests.dropped


def test_expiry_and_causes_are_reported_as_before_with_admission() -> None:
    timer = Timer()
    requests = Requests(3, timer)
    requests("short", ttl=10)
    requests("long", "other")
    timer.tick(10)
    requests("fourth")  # short expired first: room without a capacity drop

    assert requests.dropped == [("short", "expired")]
    requests("fifth")  # now full: one capacity drop, never the newest
    assert [cause for _, cause in requests.dropped] == ["expired", "capacity"]
    assert "fifth" in requests.apps
    timer.tick(1000)
    assert [slug for slug, _ in requests.apps.expire()] != []
    assert not requests.apps and requests.apps.currsize == 0
    assert {cause for _, cause in requests.dropped[2:]} == {"expired"}
    requests("again")  # the policy forgot what expired: no stale victim
    assert list(requests.apps) == ["again"]


def test_apps_behave_as_a_mapping() -> None:
    requests = Requests(3, Timer())
    requests("a", "b", "c")
    apps = requests.apps
    assert sorted(apps.keys()) == ["a", "b", "c"]
    assert sorted(slug for slug, _ in apps.items()) == ["a", "b", "c"]
    assert [entry.tenant.slug for entry in apps.values()] == list(apps.keys())
    b = apps.pop("b")
    assert b.tenant.slug == "b" and "b" not in apps and apps.get("b") is None
    assert apps.currsize == len(apps) == 2
    requests("d", "e")  # b popped: the policy forgot it too
    assert apps.currsize == 3 and "e" in apps
    apps.clear()
    assert (len(apps), apps.currsize, list(apps)) == (0, 0, [])
    requests("f")
    assert list(apps) == ["f"]
    assert not [cause for _, cause in requests.dropped if cause != "capacity"]


def test_apps_keep_a_hot_set_better_than_plain_lru_through_scans() -> None:
    """A small deterministic trace: hits counted, not time."""
    rng = random.Random(12)
    hot = [f"hot{i:02d}" for i in range(40)]
    weights = [1 / rank for rank in range(1, len(hot) + 1)]
    trace: list[str] = []
    for sweep in range(6):
        trace += rng.choices(hot, weights, k=600)
        trace += [f"crawled{i:03d}-{sweep}" for i in range(100)]  # new names
    hits = {}
    for admission in (True, False):
        requests = Requests(50, Timer(), admission=admission)
        requests(*trace)
        hits[admission] = requests.hits
        # Built once each, hot or crawled: no hot tenant is rebuilt after a scan.
        builds = len(trace) - requests.hits
        assert (builds == len(hot) + 6 * 100) is admission, builds

    # Plain LRU rebuilds part of the hot set after every scan.
    assert hits[True] - hits[False] > 100, hits
