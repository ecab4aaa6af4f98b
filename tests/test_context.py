"""The helpers tenant apps use: current_tenant, tenant_from_environ, tenant_url."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from werkzeug.test import Client

from dispatcher import (
    ENVIRON_KEY,
    Tenant,
    TenantDispatcher,
    TenantRegistry,
    current_tenant,
    tenant_from_environ,
    tenant_url,
)

BASE = "example.com"


@pytest.fixture
def acme(registry: TenantRegistry) -> Tenant:
    """Every kind of routing name; www.acme.test is the primary domain."""
    return registry.create_tenant(
        "acme",
        owner_email="owner@acme.test",
        subdomain="acme",
        path_prefix="acme",
        domains=["www.acme.test", "shop.acme.test"],
    )


@pytest.fixture
def beta(registry: TenantRegistry) -> Tenant:
    """A subdomain and a path prefix, no custom domain."""
    return registry.create_tenant(
        "beta", owner_email="owner@beta.test", subdomain="beta", path_prefix="beta"
    )


def create_app(tenant: Tenant) -> Flask:
    app = Flask(__name__)
    app.config["TESTING"] = True

    @app.route("/whoami")
    def whoami() -> dict[str, Any]:
        current = current_tenant._get_current_object()  # type: ignore[attr-defined]
        return {
            "slug": current_tenant.slug,
            "is_environ_tenant": current is request.environ["dispatcher.tenant"],
            "is_built_for": current_tenant.slug == tenant.slug,
            "reset_link": tenant_url(current_tenant, "/reset", base_domain=BASE),
            "request_host": request.host,
        }

    return app


@pytest.fixture
def client(registry: TenantRegistry, acme: Tenant, beta: Tenant) -> Iterator[Client]:
    dispatcher = TenantDispatcher(
        registry, create_app, base_domain=BASE, path_routing=True
    )
    yield Client(dispatcher)
    dispatcher.close()


def fetch(
    client: Client, host: str, path: str, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """GET ``path`` with this raw Host header; the JSON of a 200 answer."""
    response = client.get(
        path, headers=headers, environ_overrides={"HTTP_HOST": host}, buffered=True
    )
    assert response.status_code == 200
    data: dict[str, Any] = response.get_json()
    return data


# -- tenant_url -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "path", "options", "expected"),
    [
        pytest.param(
            {
                "subdomain": "t",
                "path_prefix": "t",
                "domains": ["www.t.test", "shop.t.test"],
            },
            "/reset",
            {"base_domain": BASE},
            "https://www.t.test/reset",
            id="primary-domain-first",
        ),
        pytest.param(
            {"domains": ["www.t.test"]},
            "/",
            {},
            "https://www.t.test/",
            id="domain-needs-no-base",
        ),
        pytest.param(
            {"subdomain": "t", "path_prefix": "t"},
            "/reset",
            {"base_domain": BASE},
            "https://t.example.com/reset",
            id="subdomain-before-prefix",
        ),
        pytest.param(
            {"path_prefix": "t"},
            "/reset?token=1",
            {"base_domain": BASE},
            "https://example.com/t/reset?token=1",
            id="path-prefix",
        ),
        pytest.param(
            {"path_prefix": "t"},
            "/",
            {"base_domain": BASE},
            "https://example.com/t/",
            id="path-prefix-root",
        ),
        pytest.param(
            {"subdomain": "t"},
            "/x",
            {"base_domain": BASE, "scheme": "http"},
            "http://t.example.com/x",
            id="scheme",
        ),
    ],
)
def test_tenant_url(
    registry: TenantRegistry,
    names: dict[str, Any],
    path: str,
    options: dict[str, Any],
    expected: str,
) -> None:
    tenant = registry.create_tenant("t", owner_email="owner@t.test", **names)
    assert tenant_url(tenant, path, **options) == expected
    # A snapshot read back from the database gives the same link.
    assert tenant_url(registry.get_tenant("t"), path, **options) == expected


def test_tenant_url_default_path(acme: Tenant) -> None:
    assert tenant_url(acme) == "https://www.acme.test/"


def test_tenant_url_follows_the_primary_domain(
    registry: TenantRegistry, acme: Tenant
) -> None:
    assert tenant_url(acme, "/x") == "https://www.acme.test/x"
    moved = registry.add_domain("acme", "shop.acme.test", primary=True)
    assert tenant_url(moved, "/x") == "https://shop.acme.test/x"
    gone = registry.remove_domain("acme", "shop.acme.test")
    assert tenant_url(gone, "/x") == "https://www.acme.test/x"
    gone = registry.remove_domain("acme", "www.acme.test")
    assert tenant_url(gone, "/x", base_domain=BASE) == "https://acme.example.com/x"


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("reset", id="relative"),
        pytest.param("", id="empty"),
        pytest.param("evil.test/reset", id="host-like"),
        pytest.param("https://evil.test/reset", id="absolute-url"),
        pytest.param("?next=/", id="query-only"),
    ],
)
def test_tenant_url_path_must_start_with_slash(acme: Tenant, path: str) -> None:
    with pytest.raises(ValueError, match="must start with '/'") as info:
        tenant_url(acme, path, base_domain=BASE)
    assert repr(path) in str(info.value)


@pytest.mark.parametrize(
    ("names", "options"),
    [
        pytest.param({}, {"base_domain": BASE}, id="nothing"),
        pytest.param({"subdomain": "t"}, {}, id="subdomain-without-base"),
        pytest.param({"path_prefix": "t"}, {}, id="prefix-without-base"),
    ],
)
def test_tenant_url_without_a_name_to_use(
    registry: TenantRegistry, names: dict[str, Any], options: dict[str, Any]
) -> None:
    tenant = registry.create_tenant("t", owner_email="owner@t.test", **names)
    with pytest.raises(ValueError, match="tenant 't' has no domain"):
        tenant_url(tenant, "/", **options)


# -- tenant_from_environ and current_tenant --------------------------------------


def test_tenant_from_environ(acme: Tenant) -> None:
    assert tenant_from_environ({"dispatcher.tenant": acme}) is acme


def test_tenant_from_environ_without_the_key() -> None:
    with pytest.raises(RuntimeError, match="did not come through a TenantDispatcher"):
        tenant_from_environ({"PATH_INFO": "/"})


def test_current_tenant_outside_the_dispatcher() -> None:
    app = Flask(__name__)

    @app.route("/")
    def index() -> str:
        return current_tenant.slug

    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(RuntimeError, match="did not come through a TenantDispatcher"):
        app.test_client().get("/")


def test_current_tenant_outside_a_request() -> None:
    with pytest.raises(RuntimeError, match="current_tenant .* outside of a request"):
        current_tenant.slug  # noqa: B018


def test_current_tenant_is_a_proxy_like_current_app(acme: Tenant) -> None:
    """One obvious way, Flask's: ``current_tenant.slug``, not a call."""
    app = Flask(__name__)
    with app.test_request_context(environ_overrides={ENVIRON_KEY: acme}):
        assert current_tenant.slug == "acme"
        assert current_tenant == acme
        assert current_tenant._get_current_object() is acme  # type: ignore[attr-defined]
        with pytest.raises(TypeError, match="not callable"):
            current_tenant()  # type: ignore[operator]


def test_environ_key() -> None:
    assert ENVIRON_KEY == "dispatcher.tenant"


#: Imported by the dispatcher's machinery, never by what tenant apps import.
MACHINERY = (
    "dispatcher.middleware",
    "dispatcher.registry",
    "dispatcher.cache",
    "dispatcher.follower",
    "sqlalchemy",
    "alembic",
)


def test_context_imports_none_of_the_machinery() -> None:
    """Tenant apps import dispatcher.context; it must not load the registry,
    the cache or the follower. The package's __init__ re-exports everything
    for users, so the check loads the module under an empty package."""
    package = Path(__file__).parent.parent / "dispatcher"
    script = f"""
import sys, types
package = types.ModuleType("dispatcher")
package.__path__ = [{str(package)!r}]
sys.modules["dispatcher"] = package
import dispatcher.context
print(",".join(name for name in {MACHINERY!r} if name in sys.modules))
"""
    loaded = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""


@pytest.mark.parametrize(
    ("host", "path", "slug"),
    [
        pytest.param("acme.example.com", "/whoami", "acme", id="subdomain"),
        pytest.param("shop.acme.test", "/whoami", "acme", id="custom-domain"),
        pytest.param("example.com", "/acme/whoami", "acme", id="path"),
        pytest.param("beta.example.com", "/whoami", "beta", id="other-subdomain"),
        pytest.param("www.example.com", "/beta/whoami", "beta", id="other-path"),
    ],
)
def test_current_tenant_in_a_view(
    client: Client, host: str, path: str, slug: str
) -> None:
    data = fetch(client, host, path)
    assert data["slug"] == slug
    assert data["is_environ_tenant"] is True
    assert data["is_built_for"] is True


# -- links do not trust the Host header ------------------------------------------


@pytest.mark.parametrize(
    ("host", "path", "headers", "link"),
    [
        pytest.param(
            "acme.example.com", "/whoami", {}, "https://www.acme.test/reset", id="plain"
        ),
        pytest.param(
            "ACME.Example.COM.:8443",
            "/whoami",
            {},
            "https://www.acme.test/reset",
            id="odd-spelling",
        ),
        pytest.param(
            "Example.com.:8443",
            "/acme/whoami",
            {},
            "https://www.acme.test/reset",
            id="path-routed",
        ),
        pytest.param(
            "shop.acme.test",
            "/whoami",
            {"X-Forwarded-Host": "evil.test", "Forwarded": "host=evil.test"},
            "https://www.acme.test/reset",
            id="forwarded-headers",
        ),
        pytest.param(
            "www.example.com",
            "/beta/whoami",
            {"X-Forwarded-Host": "evil.test"},
            "https://beta.example.com/reset",
            id="subdomain-tenant-path-routed",
        ),
        pytest.param(
            "beta.example.com",
            "/whoami",
            {"X-Forwarded-Host": "evil.test"},
            "https://beta.example.com/reset",
            id="subdomain-tenant-forwarded",
        ),
    ],
)
def test_spoofed_host_does_not_change_tenant_url(
    client: Client, host: str, path: str, headers: dict[str, str], link: str
) -> None:
    data = fetch(client, host, path, headers)
    assert data["reset_link"] == link
    # The view did see the Host it was sent; the link just does not use it.
    assert data["request_host"] == host


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("evil.test", id="foreign"),
        pytest.param("evil.example.com", id="unknown-subdomain"),
        pytest.param("127.0.0.1:8000", id="ip"),
    ],
)
def test_a_foreign_host_reaches_no_path_routed_tenant(
    client: Client, host: str
) -> None:
    """The tenant's own links (url_for(_external=True), redirects) use the Host
    it was reached on, so it must never be reached on a host not meant for it."""
    response = client.get(
        "/acme/whoami", environ_overrides={"HTTP_HOST": host}, buffered=True
    )
    assert response.status_code == 404


def test_tenant_url_in_a_view_follows_registry_changes(
    registry: TenantRegistry, client: Client
) -> None:
    assert fetch(client, "beta.example.com", "/whoami")["reset_link"] == (
        "https://beta.example.com/reset"
    )
    registry.add_domain("beta", "beta.test")
    assert fetch(client, "beta.example.com", "/whoami")["reset_link"] == (
        "https://beta.test/reset"
    )
