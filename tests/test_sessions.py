"""Tenant-safe sessions: derived keys, per-tenant cookie scope, rotation.

First the pieces on bare Flask apps, then through a real
:class:`TenantDispatcher` and registry under subdomain and path routing, with
:class:`werkzeug.test.Client`, whose cookie jar honours ``Path`` and
``Domain`` as a browser does. The same against real gunicorn processes is
``test_session_servers.py``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask, session
from werkzeug.http import parse_cookie
from werkzeug.test import Client, TestResponse

from dispatcher import (
    CachePolicy,
    Tenant,
    TenantDispatcher,
    TenantRegistry,
    TenantStatus,
)
from dispatcher.sessions import (
    MIN_SECRET_BYTES,
    derive_tenant_secret,
    hkdf_sha256,
    init_tenant_sessions,
)

SECRET = "deployment-secret-" + "x" * 32
CREATED = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
OLD_SECRET = "old-deployment-secret-" + "y" * 32
BASE = "example.com"


def snapshot(slug: str, created: dt.datetime = CREATED) -> Tenant:
    """A tenant snapshot as the registry would hand it to create_app."""
    return Tenant(
        slug=slug,
        owner_email=f"owner@{slug}.test",
        owner_name=None,
        subdomain=slug,
        path_prefix=slug,
        domains=(),
        config={},
        status=TenantStatus.ACTIVE,
        disabled_reason=None,
        version=1,
        created_at=created,
        updated_at=created,
    )


def make_app(
    slug: str | Tenant,
    secret: str | bytes = SECRET,
    previous: tuple[str | bytes, ...] = (),
    **config: Any,
) -> Flask:
    """A tenant app with a login: what every test below logs into."""
    tenant = snapshot(slug) if isinstance(slug, str) else slug
    slug = tenant.slug
    app = Flask(__name__)
    app.config.update(TESTING=True, **config)
    init_tenant_sessions(app, tenant, secret, previous_secrets=previous)

    @app.post("/login/<user>")
    def login(user: str) -> dict[str, Any]:
        session["user"] = user
        return {"tenant": slug, "user": user}

    @app.post("/logout")
    def logout() -> dict[str, Any]:
        session.clear()
        return {"tenant": slug, "user": None}

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        return {"tenant": slug, "user": session.get("user")}

    return app


def session_cookie(response: TestResponse) -> str:
    """The value of the ``session`` cookie a response sets."""
    (header,) = response.headers.getlist("Set-Cookie")
    value = parse_cookie(header).get("session")
    assert value, header
    return value


def user_with_cookie(app: Flask, cookie: str, script_name: str = "") -> Any:
    """Who ``app`` says is logged in when sent ``session=<cookie>``, no jar."""
    client = Client(app, use_cookies=False)
    response = client.get(
        "/whoami",
        headers={"Cookie": f"session={cookie}"},
        environ_overrides={"SCRIPT_NAME": script_name},
    )
    assert response.status_code == 200
    return response.json["user"]  # type: ignore[index]


def login(app: Flask, user: str, script_name: str = "") -> TestResponse:
    client = Client(app, use_cookies=False)
    return client.post(f"/login/{user}", environ_overrides={"SCRIPT_NAME": script_name})


# -- the derived key ------------------------------------------------------------


def test_hkdf_matches_rfc_5869_test_case_1() -> None:
    okm = hkdf_sha256(
        bytes([0x0B] * 22),
        salt=bytes(range(0x0D)),
        info=bytes(range(0xF0, 0xFA)),
        length=42,
    )
    assert okm.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        "34007208d5b887185865"
    )


def test_derived_keys_are_stable() -> None:
    key = derive_tenant_secret(SECRET, snapshot("acme"))
    assert len(key) == 32
    assert derive_tenant_secret(SECRET, snapshot("acme")) == key
    assert derive_tenant_secret(SECRET.encode(), snapshot("acme")) == key
    # Pinned: a change to the derivation would log every user out. Computed
    # by hand: HMAC(HMAC(32 zero bytes, secret), label + slug + NUL + the
    # creation time in microseconds since the epoch + 0x01).
    assert key.hex() == (
        "b5524a48e3a4c81a52d817b3037970b51d9023ca228c8349e3ff9facfe6166b2"
    )


def test_derived_keys_differ_per_slug_and_per_secret() -> None:
    keys = {
        derive_tenant_secret(SECRET, snapshot("acme")),
        derive_tenant_secret(SECRET, snapshot("beta")),
        derive_tenant_secret(SECRET, snapshot("acme2")),
        derive_tenant_secret(OLD_SECRET, snapshot("acme")),
    }
    assert len(keys) == 4
    assert SECRET.encode() not in keys


def test_the_app_gets_the_derived_key() -> None:
    app = make_app("acme", previous=(OLD_SECRET,))
    assert app.secret_key == derive_tenant_secret(SECRET, snapshot("acme"))
    assert app.config["SECRET_KEY_FALLBACKS"] == [
        derive_tenant_secret(OLD_SECRET, snapshot("acme"))
    ]


@pytest.mark.parametrize(
    ("secret", "previous", "message"),
    [
        pytest.param(
            "", (), "secret must be at least 32 bytes long, not 0", id="empty"
        ),
        pytest.param("s3cret", (), "at least 32 bytes long, not 6", id="short"),
        pytest.param(b"x" * 31, (), "at least 32 bytes long, not 31", id="31-bytes"),
        pytest.param(
            SECRET, ("short",), "previous_secrets[0] must be at least 32", id="previous"
        ),
        pytest.param(
            SECRET,
            (OLD_SECRET, b""),
            "previous_secrets[1] must be at least 32 bytes long, not 0",
            id="second-previous",
        ),
    ],
)
def test_a_weak_secret_is_refused(
    secret: str | bytes, previous: tuple[str | bytes, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        make_app("acme", secret, previous)


def test_a_short_secret_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as raised:
        derive_tenant_secret("hunter2", snapshot("acme"))
    assert "hunter2" not in str(raised.value)
    assert str(MIN_SECRET_BYTES) in str(raised.value)


@pytest.mark.parametrize(
    ("secret", "tenant", "error", "message"),
    [
        pytest.param(None, snapshot("acme"), TypeError, "str or bytes", id="none"),
        pytest.param(12, snapshot("acme"), TypeError, "not int", id="int"),
        pytest.param(SECRET, "acme", TypeError, "the Tenant snapshot", id="slug"),
    ],
)
def test_bad_arguments_are_refused(
    secret: Any, tenant: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        derive_tenant_secret(secret, tenant)


def test_a_tenant_has_one_key_however_it_was_read(registry: TenantRegistry) -> None:
    created = registry.create_tenant("acme", owner_email="ada@acme.test")
    read = registry.get_tenant("acme")
    later = registry.update_config("acme", {"greeting": "hi"})
    keys = {derive_tenant_secret(SECRET, t) for t in (created, read, later)}
    assert len(keys) == 1


def test_a_new_tenant_on_a_deleted_tenants_slug_refuses_its_sessions(
    registry: TenantRegistry,
) -> None:
    old = make_app(registry.create_tenant("acme", owner_email="mallory@evil.test"))
    cookie = session_cookie(login(old, "admin"))
    registry.delete_tenant("acme")
    new = make_app(registry.create_tenant("acme", owner_email="victim@corp.test"))

    assert user_with_cookie(old, cookie) == "admin"
    assert user_with_cookie(new, cookie) is None


# -- cookies on bare apps ---------------------------------------------------------


def test_a_cookie_minted_for_a_is_refused_by_b() -> None:
    acme, beta = make_app("acme"), make_app("beta")
    cookie = session_cookie(login(acme, "ada"))
    assert user_with_cookie(acme, cookie) == "ada"
    assert user_with_cookie(beta, cookie) is None


def test_rotation_accepts_cookies_signed_with_the_previous_secret() -> None:
    cookie = session_cookie(login(make_app("acme", OLD_SECRET), "ada"))

    rotated = make_app("acme", SECRET, (OLD_SECRET,))
    assert user_with_cookie(rotated, cookie) == "ada"
    # Without the fallback the old cookie is refused...
    assert user_with_cookie(make_app("acme", SECRET), cookie) is None
    # ...and the previous secret is no way into another tenant.
    assert user_with_cookie(make_app("beta", SECRET, (OLD_SECRET,)), cookie) is None
    # New cookies are signed with the new secret alone.
    fresh = session_cookie(login(rotated, "ada"))
    assert user_with_cookie(make_app("acme", SECRET), fresh) == "ada"
    assert user_with_cookie(make_app("acme", OLD_SECRET), fresh) is None


@pytest.mark.parametrize(
    ("script_name", "path"),
    [
        pytest.param("", "/", id="by-host"),
        pytest.param("/acme", "/acme", id="by-path"),
        pytest.param("/mount/acme", "/mount/acme", id="mounted-by-path"),
    ],
)
def test_the_cookie_path_is_the_script_root_of_each_request(
    script_name: str, path: str
) -> None:
    app = make_app("acme")
    (header,) = login(app, "ada", script_name).headers.getlist("Set-Cookie")
    attributes = [part.strip() for part in header.split(";")]
    assert f"Path={path}" in attributes
    assert "HttpOnly" in attributes
    assert "SameSite=Lax" in attributes
    assert not [a for a in attributes if a.lower().startswith("domain=")]


def test_a_domain_configured_before_init_is_refused() -> None:
    with pytest.raises(ValueError, match="SESSION_COOKIE_DOMAIN='.example.com'"):
        make_app("acme", SESSION_COOKIE_DOMAIN=".example.com")


def test_a_cookie_path_configured_before_init_is_refused() -> None:
    with pytest.raises(ValueError, match="SESSION_COOKIE_PATH='/'"):
        make_app("acme", SESSION_COOKIE_PATH="/")


def test_a_domain_configured_after_init_is_ignored() -> None:
    app = make_app("acme")
    app.config["SESSION_COOKIE_DOMAIN"] = ".example.com"
    (header,) = login(app, "ada").headers.getlist("Set-Cookie")
    assert "domain=" not in header.lower()


def test_a_samesite_the_app_chose_is_kept() -> None:
    app = make_app("acme", SESSION_COOKIE_SAMESITE="Strict")
    (header,) = login(app, "ada").headers.getlist("Set-Cookie")
    assert "SameSite=Strict" in header


# -- through the dispatcher -------------------------------------------------------


@dataclass(frozen=True)
class Routing:
    """Where tenant ``slug``'s URLs are under one routing."""

    by_path: bool

    def host(self, slug: str) -> str:
        return BASE if self.by_path else f"{slug}.{BASE}"

    def path(self, slug: str, path: str) -> str:
        return f"/{slug}{path}" if self.by_path else path


ROUTINGS = pytest.mark.parametrize(
    "routing",
    [
        pytest.param(Routing(by_path=False), id="subdomain"),
        pytest.param(Routing(by_path=True), id="path"),
    ],
)


@pytest.fixture
def site(registry: TenantRegistry) -> Iterator[TenantDispatcher]:
    for slug in ("acme", "beta"):
        registry.create_tenant(
            slug, owner_email=f"owner@{slug}.test", subdomain=slug, path_prefix=slug
        )

    def create_app(tenant: Tenant) -> Flask:
        return make_app(tenant.slug)

    site = TenantDispatcher(
        registry,
        create_app,
        base_domain=BASE,
        path_routing=True,
        policy=CachePolicy(poll_interval=None),
    )
    yield site
    site.close()


def call(
    client: Client, routing: Routing, slug: str, path: str, **kwargs: Any
) -> TestResponse:
    method = "POST" if path.startswith(("/login", "/logout")) else "GET"
    response = client.open(
        routing.path(slug, path),
        base_url=f"http://{routing.host(slug)}",
        method=method,
        buffered=True,
        **kwargs,
    )
    assert response.status_code == 200, response.text
    assert response.json is not None
    assert response.json["tenant"] == slug
    return response


def whoami(client: Client, routing: Routing, slug: str) -> Any:
    return call(client, routing, slug, "/whoami").json["user"]  # type: ignore[index]


@ROUTINGS
def test_a_cookie_of_a_is_refused_by_b(
    site: TenantDispatcher, routing: Routing
) -> None:
    browser = Client(site)
    cookie = session_cookie(call(browser, routing, "acme", "/login/ada"))
    assert whoami(browser, routing, "acme") == "ada"
    # The browser does not send it to beta...
    assert whoami(browser, routing, "beta") is None
    # ...and sent by hand, beta refuses it.
    stolen = Client(site, use_cookies=False)
    headers = {"Cookie": f"session={cookie}"}
    response = call(stolen, routing, "beta", "/whoami", headers=headers)
    assert response.json == {"tenant": "beta", "user": None}
    assert call(stolen, routing, "acme", "/whoami", headers=headers).json == {
        "tenant": "acme",
        "user": "ada",
    }


@ROUTINGS
def test_logging_into_a_leaves_b_alone(
    site: TenantDispatcher, routing: Routing
) -> None:
    browser = Client(site)
    call(browser, routing, "beta", "/login/bob")
    call(browser, routing, "acme", "/login/ada")
    assert whoami(browser, routing, "beta") == "bob"
    assert whoami(browser, routing, "acme") == "ada"

    call(browser, routing, "acme", "/logout")
    assert whoami(browser, routing, "acme") is None
    assert whoami(browser, routing, "beta") == "bob"


@ROUTINGS
def test_the_browser_stores_the_cookie_for_the_tenant_only(
    site: TenantDispatcher, routing: Routing
) -> None:
    browser = Client(site)
    call(browser, routing, "acme", "/login/ada")
    domain = routing.host("acme")
    path = "/acme" if routing.by_path else "/"
    cookie = browser.get_cookie("session", domain=domain, path=path)
    assert cookie is not None
    assert cookie.origin_only  # host-only: no Domain attribute


def test_one_tenant_by_host_and_by_path_has_two_scoped_cookies(
    site: TenantDispatcher,
) -> None:
    browser = Client(site)
    by_host, by_path = Routing(by_path=False), Routing(by_path=True)
    call(browser, by_host, "acme", "/login/ada")
    call(browser, by_path, "acme", "/login/eve")
    assert whoami(browser, by_host, "acme") == "ada"
    assert whoami(browser, by_path, "acme") == "eve"
    assert whoami(browser, by_path, "beta") is None
    assert browser.get_cookie("session", domain="acme.example.com") is not None
    assert browser.get_cookie("session", domain=BASE, path="/acme") is not None
