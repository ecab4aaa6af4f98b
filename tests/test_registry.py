"""TenantRegistry: what it writes and reads back, as snapshots, versions and changes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import operator
from collections.abc import Callable
from typing import Any

import pytest
from registry_helpers import Write, state, unchanged_after
from sqlalchemy import create_engine, event, text

from dispatcher import (
    Conflict,
    DispatcherError,
    InvalidConfig,
    InvalidName,
    OwnerExists,
    Tenant,
    TenantChange,
    TenantNotFound,
    TenantRegistry,
    TenantStatus,
)
from dispatcher.changes import Names
from dispatcher.validation import MAX_CONFIG_BYTES

# -- configuration -----------------------------------------------------------------


@pytest.mark.parametrize(
    "notifier",
    [pytest.param("postgres", id="a-name"), pytest.param(object(), id="obj")],
)
def test_notifier_must_be_one(database_url: str, notifier: Any) -> None:
    """Taken as is, it failed every write (inside its transaction) instead."""
    with pytest.raises(TypeError, match=r"notifier must be a Notifier .*, not "):
        TenantRegistry(database_url, notifier=notifier)


# -- create and read back ---------------------------------------------------------


def test_create_tenant_snapshot(registry: TenantRegistry) -> None:
    before = dt.datetime.now(dt.UTC)
    tenant = registry.create_tenant(
        "acme",
        owner_email="owner@acme.test",
        owner_name="Ada Lovelace",
        subdomain="acme",
        path_prefix="shop",
        domains=["shop.acme.com", "www.acme.com"],
        config={"theme": "dark", "limits": {"users": 5}, "tags": ["a", "b"]},
    )
    after = dt.datetime.now(dt.UTC)

    assert tenant.slug == "acme"
    assert tenant.owner_email == "owner@acme.test"
    assert tenant.owner_name == "Ada Lovelace"
    assert tenant.subdomain == "acme"
    assert tenant.path_prefix == "shop"
    assert tenant.domains == ("shop.acme.com", "www.acme.com")
    assert tenant.primary_domain == "shop.acme.com"
    assert tenant.config == {
        "theme": "dark",
        "limits": {"users": 5},
        "tags": ("a", "b"),
    }
    assert tenant.status is TenantStatus.ACTIVE
    assert tenant.is_active
    assert tenant.disabled_reason is None
    assert tenant.version == registry.latest_generation()
    assert tenant.created_at.tzinfo is not None
    assert before <= tenant.created_at <= after
    assert before <= tenant.updated_at <= after


def test_get_tenant_reads_back_create(registry: TenantRegistry, acme: Tenant) -> None:
    assert registry.get_tenant("acme") == acme


def test_list_tenants_reads_back_create(registry: TenantRegistry, acme: Tenant) -> None:
    assert registry.list_tenants() == [acme]


def test_create_tenant_defaults(registry: TenantRegistry) -> None:
    tenant = registry.create_tenant("acme", owner_email="owner@acme.test")

    assert tenant.owner_name is None
    assert tenant.subdomain is None
    assert tenant.path_prefix is None
    assert tenant.domains == ()
    assert tenant.primary_domain is None
    assert tenant.config == {}
    assert tenant.data_server is None
    assert registry.get_tenant("acme") == tenant


def test_to_dict_is_json(registry: TenantRegistry, acme: Tenant) -> None:
    data = json.loads(json.dumps(acme.to_dict()))

    assert data["slug"] == acme.slug
    assert data["domains"] == list(acme.domains)
    assert data["config"] == {"a": 1, "b": 2, "nested": {"list": [1, 2], "flag": True}}
    assert data["status"] == "active"
    assert data["version"] == acme.version
    assert data["data_server"] is None
    assert dt.datetime.fromisoformat(data["created_at"]) == acme.created_at


@pytest.mark.parametrize(
    ("kwargs", "field", "expected"),
    [
        pytest.param({"slug": "ACME"}, "slug", "acme", id="slug"),
        pytest.param(
            {"owner_email": "Owner@Acme.TEST"},
            "owner_email",
            "owner@acme.test",
            id="email",
        ),
        pytest.param({"owner_name": "  Ada  "}, "owner_name", "Ada", id="name"),
        pytest.param({"subdomain": "ACME"}, "subdomain", "acme", id="subdomain"),
        pytest.param({"path_prefix": " Shop "}, "path_prefix", "shop", id="path"),
        pytest.param(
            {"domains": ["Shop.Acme.com."]},
            "domains",
            ("shop.acme.com",),
            id="domain",
        ),
        pytest.param(
            {"domains": ["shop.acme.com", "SHOP.acme.com."]},
            "domains",
            ("shop.acme.com",),
            id="duplicate-domain",
        ),
    ],
)
def test_create_tenant_normalises(
    registry: TenantRegistry, kwargs: dict[str, Any], field: str, expected: Any
) -> None:
    arguments: dict[str, Any] = {"slug": "acme", "owner_email": "owner@acme.test"}
    arguments.update(kwargs)

    tenant = registry.create_tenant(arguments.pop("slug"), **arguments)

    assert getattr(tenant, field) == expected
    assert getattr(registry.get_tenant(tenant.slug), field) == expected


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param("ACME", id="upper"),
        pytest.param(" Acme ", id="spaces"),
    ],
)
def test_get_tenant_normalises_slug(
    registry: TenantRegistry, acme: Tenant, spelling: str
) -> None:
    assert registry.get_tenant(spelling) == acme


def test_create_tenant_owner_name_200(registry: TenantRegistry) -> None:
    tenant = registry.create_tenant(
        "acme", owner_email="owner@acme.test", owner_name="x" * 200
    )

    assert registry.get_tenant("acme").owner_name == tenant.owner_name == "x" * 200


def test_create_tenant_owner_name_too_long(registry: TenantRegistry) -> None:
    # users.name is VARCHAR(200): PostgreSQL refuses more, SQLite keeps it all.
    # Either way the registry should refuse it itself, with its own error.
    unchanged_after(
        registry,
        lambda r: r.create_tenant(
            "acme", owner_email="owner@acme.test", owner_name="x" * 201
        ),
        DispatcherError,
    )


def test_owner_shared_between_tenants(registry: TenantRegistry) -> None:
    registry.create_tenant("acme", owner_email="owner@acme.test", owner_name="Ada")

    other = registry.create_tenant("other", owner_email="OWNER@acme.test")

    assert other.owner_email == "owner@acme.test"
    assert other.owner_name == "Ada"


# -- domains ----------------------------------------------------------------------


def test_first_domain_is_primary(registry: TenantRegistry) -> None:
    tenant = registry.create_tenant(
        "acme", owner_email="owner@acme.test", domains=["z.acme.com", "a.acme.com"]
    )

    assert tenant.primary_domain == "z.acme.com"
    assert set(tenant.domains) == {"z.acme.com", "a.acme.com"}
    assert registry.get_tenant("acme").primary_domain == "z.acme.com"


def test_add_domain_first_is_primary(registry: TenantRegistry) -> None:
    registry.create_tenant("acme", owner_email="owner@acme.test")

    tenant = registry.add_domain("acme", "shop.acme.com")

    assert tenant.domains == ("shop.acme.com",)
    assert registry.get_tenant("acme").primary_domain == "shop.acme.com"


def test_add_domain_keeps_primary(registry: TenantRegistry, acme: Tenant) -> None:
    tenant = registry.add_domain("acme", "a.acme.com")

    assert tenant.primary_domain == "shop.acme.com"
    assert set(tenant.domains) == {*acme.domains, "a.acme.com"}
    assert registry.get_tenant("acme") == tenant


def test_add_domain_normalises(registry: TenantRegistry, acme: Tenant) -> None:
    tenant = registry.add_domain("acme", "New.Acme.COM.")

    assert "new.acme.com" in tenant.domains


def test_add_domain_primary_moves_primary(
    registry: TenantRegistry, acme: Tenant
) -> None:
    tenant = registry.add_domain("acme", "new.acme.com", primary=True)

    assert tenant.primary_domain == "new.acme.com"
    assert set(tenant.domains) == {*acme.domains, "new.acme.com"}
    assert registry.get_tenant("acme") == tenant


def test_add_domain_primary_promotes_existing(
    registry: TenantRegistry, acme: Tenant
) -> None:
    tenant = registry.add_domain("acme", "WWW.acme.com", primary=True)

    assert tenant.primary_domain == "www.acme.com"
    assert sorted(tenant.domains) == sorted(acme.domains)
    assert registry.get_tenant("acme") == tenant


def test_remove_domain_primary_promotes_another(registry: TenantRegistry) -> None:
    registry.create_tenant(
        "acme",
        owner_email="owner@acme.test",
        domains=["one.acme.com", "two.acme.com", "three.acme.com"],
    )

    tenant = registry.remove_domain("acme", "one.acme.com")

    assert set(tenant.domains) == {"two.acme.com", "three.acme.com"}
    assert tenant.primary_domain in {"two.acme.com", "three.acme.com"}
    assert registry.get_tenant("acme") == tenant


def test_remove_domain_other_keeps_primary(
    registry: TenantRegistry, acme: Tenant
) -> None:
    tenant = registry.remove_domain("acme", "WWW.acme.com.")

    assert tenant.domains == ("shop.acme.com",)
    assert registry.get_tenant("acme") == tenant


def test_remove_domain_last(registry: TenantRegistry) -> None:
    registry.create_tenant(
        "acme", owner_email="owner@acme.test", domains=["shop.acme.com"]
    )

    tenant = registry.remove_domain("acme", "shop.acme.com")

    assert tenant.domains == ()
    assert tenant.primary_domain is None


def test_remove_domain_then_add_is_primary(
    registry: TenantRegistry, acme: Tenant
) -> None:
    registry.remove_domain("acme", "shop.acme.com")
    registry.remove_domain("acme", "www.acme.com")

    tenant = registry.add_domain("acme", "www.acme.com")

    assert tenant.primary_domain == "www.acme.com"


def test_remove_domain_unknown_host(registry: TenantRegistry, acme: Tenant) -> None:
    unchanged_after(
        registry, lambda r: r.remove_domain("acme", "other.acme.com"), TenantNotFound
    )


def test_remove_domain_of_other_tenant(registry: TenantRegistry, acme: Tenant) -> None:
    registry.create_tenant("other", owner_email="owner@other.test")

    unchanged_after(
        registry, lambda r: r.remove_domain("other", "shop.acme.com"), TenantNotFound
    )


# -- invalid names ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        pytest.param({"slug": "\u212acme"}, InvalidName, id="slug-kelvin"),
        pytest.param({"owner_email": "nobody"}, InvalidName, id="email"),
        pytest.param({"subdomain": "www"}, InvalidName, id="subdomain-reserved"),
        pytest.param({"path_prefix": "admin"}, InvalidName, id="path-reserved"),
        pytest.param({"domains": ["1.2.3.4"]}, InvalidName, id="domain-ip"),
        pytest.param(
            {"domains": ["shop.acme.com", "bad_host.com"]},
            InvalidName,
            id="second-domain",
        ),
        pytest.param({"config": {"a": math.nan}}, InvalidConfig, id="config-nan"),
        pytest.param({"domains": "shop.acme.com"}, TypeError, id="domains-string"),
        pytest.param({"data_server": "EU"}, InvalidName, id="data-server-upper"),
        pytest.param({"data_server": ""}, InvalidName, id="data-server-empty"),
    ],
)
def test_create_tenant_invalid(
    registry: TenantRegistry, kwargs: dict[str, Any], error: type
) -> None:
    arguments: dict[str, Any] = {"slug": "acme", "owner_email": "owner@acme.test"}
    arguments.update(kwargs)

    unchanged_after(
        registry, lambda r: r.create_tenant(arguments.pop("slug"), **arguments), error
    )


@pytest.mark.parametrize(
    ("write", "error"),
    [
        pytest.param(lambda r: r.set_subdomain("acme", "a_b"), InvalidName, id="sub"),
        pytest.param(
            lambda r: r.set_path_prefix("acme", "static"),
            InvalidName,
            id="path-reserved",
        ),
        pytest.param(
            lambda r: r.add_domain("acme", "1.2.3.4"), InvalidName, id="domain-ip"
        ),
        pytest.param(
            lambda r: r.remove_domain("acme", "localhost"),
            InvalidName,
            id="remove-domain",
        ),
        pytest.param(
            lambda r: r.update_config("acme", {"x": object()}),
            InvalidConfig,
            id="config",
        ),
        pytest.param(
            lambda r: r.update_config("acme", {"x": math.inf}, replace=True),
            InvalidConfig,
            id="config-replace",
        ),
        pytest.param(
            lambda r: r.update_config("acme", {"x": "y" * MAX_CONFIG_BYTES}),
            InvalidConfig,
            id="config-too-big",
        ),
        pytest.param(
            lambda r: r.set_data_server("acme", "eu.west"),
            InvalidName,
            id="data-server",
        ),
    ],
)
def test_update_invalid(
    registry: TenantRegistry, acme: Tenant, write: Write, error: type
) -> None:
    unchanged_after(registry, write, error)


def test_update_config_merged_too_big(registry: TenantRegistry, acme: Tenant) -> None:
    half = "y" * (MAX_CONFIG_BYTES // 2)
    registry.update_config("acme", {"first": half})

    unchanged_after(
        registry, lambda r: r.update_config("acme", {"second": half}), InvalidConfig
    )


# -- unknown tenants --------------------------------------------------------------


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda r: r.get_tenant("nobody"), id="get"),
        pytest.param(lambda r: r.update_config("nobody", {"a": 1}), id="config"),
        pytest.param(lambda r: r.unset_config("nobody", "a"), id="unset-config"),
        pytest.param(lambda r: r.disable_tenant("nobody", "unpaid"), id="disable"),
        pytest.param(lambda r: r.enable_tenant("nobody"), id="enable"),
        pytest.param(lambda r: r.delete_tenant("nobody"), id="delete"),
        pytest.param(lambda r: r.set_subdomain("nobody", "nobody"), id="subdomain"),
        pytest.param(lambda r: r.set_path_prefix("nobody", "nobody"), id="path"),
        pytest.param(lambda r: r.add_domain("nobody", "nobody.com"), id="add-domain"),
        pytest.param(
            lambda r: r.remove_domain("nobody", "shop.acme.com"), id="remove-domain"
        ),
        pytest.param(lambda r: r.set_data_server("nobody", "eu"), id="data-server"),
    ],
)
def test_unknown_tenant(registry: TenantRegistry, acme: Tenant, write: Write) -> None:
    before = state(registry)

    with pytest.raises(TenantNotFound, match="'nobody'") as exc_info:
        write(registry)

    assert isinstance(exc_info.value, LookupError)
    assert state(registry) == before


# -- immutable snapshots ----------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("slug", "other", id="slug"),
        pytest.param("config", {}, id="config"),
        pytest.param("version", 0, id="version"),
    ],
)
def test_snapshot_frozen(acme: Tenant, field: str, value: Any) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(acme, field, value)


def test_snapshot_no_new_attributes(acme: Tenant) -> None:
    with pytest.raises((AttributeError, TypeError)):
        acme.extra = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("mutate", "error"),
    [
        pytest.param(lambda c: operator.setitem(c, "a", 2), TypeError, id="set-item"),
        pytest.param(lambda c: operator.delitem(c, "a"), TypeError, id="del-item"),
        pytest.param(
            lambda c: operator.setitem(c["nested"], "flag", False),
            TypeError,
            id="nested-set-item",
        ),
        pytest.param(
            lambda c: c["nested"]["list"].append(3), AttributeError, id="nested-list"
        ),
    ],
)
def test_snapshot_config_read_only(
    registry: TenantRegistry,
    acme: Tenant,
    mutate: Callable[[Any], object],
    error: type,
) -> None:
    with pytest.raises(error):
        mutate(acme.config)

    assert registry.get_tenant("acme").config == acme.config


@pytest.mark.parametrize(
    "read",
    [
        pytest.param(lambda r: r.get_tenant("acme"), id="get"),
        pytest.param(lambda r: r.list_tenants()[0], id="list"),
        pytest.param(lambda r: r.find_by_host("shop.acme.com"), id="find"),
        pytest.param(lambda r: r.update_config("acme", {"c": 3}), id="write"),
    ],
)
def test_snapshot_nested_config_read_only(
    registry: TenantRegistry, acme: Tenant, read: Callable[[TenantRegistry], Tenant]
) -> None:
    tenant = read(registry)

    with pytest.raises(TypeError):
        operator.setitem(tenant.config["nested"], "flag", False)


def test_snapshot_not_changed_by_later_writes(
    registry: TenantRegistry, acme: Tenant
) -> None:
    saved = acme.to_dict()

    registry.update_config("acme", {"a": 100, "nested": {"list": [3]}})
    registry.disable_tenant("acme", "unpaid")
    registry.add_domain("acme", "new.acme.com", primary=True)
    registry.set_subdomain("acme", "acme2")
    registry.set_path_prefix("acme", None)

    assert acme.to_dict() == saved
    assert registry.get_tenant("acme").to_dict() != saved


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda r, c: r.create_tenant("beta", owner_email="o@beta.test", config=c),
            id="create",
        ),
        pytest.param(
            lambda r, c: r.update_config("acme", c, replace=True), id="replace"
        ),
        pytest.param(lambda r, c: r.update_config("acme", c), id="merge"),
    ],
)
def test_config_copied_from_snapshot(
    registry: TenantRegistry,
    acme: Tenant,
    write: Callable[[TenantRegistry, Any], Tenant],
) -> None:
    # A snapshot's config is a Mapping like any other: it can be written back.
    tenant = write(registry, acme.config)

    assert tenant.config == acme.config


def test_snapshot_not_aliasing_input_config(registry: TenantRegistry) -> None:
    config: dict[str, Any] = {"nested": {"list": [1]}}
    tenant = registry.create_tenant("acme", owner_email="o@acme.test", config=config)

    config["nested"]["list"].append(2)
    config["new"] = True

    assert tenant.config == {"nested": {"list": (1,)}}
    assert registry.get_tenant("acme").config == {"nested": {"list": (1,)}}


# -- versions ---------------------------------------------------------------------


def _noop(registry: TenantRegistry) -> None:
    return None


CHANGES = [
    pytest.param(_noop, lambda r: r.update_config("acme", {"a": 2}), id="config"),
    pytest.param(
        _noop,
        lambda r: r.update_config("acme", {"a": 1}, replace=True),
        id="config-replace",
    ),
    pytest.param(_noop, lambda r: r.unset_config("acme", "a"), id="config-unset"),
    pytest.param(_noop, lambda r: r.disable_tenant("acme"), id="disable"),
    pytest.param(
        lambda r: r.disable_tenant("acme", "unpaid"),
        lambda r: r.disable_tenant("acme", "abuse"),
        id="disable-new-reason",
    ),
    pytest.param(
        lambda r: r.disable_tenant("acme", "unpaid"),
        lambda r: r.enable_tenant("acme"),
        id="enable",
    ),
    pytest.param(_noop, lambda r: r.add_domain("acme", "new.acme.com"), id="add"),
    pytest.param(
        _noop,
        lambda r: r.add_domain("acme", "www.acme.com", primary=True),
        id="promote-domain",
    ),
    pytest.param(_noop, lambda r: r.remove_domain("acme", "www.acme.com"), id="remove"),
    pytest.param(
        _noop,
        lambda r: r.remove_domain("acme", "shop.acme.com"),
        id="remove-primary",
    ),
    pytest.param(_noop, lambda r: r.set_subdomain("acme", "acme2"), id="subdomain"),
    pytest.param(_noop, lambda r: r.set_subdomain("acme", None), id="subdomain-none"),
    pytest.param(_noop, lambda r: r.set_path_prefix("acme", "acme2"), id="path"),
    pytest.param(_noop, lambda r: r.set_path_prefix("acme", None), id="path-none"),
    pytest.param(_noop, lambda r: r.set_data_server("acme", "eu"), id="data-server"),
    pytest.param(
        lambda r: r.set_data_server("acme", "eu"),
        lambda r: r.set_data_server("acme", "us"),
        id="data-server-moved",
    ),
    pytest.param(
        lambda r: r.set_data_server("acme", "eu"),
        lambda r: r.set_data_server("acme", None),
        id="data-server-none",
    ),
]


NO_OPS = [
    pytest.param(
        lambda r: r.disable_tenant("acme", "unpaid"),
        lambda r: r.disable_tenant("acme", "unpaid"),
        id="disable-twice",
    ),
    pytest.param(
        lambda r: r.disable_tenant("acme", "unpaid"),
        lambda r: r.disable_tenant("acme", " unpaid "),
        id="disable-twice-spaces",
    ),
    pytest.param(_noop, lambda r: r.enable_tenant("acme"), id="enable-active"),
    pytest.param(_noop, lambda r: r.update_config("acme", {"a": 1}), id="config-same"),
    pytest.param(_noop, lambda r: r.update_config("acme", {}), id="config-empty"),
    pytest.param(
        _noop,
        lambda r: r.update_config(
            "acme",
            {"b": 2, "a": 1, "nested": {"flag": True, "list": [1, 2]}},
            replace=True,
        ),
        id="config-replace-same",
    ),
    pytest.param(
        _noop, lambda r: r.unset_config("acme", "missing"), id="unset-missing"
    ),
    pytest.param(_noop, lambda r: r.set_subdomain("acme", "ACME"), id="subdomain"),
    pytest.param(_noop, lambda r: r.set_path_prefix("acme", "acme"), id="path"),
    pytest.param(
        lambda r: r.set_path_prefix("acme", None),
        lambda r: r.set_path_prefix("acme", None),
        id="path-none",
    ),
    pytest.param(
        _noop, lambda r: r.add_domain("acme", "SHOP.acme.com"), id="domain-primary"
    ),
    pytest.param(
        _noop,
        lambda r: r.add_domain("acme", "shop.acme.com", primary=True),
        id="domain-already-primary",
    ),
    pytest.param(
        lambda r: r.set_data_server("acme", "eu"),
        lambda r: r.set_data_server("acme", "eu"),
        id="data-server-same",
    ),
    pytest.param(
        _noop, lambda r: r.set_data_server("acme", None), id="data-server-none"
    ),
]


@pytest.mark.parametrize(("setup", "change"), CHANGES)
def test_version_grows(
    registry: TenantRegistry, acme: Tenant, setup: Write, change: Write
) -> None:
    setup(registry)
    before = registry.get_tenant("acme")

    tenant = change(registry)

    assert isinstance(tenant, Tenant)
    assert tenant.version > before.version
    assert tenant.version == registry.latest_generation()
    assert tenant.updated_at >= before.updated_at
    assert tenant.created_at == before.created_at
    assert registry.get_tenant("acme") == tenant


@pytest.mark.parametrize(("setup", "change"), NO_OPS)
def test_version_unchanged_by_no_op(
    registry: TenantRegistry, acme: Tenant, setup: Write, change: Write
) -> None:
    setup(registry)
    before = state(registry)
    received: list[TenantChange] = []
    registry.feed.subscribe(received.append)

    tenant = change(registry)

    assert tenant == registry.get_tenant("acme")
    assert state(registry) == before
    assert received == []


def test_version_after_recreate(registry: TenantRegistry, acme: Tenant) -> None:
    registry.update_config("acme", {"a": 2})
    last = registry.get_tenant("acme").version
    registry.delete_tenant("acme")

    tenant = registry.create_tenant("acme", owner_email="owner@acme.test")

    assert tenant.version > last
    assert tenant.version == registry.latest_generation()


def test_versions_distinct_between_tenants(registry: TenantRegistry) -> None:
    versions = [
        registry.create_tenant(slug, owner_email="o@acme.test").version
        for slug in ("a", "b", "c")
    ]

    assert versions == sorted(set(versions))


# -- change feed ------------------------------------------------------------------


def test_latest_generation_empty(registry: TenantRegistry) -> None:
    assert registry.latest_generation() == 0
    assert registry.changes_since(0) == []


@pytest.mark.parametrize(
    ("write", "operation"),
    [
        pytest.param(
            lambda r: r.create_tenant("new", owner_email="o@new.test"),
            "created",
            id="create",
        ),
        pytest.param(lambda r: r.update_config("acme", {"a": 2}), "config", id="conf"),
        pytest.param(lambda r: r.unset_config("acme", "a"), "config", id="unset"),
        pytest.param(lambda r: r.disable_tenant("acme"), "disabled", id="disable"),
        pytest.param(lambda r: r.delete_tenant("ACME"), "deleted", id="delete"),
        pytest.param(
            lambda r: r.set_subdomain("acme", "acme2"), "subdomain", id="subdomain"
        ),
        pytest.param(
            lambda r: r.set_path_prefix("acme", None), "path_prefix", id="path"
        ),
        pytest.param(
            lambda r: r.add_domain("acme", "new.acme.com"), "domain_added", id="add"
        ),
        pytest.param(
            lambda r: r.remove_domain("acme", "www.acme.com"),
            "domain_removed",
            id="remove",
        ),
        pytest.param(
            lambda r: r.set_data_server("acme", "eu"), "data_server", id="data-server"
        ),
    ],
)
def test_write_appends_one_change(
    registry: TenantRegistry, acme: Tenant, write: Write, operation: str
) -> None:
    generation = registry.latest_generation()

    result = write(registry)

    [change] = registry.changes_since(generation)
    assert change.operation == operation
    assert change.slug == (result.slug if isinstance(result, Tenant) else "acme")
    assert change.generation == registry.latest_generation()
    assert change.generation > generation
    if isinstance(result, Tenant):
        assert result.version == change.generation


def test_enable_appends_one_change(registry: TenantRegistry, acme: Tenant) -> None:
    registry.disable_tenant("acme")
    generation = registry.latest_generation()

    tenant = registry.enable_tenant("acme")

    assert registry.changes_since(generation) == [
        TenantChange(tenant.version, "acme", "enabled", Names())
    ]


def test_changes_since_in_order(registry: TenantRegistry) -> None:
    generations = [registry.latest_generation()]
    registry.create_tenant("acme", owner_email="o@acme.test")
    generations.append(registry.latest_generation())
    registry.create_tenant("beta", owner_email="o@beta.test")
    generations.append(registry.latest_generation())
    registry.update_config("acme", {"a": 1})
    generations.append(registry.latest_generation())
    registry.delete_tenant("beta")
    generations.append(registry.latest_generation())

    changes = registry.changes_since(0)

    assert [(c.slug, c.operation) for c in changes] == [
        ("acme", "created"),
        ("beta", "created"),
        ("acme", "config"),
        ("beta", "deleted"),
    ]
    assert [c.generation for c in changes] == generations[1:]
    assert generations == sorted(set(generations))
    for index, generation in enumerate(generations):
        assert registry.changes_since(generation) == changes[index:]


def test_changes_since_limit(registry: TenantRegistry) -> None:
    for slug in ("a", "b", "c", "d"):
        registry.create_tenant(slug, owner_email="o@acme.test")
    changes = registry.changes_since(0)

    assert registry.changes_since(0, limit=2) == changes[:2]
    assert registry.changes_since(changes[1].generation, limit=1) == changes[2:3]


# -- lookups ----------------------------------------------------------------------


@pytest.fixture
def beta(registry: TenantRegistry, acme: Tenant) -> Tenant:
    return registry.create_tenant(
        "beta",
        owner_email="owner@beta.test",
        subdomain="beta",
        path_prefix="beta",
        domains=["beta.com"],
    )


@pytest.mark.parametrize(
    ("find", "slug"),
    [
        pytest.param(lambda r: r.find_by_host("shop.acme.com"), "acme", id="host"),
        pytest.param(lambda r: r.find_by_host("beta.com"), "beta", id="host-beta"),
        pytest.param(lambda r: r.find_by_host("nobody.com"), None, id="host-none"),
        pytest.param(lambda r: r.find_by_subdomain("acme"), "acme", id="subdomain"),
        pytest.param(lambda r: r.find_by_subdomain("shop"), None, id="subdomain-none"),
        pytest.param(lambda r: r.find_by_path_prefix("acme"), "acme", id="path"),
        pytest.param(lambda r: r.find_by_path_prefix("shop"), None, id="path-none"),
    ],
)
def test_find(
    registry: TenantRegistry,
    beta: Tenant,
    find: Callable[[TenantRegistry], Tenant | None],
    slug: str | None,
) -> None:
    found = find(registry)

    if slug is None:
        assert found is None
    else:
        assert found == registry.get_tenant(slug)


def test_find_by_host_returns_all_domains(
    registry: TenantRegistry, acme: Tenant
) -> None:
    found = registry.find_by_host("www.acme.com")

    assert found is not None
    assert found.domains == acme.domains


@pytest.mark.parametrize(
    ("change", "find"),
    [
        pytest.param(
            lambda r: r.remove_domain("acme", "shop.acme.com"),
            lambda r: r.find_by_host("shop.acme.com"),
            id="host",
        ),
        pytest.param(
            lambda r: r.set_subdomain("acme", "acme2"),
            lambda r: r.find_by_subdomain("acme"),
            id="subdomain",
        ),
        pytest.param(
            lambda r: r.set_path_prefix("acme", None),
            lambda r: r.find_by_path_prefix("acme"),
            id="path",
        ),
        pytest.param(
            lambda r: r.delete_tenant("acme"),
            lambda r: r.find_by_host("www.acme.com"),
            id="deleted",
        ),
    ],
)
def test_find_after_change(
    registry: TenantRegistry,
    acme: Tenant,
    change: Write,
    find: Callable[[TenantRegistry], Tenant | None],
) -> None:
    change(registry)

    assert find(registry) is None


def test_list_tenants_ordered_by_slug(registry: TenantRegistry) -> None:
    for slug in ("delta", "alpha", "charlie", "bravo"):
        registry.create_tenant(slug, owner_email="o@acme.test")

    slugs = [tenant.slug for tenant in registry.list_tenants()]

    assert slugs == sorted(slugs)
    assert len(slugs) == 4


@pytest.mark.parametrize(
    ("status", "slugs"),
    [
        pytest.param(None, ["acme", "beta", "gamma"], id="all"),
        pytest.param(TenantStatus.ACTIVE, ["acme", "gamma"], id="active"),
        pytest.param("disabled", ["beta"], id="disabled-string"),
    ],
)
def test_list_tenants_status(
    registry: TenantRegistry,
    beta: Tenant,
    status: TenantStatus | str | None,
    slugs: list[str],
) -> None:
    registry.create_tenant("gamma", owner_email="o@gamma.test")
    registry.disable_tenant("beta", "unpaid")

    assert [tenant.slug for tenant in registry.list_tenants(status)] == slugs


def test_list_tenants_unknown_status(registry: TenantRegistry) -> None:
    with pytest.raises(ValueError):
        registry.list_tenants("deleted")


# -- config -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        pytest.param(
            lambda r: r.update_config("acme", {"b": 3, "c": 4}),
            {"a": 1, "b": 3, "c": 4, "nested": {"list": (1, 2), "flag": True}},
            id="merge",
        ),
        pytest.param(
            lambda r: r.update_config("acme", {"b": 3, "c": 4}, replace=True),
            {"b": 3, "c": 4},
            id="replace",
        ),
        pytest.param(
            lambda r: r.update_config("acme", {}, replace=True), {}, id="replace-empty"
        ),
        pytest.param(
            lambda r: r.update_config("acme", {"nested": None}),
            {"a": 1, "b": 2, "nested": None},
            id="merge-none",
        ),
        pytest.param(
            lambda r: r.unset_config("acme", "a", "nested", "missing"),
            {"b": 2},
            id="unset",
        ),
    ],
)
def test_config_change(
    registry: TenantRegistry, acme: Tenant, write: Write, expected: dict[str, Any]
) -> None:
    tenant = write(registry)

    assert isinstance(tenant, Tenant)
    assert tenant.config == expected
    assert registry.get_tenant("acme").config == expected


@pytest.mark.parametrize(
    ("stored", "update"),
    [
        pytest.param({"flag": 1}, {"flag": True}, id="one-to-true"),
        pytest.param({"flag": True}, {"flag": 1}, id="true-to-one"),
        pytest.param({"flag": [1]}, {"flag": [True]}, id="nested"),
    ],
)
def test_update_config_changes_json_type(
    registry: TenantRegistry, stored: dict[str, Any], update: dict[str, Any]
) -> None:
    # Equal in Python, not in JSON: true is not 1 to the tenant's app.
    before = registry.create_tenant("acme", owner_email="o@acme.test", config=stored)

    tenant = registry.update_config("acme", update)

    assert json.dumps(registry.get_tenant("acme").to_dict()["config"]) == json.dumps(
        update
    )
    assert tenant.version > before.version


# -- disable and enable -----------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        pytest.param("unpaid", "unpaid", id="reason"),
        pytest.param(None, None, id="no-reason"),
        pytest.param("   ", None, id="blank-reason"),
    ],
)
def test_disable_tenant(
    registry: TenantRegistry, acme: Tenant, reason: str | None, expected: str | None
) -> None:
    tenant = registry.disable_tenant("acme", reason)

    assert tenant.status is TenantStatus.DISABLED
    assert not tenant.is_active
    assert tenant.disabled_reason == expected
    assert registry.get_tenant("acme") == tenant


def test_enable_clears_reason(registry: TenantRegistry, acme: Tenant) -> None:
    registry.disable_tenant("acme", "unpaid")

    tenant = registry.enable_tenant("acme")

    assert tenant.status is TenantStatus.ACTIVE
    assert tenant.is_active
    assert tenant.disabled_reason is None
    assert registry.get_tenant("acme") == tenant


def test_disabled_tenant_still_found(registry: TenantRegistry, acme: Tenant) -> None:
    tenant = registry.disable_tenant("acme", "unpaid")

    assert registry.find_by_host("shop.acme.com") == tenant


# -- delete -----------------------------------------------------------------------


def test_delete_tenant(registry: TenantRegistry, acme: Tenant) -> None:
    registry.delete_tenant("acme")

    with pytest.raises(TenantNotFound):
        registry.get_tenant("acme")
    assert registry.list_tenants() == []


def test_delete_frees_names(registry: TenantRegistry, acme: Tenant) -> None:
    registry.delete_tenant("acme")

    tenant = registry.create_tenant(
        "other",
        owner_email="owner@other.test",
        subdomain="acme",
        path_prefix="acme",
        domains=["www.acme.com", "shop.acme.com"],
    )

    assert registry.find_by_host("shop.acme.com") == tenant
    assert registry.find_by_subdomain("acme") == tenant
    assert registry.find_by_path_prefix("acme") == tenant


def test_delete_frees_host_for_add_domain(
    registry: TenantRegistry, acme: Tenant
) -> None:
    registry.create_tenant("other", owner_email="owner@other.test")
    registry.delete_tenant("acme")

    tenant = registry.add_domain("other", "shop.acme.com")

    assert registry.find_by_host("shop.acme.com") == tenant


def test_delete_keeps_owner(registry: TenantRegistry, acme: Tenant) -> None:
    registry.delete_tenant("acme")

    tenant = registry.create_tenant("again", owner_email="owner@acme.test")

    assert tenant.owner_name == "Ada"


def test_delete_with_its_owner_frees_the_email_only_when_it_owns_nothing_else(
    registry: TenantRegistry, acme: Tenant
) -> None:
    registry.create_tenant("second", owner_email="owner@acme.test")
    registry.delete_tenant("acme", delete_owner=True)
    # The owner still owns "second": the account stays.
    with pytest.raises(OwnerExists):
        registry.create_tenant(
            "third", owner_email="owner@acme.test", allow_existing_owner=False
        )
    registry.delete_tenant("second", delete_owner=True)
    tenant = registry.create_tenant(
        "fourth", owner_email="owner@acme.test", allow_existing_owner=False
    )
    assert tenant.owner_name is None  # a new account: the old name went with it


def test_delete_only_that_tenant(registry: TenantRegistry, beta: Tenant) -> None:
    registry.delete_tenant("acme")

    assert registry.list_tenants() == [beta]


# -- signup cannot claim an existing owner (issue 9, C14a) -----------------------


@pytest.mark.parametrize(
    "spelling",
    [
        pytest.param("ceo@victim.test", id="same"),
        pytest.param("CEO@Victim.Test.", id="other-spelling"),
    ],
)
def test_existing_owner_refused_when_not_allowed(
    registry: TenantRegistry, spelling: str
) -> None:
    registry.create_tenant("victim", owner_email="ceo@victim.test")
    before = state(registry)

    with pytest.raises(OwnerExists, match="'ceo@victim.test'") as exc_info:
        registry.create_tenant(
            "mallory", owner_email=spelling, allow_existing_owner=False
        )

    assert isinstance(exc_info.value, Conflict)
    assert state(registry) == before


def test_new_owner_accepted_when_existing_not_allowed(
    registry: TenantRegistry,
) -> None:
    tenant = registry.create_tenant(
        "acme", owner_email="new@acme.test", allow_existing_owner=False
    )

    assert tenant.owner_email == "new@acme.test"


def test_existing_owner_allowed_by_default(registry: TenantRegistry) -> None:
    registry.create_tenant("victim", owner_email="ceo@victim.test")

    tenant = registry.create_tenant("second", owner_email="CEO@Victim.Test.")

    assert tenant.owner_email == "ceo@victim.test"


# -- changes carry the names they introduce (issue 9, C14b) ----------------------


ACME_NAMES = Names("acme", "acme", ("shop.acme.com", "www.acme.com"))


@pytest.mark.parametrize(
    ("write", "names"),
    [
        pytest.param(
            lambda r: r.create_tenant(
                "new",
                owner_email="o@new.test",
                subdomain="New",
                path_prefix="np",
                domains=["A.new.test", "b.new.test"],
            ),
            Names("new", "np", ("a.new.test", "b.new.test")),
            id="create",
        ),
        pytest.param(
            lambda r: r.create_tenant("new", owner_email="o@new.test"),
            Names(),
            id="create-no-names",
        ),
        pytest.param(
            lambda r: r.set_subdomain("acme", "Acme2"),
            Names(subdomain="acme2"),
            id="subdomain",
        ),
        pytest.param(lambda r: r.set_subdomain("acme", None), Names(), id="sub-none"),
        pytest.param(
            lambda r: r.set_path_prefix("acme", "acme2"),
            Names(path_prefix="acme2"),
            id="path",
        ),
        pytest.param(
            lambda r: r.add_domain("acme", "NEW.acme.com."),
            Names(domains=("new.acme.com",)),
            id="domain-added",
        ),
        pytest.param(
            lambda r: r.add_domain("acme", "www.acme.com", primary=True),
            Names(domains=("www.acme.com",)),
            id="domain-promoted",
        ),
        pytest.param(
            lambda r: r.remove_domain("acme", "www.acme.com"), Names(), id="removed"
        ),
        pytest.param(lambda r: r.update_config("acme", {"a": 5}), Names(), id="conf"),
        pytest.param(lambda r: r.unset_config("acme", "a"), Names(), id="unset"),
        pytest.param(lambda r: r.disable_tenant("acme"), Names(), id="disable"),
        pytest.param(lambda r: r.delete_tenant("acme"), Names(), id="delete"),
        # The tenant's names route as before: no route or unknown answer goes.
        pytest.param(
            lambda r: r.set_data_server("acme", "eu"), Names(), id="data-server"
        ),
    ],
)
def test_change_carries_new_names(
    registry: TenantRegistry, acme: Tenant, write: Write, names: Names
) -> None:
    published: list[TenantChange] = []
    registry.feed.subscribe(published.append)
    generation = registry.latest_generation()

    write(registry)

    [change] = registry.changes_since(generation)
    assert change.added == names
    assert published == [change]


def test_enable_carries_no_names(registry: TenantRegistry, acme: Tenant) -> None:
    registry.disable_tenant("acme")
    generation = registry.latest_generation()

    registry.enable_tenant("acme")

    [change] = registry.changes_since(generation)
    assert change.added == Names()


def test_created_change_carries_all_names(
    registry: TenantRegistry, acme: Tenant
) -> None:
    [change] = registry.changes_since(0)

    assert change == TenantChange(acme.version, "acme", "created", ACME_NAMES)


def test_changes_without_names_read_back_as_unknown(
    registry: TenantRegistry, database_url: str
) -> None:
    registry.create_tenant("acme", owner_email="o@acme.test", subdomain="acme")
    # A row written before the column existed, or by an older version.
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO tenant_changes (slug, operation, changed_at) "
                    "VALUES ('old', 'created', CURRENT_TIMESTAMP)"
                )
            )
    finally:
        engine.dispose()

    first, old = registry.changes_since(0)

    assert first.added == Names("acme", None, ())
    assert (old.slug, old.added) == ("old", None)


# -- where each tenant's data lives (issue 11, several servers) -------------------


def test_create_tenant_on_a_data_server(registry: TenantRegistry) -> None:
    tenant = registry.create_tenant("acme", owner_email="o@acme.test", data_server="eu")

    assert tenant.data_server == "eu"
    assert tenant.to_dict()["data_server"] == "eu"
    assert registry.get_tenant("acme") == tenant
    assert registry.list_tenants() == [tenant]


def test_set_data_server(registry: TenantRegistry, acme: Tenant) -> None:
    generation = registry.latest_generation()

    tenant = registry.set_data_server("ACME", "eu")

    assert tenant.data_server == "eu"
    assert tenant.version > acme.version
    assert (
        dataclasses.replace(
            tenant, data_server=None, version=acme.version, updated_at=acme.updated_at
        )
        == acme
    )
    assert registry.get_tenant("acme") == tenant
    assert registry.changes_since(generation) == [
        TenantChange(tenant.version, "acme", "data_server", Names())
    ]


def test_set_data_server_back_to_none(registry: TenantRegistry) -> None:
    registry.create_tenant("acme", owner_email="o@acme.test", data_server="eu")

    tenant = registry.set_data_server("acme", None)

    assert tenant.data_server is None
    assert registry.get_tenant("acme").data_server is None


def test_set_data_server_touches_only_that_tenant(
    registry: TenantRegistry, acme: Tenant
) -> None:
    beta = registry.create_tenant("beta", owner_email="o@beta.test", data_server="us")

    registry.set_data_server("acme", "eu")

    assert registry.get_tenant("beta") == beta


def test_count_by_data_server(registry: TenantRegistry) -> None:
    for slug, server in [("a", "eu"), ("b", "us"), ("c", "eu"), ("d", None)]:
        registry.create_tenant(slug, owner_email="o@x.test", data_server=server)
    registry.create_tenant("e", owner_email="o@x.test", domains=["e1.test", "e2.test"])
    registry.set_data_server("c", "us")
    registry.disable_tenant("b")

    assert registry.count_by_data_server() == {"eu": 1, "us": 2, None: 2}


def test_count_by_data_server_empty(registry: TenantRegistry) -> None:
    assert registry.count_by_data_server() == {}


def test_count_by_data_server_is_one_statement(registry: TenantRegistry) -> None:
    registry.create_tenant("a", owner_email="o@x.test", data_server="eu")
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(registry.engine, "before_cursor_execute", record)
    try:
        registry.count_by_data_server()
    finally:
        event.remove(registry.engine, "before_cursor_execute", record)

    [statement] = [s for s in seen if s.lstrip().upper().startswith("SELECT")]
    assert "GROUP BY" in statement.upper()


def test_disabling_again_without_a_reason_keeps_the_reason(
    registry: TenantRegistry, acme: Tenant
) -> None:
    registry.disable_tenant("acme", "unpaid")
    generation = registry.latest_generation()

    again = registry.disable_tenant("acme")

    assert again.disabled_reason == "unpaid"
    assert registry.latest_generation() == generation  # nothing changed
    assert registry.disable_tenant("acme", "").disabled_reason is None
    # Enabled, its reason is gone: a later disable starts without one.
    registry.enable_tenant("acme")
    assert registry.disable_tenant("acme").disabled_reason is None
