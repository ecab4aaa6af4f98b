"""TenantDispatcher through its WSGI interface, against a real registry.

Every request goes through :class:`werkzeug.test.Client` (or, where the environ
itself is the point, :func:`werkzeug.test.run_wsgi_app`). Tenant apps are real
Flask apps from :func:`create_app` below; the pure parsing behind the routing is
unit-tested in ``test_resolve.py``, each resolver's match in ``test_routes.py``.
"""

from __future__ import annotations

import gc
import json
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import pytest
from flask import Flask, current_app, request, url_for
from forking import held_by_another_thread, run_in_child
from helpers import with_policy
from sqlalchemy import create_engine, event, text
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client, EnvironBuilder, TestResponse, run_wsgi_app
from werkzeug.wrappers import Request, Response

from dispatcher import (
    HeaderResolver,
    HostResolver,
    Tenant,
    TenantDispatcher,
    TenantRegistry,
    current_tenant,
    forks,
    standard_resolvers,
)
from dispatcher.changes import Names, Operation, TenantChange
from dispatcher.routes import HostKey, Match, RouteKey, TenantFinder

BASE = "example.com"

#: A name of 254 characters: one more than DNS allows.
NAME_254 = ".".join(["a" * 63] * 3 + ["b" * 62])

App = Callable[..., Any]


class CountingRegistry(TenantRegistry):
    """A real registry that records the tenant lookups made through it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Every lookup, as (method name, arguments...).
        self.lookups: list[tuple[str, ...]] = []

    def clear(self) -> None:
        self.lookups.clear()

    @property
    def hosts(self) -> list[str]:
        """The names looked up as custom domains."""
        return [call[1] for call in self.lookups if call[0].startswith("find_by_host")]

    @property
    def labels(self) -> list[str]:
        """The labels looked up as subdomains."""
        return [call[-1] for call in self.lookups if call[0].endswith("subdomain")]

    @property
    def prefixes(self) -> list[str]:
        """The first path segments looked up as path prefixes."""
        return [call[1] for call in self.lookups if call[0] == "find_by_path_prefix"]

    @property
    def slugs(self) -> list[str]:
        """The slugs looked up (as a header names them)."""
        return [call[1] for call in self.lookups if call[0] == "find_by_slug"]

    def find_by_slug(self, slug: str) -> Tenant | None:
        self.lookups.append(("find_by_slug", slug))
        return super().find_by_slug(slug)

    def find_by_host(self, host: str) -> Tenant | None:
        self.lookups.append(("find_by_host", host))
        return super().find_by_host(host)

    def find_by_subdomain(self, label: str) -> Tenant | None:
        self.lookups.append(("find_by_subdomain", label))
        return super().find_by_subdomain(label)

    def find_by_host_or_subdomain(self, host: str, label: str) -> Tenant | None:
        # The dispatcher may ask for both in one statement.
        self.lookups.append(("find_by_host_or_subdomain", host, label))
        return super().find_by_host_or_subdomain(host, label)

    def find_by_path_prefix(self, prefix: str) -> Tenant | None:
        self.lookups.append(("find_by_path_prefix", prefix))
        return super().find_by_path_prefix(prefix)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- fixtures -------------------------------------------------------------------


@pytest.fixture
def registry(registry: TenantRegistry) -> Iterator[CountingRegistry]:
    """conftest's migrated registry, seen through a subclass that counts lookups.

    It shares the engine; tenants are written through this object, so its
    in-process change notification reaches the dispatchers built on it.
    Closed before conftest's registry disposes the shared engine, so its
    change follower stops first.
    """
    counting = CountingRegistry(registry.engine)
    yield counting
    counting.close()


#: The tenants every test starts with, written in one transaction.
TENANTS: list[dict[str, Any]] = [
    {
        "slug": "acme",
        "subdomain": "acme",
        "path_prefix": "acme",
        "domains": ["shop.acme.test"],
        "config": {"greeting": "Hello from Acme"},
    },
    {
        "slug": "beta",
        "subdomain": "beta",
        "path_prefix": "beta",
        "config": {"greeting": "Hello from Beta"},
    },
    # A custom domain under the base domain, and the subdomain it also spells.
    {"slug": "alpha", "domains": ["b.example.com"]},
    {"slug": "bravo", "subdomain": "b"},
    {"slug": "deep", "domains": ["a.b.example.com"]},
    {"slug": "evil", "subdomain": "evil"},
    # A path prefix that the "/shop" mount of test_mounts_next_to_tenants shadows.
    {"slug": "shopco", "path_prefix": "shop"},
]


@pytest.fixture
def tenants(registry: CountingRegistry) -> dict[str, Tenant]:
    """The snapshots of :data:`TENANTS`, by slug."""
    specs = [
        registry.new_tenant(owner_email=f"owner@{spec['slug']}.test", **spec)
        for spec in TENANTS
    ]
    results = list(registry.import_tenants(specs))
    assert all(result.error is None for result in results)
    created = {tenant.slug: tenant for tenant in registry.list_tenants()}
    registry.clear()
    return created


@pytest.fixture
def statements(
    registry: CountingRegistry, tenants: dict[str, Tenant]
) -> Iterator[list[str]]:
    """Every SQL statement sent to the database after :func:`tenants` seeded it."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(registry.engine, "before_cursor_execute", record)
    yield seen
    event.remove(registry.engine, "before_cursor_execute", record)


@pytest.fixture
def built() -> list[Tenant]:
    """Every tenant :func:`create_app` was called with, in call order."""
    return []


@pytest.fixture
def create_app(built: list[Tenant]) -> Callable[[Tenant], Flask]:
    def create_app(tenant: Tenant) -> Flask:
        built.append(tenant)
        app = Flask(__name__)
        app.config.update(TESTING=True, GREETING=tenant.config.get("greeting"))

        def describe() -> dict[str, Any]:
            environ_tenant = request.environ["dispatcher.tenant"]
            return {
                "tenant": current_tenant.slug,
                "environ_tenant": environ_tenant.slug,
                "environ_tenant_type": type(environ_tenant).__name__,
                "version": environ_tenant.version,
                "path": request.path,
                "host": request.host,
                "script_root": request.script_root,
                "index_url": url_for("index"),
                "greeting": current_app.config["GREETING"],
            }

        @app.route("/")
        def index() -> dict[str, Any]:
            return describe()

        @app.route("/<path:rest>")
        def anything(rest: str) -> dict[str, Any]:
            return describe()

        return app

    return create_app


@pytest.fixture
def make_dispatcher(
    registry: CountingRegistry, create_app: Callable[[Tenant], Flask]
) -> Iterator[Callable[..., TenantDispatcher]]:
    """Build a dispatcher on the counting registry; options override defaults."""
    made: list[TenantDispatcher] = []

    def make(**options: Any) -> TenantDispatcher:
        options.setdefault("base_domain", BASE)
        options.setdefault("path_routing", True)
        factory = options.pop("create_app", create_app)
        dispatcher = TenantDispatcher(registry, factory, **with_policy(options))
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close()


@pytest.fixture
def client(
    make_dispatcher: Callable[..., TenantDispatcher], tenants: dict[str, Tenant]
) -> Client:
    return Client(make_dispatcher())


def fetch(client: Client, host: str, path: str = "/", **environ: Any) -> TestResponse:
    """GET with this raw Host header and raw PATH_INFO (latin-1 text of bytes).

    Buffered, so the response is closed (and its app's lease released) at once.
    """
    return client.get(
        "/",
        environ_overrides={"HTTP_HOST": host, "PATH_INFO": path, **environ},
        buffered=True,
    )


def call(app: App, environ: dict[str, Any]) -> Response:
    """Run ``app`` on exactly this environ, without the test client rebuilding it."""
    body, status, headers = run_wsgi_app(app, environ, buffered=True)
    return Response(body, status, headers)


def echo_app(name: str) -> App:
    """A plain WSGI app that says who it is and how it was mounted."""

    @Request.application
    def app(req: Request) -> Response:
        tenant = req.environ.get("dispatcher.tenant")
        body = {
            "app": name,
            "script_name": req.environ.get("SCRIPT_NAME", ""),
            "path_info": req.environ.get("PATH_INFO", ""),
            "tenant": None if tenant is None else tenant.slug,
        }
        return Response(json.dumps(body), mimetype="application/json")

    return app


# -- resolution order -----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        pytest.param("shop.acme.test", "/", ("acme", "/", ""), id="custom-domain"),
        pytest.param("SHOP.Acme.TEST", "/", ("acme", "/", ""), id="custom-upper"),
        pytest.param("shop.acme.test:8443", "/", ("acme", "/", ""), id="custom-port"),
        pytest.param("shop.acme.test.", "/", ("acme", "/", ""), id="custom-dot"),
        pytest.param(
            "Shop.Acme.Test.:8080", "/x", ("acme", "/x", ""), id="custom-dot-port"
        ),
        pytest.param("acme.example.com", "/", ("acme", "/", ""), id="subdomain"),
        pytest.param(
            "ACME.Example.COM:8000", "/", ("acme", "/", ""), id="subdomain-upper-port"
        ),
        pytest.param("acme.example.com.", "/", ("acme", "/", ""), id="subdomain-dot"),
        pytest.param("beta.example.com", "/x/y", ("beta", "/x/y", ""), id="other"),
        pytest.param("b.example.com", "/", ("alpha", "/", ""), id="custom-wins"),
        pytest.param("a.b.example.com", "/", ("deep", "/", ""), id="deep-custom"),
        pytest.param("example.com", "/acme/x", ("acme", "/x", "/acme"), id="path"),
        pytest.param("example.com", "/acme/", ("acme", "/", "/acme"), id="path-root"),
        pytest.param(
            "www.example.com", "/beta/x/", ("beta", "/x/", "/beta"), id="path-on-www"
        ),
        pytest.param(
            "acme.example.com", "/beta/", ("acme", "/beta/", ""), id="host-over-path"
        ),
        pytest.param(
            "shop.acme.test", "/beta/x", ("acme", "/beta/x", ""), id="custom-over-path"
        ),
        pytest.param("example.com", "/", None, id="apex"),
        pytest.param("www.example.com", "/", None, id="www"),
        pytest.param("WWW.Example.Com.:80", "/", None, id="www-spelt-oddly"),
        pytest.param("evilexample.com", "/", None, id="no-dot-boundary"),
        pytest.param("evil.example.com.attacker.test", "/", None, id="base-inside"),
        pytest.param("x.acme.example.com", "/", None, id="multi-label"),
        pytest.param("unknown.example.com", "/", None, id="unknown-subdomain"),
        pytest.param("acme.test", "/", None, id="custom-parent"),
        pytest.param("127.0.0.1:5000", "/", None, id="ipv4"),
        pytest.param("[::1]:8080", "/", None, id="ipv6"),
        pytest.param("example.com", "/nosuch/x", None, id="unknown-path"),
        pytest.param("example.com", "/" + "a" * 63 + "/", None, id="path-63"),
        pytest.param(
            "Example.COM.:8000", "/acme/", ("acme", "/", "/acme"), id="path-apex-port"
        ),
        # Path routing answers on the apex only: any other host that names no
        # tenant must not reach a tenant, or its links would point there.
        pytest.param("attacker.test", "/acme/x", None, id="path-on-foreign-host"),
        pytest.param("attacker.test:8000", "/acme/", None, id="path-on-foreign-port"),
        pytest.param("unknown.example.com", "/acme/", None, id="path-on-unknown-sub"),
        pytest.param("x.www.example.com", "/acme/", None, id="path-under-www"),
        pytest.param("evilexample.com", "/acme/", None, id="path-no-dot-boundary"),
        pytest.param("127.0.0.1:8000", "/acme/", None, id="path-on-ipv4"),
        pytest.param("[::1]", "/acme/", None, id="path-on-ipv6"),
    ],
)
def test_resolution(
    client: Client,
    host: str,
    path: str,
    expected: tuple[str, str, str] | None,
) -> None:
    response = fetch(client, host, path)
    if expected is None:
        assert response.status_code == 404
        return
    slug, tenant_path, script_root = expected
    assert response.status_code == 200
    data = response.get_json()
    assert data["tenant"] == slug
    assert data["path"] == tenant_path
    assert data["script_root"] == script_root
    assert data["index_url"] == script_root + "/"


@pytest.mark.parametrize(
    ("host", "hosts", "labels"),
    [
        pytest.param("example.com", [], [], id="apex"),
        pytest.param("www.example.com", [], [], id="www"),
        pytest.param("192.0.2.1", [], [], id="ipv4"),
        pytest.param("[2001:db8::1]", [], [], id="ipv6"),
        pytest.param("evilexample.com", ["evilexample.com"], [], id="evil"),
        pytest.param(
            "x.evil.example.com", ["x.evil.example.com"], [], id="multi-label"
        ),
        pytest.param("shop.acme.test:8443", ["shop.acme.test"], [], id="custom-domain"),
        pytest.param(
            "Evil.Example.Com.", ["evil.example.com"], ["evil"], id="subdomain"
        ),
    ],
)
def test_lookups_made_for_host(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    statements: list[str],
    tenants: dict[str, Tenant],
    host: str,
    hosts: list[str],
    labels: list[str],
) -> None:
    """The apex, www and IPs query nothing; a name is looked up as a custom
    domain, and as a subdomain only if it is one label under the base domain."""
    client = Client(make_dispatcher(path_routing=False))
    fetch(client, host)
    assert registry.hosts == hosts
    assert registry.labels == labels
    if not hosts:
        assert statements == []


def test_custom_domain_wins_over_subdomain(
    client: Client, registry: CountingRegistry
) -> None:
    """alpha owns the custom domain b.example.com; bravo the subdomain "b"."""
    for host in ["b.example.com", "B.EXAMPLE.COM:81", "b.example.com."]:
        assert fetch(client, host).get_json()["tenant"] == "alpha"
    # Once the custom domain is gone, the same host is bravo's subdomain.
    registry.remove_domain("alpha", "b.example.com")
    assert fetch(client, "b.example.com").get_json()["tenant"] == "bravo"


def test_path_routing_keeps_existing_script_name(client: Client) -> None:
    response = fetch(client, "example.com", "/acme/x", SCRIPT_NAME="/mnt")
    assert response.status_code == 200
    data = response.get_json()
    assert data["tenant"] == "acme"
    assert data["path"] == "/x"
    assert data["script_root"] == "/mnt/acme"
    assert data["index_url"] == "/mnt/acme/"


def test_path_routing_bare_prefix_redirects_inside_tenant(client: Client) -> None:
    """``/acme`` reaches the tenant with an empty PATH_INFO; Flask adds the slash."""
    response = fetch(client, "example.com", "/acme")
    assert response.status_code == 308
    assert response.location.endswith("/acme/")


def test_path_routing_off(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    tenants: dict[str, Tenant],
) -> None:
    client = Client(make_dispatcher(path_routing=False))
    assert fetch(client, "example.com", "/acme/").status_code == 404
    assert fetch(client, "example.com", "/acme/x").status_code == 404
    assert registry.lookups == []  # not even for the path prefix
    # Host routing still works.
    assert fetch(client, "acme.example.com", "/x").get_json()["path"] == "/x"


def test_without_base_domain_subdomains_are_not_routed(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    tenants: dict[str, Tenant],
) -> None:
    client = Client(
        make_dispatcher(base_domain=None, path_routing_hosts=["example.com"])
    )
    assert fetch(client, "acme.example.com").status_code == 404
    assert registry.hosts == ["acme.example.com"]
    assert registry.labels == []
    assert fetch(client, "shop.acme.test").get_json()["tenant"] == "acme"
    assert fetch(client, "example.com", "/beta/").get_json()["tenant"] == "beta"


@pytest.mark.parametrize(
    ("hosts", "host", "routed"),
    [
        pytest.param(["app.test"], "app.test", True, id="listed"),
        pytest.param(["App.Test."], "APP.test:8443", True, id="listed-spelt-oddly"),
        pytest.param(["localhost"], "localhost:5000", True, id="localhost-port"),
        pytest.param(["127.0.0.1"], "127.0.0.1:8000", True, id="ipv4"),
        pytest.param(["[::1]"], "[::1]:8000", True, id="ipv6"),
        pytest.param(["app.test"], "example.com", True, id="apex-still"),
        pytest.param(["app.test"], "www.example.com", True, id="www-still"),
        pytest.param(["app.test"], "x.app.test", False, id="under-listed"),
        pytest.param(["app.test"], "attacker.test", False, id="unlisted"),
        pytest.param(["localhost"], "127.0.0.1", False, id="ip-unlisted"),
    ],
)
def test_path_routing_hosts(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    tenants: dict[str, Tenant],
    hosts: list[str],
    host: str,
    routed: bool,
) -> None:
    client = Client(make_dispatcher(path_routing_hosts=hosts))
    response = fetch(client, host, "/beta/x")
    if not routed:
        assert response.status_code == 404
        return
    assert response.get_json()["tenant"] == "beta"
    # The operator's own host names no tenant: only the path is looked up.
    assert registry.hosts == []
    assert registry.prefixes == ["beta"]


def test_path_routing_hosts_without_base_domain(
    make_dispatcher: Callable[..., TenantDispatcher], tenants: dict[str, Tenant]
) -> None:
    client = Client(make_dispatcher(base_domain=None, path_routing_hosts=["app.test"]))
    assert fetch(client, "app.test", "/acme/").get_json()["tenant"] == "acme"
    assert fetch(client, "example.com", "/acme/").status_code == 404
    # Custom domains are still served, and still win over the path.
    assert fetch(client, "shop.acme.test", "/beta/").get_json()["tenant"] == "acme"


def test_unknown_is_remembered_until_a_tenant_is_created(
    client: Client, registry: CountingRegistry
) -> None:
    assert fetch(client, "new.example.com").status_code == 404
    assert fetch(client, "new.example.com").status_code == 404
    # Looked up once, then remembered as unknown.
    assert registry.hosts == ["new.example.com"]
    assert registry.labels == ["new"]

    registry.create_tenant("new", owner_email="owner@new.test", subdomain="new")
    assert fetch(client, "new.example.com").get_json()["tenant"] == "new"


# -- bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("a@b.com", id="userinfo"),
        pytest.param("owner@acme.example.com", id="userinfo-tenant"),
        pytest.param("acme .example.com", id="space"),
        pytest.param("acme.example.com\t", id="tab"),
        pytest.param("acme.example.com\r\nX-Injected: 1", id="crlf"),
        pytest.param("acme.example.com\x00", id="nul"),
        pytest.param("acme.example.com,shop.acme.test", id="comma"),
        pytest.param("ac_me.example.com", id="underscore"),
        pytest.param("acme..example.com", id="empty-label"),
        pytest.param("acme.example.com..", id="two-trailing-dots"),
        pytest.param("a" * 64 + ".example.com", id="label-64"),
        pytest.param(NAME_254, id="name-254"),
        pytest.param("a" * 2000 + ".example.com", id="name-2000"),
        pytest.param("acme.example.com:0", id="port-0"),
        pytest.param("acme.example.com:65536", id="port-65536"),
        pytest.param("acme.example.com:abc", id="port-abc"),
        pytest.param("acme.example.com:080", id="port-leading-zero"),
        pytest.param("b\xfccher.de", id="non-ascii"),
        pytest.param("::1", id="bare-ipv6"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_host_is_400_without_queries(
    client: Client,
    registry: CountingRegistry,
    statements: list[str],
    host: str,
) -> None:
    """A malformed Host is refused before the cache or the database, even when
    the path alone would name a tenant."""
    response = fetch(client, host, "/acme/x")
    assert response.status_code == 400
    assert b"invalid Host" in response.data
    assert registry.lookups == []
    assert statements == []


def test_bad_host_is_escaped_in_the_answer(client: Client) -> None:
    response = fetch(client, "<script>alert(1)</script>.example.com")
    assert response.status_code == 400
    assert b"<script>" not in response.data
    assert b"&lt;script&gt;" in response.data


def test_bad_host_is_not_memoised(client: Client) -> None:
    """A refused Host stays refused (the routing memo takes only valid hosts)."""
    for _ in range(2):
        assert fetch(client, "acme.example.com:0").status_code == 400


@pytest.fixture
def environ_without_host() -> dict[str, Any]:
    """A complete environ for acme.example.com/x, minus its Host header."""
    builder = EnvironBuilder("/x", base_url="http://acme.example.com/")
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    del environ["HTTP_HOST"]
    return environ


@pytest.mark.parametrize(
    "protocol",
    [
        pytest.param("HTTP/1.1", id="http-1.1"),
        pytest.param("HTTP/2", id="http-2"),
        pytest.param("HTTP/9.9", id="made-up"),
    ],
)
def test_missing_host_is_400(
    client: Client,
    registry: CountingRegistry,
    statements: list[str],
    environ_without_host: dict[str, Any],
    protocol: str,
) -> None:
    environ_without_host["SERVER_PROTOCOL"] = protocol
    response = call(client.application, environ_without_host)
    assert response.status_code == 400
    assert b"Host header is required" in response.data
    assert registry.lookups == []
    assert statements == []


@pytest.mark.parametrize(
    ("server_port", "scheme"),
    [
        pytest.param("80", "http", id="default-port"),
        pytest.param("8080", "http", id="other-port"),
        pytest.param("443", "https", id="https"),
    ],
)
def test_http_1_0_without_host_uses_server_name(
    client: Client,
    environ_without_host: dict[str, Any],
    server_port: str,
    scheme: str,
) -> None:
    environ_without_host.update(
        SERVER_PROTOCOL="HTTP/1.0",
        SERVER_PORT=server_port,
        **{"wsgi.url_scheme": scheme},
    )
    response = call(client.application, environ_without_host)
    assert response.status_code == 200
    data = json.loads(response.get_data())
    assert (data["tenant"], data["path"]) == ("acme", "/x")


def test_http_1_0_without_host_or_server_name_is_400(
    client: Client, environ_without_host: dict[str, Any]
) -> None:
    environ_without_host.update(SERVER_PROTOCOL="HTTP/1.0", SERVER_NAME="")
    assert call(client.application, environ_without_host).status_code == 400


# -- absolute-form request targets ----------------------------------------------


def _absolute_form(
    host: str | None, target: str, path: str, variable: str = "RAW_URI"
) -> dict[str, Any]:
    """The environ gunicorn makes of ``GET <target>`` with this Host header:
    RAW_URI is the target as sent, PATH_INFO its path (uWSGI: REQUEST_URI)."""
    builder = EnvironBuilder(path, base_url="http://placeholder.test/")
    try:
        environ = builder.get_environ()
    finally:
        builder.close()
    del environ["HTTP_HOST"]
    if host is not None:
        environ["HTTP_HOST"] = host
    for name in ("RAW_URI", "REQUEST_URI"):  # EnvironBuilder sets both
        environ.pop(name, None)
    environ[variable] = target
    return environ


@pytest.mark.parametrize(
    ("host", "target", "path", "expected"),
    [
        pytest.param(
            "beta.example.com",
            "http://acme.example.com/x",
            "/x",
            ("acme", "/x", "", "acme.example.com"),
            id="target-over-host",
        ),
        pytest.param(
            "attacker.test",
            "http://Example.COM:8000/acme/x",
            "/acme/x",
            ("acme", "/x", "/acme", "Example.COM:8000"),
            id="path-routed-on-target-host",
        ),
        pytest.param(
            "example.com",
            "http://attacker.test/acme/x",
            "/acme/x",
            None,
            id="foreign-target-host",
        ),
        pytest.param(
            "beta.example.com",
            "/x",
            "/x",
            ("beta", "/x", "", "beta.example.com"),
            id="origin-form",
        ),
        pytest.param(
            None,
            "http://shop.acme.test/x",
            "/x",
            ("acme", "/x", "", "shop.acme.test"),
            id="no-host-header",
        ),
    ],
)
@pytest.mark.parametrize("variable", ["RAW_URI", "REQUEST_URI"])
def test_absolute_form_target_wins_over_host(
    client: Client,
    host: str | None,
    target: str,
    path: str,
    expected: tuple[str, str, str, str] | None,
    variable: str,
) -> None:
    """RFC 9112 section 3.2.2: the host in an absolute-form target wins, also
    for a Host whose tenant is hot, and the tenant app sees that host."""
    assert fetch(client, "beta.example.com").status_code == 200  # hot
    environ = _absolute_form(host, target, path, variable)
    response = call(client.application, environ)
    if expected is None:
        assert response.status_code == 404
        return
    assert response.status_code == 200
    data = json.loads(response.get_data())
    assert (data["tenant"], data["path"], data["script_root"], data["host"]) == (
        expected
    )


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("http:///x", id="empty-host"),
        pytest.param("http://owner@acme.example.com/x", id="userinfo"),
        pytest.param("http://acme.example.com:0/x", id="port-0"),
    ],
)
def test_bad_absolute_form_target_is_400(
    client: Client,
    registry: CountingRegistry,
    statements: list[str],
    target: str,
) -> None:
    assert fetch(client, "acme.example.com").status_code == 200  # hot
    statements.clear()
    response = call(
        client.application, _absolute_form("acme.example.com", target, "/x")
    )
    assert response.status_code == 400
    assert b"invalid Host" in response.data
    assert statements == []


# -- odd paths ------------------------------------------------------------------

ODD_PATHS = [
    pytest.param("//acme/x", id="double-slash"),
    pytest.param("/./acme", id="dot-segment"),
    pytest.param("/../acme/x", id="dot-dot"),
    pytest.param("/%2e%2e/", id="encoded-dot-dot"),
    pytest.param("/../", id="decoded-dot-dot"),
    pytest.param("/ac\x00me/x", id="nul-inside"),
    pytest.param("/" + "a" * 10240, id="segment-10k"),
    pytest.param("/" + "a" * 64 + "/", id="segment-64"),
    pytest.param("/\xff\xfe/x", id="invalid-utf-8"),
    pytest.param("/acm\xc3\xa9/", id="utf-8-letter"),
    pytest.param("/ACME/x", id="upper-case"),
    pytest.param("", id="empty"),
    pytest.param("acme/x", id="no-leading-slash"),
]


@pytest.mark.parametrize("path", ODD_PATHS)
def test_odd_path_names_no_tenant(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    statements: list[str],
    path: str,
) -> None:
    """Never routed, never looked up, never a 500: a 404, or the default app."""
    response = fetch(Client(make_dispatcher()), "example.com", path)
    assert response.status_code == 404
    assert registry.lookups == []
    assert statements == []

    client = Client(make_dispatcher(default_app=echo_app("default")))
    response = fetch(client, "www.example.com", path, SCRIPT_NAME="/mnt")
    assert response.status_code == 200
    assert response.get_json() == {
        "app": "default",
        "script_name": "/mnt",
        "path_info": path,
        "tenant": None,
    }


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/acme/\xff\xfe", id="invalid-utf-8"),
        pytest.param("/acme//x", id="double-slash"),
        pytest.param("/acme/../beta/", id="dot-dot"),
        pytest.param("/acme/\x00", id="nul"),
        pytest.param("/acme/" + "a" * 10240, id="segment-10k"),
    ],
)
def test_odd_path_inside_tenant_is_the_tenants_business(
    client: Client, path: str
) -> None:
    response = fetch(client, "example.com", path)
    assert response.status_code == 200
    data = response.get_json()
    assert (data["tenant"], data["script_root"]) == ("acme", "/acme")


# -- default app ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "path"),
    [
        pytest.param("example.com", "/", id="apex"),
        pytest.param("www.example.com", "/about", id="www"),
        pytest.param("unknown.example.com", "/", id="unknown-subdomain"),
        pytest.param("x.acme.example.com", "/", id="multi-label"),
        pytest.param("evilexample.com", "/", id="no-dot-boundary"),
        pytest.param("example.com", "/nosuch/x", id="unknown-path"),
        pytest.param("127.0.0.1", "/", id="ip"),
        pytest.param("attacker.test", "/acme/x", id="path-on-foreign-host"),
    ],
)
def test_default_app_gets_unmatched_requests(
    make_dispatcher: Callable[..., TenantDispatcher],
    tenants: dict[str, Tenant],
    host: str,
    path: str,
) -> None:
    client = Client(make_dispatcher(default_app=echo_app("default")))
    response = fetch(client, host, path)
    assert response.status_code == 200
    assert response.get_json() == {
        "app": "default",
        "script_name": "",
        "path_info": path,
        "tenant": None,
    }
    # Without one, the same request is a 404.
    assert fetch(Client(make_dispatcher()), host, path).status_code == 404


def test_default_app_does_not_get_tenant_or_bad_requests(
    make_dispatcher: Callable[..., TenantDispatcher], tenants: dict[str, Tenant]
) -> None:
    client = Client(make_dispatcher(default_app=echo_app("default")))
    assert fetch(client, "acme.example.com").get_json()["tenant"] == "acme"
    assert fetch(client, "example.com", "/beta/").get_json()["tenant"] == "beta"
    assert fetch(client, "a_b.example.com").status_code == 400


# -- disabled tenants -----------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "path"),
    [
        pytest.param("acme.example.com", "/", id="subdomain"),
        pytest.param("shop.acme.test", "/x", id="custom-domain"),
        pytest.param("example.com", "/acme/x", id="path"),
    ],
)
def test_disabled_tenant_is_403(
    client: Client,
    registry: CountingRegistry,
    built: list[Tenant],
    host: str,
    path: str,
) -> None:
    registry.disable_tenant("acme", reason="unpaid")
    response = fetch(client, host, path)
    assert response.status_code == 403
    assert b"unavailable" in response.data
    assert built == []
    # Unknown is a different answer.
    assert fetch(client, "nosuch.example.com", "/").status_code == 404
    # Other tenants are unaffected.
    assert fetch(client, "beta.example.com").status_code == 200


def test_disabling_and_enabling_a_built_tenant(
    client: Client, registry: CountingRegistry, built: list[Tenant]
) -> None:
    assert fetch(client, "acme.example.com").status_code == 200
    registry.disable_tenant("acme")
    assert fetch(client, "acme.example.com").status_code == 403
    assert fetch(client, "example.com", "/acme/").status_code == 403
    registry.enable_tenant("acme")
    response = fetch(client, "acme.example.com")
    assert response.status_code == 200
    assert response.get_json()["version"] == registry.get_tenant("acme").version
    assert [tenant.slug for tenant in built] == ["acme", "acme"]


def test_custom_disabled_app_gets_the_tenant(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    tenants: dict[str, Tenant],
    built: list[Tenant],
) -> None:
    suspended = Flask(__name__)

    @suspended.route("/", defaults={"rest": ""})
    @suspended.route("/<path:rest>")
    def closed(rest: str) -> tuple[dict[str, Any], int]:
        tenant = request.environ["dispatcher.tenant"]
        body = {
            "tenant": tenant.slug,
            "current": current_tenant.slug,
            "reason": tenant.disabled_reason,
            "script_root": request.script_root,
        }
        return body, 451

    client = Client(make_dispatcher(disabled_app=suspended))
    registry.disable_tenant("acme", reason="legal hold")
    registry.disable_tenant("beta", reason="unpaid")

    response = fetch(client, "shop.acme.test", "/x")
    assert response.status_code == 451
    assert response.get_json() == {
        "tenant": "acme",
        "current": "acme",
        "reason": "legal hold",
        "script_root": "",
    }
    response = fetch(client, "example.com", "/beta/x")
    assert response.status_code == 451
    assert response.get_json()["tenant"] == "beta"
    assert response.get_json()["reason"] == "unpaid"
    assert response.get_json()["script_root"] == "/beta"
    assert built == []

    registry.enable_tenant("acme")
    assert fetch(client, "shop.acme.test", "/x").get_json()["tenant"] == "acme"
    assert fetch(client, "shop.acme.test", "/x").status_code == 200


def test_shared_disabled_app_is_not_torn_down(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    tenants: dict[str, Tenant],
) -> None:
    """``teardown`` is for the apps create_app built, not the one disabled_app
    that answers for every disabled tenant and is still in use."""
    torn: list[tuple[Any, str]] = []
    suspended = echo_app("suspended")
    client = Client(
        make_dispatcher(
            disabled_app=suspended,
            teardown=lambda app, tenant: torn.append((app, tenant.slug)),
        )
    )
    registry.disable_tenant("acme")
    registry.disable_tenant("beta")
    assert fetch(client, "acme.example.com").get_json()["app"] == "suspended"
    assert fetch(client, "beta.example.com").get_json()["app"] == "suspended"

    registry.enable_tenant("acme")  # evicts acme's entry: the disabled_app
    assert fetch(client, "acme.example.com").get_json()["tenant"] == "acme"
    assert fetch(client, "beta.example.com").get_json()["app"] == "suspended"
    assert [slug for app, slug in torn if app is suspended] == []


# -- fixed apps next to the tenants: werkzeug's DispatcherMiddleware -------------


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        pytest.param("example.com", "/api", ("api", "/api", ""), id="bare"),
        pytest.param("example.com", "/api/x", ("api", "/api", "/x"), id="below"),
        pytest.param(
            "example.com", "/api/v2/users", ("v2", "/api/v2", "/users"), id="longest"
        ),
        pytest.param("example.com", "/shop/x", ("shop", "/shop", "/x"), id="shadow"),
        pytest.param(
            "acme.example.com", "/api/x", ("api", "/api", "/x"), id="on-tenant-host"
        ),
        pytest.param("attacker.test", "/api", ("api", "/api", ""), id="any-host"),
        pytest.param("acme.example.com", "/apix", "acme", id="no-segment-boundary"),
        pytest.param("example.com", "/beta/api", "beta", id="tenant-path"),
        pytest.param("example.com", "/apix", None, id="no-tenant"),
    ],
)
def test_mounts_next_to_tenants(
    make_dispatcher: Callable[..., TenantDispatcher],
    tenants: dict[str, Tenant],
    host: str,
    path: str,
    expected: tuple[str, str, str] | str | None,
) -> None:
    """Mounted apps win over tenants, on every host, and no tenant can shadow
    them; the rest reaches the dispatcher untouched, hot path included."""
    mounts = {
        "/api": echo_app("api"),
        "/api/v2": echo_app("v2"),
        "/shop": echo_app("shop"),
    }
    client = Client(DispatcherMiddleware(make_dispatcher(), mounts))
    for _ in range(2):  # the second time from the cache
        response = fetch(client, host, path)
        if expected is None:
            assert response.status_code == 404
        elif isinstance(expected, str):
            assert response.get_json()["tenant"] == expected
        else:
            name, script_name, path_info = expected
            assert response.get_json() == {
                "app": name,
                "script_name": script_name,
                "path_info": path_info,
                "tenant": None,
            }


def test_hot_path_serves_tenants_next_to_mounts(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    tenants: dict[str, Tenant],
) -> None:
    """A mount no longer turns the lock-free hit path off: it is not ours."""
    dispatcher = make_dispatcher()
    client = Client(DispatcherMiddleware(dispatcher, {"/api": echo_app("api")}))
    assert fetch(client, "acme.example.com", "/x").get_json()["tenant"] == "acme"
    before = sum(dispatcher._hot)
    for _ in range(3):
        assert fetch(client, "acme.example.com", "/x").get_json()["tenant"] == "acme"
    assert sum(dispatcher._hot) == before + 3


# -- identifying tenants by a gateway's header ----------------------------------


@pytest.fixture
def by_header(
    make_dispatcher: Callable[..., TenantDispatcher], tenants: dict[str, Tenant]
) -> Callable[..., TenantDispatcher]:
    """A dispatcher that asks X-Tenant first, then the standard resolvers."""

    def make(**options: Any) -> TenantDispatcher:
        resolvers = [
            HeaderResolver("X-Tenant"),
            *standard_resolvers(base_domain=BASE, path_routing=True),
        ]
        return make_dispatcher(
            resolvers=resolvers, base_domain=None, path_routing=False, **options
        )

    return make


@pytest.mark.parametrize(
    ("host", "path"),
    [
        pytest.param("gateway.internal", "/x", id="any-host"),
        pytest.param("acme.example.com", "/x", id="over-another-tenants-host"),
        pytest.param("example.com", "/acme/x", id="over-the-path"),
        pytest.param("127.0.0.1:8000", "/x", id="ip"),
    ],
)
def test_header_names_the_tenant(
    by_header: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    host: str,
    path: str,
) -> None:
    """The first resolver that claims decides: the header, by slug, with the
    path left as it came."""
    client = Client(by_header())
    for _ in range(2):
        response = fetch(client, host, path, HTTP_X_TENANT="beta")
        data = response.get_json()
        assert (data["tenant"], data["path"], data["script_root"]) == ("beta", path, "")
    assert registry.lookups == [("find_by_slug", "beta")]


def test_header_absent_routes_by_host_and_path(
    by_header: Callable[..., TenantDispatcher], registry: CountingRegistry
) -> None:
    client = Client(by_header())
    assert fetch(client, "acme.example.com").get_json()["tenant"] == "acme"
    assert fetch(client, "example.com", "/beta/").get_json()["tenant"] == "beta"
    assert fetch(client, "gateway.internal").status_code == 404
    assert registry.slugs == []


def test_header_naming_no_tenant_gets_the_default_app(
    by_header: Callable[..., TenantDispatcher], registry: CountingRegistry
) -> None:
    """An unknown slug is the header's answer: no fall-through to the host."""
    assert (
        fetch(
            Client(by_header()), "acme.example.com", HTTP_X_TENANT="nosuch"
        ).status_code
        == 404
    )
    client = Client(by_header(default_app=echo_app("default")))
    for _ in range(2):
        response = fetch(client, "acme.example.com", HTTP_X_TENANT="nosuch")
        assert response.get_json()["app"] == "default"
    # Looked up once per dispatcher, then remembered as unknown.
    assert registry.lookups == [("find_by_slug", "nosuch")] * 2


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("Beta", id="upper-case"),
        pytest.param("beta.example.com", id="a-host"),
        pytest.param("beta/x", id="slash"),
        pytest.param("-beta", id="leading-hyphen"),
        pytest.param("b" * 64, id="64-chars"),
        pytest.param("b\xe9ta", id="non-ascii"),
    ],
)
def test_malformed_header_is_400_without_queries(
    by_header: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    statements: list[str],
    value: str,
) -> None:
    response = fetch(Client(by_header()), "acme.example.com", HTTP_X_TENANT=value)
    assert response.status_code == 400
    assert b"invalid X-Tenant header" in response.data
    assert b"must be a tenant slug" in response.data
    assert registry.lookups == []
    assert statements == []


def test_bad_host_is_refused_before_the_header_is_read(
    by_header: Callable[..., TenantDispatcher], registry: CountingRegistry
) -> None:
    response = fetch(Client(by_header()), "a_b.example.com", HTTP_X_TENANT="beta")
    assert response.status_code == 400
    assert b"invalid Host" in response.data
    assert registry.lookups == []


def test_header_is_ignored_without_a_header_resolver(
    client: Client, registry: CountingRegistry
) -> None:
    """By default no header names a tenant: a client cannot send acme's host
    with beta's name and reach beta."""
    for host, path in [("acme.example.com", "/"), ("example.com", "/acme/")]:
        response = fetch(client, host, path, HTTP_X_TENANT="beta")
        assert response.get_json()["tenant"] == "acme"
    response = fetch(client, "gateway.internal", HTTP_X_TENANT="beta")
    assert response.status_code == 404
    assert registry.slugs == []


def test_header_skips_the_hit_path(
    by_header: Callable[..., TenantDispatcher], registry: CountingRegistry
) -> None:
    """A Host remembered for acme's hit path does not decide a request that
    also names beta by header."""
    dispatcher = by_header()
    client = Client(dispatcher)
    for _ in range(2):
        assert fetch(client, "acme.example.com").get_json()["tenant"] == "acme"
    hot = sum(dispatcher._hot)
    assert hot == 1
    for _ in range(2):
        response = fetch(client, "acme.example.com", HTTP_X_TENANT="beta")
        assert response.get_json()["tenant"] == "beta"
    assert sum(dispatcher._hot) == hot
    # Without the header, the host's hit path serves acme again.
    assert fetch(client, "acme.example.com").get_json()["tenant"] == "acme"
    assert sum(dispatcher._hot) == hot + 1


def test_new_tenant_is_found_by_header_after_an_unknown_answer(
    by_header: Callable[..., TenantDispatcher], registry: CountingRegistry
) -> None:
    """Creating the tenant forgets the "unknown" answer for its slug, also
    for a tenant with no host or path of its own (reached by header only)."""
    client = Client(by_header(poll_interval=None))
    for _ in range(2):
        assert fetch(client, "gw.internal", HTTP_X_TENANT="gamma").status_code == 404
    assert registry.slugs == ["gamma"]

    registry.create_tenant("gamma", owner_email="owner@gamma.test")
    assert (
        fetch(client, "gw.internal", HTTP_X_TENANT="gamma").get_json()["tenant"]
        == "gamma"
    )


def test_change_without_names_forgets_the_header_unknown_answer(
    by_header: Callable[..., TenantDispatcher], registry: CountingRegistry
) -> None:
    """A change recorded before names were (added=None) forgets every
    "unknown" answer when it may have created a name."""
    dispatcher = by_header(poll_interval=None)
    client = Client(dispatcher)
    assert fetch(client, "gw.internal", HTTP_X_TENANT="gamma").status_code == 404
    with TenantRegistry(registry.engine) as writer:  # not heard by the dispatcher
        tenant = writer.create_tenant("gamma", owner_email="owner@gamma.test")
    assert fetch(client, "gw.internal", HTTP_X_TENANT="gamma").status_code == 404
    dispatcher.invalidate(TenantChange(tenant.version, "gamma", Operation.CREATED))
    response = fetch(client, "gw.internal", HTTP_X_TENANT="gamma")
    assert response.get_json()["tenant"] == "gamma"


class MountedDomains:
    """Custom domains whose tenants are mounted under ``/app``: the key is
    the host alone, and so is the shift (every path on them starts so)."""

    headers: tuple[str, ...] = ()

    def match(self, host: str, path_info: str, environ: dict[str, Any]) -> Match:
        def find(finder: TenantFinder) -> Tenant | None:
            return finder.find_by_host(host)

        return Match(HostKey(host), find, "/app")

    def route_keys(self, slug: str, names: Names) -> list[RouteKey]:
        return [HostKey(host) for host in names.domains]


def test_a_host_keyed_match_with_a_shift_is_shifted_on_every_request(
    make_dispatcher: Callable[..., TenantDispatcher], tenants: dict[str, Tenant]
) -> None:
    """The hit path serves a Host without asking its resolver again: it must
    not skip the shift the resolver's match asked for."""
    dispatcher = make_dispatcher(
        resolvers=[MountedDomains()], base_domain=None, path_routing=False
    )
    client = Client(dispatcher)
    for _ in range(3):
        data = fetch(client, "shop.acme.test", "/app/x").get_json()
        assert (data["tenant"], data["script_root"], data["path"]) == (
            "acme",
            "/app",
            "/x",
        )


# -- tenant context and the app cache -------------------------------------------


def test_environ_carries_the_tenant(client: Client, tenants: dict[str, Tenant]) -> None:
    data = fetch(client, "shop.acme.test", "/x").get_json()
    assert data["tenant"] == data["environ_tenant"] == "acme"
    assert data["environ_tenant_type"] == "Tenant"
    assert data["version"] == tenants["acme"].version
    assert data["greeting"] == "Hello from Acme"


def test_environ_tenant_is_the_registry_snapshot(
    make_dispatcher: Callable[..., TenantDispatcher], tenants: dict[str, Tenant]
) -> None:
    seen: list[Any] = []

    def create_app(tenant: Tenant) -> Callable[..., Any]:
        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            seen.append(environ["dispatcher.tenant"])
            return Response("ok")(environ, start_response)

        return app

    client = Client(make_dispatcher(create_app=create_app))
    fetch(client, "acme.example.com")
    fetch(client, "example.com", "/beta/")
    assert [type(tenant) for tenant in seen] == [Tenant, Tenant]
    assert [tenant.slug for tenant in seen] == ["acme", "beta"]
    assert seen[0].domains == ("shop.acme.test",)
    assert seen[0].version == tenants["acme"].version


def test_create_app_once_per_tenant(
    client: Client, registry: CountingRegistry, built: list[Tenant]
) -> None:
    requests = [
        ("acme.example.com", "/"),
        ("shop.acme.test", "/x"),
        ("example.com", "/acme/y"),
        ("ACME.example.com:8080", "/"),
        ("shop.acme.test.", "/"),
        ("www.example.com", "/acme/"),
        ("beta.example.com", "/"),
        ("example.com", "/beta/"),
    ]
    for _ in range(3):
        for host, path in requests:
            assert fetch(client, host, path).status_code == 200
    assert [tenant.slug for tenant in built] == ["acme", "beta"]

    # Once every routing key is known, requests reach no registry at all.
    registry.clear()
    for host, path in requests:
        fetch(client, host, path)
    assert registry.lookups == []


def test_config_change_rebuilds_once(
    client: Client, registry: CountingRegistry, built: list[Tenant]
) -> None:
    hosts = [
        ("acme.example.com", "/"),
        ("shop.acme.test", "/"),
        ("example.com", "/acme/"),
    ]
    for host, path in hosts:
        assert fetch(client, host, path).get_json()["greeting"] == "Hello from Acme"

    registry.update_config("acme", {"greeting": "Howdy"})
    for _ in range(2):
        for host, path in hosts:
            assert fetch(client, host, path).get_json()["greeting"] == "Howdy"
    assert [tenant.config.get("greeting") for tenant in built] == [
        "Hello from Acme",
        "Howdy",
    ]
    assert fetch(client, "beta.example.com").get_json()["greeting"] == "Hello from Beta"


def test_routing_change_is_followed(client: Client, registry: CountingRegistry) -> None:
    assert fetch(client, "acme.example.com").status_code == 200
    registry.set_subdomain("acme", "acme2")
    assert fetch(client, "acme.example.com").status_code == 404
    assert fetch(client, "acme2.example.com").get_json()["tenant"] == "acme"


def test_deleted_tenant_is_404(client: Client, registry: CountingRegistry) -> None:
    assert fetch(client, "shop.acme.test").status_code == 200
    registry.delete_tenant("acme")
    assert fetch(client, "shop.acme.test").status_code == 404
    assert fetch(client, "example.com", "/acme/").status_code == 404


@pytest.mark.parametrize(
    "claim",
    [
        pytest.param("add_domain", id="domain-added"),
        pytest.param("create_tenant", id="tenant-created"),
    ],
)
def test_new_custom_domain_wins_over_a_subdomain_already_served(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    tenants: dict[str, Tenant],
    claim: str,
) -> None:
    """A custom domain wins over a subdomain even when the subdomain tenant's
    app is already built and routed under that host."""
    client = Client(make_dispatcher())
    assert fetch(client, "beta.example.com").get_json()["tenant"] == "beta"

    if claim == "add_domain":
        registry.add_domain("alpha", "beta.example.com")
        owner = "alpha"
    else:
        registry.create_tenant(
            "gamma", owner_email="owner@gamma.test", domains=["beta.example.com"]
        )
        owner = "gamma"
    # A dispatcher that starts now resolves the host to the custom domain...
    fresh = Client(make_dispatcher())
    assert fetch(fresh, "beta.example.com").get_json()["tenant"] == owner
    # ...and so must the one that was running when the domain was added.
    assert fetch(client, "beta.example.com").get_json()["tenant"] == owner


@pytest.fixture
def many_hosts(registry: CountingRegistry) -> list[str]:
    """Thirty tenants with a subdomain each: the active hosts of a busy process."""
    specs = [
        registry.new_tenant(f"t{i}", owner_email=f"o{i}@t.test", subdomain=f"t{i}")
        for i in range(30)
    ]
    assert all(result.error is None for result in registry.import_tenants(specs))
    return [f"t{i}.example.com" for i in range(30)]


@contextmanager
def _counting_queries(registry: TenantRegistry) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(registry.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(registry.engine, "before_cursor_execute", record)


@pytest.mark.parametrize(
    ("write", "served"),
    [
        pytest.param(
            lambda r: r.create_tenant(
                "new",
                owner_email="o@new.test",
                subdomain="new",
                path_prefix="new",
                domains=["new.test"],
            ),
            [("new.example.com", "/"), (BASE, "/new/"), ("new.test", "/")],
            id="created",
        ),
        pytest.param(
            lambda r: r.add_domain("t0", "new.test"),
            [("new.test", "/")],
            id="domain-added",
        ),
        pytest.param(
            lambda r: r.set_subdomain("t0", "new"),
            [("new.example.com", "/")],
            id="subdomain",
        ),
    ],
)
def test_a_change_drops_only_the_names_it_introduces(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    many_hosts: list[str],
    write: Callable[[TenantRegistry], object],
    served: list[tuple[str, str]],
) -> None:
    """One signup costs queries for the names it adds, not for every active host."""
    client = Client(make_dispatcher(poll_interval=None))
    for host in many_hosts[1:]:
        assert fetch(client, host).status_code == 200
    for host, path in served:
        assert fetch(client, host, path).status_code == 404  # remembered as unknown

    write(registry)  # through this registry object: the dispatcher hears it now
    with _counting_queries(registry) as queries:
        for host in many_hosts[1:]:
            assert fetch(client, host).status_code == 200
    assert queries == []
    # The new names are served at once, not remembered as unknown.
    for host, path in served:
        assert fetch(client, host, path).status_code == 200


def test_a_change_without_its_names_drops_every_host_route(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    many_hosts: list[str],
) -> None:
    """Changes recorded before names were (names=None) may have moved any host."""
    dispatcher = make_dispatcher(poll_interval=None)
    client = Client(dispatcher)
    for host in many_hosts:
        assert fetch(client, host).status_code == 200
    assert fetch(client, "new.example.com").status_code == 404

    with TenantRegistry(registry.engine) as writer:  # not heard by the dispatcher
        tenant = writer.create_tenant("new", owner_email="o@new.test", subdomain="new")
    dispatcher.invalidate(TenantChange(tenant.version, "new", Operation.CREATED))
    registry.clear()
    for host in many_hosts:
        assert fetch(client, host).status_code == 200
    assert sorted(registry.hosts) == sorted(many_hosts)
    assert fetch(client, "new.example.com").get_json()["tenant"] == "new"


def test_a_new_domain_with_its_names_wins_over_a_subdomain_already_served(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    tenants: dict[str, Tenant],
) -> None:
    client = Client(make_dispatcher(poll_interval=None))
    assert fetch(client, "beta.example.com").get_json()["tenant"] == "beta"
    assert fetch(client, "acme.example.com").get_json()["tenant"] == "acme"
    with TenantRegistry(registry.engine) as writer:
        tenant = writer.add_domain("alpha", "beta.example.com")
    change = TenantChange(
        tenant.version,
        "alpha",
        Operation.DOMAIN_ADDED,
        Names(domains=("beta.example.com",)),
    )
    client.application.invalidate(change)  # type: ignore[attr-defined]
    registry.clear()
    assert fetch(client, "beta.example.com").get_json()["tenant"] == "alpha"
    assert fetch(client, "acme.example.com").get_json()["tenant"] == "acme"
    assert registry.hosts == ["beta.example.com"]


# -- failures -------------------------------------------------------------------


@pytest.fixture
def unreachable_url(backend: str) -> str:
    """A database URL on the test's backend that cannot be connected to."""
    return {
        "sqlite": "sqlite:////nonexistent-dir/registry.sqlite3",
        "postgresql": "postgresql+psycopg://postgres@127.0.0.1:1/test",
    }[backend]


@pytest.mark.parametrize(
    ("host", "path"),
    [
        pytest.param("acme.example.com", "/", id="subdomain"),
        pytest.param("shop.acme.test", "/", id="custom-domain"),
        pytest.param("example.com", "/acme/x", id="path"),
    ],
)
def test_database_down_is_503(
    unreachable_url: str,
    create_app: Callable[[Tenant], Flask],
    built: list[Tenant],
    caplog: pytest.LogCaptureFixture,
    host: str,
    path: str,
) -> None:
    with CountingRegistry(unreachable_url) as down:
        dispatcher = TenantDispatcher(
            down, create_app, base_domain=BASE, path_routing=True, retry_after=7
        )
        client = Client(dispatcher)
        asked = []
        with caplog.at_level(logging.WARNING, logger="dispatcher.middleware"):
            for _ in range(2):
                response = fetch(client, host, path)
                assert response.status_code == 503
                assert response.headers["Retry-After"] == "7"
                asked.append(len(down.lookups))
        # Not remembered as unknown: the second request asked again.
        assert asked[0] >= 1
        assert asked[1] == 2 * asked[0]
        assert built == []
        assert "the registry is unavailable" in caplog.text
        # Requests that need no database are still answered.
        assert fetch(client, "example.com", "/").status_code == 404
        assert fetch(client, "a_b.example.com", "/").status_code == 400
        dispatcher.close()


def test_unavailable_app_answers_while_the_database_is_down(
    unreachable_url: str, create_app: Callable[[Tenant], Flask]
) -> None:
    def styled(environ: Any, start_response: Any) -> list[bytes]:
        start_response("503 SERVICE UNAVAILABLE", [("Retry-After", "30")])
        return [b"back soon"]

    with TenantRegistry(unreachable_url) as down:
        dispatcher = TenantDispatcher(
            down, create_app, base_domain=BASE, unavailable_app=styled
        )
        response = fetch(Client(dispatcher), "acme.example.com", "/")
        assert (response.status_code, response.data) == (503, b"back soon")
        assert response.headers["Retry-After"] == "30"
        dispatcher.close()


def test_unavailable_app_must_be_callable(registry: TenantRegistry) -> None:
    with pytest.raises(TypeError, match="unavailable_app must be callable, not str"):
        TenantDispatcher(registry, create_app, unavailable_app="503")  # type: ignore[arg-type]


@contextmanager
def _tenant_table_gone(registry: TenantRegistry) -> Iterator[None]:
    """The registry really fails its lookups: its tenant table is renamed away."""
    with registry.engine.begin() as connection:
        connection.execute(text("ALTER TABLE tenants RENAME TO tenants_away"))
    try:
        yield
    finally:
        with registry.engine.begin() as connection:
            connection.execute(text("ALTER TABLE tenants_away RENAME TO tenants"))


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    tenants: dict[str, Tenant],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    client = Client(make_dispatcher(timer=clock, poll_interval=None))
    cold = [("beta.example.com", "/"), ("evil.example.com", "/"), (BASE, "/beta/")]
    with caplog.at_level(logging.INFO, logger="dispatcher"):
        assert fetch(client, "acme.example.com").status_code == 200
        with _tenant_table_gone(registry):
            for _ in range(3):
                for host, path in cold:
                    assert fetch(client, host, path).status_code == 503
                clock.now += 14
            # A built tenant needs no lookup: served, not counted.
            assert fetch(client, "acme.example.com").status_code == 200
        for host, path in cold:
            assert fetch(client, host, path).status_code == 200
    lines = [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if record.name == "dispatcher.middleware"
    ]
    assert len(lines) == 2, lines
    (down_level, down), (up_level, up) = lines
    assert down_level == logging.WARNING
    assert "the registry is unavailable" in down
    assert "tenant tables" in down  # the cause, as the registry put it
    assert up_level == logging.WARNING
    assert "the registry is available again after 42.0 s" in up
    assert "9 requests got 503" in up


def test_an_outage_counts_from_the_first_failure_after_a_recovery(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: CountingRegistry,
    tenants: dict[str, Tenant],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    client = Client(make_dispatcher(timer=clock, poll_interval=None))
    with caplog.at_level(logging.INFO, logger="dispatcher"):
        outages = [(["beta.example.com"], 5), (["evil.example.com"] * 2, 7)]
        for hosts, down_for in outages:
            with _tenant_table_gone(registry):
                for host in hosts:
                    assert fetch(client, host).status_code == 503
                clock.now += down_for
            assert fetch(client, hosts[0]).status_code == 200
    lines = [
        record.getMessage()
        for record in caplog.records
        if record.name == "dispatcher.middleware"
    ]
    assert len(lines) == 4, lines
    assert "after 5.0 s; 1 requests got 503" in lines[1]
    assert "after 7.0 s; 2 requests got 503" in lines[3]


def test_built_tenants_are_served_while_the_database_is_down(
    client: Client,
    registry: CountingRegistry,
    built: list[Tenant],
    unreachable_url: str,
) -> None:
    assert fetch(client, "acme.example.com", "/x").status_code == 200
    assert fetch(client, "example.com", "/acme/x").status_code == 200

    working = registry.engine
    registry.engine = create_engine(unreachable_url)
    try:
        # The routing keys already seen need no lookup.
        assert fetch(client, "acme.example.com", "/y").get_json()["path"] == "/y"
        assert fetch(client, "example.com", "/acme/y").get_json()["path"] == "/y"
        # Anything else does, and cannot have it.
        response = fetch(client, "beta.example.com")
        assert response.status_code == 503
        assert "Retry-After" in response.headers
        assert fetch(client, "shop.acme.test").status_code == 503
    finally:
        registry.engine.dispose()
        registry.engine = working
    # Back up: served again, without building acme twice.
    assert fetch(client, "shop.acme.test").get_json()["tenant"] == "acme"
    assert fetch(client, "beta.example.com").get_json()["tenant"] == "beta"
    assert [tenant.slug for tenant in built] == ["acme", "beta"]


def test_retry_after_zero_is_refused(
    unreachable_url: str, create_app: Callable[[Tenant], Flask]
) -> None:
    """werkzeug drops a falsy Retry-After, so 0 would silently send none."""
    with CountingRegistry(unreachable_url) as down:
        with pytest.raises(ValueError, match="retry_after must be at least 1, not 0"):
            TenantDispatcher(down, create_app, base_domain=BASE, retry_after=0)


def test_create_app_error_is_500_and_retried(
    make_dispatcher: Callable[..., TenantDispatcher],
    tenants: dict[str, Tenant],
    create_app: Callable[[Tenant], Flask],
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    failing = [True]

    def flaky_create_app(tenant: Tenant) -> Flask:
        if failing[0]:
            raise RuntimeError("tenant config is broken")
        return create_app(tenant)

    client = Client(
        make_dispatcher(create_app=flaky_create_app, timer=clock, failure_backoff=5)
    )
    with caplog.at_level(logging.ERROR, logger="dispatcher.cache"):
        assert fetch(client, "acme.example.com").status_code == 500
    assert "building the app of tenant 'acme' failed" in caplog.text
    # Within the backoff the failure is repeated, not turned into "unknown".
    assert fetch(client, "acme.example.com").status_code == 500
    # Other tenants are not affected by one broken tenant.
    failing[0] = False
    assert fetch(client, "beta.example.com").status_code == 200

    clock.now += 6
    response = fetch(client, "acme.example.com")
    assert response.status_code == 200
    assert response.get_json()["tenant"] == "acme"


# -- configuration errors -------------------------------------------------------


@pytest.fixture(scope="module")
def idle_registry(server_database_url: str | None) -> Iterator[TenantRegistry]:
    """A registry on the test backend that is never queried.

    The constructor checks its arguments before it touches the registry, so
    these tests need no migrated database of their own.
    """
    with TenantRegistry(server_database_url or "sqlite://") as registry:
        yield registry


def test_registry_must_be_a_registry(create_app: Callable[[Tenant], Flask]) -> None:
    with pytest.raises(TypeError, match="registry must be a TenantRegistry, not str"):
        TenantDispatcher("sqlite://", create_app)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        pytest.param(
            {"create_app": "x"}, TypeError, "create_app .* not str", id="create-app"
        ),
        pytest.param(
            {"create_app": None}, TypeError, "create_app", id="create-app-none"
        ),
        pytest.param(
            {"default_app": 42}, TypeError, "default_app .* not int", id="default"
        ),
        pytest.param({"disabled_app": "403"}, TypeError, "disabled_app", id="disabled"),
        pytest.param({"teardown": 1}, TypeError, "teardown", id="teardown"),
        pytest.param({"timer": 1.0}, TypeError, "timer", id="timer"),
        pytest.param({"max_apps": 0}, ValueError, "max_apps .* 0", id="max-apps-0"),
        pytest.param(
            {"max_apps": -5}, ValueError, "max_apps .* -5", id="max-apps-negative"
        ),
        pytest.param(
            {"max_apps": True}, TypeError, "max_apps .* True", id="max-apps-bool"
        ),
        pytest.param(
            {"max_apps": 1.5}, TypeError, "max_apps .* 1.5", id="max-apps-float"
        ),
        pytest.param(
            {"max_apps": "10"}, TypeError, "max_apps .* '10'", id="max-apps-str"
        ),
        pytest.param(
            {"app_ttl": -1}, ValueError, "app_ttl .* -1", id="app-ttl-negative"
        ),
        pytest.param({"app_ttl": 0}, ValueError, "app_ttl .* 0", id="app-ttl-0"),
        pytest.param(
            {"app_ttl": math.nan}, ValueError, "app_ttl .* nan", id="app-ttl-nan"
        ),
        pytest.param({"app_ttl": "60"}, TypeError, "app_ttl .* '60'", id="app-ttl-str"),
        pytest.param(
            {"negative_ttl": -0.5}, ValueError, "negative_ttl .* -0.5", id="neg-ttl"
        ),
        pytest.param(
            {"negative_size": 0}, ValueError, "negative_size .* 0", id="neg-size"
        ),
        pytest.param(
            {"build_timeout": 0}, ValueError, "build_timeout .* 0", id="build-0"
        ),
        pytest.param(
            {"build_timeout": math.nan}, ValueError, "build_timeout", id="build-nan"
        ),
        pytest.param(
            {"failure_backoff": -1}, ValueError, "failure_backoff", id="backoff"
        ),
        pytest.param(
            {"retry_after": -1}, ValueError, "retry_after .* -1", id="retry-after"
        ),
        pytest.param(
            {"retry_after": 1.5}, TypeError, "retry_after .* 1.5", id="retry-float"
        ),
        pytest.param(
            {"base_domain": "exa mple.com"},
            ValueError,
            "base_domain 'exa mple.com'",
            id="base-domain-space",
        ),
        pytest.param(
            {"base_domain": "example.com:80"},
            ValueError,
            "base_domain 'example.com:80'",
            id="base-domain-port",
        ),
        pytest.param(
            {"base_domain": "[::1]"},
            ValueError,
            r"base_domain '\[::1\]'",
            id="base-ipv6",
        ),
        pytest.param(
            {"base_domain": "a@example.com"},
            ValueError,
            "base_domain 'a@example.com'",
            id="base-domain-userinfo",
        ),
        pytest.param(
            {"base_domain": ""}, ValueError, "base_domain ''", id="base-domain-empty"
        ),
        pytest.param(
            {"base_domain": b"example.com"}, TypeError, "bytes", id="base-bytes"
        ),
        pytest.param(
            {"mounts": {"/api": echo_app("a")}},
            TypeError,
            "mounts",
            id="mounts-are-werkzeugs-job",
        ),
    ],
)
def test_bad_configuration(
    idle_registry: TenantRegistry,
    create_app: Callable[[Tenant], Flask],
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    """ValueError or TypeError naming the value: real exceptions, not asserts
    that ``python -O`` would strip."""
    options = dict(options)
    factory = options.pop("create_app", create_app)
    with pytest.raises(error, match=message):
        TenantDispatcher(idle_registry, factory, **with_policy(options))


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        pytest.param(
            {"path_routing": True},
            ValueError,
            "path_routing needs a base_domain or path_routing_hosts",
            id="path-routing-on-no-host",
        ),
        pytest.param(
            {"path_routing_hosts": ["app.test"]},
            ValueError,
            "path_routing_hosts .* path_routing is off",
            id="hosts-without-path-routing",
        ),
        pytest.param(
            {"path_routing": True, "path_routing_hosts": "app.test"},
            TypeError,
            "path_routing_hosts must be a collection of host names, not str",
            id="hosts-a-string",
        ),
        pytest.param(
            {"path_routing": True, "path_routing_hosts": [42]},
            TypeError,
            "path_routing_hosts entry 42 must be a host name, not int",
            id="hosts-not-str",
        ),
        pytest.param(
            {"path_routing": True, "path_routing_hosts": ["a_b.test"]},
            ValueError,
            "path_routing_hosts entry 'a_b.test' is not a host name: .*'_'",
            id="hosts-bad-name",
        ),
        pytest.param(
            {"path_routing": True, "path_routing_hosts": ["localhost:5000"]},
            ValueError,
            "path_routing_hosts entry 'localhost:5000' must be a host name"
            " without a port",
            id="hosts-port",
        ),
    ],
)
def test_bad_path_routing_configuration(
    idle_registry: TenantRegistry,
    create_app: Callable[[Tenant], Flask],
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    """Path routing on every host would hand tenants to any Host an attacker
    sends: with no host to route on, construction fails naming the rule."""
    with pytest.raises(error, match=message):
        TenantDispatcher(idle_registry, create_app, **options)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        pytest.param(
            {"resolvers": [HostResolver()], "base_domain": BASE},
            ValueError,
            "resolvers= replaces base_domain, path_routing and path_routing_hosts",
            id="resolvers-and-base-domain",
        ),
        pytest.param(
            {"resolvers": [HostResolver()], "path_routing": True},
            ValueError,
            "resolvers= replaces",
            id="resolvers-and-path-routing",
        ),
        pytest.param(
            {"resolvers": []},
            ValueError,
            "resolvers is empty",
            id="no-resolvers",
        ),
        pytest.param(
            {"resolvers": "X-Tenant"},
            TypeError,
            "resolvers must be a list of resolvers, not str",
            id="resolvers-a-string",
        ),
        pytest.param(
            {"resolvers": [HostResolver(), "X-Tenant"]},
            TypeError,
            "resolvers entry 'X-Tenant' is not a Resolver",
            id="not-a-resolver",
        ),
    ],
)
def test_bad_resolvers_configuration(
    idle_registry: TenantRegistry,
    create_app: Callable[[Tenant], Flask],
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        TenantDispatcher(idle_registry, create_app, **options)


def test_resolvers_default_to_the_shorthands(
    idle_registry: TenantRegistry, create_app: Callable[[Tenant], Flask]
) -> None:
    dispatcher = TenantDispatcher(
        idle_registry, create_app, base_domain=BASE, path_routing=True
    )
    try:
        assert repr(list(dispatcher.resolvers)) == repr(
            standard_resolvers(base_domain=BASE, path_routing=True)
        )
    finally:
        dispatcher.close()


def test_path_routing_hosts_are_normalised(
    idle_registry: TenantRegistry, create_app: Callable[[Tenant], Flask]
) -> None:
    dispatcher = TenantDispatcher(
        idle_registry,
        create_app,
        path_routing=True,
        path_routing_hosts=["App.Test.", "[::1]", "app.test", "127.0.0.1"],
    )
    try:
        assert dispatcher.path_routing_hosts == frozenset(
            {"app.test", "[::1]", "127.0.0.1"}
        )
    finally:
        dispatcher.close()


def test_good_configuration_is_normalised(
    idle_registry: TenantRegistry, create_app: Callable[[Tenant], Flask]
) -> None:
    dispatcher = TenantDispatcher(
        idle_registry,
        create_app,
        base_domain="Example.COM.",
    )
    try:
        assert dispatcher.base_domain == "example.com"
        assert [type(resolver) for resolver in dispatcher.resolvers] == [HostResolver]
    finally:
        dispatcher.close()


def test_no_free_connection_is_503(
    database_url: str, create_app: Callable[[Tenant], Flask]
) -> None:
    """A pool that stays exhausted is database trouble: 503, not 500."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    registry = TenantRegistry(engine)
    registry.migrate()
    dispatcher = TenantDispatcher(registry, create_app, base_domain=BASE)
    try:
        with engine.connect():  # the only connection, held
            response = fetch(Client(dispatcher), "acme.example.com")
    finally:
        dispatcher.close()
        registry.close()
        engine.dispose()

    assert response.status_code == 503
    assert "Retry-After" in response.headers


@pytest.mark.parametrize("name", ["build_timeout", "poll_interval"])
def test_infinite_waits_are_refused(
    unreachable_url: str, create_app: Callable[[Tenant], Flask], name: str
) -> None:
    """Event.wait(inf) raises: an infinite wait must fail at configuration."""
    with CountingRegistry(unreachable_url) as down:
        with pytest.raises(ValueError, match=f"{name} must be a finite number"):
            TenantDispatcher(down, create_app, **with_policy({name: math.inf}))


# -- fork -----------------------------------------------------------------------


#: Bounds the parent's wait for a forked child: a child stuck on a lock is killed.
def _fork_hooks_of(kind: type) -> int:
    return sum(1 for owner in list(forks._hooks) if isinstance(owner, kind))


def _after_fork_partials() -> int:
    """Per-instance ``os.register_at_fork`` callbacks still alive in this process.

    The interpreter keeps every callback registered at fork forever, so one
    registered per dispatcher outlives the dispatcher.
    """
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, partial)
        and getattr(obj.func, "__module__", None) == "dispatcher.middleware"
    )


def test_dispatchers_register_no_fork_hook_of_their_own(
    registry: CountingRegistry, create_app: Callable[[Tenant], Flask]
) -> None:
    gc.collect()  # dispatchers of earlier tests may still await collection
    hooks, partials = _fork_hooks_of(TenantDispatcher), _after_fork_partials()
    made = [
        TenantDispatcher(registry, create_app, base_domain=BASE) for _ in range(100)
    ]
    # Each one is reset in a forked child, through the one shared hook...
    assert _fork_hooks_of(TenantDispatcher) == hooks + 100
    for dispatcher in made:
        dispatcher.close()
    del made, dispatcher
    gc.collect()
    # ...and nothing of theirs outlives them.
    assert _fork_hooks_of(TenantDispatcher) == hooks
    assert _after_fork_partials() == partials


@pytest.mark.filterwarnings(
    # Python 3.12+ warns on any fork of a threaded process: forking one is the test.
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)
def test_a_child_forked_while_the_follow_lock_is_held_looks_tenants_up(
    make_dispatcher: Callable[..., TenantDispatcher], tenants: dict[str, Tenant]
) -> None:
    dispatcher = make_dispatcher(poll_interval=0.05)
    client = Client(dispatcher)
    assert fetch(client, "beta.example.com").get_json()["tenant"] == "beta"

    def child() -> bool:
        # A cold name: the lookup must take the follow lock first.
        response = fetch(client, "acme.example.com")
        return response.status_code == 200 and response.get_json()["tenant"] == "acme"

    with held_by_another_thread(dispatcher._follow_lock):
        status = run_in_child(child)
    assert status is not None, "the child hung: it inherited a held lock"
    assert status == 0, f"the child could not look acme up (status {status})"
