"""Tenant data on several PostgreSQL servers: placement, pools, isolation.

Two databases of the test server stand for two servers: each has its own
URL, so its own engine and pool, exactly as a second host would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, String, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.test import Client

from dispatcher import CachePolicy, Tenant, TenantDispatcher, TenantRegistry
from dispatcher.data import TenantData, schema_name
from dispatcher.data_servers import Servers
from dispatcher.exceptions import InvalidName, TenantDataError
from dispatcher.provisioning import Provisioner, ProvisioningFailed

BASE = "example.com"


class Base(DeclarativeBase):
    metadata = MetaData()


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))


def test_least_used_counts_unrecorded_tenants_on_the_first_server() -> None:
    servers = Servers(
        {
            "main": "postgresql://a/x",
            "eu": "postgresql://b/x",
            "us": "postgresql://c/x",
        },
        pool_size=1,
        max_overflow=0,
        pool_timeout=1,
        connect_timeout=1,
    )
    assert servers.default == "main"
    assert servers.least_used({}) == "main"  # ties go to the first
    assert servers.least_used({None: 2, "eu": 1, "us": 1}) == "eu"
    assert servers.least_used({"main": 1, "eu": 1}) == "us"
    # A server no longer configured is not a candidate.
    assert servers.least_used({"gone": 0, "main": 5, "eu": 5, "us": 4}) == "us"


@pytest.mark.parametrize(
    ("urls", "message"),
    [
        ({}, "no data server"),
        ({"Main": "postgresql://a/x"}, "data server 'Main' must match"),
        ({"9": "postgresql://a/x"}, "data server '9' must match"),
        ({"a": "postgresql://a/x", "b": "sqlite://"}, "must all be 'postgresql'"),
    ],
)
def test_server_configuration_errors_name_the_value(
    urls: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        TenantData(urls, metadata=Base.metadata)


def test_several_servers_need_a_registry() -> None:
    with pytest.raises(ValueError, match="need registry="):
        TenantData(
            {"a": "postgresql://a/x", "b": "postgresql://b/x"}, metadata=Base.metadata
        )


@pytest.fixture
def data(
    tenant_data_location: dict[str, Any],
    eu_database: str,
    eu: Engine,
    registry: TenantRegistry,
) -> Iterator[TenantData]:
    data = TenantData(
        {"main": tenant_data_location["url"], "eu": eu_database},
        metadata=Base.metadata,
        registry=registry,
        pool_size=1,
        max_overflow=1,
    )
    yield data
    data.dispose()


def schemas_on(data: TenantData, server: str) -> set[str]:
    with data._shared(server).connect() as connection:
        return set(
            connection.scalars(
                text("SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%\\_%'")
            )
        )


def provision(
    registry: TenantRegistry, data: TenantData, slug: str, **kw: Any
) -> Tenant:
    provisioner = Provisioner(
        registry, on_create=[data.create], on_delete=[data.archive]
    )
    return provisioner.create(slug, owner_email=f"o@{slug}.test", subdomain=slug, **kw)


def test_new_tenants_go_to_the_server_with_the_fewest(
    data: TenantData, registry: TenantRegistry
) -> None:
    placed = [provision(registry, data, slug) for slug in ("a1", "a2", "a3", "a4")]
    assert [tenant.data_server for tenant in placed] == ["main", "eu", "main", "eu"]
    assert registry.count_by_data_server() == {"main": 2, "eu": 2}
    for tenant in placed:
        assert data.server_of(tenant) == tenant.data_server
        other = "eu" if tenant.data_server == "main" else "main"
        assert schema_name(tenant) in schemas_on(data, tenant.data_server or "")
        assert schema_name(tenant) not in schemas_on(data, other)
    # Each server has its own pool, within its own bound.
    assert data._shared("main") is not data._shared("eu")
    assert data._shared("main").url != data._shared("eu").url


def test_an_explicit_server_is_kept(data: TenantData, registry: TenantRegistry) -> None:
    # Other tests of the run may have left schemas in the run's database.
    before = schemas_on(data, "main")
    first = provision(registry, data, "first", data_server="eu")
    second = provision(registry, data, "second", data_server="eu")
    assert (first.data_server, second.data_server) == ("eu", "eu")
    assert schemas_on(data, "main") == before
    assert schemas_on(data, "eu") == {schema_name(first), schema_name(second)}


def test_an_unconfigured_server_leaves_no_tenant_and_no_schema(
    data: TenantData, registry: TenantRegistry
) -> None:
    before = schemas_on(data, "main")
    with pytest.raises(ProvisioningFailed, match="'mars'") as raised:
        provision(registry, data, "lost", data_server="mars")
    assert isinstance(raised.value.__cause__, TenantDataError)
    assert "not configured" in str(raised.value.__cause__)
    assert registry.find_by_slug("lost") is None
    assert schemas_on(data, "main") == before
    assert schemas_on(data, "eu") == set()
    with pytest.raises(InvalidName, match="'Mars!'"):
        provision(registry, data, "bad", data_server="Mars!")
    assert registry.find_by_slug("bad") is None


def test_a_tenant_recorded_on_a_server_no_longer_configured_names_it(
    data: TenantData, registry: TenantRegistry
) -> None:
    registry.create_tenant("stray", owner_email="o@stray.test", data_server="asia")
    stray = registry.get_tenant("stray")
    with pytest.raises(TenantDataError, match="'asia' of tenant 'stray' is not"):
        data.engine_for(stray)


def test_tenants_on_two_servers_are_served_side_by_side(
    data: TenantData, registry: TenantRegistry
) -> None:
    def create_app(tenant: Tenant) -> Any:
        from flask import Flask

        app = Flask(f"tenant_{tenant.slug}")
        data.init_app(app, tenant)

        @app.get("/")
        def index() -> dict[str, Any]:
            return {"titles": list(data.session.scalars(select(Item.title)))}

        return app

    main, eu = provision(registry, data, "north"), provision(registry, data, "south")
    assert {main.data_server, eu.data_server} == {"main", "eu"}
    for tenant in (main, eu):
        with data.sessionmaker_for(tenant)() as session, session.begin():
            session.add(Item(title=f"{tenant.slug} on {tenant.data_server}"))
    dispatcher = TenantDispatcher(
        registry, create_app, base_domain=BASE, policy=CachePolicy(poll_interval=None)
    )
    try:
        client = Client(dispatcher)
        for tenant in (main, eu):
            response = client.get("/", headers={"Host": f"{tenant.slug}.{BASE}"})
            assert response.status_code == 200
            assert response.json == {
                "titles": [f"{tenant.slug} on {tenant.data_server}"]
            }
    finally:
        dispatcher.close()


def test_sqlite_data_refuses_a_named_server(tmp_path: Any) -> None:
    data = TenantData("sqlite://", metadata=Base.metadata, directory=tmp_path)
    registry = TenantRegistry(f"sqlite:///{tmp_path / 'registry.sqlite3'}")
    registry.migrate()
    try:
        provisioner = Provisioner(registry, on_create=[data.create])
        with pytest.raises(ProvisioningFailed, match="'eu'"):
            provisioner.create("acme", owner_email="o@acme.test", data_server="eu")
        assert registry.find_by_slug("acme") is None
        assert list(tmp_path.glob("t_*")) == []
        tenant = provisioner.create("acme", owner_email="o@acme.test")
        assert data.server_of(tenant) == "default"
    finally:
        registry.close()
        data.dispose()
