"""Tenant and request id on log records: the filter, the id, and a real
dispatcher's lines and its tenant apps' lines, captured by a real handler.

Requests go through :class:`werkzeug.test.Client` to a
:class:`TenantDispatcher` on a real registry with real Flask tenant apps;
``caplog``'s handler carries a :class:`TenantLogFilter`, as a deployment's
handler would.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, Response, request, stream_with_context
from werkzeug.test import Client, EnvironBuilder, run_wsgi_app

from dispatcher import (
    CachePolicy,
    Provisioner,
    ProvisioningFailed,
    Tenant,
    TenantDispatcher,
    TenantRegistry,
)
from dispatcher.logs import REQUEST_ID_KEY, TenantLogFilter, request_id
from dispatcher.maintenance import BYPASS_PATH
from dispatcher.settings import trust_request_id

BASE = "example.com"
TRUST = "DISPATCHER_TRUST_REQUEST_ID"
HEX_ID = r"[0-9a-f]{32}"

log = logging.getLogger("tests.tenant_app")


# -- the request id -----------------------------------------------------------


def environ_with(header: str | None = None) -> dict[str, Any]:
    environ = EnvironBuilder("/").get_environ()
    if header is not None:
        # Set as a server would pass it on: werkzeug's builder refuses a
        # newline, a folded header can carry one.
        environ["HTTP_X_REQUEST_ID"] = header
    return environ


def is_generated(value: str) -> bool:
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def test_an_id_is_made_once_per_request_and_kept_in_its_environ() -> None:
    environ = environ_with()

    first = request_id(environ)

    assert is_generated(first)
    assert request_id(environ) == first
    assert environ[REQUEST_ID_KEY] == first
    assert request_id(environ_with()) != first


def test_the_header_is_ignored_unless_the_proxy_is_trusted() -> None:
    assert is_generated(request_id(environ_with("from-a-visitor")))
    assert request_id(environ_with("from-the-proxy"), trust_header=True) == (
        "from-the-proxy"
    )


def test_the_setting_says_whether_the_header_is_trusted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert is_generated(request_id(environ_with("abc")))
    monkeypatch.setenv(TRUST, "1")

    assert request_id(environ_with("abc")) == "abc"
    assert request_id(environ_with("abc"), trust_header=False) != "abc"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 129, id="too long"),
        pytest.param("abc\nERROR forged line", id="newline"),
        pytest.param("abc\r", id="carriage return"),
        pytest.param("\x1b[2Jabc", id="terminal escape"),
        pytest.param("a b", id="space"),
        pytest.param("a%(tenant)s", id="percent"),
        pytest.param('a"b', id="quote"),
        pytest.param("idé", id="not ascii"),
        pytest.param("one, two", id="two headers joined"),
    ],
)
def test_a_malformed_trusted_header_is_replaced_not_logged(header: str) -> None:
    made = request_id(environ_with(header), trust_header=True)

    assert is_generated(made)


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("a" * 128, id="128 characters"),
        pytest.param("0f8fad5b-d9cb-469f-a165-70867728950e", id="uuid"),
        pytest.param("Root=1-67891233-abcdef012345678912345678", id="aws trace"),
        pytest.param("aGVsbG8+/w==", id="base64"),
        pytest.param("svc.a_b:1", id="dots, underscore, colon"),
    ],
)
def test_a_well_formed_trusted_header_is_the_id(header: str) -> None:
    assert request_id(environ_with(header), trust_header=True) == header


@pytest.mark.parametrize(
    ("value", "trusted"),
    [("", False), ("0", False), ("no", False), ("1", True), (" true ", True)],
)
def test_trust_setting_values(value: str, trusted: bool) -> None:
    assert trust_request_id({TRUST: value}) is trusted


def test_a_bad_trust_setting_fails_when_the_filter_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TRUST, "maybe")

    with pytest.raises(ValueError, match=r"DISPATCHER_TRUST_REQUEST_ID='maybe'.* 1"):
        TenantLogFilter()


# -- the filter ---------------------------------------------------------------


def record(**extra: Any) -> logging.LogRecord:
    made = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    made.__dict__.update(extra)
    return made


def test_outside_a_request_both_are_a_dash() -> None:
    line = record()

    assert TenantLogFilter().filter(line) is True
    assert tag(line) == ("-", "-")


def test_what_a_record_carries_is_kept() -> None:
    line = record(tenant="acme", request_id="given")

    TenantLogFilter().filter(line)

    assert tag(line) == ("acme", "given")


def test_a_flask_request_not_dispatched_has_an_id_and_no_tenant() -> None:
    app = Flask(__name__)
    with app.test_request_context("/", headers={"X-Request-ID": "abc"}):
        line = record()
        TenantLogFilter().filter(line)

        tenant, made = tag(line)
        assert tenant == "-"
        assert is_generated(made)
        assert request_id(request.environ) == made


def test_a_format_string_names_both() -> None:
    line = record(tenant="acme", request_id="r1")
    formatter = logging.Formatter("[%(tenant)s %(request_id)s] %(message)s")

    assert formatter.format(line) == "[acme r1] hello"


def test_importing_it_loads_neither_flask_nor_the_dispatcher() -> None:
    probe = (
        "import json, sys, dispatcher.logs;"
        " print(json.dumps(sorted(m for m in sys.modules"
        " if m.split('.')[0] == 'flask' or m in"
        " ('dispatcher.middleware', 'dispatcher.context', 'sqlalchemy'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )

    assert json.loads(done.stdout) == []


# -- a real dispatcher --------------------------------------------------------


def create_app(tenant: Tenant) -> Any:
    """A Flask app logging one line per request; some tenants misbehave."""
    log.info("building")
    if tenant.slug == "broken":
        raise RuntimeError("create_app failed")
    if tenant.slug == "raw":
        return raising_wsgi_app
    app = Flask(f"tenant_{tenant.slug}")

    @app.get("/")
    def index() -> str:
        log.info("index of %s", tenant.slug)
        return tenant.slug

    @app.get("/quiet")
    def quiet() -> str:
        return "nothing logged"

    @app.get("/fail")
    def fail() -> str:
        raise RuntimeError(f"view of {tenant.slug} failed")

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[str]:
            log.info("streaming for %s", tenant.slug)
            yield "a"
            log.info("still streaming for %s", tenant.slug)
            yield "b"

        return Response(stream_with_context(chunks()))

    return app


def raising_wsgi_app(environ: Any, start_response: Any) -> Any:
    log.info("raw app called")
    raise RuntimeError("a WSGI app that raises")


@pytest.fixture
def tenants(registry: TenantRegistry) -> None:
    for slug in ("a", "b", "broken", "raw"):
        registry.create_tenant(slug, owner_email=f"o@{slug}.test", subdomain=slug)


@pytest.fixture
def make_dispatcher(
    registry: TenantRegistry, tenants: None
) -> Iterator[Callable[..., TenantDispatcher]]:
    made: list[TenantDispatcher] = []

    def make(**options: Any) -> TenantDispatcher:
        dispatcher = TenantDispatcher(registry, create_app, base_domain=BASE, **options)
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close()


@pytest.fixture
def client(make_dispatcher: Callable[..., TenantDispatcher]) -> Client:
    return Client(make_dispatcher())


@pytest.fixture
def records(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], list[logging.LogRecord]]:
    """What was logged so far (resetting), through a handler with the filter,
    in a deployment that trusts its proxy's X-Request-ID."""
    monkeypatch.setenv(TRUST, "1")
    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(TenantLogFilter())

    def taken() -> list[logging.LogRecord]:
        lines = list(caplog.records)
        caplog.clear()
        return lines

    return taken


def get(
    client: Client, slug: str, path: str = "/", rid: str | None = None
) -> tuple[int, str]:
    headers = {} if rid is None else {"X-Request-ID": rid}
    response = client.get(
        path, base_url=f"http://{slug}.{BASE}/", headers=headers, buffered=True
    )
    return response.status_code, response.get_data(as_text=True)


def tag(line: logging.LogRecord) -> tuple[str, str]:
    """What the filter gave the record: its tenant and its request id."""
    fields = vars(line)
    return fields["tenant"], fields["request_id"]


def tags(lines: list[logging.LogRecord]) -> set[tuple[str, str]]:
    return {tag(line) for line in lines}


def test_a_tenant_apps_lines_carry_its_slug_and_the_request_id(
    client: Client, records: Callable[[], list[logging.LogRecord]]
) -> None:
    assert get(client, "a", rid="miss-1") == (200, "a")  # built: the slow path
    building, index = records()
    # create_app's own line, before the tenant's app has a request.
    assert building.getMessage() == "building"
    assert tags([building, index]) == {("a", "miss-1")}
    assert get(client, "a", rid="hit-2") == (200, "a")  # cached: the hit path
    [line] = records()

    assert tag(line) == ("a", "hit-2")
    assert line.getMessage() == "index of a"


def test_without_a_trusted_header_each_request_gets_its_own_id(
    client: Client, records: Callable[[], list[logging.LogRecord]]
) -> None:
    get(client, "a")
    get(client, "a")
    ids = [tag(line)[1] for line in records() if line.getMessage() == "index of a"]

    assert len(ids) == 2 and ids[0] != ids[1]
    assert all(map(is_generated, ids))


def test_a_hit_that_logs_nothing_makes_no_id(
    make_dispatcher: Callable[..., TenantDispatcher],
    records: Callable[[], list[logging.LogRecord]],
) -> None:
    dispatcher = make_dispatcher()
    environs = [EnvironBuilder("/quiet", base_url=f"http://a.{BASE}/").get_environ()]
    environs.append(
        EnvironBuilder("/quiet", base_url=f"http://a.{BASE}/").get_environ()
    )
    for environ in environs:
        _, status, _ = run_wsgi_app(dispatcher, environ, buffered=True)
        assert status == "200 OK"

    assert dispatcher.stats().hits == 1
    assert REQUEST_ID_KEY not in environs[1]  # the hit
    assert REQUEST_ID_KEY not in environs[0]  # nor the miss, which logged nothing


def test_a_failed_build_is_logged_with_its_tenant_and_request(
    client: Client, records: Callable[[], list[logging.LogRecord]]
) -> None:
    status, _ = get(client, "broken", rid="build-1")

    assert status == 500
    [line] = [line for line in records() if line.exc_info]
    assert line.name == "dispatcher.cache"
    assert line.getMessage() == "building the app of tenant 'broken' failed"
    assert tag(line) == ("broken", "build-1")


def test_an_eviction_names_the_evicted_tenant_not_the_request_that_caused_it(
    make_dispatcher: Callable[..., TenantDispatcher],
    records: Callable[[], list[logging.LogRecord]],
) -> None:
    client = Client(make_dispatcher(policy=CachePolicy(max_apps=1)))
    get(client, "a", rid="first")
    records()

    get(client, "b", rid="second")  # no room for a
    [evicted] = [line for line in records() if line.getMessage().startswith("evicted")]

    assert evicted.getMessage() == "evicted the app of tenant 'a' (capacity)"
    # About a; made to happen by b's request.
    assert tag(evicted) == ("a", "second")


def test_an_eviction_outside_a_request_has_no_request_id(
    make_dispatcher: Callable[..., TenantDispatcher],
    records: Callable[[], list[logging.LogRecord]],
) -> None:
    dispatcher = make_dispatcher()
    get(Client(dispatcher), "a")
    records()

    assert dispatcher.evict("a")
    [line] = records()

    assert tag(line) == ("a", "-")


def test_a_failed_build_behind_the_maintenance_gate_names_its_tenant(
    registry: TenantRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
    records: Callable[[], list[logging.LogRecord]],
) -> None:
    _, token = registry.start_maintenance("broken")
    client = Client(make_dispatcher())
    status, _ = get(client, "broken", BYPASS_PATH + token)
    assert status == 303  # the cookie set: the next request bypasses
    records()

    status, _ = get(client, "broken", rid="bypass-1")

    assert status == 500
    lines = records()
    [line] = [line for line in lines if line.exc_info]
    assert line.name == "dispatcher.maintenance_gate"
    assert tag(line) == ("broken", "bypass-1")
    assert tags(lines) == {("broken", "bypass-1")}  # create_app's "building" too


# -- isolation: one thread, one request after another -------------------------


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/", id="answered"),
        pytest.param("/fail", id="the view raised"),
        pytest.param("/stream", id="streamed"),
    ],
)
def test_bs_lines_never_carry_as_slug_or_id(
    client: Client, records: Callable[[], list[logging.LogRecord]], path: str
) -> None:
    status, _ = get(client, "a", path, rid="id-of-a")  # a miss
    assert status in {200, 500}
    assert tags(records()) == {("a", "id-of-a")}
    status, _ = get(client, "a", path, rid="id-of-a")  # a hit
    assert tags(records()) == {("a", "id-of-a")}

    get(client, "b")  # a miss, with an id of its own
    get(client, "b")  # a hit
    lines = records()

    assert len(lines) == 3  # b's build, and one line per request
    assert {tag(line)[0] for line in lines} == {"b"}
    assert "id-of-a" not in {tag(line)[1] for line in lines}


def test_a_failed_build_leaves_nothing_behind(
    client: Client, records: Callable[[], list[logging.LogRecord]]
) -> None:
    get(client, "broken", rid="id-of-broken")
    records()

    get(client, "b")
    log.info("after both")
    lines = records()

    assert {tag(line)[0] for line in lines[:-1]} == {"b"}
    assert "id-of-broken" not in {tag(line)[1] for line in lines}
    assert tag(lines[-1]) == ("-", "-")


def test_an_exception_out_of_the_dispatcher_leaves_nothing_behind(
    client: Client, records: Callable[[], list[logging.LogRecord]]
) -> None:
    with pytest.raises(RuntimeError, match="a WSGI app that raises"):
        get(client, "raw", rid="id-of-raw")
    assert tags(records()) == {("raw", "id-of-raw")}

    log.info("outside any request")
    [line] = records()

    assert tag(line) == ("-", "-")


def test_a_streamed_body_read_after_the_dispatcher_returned_carries_its_request(
    make_dispatcher: Callable[..., TenantDispatcher],
    records: Callable[[], list[logging.LogRecord]],
) -> None:
    """As a server does: the body is read after the dispatcher returned, and
    finished (closed) before the thread serves another request. (Flask's
    stream_with_context keeps the request's context pushed until then.)"""
    dispatcher = make_dispatcher()
    a = EnvironBuilder("/stream", base_url=f"http://a.{BASE}/").get_environ()
    a["HTTP_X_REQUEST_ID"] = "id-of-a"
    body, status, _ = run_wsgi_app(dispatcher, a)
    assert status == "200 OK"
    assert b"".join(body) == b"ab"
    body.close()  # type: ignore[attr-defined]
    assert tags(records()) == {("a", "id-of-a")}

    get(Client(dispatcher), "b", rid="id-of-b")
    log.info("after both")
    lines = records()

    assert tags(lines[:-1]) == {("b", "id-of-b")}
    assert tag(lines[-1]) == ("-", "-")


def failing_teardown(app: Any, tenant: Tenant) -> None:
    raise RuntimeError("teardown failed")


def test_a_failed_teardown_names_its_tenant(
    make_dispatcher: Callable[..., TenantDispatcher],
    records: Callable[[], list[logging.LogRecord]],
) -> None:
    dispatcher = make_dispatcher(teardown=failing_teardown)
    get(Client(dispatcher), "a")
    get(Client(dispatcher), "b")
    records()

    dispatcher.evict("a")
    failed = [line for line in records() if "teardown" in line.getMessage()]

    assert [tag(line) for line in failed] == [("a", "-")]


def test_a_failed_provisioning_hook_names_its_tenant(
    registry: TenantRegistry, records: Callable[[], list[logging.LogRecord]]
) -> None:
    def refuse(tenant: Tenant) -> None:
        raise RuntimeError("no data for you")

    provisioner = Provisioner(registry, on_create=[refuse])
    with pytest.raises(ProvisioningFailed):
        provisioner.create("newco", owner_email="o@newco.test", subdomain="newco")
    failed = [line for line in records() if "hook" in line.getMessage()]

    assert failed and {tag(line) for line in failed} == {("newco", "-")}
