"""Maintenance mode across processes: ``tenantctl maintenance`` in one, two
gunicorn workers following the change feed in others.

The tenant app is ``invalidation_probe_app.py`` (it answers which worker
served). Each step waits for the real system with a bounded loop of requests
on fresh connections, so whichever worker accepts answers; a step passes once
a whole round of answers agrees, and fails if none does within the bound.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from pathlib import Path

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

from dispatcher import TenantRegistry

WORKERS = 2
POLL_INTERVAL = 0.5
#: How soon every worker must follow another process's write: the poll
#: interval and time to spare on a slow, shared machine.
BOUND = 5.0
ROUND = 8 * WORKERS
WARM_TIMEOUT = 30.0


@pytest.fixture
def server(
    registry: TenantRegistry, database_url: str, tmp_path: Path
) -> Iterator[Server]:
    for slug in ("acme", "beta"):
        registry.create_tenant(slug, owner_email=f"o@{slug}.test", subdomain=slug)
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


def _get(
    server: Server, slug: str = "acme", path: str = "/", cookie: str | None = None
) -> Response:
    headers = {} if cookie is None else {"Cookie": cookie}
    host = f"{slug}.localhost:{server.port}"
    return request(server.port, path, host=host, headers=headers)


def _round(
    server: Server, slug: str = "acme", cookie: str | None = None
) -> list[Response]:
    """A round of requests, 4 at a time, so that every worker gets some."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda _: _get(server, slug, cookie=cookie), range(ROUND)))


def _warm_every_worker(server: Server) -> None:
    """Until every worker has built acme and beta (and so follows the feed)."""
    pids: set[int] = set()
    deadline = time.monotonic() + WARM_TIMEOUT
    while time.monotonic() < deadline:
        for slug in ("acme", "beta"):
            pids.update(answer.json()["pid"] for answer in _round(server, slug))
        if len(pids) == WORKERS:
            return
    pytest.fail(f"only workers {pids} answered within {WARM_TIMEOUT} s")


def _everywhere_within(
    server: Server,
    check: Callable[[Response], bool],
    slug: str = "acme",
    cookie: str | None = None,
) -> None:
    """Until a whole round of answers passes ``check``; at most ``BOUND`` s."""
    deadline = time.monotonic() + BOUND
    while True:
        answers = _round(server, slug, cookie)
        failing = [(a.status, a.body[:80]) for a in answers if not check(a)]
        if not failing:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{len(failing)} of {ROUND} answers after {BOUND} s: {failing}")


def _in_maintenance(retry_after: int) -> Callable[[Response], bool]:
    return lambda a: a.status == 503 and a.headers["Retry-After"] == str(retry_after)


def _served(slug: str) -> Callable[[Response], bool]:
    return lambda a: a.status == 200 and a.json()["tenant"] == slug


def _bypass(database_url: str, *args: str) -> str:
    """``tenantctl maintenance on acme ARGS``: the bypass path it printed."""
    result = tenantctl(database_url, "maintenance", "on", "acme", "--json", *args)
    path: str = json.loads(result.stdout)["bypass_path"]
    return path


def test_maintenance_reaches_every_worker_and_the_bypass_works_in_any(
    server: Server, database_url: str
) -> None:
    path = _bypass(database_url, "--retry-after", "7", "--message", "Back <soon>")
    _everywhere_within(server, _in_maintenance(7))
    assert "Back &lt;soon&gt;" in _get(server).body
    _everywhere_within(server, _served("beta"), slug="beta")

    redirect = _get(server, path=path)
    assert (redirect.status, redirect.headers["Location"]) == (303, "/")
    [morsel] = SimpleCookie(redirect.headers["Set-Cookie"]).values()
    cookie = f"{morsel.key}={morsel.value}"
    # Every worker lets the cookie through, and builds acme's app for it.
    answers = _round(server, cookie=cookie)
    assert [a for a in answers if not _served("acme")(a)] == []
    assert _get(server, path=path).status == 403  # spent, whichever worker asks

    tenantctl(database_url, "maintenance", "off", "acme")
    _everywhere_within(server, _served("acme"))

    # A new window: the old cookie is worthless everywhere.
    _bypass(database_url)
    _everywhere_within(server, _in_maintenance(60), cookie=cookie)
