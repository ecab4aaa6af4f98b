"""``tenantctl serve``: the real development server in a real process."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from dispatcher import TenantRegistry
from dispatcher.cli import cli

TENANTCTL = Path(sys.executable).with_name("tenantctl")
START_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(port: int, path: str, host: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True)
        connection.putheader("Host", host)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def server(
    registry: TenantRegistry, database_url: str, tmp_path: Path
) -> Iterator[int]:
    """``tenantctl serve`` on a free loopback port, stopped after the test."""
    registry.create_tenant(
        "acme",
        owner_email="owner@acme.test",
        subdomain="acme",
        path_prefix="acme",
        config={"greeting": "Hello from Acme"},
    )
    port = _free_port()
    process = subprocess.Popen(
        [str(TENANTCTL), "--database-url", database_url, "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "DISPATCHER_BASE_DOMAIN": "localhost"},
        cwd=tmp_path,  # where the demo keeps its secret key file
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    assert process.stderr is not None
                    pytest.fail(f"server did not start: {process.stderr.read()!r}")
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def test_subdomain_of_localhost_reaches_the_tenant(server: int) -> None:
    status, body = _get(server, "/", f"acme.localhost:{server}")

    assert status == 200
    assert "Hello from Acme" in body


def test_path_prefix_reaches_the_tenant_with_prefixed_links(server: int) -> None:
    status, body = _get(server, "/acme/", f"localhost:{server}")

    assert status == 200
    assert 'href="/acme/about"' in body


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("a_b.localhost", 400, id="underscore"),
        pytest.param("user@acme.localhost", 400, id="userinfo"),
        pytest.param("acme.localhost:99999", 400, id="port out of range"),
        pytest.param("nobody.localhost", 404, id="unknown subdomain: no such site"),
    ],
)
def test_bad_and_unknown_hosts(server: int, host: str, expected: int) -> None:
    status, _ = _get(server, "/", host)

    assert status == expected


def test_debug_refuses_a_non_loopback_host(database_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["--database-url", database_url, "serve", "--debug", "--host", "0.0.0.0"]
    )

    assert result.exit_code == 2
    assert "--debug" in result.stderr
    assert "Traceback" not in result.output
