"""The demo's signup site, end to end, assembled as ``dispatcher.wsgi`` does it.

A :class:`TenantDispatcher` with the demo tenant app and the signup app as its
default app, on a real registry, driven by :class:`werkzeug.test.Client` (which
keeps the CSRF cookie between requests, like a browser, and scopes cookies by
domain and path as one does).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from functools import partial
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from demo_data_helpers import data_names, refusing_tenant_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from werkzeug.test import Client, TestResponse

from dispatcher import (
    CachePolicy,
    Provisioner,
    Tenant,
    TenantDispatcher,
    TenantRegistry,
)
from dispatcher.data import TenantData
from dispatcher.demo import create_app
from dispatcher.demo.ratelimit import RateLimiter
from dispatcher.demo.secret import SECRET_FILE, SECRET_VARIABLE
from dispatcher.demo.signup import CSRF_COOKIE, create_signup_app
from dispatcher.demo.tenant_app import DEFAULT_COLOUR
from dispatcher.models import User as UserRow

BASE = "localhost"
APEX = "localhost:8000"

#: A valid signup; tests override single fields.
FORM = {
    "organisation": "Acme Corp",
    "subdomain": "Acme",
    "email": "ada@acme.test",
    "password": "correct horse battery",
}
#: What the refilled form shows: never the password.
SHOWN = {name: value for name, value in FORM.items() if name != "password"}
#: The demo's deployment secret in these tests (DISPATCHER_SECRET_KEY).
SECRET = "the-demo-deployment-secret-of-the-signup-tests"


# -- fixtures and helpers -------------------------------------------------------


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_site(
    registry: TenantRegistry,
    limiter: RateLimiter | None = None,
    data: TenantData | None = None,
) -> TenantDispatcher:
    """What ``dispatcher.wsgi.make_application`` builds by default, minus the
    change follower's threads: with ``data``, signups create the tenant's
    data and the tenant app keeps its notes there.

    The signup limit is lifted unless ``limiter`` is given: most tests send
    more signups than a visitor may.
    """
    if limiter is None:
        limiter = RateLimiter(limit=10_000)
    provisioner = (
        None if data is None else Provisioner(registry, on_create=[data.create])
    )
    return TenantDispatcher(
        registry,
        create_app if data is None else partial(create_app, data=data),
        base_domain=BASE,
        path_routing=True,
        default_app=create_signup_app(
            registry, BASE, provisioner, data=data, limiter=limiter
        ),
        # Only this registry object's own writes evict, synchronously: what these
        # tests check. (test_wsgi runs make_application's defaults, follower on.)
        policy=CachePolicy(poll_interval=None),
    )


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's deployment secret: no key file in the working directory."""
    monkeypatch.setenv(SECRET_VARIABLE, SECRET)


@pytest.fixture
def site(registry: TenantRegistry, demo_data: TenantData) -> Iterator[TenantDispatcher]:
    site = make_site(registry, data=demo_data)
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


def post(
    client: Client, data: dict[str, str], host: str = APEX, path: str = "/"
) -> TestResponse:
    return client.post(path, base_url=f"http://{host}", data=data, buffered=True)


class ClientAt(Client):
    """A browser at client address ``address`` (``REMOTE_ADDR``)."""

    def __init__(self, application: Any, address: str) -> None:
        super().__init__(application)
        self.address = address

    def open(self, *args: Any, **kwargs: Any) -> TestResponse:
        kwargs.setdefault("environ_base", {"REMOTE_ADDR": self.address})
        return super().open(*args, **kwargs)


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
    path = location.path + (f"?{location.query}" if location.query else "")
    return get(client, location.netloc, path)


def land(client: Client, response: TestResponse) -> TestResponse:
    """Use a signup's one-time sign-in link, then load the new site's home."""
    signed_in = follow(client, response)
    assert signed_in.status_code == 303, signed_in.text
    host = urlsplit(response.headers["Location"]).netloc
    return get(client, host, signed_in.headers["Location"])


def owner_of(response: TestResponse) -> str | None:
    """The signed-in owner a site's page names, if any."""
    found = re.search(r'<strong id="owner">(.*?)</strong>', response.text)
    return None if found is None else html.unescape(found.group(1))


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
    assert "Start your team board" in response.text
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
    assert "Start your team board" in response.text


# -- signing up -----------------------------------------------------------------


def test_a_signup_is_served_on_the_very_next_request(
    client: Client, registry: TenantRegistry
) -> None:
    # Remembered as unknown first: the signup must make the dispatcher forget.
    assert get(client, "acme.localhost:8000").status_code == 404

    response = sign_up(client, email="Ada@ACME.test")

    assert response.status_code == 303
    location = response.headers["Location"]
    assert location.startswith("http://acme.localhost:8000/welcome?token=")
    home = land(client, response)
    assert home.status_code == 200
    assert '<h1 id="greeting">Welcome to Acme Corp!</h1>' in home.text
    assert '<strong id="site-name">Acme Corp</strong>' in home.text
    assert owner_of(home) == "ada@acme.test"  # the owner, signed in
    visitor = get(Client(client.application), "acme.localhost:8000")
    assert owner_of(visitor) is None
    assert "ada@acme.test" not in visitor.text

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
    assert "About Acme Corp" in about.text
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


@pytest.mark.parametrize(
    "email",
    [
        pytest.param("ada@acme.test", id="same"),
        pytest.param("ADA@Acme.Test", id="upper-case"),
        pytest.param("Ada@Acme.Test.", id="trailing-dot"),
        pytest.param("  ada@acme.test ", id="spaces"),
    ],
)
def test_an_email_that_owns_a_site_cannot_sign_up_again(
    client: Client, registry: TenantRegistry, email: str
) -> None:
    """Signing up is no proof of controlling the address: no new site is
    attached to someone else's account."""
    assert sign_up(client).status_code == 303
    before = written(registry)

    attacker = Client(client.application)
    response = sign_up(attacker, subdomain="acme2", email=email)

    assert response.status_code == 409
    assert error_of(response) == (
        f"The e-mail address {email.strip()!r} already owns a site here; "
        "please use another address."
    )
    assert form_values(response)["subdomain"] == "acme2"
    assert written(registry) == before
    assert get(attacker, "acme2.localhost:8000").status_code == 404


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
    assert error_of(response) == "The site name 'acme' is taken; please choose another."
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
        pytest.param(
            {"subdomain": "a_b"},
            "'a_b' must be 1–63 letters, digits",
            id="a_b",
        ),
        pytest.param({"subdomain": "-x"}, "'-x' must be 1–63", id="leading-dash"),
        pytest.param({"subdomain": "x-"}, "'x-' must be 1–63", id="trailing-dash"),
        pytest.param({"subdomain": "a.b"}, "'a.b' must be 1–63", id="dot"),
        pytest.param({"subdomain": "a" * 64}, f"'{'a' * 64}' must be", id="64-chars"),
        pytest.param({"subdomain": "ünï"}, "'ünï' must be 1–63", id="non-ascii"),
        pytest.param({"subdomain": "\u212aey"}, "must be 1–63", id="kelvin-sign"),
        pytest.param({"subdomain": ""}, "site name '' must be 1–63", id="empty-name"),
        pytest.param(
            {"subdomain": None}, "site name '' must be 1–63", id="no-name-field"
        ),
        pytest.param({"organisation": ""}, "name your team or", id="empty-org"),
        pytest.param({"organisation": "   "}, "name your team or", id="blank-org"),
        pytest.param({"organisation": None}, "name your team or", id="no-org"),
        pytest.param(
            {"organisation": "x" * 101}, "longer than 100 characters", id="org-101"
        ),
        pytest.param(
            {"organisation": "a\x00b"}, "holds control characters", id="org-nul"
        ),
        pytest.param(
            {"organisation": "a\x1bb"}, "holds control characters", id="org-escape"
        ),
        pytest.param({"email": ""}, "address '' does not look", id="empty-email"),
        pytest.param({"email": "nobody"}, "address 'nobody' does not", id="no-at"),
        pytest.param({"email": "a b@x.test"}, "address 'a b@x.test'", id="space"),
        pytest.param({"email": "ada@acme"}, "address 'ada@acme' does", id="tld"),
        pytest.param({"email": "@acme.test"}, "address '@acme.test'", id="no-local"),
        pytest.param({"email": "ada@-x.test"}, "does not look like", id="bad-domain"),
        pytest.param({"email": None}, "address '' does not look", id="no-email"),
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
    assert form_values(response) == SHOWN
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
    assert f'<a id="back" href="{apex}">Create a site</a>' in response.text
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
        assert form_values(response) == SHOWN
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
    for page in (land(client, response), get(client, APEX, "/acme/")):
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
    assert f"--accent: {shown};" in page.text
    assert f"border-bottom: 4px solid {shown};" in page.text
    assert "<script>" not in page.text
    assert "evil.test/x);" not in page.text.split("</style>")[0]


# -- tenant data ----------------------------------------------------------------------


def test_a_signup_creates_the_tenants_data(
    client: Client, registry: TenantRegistry, demo_data: TenantData
) -> None:
    response = sign_up(client)
    assert response.status_code == 303
    acme = registry.get_tenant("acme")
    assert acme.is_active
    assert demo_data.exists(acme)
    home = land(client, response)
    assert 'id="no-items-yet"' in home.text
    assert 'action="/items"' in home.text


def test_a_signup_whose_data_cannot_be_created_leaves_no_tenant(
    client: Client, registry: TenantRegistry, database_url: str
) -> None:
    before = data_names(database_url)
    with refusing_tenant_data(database_url):
        response = sign_up(client)
        assert data_names(database_url) == before
    assert response.status_code == 503
    assert error_of(response) == "Sign-up is unavailable; please try later."
    assert form_values(response) == SHOWN
    assert registry.list_tenants() == []
    # Never served, and not remembered as a site either.
    assert get(client, "acme.localhost:8000").status_code == 404
    # The name is free again.
    retry = sign_up(client, email="other@acme.test")
    assert retry.status_code == 303
    assert data_names(database_url) != before


def test_a_failed_signup_can_be_retried_with_the_same_email(
    client: Client, registry: TenantRegistry, database_url: str
) -> None:
    with refusing_tenant_data(database_url):
        assert sign_up(client).status_code == 503
    assert sign_up(client).status_code == 303


# -- the demo's deployment secret ---------------------------------------------------


def test_without_a_secret_every_process_shares_one_key_file(
    registry: TenantRegistry,
    demo_data: TenantData,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two sites stand for two gunicorn workers started in one directory."""
    monkeypatch.delenv(SECRET_VARIABLE)
    monkeypatch.chdir(tmp_path)
    first = make_site(registry, data=demo_data)
    second = make_site(registry, data=demo_data)
    try:
        owner = Client(first)
        response = sign_up(owner)
        assert response.status_code == 303
        link = urlsplit(response.headers["Location"])
        # The link made by the signup in one worker, used by the path route.
        signed_in = get(owner, APEX, f"/acme{link.path}?{link.query}")
        assert signed_in.status_code == 303
        cookie = owner.get_cookie("session", domain=BASE, path="/acme")
        assert cookie is not None
        # The other worker honours the session.
        other = Client(second, use_cookies=False)
        page = other.get(
            "/acme/",
            base_url=f"http://{APEX}",
            headers={"Cookie": f"session={cookie.value}"},
            buffered=True,
        )
        assert owner_of(page) == "ada@acme.test"
    finally:
        first.close()
        second.close()
    key_file = tmp_path / SECRET_FILE
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(key_file) in w and SECRET_VARIABLE in w for w in warnings), warnings


# -- signup limits ------------------------------------------------------------------


def test_signups_are_limited_per_client_address(
    local_registry: TenantRegistry,
) -> None:
    clock = Clock()
    site = make_site(local_registry, RateLimiter(limit=2, window=60.0, timer=clock))
    try:
        alice = ClientAt(site, "192.0.2.1")
        assert sign_up(alice, subdomain="a1", email="a1@x.test").status_code == 303
        clock.now += 10
        assert sign_up(alice, subdomain="a2", email="a2@x.test").status_code == 303
        clock.now += 20
        before = written(local_registry)

        refused = sign_up(alice, subdomain="a3", email="a3@x.test")

        assert refused.status_code == HTTPStatus.TOO_MANY_REQUESTS
        assert refused.headers["Retry-After"] == "30"
        assert error_of(refused) == (
            "Too many sign-ups from your address; please try again in 30 seconds."
        )
        assert form_values(refused)["subdomain"] == "a3"
        assert written(local_registry) == before
        # Another address is not affected; a forwarded-for header changes nothing.
        bob = ClientAt(site, "198.51.100.7")
        assert sign_up(bob, subdomain="b1", email="b1@x.test").status_code == 303
        spoofed = alice.post(
            "/",
            base_url=f"http://{APEX}",
            headers={"X-Forwarded-For": "203.0.113.9"},
            data={**FORM, "csrf_token": form_token(get(alice))},
        )
        assert spoofed.status_code == HTTPStatus.TOO_MANY_REQUESTS
        # Once the first signup is a window old, one more is allowed.
        clock.now += 30
        assert sign_up(alice, subdomain="a3", email="a3@x.test").status_code == 303
        assert sign_up(alice, subdomain="a4", email="a4@x.test").status_code == 429
    finally:
        site.close()


def test_the_default_limit_is_five_signups_a_minute(
    local_registry: TenantRegistry,
) -> None:
    site = TenantDispatcher(
        local_registry,
        create_app,
        base_domain=BASE,
        default_app=create_signup_app(local_registry, BASE),
        policy=CachePolicy(poll_interval=None),
    )
    try:
        client = ClientAt(site, "192.0.2.1")
        # Refused forms count too: each costs the service work.
        statuses = [sign_up(client, subdomain="www").status_code for _ in range(6)]
        assert statuses == [422] * 5 + [429]
        assert (
            55
            <= int(client.post("/", base_url=f"http://{APEX}").headers["Retry-After"])
            <= 60
        )
        # The form itself is never limited.
        assert get(client).status_code == 200
    finally:
        site.close()


# -- the owner's password and the address hint ------------------------------------


@pytest.mark.parametrize(
    ("password", "message"),
    [
        pytest.param("", "at least 10 characters", id="empty"),
        pytest.param("x" * 9, "at least 10 characters", id="nine"),
        pytest.param("x" * 201, "at most 200 characters", id="huge"),
    ],
)
def test_a_bad_password_is_422_and_never_shown(
    local_client: Client, local_registry: TenantRegistry, password: str, message: str
) -> None:
    before = written(local_registry)
    response = sign_up(local_client, password=password)
    assert response.status_code == 422
    assert error_of(response) == f"The password must be {message} long."
    assert form_values(response) == SHOWN
    assert written(local_registry) == before


@pytest.mark.parametrize(
    ("host", "address"),
    [
        pytest.param("localhost:8000", "&lt;name&gt;.localhost:8000", id="port"),
        pytest.param("localhost", "&lt;name&gt;.localhost<", id="no-port"),
    ],
)
def test_the_hint_shows_the_address_with_the_port(
    local_client: Client, host: str, address: str
) -> None:
    page = get(local_client, host)
    assert "Site name</label>" in page.text
    assert f"<code>{address}" in page.text
