"""Tenant data on a shared app: ``data.session`` is the request's tenant's.

Real databases: a SQLite file per tenant, or a schema per tenant on
PostgreSQL (DISPATCHER_TEST_DATABASE_URL), behind a real TenantDispatcher.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from helpers import make_tenant
from sqlalchemy import make_url, select
from tcp_proxy import TcpProxy
from test_data import Base, Item
from werkzeug.test import Client

from dispatcher import (
    CachePolicy,
    Tenant,
    TenantDispatcher,
    TenantRegistry,
    current_tenant,
)
from dispatcher import data as data_module
from dispatcher.context import ENVIRON_KEY
from dispatcher.data import EXTENSION, TenantData
from dispatcher.provisioning import Provisioner

BASE = "example.com"


@pytest.fixture
def data(tenant_data_location: dict[str, Any]) -> Iterator[TenantData]:
    data = TenantData(metadata=Base.metadata, retry_after=7, **tenant_data_location)
    yield data
    data.dispose()


def shared_app(data: TenantData) -> Flask:
    app = Flask("shop")
    data.init_shared_app(app)

    @app.get("/items")
    def items() -> dict[str, Any]:
        titles = data.session.scalars(select(Item.title).order_by(Item.id))
        return {"tenant": current_tenant.slug, "items": list(titles)}

    @app.post("/items")
    def add() -> tuple[str, int]:
        data.session.add(Item(title=request.get_data(as_text=True)))
        data.session.commit()
        return "", 201

    return app


def as_tenant(tenant: Tenant) -> dict[str, Any]:
    """The environ the dispatcher gives a request routed to ``tenant``."""
    return {ENVIRON_KEY: tenant}


def test_fifty_tenants_on_one_app_never_see_each_others_rows(
    data: TenantData, registry: TenantRegistry
) -> None:
    provisioner = Provisioner(registry, on_create=[data.create])
    slugs = [f"t{i}" for i in range(50)]
    for slug in slugs:
        provisioner.create(slug, owner_email=f"o@{slug}.test", subdomain=slug)
    app = shared_app(data)
    dispatcher = TenantDispatcher(
        registry,
        shared_app=app,
        base_domain=BASE,
        policy=CachePolicy(poll_interval=None),
    )
    client = Client(dispatcher)

    def host(slug: str) -> dict[str, str]:
        return {"HTTP_HOST": f"{slug}.{BASE}"}

    try:
        for slug in slugs:
            posted = client.post(
                "/items", data=slug, environ_overrides=host(slug), buffered=True
            )
            assert posted.status_code == 201
        client.post("/items", data="again", environ_overrides=host("t0"))
        for slug in slugs:
            answer = client.get("/items", environ_overrides=host(slug), buffered=True)
            expected = [slug, "again"] if slug == "t0" else [slug]
            assert answer.json == {"tenant": slug, "items": expected}
        assert dispatcher.stats().apps == 0
    finally:
        dispatcher.close()


def test_the_session_is_the_tenants_and_closed_at_teardown(data: TenantData) -> None:
    acme, bravo = make_tenant("acme"), make_tenant("bravo")
    data.create(acme)
    data.create(bravo)
    app = shared_app(data)
    scoped = app.extensions[EXTENSION].scoped
    with app.test_request_context("/", environ_base=as_tenant(acme)):
        session = data.session
        assert data.session is session
        session.add(Item(title="acme's"))
        session.commit()
    assert scoped.registry.registry == {}  # removed at teardown
    with app.test_request_context("/", environ_base=as_tenant(bravo)):
        assert data.session is not session
        assert data.session.scalars(select(Item.title)).all() == []
    with app.test_request_context("/", environ_base=as_tenant(acme)):
        assert data.session.scalars(select(Item.title)).all() == ["acme's"]


def test_two_tenants_in_one_app_context_are_refused(data: TenantData) -> None:
    """Nested request contexts share the app context, so its session: the
    second tenant is refused instead of handed the first's session."""
    acme, bravo = make_tenant("acme"), make_tenant("bravo")
    data.create(acme)
    app = shared_app(data)
    with app.app_context():
        with app.test_request_context("/", environ_base=as_tenant(acme)):
            data.session.scalars(select(Item.title)).all()
        with (
            app.test_request_context("/", environ_base=as_tenant(bravo)),
            pytest.raises(RuntimeError, match="not .* of tenant 'bravo'"),
        ):
            data.session  # noqa: B018


def test_no_tenant_is_a_clear_error_not_another_tenants_data(
    data: TenantData,
) -> None:
    app = shared_app(data)
    with app.app_context(), pytest.raises(RuntimeError, match="shared app 'shop'"):
        data.session  # noqa: B018
    with (
        app.test_request_context("/"),
        pytest.raises(RuntimeError, match="no request a TenantDispatcher routed"),
    ):
        data.session  # noqa: B018
    assert app.test_client().get("/items").status_code == 500


def test_flask_sqlalchemy_db_is_refused_on_a_shared_app(data: TenantData) -> None:
    with pytest.raises(TypeError, match="db= is not supported on shared app 'shop'"):
        data.init_shared_app(Flask("shop"), db=SQLAlchemy(metadata=Base.metadata))


def test_binding_twice_is_refused(data: TenantData) -> None:
    app = shared_app(data)
    with pytest.raises(RuntimeError, match="already bound"):
        data.init_shared_app(app)
    with pytest.raises(RuntimeError, match="already bound"):
        data.init_app(app, make_tenant("acme"))


def test_engines_kept_for_a_shared_app_are_bounded(
    tenant_data_location: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data_module, "SHARED_ENGINES", 2)
    data = TenantData(metadata=Base.metadata, **tenant_data_location)
    try:
        tenants = [make_tenant(slug) for slug in ("a", "b", "c")]
        for tenant in tenants:
            data.create(tenant)
        app = shared_app(data)
        engines = []
        for tenant in [*tenants, tenants[2]]:
            with app.test_request_context("/", environ_base=as_tenant(tenant)):
                engines.append(data.session.get_bind())
                assert data.session.scalars(select(Item.title)).all() == []
        assert engines[3] is engines[2]  # kept
        assert len(data._recent._engines) == 2
        if data.directory is not None:
            # a's file engine left with a: the next use opens a new one.
            assert data.engine_for(tenants[0]) is not engines[0]
    finally:
        data.dispose()


@pytest.fixture
def unreachable_data(
    tenant_data_location: dict[str, Any],
) -> Iterator[TenantData]:
    """PostgreSQL: a loopback port nothing listens on; SQLite: no file."""
    location = dict(tenant_data_location)
    if make_url(location["url"]).get_backend_name() != "sqlite":
        nowhere = TcpProxy(("127.0.0.1", 9))  # never up: connections are refused
        location["url"] = make_url(location["url"]).set(
            host="127.0.0.1", port=nowhere.port
        )
    data = TenantData(metadata=Base.metadata, retry_after=7, **location)
    yield data
    data.dispose()


def test_unreachable_data_is_503_on_a_shared_app(
    unreachable_data: TenantData,
) -> None:
    app = shared_app(unreachable_data)
    client = app.test_client()
    response = client.get("/items", environ_base=as_tenant(make_tenant("acme")))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
