"""The dispatcher's streams under real servers: what a client sees.

One server process of each kind per module, serving ``dispatcher.wsgi`` with
``streams_probe_app.py`` as the tenant app (tenant ``acme`` on
``acme.localhost``) and the demo signup site on the apex:

* gunicorn (sync and gthread workers) sends a ``send_file`` response through
  the dispatcher with sendfile: the file is never ``read()`` in Python.
* wsgiref, which sends Content-Length for a body of one chunk when it can take
  ``len()`` of it, still does through the dispatcher.
* A malformed request body, sent as raw bytes, gets 400 from gunicorn and from
  werkzeug's development server, never 500.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import uuid
from collections.abc import Iterator

import pytest
from servers import (
    REQUEST_TIMEOUT,
    TENANTCTL,
    TESTS,
    free_port,
    gunicorn_command,
    python_path,
    request,
    running,
)
from sqlalchemy import create_engine, make_url, text
from streams_probe_app import FILE_VARIABLE, SINGLE_CHUNK

from dispatcher import TenantRegistry

HOST = "acme.localhost"
FILE_SIZE = 300_000  # many of gunicorn's 8 KiB blocks, had it to read them

#: ``python -c`` serving the configured dispatcher with wsgiref's simple server.
WSGIREF = (
    "import sys; from wsgiref.simple_server import make_server; "
    "from dispatcher.wsgi import make_application; "
    "make_server('127.0.0.1', int(sys.argv[1]), make_application()).serve_forever()"
)


# -- one database and one server of each kind per module -----------------------


@pytest.fixture(scope="module")
def database(
    server_database_url: str | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated registry with tenant ``acme``: SQLite, or a PostgreSQL schema."""
    if server_database_url is None:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'registry.sqlite3'}"
        yield from _with_tenant(url)
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server_database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = make_url(server_database_url).update_query_dict(
            {"options": f"-csearch_path={schema}"}
        )
        yield from _with_tenant(url.render_as_string(hide_password=False))
    finally:
        with engine.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def _with_tenant(url: str) -> Iterator[str]:
    with TenantRegistry(url) as registry:
        registry.migrate()
        registry.create_tenant("acme", owner_email="owner@acme.test", subdomain="acme")
    yield url


@pytest.fixture(scope="module")
def blob(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return os.urandom(FILE_SIZE)


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest,
    database: str,
    blob: bytes,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[int]:
    """The port of a server of kind ``request.param`` (see ``_command``)."""
    kind: str = request.param
    tmp = tmp_path_factory.mktemp(kind)
    (tmp / "blob.bin").write_bytes(blob)
    port = free_port()
    env = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": database,
        "DISPATCHER_BASE_DOMAIN": "localhost",
        "DISPATCHER_APP_FACTORY": "streams_probe_app:create_app",
        "DISPATCHER_MIGRATE": "0",
        "PYTHONPATH": python_path(TESTS),
        FILE_VARIABLE: str(tmp / "blob.bin"),
    }
    command = _command(kind, port, database)
    log_path = tmp / "server.log"
    with running(command, port=port, env=env, log_path=log_path, cwd=tmp):
        yield port


def _command(kind: str, port: int, database: str) -> list[str]:
    if kind == "werkzeug":
        return [
            str(TENANTCTL),
            "--database-url",
            database,
            "serve",
            "--port",
            str(port),
        ]
    if kind == "wsgiref":
        return [sys.executable, "-c", WSGIREF, str(port)]
    command = gunicorn_command("dispatcher.wsgi:application", port=port, workers=1)
    if kind == "gunicorn-gthread":
        command[-1:-1] = ["--worker-class", "gthread", "--threads", "2"]
    return command


def _servers(*kinds: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize(
        "server", [pytest.param(kind, id=kind) for kind in kinds], indirect=True
    )


# -- D17: sendfile and Content-Length survive the dispatcher -------------------------


def _reads(port: int) -> int:
    answer = request(port, "/reads", host=HOST)
    assert answer.status == 200, answer
    reads: int = answer.json()["reads"]
    return reads


@_servers("gunicorn", "gunicorn-gthread")
def test_gunicorn_sends_a_file_response_with_sendfile(server: int, blob: bytes) -> None:
    before = _reads(server)
    connection = http.client.HTTPConnection(
        "127.0.0.1", server, timeout=REQUEST_TIMEOUT
    )
    try:
        connection.request("GET", "/file", headers={"Host": HOST})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert (response.status, len(body), body == blob) == (200, len(blob), True)
    # gunicorn reads the file in Python (8 KiB at a time) unless the body is
    # its own FileWrapper, which it hands to socket.sendfile.
    assert _reads(server) == before


@_servers("wsgiref")
def test_a_single_chunk_body_keeps_its_content_length(server: int) -> None:
    answer = request(server, "/single", host=HOST)
    assert (answer.status, answer.body) == (200, SINGLE_CHUNK.decode())
    # wsgiref adds it only if len(body) == 1.
    assert answer.headers["Content-Length"] == str(len(SINGLE_CHUNK))


# -- D19: a malformed request body is a 400 -------------------------------------------

FORM_HEADERS = (
    "Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n"
)


def _post(host: str, path: str, framing: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{FORM_HEADERS}{framing}\r\n\r\n"
    return head.encode() + body


CHUNKED = "Transfer-Encoding: chunked"

MALFORMED = [
    pytest.param(
        _post(HOST, "/form", CHUNKED, b"zz\r\na=1\r\n0\r\n\r\n"),
        id="tenant form, bad chunk size",
    ),
    pytest.param(
        _post(HOST, "/form", CHUNKED, b"10\r\na=1"),
        id="tenant form, chunk cut short",
    ),
    pytest.param(
        _post(HOST, "/form", CHUNKED, b"3\r\na=1XX0\r\n\r\n"),
        id="tenant form, chunk without CRLF",
    ),
    pytest.param(
        _post(HOST, "/form", "Content-Length: 100", b"a=1&b=2"),
        id="tenant form, shorter than its Content-Length",
    ),
    pytest.param(
        _post("localhost", "/", CHUNKED, b"zz\r\norganisation=x\r\n0\r\n\r\n"),
        id="signup on the apex, bad chunk size",
    ),
]


def _status(port: int, data: bytes) -> int:
    """The status of the answer to ``data``, sent raw, the client's side then shut."""
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)  # no more is coming: a short body ends here
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status_line = answer.partition(b"\r\n")[0]
    assert status_line.startswith(b"HTTP/1."), answer
    return int(status_line.split()[1])


@_servers("gunicorn", "werkzeug")
@pytest.mark.parametrize("data", MALFORMED)
def test_a_malformed_request_body_is_a_400(server: int, data: bytes) -> None:
    assert _status(server, data) == 400


@_servers("gunicorn", "werkzeug")
def test_a_well_formed_chunked_body_is_read_whole(server: int) -> None:
    data = _post(HOST, "/form", CHUNKED, b"3\r\na=1\r\n4\r\n&b=2\r\n0\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server), timeout=REQUEST_TIMEOUT) as s:
        s.sendall(data)
        response = http.client.HTTPResponse(s)
        response.begin()
        assert response.status == 200
        assert json.loads(response.read()) == {"fields": 2}
