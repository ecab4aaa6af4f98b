"""Routing as real servers present requests: gunicorn and werkzeug's dev server.

Each test starts ``routing_probe_app.py`` under one server (one gunicorn
worker, so a warmed route is the one the next request hits) and sends raw
bytes over a socket, since the point is what each server makes of a request
line and Host header that disagree: RFC 9112 section 3.2.2 says the host in an
absolute-form target (``GET http://host/path HTTP/1.1``) wins, and a spoofed
Host must never reach a path-routed tenant.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from servers import (
    REQUEST_TIMEOUT,
    TESTS,
    Server,
    free_port,
    gunicorn_command,
    python_path,
    running,
)

from dispatcher import TenantRegistry

PROBE = TESTS / "routing_probe_app.py"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(port: int, head: str) -> Answer:
    """Send ``head`` (a request line and headers, no body) as raw bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as s:
        s.sendall(head.encode("latin-1") + b"Connection: close\r\n\r\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return Answer(int(status_line.split()[1]), body)


def get(port: int, target: str, host: str) -> Answer:
    return send(port, f"GET {target} HTTP/1.1\r\nHost: {host}\r\n")


@pytest.fixture
def tenants(registry: TenantRegistry) -> None:
    for slug in ("acme", "beta"):
        registry.create_tenant(
            slug, owner_email=f"owner@{slug}.test", subdomain=slug, path_prefix=slug
        )


@pytest.fixture(params=["gunicorn", "werkzeug"])
def server(
    request: pytest.FixtureRequest,
    tenants: None,
    database_url: str,
    tmp_path: Path,
) -> Iterator[Server]:
    port = free_port()
    if request.param == "gunicorn":
        command = gunicorn_command(
            "routing_probe_app:application", port=port, workers=1
        )
    else:
        command = [sys.executable, str(PROBE), str(port)]
    env = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": database_url,
        "PYTHONPATH": python_path(TESTS),
    }
    log_path = tmp_path / f"{request.param}.log"
    with running(command, port=port, env=env, log_path=log_path, cwd=tmp_path) as s:
        yield s


# -- path routing answers on the apex only ---------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("attacker.test", id="foreign"),
        pytest.param("attacker.test:8000", id="foreign-port"),
        pytest.param("nobody.example.com", id="unknown-subdomain"),
        pytest.param("127.0.0.1", id="ip"),
    ],
)
def test_a_foreign_host_does_not_reach_a_path_routed_tenant(
    server: Server, host: str
) -> None:
    apex = get(server.port, "/acme/", "example.com")
    assert apex.status == 200
    assert apex.json()["external"] == "http://example.com/acme/"

    answer = get(server.port, "/acme/", host)
    assert answer.status == 404, answer.body
    assert b"acme" not in answer.body


# -- absolute-form targets ---------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "host", "expected"),
    [
        pytest.param(
            "http://acme.example.com/x",
            "beta.example.com",
            {"tenant": "acme", "host": "acme.example.com", "path": "/x"},
            id="target-over-hot-host",
        ),
        pytest.param(
            "http://example.com/acme/x",
            "attacker.test",
            {
                "tenant": "acme",
                "host": "example.com",
                "script_root": "/acme",
                "external": "http://example.com/acme/",
            },
            id="path-routed-on-target-host",
        ),
        pytest.param("http://attacker.test/acme/x", "example.com", None, id="foreign"),
    ],
)
def test_the_host_of_an_absolute_form_target_wins(
    server: Server, target: str, host: str, expected: dict[str, str] | None
) -> None:
    # The Host header's tenant is hot: its route must not short-cut the target.
    assert get(server.port, "/", "beta.example.com").json()["tenant"] == "beta"
    answer = get(server.port, target, host)
    if expected is None:
        assert answer.status == 404, answer.body
        return
    assert answer.status == 200, answer.body
    seen = answer.json()
    assert {key: seen[key] for key in expected} == expected


def test_an_absolute_form_target_with_userinfo_is_400(server: Server) -> None:
    answer = get(server.port, "http://owner@acme.example.com/", "acme.example.com")
    assert answer.status == 400, answer.body
