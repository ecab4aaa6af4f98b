"""Cross-process invalidation: 4 gunicorn workers see every write within a bound.

Real processes against the test database: ``tenantctl`` writes in one
process, the workers follow the change feed (poll; on PostgreSQL also
LISTEN/NOTIFY). Each scenario waits for the real system with a bounded loop
of requests on fresh connections, so whichever worker accepts answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from servers import (
    TESTS,
    Response,
    Server,
    free_port,
    gunicorn_command,
    python_path,
    request,
    running,
    tenantctl,
)
from sqlalchemy import create_engine, text

from dispatcher import TenantRegistry

WORKERS = 4
POLL_INTERVAL = 0.5
#: The issue's bound: no worker serves the old state 1 s after the commit.
BOUND = 1.0
HOST = "acme.localhost"
WARM_TIMEOUT = 30.0


@pytest.fixture
def server(
    registry: TenantRegistry, database_url: str, tmp_path: Path
) -> Iterator[Server]:
    registry.create_tenant(
        "acme", owner_email="owner@acme.test", subdomain="acme", config={"n": 0}
    )
    port = free_port()
    env = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": database_url,
        "DISPATCHER_BASE_DOMAIN": "localhost",
        "DISPATCHER_APP_FACTORY": "invalidation_probe_app:create_app",
        "DISPATCHER_POLL_INTERVAL": str(POLL_INTERVAL),
        "PYTHONPATH": python_path(TESTS),
    }
    command = gunicorn_command(
        "dispatcher.wsgi:application", port=port, workers=WORKERS
    )
    with running(command, port=port, env=env, log_path=tmp_path / "gunicorn.log") as s:
        _warm_every_worker(s)
        yield s


def _get(server: Server, host: str = HOST) -> Response:
    return request(server.port, "/", host=f"{host}:{server.port}")


def _many(server: Server, count: int, host: str = HOST) -> list[Response]:
    """``count`` requests, 8 at a time, so that every worker gets some."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda _: _get(server, host), range(count)))


def _warm_every_worker(server: Server) -> None:
    """Until every worker has built acme (and so follows the feed).

    Bounded in time: workers boot (and migrate, one at a time) at their pace.
    """
    pids: set[int] = set()
    deadline = time.monotonic() + WARM_TIMEOUT
    while time.monotonic() < deadline:
        pids.update(answer.json()["pid"] for answer in _many(server, 40))
        if len(pids) == WORKERS:
            return
    pytest.fail(f"only workers {pids} answered within {WARM_TIMEOUT} s")


def _everywhere_within(
    server: Server, check: Callable[[Response], bool], bound: float, host: str = HOST
) -> None:
    """``bound`` s after the commit, 80 answers from all workers pass ``check``."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        _get(server, host)
    answers = _many(server, 80, host)
    stale = [(a.status, a.body[:80]) for a in answers if not check(a)]
    assert not stale, f"{len(stale)} of 80 answers {bound} s after commit: {stale}"


def _status(code: int) -> Callable[[Response], bool]:
    return lambda answer: answer.status == code


def _config(config: dict[str, Any]) -> Callable[[Response], bool]:
    return lambda answer: answer.status == 200 and answer.json()["config"] == config


def test_writes_reach_every_worker_within_the_bound(
    server: Server, database_url: str
) -> None:
    tenantctl(database_url, "disable", "acme", "--reason", "unpaid")
    _everywhere_within(server, _status(403), BOUND)

    tenantctl(database_url, "enable", "acme")
    _everywhere_within(server, _status(200), BOUND)

    tenantctl(database_url, "config", "set", "acme", "n", "1")
    _everywhere_within(server, _config({"n": 1}), BOUND)

    tenantctl(database_url, "remove", "acme", "--yes")
    _everywhere_within(server, _status(404), BOUND)

    tenantctl(
        database_url, "add", "beta", "--owner", "b@beta.test", "--subdomain", "beta"
    )
    _everywhere_within(server, _status(200), BOUND, host="beta.localhost")


def test_workers_survive_a_postgresql_restart(
    server: Server, database_url: str, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("a PostgreSQL restart; SQLite has no server")
    pg_ctlcluster = shutil.which("pg_ctlcluster")
    if pg_ctlcluster is None:
        pytest.skip("pg_ctlcluster is not installed")
    version = next(Path("/etc/postgresql").iterdir()).name
    restart = [pg_ctlcluster, "--skip-systemctl-redirect", version, "main", "restart"]
    stop = subprocess.Popen(
        restart, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        # While it restarts, the cached tenant keeps answering.
        while stop.poll() is None:
            assert _get(server).status == 200
    finally:
        stop.wait(timeout=60)
    assert stop.returncode == 0
    _wait_for_listeners(database_url, WORKERS, timeout=30)

    tenantctl(database_url, "disable", "acme")
    _everywhere_within(server, _status(403), BOUND)


def _wait_for_listeners(database_url: str, count: int, timeout: float) -> None:
    """Until ``count`` sessions LISTEN again (the workers' listeners reconnected)."""
    engine = create_engine(database_url, pool_pre_ping=True)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                with engine.connect() as connection:
                    listening = connection.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE "
                            "query LIKE 'LISTEN %' AND datname = current_database()"
                        )
                    ).scalar_one()
            except Exception:
                listening = 0
            if listening >= count:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{listening} of {count} listeners reconnected")
            time.sleep(0.1)
    finally:
        engine.dispose()
