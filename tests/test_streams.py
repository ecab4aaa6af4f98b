"""The streams the dispatcher wraps: response bodies and the request body.

Through :class:`TenantDispatcher`'s WSGI interface, called the way a server
calls it (the body is iterated and closed, or dropped), on both ways a body is
leased: the first request for a tenant (a cache miss) and the inlined hit path
of the next ones. Real servers are ``test_streams_servers.py``'s subject.

* A body a server dropped without ``close()`` releases its lease when it is
  collected, once, and ``stats().leaked_leases`` counts it.
* A body of the server's ``wsgi.file_wrapper`` type comes back as that type
  (servers use sendfile only for it), and a sized body keeps ``len()``.
* A request body the server cannot parse is a 400, not a 500.
"""

from __future__ import annotations

import gc
import io
import warnings
import wsgiref.util
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask, request, send_file
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.unreader import IterUnreader
from werkzeug.exceptions import ClientDisconnected
from werkzeug.serving import DechunkedInput
from werkzeug.test import EnvironBuilder, run_wsgi_app

from dispatcher import CachePolicy, TenantDispatcher, TenantRegistry
from dispatcher.streams import RequestBody, guard_input

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

BASE = "example.com"
HOST = f"acme.{BASE}"
FILE_BYTES = bytes(range(256)) * 64  # 16 KiB: two blocks of wsgiref's FileWrapper
SINGLE = b"a single chunk"
FORM = "application/x-www-form-urlencoded"


def create_app(file_path: Path) -> WSGIApplication:
    """A tenant app: a file, bodies of each shape, and a form reader."""
    app = Flask("streams")

    @app.get("/file")
    def file() -> object:
        return send_file(file_path, mimetype="application/octet-stream")

    @app.post("/form")
    def form() -> dict[str, object]:
        return {"fields": sorted(request.form)}

    def shapes(environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        path = environ.get("PATH_INFO")
        if path in ("/list", "/generator"):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [SINGLE] if path == "/list" else iter([SINGLE])
        return app(environ, start_response)

    return shapes


@pytest.fixture
def torn() -> list[str]:
    """The slugs of the apps torn down, in order."""
    return []


@pytest.fixture
def dispatcher(
    registry: TenantRegistry, torn: list[str], tmp_path: Path
) -> Iterator[TenantDispatcher]:
    file_path = tmp_path / "file.bin"
    file_path.write_bytes(FILE_BYTES)
    registry.create_tenant("acme", owner_email="owner@acme.test", subdomain="acme")
    dispatcher = TenantDispatcher(
        registry,
        lambda tenant: create_app(file_path),
        base_domain=BASE,
        teardown=lambda app, tenant: torn.append(tenant.slug),
        policy=CachePolicy(poll_interval=None),
    )
    yield dispatcher
    dispatcher.close()


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return None


def _environ(path: str = "/list", **extra: Any) -> WSGIEnvironment:
    environ = EnvironBuilder(path=path, headers={"Host": HOST}).get_environ()
    environ["wsgi.file_wrapper"] = wsgiref.util.FileWrapper
    environ.update(extra)
    return environ


def _drain(body: Iterable[bytes]) -> bytes:
    return b"".join(body)


#: A request served by the first lease of the tenant (cache miss, _serve) or by
#: the inlined hit path (its app built by an earlier, closed request).
PATHS = pytest.mark.parametrize(
    "warm",
    [pytest.param(False, id="miss"), pytest.param(True, id="hit")],
)


def _call(dispatcher: TenantDispatcher, warm: bool, path: str = "/list") -> Any:
    if warm:
        first = dispatcher(_environ(path), _start_response)
        _drain(first)
        first.close()  # type: ignore[attr-defined]
    return dispatcher(_environ(path), _start_response)


def _forget(bodies: list[Any], *, in_a_cycle: bool) -> None:
    """Drop the only references to ``bodies`` without close(), as a buggy server."""
    if in_a_cycle:
        cycle: list[Any] = [*bodies]
        cycle.append(cycle)  # only the cycle collector frees it
        del cycle
    with warnings.catch_warnings():
        # The file of a dropped file body is closed by its own finalizer.
        warnings.simplefilter("ignore", ResourceWarning)
        bodies.clear()
        gc.collect()


# -- B10: a dropped body releases its lease once ----------------------------------

BODIES = pytest.mark.parametrize(
    "path", [pytest.param("/list", id="list"), pytest.param("/file", id="file")]
)
CYCLE = pytest.mark.parametrize(
    "in_a_cycle",
    [pytest.param(False, id="refcount"), pytest.param(True, id="cycle")],
)


@PATHS
@BODIES
@CYCLE
def test_a_dropped_body_releases_its_lease_when_collected(
    dispatcher: TenantDispatcher,
    torn: list[str],
    warm: bool,
    path: str,
    in_a_cycle: bool,
) -> None:
    bodies = [_call(dispatcher, warm, path)]
    _drain(bodies[0])
    _forget(bodies, in_a_cycle=in_a_cycle)
    assert dispatcher.stats().leaked_leases == 1
    # No lease left: an eviction tears the app down at once.
    assert dispatcher.evict("acme")
    assert torn == ["acme"]


@PATHS
@BODIES
def test_an_app_evicted_under_a_dropped_body_is_torn_down_once_on_collection(
    dispatcher: TenantDispatcher, torn: list[str], warm: bool, path: str
) -> None:
    bodies = [_call(dispatcher, warm, path)]
    assert dispatcher.evict("acme")
    assert torn == []  # still in flight
    _forget(bodies, in_a_cycle=False)
    assert torn == ["acme"]
    gc.collect()
    assert torn == ["acme"]
    assert dispatcher.stats().leaked_leases == 1


@PATHS
@BODIES
def test_a_closed_then_collected_body_releases_its_lease_once(
    dispatcher: TenantDispatcher, torn: list[str], warm: bool, path: str
) -> None:
    body = _call(dispatcher, warm, path)
    other = dispatcher(_environ(path), _start_response)  # in flight throughout
    _drain(body)
    body.close()
    bodies = [body]
    del body
    _forget(bodies, in_a_cycle=False)
    assert dispatcher.evict("acme")
    # A second release of the closed body's lease would have ended other's.
    assert torn == []
    other.close()
    assert torn == ["acme"]
    assert dispatcher.stats().leaked_leases == 0


def test_closing_a_body_twice_releases_its_lease_once(
    dispatcher: TenantDispatcher, torn: list[str]
) -> None:
    body = _call(dispatcher, False)
    other = _call(dispatcher, True)
    body.close()
    body.close()
    assert dispatcher.evict("acme")
    assert torn == []
    other.close()
    assert torn == ["acme"]


# -- D17: the server's file wrapper and len() survive --------------------------------


@PATHS
def test_a_file_body_stays_the_servers_file_wrapper(
    dispatcher: TenantDispatcher, torn: list[str], warm: bool
) -> None:
    body = _call(dispatcher, warm, "/file")
    assert type(body) is wsgiref.util.FileWrapper
    assert body.blksize == 8192  # werkzeug's wrap_file asks for 8 KiB blocks
    assert body.filelike.fileno() >= 0  # sendfile needs the descriptor
    assert _drain(body) == FILE_BYTES
    assert dispatcher.evict("acme")
    assert torn == []
    body.close()
    assert body.filelike.closed
    assert torn == ["acme"]


def test_without_a_server_file_wrapper_a_file_body_is_leased_as_any_other(
    dispatcher: TenantDispatcher, torn: list[str]
) -> None:
    environ = _environ("/file")
    del environ["wsgi.file_wrapper"]  # werkzeug's dev server offers none
    body: Any = dispatcher(environ, _start_response)
    assert _drain(body) == FILE_BYTES
    assert dispatcher.evict("acme")
    assert torn == []
    body.close()
    assert torn == ["acme"]


@PATHS
def test_a_sized_body_keeps_its_length(
    dispatcher: TenantDispatcher, warm: bool
) -> None:
    body = _call(dispatcher, warm, "/list")
    # wsgiref, waitress and uWSGI send Content-Length when len(body) == 1.
    assert len(body) == 1
    assert _drain(body) == SINGLE
    body.close()


@PATHS
def test_an_unsized_body_has_no_length(
    dispatcher: TenantDispatcher, warm: bool
) -> None:
    body = _call(dispatcher, warm, "/generator")
    # waitress asks hasattr(body, "__len__") before calling len().
    assert not hasattr(body, "__len__")
    assert _drain(body) == SINGLE
    body.close()


# -- D19: an unreadable request body is a 400 -----------------------------------------


def _gunicorn_chunked(data: bytes) -> Body:
    """gunicorn's own reader of a chunked body, fed ``data``."""
    return Body(ChunkedReader(SimpleNamespace(), IterUnreader([data])))


def _post(
    dispatcher: TenantDispatcher,
    stream: Any,
    *,
    chunked: bool,
    content_length: int | None = None,
) -> tuple[str, bytes]:
    environ = _environ("/form", REQUEST_METHOD="POST", CONTENT_TYPE=FORM)
    environ["wsgi.input"] = stream
    environ["wsgi.input_terminated"] = True  # gunicorn's and (chunked) werkzeug's
    if chunked:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    if content_length is not None:
        environ["CONTENT_LENGTH"] = str(content_length)
    body, status, _headers = run_wsgi_app(dispatcher, environ)
    try:
        return status, b"".join(body)
    finally:
        body.close()  # type: ignore[attr-defined]


MALFORMED: list[Any] = [
    pytest.param(
        lambda: _gunicorn_chunked(b"zz\r\na=1\r\n0\r\n\r\n"),
        True,
        None,
        id="gunicorn, bad size",
    ),
    pytest.param(
        lambda: _gunicorn_chunked(b"10\r\na=1"),
        True,
        None,
        id="gunicorn, truncated chunk",
    ),
    pytest.param(
        lambda: _gunicorn_chunked(b"3\r\na=1XX0\r\n\r\n"),
        True,
        None,
        id="gunicorn, chunk without CRLF",
    ),
    pytest.param(
        lambda: Body(LengthReader(IterUnreader([b"a=1&b=2"]), 100)),
        False,
        100,
        id="gunicorn, shorter than Content-Length",
    ),
    pytest.param(
        lambda: DechunkedInput(io.BytesIO(b"zz\r\na=1\r\n0\r\n\r\n")),
        True,
        None,
        id="werkzeug, bad size",
    ),
    pytest.param(
        lambda: DechunkedInput(io.BytesIO(b"3\r\na=1XX0\r\n\r\n")),
        True,
        None,
        id="werkzeug, chunk without CRLF",
    ),
]


@PATHS
@pytest.mark.parametrize(("make_stream", "chunked", "content_length"), MALFORMED)
def test_a_malformed_request_body_is_a_400(
    dispatcher: TenantDispatcher,
    warm: bool,
    make_stream: Callable[[], Any],
    chunked: bool,
    content_length: int | None,
) -> None:
    if warm:
        _drain(_call(dispatcher, False))
    status, _ = _post(
        dispatcher, make_stream(), chunked=chunked, content_length=content_length
    )
    assert status.startswith("400 ")


WELL_FORMED: list[Any] = [
    pytest.param(
        lambda: _gunicorn_chunked(b"3\r\na=1\r\n4\r\n&b=2\r\n0\r\n\r\n"),
        True,
        None,
        id="gunicorn, chunked",
    ),
    pytest.param(
        lambda: Body(LengthReader(IterUnreader([b"a=1&b=2"]), 7)),
        False,
        7,
        id="gunicorn, Content-Length",
    ),
    pytest.param(
        lambda: DechunkedInput(io.BytesIO(b"3\r\na=1\r\n4\r\n&b=2\r\n0\r\n\r\n")),
        True,
        None,
        id="werkzeug, chunked",
    ),
]


@pytest.mark.parametrize(("make_stream", "chunked", "content_length"), WELL_FORMED)
def test_a_well_formed_request_body_is_read_whole(
    dispatcher: TenantDispatcher,
    make_stream: Callable[[], Any],
    chunked: bool,
    content_length: int | None,
) -> None:
    status, body = _post(
        dispatcher, make_stream(), chunked=chunked, content_length=content_length
    )
    assert (status, body) == ("200 OK", b'{"fields":["a","b"]}\n')


def test_a_request_without_a_body_keeps_the_servers_input(
    dispatcher: TenantDispatcher,
) -> None:
    seen: list[object] = []
    environ = _environ("/list")
    stream = environ["wsgi.input"]

    def spy(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        seen.append(environ["wsgi.input"])
        return dispatcher(environ, start_response)

    _drain(spy(environ, _start_response))
    assert seen == [stream]
    assert environ["wsgi.input"] is stream


# -- RequestBody on its own -----------------------------------------------------------


def test_a_read_with_a_bad_argument_is_the_apps_error_not_the_clients() -> None:
    body = RequestBody(_gunicorn_chunked(b"0\r\n\r\n"), None)
    with pytest.raises(TypeError):
        body.read("3")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(lambda body: body.read(), id="read()"),
        pytest.param(lambda body: body.read(-1), id="read(-1)"),
        pytest.param(lambda body: body.read(1024), id="read(1024)"),
        pytest.param(lambda body: body.readline(), id="readline()"),
        pytest.param(lambda body: body.readlines(), id="readlines()"),
        pytest.param(lambda body: list(body), id="iteration"),
    ],
)
def test_every_way_of_reading_stops_at_a_body_shorter_than_its_length(
    read: Callable[[RequestBody], object],
) -> None:
    body = RequestBody(io.BytesIO(b"a=1\nb=2"), 100)
    with pytest.raises(ClientDisconnected):
        # One call may return what did arrive; reading on must not end quietly.
        for _ in range(3):
            read(body)


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(lambda body: body.read(), id="read()"),
        pytest.param(
            lambda body: b"".join(iter(lambda: body.read(2), b"")), id="read(2)"
        ),
        pytest.param(lambda body: b"".join(body.readlines()), id="readlines()"),
        pytest.param(lambda body: b"".join(body), id="iteration"),
    ],
)
def test_a_body_of_its_length_reads_whole(read: Callable[[RequestBody], bytes]) -> None:
    assert read(RequestBody(io.BytesIO(b"a=1\nb=2"), 7)) == b"a=1\nb=2"


def _guarded(stream: Any, length: int | None = None) -> Any:
    environ: dict[str, Any] = {"wsgi.input": stream}
    if length is None:
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    else:
        environ["CONTENT_LENGTH"] = str(length)
    guard_input(environ)
    return environ["wsgi.input"]


def test_sizes_may_be_passed_by_keyword_as_to_the_servers_stream() -> None:
    body = _guarded(_gunicorn_chunked(b"3\r\na=1\r\n0\r\n\r\n"))
    assert body.read(size=2) == b"a="
    assert body.readline(size=5) == b"1"
    assert body.read(size=None) == b""


def test_readinto_is_offered_only_where_the_servers_stream_has_it() -> None:
    assert not hasattr(_guarded(_gunicorn_chunked(b"0\r\n\r\n")), "readinto")
    body = _guarded(io.BufferedReader(io.BytesIO(b"a=1&b=2")), 7)
    buffer = bytearray(16)
    assert body.readinto(buffer) == 7
    assert bytes(buffer[:7]) == b"a=1&b=2"


def test_readinto_turns_a_malformed_body_into_a_400() -> None:
    body = _guarded(DechunkedInput(io.BytesIO(b"zz\r\nbad\r\n")))
    with pytest.raises(ClientDisconnected):
        body.readinto(bytearray(16))
    short = _guarded(io.BufferedReader(io.BytesIO(b"a=1")), 10)
    buffer = bytearray(16)
    with pytest.raises(ClientDisconnected):
        while short.readinto(buffer):
            pass


def test_other_attributes_are_the_servers_streams(tmp_path: Path) -> None:
    path = tmp_path / "body"
    path.write_bytes(b"a=1")
    with path.open("rb") as file:
        body = _guarded(file, 3)
        assert body.fileno() == file.fileno()
        assert body.read() == b"a=1"
