"""The demo's signup site, end to end, assembled as ``dispatcher.wsgi`` does it.

A :class:`TenantDispatcher` with the demo tenant app and the signup app as its
default app, on a real registry, driven by :class:`werkzeug.test.Client` (which
keeps the CSRF cookie between requests, like a browser).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from werkzeug.test import Client, TestResponse

from dispatcher import Tenant, TenantDispatcher, TenantRegistry
from dispatcher.demo import create_app
from dispatcher.demo.signup import CSRF_COOKIE, create_signup_app
from dispatcher.demo.tenant_app import DEFAULT_COLOUR
from models import User as UserRow

BASE = "localhost"
APEX = "localhost:8000"

#: A valid signup; tests override single fields.
FORM = {"organisation": "Acme Corp", "subdomain": "Acme", "email": "ada@acme.test"}


# -- fixtures and helpers -------------------------------------------------------


def make_site(registry: TenantRegistry) -> TenantDispatcher:
    """What ``dispatcher.wsgi.make_application`` builds by default, minus the
    change follower's threads."""
    return TenantDispatcher(
        registry,
        create_app,
        base_domain=BASE,
        path_routing=True,
        default_app=create_signup_app(registry, BASE),
        # Only this registry object's own writes evict, synchronously: what these
        # tests check. (test_wsgi runs make_application's defaults, follower on.)
        poll_interval=None,
    )


@pytest.fixture
def site(registry: TenantRegistry) -> Iterator[TenantDispatcher]:
    site = make_site(registry)
    yield site
    site.close()


@pytest.fixture
def client(site: TenantDispatcher) -> Client:
    return Client(site)


@pytest.fixture
def local_registry(tmp_path: Path) -> Iterator[TenantRegistry]:
    """A migrated SQLite registry, whatever backend the run tests.

    For answers decided before anything is written (validation, CSRF, routing
    to the 404 page, rendering): the PostgreSQL run then spends its time on
    the tests where the backend matters.
    """
    with TenantRegistry(f"sqlite:///{tmp_path / 'local.sqlite3'}") as registry:
        registry.migrate()
        yield registry


@pytest.fixture
def local_site(local_registry: TenantRegistry) -> Iterator[TenantDispatcher]:
    site = make_site(local_registry)
    yield site
    site.close()


@pytest.fixture
def local_client(local_site: TenantDispatcher) -> Client:
    return Client(local_site)


def get(client: Client, host: str = APEX, path: str = "/") -> TestResponse:
    """GET ``http://<host><path>``; buffered, so the app's lease is released."""
    return client.get(path, base_url=f"http://{host}", buffered=True)


def post(client: Client, data: dict[str, str], host: str = APEX) -> TestResponse:
    return client.post("/", base_url=f"http://{host}", data=data, buffered=True)


def form_token(response: TestResponse) -> str:
    found = re.search(r'name="csrf_token" value="([^"]*)"', response.text)
    assert found is not None, response.text
    return html.unescape(found.group(1))


def sign_up(client: Client, host: str = APEX, **fields: str | None) -> TestResponse:
    """Load the form like a browser, then send it with ``fields`` changed.

    A field given as None is left out of the form.
    """
    token = form_token(get(client, host))
    data: dict[str, str | None] = {**FORM, "csrf_token": token, **fields}
    return post(client, {k: v for k, v in data.items() if v is not None}, host)


def error_of(response: TestResponse) -> str | None:
    """The error paragraph of the signup page, unescaped."""
    found = re.search(
        r'<p class="error" id="error" role="alert">(.*?)</p>', response.text
    )
    return None if found is None else html.unescape(found.group(1))


def form_values(response: TestResponse) -> dict[str, str]:
    """The values the signup form shows, unescaped."""
    return {
        name: html.unescape(value)
        for name, value in re.findall(
            r'<input id="(\w+)" name="\w+"(?: type="\w+")? value="([^"]*)"',
            response.text,
        )
    }


def follow(client: Client, response: TestResponse) -> TestResponse:
    """GET the Location of a redirect to another host (the client will not)."""
    location = urlsplit(response.headers["Location"])
    return get(client, location.netloc, location.path)


def written(registry: TenantRegistry) -> tuple[list[Tenant], int, int]:
    """Tenants, the change feed's position and the number of owners."""
    with registry.engine.connect() as connection:
        owners = connection.execute(select(func.count()).select_from(UserRow))
        count = owners.scalar_one()
    return registry.list_tenants(), registry.latest_generation(), count


# -- the form -------------------------------------------------------------------


def test_the_form_has_a_csrf_token_and_cookie(client: Client) -> None:
    response = get(client)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "Start your site" in response.text
    assert '<form method="post" action="/">' in response.text
    token = form_token(response)
    assert len(token) >= 32
    cookie = client.get_cookie(CSRF_COOKIE, domain=BASE)
    assert cookie is not None
    assert cookie.value == token
    assert cookie.http_only
    assert cookie.same_site == "Strict"
    (header,) = response.headers.getlist("Set-Cookie")
    assert "HttpOnly" in header
    assert "SameSite=Strict" in header
    # The same browser keeps its token; another one gets its own.
    assert form_token(get(client)) == token
    assert form_token(get(Client(client.application))) != token


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("localhost:8000", id="apex"),
        pytest.param("localhost", id="no-port"),
        pytest.param("LocalHost:8000", id="upper-case"),
        pytest.param("www.localhost:8000", id="www"),
        pytest.param("localhost.:8000", id="trailing-dot"),
    ],
)
def test_the_apex_in_any_spelling_shows_the_form(
    local_client: Client, host: str
) -> None:
    response = get(local_client, host)
    assert response.status_code == 200
    assert "Start your site" in response.text


# -- signing up -----------------------------------------------------------------


def test_a_signup_is_served_on_the_very_next_request(
    client: Client, registry: TenantRegistry
) -> None:
    # Remembered as unknown first: the signup must make the dispatcher forget.
    assert get(client, "acme.localhost:8000").status_code == 404

    response = sign_up(client, email="Ada@ACME.test")

    assert response.status_code == 303
    assert response.headers["Location"] == "http://acme.localhost:8000/"
    home = follow(client, response)
    assert home.status_code == 200
    assert '<h1 id="greeting">Welcome to Acme Corp!</h1>' in home.text
    assert '<strong id="name">Acme Corp</strong>' in home.text
    assert '<code id="slug">acme</code>' in home.text
    assert "owned by ada@acme.test" in home.text

    tenant = registry.get_tenant("acme")
    assert tenant.is_active
    assert tenant.subdomain == "acme"
    assert tenant.path_prefix == "acme"
    assert tenant.owner_email == "ada@acme.test"
    assert dict(tenant.config) == {
        "name": "Acme Corp",
        "greeting": "Welcome to Acme Corp!",
    }


def test_the_new_site_is_also_under_its_path_prefix(client: Client) -> None:
    assert sign_up(client).status_code == 303
    home = get(client, APEX, "/acme/")
    assert home.status_code == 200
    assert "Welcome to Acme Corp!" in home.text
    assert 'href="/acme/about"' in home.text
    assert 'href="/acme/"' in home.text
    about = get(client, APEX, "/acme/about")
    assert about.status_code == 200
    assert "About acme" in about.text
    assert "<code>/acme/about</code>" in about.text
    # By subdomain the same links have no prefix.
    assert 'href="/about"' in get(client, "acme.localhost:8000").text


@pytest.mark.parametrize(
    ("host", "location"),
    [
        pytest.param("localhost:8000", "http://acme.localhost:8000/", id="port"),
        pytest.param("localhost", "http://acme.localhost/", id="no-port"),
        pytest.param("www.localhost:5000", "http://acme.localhost:5000/", id="www"),
    ],
)
def test_the_redirect_keeps_the_port(
    local_client: Client, host: str, location: str
) -> None:
    response = sign_up(local_client, host)
    assert response.status_code == 303
    assert response.headers["Location"] == location


def test_fields_are_stripped(
    local_client: Client, local_registry: TenantRegistry
) -> None:
    response = sign_up(
        local_client,
        organisation="  Acme Corp ",
        subdomain=" ACME ",
        email=" ada@acme.test ",
    )
    assert response.status_code == 303
    tenant = local_registry.get_tenant("acme")
    assert tenant.config["name"] == "Acme Corp"
    assert tenant.owner_email == "ada@acme.test"


def test_an_organisation_of_100_characters_is_accepted(
    local_client: Client, local_registry: TenantRegistry
) -> None:
    assert sign_up(local_client, organisation="x" * 100).status_code == 303
    assert local_registry.get_tenant("acme").config["name"] == "x" * 100


def test_one_owner_may_sign_up_twice(client: Client, registry: TenantRegistry) -> None:
    assert sign_up(client).status_code == 303
    assert sign_up(client, subdomain="acme2", organisation="Acme 2").status_code == 303
    assert [t.owner_email for t in registry.list_tenants()] == ["ada@acme.test"] * 2


# -- refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    "subdomain",
    [
        pytest.param("ACME", id="upper-case"),
        pytest.param("acme", id="same"),
        pytest.param(" Acme ", id="spaces"),
    ],
)
def test_a_taken_name_is_409_with_the_form_refilled(
    client: Client, registry: TenantRegistry, subdomain: str
) -> None:
    assert sign_up(client).status_code == 303
    before = written(registry)

    other = Client(client.application)
    response = sign_up(
        other, organisation="Other Org", subdomain=subdomain, email="bob@other.test"
    )

    assert response.status_code == 409
    assert error_of(response) == "The name 'acme' is taken; choose another."
    assert form_values(response) == {
        "organisation": "Other Org",
        "subdomain": subdomain.strip(),
        "email": "bob@other.test",
    }
    assert written(registry) == before
    home = get(other, "acme.localhost:8000").text
    assert '<h1 id="greeting">Welcome to Acme Corp!</h1>' in home
    assert "Other Org" not in home


def test_a_name_another_tenant_routes_by_path_is_taken(
    client: Client, registry: TenantRegistry
) -> None:
    registry.create_tenant("zeta", owner_email="z@zeta.test", path_prefix="beta")
    before = written(registry)
    response = sign_up(client, subdomain="beta")
    assert response.status_code == 409
    assert "'beta' is taken" in (error_of(response) or "")
    assert written(registry) == before


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        pytest.param({"subdomain": "www"}, "'www' is reserved", id="www"),
        pytest.param({"subdomain": "Admin"}, "'admin' is reserved", id="admin"),
        pytest.param({"subdomain": "signup"}, "'signup' is reserved", id="signup"),
        pytest.param({"subdomain": "a_b"}, "'a_b' must be 1-63 characters", id="a_b"),
        pytest.param({"subdomain": "-x"}, "'-x' must be 1-63", id="leading-dash"),
        pytest.param({"subdomain": "x-"}, "'x-' must be 1-63", id="trailing-dash"),
        pytest.param({"subdomain": "a.b"}, "'a.b' must be 1-63", id="dot"),
        pytest.param({"subdomain": "a" * 64}, f"'{'a' * 64}' must be", id="64-chars"),
        pytest.param({"subdomain": "ünï"}, "'ünï' must be 1-63", id="non-ascii"),
        pytest.param({"subdomain": "\u212aey"}, "must be 1-63", id="kelvin-sign"),
        pytest.param({"subdomain": ""}, "'' must be 1-63", id="empty-name"),
        pytest.param({"subdomain": None}, "'' must be 1-63", id="no-name-field"),
        pytest.param({"organisation": ""}, "name your organisation", id="empty-org"),
        pytest.param({"organisation": "   "}, "name your organisation", id="blank-org"),
        pytest.param({"organisation": None}, "name your organisation", id="no-org"),
        pytest.param(
            {"organisation": "x" * 101}, "longer than 100 characters", id="org-101"
        ),
        pytest.param({"email": ""}, "e-mail '' must look like", id="empty-email"),
        pytest.param({"email": "nobody"}, "e-mail 'nobody' must look", id="no-at"),
        pytest.param({"email": "a b@x.test"}, "e-mail 'a b@x.test'", id="space"),
        pytest.param({"email": "ada@acme"}, "e-mail 'ada@acme' has a bad", id="tld"),
        pytest.param({"email": "@acme.test"}, "e-mail '@acme.test'", id="no-local"),
        pytest.param({"email": "ada@-x.test"}, "bad domain", id="bad-domain"),
        pytest.param({"email": None}, "e-mail '' must look like", id="no-email"),
    ],
)
def test_invalid_input_is_422_and_writes_nothing(
    local_client: Client,
    local_registry: TenantRegistry,
    fields: dict[str, str | None],
    reason: str,
) -> None:
    before = written(local_registry)
    response = sign_up(local_client, **fields)
    assert response.status_code == 422
    error = error_of(response)
    assert error is not None
    assert reason in error
    sent = {**FORM, **fields}
    assert form_values(response) == {
        name: (sent[name] or "").strip()
        for name in ("organisation", "subdomain", "email")
    }
    cookie = local_client.get_cookie(CSRF_COOKIE, domain=BASE)
    assert cookie is not None
    assert form_token(response) == cookie.value
    assert written(local_registry) == before


@pytest.mark.parametrize(
    ("token", "cookie"),
    [
        pytest.param(None, True, id="no-token-field"),
        pytest.param("", True, id="empty-token"),
        pytest.param("forged", True, id="wrong-token"),
        pytest.param("MATCHING", False, id="no-cookie"),
        pytest.param("", False, id="empty-token-no-cookie"),
        pytest.param("é", True, id="non-ascii-token"),
        pytest.param("MATCHING\u00e9", True, id="token-plus-non-ascii"),
    ],
)
def test_a_bad_csrf_token_is_400_and_writes_nothing(
    local_client: Client,
    local_registry: TenantRegistry,
    token: str | None,
    cookie: bool,
) -> None:
    real = form_token(get(local_client))
    if not cookie:
        local_client.delete_cookie(CSRF_COOKIE, domain=BASE)
    data = dict(FORM)
    if token is not None:
        data["csrf_token"] = token.replace("MATCHING", real)
    before = written(local_registry)
    response = post(local_client, data)
    assert response.status_code == 400
    assert error_of(response) == "The form expired; please send it again."
    assert form_values(response) == FORM
    assert written(local_registry) == before
    # The refilled form carries a token that works.
    retry = post(local_client, {**FORM, "csrf_token": form_token(response)})
    assert retry.status_code == 303


def test_a_cross_site_post_without_the_cookie_is_refused(
    local_registry: TenantRegistry, local_site: TenantDispatcher
) -> None:
    """An attacker's page can send the form, but not the victim's cookie."""
    attacker = Client(local_site)
    token = form_token(get(attacker))  # a token of the attacker's own
    victim = Client(local_site)
    get(victim)
    victim.delete_cookie(CSRF_COOKIE, domain=BASE)
    before = written(local_registry)
    response = post(victim, {**FORM, "csrf_token": token})
    assert response.status_code == 400
    assert written(local_registry) == before


_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=80)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    organisation=st.one_of(_TEXT, st.text(min_size=95, max_size=110)),
    subdomain=st.one_of(_TEXT, st.from_regex(r"[A-Za-z0-9_.-]{0,65}", fullmatch=True)),
    email=st.one_of(_TEXT, st.emails()),
)
def test_no_form_input_is_a_500(
    client: Client,
    registry: TenantRegistry,
    organisation: str,
    subdomain: str,
    email: str,
) -> None:
    before = {t.slug for t in registry.list_tenants()}
    response = sign_up(
        client, organisation=organisation, subdomain=subdomain, email=email
    )
    assert response.status_code in {303, 409, 422}, response.text
    after = {t.slug for t in registry.list_tenants()}
    if response.status_code == 303:
        slug = urlsplit(response.headers["Location"]).netloc.split(".")[0]
        assert after == before | {slug}
        assert get(client, APEX, f"/{slug}/").status_code == 200
    else:
        assert after == before
        assert error_of(response)


# -- what visitors see ----------------------------------------------------------


def test_a_disabled_tenant_gets_the_403_page(
    client: Client, registry: TenantRegistry
) -> None:
    assert sign_up(client).status_code == 303
    assert get(client, "acme.localhost:8000").status_code == 200
    registry.disable_tenant("acme", "unpaid")
    for response in (get(client, "acme.localhost:8000"), get(client, APEX, "/acme/")):
        assert response.status_code == 403
        assert "currently unavailable" in response.text
        assert "Acme Corp" not in response.text
    registry.enable_tenant("acme")
    assert get(client, "acme.localhost:8000").status_code == 200


@pytest.mark.parametrize(
    ("host", "apex"),
    [
        pytest.param("nobody.localhost:8000", "http://localhost:8000/", id="port"),
        pytest.param("nobody.localhost", "http://localhost/", id="no-port"),
        pytest.param("shop.example.test:8000", "http://localhost:8000/", id="other"),
    ],
)
def test_an_unknown_host_gets_no_such_site(
    local_client: Client, local_registry: TenantRegistry, host: str, apex: str
) -> None:
    response = get(local_client, host)
    assert response.status_code == 404
    assert "No such site" in response.text
    assert f'<a href="{apex}">Create a site</a>' in response.text
    assert "csrf_token" not in response.text
    # Nor can the form be sent there.
    before = written(local_registry)
    token = form_token(get(local_client))
    refused = post(local_client, {**FORM, "csrf_token": token}, host)
    assert refused.status_code == 404
    assert written(local_registry) == before


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("sqlite:////nonexistent-dir/x.sqlite3", id="sqlite"),
        pytest.param("postgresql+psycopg://postgres@127.0.0.1:1/test", id="postgres"),
    ],
)
def test_an_unreachable_database_is_503_not_500(url: str) -> None:
    registry = TenantRegistry(url)
    site = make_site(registry)
    try:
        client = Client(site)
        assert get(client).status_code == 200  # the form needs no database
        response = sign_up(client)
        assert response.status_code == 503
        assert error_of(response) == "Sign-up is unavailable; please try later."
        assert form_values(response) == FORM
        assert get(client, "acme.localhost:8000").status_code == 503
    finally:
        site.close()
        registry.close()


def test_an_organisation_name_is_escaped(
    client: Client, registry: TenantRegistry
) -> None:
    script = "<script>alert(1)</script>"
    response = sign_up(client, organisation=script)
    assert response.status_code == 303
    assert registry.get_tenant("acme").config["name"] == script
    for page in (follow(client, response), get(client, APEX, "/acme/")):
        assert page.status_code == 200
        assert "<script>" not in page.text
        assert "Welcome to &lt;script&gt;alert(1)&lt;/script&gt;!" in page.text


def test_the_refilled_form_is_escaped(local_client: Client) -> None:
    response = sign_up(local_client, subdomain='"><script>alert(1)</script>')
    assert response.status_code == 422
    assert "<script>" not in response.text
    assert form_values(response)["subdomain"] == '"><script>alert(1)</script>'


@pytest.mark.parametrize(
    ("colour", "shown"),
    [
        pytest.param("red", "red", id="name"),
        pytest.param("#0f0", "#0f0", id="hex"),
        pytest.param(
            "red;}</style><script>alert(1)</script>", DEFAULT_COLOUR, id="css"
        ),
        pytest.param("red; background: url(//evil.test/x)", DEFAULT_COLOUR, id="url"),
        pytest.param("expression(alert(1))", DEFAULT_COLOUR, id="expression"),
        pytest.param("#12345678901", DEFAULT_COLOUR, id="long-hex"),
        pytest.param(12, DEFAULT_COLOUR, id="number"),
        pytest.param(["red"], DEFAULT_COLOUR, id="list"),
    ],
)
def test_an_unsafe_colour_falls_back_to_the_default(
    local_client: Client, local_registry: TenantRegistry, colour: Any, shown: str
) -> None:
    assert sign_up(local_client).status_code == 303
    local_registry.update_config("acme", {"color": colour})
    page = get(local_client, "acme.localhost:8000")
    assert page.status_code == 200
    assert f"h1 {{ color: {shown}; }}" in page.text
    assert f"border-bottom: 4px solid {shown};" in page.text
    assert "<script>" not in page.text
    assert "evil.test/x);" not in page.text.split("</style>")[0]
