"""The metrics of a real gunicorn with four workers, scraped from the master.

``gunicorn -c python:dispatcher.gunicorn_conf`` with ``DISPATCHER_METRICS=1``:
the workers write their metrics to files in ``PROMETHEUS_MULTIPROC_DIR``, the
master sums them on a port of its own. Requests of every kind are sent on
fresh connections (any worker may take each); then the scrape is polled until
the counts arrive (each worker copies its counts every interval) and must show
each request counted exactly once, summed across the workers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from servers import (
    TESTS,
    Server,
    free_port,
    gunicorn_command,
    python_path,
    request,
    running,
    tenantctl,
)

from dispatcher import TenantRegistry

WORKERS = 4
POLL_INTERVAL = 0.2  # each worker's change follower (DISPATCHER_POLL_INTERVAL)
# The follower's bound: a change is applied within its poll interval, plus
# time to spare on a slow machine. A bucket of tenant_dispatcher_feed_lag_seconds.
LAG_BOUND = "1.0"
DEADLINE = 15.0  # seconds for the counts to reach the scrape

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@contextmanager
def _gunicorn(
    database_url: str,
    tmp_path: Path,
    *,
    workers: int = WORKERS,
    interval: str = "0.1",
    options: tuple[str, ...] = (),
) -> Iterator[tuple[Server, int]]:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": database_url,
        "DISPATCHER_BASE_DOMAIN": "localhost",
        "DISPATCHER_APP_FACTORY": "metrics_probe_app:create_app",
        "DISPATCHER_POLL_INTERVAL": str(POLL_INTERVAL),
        "DISPATCHER_METRICS": "1",
        "DISPATCHER_METRICS_INTERVAL": interval,
        "DISPATCHER_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "PYTHONPATH": python_path(TESTS),
    }
    command = gunicorn_command(
        "dispatcher.wsgi:application", port=port, workers=workers
    )
    command[-1:-1] = options
    log_path = tmp_path / "gunicorn.log"
    with running(command, port=port, env=env, log_path=log_path, cwd=tmp_path) as s:
        yield s, metrics_port


def _scrape(metrics_port: int) -> Samples:
    response = request(metrics_port, "/metrics", host=f"127.0.0.1:{metrics_port}")
    assert response.status == 200, response.body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.body)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _requests(samples: Samples) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: value
        for (name, labels), value in samples.items()
        if name == "tenant_dispatcher_requests_total"
    }


def _scrape_until(
    metrics_port: int, arrived: Callable[[Samples], bool], what: str
) -> Samples:
    """Scrape until ``arrived(samples)``; fail with the last scrape after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while True:
        samples = _scrape(metrics_port)
        if arrived(samples):
            return samples
        assert time.monotonic() < deadline, (
            f"{what}: not within {DEADLINE} s; last requests: {_requests(samples)}"
        )
        time.sleep(0.05)


def _get(port: int, name: str) -> int:
    return request(port, "/", host=f"{name}.localhost:{port}").status


def test_every_request_is_counted_once_across_four_workers(
    database_url: str, tmp_path: Path
) -> None:
    with TenantRegistry(database_url) as registry:
        registry.migrate()
        registry.create_tenant("acme", owner_email="o@acme.test", subdomain="acme")
        registry.create_tenant(
            "broken",
            owner_email="o@broken.test",
            subdomain="broken",
            config={"broken": True},
        )
    with _gunicorn(database_url, tmp_path) as (server, metrics_port):
        port = server.port
        # The tenants' port serves tenants, never the metrics.
        page = request(port, "/metrics", host=f"localhost:{port}")
        assert "tenant_dispatcher_" not in page.body
        # Several at a time, so that several workers take them.
        names = ["acme"] * 20 + [f"nobody{i}" for i in range(5)]
        with ThreadPoolExecutor(max_workers=2 * WORKERS) as pool:
            statuses = list(pool.map(lambda name: _get(port, name), names))
        statuses.append(_get(port, "broken"))
        assert statuses == [200] * 20 + [404] * 5 + [500], server.log()

        tenantctl(database_url, "disable", "acme")
        with TenantRegistry(database_url) as registry:
            generation = registry.latest_generation()

        def every_worker_applied(samples: Samples) -> bool:
            applied = [
                value
                for (name, _), value in samples.items()
                if name == "tenant_dispatcher_feed_generation"
            ]
            return bool(applied) and min(applied) >= generation

        # Every worker that follows the feed (each that looked acme or a
        # name up) has applied the disable: none serves acme's app any more.
        _scrape_until(metrics_port, every_worker_applied, "the disable applied")
        disabled = [_get(port, "acme") for _ in range(6)]
        assert disabled == [403] * 6, server.log()

        # The ready check names no tenant; /metrics on the apex names a
        # tenant by path prefix that does not exist.
        expected = {"no_tenant": 1, "unknown": 6, "failed": 1, "disabled": 6}

        def counted(samples: Samples) -> bool:
            counts = _requests(samples)
            served = counts.get("hit", 0) + counts.get("miss", 0)
            return served == 20 and all(
                counts.get(outcome) == n for outcome, n in expected.items()
            )

        samples = _scrape_until(metrics_port, counted, "every request counted")

    followers = [
        labels
        for name, labels in samples
        if name == "tenant_dispatcher_feed_generation"
    ]
    assert len(followers) >= 2, f"one worker took every request: {followers}"
    counts = _requests(samples)
    misses = counts["miss"]
    assert 1 <= misses <= WORKERS, counts  # one per worker that built acme
    for outcome in ("bad_host", "maintenance", "unavailable"):
        assert counts[outcome] == 0, counts
    assert _value(samples, "tenant_dispatcher_builds_total") == misses
    assert _value(samples, "tenant_dispatcher_build_failures_total") == 1
    lag_count = _value(samples, "tenant_dispatcher_feed_lag_seconds_count")
    assert lag_count is not None and lag_count >= 1
    within = _value(samples, "tenant_dispatcher_feed_lag_seconds_bucket", le=LAG_BOUND)
    assert within == lag_count, "a change applied later than the follower's bound"
    assert _value(samples, "tenant_dispatcher_registry_up") == 1


@pytest.fixture(autouse=True)
def _no_stray_multiproc_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # This test process's own prometheus_client stays single-process.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)


def test_the_example_configuration_serves_metrics_from_a_directory_of_its_own(
    database_url: str, tmp_path: Path
) -> None:
    example = TESTS.parent / "examples" / "gunicorn.conf.py"
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": database_url,
        "DISPATCHER_APP_FACTORY": "metrics_probe_app:create_app",
        "DISPATCHER_METRICS_INTERVAL": "0.1",
        "DISPATCHER_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
        "TMPDIR": str(tmp_path),  # where the hooks make the metrics directory
        "PYTHONPATH": python_path(TESTS),
    }
    # No PROMETHEUS_MULTIPROC_DIR: the hooks make one, and remove it at exit.
    command = gunicorn_command(
        "dispatcher.wsgi:application", port=port, workers=2, config=str(example)
    )
    log_path = tmp_path / "gunicorn.log"
    with running(command, port=port, env=env, log_path=log_path, cwd=tmp_path):
        with TenantRegistry(database_url) as registry:
            registry.create_tenant("acme", owner_email="o@acme.test", subdomain="acme")
        assert _get(port, "acme") == 200
        _scrape_until(
            metrics_port,
            lambda samples: _requests(samples).get("miss") == 1,
            "the miss counted",
        )
        assert [p.name for p in tmp_path.glob("dispatcher-metrics-*")], log_path
        # Its health checks beside the tenants, for the load balancer.
        for check in ("live", "ready"):
            answer = request(port, f"/_health/{check}", host=f"localhost:{port}")
            assert answer.status == 200, answer.body
    assert not list(tmp_path.glob("dispatcher-metrics-*")), "left behind at exit"


def _create_acme(database_url: str) -> None:
    with TenantRegistry(database_url) as registry:
        registry.migrate()
        registry.create_tenant("acme", owner_email="o@acme.test", subdomain="acme")


def test_a_worker_copies_its_last_counts_as_it_exits(
    database_url: str, tmp_path: Path
) -> None:
    _create_acme(database_url)
    # No copy by the thread after the first: only the exit copies the rest.
    options = ("--max-requests", "4")
    with _gunicorn(
        database_url, tmp_path, workers=2, interval="3600", options=options
    ) as (server, _):
        port = server.port
        for _ in range(20):  # each worker is recycled after 4
            assert _get(port, "acme") == 200
    # Stopped gracefully (SIGTERM): every worker exited by worker_exit.
    summed = CollectorRegistry()
    MultiProcessCollector(summed, path=str(tmp_path / "metrics"))  # type: ignore[no-untyped-call]
    answered = 20 + 1  # and the readiness probe, which names no tenant
    counted = sum(
        sample.value
        for family in summed.collect()
        for sample in family.samples
        if sample.name == "tenant_dispatcher_requests_total"
    )
    assert counted == answered, (tmp_path / "gunicorn.log").read_text()


def test_only_prometheus_client_files_are_removed_at_start(
    database_url: str, tmp_path: Path
) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    stale = ["counter_12345.db", "gauge_livesum_12345.db", "histogram_1.db"]
    for name in stale:
        (directory / name).write_bytes(b"a past run's counts")
    theirs = {"tenants.db": b"SQLite format 3", "notes.db": b"x", "counter.db": b"y"}
    for name, content in theirs.items():
        (directory / name).write_bytes(content)
    _create_acme(database_url)
    with _gunicorn(database_url, tmp_path, workers=1):
        kept = {name: (directory / name).read_bytes() for name in theirs}
        assert kept == theirs
        assert not [name for name in stale if (directory / name).exists()]


def _listening_inode(port: int) -> str:
    """The inode of the socket listening on 127.0.0.1:``port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and local == f"0100007F:{port:04X}":
            return inode
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def _holders(inode: str, pids: list[int]) -> list[int]:
    """Which of ``pids`` hold the socket ``inode`` open."""
    held = []
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    held.append(pid)
                    break
            except OSError:
                continue  # closed meanwhile
    return held


def _children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children]


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_only_the_master_holds_the_metrics_port(
    database_url: str, tmp_path: Path
) -> None:
    _create_acme(database_url)
    with _gunicorn(database_url, tmp_path, workers=2) as (server, metrics_port):
        master = server.process.pid
        inode = _listening_inode(metrics_port)
        deadline = time.monotonic() + DEADLINE
        while True:
            workers = _children(master)
            holders = _holders(inode, [master, *workers])
            if len(workers) == 2 and holders == [master]:
                break
            assert time.monotonic() < deadline, (
                f"master {master}, workers {workers}: {holders} hold the port"
            )
            time.sleep(0.05)
