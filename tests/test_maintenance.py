"""Maintenance mode per tenant: the window in the registry, the bypass token
and cookie, and the dispatcher's answers (through werkzeug's test client).

Tenants ``acme`` and ``beta`` are reached both by subdomain and by path prefix
on the apex, where they share a host: every crossing of a token or a cookie
from one to the other is tried both ways.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from typing import Any

import pytest
from flask import Flask
from registry_helpers import unchanged_after
from werkzeug.test import Client, TestResponse
from werkzeug.wrappers import Response

from dispatcher import Tenant, TenantDispatcher, TenantRegistry
from dispatcher.context import ENVIRON_KEY
from dispatcher.exceptions import InvalidName
from dispatcher.maintenance import (
    BYPASS_PATH,
    COOKIE_LIFETIME,
    DATA_UPGRADE,
    MAX_MESSAGE,
    bypass_url,
    check_retry_after,
    cookie_is_valid,
    cookie_name,
    cookie_value,
    new_token,
    normalise_message,
    token_is_genuine,
)
from dispatcher.maintenance_gate import MaintenanceGate
from dispatcher.tenant import Maintenance

BASE = "example.com"
NOW = 1_800_000_000.0
WINDOW = Maintenance(dt.datetime(2026, 12, 7, tzinfo=dt.UTC), 60, None, "k" * 64)
OTHER_WINDOW = Maintenance(WINDOW.since, 60, None, "j" * 64)


# -- pure parts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "error"),
    [
        pytest.param(0, ValueError, id="zero"),
        pytest.param(-5, ValueError, id="negative"),
        pytest.param(86_401, ValueError, id="more than a day"),
        pytest.param(True, TypeError, id="bool"),
        pytest.param("60", TypeError, id="text"),
        pytest.param(1.5, TypeError, id="float"),
    ],
)
def test_retry_after_is_whole_seconds_from_one_to_a_day(
    value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="retry_after"):
        check_retry_after(value)


def test_retry_after_bounds_are_allowed() -> None:
    assert check_retry_after(1) == 1
    assert check_retry_after(86_400) == 86_400


@pytest.mark.parametrize(
    "message",
    [
        pytest.param("Back\nsoon", id="line break"),
        pytest.param("Back\x1b[2Jsoon", id="escape"),
        pytest.param("Back \u202esoon", id="bidi override"),
        pytest.param("x" * (MAX_MESSAGE + 1), id="too long"),
    ],
)
def test_a_bad_message_is_refused(message: str) -> None:
    with pytest.raises(InvalidName, match="maintenance message"):
        normalise_message(message)


def test_a_message_is_stripped_and_empty_is_none() -> None:
    assert normalise_message("  Back at 14:00 <b>  ") == "Back at 14:00 <b>"
    assert normalise_message("   ") is None
    assert normalise_message(None) is None
    assert normalise_message("x" * MAX_MESSAGE) == "x" * MAX_MESSAGE


def test_a_token_is_genuine_only_for_its_tenant_and_window() -> None:
    token = new_token("acme", WINDOW)
    assert token_is_genuine(token, "acme", WINDOW)
    assert not token_is_genuine(token, "beta", WINDOW)
    assert not token_is_genuine(token, "acme", OTHER_WINDOW)
    nonce, _, mac = token.partition(".")
    assert not token_is_genuine(f"{nonce}x.{mac}", "acme", WINDOW)
    assert not token_is_genuine(nonce, "acme", WINDOW)
    assert not token_is_genuine("", "acme", WINDOW)
    assert not token_is_genuine(token + "a" * 200, "acme", WINDOW)


def test_a_cookie_is_valid_for_its_tenant_and_window_until_it_expires() -> None:
    value = cookie_value("acme", WINDOW, int(NOW) + COOKIE_LIFETIME)
    assert cookie_is_valid(value, "acme", WINDOW, NOW)
    assert cookie_is_valid(value, "acme", WINDOW, NOW + COOKIE_LIFETIME - 1)
    assert not cookie_is_valid(value, "acme", WINDOW, NOW + COOKIE_LIFETIME)
    assert not cookie_is_valid(value, "beta", WINDOW, NOW)
    assert not cookie_is_valid(value, "acme", OTHER_WINDOW, NOW)
    expires, _, mac = value.partition(".")
    later = f"{int(expires) + 3600}.{mac}"  # a longer life, not signed
    assert not cookie_is_valid(later, "acme", WINDOW, NOW)


@pytest.mark.parametrize(
    "value", ["", ".", "abc.def", "-1.x", "١٢٣.x", "99999999999999.x", "12"]
)
def test_a_malformed_cookie_is_invalid(value: str) -> None:
    assert not cookie_is_valid(value, "acme", WINDOW, NOW)


def test_a_token_does_not_pass_as_a_cookie() -> None:
    token = new_token("acme", WINDOW)
    assert not cookie_is_valid(token, "acme", WINDOW, NOW)


# -- the registry ---------------------------------------------------------------


class RedeemCountingRegistry(TenantRegistry):
    """A real registry that counts the bypass tokens it was asked to redeem."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redeemed: list[tuple[str, str]] = []

    def redeem_bypass(self, slug: str, token: str) -> bool:
        self.redeemed.append((slug, token))
        return super().redeem_bypass(slug, token)


@pytest.fixture
def counting(registry: TenantRegistry, database_url: str) -> Iterator[Any]:
    counting = RedeemCountingRegistry(database_url, base_domain=BASE)
    yield counting
    counting.close()


@pytest.fixture
def tenants(registry: TenantRegistry) -> dict[str, Tenant]:
    return {
        slug: registry.create_tenant(
            slug,
            owner_email=f"owner@{slug}.test",
            subdomain=slug,
            path_prefix=slug,
        )
        for slug in ("acme", "beta")
    }


def test_start_records_a_window_and_returns_a_token(
    registry: TenantRegistry, tenants: dict[str, Tenant]
) -> None:
    tenant, token = registry.start_maintenance(
        "acme", retry_after=120, message="Back at 14:00"
    )
    window = tenant.maintenance
    assert window is not None
    assert (window.retry_after, window.message) == (120, "Back at 14:00")
    assert token_is_genuine(token, "acme", window)
    assert registry.get_tenant("acme").maintenance == window
    assert registry.get_tenant("beta").maintenance is None
    assert window.key not in repr(tenant) and "key" not in tenant.to_dict()
    [change] = registry.changes_since(tenants["beta"].version)
    assert (change.slug, change.operation) == ("acme", "maintenance")


def test_starting_again_keeps_the_window_and_replaces_the_token(
    registry: TenantRegistry, tenants: dict[str, Tenant]
) -> None:
    first, old_token = registry.start_maintenance("acme")
    second, new = registry.start_maintenance("acme", retry_after=5, message="Soon")
    assert first.maintenance is not None and second.maintenance is not None
    assert second.maintenance.key == first.maintenance.key
    assert second.maintenance.since == first.maintenance.since
    assert (second.maintenance.retry_after, second.maintenance.message) == (5, "Soon")
    assert not registry.redeem_bypass("acme", old_token)
    assert registry.redeem_bypass("acme", new)


def test_a_tools_window_is_ended_by_that_tool_until_an_operator_takes_it(
    registry: TenantRegistry, tenants: dict[str, Tenant]
) -> None:
    started, _ = registry.start_maintenance("acme", opened_by=DATA_UPGRADE)
    assert started.maintenance is not None
    assert started.maintenance.opened_by == DATA_UPGRADE
    assert "opened_by" not in started.to_dict()["maintenance"]  # not for visitors
    ended = registry.end_maintenance("acme", opened_by=DATA_UPGRADE)
    assert ended.maintenance is None

    registry.start_maintenance("acme", opened_by=DATA_UPGRADE)
    taken, _ = registry.start_maintenance("acme", message="mine")
    assert taken.maintenance is not None and taken.maintenance.opened_by is None
    # The tool finds the window is no longer its own: nothing is written.
    before = registry.latest_generation()
    assert registry.end_maintenance("acme", opened_by=DATA_UPGRADE) == taken
    assert registry.latest_generation() == before
    # Nor does a tool starting it again take the operator's window.
    again, _ = registry.start_maintenance("acme", opened_by=DATA_UPGRADE)
    assert again.maintenance is not None and again.maintenance.opened_by is None
    assert registry.end_maintenance("acme").maintenance is None


def test_a_window_stored_without_opened_by_is_an_operators() -> None:
    stored = {**WINDOW.to_json()}
    assert "opened_by" not in stored
    assert Maintenance.from_json(stored) == WINDOW
    assert WINDOW.opened_by is None
    ours = Maintenance(WINDOW.since, 60, None, "k" * 64, DATA_UPGRADE)
    assert Maintenance.from_json(ours.to_json()) == ours
    assert Maintenance.from_json({**stored, "opened_by": 7}) == WINDOW


def test_a_token_is_redeemed_once_and_only_for_its_tenant(
    registry: TenantRegistry, tenants: dict[str, Tenant]
) -> None:
    _, acme_token = registry.start_maintenance("acme")
    _, beta_token = registry.start_maintenance("beta")
    assert not registry.redeem_bypass("beta", acme_token)
    assert not registry.redeem_bypass("acme", "not-a-token")
    assert not registry.redeem_bypass("nosuch", acme_token)
    assert registry.redeem_bypass("acme", acme_token)
    assert not registry.redeem_bypass("acme", acme_token)
    assert registry.redeem_bypass("beta", beta_token)


def test_end_clears_the_window_and_its_token(
    registry: TenantRegistry, tenants: dict[str, Tenant]
) -> None:
    _, token = registry.start_maintenance("acme")
    assert registry.end_maintenance("acme").maintenance is None
    assert not registry.redeem_bypass("acme", token)
    again, _ = registry.start_maintenance("acme")
    assert again.maintenance is not None
    # A new window, a new key: nothing signed before passes.
    assert not token_is_genuine(token, "acme", again.maintenance)


def test_end_without_a_window_writes_nothing(
    registry: TenantRegistry, tenants: dict[str, Tenant]
) -> None:
    before = registry.latest_generation()
    assert registry.end_maintenance("acme") == registry.get_tenant("acme")
    assert registry.latest_generation() == before


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda r: r.start_maintenance("acme", retry_after=0), id="zero"),
        pytest.param(
            lambda r: r.start_maintenance("acme", message="a\x07b"), id="control"
        ),
        pytest.param(
            lambda r: r.start_maintenance("acme", message="x" * 501), id="too long"
        ),
        pytest.param(lambda r: r.start_maintenance("nosuch"), id="unknown"),
        pytest.param(lambda r: r.end_maintenance("nosuch"), id="unknown end"),
    ],
)
def test_bad_input_changes_nothing(
    registry: TenantRegistry, tenants: dict[str, Tenant], write: Any
) -> None:
    unchanged_after(registry, write, (ValueError, LookupError))


def test_bypass_url_follows_the_tenants_address(
    registry: TenantRegistry, tenants: dict[str, Tenant]
) -> None:
    acme, token = registry.start_maintenance("acme")
    assert bypass_url(acme, token, base_domain=BASE) == (
        f"https://acme.{BASE}{BYPASS_PATH}{token}"
    )
    registry.set_subdomain("acme", None)
    by_path = registry.get_tenant("acme")
    assert bypass_url(by_path, token, base_domain=BASE) == (
        f"https://{BASE}/acme{BYPASS_PATH}{token}"
    )
    registry.add_domain("acme", "shop.acme.test")
    by_domain = registry.get_tenant("acme")
    assert bypass_url(by_domain, token, base_domain=BASE, scheme="http") == (
        f"http://shop.acme.test{BYPASS_PATH}{token}"
    )


# -- the dispatcher -------------------------------------------------------------

# How each tenant is reached: its host, and the path to its root on it.
SUBDOMAIN = pytest.param(lambda slug: (f"{slug}.{BASE}", ""), id="subdomain")
PATH = pytest.param(lambda slug: (BASE, f"/{slug}"), id="path prefix")
Address = Callable[[str], tuple[str, str]]


@pytest.fixture
def built() -> list[str]:
    return []


@pytest.fixture
def torn_down() -> list[tuple[object, str]]:
    return []


@pytest.fixture
def make_dispatcher(
    counting: RedeemCountingRegistry,
    tenants: dict[str, Tenant],
    built: list[str],
    torn_down: list[tuple[object, str]],
) -> Iterator[Callable[..., TenantDispatcher]]:
    made: list[TenantDispatcher] = []

    def create_app(tenant: Tenant) -> Flask:
        built.append(tenant.slug)
        app = Flask(__name__)

        @app.get("/")
        def index() -> str:
            return f"hello from {tenant.slug}"

        return app

    def make(**options: Any) -> TenantDispatcher:
        options.setdefault("create_app", create_app)
        dispatcher = TenantDispatcher(
            counting,
            base_domain=BASE,
            path_routing=True,
            teardown=lambda app, tenant: torn_down.append((app, tenant.slug)),
            **options,
        )
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close()


@pytest.fixture
def client(make_dispatcher: Callable[..., TenantDispatcher]) -> Client:
    return Client(make_dispatcher(), use_cookies=False)


def get(
    client: Client,
    address: tuple[str, str],
    path: str = "/",
    *,
    cookie: str | None = None,
    scheme: str = "http",
    method: str = "GET",
) -> TestResponse:
    host, root = address
    headers = {} if cookie is None else {"Cookie": cookie}
    return client.open(
        root + path,
        base_url=f"{scheme}://{host}/",
        headers=headers,
        method=method,
        buffered=True,
    )


def bypass(client: Client, address: tuple[str, str], token: str) -> TestResponse:
    return get(client, address, BYPASS_PATH + token)


def cookie_of(response: TestResponse) -> tuple[str, SimpleCookie]:
    """The ``name=value`` a browser sends back, and the parsed Set-Cookie."""
    parsed = SimpleCookie(response.headers["Set-Cookie"])
    [morsel] = parsed.values()
    return f"{morsel.key}={morsel.value}", parsed


@pytest.mark.parametrize("address", [SUBDOMAIN, PATH])
def test_a_tenant_in_maintenance_answers_503_and_others_are_untouched(
    client: Client,
    counting: RedeemCountingRegistry,
    built: list[str],
    address: Address,
) -> None:
    counting.start_maintenance("acme", retry_after=90, message="<b>Back</b> at 14:00")
    response = get(client, address("acme"))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "90"
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    assert "down for maintenance" in page
    assert "&lt;b&gt;Back&lt;/b&gt; at 14:00" in page and "<b>Back" not in page
    assert get(client, address("beta")).get_data(as_text=True) == "hello from beta"
    # Its app is not built while nobody bypasses (its schema may be mid-upgrade).
    assert built == ["beta"]


def test_maintenance_reaches_a_tenant_already_built_and_off_brings_it_back(
    client: Client, counting: RedeemCountingRegistry, built: list[str]
) -> None:
    acme = (f"acme.{BASE}", "")
    assert get(client, acme).status_code == 200
    counting.start_maintenance("acme")
    assert get(client, acme).status_code == 503
    counting.end_maintenance("acme")
    assert get(client, acme).get_data(as_text=True) == "hello from acme"
    assert built == ["acme", "acme"]


def test_a_disabled_tenant_in_maintenance_gets_the_disabled_answer(
    client: Client, counting: RedeemCountingRegistry
) -> None:
    _, token = counting.start_maintenance("acme")
    counting.disable_tenant("acme", reason="unpaid")
    acme = (f"acme.{BASE}", "")
    assert get(client, acme).status_code == 403
    assert bypass(client, acme, token).status_code == 403
    assert counting.redeemed == []


@pytest.mark.parametrize("address", [SUBDOMAIN, PATH])
def test_the_bypass_url_sets_a_cookie_that_opens_the_tenant(
    client: Client, counting: RedeemCountingRegistry, address: Address
) -> None:
    _, token = counting.start_maintenance("acme")
    host, root = address("acme")
    response = bypass(client, (host, root), token)
    assert response.status_code == 303
    assert response.headers["Location"] == f"{root}/"
    assert response.headers["Cache-Control"] == "no-store"
    sent, parsed = cookie_of(response)
    morsel = parsed[cookie_name("acme")]
    assert morsel["path"] == (root or "/")
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["max-age"] == str(COOKIE_LIFETIME)
    assert not morsel["domain"]  # host-only
    assert not morsel["secure"]  # plain http here
    answer = get(client, (host, root), cookie=sent)
    assert answer.get_data(as_text=True) == "hello from acme"
    assert get(client, (host, root)).status_code == 503  # without it
    # One use: the second visit is refused.
    assert bypass(client, (host, root), token).status_code == 403


def test_the_cookie_is_secure_on_https(
    client: Client, counting: RedeemCountingRegistry
) -> None:
    _, token = counting.start_maintenance("acme")
    response = get(client, (f"acme.{BASE}", ""), BYPASS_PATH + token, scheme="https")
    assert cookie_of(response)[1][cookie_name("acme")]["secure"] is True


@pytest.mark.parametrize("address", [SUBDOMAIN, PATH])
def test_a_wrong_token_is_refused_without_asking_the_registry(
    client: Client, counting: RedeemCountingRegistry, address: Address
) -> None:
    _, token = counting.start_maintenance("acme")
    nonce, _, mac = token.partition(".")
    for wrong in (f"{nonce}.{mac[::-1]}", "guess", "", f"{token}/", "x" * 10_000):
        response = bypass(client, address("acme"), wrong)
        assert response.status_code == 403, wrong
        assert "Set-Cookie" not in response.headers
    assert counting.redeemed == []
    assert bypass(client, address("acme"), token).status_code == 303


def test_only_get_redeems(client: Client, counting: RedeemCountingRegistry) -> None:
    _, token = counting.start_maintenance("acme")
    acme = (f"acme.{BASE}", "")
    response = get(client, acme, BYPASS_PATH + token, method="POST")
    assert response.status_code == 405
    assert counting.redeemed == []
    assert bypass(client, acme, token).status_code == 303


@pytest.mark.parametrize("address", [SUBDOMAIN, PATH])
def test_one_tenants_token_and_cookie_never_open_another(
    client: Client, counting: RedeemCountingRegistry, address: Address
) -> None:
    _, acme_token = counting.start_maintenance("acme")
    _, beta_token = counting.start_maintenance("beta")
    # acme's token on beta: refused there, before the registry.
    assert bypass(client, address("beta"), acme_token).status_code == 403
    assert counting.redeemed == []
    acme_cookie, _ = cookie_of(bypass(client, address("acme"), acme_token))
    # acme's cookie, as is and renamed to beta's, does not open beta.
    value = acme_cookie.partition("=")[2]
    for cookie in (acme_cookie, f"{cookie_name('beta')}={value}"):
        assert get(client, address("beta"), cookie=cookie).status_code == 503
    # beta's own token is still unspent.
    assert bypass(client, address("beta"), beta_token).status_code == 303


def test_a_cookie_of_an_earlier_window_is_worthless(
    client: Client, counting: RedeemCountingRegistry
) -> None:
    acme = (f"acme.{BASE}", "")
    _, token = counting.start_maintenance("acme")
    cookie, _ = cookie_of(bypass(client, acme, token))
    # Another token in the same window: the cookie still opens it.
    counting.start_maintenance("acme", message="Later than planned")
    assert get(client, acme, cookie=cookie).status_code == 200
    counting.end_maintenance("acme")
    counting.start_maintenance("acme")
    assert get(client, acme, cookie=cookie).status_code == 503


def test_a_custom_maintenance_app_gets_the_tenant(
    make_dispatcher: Callable[..., TenantDispatcher], counting: RedeemCountingRegistry
) -> None:
    def styled(environ: dict[str, Any], start_response: Any) -> Any:
        tenant: Tenant = environ[ENVIRON_KEY]
        assert tenant.maintenance is not None
        text = f"{tenant.slug}: {tenant.maintenance.message}"
        return Response(text, 503)(environ, start_response)

    client = Client(make_dispatcher(maintenance_app=styled), use_cookies=False)
    counting.start_maintenance("acme", message="new shelves")
    response = get(client, (f"acme.{BASE}", ""))
    assert (response.status_code, response.get_data(as_text=True)) == (
        503,
        "acme: new shelves",
    )


def test_the_real_app_is_torn_down_once_and_the_gate_never(
    make_dispatcher: Callable[..., TenantDispatcher],
    counting: RedeemCountingRegistry,
    torn_down: list[tuple[object, str]],
) -> None:
    apps: list[Flask] = []

    def create_app(tenant: Tenant) -> Flask:
        app = Flask(__name__)
        app.add_url_rule("/", "index", lambda: "real")
        apps.append(app)
        return app

    client = Client(make_dispatcher(create_app=create_app), use_cookies=False)
    acme = (f"acme.{BASE}", "")
    counting.start_maintenance("acme", message="first")
    assert get(client, acme).status_code == 503
    _, token = counting.start_maintenance("acme", message="second")
    assert torn_down == []  # the evicted gate had built nothing
    cookie, _ = cookie_of(bypass(client, acme, token))
    assert get(client, acme, cookie=cookie).get_data(as_text=True) == "real"
    assert get(client, acme, cookie=cookie).get_data(as_text=True) == "real"
    assert len(apps) == 1
    counting.end_maintenance("acme")
    assert torn_down == [(apps[0], "acme")]
    assert get(client, acme).get_data(as_text=True) == "real"
    assert len(apps) == 2 and torn_down == [(apps[0], "acme")]


def test_a_shared_app_behind_the_gate_is_never_torn_down(
    make_dispatcher: Callable[..., TenantDispatcher],
    counting: RedeemCountingRegistry,
    torn_down: list[tuple[object, str]],
) -> None:
    shop = Flask(__name__)
    shop.add_url_rule("/", "index", lambda: "shared")
    client = Client(
        make_dispatcher(create_app=None, shared_app=shop), use_cookies=False
    )
    acme = (f"acme.{BASE}", "")
    _, token = counting.start_maintenance("acme")
    assert get(client, acme).status_code == 503
    cookie, _ = cookie_of(bypass(client, acme, token))
    assert get(client, acme, cookie=cookie).get_data(as_text=True) == "shared"
    counting.end_maintenance("acme")
    assert get(client, acme).get_data(as_text=True) == "shared"
    assert torn_down == []


# -- the gate on its own: time is injected --------------------------------------


def test_the_gate_refuses_an_expired_cookie(
    registry: TenantRegistry, tenants: dict[str, Tenant]
) -> None:
    tenant, token = registry.start_maintenance("acme")
    now = [NOW]
    gate = MaintenanceGate(
        tenant,
        lambda: Response("real"),
        Response("down", 503),
        registry.redeem_bypass,
        clock=lambda: now[0],
    )
    client = Client(gate, use_cookies=False)
    cookie, _ = cookie_of(client.get(BYPASS_PATH + token))
    assert client.get("/", headers={"Cookie": cookie}).status_code == 200
    now[0] += COOKIE_LIFETIME
    assert client.get("/", headers={"Cookie": cookie}).status_code == 503


def test_a_gate_needs_a_tenant_in_maintenance(tenants: dict[str, Tenant]) -> None:
    with pytest.raises(ValueError, match="not in maintenance"):
        MaintenanceGate(tenants["acme"], Response, Response(), lambda s, t: False)


def test_a_token_is_spent_once_by_racing_processes_registries(
    registry: TenantRegistry, tenants: dict[str, Tenant], database_url: str
) -> None:
    """Each registry has its own engine, as each worker process does."""
    _, token = registry.start_maintenance("acme")
    others = [TenantRegistry(database_url) for _ in range(6)]
    try:
        with ThreadPoolExecutor(max_workers=len(others)) as pool:
            results = list(pool.map(lambda r: r.redeem_bypass("acme", token), others))
    finally:
        for other in others:
            other.close()
    assert sorted(results) == [False] * 5 + [True]
