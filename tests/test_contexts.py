"""dispatcher.app_for: a tenant's app and context outside a request, from the
dispatcher's own cache, on real tenant data (SQLite files or PG schemas)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, current_app, has_request_context, request, url_for
from helpers import WAIT, Background, Timer
from sqlalchemy import func, select
from werkzeug.test import Client

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry
from dispatcher.context import current_tenant
from dispatcher.data import TenantData
from dispatcher.demo.data import Base, Note
from dispatcher.exceptions import InvalidName, TenantDisabledError, TenantNotFound


@pytest.fixture
def data(tenant_data_location: dict[str, Any]) -> Iterator[TenantData]:
    data = TenantData(metadata=Base.metadata, **tenant_data_location)
    yield data
    data.dispose()


@pytest.fixture
def tenants(registry: TenantRegistry, data: TenantData) -> dict[str, Tenant]:
    made = {}
    for slug in ("acme", "beta"):
        tenant = registry.create_tenant(
            slug, owner_email=f"owner@{slug}.test", subdomain=slug
        )
        made[slug] = data.create(tenant)
    return made


class Built:
    """create_app and teardown for own apps on ``data``, counting both."""

    def __init__(self, data: TenantData) -> None:
        self.data = data
        self.builds: list[str] = []
        self.teardowns: list[str] = []

    def create_app(self, tenant: Tenant) -> Flask:
        self.builds.append(tenant.slug)
        app = Flask(f"tenant_{tenant.slug}")
        app.config["VERSION"] = tenant.version

        @app.route("/")
        def index() -> str:
            return f"{current_tenant.slug}: {notes(self.data)} notes"

        @app.route("/about")
        def about() -> str:
            return "about"

        self.data.init_app(app, tenant)
        return app

    def teardown(self, app: Any, tenant: Tenant) -> None:
        self.teardowns.append(tenant.slug)


def notes(data: TenantData) -> int:
    return data.session.scalar(select(func.count()).select_from(Note)) or 0


def add_note(data: TenantData, body: str) -> None:
    data.session.add(Note(body=body))
    data.session.commit()


@pytest.fixture
def built(data: TenantData) -> Built:
    return Built(data)


@pytest.fixture
def make_dispatcher(
    registry: TenantRegistry, built: Built
) -> Iterator[Callable[..., TenantDispatcher]]:
    made: list[TenantDispatcher] = []

    def make(**options: Any) -> TenantDispatcher:
        options.setdefault("create_app", built.create_app)
        dispatcher = TenantDispatcher(
            registry,
            base_domain="example.com",
            policy=CachePolicy(poll_interval=None),
            teardown=built.teardown,
            **options,
        )
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close()


def test_the_block_runs_in_the_tenant_as_a_request_does(
    make_dispatcher: Callable[..., TenantDispatcher],
    data: TenantData,
    tenants: dict[str, Tenant],
) -> None:
    dispatcher = make_dispatcher()
    with dispatcher.app_for("acme") as app:
        assert current_app._get_current_object() is app  # type: ignore[attr-defined]
        assert current_tenant.slug == "acme"
        assert request.host == "acme.example.com"
        assert url_for("about", _external=True) == "https://acme.example.com/about"
        add_note(data, "written by a script")
    assert not has_request_context()
    client = Client(dispatcher)
    assert client.get("http://acme.example.com/").text == "acme: 1 notes"
    assert client.get("http://beta.example.com/").text == "beta: 0 notes"


def test_a_built_app_is_reused_and_a_cold_one_built_once_for_both(
    make_dispatcher: Callable[..., TenantDispatcher],
    built: Built,
    tenants: dict[str, Tenant],
) -> None:
    dispatcher = make_dispatcher()
    client = Client(dispatcher)
    client.get("http://acme.example.com/")
    with dispatcher.app_for("acme") as first:
        pass
    with dispatcher.app_for("beta") as cold:
        pass
    with dispatcher.app_for("beta") as again:
        pass
    client.get("http://beta.example.com/")
    assert built.builds == ["acme", "beta"]
    assert again is cold
    assert first is not cold
    assert dispatcher.stats().builds == 2


def test_a_cold_build_is_shared_with_the_requests_that_want_it_meanwhile(
    make_dispatcher: Callable[..., TenantDispatcher],
    built: Built,
    tenants: dict[str, Tenant],
) -> None:
    building = threading.Event()
    release = threading.Event()

    def slow_create_app(tenant: Tenant) -> Flask:
        building.set()
        release.wait(WAIT)
        return built.create_app(tenant)

    timer = Timer()
    dispatcher = make_dispatcher(create_app=slow_create_app, timer=timer)

    def script() -> Any:
        with dispatcher.app_for("acme") as app:
            return app

    in_cache = timer.watch(2)
    script_run = Background(script)
    assert building.wait(WAIT)
    request_run = Background(
        lambda: Client(dispatcher).get("http://acme.example.com/").text
    )
    assert in_cache.wait(WAIT)  # the request is in the cache while it builds
    release.set()
    app = script_run.join()
    assert request_run.join() == "acme: 0 notes"
    assert built.builds == ["acme"]
    with dispatcher.app_for("acme") as again:
        assert again is app


def test_the_app_is_leased_until_the_block_ends(
    make_dispatcher: Callable[..., TenantDispatcher],
    built: Built,
    tenants: dict[str, Tenant],
) -> None:
    dispatcher = make_dispatcher()
    with dispatcher.app_for("acme"):
        assert dispatcher.evict("acme")
        assert built.teardowns == []  # still in use here
    assert built.teardowns == ["acme"]


def test_teardown_handlers_see_the_blocks_exception_and_the_lease_ends(
    make_dispatcher: Callable[..., TenantDispatcher],
    built: Built,
    tenants: dict[str, Tenant],
) -> None:
    dispatcher = make_dispatcher()
    seen: list[BaseException | None] = []
    with dispatcher.app_for("acme") as app:
        assert isinstance(app, Flask)
    app.teardown_appcontext(seen.append)
    with pytest.raises(KeyError), dispatcher.app_for("acme"):
        raise KeyError("broken")
    assert isinstance(seen[0], KeyError)
    dispatcher.evict("acme")
    assert built.teardowns == ["acme"]


@pytest.mark.parametrize(
    ("slug", "error", "words"),
    [
        pytest.param("nobody", TenantNotFound, "'nobody'", id="unknown"),
        pytest.param("Acme!", InvalidName, "'Acme!'", id="malformed"),
        pytest.param("", InvalidName, "''", id="empty"),
        pytest.param("a" * 64, InvalidName, "1-63 characters", id="too long"),
    ],
)
def test_a_slug_that_names_no_tenant_is_refused(
    make_dispatcher: Callable[..., TenantDispatcher],
    built: Built,
    tenants: dict[str, Tenant],
    slug: str,
    error: type[Exception],
    words: str,
) -> None:
    dispatcher = make_dispatcher()
    with pytest.raises(error, match=words):
        with dispatcher.app_for(slug):
            pytest.fail("entered")
    assert built.builds == []


def test_a_slug_is_normalised_as_the_registry_does(
    make_dispatcher: Callable[..., TenantDispatcher], tenants: dict[str, Tenant]
) -> None:
    with make_dispatcher().app_for(" ACME "):
        assert current_tenant.slug == "acme"


def test_a_disabled_tenant_is_refused_unless_allowed(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: TenantRegistry,
    built: Built,
    data: TenantData,
    tenants: dict[str, Tenant],
) -> None:
    dispatcher = make_dispatcher()
    registry.disable_tenant("acme", reason="unpaid")
    with pytest.raises(TenantDisabledError, match="'acme' is disabled \\(unpaid\\)"):
        with dispatcher.app_for("acme"):
            pytest.fail("entered")
    from dispatcher.contexts import app_for

    with app_for(dispatcher, "acme", allow_disabled=True):
        assert current_tenant.slug == "acme"
        add_note(data, "an export before the tenant goes")
        assert built.teardowns == []
    # Built for the block alone, and torn down after it: never cached.
    assert built.builds == ["acme"]
    assert built.teardowns == ["acme"]
    assert "acme" not in dispatcher._cache


def test_a_tenant_in_maintenance_is_let_in(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: TenantRegistry,
    tenants: dict[str, Tenant],
) -> None:
    registry.start_maintenance("acme", message="moving house")
    dispatcher = make_dispatcher()
    with dispatcher.app_for("acme"):
        # The tenant's own app, not the gate that answers its visitors 503.
        assert current_app.name == "tenant_acme"
        assert current_tenant.maintenance is not None
    response = Client(dispatcher).get("http://acme.example.com/")
    assert response.status_code == 503


def test_a_change_another_process_made_is_seen_at_once(
    make_dispatcher: Callable[..., TenantDispatcher],
    database_url: str,
    built: Built,
    tenants: dict[str, Tenant],
) -> None:
    # No follower (poll_interval=None), and the writes go through another
    # registry object: this dispatcher hears nothing of them.
    dispatcher = make_dispatcher()
    with dispatcher.app_for("acme") as before:
        pass
    other = TenantRegistry(database_url)
    try:
        changed = other.update_config("acme", {"plan": "gold"})
        with dispatcher.app_for("acme") as after:
            assert current_tenant.config["plan"] == "gold"
            assert after.config["VERSION"] == changed.version  # type: ignore[attr-defined]
        assert after is not before
        assert built.builds == ["acme", "acme"]
        other.disable_tenant("beta")
        other.delete_tenant("acme")
    finally:
        other.close()
    with pytest.raises(TenantNotFound), dispatcher.app_for("acme"):
        pytest.fail("entered")
    with pytest.raises(TenantDisabledError), dispatcher.app_for("beta"):
        pytest.fail("entered")


def test_a_shared_app_gets_each_tenants_data_even_nested(
    make_dispatcher: Callable[..., TenantDispatcher],
    data: TenantData,
    tenants: dict[str, Tenant],
) -> None:
    shop = Flask("shop")
    data.init_shared_app(shop)
    dispatcher = make_dispatcher(create_app=None, shared_app=shop)
    with dispatcher.app_for("acme") as app:
        assert app is shop
        add_note(data, "acme's")
        with dispatcher.app_for("beta"):
            assert current_tenant.slug == "beta"
            add_note(data, "beta's")
            add_note(data, "beta's too")
            assert notes(data) == 2
        assert current_tenant.slug == "acme"
        assert notes(data) == 1


def test_a_plain_wsgi_app_is_handed_over_without_a_context(
    make_dispatcher: Callable[..., TenantDispatcher], tenants: dict[str, Tenant]
) -> None:
    def plain(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b"plain"]

    entered = None
    from dispatcher.contexts import app_for

    with app_for(make_dispatcher(create_app=lambda tenant: plain), "acme") as app:
        entered = app
        assert not has_request_context()
    assert entered is plain


def test_a_block_is_entered_once(
    make_dispatcher: Callable[..., TenantDispatcher], tenants: dict[str, Tenant]
) -> None:
    block = make_dispatcher().app_for("acme")
    with block:
        pass
    with pytest.raises(RuntimeError, match="entered already"), block:
        pytest.fail("entered")


def test_a_disabled_tenants_app_built_for_a_block_is_managed_as_any_build(
    make_dispatcher: Callable[..., TenantDispatcher],
    registry: TenantRegistry,
    built: Built,
    tenants: dict[str, Tenant],
) -> None:
    # Built and torn down through the dispatcher's own steps, so the
    # collector freezes after it and cuts its cycles after, as for a request's.
    from dispatcher import collector
    from dispatcher.contexts import app_for

    dispatcher = make_dispatcher()
    registry.disable_tenant("acme")
    before = collector.stats().apps_frozen

    with app_for(dispatcher, "acme", allow_disabled=True):
        pass

    assert built.teardowns == ["acme"]
    assert collector.stats().apps_frozen == before + (1 if collector.managed() else 0)
