"""The Prometheus exporter against a real dispatcher, registry and prometheus_client.

Each test instruments a dispatcher into a registry of its own and reads the
values back with ``get_sample_value``; multiprocess mode writes real files in
the test's directory and is read back with ``MultiProcessCollector``, as
gunicorn's master reads them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from forking import held_by_another_thread, run_in_child
from prometheus_client import CollectorRegistry, values
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import MetaData
from werkzeug.test import Client

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry
from dispatcher.counts import OUTCOMES
from dispatcher.data import TenantData
from dispatcher.metrics import DispatcherMetrics, _copy_loop, instrument, metrics_app

BASE = "example.com"
DEADLINE = 10.0  # seconds a thread or a follower gets to deliver


def create_app(tenant: Tenant) -> Flask:
    if tenant.config.get("broken"):
        raise RuntimeError("this tenant's app does not build")
    app = Flask(tenant.slug)
    app.add_url_rule("/", "index", lambda: tenant.slug)
    return app


def get(dispatcher: Any, host: str, path: str = "/") -> int:
    response = Client(dispatcher).get(path, headers={"Host": host}, buffered=True)
    return response.status_code


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(f"tenant_dispatcher_{name}", labels)


def wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {DEADLINE} s"
        time.sleep(0.02)


@pytest.fixture
def tenants(registry: TenantRegistry) -> TenantRegistry:
    registry.create_tenant("acme", owner_email="o@acme.test", subdomain="acme")
    registry.create_tenant(
        "broken",
        owner_email="o@broken.test",
        subdomain="broken",
        config={"broken": True},
    )
    return registry


@pytest.fixture
def dispatcher(tenants: TenantRegistry) -> Iterator[TenantDispatcher]:
    dispatcher = TenantDispatcher(
        tenants, create_app, base_domain=BASE, policy=CachePolicy(poll_interval=0.05)
    )
    yield dispatcher
    dispatcher.close()


@pytest.fixture
def prom() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(
    dispatcher: TenantDispatcher, prom: CollectorRegistry
) -> Iterator[DispatcherMetrics]:
    # A long interval: these tests copy the counts themselves, with sync().
    metrics = instrument(dispatcher, interval=3600, registry=prom)
    yield metrics
    metrics.close()


def drive(dispatcher: TenantDispatcher) -> None:
    """A miss, two hits, two unknowns, a failed build, no tenant, a bad host."""
    assert get(dispatcher, f"acme.{BASE}") == 200
    assert get(dispatcher, f"acme.{BASE}") == 200
    assert get(dispatcher, f"acme.{BASE}") == 200
    assert get(dispatcher, f"nobody.{BASE}") == 404
    assert get(dispatcher, f"nobody.{BASE}") == 404
    assert get(dispatcher, f"broken.{BASE}") == 500
    assert get(dispatcher, BASE) == 404
    assert get(dispatcher, "bad host!") == 400


def test_each_outcome_is_copied_once_however_often_it_is_synced(
    dispatcher: TenantDispatcher, metrics: DispatcherMetrics, prom: CollectorRegistry
) -> None:
    drive(dispatcher)
    metrics.sync()
    metrics.sync()
    expected = dispatcher.outcomes()
    assert expected["hit"] == 2 and expected["unknown"] == 2
    for outcome in OUTCOMES:
        assert value(prom, "requests_total", outcome=outcome) == expected[outcome]

    drive(dispatcher)
    metrics.sync()
    for outcome, count in dispatcher.outcomes().items():
        assert value(prom, "requests_total", outcome=outcome) == count


def test_hits_reach_prometheus_only_when_the_counts_are_copied(
    dispatcher: TenantDispatcher, metrics: DispatcherMetrics, prom: CollectorRegistry
) -> None:
    assert get(dispatcher, f"acme.{BASE}") == 200
    metrics.sync()
    for _ in range(50):
        assert get(dispatcher, f"acme.{BASE}") == 200
    # The hit path called nothing of prometheus_client's.
    assert value(prom, "requests_total", outcome="hit") == 0
    metrics.sync()
    assert value(prom, "requests_total", outcome="hit") == 50


def test_the_copying_thread_waits_an_interval_before_its_first_copy(
    dispatcher: TenantDispatcher, metrics: DispatcherMetrics, prom: CollectorRegistry
) -> None:
    # It starts at a process's first lookup: copying at once would race the
    # requests around it (a copy in the middle of the hits above, say).
    assert get(dispatcher, f"acme.{BASE}") == 200
    assert get(dispatcher, f"acme.{BASE}") == 200
    stopped = threading.Event()
    stopped.set()  # stop at the first wait, whatever the interval

    _copy_loop(weakref.ref(metrics), stopped, 3600)

    assert value(prom, "requests_total", outcome="hit") == 0


def test_builds_failures_lookups_and_evictions(
    dispatcher: TenantDispatcher, metrics: DispatcherMetrics, prom: CollectorRegistry
) -> None:
    drive(dispatcher)
    metrics.sync()
    assert value(prom, "apps") == 1
    assert value(prom, "negative_entries") == 1
    assert dispatcher.evict("acme")
    metrics.sync()
    assert value(prom, "builds_total") == 1
    assert value(prom, "build_failures_total") == 1
    # Observed as they happen, not copied: the failed build took no time here.
    assert value(prom, "build_seconds_count") == 1
    assert value(prom, "lookup_seconds_count", result="found") == 2  # acme, broken
    assert value(prom, "lookup_seconds_count", result="unknown") == 1
    assert value(prom, "lookup_seconds_count", result="error") is None
    assert value(prom, "evictions_total", cause="invalidated") == 1
    assert value(prom, "apps") == 0
    assert value(prom, "responses_not_closed_total") == 0
    assert value(prom, "registry_up") == 1


def test_no_label_names_a_tenant(
    dispatcher: TenantDispatcher, metrics: DispatcherMetrics, prom: CollectorRegistry
) -> None:
    for i in range(20):
        get(dispatcher, f"nobody{i}.{BASE}")
    drive(dispatcher)
    metrics.sync()
    labels = {
        label
        for family in prom.collect()
        for sample in family.samples
        for label in sample.labels.values()
    }
    assert not {"acme", "broken"} & labels
    assert not any(label.startswith("nobody") for label in labels)


def test_another_process_change_is_applied_with_its_lag_and_generation(
    dispatcher: TenantDispatcher,
    metrics: DispatcherMetrics,
    prom: CollectorRegistry,
    database_url: str,
) -> None:
    assert get(dispatcher, f"acme.{BASE}") == 200  # starts the follower
    with TenantRegistry(database_url) as writer:
        writer.disable_tenant("acme")
    follower = dispatcher.registry.feed.follower
    assert follower is not None

    def applied() -> bool:
        metrics.sync()
        return value(prom, "feed_lag_seconds_count") == 1

    wait_for(applied, "the change applied")
    assert value(prom, "feed_generation") == follower.generation
    # Written and read on this machine, polled every 0.05 s.
    assert value(prom, "feed_lag_seconds_bucket", le="1.0") == 1
    age = value(prom, "feed_read_age_seconds")
    assert age is not None and 0 <= age < 1
    assert get(dispatcher, f"acme.{BASE}") == 403
    metrics.sync()
    assert value(prom, "requests_total", outcome="disabled") == 1


def test_the_thread_copies_every_interval(
    dispatcher: TenantDispatcher, prom: CollectorRegistry
) -> None:
    metrics = instrument(dispatcher, interval=0.05, registry=prom)
    try:
        drive(dispatcher)  # the first lookup starts the thread
        wait_for(
            lambda: value(prom, "requests_total", outcome="hit") == 2,
            "the hits copied by the thread",
        )
    finally:
        metrics.close()


def test_an_unreachable_registry_is_down(
    tmp_path: Path, prom: CollectorRegistry
) -> None:
    registry = TenantRegistry(
        "postgresql+psycopg://nobody@127.0.0.1:1/none", timeout=0.5
    )
    dispatcher = TenantDispatcher(
        registry,
        create_app,
        base_domain=BASE,
        policy=CachePolicy(poll_interval=None),
    )
    metrics = instrument(dispatcher, interval=3600, registry=prom)
    try:
        assert get(dispatcher, f"acme.{BASE}") == 503
        metrics.sync()
        assert value(prom, "registry_up") == 0
        assert value(prom, "lookup_seconds_count", result="error") == 1
        assert value(prom, "requests_total", outcome="unavailable") == 1
    finally:
        metrics.close()
        dispatcher.close()
        registry.close()


def test_a_follower_that_stopped_reading_the_feed_is_down(
    dispatcher: TenantDispatcher, metrics: DispatcherMetrics, prom: CollectorRegistry
) -> None:
    follower = dispatcher.follow()
    assert follower is not None
    metrics.sync()
    assert value(prom, "registry_up") == 1
    follower.stop()  # it no longer reads; its last read ages
    follower._pid = os.getpid()  # ...yet counts as running: a stuck poll
    follower._stop.clear()
    follower.read_at = time.monotonic() - 60
    metrics.sync()
    assert value(prom, "registry_up") == 0
    age = value(prom, "feed_read_age_seconds")
    assert age is not None and age >= 60
    # A lookup since then reached the registry: it is up again.
    assert get(dispatcher, f"acme.{BASE}") == 200
    metrics.sync()
    assert value(prom, "registry_up") == 1


def test_a_scrape_of_an_idle_process_follows_the_feed_to_know(
    dispatcher: TenantDispatcher, metrics: DispatcherMetrics, prom: CollectorRegistry
) -> None:
    metrics.sync()
    assert value(prom, "registry_up") == 1
    follower = dispatcher.registry.feed.follower
    assert follower is not None and follower.running


def test_the_pools_of_postgresql_tenant_data(
    dispatcher: TenantDispatcher,
    prom: CollectorRegistry,
    tenant_data_location: dict[str, Any],
    backend: str,
) -> None:
    data = TenantData(metadata=MetaData(), pool_size=3, **tenant_data_location)
    metrics = instrument(dispatcher, data=data, interval=3600, registry=prom)
    try:
        if backend == "sqlite":
            metrics.sync()
            # A file per tenant and no pool (NullPool): nothing to saturate.
            assert value(prom, "data_pool_size", server="default") is None
            return
        assert data.servers is not None
        with data.servers.engine("default").connect():
            metrics.sync()
            assert value(prom, "data_pool_checked_out", server="default") == 1
        metrics.sync()
        assert value(prom, "data_pool_checked_out", server="default") == 0
        assert value(prom, "data_pool_size", server="default") == 3
        assert value(prom, "data_pool_overflow", server="default") == 0
        assert value(prom, "data_pool_limit", server="default") == data.bound
    finally:
        metrics.close()
        data.dispose()


def test_a_forked_child_counts_from_the_fork_in_process_mode(
    dispatcher: TenantDispatcher, metrics: DispatcherMetrics, prom: CollectorRegistry
) -> None:
    drive(dispatcher)
    metrics.sync()
    parent = dispatcher.outcomes()

    def child() -> bool:
        # Its values are the parent's as copied: it goes on from there.
        assert get(dispatcher, f"acme.{BASE}") == 200  # a miss: the cache is new
        metrics.sync()
        return (
            value(prom, "requests_total", outcome="miss") == parent["miss"] + 1
            and value(prom, "requests_total", outcome="hit") == parent["hit"]
        )

    with held_by_another_thread(metrics._lock):
        assert run_in_child(child) == 0


@pytest.fixture
def multiprocess(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CollectorRegistry]:
    """prometheus_client in multiprocess mode on files in ``tmp_path``: the
    metrics made from now on write there; the registry returned sums them."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())  # type: ignore[no-untyped-call]
    summed = CollectorRegistry()
    MultiProcessCollector(summed, path=str(directory))  # type: ignore[no-untyped-call]
    yield summed
    values.ValueClass.close_all_files()


def test_processes_are_summed_and_nothing_counted_before_a_fork_twice(
    dispatcher: TenantDispatcher, multiprocess: CollectorRegistry
) -> None:
    metrics = instrument(dispatcher, interval=3600, registry=CollectorRegistry())
    try:
        drive(dispatcher)
        metrics.sync()
        # Counted after the parent's last copy and before the fork: the
        # parent copies them, never the child.
        assert get(dispatcher, f"acme.{BASE}") == 200
        parent = dispatcher.outcomes()

        def child() -> bool:
            assert get(dispatcher, f"acme.{BASE}") == 200  # a miss
            assert get(dispatcher, f"acme.{BASE}") == 200  # a hit
            metrics.sync()
            return True

        assert run_in_child(child) == 0
        metrics.sync()
        summed = multiprocess
        assert value(summed, "requests_total", outcome="hit") == parent["hit"] + 1
        assert value(summed, "requests_total", outcome="miss") == parent["miss"] + 1
        assert value(summed, "requests_total", outcome="failed") == 1
        assert value(summed, "builds_total") == 2  # acme here, and in the child
        # livesum over the live processes: the child has exited but was not
        # marked dead, so its app is still summed; mark_process_dead drops it.
        assert value(summed, "apps") == 2

        response = Client(metrics_app(metrics)).get("/")
        assert response.status_code == 200
        assert 'tenant_dispatcher_requests_total{outcome="failed"} 1.0' in response.text
    finally:
        metrics.close()


def test_the_metrics_app_answers_get_and_head_only(
    dispatcher: TenantDispatcher, metrics: DispatcherMetrics
) -> None:
    drive(dispatcher)
    client = Client(metrics_app(metrics))
    page = client.get("/")
    assert page.status_code == 200
    # Synced before serving: no interval to wait for.
    assert 'tenant_dispatcher_requests_total{outcome="hit"} 2.0' in page.text
    head = client.head("/")
    assert head.status_code == 200 and head.data == b""
    for method in ("POST", "PUT", "DELETE"):
        refused = client.open("/", method=method)
        assert refused.status_code == 405
        assert refused.headers["Allow"] == "GET, HEAD"


def test_instrumenting_twice_or_with_a_bad_interval_is_refused(
    dispatcher: TenantDispatcher, metrics: DispatcherMetrics
) -> None:
    with pytest.raises(ValueError, match="instrumented already"):
        instrument(dispatcher, registry=CollectorRegistry())
    metrics.close()
    for interval in (0, -1, float("inf")):
        with pytest.raises(ValueError, match="interval must be > 0"):
            instrument(dispatcher, interval=interval, registry=CollectorRegistry())
    with pytest.raises(TypeError, match="interval must be a number"):
        instrument(dispatcher, interval="1", registry=CollectorRegistry())  # type: ignore[arg-type]


def test_closing_unregisters_so_a_dispatcher_can_be_instrumented_again(
    dispatcher: TenantDispatcher, prom: CollectorRegistry
) -> None:
    first = instrument(dispatcher, interval=3600, registry=prom)
    first.sync()
    first.close()
    assert dispatcher.observer is not first
    second = instrument(dispatcher, interval=3600, registry=prom)
    try:
        second.sync()
        assert value(prom, "requests_total", outcome="hit") == 0
    finally:
        second.close()


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_importing_dispatcher_does_not_import_prometheus_client() -> None:
    code = "import sys, dispatcher; print('prometheus_client' in sys.modules)"
    result = _python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_without_prometheus_client_the_error_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['prometheus_client'] = None\n"
        "import dispatcher.metrics\n"
    )
    result = _python(code)
    assert result.returncode != 0
    assert "pip install 'flask-tenant-dispatcher[metrics]'" in result.stderr


def test_metrics_that_cannot_be_written_fail_nothing_and_come_back(
    dispatcher: TenantDispatcher,
    multiprocess: CollectorRegistry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The gauges' file cannot be made (a directory has its name): the
    # counters are made, then the first gauge fails, halfway through.
    obstacle = tmp_path / "metrics" / f"gauge_livesum_{os.getpid()}.db"
    obstacle.mkdir()
    prom = CollectorRegistry()
    metrics = instrument(dispatcher, interval=3600, registry=prom)
    try:
        with caplog.at_level("WARNING", logger="dispatcher.metrics"):
            drive(dispatcher)  # every request answered as usual
            metrics.sync()
            metrics.sync()
        failures = [r for r in caplog.records if r.name == "dispatcher.metrics"]
        assert len(failures) == 1, [r.getMessage() for r in failures]
        assert "IsADirectoryError" in caplog.text
        # Nothing half made stays registered to clash with the next attempt.
        assert list(prom.collect()) == []

        obstacle.rmdir()
        metrics.sync()  # the next copy tries again, and copies every count
        assert value(prom, "requests_total", outcome="hit") == 2
        assert value(prom, "requests_total", outcome="unknown") == 2
        assert value(multiprocess, "apps") == 1
        assert "work again" in caplog.text
    finally:
        metrics.close()


def test_sync_all_copies_what_was_counted_since_the_last_copy(
    dispatcher: TenantDispatcher, tenants: TenantRegistry, prom: CollectorRegistry
) -> None:
    from dispatcher.metrics import sync_all

    metrics = instrument(dispatcher, interval=3600, registry=prom)
    idle = TenantDispatcher(tenants, create_app, base_domain=BASE)
    idle_prom = CollectorRegistry()
    idle_metrics = instrument(idle, interval=3600, registry=idle_prom)
    try:
        drive(dispatcher)
        sync_all()  # what a worker's exit calls: no thread, no scrape needed
        assert value(prom, "requests_total", outcome="hit") == 2
        assert value(prom, "requests_total", outcome="bad_host") == 1
        # One that counted nothing makes nothing (a master that only forks).
        assert list(idle_prom.collect()) == []
    finally:
        idle_metrics.close()
        idle.close()
        metrics.close()
