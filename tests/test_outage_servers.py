"""A database outage never stops the server: gunicorn and ``tenantctl serve``.

The registry reaches PostgreSQL through a :class:`~tcp_proxy.TcpProxy` the test
takes down and brings back, so the outage is real (connections refused, open
ones cut) without stopping the server other tests share. While it is down:
the master keeps running, a worker that crashed comes back (booting needs no
database), tenants a worker has built keep being served by it, cold ones get
503 with ``Retry-After``; once it is back every tenant is served, no restart.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from servers import (
    TENANTCTL,
    TESTS,
    Response,
    Server,
    free_port,
    gunicorn_command,
    python_path,
    request,
    running,
)
from sqlalchemy import make_url
from tcp_proxy import TcpProxy

from dispatcher import TenantRegistry

PROBE_FACTORY = "gunicorn_probe_app:create_app"
WORKERS = 2
# Generous bounds for a shared, noisy machine; each only caps a wait.
RECOVERY_BOUND = 20.0
BOOT_BOUND = 20.0


@pytest.fixture
def proxied(backend: str, database_url: str) -> Iterator[tuple[TcpProxy, str]]:
    """The test database, reached through a proxy that can go down."""
    if backend != "postgresql":
        pytest.skip("an outage of a database server; SQLite has none")
    url = make_url(database_url)
    with TcpProxy((url.host or "127.0.0.1", url.port or 5432)) as proxy:
        proxied_url = url.set(host="127.0.0.1", port=proxy.port)
        yield proxy, proxied_url.render_as_string(hide_password=False)


@pytest.fixture
def tenants(registry: TenantRegistry) -> TenantRegistry:
    for slug in ("warm", "cold"):
        registry.create_tenant(slug, owner_email=f"owner@{slug}.test", subdomain=slug)
    return registry


def _environment(database_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DISPATCHER_DATABASE_URL": database_url,
        "DISPATCHER_BASE_DOMAIN": "localhost",
        "DISPATCHER_APP_FACTORY": PROBE_FACTORY,
        "DISPATCHER_POLL_INTERVAL": "0.2",
        "DISPATCHER_DB_TIMEOUT": "2",
        "PYTHONPATH": python_path(TESTS),
    }


def _get(port: int, slug: str) -> Response:
    return request(port, "/", host=f"{slug}.localhost:{port}")


def _pid(response: Response) -> int | None:
    if response.status != 200:
        return None
    pid: int = json.loads(response.body)["pid"]
    return pid


def _workers(master: int) -> set[int]:
    """The pids of the master's child processes, from /proc."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == master:
            children.add(int(entry.name))
    return children


def _until(condition: object, bound: float, what: str, server: Server) -> None:
    assert callable(condition)
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {bound:g} s; log:\n{server.log()}")
        time.sleep(0.1)


@contextmanager
def _gunicorn(database_url: str, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    command = gunicorn_command(
        "dispatcher.wsgi:application", port=port, workers=WORKERS
    )
    env = _environment(database_url)
    with running(
        command, port=port, env=env, log_path=tmp_path / "gunicorn.log", cwd=tmp_path
    ) as server:
        yield server


def test_gunicorn_rides_out_an_outage_and_a_worker_crash(
    proxied: tuple[TcpProxy, str], tenants: TenantRegistry, tmp_path: Path
) -> None:
    proxy, url = proxied
    with _gunicorn(url, tmp_path) as server:
        master = server.process.pid
        # Warm: until both workers have built "warm".
        seen: set[int] = set()
        deadline = time.monotonic() + BOOT_BOUND
        while len(seen) < WORKERS and time.monotonic() < deadline:
            pid = _pid(_get(server.port, "warm"))
            assert pid is not None, server.log()
            seen.add(pid)
        assert len(seen) == WORKERS, f"one worker took every request: {seen}"

        proxy.down()
        for _ in range(10):
            answer = _get(server.port, "warm")
            assert answer.status == 200, (answer, server.log())
        cold = _get(server.port, "cold")
        assert cold.status == 503, cold
        assert cold.headers["Retry-After"], cold.headers

        # A worker crashes; the master starts another, which boots without
        # the database (it used to migrate at boot, fail, and halt gunicorn).
        crashed = seen.pop()
        os.kill(crashed, signal.SIGKILL)
        _until(
            lambda: len(_workers(master) - {crashed}) == WORKERS,
            BOOT_BOUND,
            "a replacement worker",
            server,
        )
        # The replacement answers: it cannot build "warm" without the database.
        _until(
            lambda: _get(server.port, "warm").status == 503,
            BOOT_BOUND,
            "an answer from the replacement worker",
            server,
        )
        assert server.process.poll() is None, f"gunicorn exited:\n{server.log()}"
        assert "Worker failed to boot" not in server.log()
        for _ in range(10):
            answer = _get(server.port, "warm")
            # The surviving worker still serves it; the new one cannot build it.
            assert answer.status in {200, 503}, answer
            assert _pid(answer) in {None, *seen}, answer

        proxy.up()

        def every_tenant_served() -> bool:
            answers = [_get(server.port, slug) for slug in ("warm", "cold") * 4]
            return all(answer.status == 200 for answer in answers)

        _until(every_tenant_served, RECOVERY_BOUND, "service after the outage", server)
        assert server.process.poll() is None


def test_gunicorn_starts_while_the_database_is_down(
    proxied: tuple[TcpProxy, str], tenants: TenantRegistry, tmp_path: Path
) -> None:
    proxy, url = proxied
    proxy.down()
    with _gunicorn(url, tmp_path) as server:
        cold = _get(server.port, "cold")
        assert cold.status == 503, cold
        assert cold.headers["Retry-After"], cold.headers
        assert "not migrating the schema at start" in server.log()
        proxy.up()
        _until(
            lambda: _get(server.port, "cold").status == 200,
            RECOVERY_BOUND,
            "service after the outage",
            server,
        )


def test_tenantctl_serve_starts_while_the_database_is_down(
    proxied: tuple[TcpProxy, str], tenants: TenantRegistry, tmp_path: Path
) -> None:
    proxy, url = proxied
    proxy.down()
    port = free_port()
    command = [str(TENANTCTL), "--database-url", url, "serve", "--port", str(port)]
    env = _environment(url)
    with running(
        command, port=port, env=env, log_path=tmp_path / "serve.log", cwd=tmp_path
    ) as server:
        cold = _get(port, "cold")
        assert cold.status == 503, cold
        assert cold.headers["Retry-After"], cold.headers
        proxy.up()
        _until(
            lambda: _get(port, "cold").status == 200,
            RECOVERY_BOUND,
            "service after the outage",
            server,
        )
