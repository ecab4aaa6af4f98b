"""``tenantctl serve``: the real development server in a real process."""

from __future__ import annotations

import http.client
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from servers import TENANTCTL, Server, free_port, running

from dispatcher import TenantRegistry
from dispatcher.cli import cli
from dispatcher.devserver import addresses, escape


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
def served(
    registry: TenantRegistry, database_url: str, tmp_path: Path
) -> Iterator[Server]:
    """``tenantctl serve`` on a free loopback port, stopped after the test;
    its output (the access lines) in a file."""
    registry.create_tenant(
        "acme",
        owner_email="owner@acme.test",
        subdomain="acme",
        path_prefix="acme",
        config={"greeting": "Hello from Acme"},
    )
    port = free_port()
    command = [str(TENANTCTL), "--database-url", database_url]
    command += ["serve", "--port", str(port)]
    with running(
        command,
        port=port,
        env={**os.environ, "DISPATCHER_BASE_DOMAIN": "localhost"},
        log_path=tmp_path / "serve.log",
        cwd=tmp_path,  # where the demo keeps its secret key file
    ) as server:
        yield server


@pytest.fixture
def server(served: Server) -> int:
    return served.port


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


def test_a_port_in_use_is_one_line_before_any_address(
    database_url: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                str(TENANTCTL),
                "--database-url",
                database_url,
                "serve",
                "--port",
                str(port),
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_a_host_that_does_not_resolve_is_bad_input(database_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["--database-url", database_url, "serve", "--host", "not a host"]
    )

    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: cannot listen on 'not a host':8000: ")


# -- access lines ---------------------------------------------------------------

# werkzeug colours the request line of answers other than 200.
_STYLE = re.compile(r"\x1b\[[0-9;]*m")


def access_line(server: Server, request_line: str) -> str:
    """The server's one line about the request with this request line."""
    [line] = [
        line
        for line in server.log().splitlines()
        if f'"{request_line}"' in _STYLE.sub("", line)
    ]
    return line


@pytest.mark.parametrize(
    ("host", "path", "shown"),
    [
        pytest.param(
            "acme.localhost", "/?a", "acme.localhost:{port} tenant=acme", id="subdomain"
        ),
        pytest.param(
            "localhost", "/acme/?b", "localhost:{port} tenant=acme", id="path prefix"
        ),
        pytest.param(
            "nobody.localhost", "/?c", "nobody.localhost:{port} tenant=-", id="unknown"
        ),
        pytest.param("localhost", "/?d", "localhost:{port} tenant=-", id="no tenant"),
    ],
)
def test_each_access_line_names_the_host_and_the_tenant(
    served: Server, host: str, path: str, shown: str
) -> None:
    port = served.port
    status, _ = _get(port, path, f"{host}:{port}")

    line = _STYLE.sub("", access_line(served, f"GET {path} HTTP/1.1"))

    assert f'] {shown.format(port=port)} "GET {path} HTTP/1.1" {status} ' in line


def _raw(port: int, data: bytes) -> bytes:
    """Send ``data`` as is; what the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_a_host_with_control_characters_is_escaped(served: Server) -> None:
    # ESC (a screen-clearing sequence), BEL, C1's CSI, a backslash and a "%".
    host = b"\x1b[2J\x07evil\x9b31m\\%s.localhost"
    answer = _raw(
        served.port,
        b"GET /escaped HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n",
    )

    assert answer.startswith(b"HTTP/1.1 400 ")
    line = access_line(served, "GET /escaped HTTP/1.1")
    # Before werkzeug's own colouring of the request line: the Host, escaped.
    shown = line[line.index("] ") : line.index(' "')]
    assert shown == r"] \x1b[2J\x07evil\x9b31m\\%s.localhost tenant=-"


def test_a_malformed_request_names_no_host_nor_tenant(served: Server) -> None:
    answer = _raw(served.port, b"NONSENSE\r\n\r\n")

    assert b"Error code: 400" in answer  # an HTTP/0.9 answer: a body alone
    lines = [line for line in served.log().splitlines() if "NONSENSE" in line]
    assert lines
    assert all("] - tenant=- " in line for line in lines)


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        pytest.param("acme.localhost:5000", "acme.localhost:5000", id="plain"),
        pytest.param("a\nb\r", r"a\x0ab\x0d", id="line breaks"),
        pytest.param("\x1b[31m", r"\x1b[31m", id="escape"),
        pytest.param("\x7f\x85\x9f", r"\x7f\x85\x9f", id="DEL and C1"),
        pytest.param("a\\x1b", r"a\\x1b", id="a backslash cannot forge an escape"),
        pytest.param("café", "café", id="printable latin-1 kept"),
    ],
)
def test_escape(text: str, escaped: str) -> None:
    assert escape(text) == escaped


# -- what it says at start-up -------------------------------------------------------


def _start_up_lines(server: Server) -> list[str]:
    """The lines it printed before its first access line, without colour."""
    lines = []
    for line in _STYLE.sub("", server.log()).splitlines():
        if '"GET ' in line:
            break
        if line.strip():
            lines.append(line)
    return lines


def test_the_first_thing_it_prints_is_an_address_that_works(served: Server) -> None:
    port = served.port
    lines = _start_up_lines(served)

    assert lines[0] == "Open the tenants at:"
    assert lines[1].strip().startswith(f"http://localhost:{port}/ ")
    assert lines[2].strip().startswith(f"http://<subdomain>.localhost:{port}/ ")
    # werkzeug's "Running on http://127.0.0.1:PORT" names no tenant: a 404.
    assert not any("Running on" in line for line in lines)
    status, body = _get(port, "/", f"localhost:{port}")
    assert status == 200, body  # the default app: the demo's signup
    status, body = _get(port, "/", f"acme.localhost:{port}")
    assert "Hello from Acme" in body


def test_the_port_is_8000_by_default_as_the_readme_says() -> None:
    result = CliRunner().invoke(cli, ["serve", "--help"], terminal_width=100)

    assert re.search(
        r"--port PORT\s+TCP port to listen on.\s+\[default: 8000",
        result.stdout,
    )


@pytest.mark.parametrize(
    ("base_domain", "expected"),
    [
        pytest.param(
            "localhost",
            [
                "http://localhost:8000/ (and /<path prefix>/ of a tenant)",
                "http://<subdomain>.localhost:8000/ (a tenant by its subdomain)",
            ],
            id="localhost",
        ),
        pytest.param(
            None,
            ["http://[::1]:8000/ (tenants by their custom domains)"],
            id="no base domain",
        ),
    ],
)
def test_addresses(base_domain: str | None, expected: list[str]) -> None:
    assert addresses(base_domain, "::1", 8000) == expected
