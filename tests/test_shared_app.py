"""TenantDispatcher's shared-app mode: one app for many tenants.

A real registry (SQLite file, or PostgreSQL with DISPATCHER_TEST_DATABASE_URL)
and real Flask apps through werkzeug's test client. The tenant, and its config,
come from the request (``current_tenant``); the shared app is never torn down
and its tenants are bounded by ``max_tenants``, apart from own apps'
``max_apps``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from helpers import Timer, with_policy
from werkzeug.test import Client, TestResponse

from dispatcher import Tenant, TenantDispatcher, TenantRegistry, current_tenant
from dispatcher.tenant import TenantStatus

BASE = "example.com"


class Torn:
    """The dispatcher's ``teardown``: records (app, slug) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, str]] = []

    def __call__(self, app: Any, tenant: Tenant) -> None:
        self.calls.append((app, tenant.slug))

    def of(self, app: Any) -> int:
        return sum(1 for torn, _ in self.calls if torn is app)


def shared_flask_app(name: str = "shared") -> Flask:
    """A Flask app that answers from the request's tenant, never from its own state."""
    app = Flask(name)

    @app.get("/")
    def index() -> dict[str, Any]:
        return {
            "app": name,
            "tenant": current_tenant.slug,
            "greeting": current_tenant.config.get("greeting"),
            "version": current_tenant.version,
        }

    return app


def own_flask_app(tenant: Tenant) -> Flask:
    app = Flask(f"own_{tenant.slug}")

    @app.get("/")
    def index() -> dict[str, Any]:
        return {"app": f"own:{tenant.slug}", "tenant": current_tenant.slug}

    return app


def create(registry: TenantRegistry, count: int, prefix: str = "t") -> list[str]:
    """``count`` tenants routed by subdomain, each greeting with its slug."""
    specs = [
        registry.new_tenant(
            f"{prefix}{i}",
            owner_email=f"owner@{prefix}{i}.test",
            subdomain=f"{prefix}{i}",
            config={"greeting": f"hello {prefix}{i}"},
        )
        for i in range(count)
    ]
    results = list(registry.import_tenants(specs))
    assert all(result.error is None for result in results)
    return [spec.slug for spec in specs]


def get(client: Client, slug: str) -> TestResponse:
    return client.get("/", headers={"Host": f"{slug}.{BASE}"}, buffered=True)


@pytest.fixture
def timer() -> Timer:
    return Timer()


@pytest.fixture
def make_dispatcher(
    registry: TenantRegistry, timer: Timer
) -> Iterator[Callable[..., TenantDispatcher]]:
    made: list[TenantDispatcher] = []

    def make(create_app: Any = None, **options: Any) -> TenantDispatcher:
        options.setdefault("base_domain", BASE)
        options.setdefault("timer", timer)
        options.setdefault("poll_interval", None)
        dispatcher = TenantDispatcher(registry, create_app, **with_policy(options))
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close()


# -- one app, many tenants ------------------------------------------------------


def test_one_shared_app_serves_fifty_tenants_from_the_request(
    registry: TenantRegistry, make_dispatcher: Callable[..., TenantDispatcher]
) -> None:
    slugs = create(registry, 50)
    shop = shared_flask_app()
    torn = Torn()
    dispatcher = make_dispatcher(shared_app=shop, teardown=torn)
    client = Client(dispatcher)

    versions = {tenant.slug: tenant.version for tenant in registry.list_tenants()}
    for _ in range(2):
        for slug in slugs:
            body = get(client, slug).get_json()
            assert body == {
                "app": "shared",
                "tenant": slug,
                "greeting": f"hello {slug}",
                "version": versions[slug],
            }

    stats = dispatcher.stats()
    assert (stats.apps, stats.shared_tenants, stats.builds) == (0, 50, 0)
    dispatcher.close()
    assert torn.calls == []


def test_unknown_tenant_on_a_shared_app_is_the_default_answer(
    registry: TenantRegistry, make_dispatcher: Callable[..., TenantDispatcher]
) -> None:
    create(registry, 1)
    client = Client(make_dispatcher(shared_app=shared_flask_app()))
    assert get(client, "nobody").status_code == 404


def test_a_config_change_is_seen_at_once_and_rebuilds_nothing(
    registry: TenantRegistry, make_dispatcher: Callable[..., TenantDispatcher]
) -> None:
    create(registry, 2)
    shop = shared_flask_app()
    calls: list[str] = []

    def create_app(tenant: Tenant) -> Flask:
        calls.append(tenant.slug)
        return shop

    torn = Torn()
    dispatcher = make_dispatcher(create_app, shared_app=shop, teardown=torn)
    client = Client(dispatcher)
    assert get(client, "t0").get_json()["greeting"] == "hello t0"
    assert get(client, "t1").get_json()["greeting"] == "hello t1"

    # The registry's feed invalidates t0's record: the next request reads the
    # new snapshot; t1 is untouched and no app is built or torn down.
    updated = registry.update_config("t0", {"greeting": "bonjour"})

    body = get(client, "t0").get_json()
    assert (body["greeting"], body["version"]) == ("bonjour", updated.version)
    assert get(client, "t1").get_json()["greeting"] == "hello t1"
    assert torn.calls == []
    assert dispatcher.stats().builds == 0
    assert calls == ["t0", "t1", "t0"]  # create_app only chose the shared app


def test_a_disabled_tenant_of_a_shared_app_gets_the_disabled_app(
    registry: TenantRegistry, make_dispatcher: Callable[..., TenantDispatcher]
) -> None:
    create(registry, 2)
    torn = Torn()
    shop = shared_flask_app()
    dispatcher = make_dispatcher(shared_app=shop, teardown=torn)
    client = Client(dispatcher)
    assert get(client, "t0").status_code == 200

    registry.disable_tenant("t0")

    assert get(client, "t0").status_code == 403
    assert get(client, "t1").get_json()["tenant"] == "t1"
    registry.enable_tenant("t0")
    assert get(client, "t0").get_json()["tenant"] == "t0"
    assert torn.calls == []
    assert dispatcher.stats().shared_tenants == 2


def test_expiry_and_eviction_never_tear_the_shared_app_down(
    registry: TenantRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
    timer: Timer,
) -> None:
    create(registry, 5)
    shop = shared_flask_app()
    shop.extensions["dispatcher.teardown"] = [lambda: pytest.fail("torn down")]
    dispatcher = make_dispatcher(shared_app=shop, max_tenants=2, app_ttl=10)
    client = Client(dispatcher)
    for slug in ("t0", "t1", "t2", "t3", "t4"):
        assert get(client, slug).get_json()["tenant"] == slug
    assert dispatcher.stats().shared_tenants == 2  # max_tenants bounds records
    assert dispatcher.stats().evictions["capacity"] == 3

    timer.tick(100)  # past app_ttl and stale_if_error: every record expires
    assert get(client, "t0").get_json()["tenant"] == "t0"
    dispatcher.evict("t0")
    dispatcher.close()
    assert get(client, "t1").get_json()["tenant"] == "t1"  # still serving


# -- mixed: most tenants shared, a few with their own app -----------------------


def test_mixed_deployment_tears_own_apps_down_once_and_never_the_shared_one(
    registry: TenantRegistry, make_dispatcher: Callable[..., TenantDispatcher]
) -> None:
    create(registry, 3, prefix="own")
    create(registry, 3, prefix="s")
    shop = shared_flask_app()
    built: list[Flask] = []

    def create_app(tenant: Tenant) -> Flask:
        if tenant.slug.startswith("own"):
            app = own_flask_app(tenant)
            built.append(app)
            return app
        return shop

    torn = Torn()
    dispatcher = make_dispatcher(create_app, shared_app=shop, teardown=torn)
    client = Client(dispatcher)
    for slug in ("own0", "own1", "own2"):
        assert get(client, slug).get_json()["app"] == f"own:{slug}"
    for slug in ("s0", "s1", "s2"):
        assert get(client, slug).get_json()["app"] == "shared"
    stats = dispatcher.stats()
    assert (stats.apps, stats.shared_tenants, stats.builds) == (3, 3, 3)

    registry.update_config("own0", {"greeting": "new"})  # rebuilds own0 only
    registry.update_config("s0", {"greeting": "new"})
    registry.disable_tenant("s1")
    dispatcher.evict("s2")
    assert get(client, "own0").get_json()["app"] == "own:own0"
    assert [slug for _, slug in torn.calls] == ["own0"]
    assert torn.of(built[0]) == 1

    dispatcher.close()
    assert len(built) == 4  # own0 twice
    assert sorted(slug for _, slug in torn.calls) == ["own0", "own0", "own1", "own2"]
    assert all(torn.of(app) == 1 for app in built)
    assert torn.of(shop) == 0


def test_a_tenant_moving_between_its_own_app_and_the_shared_one(
    registry: TenantRegistry, make_dispatcher: Callable[..., TenantDispatcher]
) -> None:
    """A plan change moves a tenant from one store to the other, once."""
    create(registry, 1)
    shop = shared_flask_app()

    def create_app(tenant: Tenant) -> Flask:
        if tenant.config.get("plan") == "enterprise":
            return own_flask_app(tenant)
        return shop

    torn = Torn()
    dispatcher = make_dispatcher(create_app, shared_app=shop, teardown=torn)
    client = Client(dispatcher)
    assert get(client, "t0").get_json()["app"] == "shared"

    registry.update_config("t0", {"plan": "enterprise"})
    assert get(client, "t0").get_json()["app"] == "own:t0"
    assert (dispatcher.stats().apps, dispatcher.stats().shared_tenants) == (1, 0)

    registry.update_config("t0", {"plan": "basic"})
    assert get(client, "t0").get_json()["app"] == "shared"
    assert (dispatcher.stats().apps, dispatcher.stats().shared_tenants) == (0, 1)
    assert [slug for _, slug in torn.calls] == ["t0"]
    assert torn.of(shop) == 0


def test_the_two_bounds_are_apart(
    registry: TenantRegistry, make_dispatcher: Callable[..., TenantDispatcher]
) -> None:
    """max_apps=2 with 3 own apps and 50 shared-app tenants (max_tenants=100):
    own apps are evicted by capacity, no shared-app record is."""
    create(registry, 3, prefix="own")
    shared_slugs = create(registry, 50, prefix="s")
    shop = shared_flask_app()

    def create_app(tenant: Tenant) -> Flask:
        return own_flask_app(tenant) if tenant.slug.startswith("own") else shop

    torn = Torn()
    dispatcher = make_dispatcher(
        create_app, shared_app=shop, teardown=torn, max_apps=2, max_tenants=100
    )
    client = Client(dispatcher)
    for slug in ["own0", *shared_slugs[:25], "own1", *shared_slugs[25:], "own2"]:
        assert get(client, slug).status_code == 200

    stats = dispatcher.stats()
    assert (stats.apps, stats.shared_tenants) == (2, 50)
    assert stats.evictions["capacity"] == 1
    assert [slug for _, slug in torn.calls] == ["own0"]
    for slug in shared_slugs:  # still held: served without a lookup
        assert get(client, slug).get_json()["tenant"] == slug
    assert dispatcher.stats().misses == stats.misses


def test_a_list_of_shared_apps_one_per_plan(
    registry: TenantRegistry, make_dispatcher: Callable[..., TenantDispatcher]
) -> None:
    create(registry, 4)
    basic, pro = shared_flask_app("basic"), shared_flask_app("pro")

    def create_app(tenant: Tenant) -> Flask:
        return pro if tenant.slug in ("t1", "t3") else basic

    torn = Torn()
    dispatcher = make_dispatcher(create_app, shared_app=[basic, pro], teardown=torn)
    client = Client(dispatcher)
    assert [get(client, f"t{i}").get_json()["app"] for i in range(4)] == [
        "basic",
        "pro",
        "basic",
        "pro",
    ]
    assert (dispatcher.stats().apps, dispatcher.stats().shared_tenants) == (0, 4)
    dispatcher.close()
    assert torn.calls == []


# -- arguments ------------------------------------------------------------------


def test_neither_create_app_nor_shared_app_is_a_type_error(
    registry: TenantRegistry,
) -> None:
    with pytest.raises(TypeError, match="create_app .*shared_app"):
        TenantDispatcher(registry)


@pytest.mark.parametrize(
    ("shared_app", "message"),
    [
        pytest.param("shop", r"shared_app must be a WSGI app .*'shop'", id="str"),
        pytest.param(
            [shared_flask_app(), 42], r"shared_app\[1\] must be a WSGI .*42", id="list"
        ),
        pytest.param([], "shared_app is an empty list", id="empty"),
    ],
)
def test_bad_shared_app_is_a_type_error_naming_it(
    registry: TenantRegistry, shared_app: Any, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        TenantDispatcher(registry, shared_app=shared_app)


def test_several_shared_apps_need_create_app_to_choose(
    registry: TenantRegistry,
) -> None:
    apps = [shared_flask_app("a"), shared_flask_app("b")]
    with pytest.raises(TypeError, match="list of 2 apps: give create_app"):
        TenantDispatcher(registry, shared_app=apps)


def test_is_shared_knows_the_shared_apps_and_disabled_app(
    registry: TenantRegistry, make_dispatcher: Callable[..., TenantDispatcher]
) -> None:
    shop = shared_flask_app()
    dispatcher = make_dispatcher(shared_app=shop)
    assert dispatcher.is_shared(shop)
    assert dispatcher.is_shared(dispatcher.disabled_app)
    assert not dispatcher.is_shared(shared_flask_app())


def test_a_tenant_on_a_shared_app_is_active_snapshot(
    registry: TenantRegistry, make_dispatcher: Callable[..., TenantDispatcher]
) -> None:
    """The request's tenant is the registry snapshot, as for own apps."""
    create(registry, 1)
    seen: list[Tenant] = []
    shop = Flask("shop")

    @shop.get("/")
    def index() -> str:
        seen.append(current_tenant._get_current_object())  # type: ignore[attr-defined]
        return "ok"

    client = Client(make_dispatcher(shared_app=shop))
    assert get(client, "t0").status_code == 200
    assert seen[0] == registry.find_by_slug("t0")
    assert seen[0].status is TenantStatus.ACTIVE


def test_the_collector_hears_of_own_apps_only(
    registry: TenantRegistry,
    make_dispatcher: Callable[..., TenantDispatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dispatcher import collector

    heard: list[tuple[str, Any]] = []
    monkeypatch.setattr(collector, "built", lambda app: heard.append(("built", app)))
    monkeypatch.setattr(
        collector, "released", lambda app: heard.append(("released", app))
    )
    create(registry, 1, prefix="own")
    create(registry, 2, prefix="s")
    shop = shared_flask_app()
    own: list[Flask] = []

    def create_app(tenant: Tenant) -> Flask:
        if tenant.slug.startswith("own"):
            own.append(own_flask_app(tenant))
            return own[-1]
        return shop

    dispatcher = make_dispatcher(create_app, shared_app=shop)
    client = Client(dispatcher)
    for slug in ("own0", "s0", "s1"):
        assert get(client, slug).status_code == 200
    registry.disable_tenant("s0")
    assert get(client, "s0").status_code == 403
    dispatcher.close()
    assert heard == [("built", own[0]), ("released", own[0])]
