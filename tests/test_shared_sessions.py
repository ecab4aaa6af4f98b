"""Tenant-safe sessions on a shared app: one app, each request's tenant's key.

The same guarantees as ``test_sessions.py`` gives apps per tenant, through a
real :class:`TenantDispatcher` and registry under subdomain and path routing:
a cookie signed at tenant A is refused at tenant B on the very same app.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, session
from test_sessions import (
    OLD_SECRET,
    ROUTINGS,
    SECRET,
    Routing,
    call,
    make_app,
    session_cookie,
    snapshot,
    whoami,
)
from werkzeug.test import Client

from dispatcher import (
    CachePolicy,
    Tenant,
    TenantDispatcher,
    TenantRegistry,
    current_tenant,
)
from dispatcher.context import ENVIRON_KEY
from dispatcher.sessions import DERIVED_KEYS, init_shared_sessions

BASE = "example.com"


def shared_app(secret: str | bytes = SECRET, previous: tuple[str, ...] = ()) -> Flask:
    """One app for every tenant, with a login like ``test_sessions.make_app``'s."""
    app = Flask("shared")
    app.config.update(TESTING=True)
    init_shared_sessions(app, secret, previous_secrets=previous)

    @app.post("/login/<user>")
    def login(user: str) -> dict[str, Any]:
        session["user"] = user
        return {"tenant": current_tenant.slug, "user": user}

    @app.post("/logout")
    def logout() -> dict[str, Any]:
        session.clear()
        return {"tenant": current_tenant.slug, "user": None}

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        return {"tenant": current_tenant.slug, "user": session.get("user")}

    return app


@pytest.fixture
def make_site(
    registry: TenantRegistry,
) -> Iterator[Callable[[Flask], TenantDispatcher]]:
    for slug in ("acme", "beta"):
        registry.create_tenant(
            slug, owner_email=f"owner@{slug}.test", subdomain=slug, path_prefix=slug
        )
    made: list[TenantDispatcher] = []

    def make(app: Flask) -> TenantDispatcher:
        site = TenantDispatcher(
            registry,
            shared_app=app,
            base_domain=BASE,
            path_routing=True,
            policy=CachePolicy(poll_interval=None),
        )
        made.append(site)
        return site

    yield make
    for site in made:
        site.close()


@ROUTINGS
def test_a_cookie_of_a_is_refused_by_b_on_the_same_app(
    make_site: Callable[[Flask], TenantDispatcher], routing: Routing
) -> None:
    site = make_site(shared_app())
    browser = Client(site)
    cookie = session_cookie(call(browser, routing, "acme", "/login/ada"))
    assert whoami(browser, routing, "acme") == "ada"
    assert whoami(browser, routing, "beta") is None

    stolen = Client(site, use_cookies=False)
    headers = {"Cookie": f"session={cookie}"}
    assert call(stolen, routing, "beta", "/whoami", headers=headers).json == {
        "tenant": "beta",
        "user": None,
    }
    assert call(stolen, routing, "acme", "/whoami", headers=headers).json == {
        "tenant": "acme",
        "user": "ada",
    }


@ROUTINGS
def test_logging_into_a_leaves_b_alone_on_the_same_app(
    make_site: Callable[[Flask], TenantDispatcher], routing: Routing
) -> None:
    browser = Client(make_site(shared_app()))
    call(browser, routing, "beta", "/login/bob")
    call(browser, routing, "acme", "/login/ada")
    assert whoami(browser, routing, "beta") == "bob"
    assert whoami(browser, routing, "acme") == "ada"
    call(browser, routing, "acme", "/logout")
    assert whoami(browser, routing, "acme") is None
    assert whoami(browser, routing, "beta") == "bob"


@ROUTINGS
def test_the_cookie_is_scoped_to_the_tenant(
    make_site: Callable[[Flask], TenantDispatcher], routing: Routing
) -> None:
    browser = Client(make_site(shared_app()))
    response = call(browser, routing, "acme", "/login/ada")
    (header,) = response.headers.getlist("Set-Cookie")
    attributes = [part.strip() for part in header.split(";")]
    assert ("Path=/acme" if routing.by_path else "Path=/") in attributes
    assert "SameSite=Lax" in attributes
    assert not [a for a in attributes if a.lower().startswith("domain=")]


@ROUTINGS
def test_a_shared_app_and_an_own_app_accept_each_others_cookies(
    registry: TenantRegistry,
    make_site: Callable[[Flask], TenantDispatcher],
    routing: Routing,
) -> None:
    """The same key either way: moving a tenant between an app of its own
    and the shared app keeps its users logged in."""
    browser = Client(make_site(shared_app()))
    cookie = session_cookie(call(browser, routing, "acme", "/login/ada"))
    tenant = registry.find_by_slug("acme")
    assert tenant is not None
    own = make_app(tenant)
    script_name = "/acme" if routing.by_path else ""
    response = Client(own, use_cookies=False).get(
        "/whoami",
        headers={"Cookie": f"session={cookie}"},
        environ_overrides={"SCRIPT_NAME": script_name},
    )
    assert response.json == {"tenant": "acme", "user": "ada"}


@ROUTINGS
def test_rotation_on_a_shared_app(
    make_site: Callable[[Flask], TenantDispatcher], routing: Routing
) -> None:
    old_site = make_site(shared_app(OLD_SECRET))
    cookie = session_cookie(call(Client(old_site), routing, "acme", "/login/ada"))
    headers = {"Cookie": f"session={cookie}"}

    rotated = Client(make_site(shared_app(SECRET, (OLD_SECRET,))), use_cookies=False)
    assert call(rotated, routing, "acme", "/whoami", headers=headers).json == {
        "tenant": "acme",
        "user": "ada",
    }
    # The previous secret is no way into another tenant...
    assert call(rotated, routing, "beta", "/whoami", headers=headers).json == {
        "tenant": "beta",
        "user": None,
    }
    # ...and without it the old cookie is refused.
    plain = Client(make_site(shared_app(SECRET)), use_cookies=False)
    assert call(plain, routing, "acme", "/whoami", headers=headers).json == {
        "tenant": "acme",
        "user": None,
    }
    # New cookies are signed with the new secret alone.
    fresh = session_cookie(call(rotated, routing, "acme", "/login/eve"))
    fresh_headers = {"Cookie": f"session={fresh}"}
    assert call(plain, routing, "acme", "/whoami", headers=fresh_headers).json == {
        "tenant": "acme",
        "user": "eve",
    }
    stale = Client(make_site(shared_app(OLD_SECRET)), use_cookies=False)
    assert call(stale, routing, "acme", "/whoami", headers=fresh_headers).json == {
        "tenant": "acme",
        "user": None,
    }


def test_a_request_with_no_tenant_is_refused_not_signed() -> None:
    app = shared_app()
    app.config["TESTING"] = False
    response = Client(app).get("/whoami")
    assert response.status_code == 500


def test_a_request_with_no_tenant_raises_a_clear_error() -> None:
    app = shared_app()  # TESTING: the error propagates, contexts are popped
    with pytest.raises(RuntimeError, match="shared app 'shared' got a request with no"):
        app.test_client().get("/whoami")


def test_derived_keys_are_cached_and_bounded() -> None:
    app = shared_app()
    interface = app.session_interface
    tenants = [snapshot(f"t{i}") for i in range(DERIVED_KEYS + 10)]
    for tenant in tenants:
        with app.test_request_context("/", environ_base={ENVIRON_KEY: tenant}):
            interface.get_signing_serializer(app)
    keys = interface._keys  # type: ignore[attr-defined]
    info = keys.cache_info()
    assert (info.misses, info.currsize) == (len(tenants), DERIVED_KEYS)
    with app.test_request_context("/", environ_base={ENVIRON_KEY: tenants[-1]}):
        interface.get_signing_serializer(app)
    assert keys.cache_info().misses == info.misses  # derived once per tenant


@pytest.mark.parametrize(
    ("config", "match"),
    [
        pytest.param({"SESSION_COOKIE_DOMAIN": ".example.com"}, "DOMAIN", id="domain"),
        pytest.param({"SESSION_COOKIE_PATH": "/"}, "PATH", id="path"),
    ],
)
def test_a_cookie_scope_configured_before_init_is_refused(
    config: dict[str, Any], match: str
) -> None:
    app = Flask("shared")
    app.config.update(config)
    with pytest.raises(ValueError, match=f"SESSION_COOKIE_{match}=.* shared app"):
        init_shared_sessions(app, SECRET)


@pytest.mark.parametrize(
    ("secret", "previous", "error"),
    [
        pytest.param("short", (), ValueError, id="short"),
        pytest.param(42, (), TypeError, id="not-text"),
        pytest.param(SECRET, ("short",), ValueError, id="short-previous"),
    ],
)
def test_bad_secrets_are_refused(secret: Any, previous: Any, error: type) -> None:
    with pytest.raises(error):
        init_shared_sessions(Flask("shared"), secret, previous_secrets=previous)


def test_a_tenant_snapshot_is_what_picks_the_key() -> None:
    """Same slug, another creation time (a re-created tenant): another key."""
    app = shared_app()
    first = snapshot("acme")
    second = snapshot("acme", first.created_at + dt.timedelta(days=1))
    client = Client(app, use_cookies=False)

    def as_tenant(tenant: Tenant, method: str, path: str, **kw: Any) -> Any:
        return client.open(
            path, method=method, environ_base={ENVIRON_KEY: tenant}, **kw
        )

    cookie = session_cookie(as_tenant(first, "POST", "/login/ada"))
    headers = {"Cookie": f"session={cookie}"}
    assert as_tenant(first, "GET", "/whoami", headers=headers).json["user"] == "ada"
    assert as_tenant(second, "GET", "/whoami", headers=headers).json["user"] is None
