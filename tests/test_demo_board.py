"""The demo SaaS end to end: signup, the one-time sign-in link, the board,
owner sign-in, settings through the registry, and the dispatcher's styled answers.

A real :class:`TenantDispatcher` built here as ``dispatcher.wsgi`` wires the
demo (the board app given the tenant data and the registry, the signup app as
the default app with a provisioner that creates each tenant's data, the demo's
answers), on a real registry and real tenant data (SQLite files, or PostgreSQL
schemas with ``DISPATCHER_TEST_DATABASE_URL``), driven by
:class:`werkzeug.test.Client`, which keeps each host's and path's cookies apart
as a browser does.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from functools import partial
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select
from werkzeug.test import Client, TestResponse

from dispatcher import CachePolicy, Provisioner, TenantDispatcher, TenantRegistry
from dispatcher.data import TenantData
from dispatcher.demo import create_app
from dispatcher.demo.accounts import set_password
from dispatcher.demo.answers import dispatcher_answers
from dispatcher.demo.data import Account, Item
from dispatcher.demo.ratelimit import RateLimiter
from dispatcher.demo.secret import SECRET_VARIABLE
from dispatcher.demo.signup import create_signup_app

BASE = "localhost"
APEX = "localhost:8000"
SECRET = "the-demo-deployment-secret-of-the-board-tests"
PASSWORD = "correct horse battery"


# -- fixtures and helpers -------------------------------------------------------


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_VARIABLE, SECRET)


@pytest.fixture
def registry(database_url: str) -> Iterator[TenantRegistry]:
    """The registry as dispatcher.wsgi makes it: it knows the base domain, so
    no site can claim a host under it as a custom domain."""
    registry = TenantRegistry(database_url, base_domain=BASE)
    registry.migrate()
    yield registry
    registry.close()


def make_site(
    registry: TenantRegistry, data: TenantData | None, *, with_registry: bool = True
) -> TenantDispatcher:
    """The demo as dispatcher.wsgi wires it (minus the follower's threads: this
    registry object's own writes evict synchronously)."""
    provisioner = (
        None if data is None else Provisioner(registry, on_create=[data.create])
    )
    return TenantDispatcher(
        registry,
        partial(create_app, data=data, registry=registry if with_registry else None),
        base_domain=BASE,
        path_routing=True,
        default_app=create_signup_app(
            registry,
            BASE,
            provisioner,
            data=data,
            limiter=RateLimiter(limit=10_000),
        ),
        policy=CachePolicy(poll_interval=None),
        **dispatcher_answers(BASE),
    )


@pytest.fixture
def site(registry: TenantRegistry, demo_data: TenantData) -> Iterator[TenantDispatcher]:
    site = make_site(registry, demo_data)
    yield site
    site.close()


def get(client: Client, host: str, path: str = "/") -> TestResponse:
    return client.get(path, base_url=f"http://{host}", buffered=True)


def post(client: Client, host: str, path: str, data: dict[str, str]) -> TestResponse:
    return client.post(path, base_url=f"http://{host}", data=data, buffered=True)


def token_of(page: TestResponse) -> str:
    found = re.search(r'name="csrf_token" value="([^"]*)"', page.text)
    assert found is not None, page.text
    return html.unescape(found.group(1))


def error_of(page: TestResponse) -> str | None:
    found = re.search(r'<p class="error" id="error" role="alert">(.*?)</p>', page.text)
    return None if found is None else html.unescape(found.group(1))


def sign_up(client: Client, name: str, email: str | None = None) -> TestResponse:
    """Send the signup form; returns the 303 to the new site's sign-in link."""
    form = {
        "organisation": name.title(),
        "subdomain": name,
        "email": email or f"owner@{name}.test",
        "password": PASSWORD,
        "csrf_token": token_of(get(client, APEX)),
    }
    response = post(client, APEX, "/", form)
    assert response.status_code == 303, response.text
    return response


def follow(client: Client, response: TestResponse) -> TestResponse:
    """GET a redirect's Location on its own host (the client will not)."""
    location = urlsplit(response.headers["Location"])
    path = location.path + (f"?{location.query}" if location.query else "")
    return get(client, location.netloc or APEX, path)


def start(client: Client, name: str) -> None:
    """Sign up ``name`` and use its link: the client lands signed in there."""
    landed = follow(client, sign_up(client, name))
    assert landed.status_code == 303, landed.text
    assert landed.headers["Location"] == "/"


def owner_of(page: TestResponse) -> str | None:
    found = re.search(r'<strong id="owner">(.*?)</strong>', page.text)
    return None if found is None else html.unescape(found.group(1))


def items_on(page: TestResponse) -> list[str]:
    return [
        html.unescape(body)
        for body in re.findall(r'<span class="body">(.*?)</span>', page.text, re.S)
    ]


def add_item(
    client: Client, host: str, body: str, prefix: str = "", token: str | None = None
) -> TestResponse:
    if token is None:
        token = token_of(get(client, host, f"{prefix}/"))
    return post(client, host, f"{prefix}/items", {"body": body, "csrf_token": token})


def stored(site: TenantDispatcher, slug: str) -> list[tuple[str, bool]]:
    data: TenantData = site.create_app.keywords["data"]  # type: ignore[union-attr]
    with data.sessionmaker_for(site.registry.get_tenant(slug))() as session:
        rows = session.execute(select(Item.body, Item.done).order_by(Item.id))
        return [(body, done) for body, done in rows]


def sign_in(
    client: Client, host: str, email: str, password: str, prefix: str = ""
) -> TestResponse:
    token = token_of(get(client, host, f"{prefix}/sign-in"))
    form = {"email": email, "password": password, "csrf_token": token}
    return post(client, host, f"{prefix}/sign-in", form)


def sign_out(client: Client, host: str, prefix: str = "") -> TestResponse:
    token = token_of(get(client, host, f"{prefix}/"))
    return post(client, host, f"{prefix}/sign-out", {"csrf_token": token})


ACME = "acme.localhost:8000"
BETA = "beta.localhost:8000"


# -- signup and the one-time link ------------------------------------------------------


def test_signup_lands_the_owner_signed_in_on_the_new_site(
    site: TenantDispatcher, registry: TenantRegistry, demo_data: TenantData
) -> None:
    client = Client(site)
    response = sign_up(client, "acme", "Ada@ACME.test")
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc, location.path) == (
        "http",
        ACME,
        "/welcome",
    )
    assert list(parse_qs(location.query)) == ["token"]

    landed = follow(client, response)
    assert landed.status_code == 303
    home = get(client, ACME)
    assert home.status_code == 200
    assert owner_of(home) == "ada@acme.test"
    assert '<h1 id="greeting">Welcome to Acme!</h1>' in home.text
    assert 'id="no-items-yet"' in home.text
    # The account is in the tenant's own data, the password hashed.
    acme = registry.get_tenant("acme")
    with demo_data.sessionmaker_for(acme)() as session:
        (account,) = session.scalars(select(Account))
    assert account.email == "ada@acme.test"
    assert account.password_hash.startswith(("scrypt:", "pbkdf2:"))
    assert PASSWORD not in account.password_hash


def test_a_sign_in_link_works_once(site: TenantDispatcher) -> None:
    client = Client(site)
    response = sign_up(client, "acme")
    assert follow(client, response).status_code == 303

    other = Client(site)  # a second browser, or a replay from a log
    replayed = follow(other, response)
    assert replayed.status_code == 400
    assert "expired or was used already" in (error_of(replayed) or "")
    assert owner_of(get(other, ACME)) is None


def test_a_sign_in_link_of_one_site_is_refused_by_another(
    site: TenantDispatcher,
) -> None:
    client = Client(site)
    acme_link = sign_up(client, "acme")
    beta_link = sign_up(client, "beta")
    token = parse_qs(urlsplit(acme_link.headers["Location"]).query)["token"][0]

    for host, path in ((BETA, "/welcome"), (APEX, "/beta/welcome")):
        refused = get(client, host, f"{path}?token={token}")
        assert refused.status_code == 400
        assert owner_of(get(client, host, path.replace("welcome", ""))) is None
    # Unspent by the attempts: it still works where it belongs, and beta's too.
    assert follow(client, acme_link).status_code == 303
    assert follow(client, beta_link).status_code == 303


def test_a_sign_in_link_is_worthless_on_a_site_made_again_under_its_name(
    site: TenantDispatcher, demo_data: TenantData
) -> None:
    client = Client(site)
    old_link = sign_up(client, "acme")
    Provisioner(site.registry, on_delete=[demo_data.archive]).delete("acme")
    sign_up(client, "acme", "new-owner@acme.test")

    refused = follow(Client(site), old_link)
    assert refused.status_code == 400


@pytest.mark.parametrize(
    "token",
    [
        pytest.param("", id="empty"),
        pytest.param("forged", id="forged"),
        pytest.param("eyJzaXRlIjoiYWNtZSJ9.bad", id="bad-signature"),
    ],
)
def test_a_bad_sign_in_link_is_refused(site: TenantDispatcher, token: str) -> None:
    client = Client(site)
    sign_up(client, "acme")
    refused = get(client, ACME, f"/welcome?token={token}")
    assert refused.status_code == 400
    assert owner_of(get(client, ACME)) is None


# -- owner sign-in -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("email", "password"),
    [
        pytest.param("owner@acme.test", "wrong password!", id="wrong-password"),
        pytest.param("nobody@acme.test", PASSWORD, id="unknown-email"),
        pytest.param("owner@beta.test", PASSWORD, id="another-sites-owner"),
        pytest.param("owner@acme.test", "", id="empty-password"),
    ],
)
def test_a_wrong_sign_in_gets_one_generic_error(
    site: TenantDispatcher, email: str, password: str
) -> None:
    client = Client(site)
    sign_up(client, "acme")
    sign_up(client, "beta")
    browser = Client(site)
    refused = sign_in(browser, ACME, email, password)
    assert refused.status_code == 400
    assert error_of(refused) == "The e-mail address or the password is wrong."
    assert owner_of(get(browser, ACME)) is None


@pytest.mark.parametrize(
    ("host", "prefix"),
    [pytest.param(ACME, "", id="subdomain"), pytest.param(APEX, "/acme", id="path")],
)
def test_the_owner_signs_out_and_in_again(
    site: TenantDispatcher, host: str, prefix: str
) -> None:
    client = Client(site)
    sign_up(client, "acme")
    browser = Client(site)
    signed_in = sign_in(browser, host, " Owner@Acme.test ", PASSWORD, prefix)
    assert signed_in.status_code == 303
    assert owner_of(get(browser, host, f"{prefix}/")) == "owner@acme.test"
    assert sign_out(browser, host, prefix).status_code == 303
    assert owner_of(get(browser, host, f"{prefix}/")) is None


def test_a_password_change_signs_every_browser_out(
    site: TenantDispatcher, demo_data: TenantData, registry: TenantRegistry
) -> None:
    by_link, by_password = Client(site), Client(site)
    start(by_link, "acme")
    assert sign_in(by_password, ACME, "owner@acme.test", PASSWORD).status_code == 303
    assert owner_of(get(by_password, ACME)) == "owner@acme.test"
    tokens = [token_of(get(browser, ACME)) for browser in (by_link, by_password)]

    with demo_data.sessionmaker_for(registry.get_tenant("acme"))() as session:
        set_password(session, "owner@acme.test", "another password 123")

    for browser, token in zip((by_link, by_password), tokens, strict=True):
        assert owner_of(get(browser, ACME)) is None
        refused = add_item(browser, ACME, "after the change", token=token)
        assert refused.status_code == 403
    again = sign_in(by_password, ACME, "owner@acme.test", "another password 123")
    assert again.status_code == 303
    assert owner_of(get(by_password, ACME)) == "owner@acme.test"


ROUTED = pytest.mark.parametrize(
    ("acme", "beta"),
    [
        pytest.param((ACME, ""), (BETA, ""), id="subdomain"),
        pytest.param((APEX, "/acme"), (APEX, "/beta"), id="path"),
    ],
)


@ROUTED
def test_a_session_of_one_site_is_not_valid_on_another(
    site: TenantDispatcher, acme: tuple[str, str], beta: tuple[str, str]
) -> None:
    client = Client(site)
    sign_up(client, "acme")
    sign_up(client, "beta")
    browser = Client(site)
    assert (
        sign_in(browser, acme[0], "owner@acme.test", PASSWORD, acme[1]).status_code
        == 303
    )
    cookie = browser.get_cookie(
        "session", domain=acme[0].split(":")[0], path=acme[1] or "/"
    )
    assert cookie is not None

    thief = Client(site, use_cookies=False)
    for (host, prefix), expected in ((beta, None), (acme, "owner@acme.test")):
        page = thief.get(
            f"{prefix}/",
            base_url=f"http://{host}",
            headers={"Cookie": f"session={cookie.value}"},
            buffered=True,
        )
        assert page.status_code == 200
        assert owner_of(page) == expected
    # Nor may it change beta's board.
    token = token_of(get(browser, *acme[:1], f"{acme[1]}/"))
    refused = thief.post(
        f"{beta[1]}/items",
        base_url=f"http://{beta[0]}",
        headers={"Cookie": f"session={cookie.value}"},
        data={"body": "from acme", "csrf_token": token},
        buffered=True,
    )
    assert refused.status_code in (400, 403)
    assert stored(site, "beta") == []


# -- the board -----------------------------------------------------------------------


def test_the_owner_adds_marks_done_and_deletes_items(site: TenantDispatcher) -> None:
    client = Client(site)
    start(client, "acme")
    for body in ("write the report", "<b>call Bob</b>"):
        added = add_item(client, ACME, f"  {body} ")
        assert added.status_code == 303
        assert added.headers["Location"] == "/"
    page = get(client, ACME)
    assert items_on(page) == ["<b>call Bob</b>", "write the report"]
    assert "<b>call Bob</b>" not in page.text  # escaped

    first = re.search(r'action="(/items/(\d+)/done)"', page.text)
    assert first is not None
    token = token_of(page)
    assert post(client, ACME, first.group(1), {"csrf_token": token}).status_code == 303
    assert ("<b>call Bob</b>", True) in stored(site, "acme")
    # Done items go last.
    assert items_on(get(client, ACME)) == ["write the report", "<b>call Bob</b>"]
    delete = f"/items/{first.group(2)}/delete"
    assert post(client, ACME, delete, {"csrf_token": token}).status_code == 303
    assert stored(site, "acme") == [("write the report", False)]
    # The same board under the path prefix, with its own links.
    by_path = get(client, APEX, "/acme/")
    assert items_on(by_path) == ["write the report"]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param("", "Please write the task.", id="empty"),
        pytest.param("x" * 201, "The task is longer than 200 characters.", id="long"),
        pytest.param("a\x00b", "The task holds control characters.", id="nul"),
    ],
)
def test_a_bad_item_is_refused(site: TenantDispatcher, body: str, error: str) -> None:
    client = Client(site)
    start(client, "acme")
    refused = add_item(client, ACME, body)
    assert refused.status_code == 422
    assert error_of(refused) == error
    assert stored(site, "acme") == []


@pytest.mark.parametrize(
    "item_id",
    [
        pytest.param("99999999999999999999999", id="beyond-64-bits"),
        pytest.param("2147483648", id="beyond-32-bits"),
    ],
)
def test_a_task_number_beyond_any_task_is_a_task_no_longer_there(
    site: TenantDispatcher, item_id: str
) -> None:
    client = Client(site)
    start(client, "acme")
    add_item(client, ACME, "keep me")
    token = token_of(get(client, ACME))
    done = post(client, ACME, f"/items/{item_id}/done", {"csrf_token": token})
    assert done.status_code == 404
    assert error_of(done) == "That task is no longer on the board."
    deleted = post(client, ACME, f"/items/{item_id}/delete", {"csrf_token": token})
    assert deleted.status_code == 303
    assert stored(site, "acme") == [("keep me", False)]


def test_visitors_see_the_board_read_only(site: TenantDispatcher) -> None:
    owner = Client(site)
    start(owner, "acme")
    assert add_item(owner, ACME, "ship it").status_code == 303

    visitor = Client(site)
    page = get(visitor, ACME)
    assert items_on(page) == ["ship it"]
    assert 'id="read-only"' in page.text
    assert 'action="/items"' not in page.text
    # With a valid token of the visitor's own session: still not the owner.
    token = token_of(get(visitor, ACME, "/sign-in"))
    refused = add_item(visitor, ACME, "vandalism", token=token)
    assert refused.status_code == 403
    for path in ("/items/1/done", "/items/1/delete"):
        answer = post(visitor, ACME, path, {"csrf_token": token})
        assert answer.status_code == 403
    assert stored(site, "acme") == [("ship it", False)]
    # Settings are the owner's: a visitor is sent to sign in.
    settings = get(visitor, ACME, "/settings")
    assert settings.status_code == 303
    assert settings.headers["Location"] == "/sign-in"


def test_items_of_one_site_never_show_on_another(site: TenantDispatcher) -> None:
    client = Client(site)
    start(client, "acme")
    start(client, "beta")
    assert add_item(client, ACME, "acme's secret").status_code == 303
    assert add_item(client, BETA, "beta's secret").status_code == 303

    for slug, host in (("acme", ACME), ("beta", BETA)):
        for where, path in ((host, "/"), (APEX, f"/{slug}/")):
            assert items_on(get(Client(site), where, path)) == [f"{slug}'s secret"]
    assert stored(site, "acme") == [("acme's secret", False)]
    assert stored(site, "beta") == [("beta's secret", False)]


# -- CSRF on every form ---------------------------------------------------------------

FORMS = [
    pytest.param("/items", {"body": "x"}, id="add-item"),
    pytest.param("/items/1/done", {}, id="done"),
    pytest.param("/items/1/delete", {}, id="delete"),
    pytest.param("/sign-out", {}, id="sign-out"),
    pytest.param(
        "/sign-in", {"email": "owner@acme.test", "password": PASSWORD}, id="sign-in"
    ),
    pytest.param(
        "/settings",
        {"name": "Evil", "greeting": "", "colour": "#000000"},
        id="settings",
    ),
    pytest.param("/settings/domains", {"domain": "evil.example.com"}, id="add-domain"),
    pytest.param(
        "/settings/domains/remove", {"domain": "board.example.com"}, id="remove-domain"
    ),
]


@pytest.mark.parametrize(("path", "form"), FORMS)
@pytest.mark.parametrize("token", ["", "forged"])
def test_every_form_needs_the_sites_token(
    site: TenantDispatcher, path: str, form: dict[str, str], token: str
) -> None:
    client = Client(site)
    start(client, "acme")
    assert add_item(client, ACME, "keep me").status_code == 303
    site.registry.add_domain("acme", "board.example.com")
    before = (stored(site, "acme"), site.registry.get_tenant("acme"))

    refused = post(client, ACME, path, {**form, "csrf_token": token})

    assert refused.status_code == 400
    assert error_of(refused) == "The form expired; please send it again."
    assert (stored(site, "acme"), site.registry.get_tenant("acme")) == before
    assert owner_of(get(client, ACME)) == "owner@acme.test"


# -- settings ------------------------------------------------------------------------


def save_settings(client: Client, host: str, **fields: str) -> TestResponse:
    page = get(client, host, "/settings")
    assert page.status_code == 200, page.text
    form = {"name": "Acme", "greeting": "Hello", "colour": "#3b5bdb", **fields}
    return post(client, host, "/settings", {**form, "csrf_token": token_of(page)})


def test_settings_show_on_the_next_page(
    site: TenantDispatcher, registry: TenantRegistry
) -> None:
    client = Client(site)
    start(client, "acme")
    assert "color: #3b5bdb" in get(client, ACME).text.replace("{ color", "color")

    saved = save_settings(
        client, ACME, name="Acme Crew", greeting="Ship it!", colour="#E8590C"
    )
    assert saved.status_code == 303
    assert saved.headers["Location"] == "/settings?saved=1"

    home = get(client, ACME)
    assert '<strong id="site-name">Acme Crew</strong>' in home.text
    assert '<h1 id="greeting">Ship it!</h1>' in home.text
    assert "--accent: #e8590c;" in home.text
    assert owner_of(home) == "owner@acme.test"  # still signed in
    config = registry.get_tenant("acme").config
    assert (config["name"], config["greeting"], config["color"]) == (
        "Acme Crew",
        "Ship it!",
        "#e8590c",
    )


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        pytest.param({"colour": "red;}</style>"}, "must look like #3b5bdb", id="css"),
        pytest.param({"colour": "url(x)"}, "must look like #3b5bdb", id="url"),
        pytest.param({"name": "  "}, "Please give the site a name.", id="no-name"),
        pytest.param({"name": "x" * 101}, "longer than 100", id="long-name"),
        pytest.param({"greeting": "x" * 201}, "longer than 200", id="long-greeting"),
    ],
)
def test_bad_settings_are_refused_and_change_nothing(
    site: TenantDispatcher, registry: TenantRegistry, fields: dict[str, str], error: str
) -> None:
    client = Client(site)
    start(client, "acme")
    before = registry.get_tenant("acme")
    refused = save_settings(client, ACME, **fields)
    assert refused.status_code == 422
    assert error in (error_of(refused) or "")
    assert "</style>" not in refused.text.split("<body>")[1]
    assert registry.get_tenant("acme").version == before.version


def test_a_custom_domain_is_added_and_removed(
    site: TenantDispatcher, registry: TenantRegistry
) -> None:
    client = Client(site)
    start(client, "acme")
    token = token_of(get(client, ACME, "/settings"))
    added = post(
        client,
        ACME,
        "/settings/domains",
        {"domain": "Board.Example.COM", "csrf_token": token},
    )
    assert added.status_code == 303
    assert registry.get_tenant("acme").domains == ("board.example.com",)
    # Served there at once (a visitor: the session cookie is host-only).
    assert items_on(get(Client(site), "board.example.com")) == []
    assert "board.example.com" in get(client, ACME, "/settings").text

    removed = post(
        client,
        ACME,
        "/settings/domains/remove",
        {"domain": "board.example.com", "csrf_token": token},
    )
    assert removed.status_code == 303
    assert registry.get_tenant("acme").domains == ()
    assert get(Client(site), "board.example.com").status_code == 404


@pytest.mark.parametrize(
    ("domain", "status", "error"),
    [
        pytest.param("not a host", 422, "host name 'not a host'", id="malformed"),
        pytest.param(
            "beta.localhost", 422, "under the base domain", id="under-the-base-domain"
        ),
        pytest.param(
            "taken.example.com", 409, "'taken.example.com' is already taken", id="taken"
        ),
    ],
)
def test_a_bad_custom_domain_shows_the_registrys_error_and_changes_nothing(
    site: TenantDispatcher,
    registry: TenantRegistry,
    domain: str,
    status: int,
    error: str,
) -> None:
    client = Client(site)
    start(client, "acme")
    registry.create_tenant(
        "other", owner_email="o@other.test", domains=["taken.example.com"]
    )
    before = registry.get_tenant("acme")
    token = token_of(get(client, ACME, "/settings"))
    refused = post(
        client, ACME, "/settings/domains", {"domain": domain, "csrf_token": token}
    )
    assert refused.status_code == status, refused.text
    message = error_of(refused) or ""
    assert message.startswith("The domain cannot be added: ")
    assert error in message
    assert registry.get_tenant("acme") == before


def test_without_a_registry_settings_are_unavailable(
    registry: TenantRegistry, demo_data: TenantData
) -> None:
    site = make_site(registry, demo_data, with_registry=False)
    try:
        client = Client(site)
        start(client, "acme")
        page = get(client, ACME, "/settings")
        assert page.status_code == 200
        assert 'id="unavailable"' in page.text
        refused = post(
            client,
            ACME,
            "/settings",
            {
                "name": "X",
                "greeting": "",
                "colour": "#000000",
                "csrf_token": token_of(page),
            },
        )
        assert refused.status_code == 503
        assert registry.get_tenant("acme").config["name"] == "Acme"
    finally:
        site.close()


# -- what visitors must not see ---------------------------------------------------

PRIVATE_CONFIG = {
    "api_token": "sk_live_do-not-show-me",
    "smtp": {"password": "hunter2-do-not-show-me"},
}


def test_visitors_see_nothing_private(
    site: TenantDispatcher, registry: TenantRegistry
) -> None:
    client = Client(site)
    start(client, "acme")
    registry.update_config("acme", PRIVATE_CONFIG)
    visitor = Client(site)
    pages = []
    for host, prefix in ((ACME, ""), (APEX, "/acme")):
        for path in ("/", "/about", "/sign-in", "/settings", "/welcome?token=x"):
            pages.append(get(visitor, host, f"{prefix}{path}"))
        # The form keeps what was typed: a visitor's own guess, not a leak.
        pages.append(sign_in(visitor, host, "eve@evil.test", "wrong pass", prefix))
    for page in pages:
        text = page.text.lower()
        for secret in (
            "owner@acme.test",
            "do-not-show-me",
            "api_token",
            "smtp",
            "password_hash",
        ):
            assert secret not in text, (page.request.path, secret)
    assert items_on(pages[0]) == []


# -- the dispatcher's answers ---------------------------------------------------------


SITE_ERRORS = pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/nope", 404, id="unknown-path"),
        pytest.param("GET", "/items", 405, id="get-items"),
        pytest.param("PUT", "/settings", 405, id="put-settings"),
        pytest.param("DELETE", "/", 405, id="delete-board"),
    ],
)


@SITE_ERRORS
@pytest.mark.parametrize(
    ("host", "prefix"),
    [pytest.param(ACME, "", id="subdomain"), pytest.param(APEX, "/acme", id="path")],
)
def test_a_sites_own_errors_are_its_styled_page(
    site: TenantDispatcher,
    registry: TenantRegistry,
    host: str,
    prefix: str,
    method: str,
    path: str,
    status: int,
) -> None:
    start(Client(site), "acme")
    registry.update_config("acme", {"color": "#123abc"})
    page = Client(site).open(
        prefix + path, method=method, base_url=f"http://{host}", buffered=True
    )
    assert page.status_code == status
    assert "--accent: #123abc;" in page.text
    assert back_link(page) == f"{prefix}/"
    assert page.mimetype == "text/html"
    if status == 405:
        bare = create_app(registry.get_tenant("acme")).test_client()
        allowed = bare.open(path, method=method).headers["Allow"]
        assert page.headers["Allow"] == allowed


def back_link(page: TestResponse) -> str:
    found = re.search(r'<a id="back" href="([^"]*)"', page.text)
    assert found is not None, page.text
    return found.group(1)


@pytest.mark.parametrize(
    ("host", "path"),
    [
        pytest.param("nobody.localhost:8000", "/", id="subdomain"),
        pytest.param(APEX, "/nobody/", id="path"),
        pytest.param(APEX, "/favicon.ico", id="apex-file"),
        pytest.param("shop.example.test:8000", "/", id="unknown-domain"),
    ],
)
def test_an_unknown_site_is_the_styled_404(
    site: TenantDispatcher, host: str, path: str
) -> None:
    page = get(Client(site), host, path)
    assert page.status_code == 404
    assert 'id="heading">No such site<' in page.text
    assert back_link(page) == "http://localhost:8000/"
    assert "--accent:" in page.text


def test_a_disabled_site_is_the_styled_403(
    site: TenantDispatcher, registry: TenantRegistry
) -> None:
    client = Client(site)
    start(client, "acme")
    registry.disable_tenant("acme", "unpaid")
    for host, path in ((ACME, "/"), (APEX, "/acme/")):
        page = get(client, host, path)
        assert page.status_code == 403
        assert "currently unavailable" in page.text
        assert "Acme" not in page.text and "unpaid" not in page.text
        assert back_link(page) == "http://localhost:8000/"
        assert page.headers["Cache-Control"] == "no-store"


def test_maintenance_is_the_styled_503_with_the_sites_retry_after(
    site: TenantDispatcher, registry: TenantRegistry
) -> None:
    client = Client(site)
    start(client, "acme")
    registry.start_maintenance("acme", retry_after=120, message="Moving <house>")
    page = get(Client(site), ACME)
    assert page.status_code == 503
    assert page.headers["Retry-After"] == "120"
    assert page.headers["Cache-Control"] == "no-store"
    assert "down for maintenance" in page.text
    assert "Moving &lt;house&gt;" in page.text
    assert back_link(page) == "http://localhost:8000/"


def test_an_unreachable_registry_is_the_styled_503() -> None:
    registry = TenantRegistry("postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    site = make_site(registry, None)
    try:
        page = get(Client(site), ACME)
        assert page.status_code == 503
        assert page.headers["Retry-After"] == "5"
        assert "Temporarily unavailable" in page.text
        assert back_link(page) == "http://localhost:8000/"
    finally:
        site.close()
        registry.close()
