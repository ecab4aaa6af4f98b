from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import operator
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, make_url, text

from dispatcher import (
    Conflict,
    DispatcherError,
    DomainTaken,
    ImportResult,
    ImportStatus,
    InvalidConfig,
    InvalidName,
    NewTenant,
    OwnerExists,
    RegistryUnavailable,
    SchemaMissing,
    Tenant,
    TenantChange,
    TenantExists,
    TenantNotFound,
    TenantRegistry,
    TenantStatus,
    TooManyDomains,
)
from dispatcher.changes import Names
from dispatcher.validation import MAX_CONFIG_BYTES

Write = Callable[[TenantRegistry], object]

ROUNDS = 10

ACME_SETTINGS: dict[str, Any] = {
    "owner_email": "owner@acme.test",
    "subdomain": "acme",
    "path_prefix": "acme",
    "domains": ["shop.acme.com", "www.acme.com"],
    "config": {"a": 1, "b": 2, "nested": {"list": [1, 2], "flag": True}},
}


@pytest.fixture
def acme(registry: TenantRegistry) -> Tenant:
    """A tenant with every kind of name and a nested config."""
    return registry.create_tenant("acme", owner_name="Ada", **ACME_SETTINGS)


def state(registry: TenantRegistry) -> tuple[list[Tenant], int, list[TenantChange]]:
    """Everything a caller can observe of the database."""
    return (
        registry.list_tenants(),
        registry.latest_generation(),
        registry.changes_since(0),
    )


def unchanged_after(registry: TenantRegistry, write: Write, error: type) -> None:
    before = state(registry)

    with pytest.raises(error):
        write(registry)

    assert state(registry) == before


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
    assert registry.get_tenant("acme") == tenant


def test_to_dict_is_json(registry: TenantRegistry, acme: Tenant) -> None:
    data = json.loads(json.dumps(acme.to_dict()))

    assert data["slug"] == acme.slug
    assert data["domains"] == list(acme.domains)
    assert data["config"] == {"a": 1, "b": 2, "nested": {"list": [1, 2], "flag": True}}
    assert data["status"] == "active"
    assert data["version"] == acme.version
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


# -- uniqueness -------------------------------------------------------------------


def _other(**kwargs: Any) -> Write:
    return lambda r: r.create_tenant("other", owner_email="o@other.test", **kwargs)


@pytest.mark.parametrize(
    ("write", "error", "value"),
    [
        pytest.param(
            lambda r: r.create_tenant("acme", owner_email="x@x.test"),
            TenantExists,
            "acme",
            id="slug",
        ),
        pytest.param(
            lambda r: r.create_tenant("ACME", owner_email="x@x.test"),
            TenantExists,
            "acme",
            id="slug-upper",
        ),
        pytest.param(
            _other(subdomain="ACME"), DomainTaken, "acme", id="subdomain-upper"
        ),
        pytest.param(_other(path_prefix="acme"), DomainTaken, "acme", id="path"),
        pytest.param(
            _other(domains=["shop.acme.com"]), DomainTaken, "shop.acme.com", id="host"
        ),
        pytest.param(
            _other(domains=["SHOP.acme.com."]),
            DomainTaken,
            "shop.acme.com",
            id="host-spelling",
        ),
        pytest.param(
            _other(domains=["new.other.com", "www.acme.com"]),
            DomainTaken,
            "www.acme.com",
            id="second-host",
        ),
    ],
)
def test_create_tenant_conflict(
    registry: TenantRegistry, acme: Tenant, write: Write, error: type, value: str
) -> None:
    before = state(registry)

    with pytest.raises(error) as exc_info:
        write(registry)

    assert isinstance(exc_info.value, Conflict)
    assert repr(value) in str(exc_info.value)
    assert state(registry) == before


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda r: r.set_subdomain("other", "acme"), id="subdomain"),
        pytest.param(lambda r: r.set_subdomain("other", "ACME"), id="subdomain-upper"),
        pytest.param(lambda r: r.set_path_prefix("other", "acme"), id="path"),
        pytest.param(lambda r: r.set_path_prefix("other", "ACME"), id="path-upper"),
        pytest.param(lambda r: r.add_domain("other", "shop.acme.com"), id="host"),
        pytest.param(
            lambda r: r.add_domain("other", "SHOP.acme.com.", primary=True),
            id="host-spelling",
        ),
    ],
)
def test_update_conflict(registry: TenantRegistry, acme: Tenant, write: Write) -> None:
    registry.create_tenant("other", owner_email="owner@other.test")

    unchanged_after(registry, write, DomainTaken)


def test_subdomain_and_path_prefix_are_separate(registry: TenantRegistry) -> None:
    registry.create_tenant("acme", owner_email="owner@acme.test", subdomain="shop")

    tenant = registry.create_tenant(
        "other", owner_email="owner@other.test", path_prefix="shop"
    )

    assert tenant.path_prefix == "shop"


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


def test_custom_reserved(database_url: str, registry: TenantRegistry) -> None:
    with TenantRegistry(database_url, reserved={"Acme"}) as custom:
        unchanged_after(
            custom,
            lambda r: r.create_tenant("x", owner_email="o@x.test", subdomain="acme"),
            InvalidName,
        )
        tenant = custom.create_tenant("y", owner_email="o@y.test", subdomain="www")

    assert tenant.subdomain == "www"


def test_reserved_string_refused(database_url: str) -> None:
    with pytest.raises(TypeError):
        TenantRegistry(database_url, reserved="www")


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


# -- subscribe --------------------------------------------------------------------


def test_subscribe_receives_change(registry: TenantRegistry) -> None:
    received: list[TenantChange] = []
    registry.feed.subscribe(received.append)

    tenant = registry.create_tenant("acme", owner_email="o@acme.test")
    registry.disable_tenant("acme")

    assert received == registry.changes_since(0)
    assert received[0] == TenantChange(tenant.version, "acme", "created", Names())


def test_subscribe_called_after_commit(
    database_url: str, registry: TenantRegistry
) -> None:
    seen: list[Tenant | None] = []

    with TenantRegistry(database_url) as other:

        def listener(change: TenantChange) -> None:
            seen.append(other.find_by_subdomain("acme"))

        registry.feed.subscribe(listener)
        tenant = registry.create_tenant(
            "acme", owner_email="o@acme.test", subdomain="acme"
        )

    assert seen == [tenant]


@pytest.mark.parametrize(
    ("write", "error"),
    [
        pytest.param(
            lambda r: r.create_tenant("acme", owner_email="o@acme.test"),
            TenantExists,
            id="exists",
        ),
        pytest.param(_other(subdomain="acme"), DomainTaken, id="taken"),
        pytest.param(
            lambda r: r.update_config("nobody", {"a": 1}), TenantNotFound, id="missing"
        ),
        pytest.param(
            lambda r: r.set_subdomain("acme", "www"), InvalidName, id="invalid"
        ),
        pytest.param(
            lambda r: r.update_config("acme", {"a": math.nan}),
            InvalidConfig,
            id="invalid-config",
        ),
    ],
)
def test_subscribe_not_called_for_failed_write(
    registry: TenantRegistry, acme: Tenant, write: Write, error: type
) -> None:
    received: list[TenantChange] = []
    registry.feed.subscribe(received.append)

    with pytest.raises(error):
        write(registry)

    assert received == []


def test_unsubscribe(registry: TenantRegistry) -> None:
    received: list[TenantChange] = []
    kept: list[TenantChange] = []
    unsubscribe = registry.feed.subscribe(received.append)
    registry.feed.subscribe(kept.append)
    registry.create_tenant("acme", owner_email="o@acme.test")

    unsubscribe()
    registry.create_tenant("beta", owner_email="o@beta.test")

    assert [c.slug for c in received] == ["acme"]
    assert [c.slug for c in kept] == ["acme", "beta"]


def test_raising_listener_does_not_break_write(
    registry: TenantRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[TenantChange] = []

    def broken(change: TenantChange) -> None:
        raise RuntimeError("listener failed")

    registry.feed.subscribe(broken)
    registry.feed.subscribe(received.append)

    with caplog.at_level(logging.ERROR, logger="dispatcher.registry"):
        tenant = registry.create_tenant("acme", owner_email="o@acme.test")

    assert registry.get_tenant("acme") == tenant
    assert received == registry.changes_since(0)
    assert "listener failed" in caplog.text


def test_subscribe_only_this_registry(
    database_url: str, registry: TenantRegistry
) -> None:
    received: list[TenantChange] = []
    registry.feed.subscribe(received.append)

    with TenantRegistry(database_url) as other:
        other.create_tenant("acme", owner_email="o@acme.test")

    assert received == []


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


def test_delete_only_that_tenant(registry: TenantRegistry, beta: Tenant) -> None:
    registry.delete_tenant("acme")

    assert registry.list_tenants() == [beta]


# -- import -----------------------------------------------------------------------


def _spec(registry: TenantRegistry, slug: str, **kwargs: Any) -> NewTenant:
    kwargs.setdefault("owner_email", f"owner@{slug}.test")
    return registry.new_tenant(slug, **kwargs)


def _import(
    registry: TenantRegistry, specs: list[NewTenant], **kwargs: Any
) -> list[ImportResult]:
    return list(registry.import_tenants(specs, **kwargs))


def _statuses(results: list[ImportResult]) -> list[tuple[str, ImportStatus]]:
    return [(result.spec.slug, result.status) for result in results]


def _matches(tenant: Tenant, spec: NewTenant) -> bool:
    return (
        tenant.slug == spec.slug
        and tenant.owner_email == spec.owner_email
        and tenant.subdomain == spec.subdomain
        and tenant.path_prefix == spec.path_prefix
        and tenant.domains[:1] == spec.domains[:1]
        and sorted(tenant.domains) == sorted(spec.domains)
        and tenant.config == spec.config
    )


def test_new_tenant_normalises(registry: TenantRegistry) -> None:
    spec = registry.new_tenant(
        "ACME",
        owner_email="Owner@Acme.TEST",
        subdomain="Acme",
        domains=["Shop.Acme.com."],
        config={"a": [1]},
    )

    assert spec == NewTenant(
        slug="acme",
        owner_email="owner@acme.test",
        subdomain="acme",
        domains=("shop.acme.com",),
        config={"a": (1,)},
    )


@pytest.mark.parametrize(
    "batch_size",
    [
        pytest.param(1, id="batch-1"),
        pytest.param(2, id="batch-2"),
        pytest.param(500, id="batch-default"),
    ],
)
def test_import_creates(registry: TenantRegistry, batch_size: int) -> None:
    specs = [
        _spec(registry, "echo", subdomain="echo", config={"n": 5}),
        _spec(registry, "alpha", domains=["alpha.com", "www.alpha.com"]),
        _spec(registry, "delta", path_prefix="delta", owner_email="o@shared.test"),
        _spec(registry, "charlie", owner_email="o@shared.test", owner_name="Cy"),
        _spec(registry, "bravo", subdomain="bravo", path_prefix="bravo"),
    ]

    results = _import(registry, specs, batch_size=batch_size)

    assert [result.spec for result in results] == specs
    assert all(result.status is ImportStatus.CREATED for result in results)
    assert all(result.error is None for result in results)
    tenants = {tenant.slug: tenant for tenant in registry.list_tenants()}
    assert set(tenants) == {spec.slug for spec in specs}
    for spec in specs:
        assert _matches(tenants[spec.slug], spec)


def test_import_one_change_per_tenant(registry: TenantRegistry) -> None:
    specs = [_spec(registry, slug) for slug in ("c", "a", "b")]
    received: list[TenantChange] = []
    registry.feed.subscribe(received.append)

    _import(registry, specs, batch_size=2)

    changes = registry.changes_since(0)
    assert [(c.slug, c.operation) for c in changes] == [
        ("c", "created"),
        ("a", "created"),
        ("b", "created"),
    ]
    assert received == changes
    for change in changes:
        assert registry.get_tenant(change.slug).version == change.generation


@pytest.mark.parametrize(
    ("domains", "batch_size"),
    [
        pytest.param([], 500, id="no-domains"),
        pytest.param([], 1, id="no-domains-batch-1"),
        pytest.param(["a.acme.com", "b.acme.com"], 500, id="sorted"),
        pytest.param(["b.acme.com", "a.acme.com"], 500, id="primary-last"),
        pytest.param(["a.acme.com", "c.acme.com", "b.acme.com"], 500, id="unsorted"),
    ],
)
def test_import_rerun_unchanged(
    registry: TenantRegistry, domains: list[str], batch_size: int
) -> None:
    specs = [
        _spec(registry, "acme", subdomain="acme", domains=domains, config={"a": [1]}),
        _spec(registry, "beta", path_prefix="beta"),
    ]
    _import(registry, specs, batch_size=batch_size)
    before = state(registry)

    results = _import(registry, specs, batch_size=batch_size)

    assert _statuses(results) == [
        ("acme", ImportStatus.UNCHANGED),
        ("beta", ImportStatus.UNCHANGED),
    ]
    assert state(registry) == before


def test_import_unchanged_for_created_tenant(
    registry: TenantRegistry, acme: Tenant
) -> None:
    spec = _spec(registry, "acme", **ACME_SETTINGS)

    [result] = _import(registry, [spec])

    assert result.status is ImportStatus.UNCHANGED
    assert result.error is None


def test_import_duplicate_slug_in_batch(registry: TenantRegistry) -> None:
    specs = [
        _spec(registry, "acme", subdomain="first"),
        _spec(registry, "beta"),
        _spec(registry, "ACME", subdomain="second"),
    ]

    results = _import(registry, specs)

    assert _statuses(results) == [
        ("acme", ImportStatus.CREATED),
        ("beta", ImportStatus.CREATED),
        ("acme", ImportStatus.CONFLICT),
    ]
    assert isinstance(results[2].error, TenantExists)
    assert registry.get_tenant("acme").subdomain == "first"
    assert registry.find_by_subdomain("second") is None


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        pytest.param({"subdomain": "ACME"}, DomainTaken, id="subdomain"),
        pytest.param({"path_prefix": "acme"}, DomainTaken, id="path"),
        pytest.param({"domains": ["new.com", "www.acme.com"]}, DomainTaken, id="host"),
    ],
)
def test_import_name_taken_by_existing(
    registry: TenantRegistry, acme: Tenant, spec: dict[str, Any], error: type
) -> None:
    specs = [
        _spec(registry, "first"),
        _spec(registry, "other", **spec),
        _spec(registry, "last"),
    ]

    results = _import(registry, specs)

    assert _statuses(results) == [
        ("first", ImportStatus.CREATED),
        ("other", ImportStatus.CONFLICT),
        ("last", ImportStatus.CREATED),
    ]
    assert isinstance(results[1].error, error)
    assert [t.slug for t in registry.list_tenants()] == ["acme", "first", "last"]
    assert registry.get_tenant("acme") == acme


@pytest.mark.parametrize(
    ("spec", "batch_size"),
    [
        pytest.param({"subdomain": "one"}, 500, id="subdomain-same-batch"),
        pytest.param({"subdomain": "one"}, 1, id="subdomain-other-batch"),
        pytest.param({"path_prefix": "one"}, 500, id="path-same-batch"),
        pytest.param({"domains": ["one.com"]}, 500, id="host-same-batch"),
    ],
)
def test_import_name_taken_in_import(
    registry: TenantRegistry, spec: dict[str, Any], batch_size: int
) -> None:
    specs = [_spec(registry, "one", **spec), _spec(registry, "two", **spec)]

    results = _import(registry, specs, batch_size=batch_size)

    assert _statuses(results) == [
        ("one", ImportStatus.CREATED),
        ("two", ImportStatus.CONFLICT),
    ]
    assert isinstance(results[1].error, DomainTaken)
    assert [t.slug for t in registry.list_tenants()] == ["one"]


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"owner_email": "new@acme.test"}, id="owner"),
        pytest.param({"subdomain": "acme2"}, id="subdomain"),
        pytest.param({"path_prefix": None}, id="path"),
        pytest.param({"domains": ["shop.acme.com"]}, id="domains"),
        pytest.param({"config": {"a": 1}}, id="config"),
        pytest.param(
            {"config": {"a": True, "b": 2, "nested": {"list": [1, 2], "flag": 1}}},
            id="config-bool",
        ),
    ],
)
def test_import_slug_exists_differently(
    registry: TenantRegistry, acme: Tenant, changes: dict[str, Any]
) -> None:
    settings = {**ACME_SETTINGS, **changes}
    before = state(registry)

    [result] = _import(registry, [_spec(registry, "acme", **settings)])

    assert result.status is ImportStatus.CONFLICT
    assert isinstance(result.error, TenantExists)
    assert state(registry) == before


def test_import_keeps_input_order(registry: TenantRegistry, acme: Tenant) -> None:
    specs = [
        _spec(registry, "zulu"),
        _spec(registry, "acme", owner_email="someone@else.test"),
        _spec(registry, "mike", subdomain="acme"),
        _spec(registry, "alpha"),
        _spec(registry, "zulu", subdomain="zulu"),
    ]

    results = _import(registry, specs, batch_size=2)

    assert [result.spec for result in results] == specs
    assert [result.status for result in results] == [
        ImportStatus.CREATED,
        ImportStatus.CONFLICT,
        ImportStatus.CONFLICT,
        ImportStatus.CREATED,
        ImportStatus.CONFLICT,
    ]
    assert [t.slug for t in registry.list_tenants()] == ["acme", "alpha", "zulu"]
    assert registry.get_tenant("zulu").subdomain is None


def test_import_empty(registry: TenantRegistry) -> None:
    assert _import(registry, []) == []
    assert registry.latest_generation() == 0


@pytest.mark.parametrize(
    "batch_size", [pytest.param(0, id="zero"), pytest.param(-1, id="negative")]
)
def test_import_batch_size_invalid(registry: TenantRegistry, batch_size: int) -> None:
    with pytest.raises(ValueError, match=str(batch_size)):
        _import(registry, [_spec(registry, "acme")], batch_size=batch_size)


def test_import_consumes_lazily(registry: TenantRegistry) -> None:
    consumed: list[str] = []

    def specs() -> Iterator[NewTenant]:
        for slug in ("a", "b", "c", "d", "e"):
            consumed.append(slug)
            yield _spec(registry, slug)

    results = registry.import_tenants(specs(), batch_size=2)
    first = next(results)

    assert first.spec.slug == "a"
    assert consumed == ["a", "b"]
    assert [t.slug for t in registry.list_tenants()] == ["a", "b"]
    assert [r.spec.slug for r in results] == ["b", "c", "d", "e"]


# -- errors -----------------------------------------------------------------------


def test_type_error_for_non_url() -> None:
    with pytest.raises(TypeError, match="int"):
        TenantRegistry(42)  # type: ignore[arg-type]


def test_value_error_for_bad_url() -> None:
    with pytest.raises(ValueError, match="'not a url'"):
        TenantRegistry("not a url")


def test_value_error_for_unknown_driver() -> None:
    with pytest.raises(ValueError, match="nosuchdb://"):
        TenantRegistry("nosuchdb://host/db")


def test_repr_hides_password() -> None:
    with TenantRegistry("postgresql+psycopg://user:secret@127.0.0.1:1/db") as r:
        assert "secret" not in repr(r)
        assert "127.0.0.1" in repr(r)


def test_registry_on_engine(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with TenantRegistry(engine) as registry:
            registry.migrate()
            tenant = registry.create_tenant("acme", owner_email="o@acme.test")

        # close() leaves an engine it was given alone: it still has its pool.
        assert engine.pool.checkedin() > 0
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT 1").scalar_one() == 1
    finally:
        engine.dispose()

    assert tenant.slug == "acme"


def test_two_registries_on_one_engine(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        with TenantRegistry(engine) as first:
            first.migrate()
            first.create_tenant("acme", owner_email="o@acme.test")

        with TenantRegistry(engine) as second:
            second.create_tenant("beta", owner_email="o@beta.test")
            slugs = [tenant.slug for tenant in second.list_tenants()]
    finally:
        engine.dispose()

    assert slugs == ["acme", "beta"]


UNAVAILABLE_CALLS = [
    pytest.param(lambda r: r.list_tenants(), id="list"),
    pytest.param(lambda r: r.get_tenant("acme"), id="get"),
    pytest.param(lambda r: r.find_by_host("shop.acme.com"), id="find"),
    pytest.param(lambda r: r.latest_generation(), id="generation"),
    pytest.param(lambda r: r.changes_since(0), id="changes"),
    pytest.param(
        lambda r: r.create_tenant("acme", owner_email="o@acme.test"), id="create"
    ),
    pytest.param(lambda r: r.update_config("acme", {"a": 1}), id="update"),
    pytest.param(
        lambda r: _import(r, [r.new_tenant("acme", owner_email="o@acme.test")]),
        id="import",
    ),
]


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite-missing-directory"),
        pytest.param("postgresql", id="postgresql-refused"),
    ]
)
def unreachable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'missing' / 'registry.sqlite3'}"
    return "postgresql+psycopg://postgres@127.0.0.1:1/test"


@pytest.mark.parametrize(
    "call", [*UNAVAILABLE_CALLS, pytest.param(lambda r: r.migrate(), id="migrate")]
)
def test_registry_unavailable(unreachable_url: str, call: Write) -> None:
    with TenantRegistry(unreachable_url) as registry:
        with pytest.raises(RegistryUnavailable) as exc_info:
            call(registry)

    assert registry.url in str(exc_info.value)


@pytest.mark.parametrize("call", UNAVAILABLE_CALLS)
def test_schema_missing(database_url: str, call: Write) -> None:
    with TenantRegistry(database_url) as registry:
        with pytest.raises(SchemaMissing, match="upgrade"):
            call(registry)


# -- concurrency ------------------------------------------------------------------


def race(registries: list[TenantRegistry], writes: list[Write]) -> list[object]:
    """Run one write per registry, each in its own thread, released together."""
    barrier = threading.Barrier(len(writes))
    results: list[object] = [None] * len(writes)

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = writes[index](registries[index])
        except BaseException as e:  # reported by the assertions, not by the thread
            results[index] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(writes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


@pytest.fixture
def racers(
    database_url: str, registry: TenantRegistry
) -> Iterator[list[TenantRegistry]]:
    """Two registries of their own on the migrated database, connections warm."""
    with TenantRegistry(database_url) as one, TenantRegistry(database_url) as two:
        one.latest_generation()
        two.latest_generation()
        yield [one, two]


def _winner_and_loser(results: list[object], error: type) -> tuple[Tenant, Exception]:
    winners = [r for r in results if isinstance(r, Tenant)]
    losers = [r for r in results if not isinstance(r, Tenant)]
    assert len(winners) == 1, results
    assert len(losers) == 1, results
    assert type(losers[0]) is error, results
    return winners[0], losers[0]


def test_race_same_subdomain(
    registry: TenantRegistry, racers: list[TenantRegistry]
) -> None:
    for n in range(ROUNDS):
        results = race(
            racers,
            [
                lambda r, n=n: r.create_tenant(
                    f"left{n}", owner_email="o@left.test", subdomain=f"acme{n}"
                ),
                lambda r, n=n: r.create_tenant(
                    f"right{n}", owner_email="o@right.test", subdomain=f"ACME{n}"
                ),
            ],
        )

        winner, _ = _winner_and_loser(results, DomainTaken)
        assert registry.find_by_subdomain(f"acme{n}") == winner

    assert len(registry.list_tenants()) == ROUNDS
    assert len(registry.changes_since(0)) == ROUNDS


def test_race_same_slug(registry: TenantRegistry, racers: list[TenantRegistry]) -> None:
    for n in range(ROUNDS):
        results = race(
            racers,
            [
                lambda r, n=n: r.create_tenant(
                    f"acme{n}", owner_email="o@left.test", subdomain=f"left{n}"
                ),
                lambda r, n=n: r.create_tenant(
                    f" ACME{n}", owner_email="o@right.test", subdomain=f"right{n}"
                ),
            ],
        )

        winner, _ = _winner_and_loser(results, TenantExists)
        assert registry.get_tenant(f"acme{n}") == winner

    assert len(registry.list_tenants()) == ROUNDS
    assert len(registry.changes_since(0)) == ROUNDS


def test_race_same_host(registry: TenantRegistry, racers: list[TenantRegistry]) -> None:
    registry.create_tenant("left", owner_email="o@left.test")
    registry.create_tenant("right", owner_email="o@right.test")

    for n in range(ROUNDS):
        results = race(
            racers,
            [
                lambda r, n=n: r.add_domain("left", f"shop{n}.acme.com"),
                lambda r, n=n: r.add_domain("right", f"SHOP{n}.acme.com."),
            ],
        )

        winner, _ = _winner_and_loser(results, DomainTaken)
        assert registry.find_by_host(f"shop{n}.acme.com") == winner


def test_race_versions_distinct(
    registry: TenantRegistry, racers: list[TenantRegistry]
) -> None:
    registry.create_tenant("left", owner_email="o@left.test")
    registry.create_tenant("right", owner_email="o@right.test")

    for n in range(ROUNDS):
        results = race(
            racers,
            [
                lambda r, n=n: r.update_config("left", {"n": n}),
                lambda r, n=n: r.update_config("right", {"n": n}),
            ],
        )

        assert all(isinstance(result, Tenant) for result in results), results

    changes = registry.changes_since(0)
    assert [c.generation for c in changes] == sorted({c.generation for c in changes})
    assert len(changes) == 2 + 2 * ROUNDS


def test_pooled_connections_killed_by_the_server_are_replaced(
    database_url: str, backend: str
) -> None:
    """After a database restart, the next read and write succeed: no pre-ping,
    one retry on a fresh connection."""
    if backend != "postgresql":
        pytest.skip("only a server can kill the pool's connections")
    name = f"probe_{uuid.uuid4().hex[:10]}"
    url = make_url(database_url).update_query_dict({"application_name": name})
    registry = TenantRegistry(url.render_as_string(hide_password=False))
    admin = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        registry.migrate()
        registry.create_tenant("acme", owner_email="owner@acme.test", subdomain="acme")
        assert registry.find_by_subdomain("acme") is not None  # pool warm

        for operation in ("read", "write"):
            with admin.connect() as connection:
                # In the select list, so it runs only for the rows kept.
                killed = connection.execute(
                    text(
                        "SELECT pg_terminate_backend(pid, 5000) "
                        "FROM pg_stat_activity WHERE application_name = :name"
                    ),
                    {"name": name},
                ).all()
            assert killed and all(ok for (ok,) in killed)
            if operation == "read":
                found = registry.find_by_subdomain("acme")
                assert found is not None and found.slug == "acme"
            else:
                assert registry.disable_tenant("acme").status is TenantStatus.DISABLED
    finally:
        registry.close()
        admin.dispose()


# -- custom domains stay outside the base domain (issue 9, C13) ------------------

BASE_DOMAIN = "example.com"


def normal(host: str) -> str:
    return host.lower().removesuffix(".")


@pytest.fixture
def based(database_url: str, registry: TenantRegistry) -> Iterator[TenantRegistry]:
    """A registry that knows the dispatcher's base domain (``registry`` migrated)."""
    with TenantRegistry(database_url, base_domain="Example.COM.") as based:
        yield based


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("victim.example.com", id="subdomain"),
        pytest.param("API.Example.com.", id="reserved-label-spelling"),
        pytest.param("a.b.example.com", id="deeper"),
        pytest.param("example.com", id="apex"),
        pytest.param("www.example.com", id="www"),
    ],
)
@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda r, host: r.create_tenant(
                "mallory", owner_email="m@evil.test", domains=["ok.evil.test", host]
            ),
            id="create",
        ),
        pytest.param(lambda r, host: r.add_domain("acme", host), id="add-domain"),
        pytest.param(
            lambda r, host: r.new_tenant(
                "mallory", owner_email="m@evil.test", domains=[host]
            ),
            id="new-tenant",
        ),
        pytest.param(
            lambda r, host: list(
                r.import_tenants(
                    # Built by hand, past new_tenant(), but normalised as specs are.
                    [NewTenant("mallory", "m@evil.test", domains=(normal(host),))]
                )
            ),
            id="import-unchecked-spec",
        ),
    ],
)
def test_custom_domain_under_base_domain_refused(
    based: TenantRegistry, write: Callable[[TenantRegistry, str], object], host: str
) -> None:
    based.create_tenant("acme", owner_email="owner@acme.test", subdomain="acme")
    before = state(based)

    with pytest.raises(InvalidName, match="base domain 'example.com'") as exc_info:
        write(based, host)

    assert repr(normal(host)) in str(exc_info.value)
    assert state(based) == before


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("notexample.com", id="suffix-not-label"),
        pytest.param("example.com.evil.test", id="prefix"),
        pytest.param("example.org", id="other-tld"),
    ],
)
def test_custom_domain_outside_base_domain_allowed(
    based: TenantRegistry, host: str
) -> None:
    tenant = based.create_tenant("acme", owner_email="o@acme.test", domains=[host])

    assert tenant.domains == (host,)


def test_without_base_domain_any_host_allowed(registry: TenantRegistry) -> None:
    tenant = registry.create_tenant(
        "acme", owner_email="o@acme.test", domains=["acme.example.com"]
    )

    assert tenant.domains == ("acme.example.com",)


def test_base_domain_normalised(based: TenantRegistry) -> None:
    assert based.base_domain == BASE_DOMAIN


@pytest.mark.parametrize(
    ("base_domain", "error"),
    [
        pytest.param("example.com:8080", ValueError, id="port"),
        pytest.param("exa mple.com", ValueError, id="space"),
        pytest.param("[::1]", ValueError, id="ipv6"),
        pytest.param("", ValueError, id="empty"),
        pytest.param(b"example.com", TypeError, id="bytes"),
    ],
)
def test_base_domain_invalid(database_url: str, base_domain: Any, error: type) -> None:
    with pytest.raises(error, match="base_domain"):
        TenantRegistry(database_url, base_domain=base_domain)


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


def test_import_changes_carry_names(registry: TenantRegistry) -> None:
    published: list[TenantChange] = []
    registry.feed.subscribe(published.append)
    specs = [
        registry.new_tenant(
            f"t{i}",
            owner_email="o@x.test",
            subdomain=f"s{i}",
            domains=[f"t{i}.test", f"www.t{i}.test"] if i % 2 else [],
        )
        for i in range(4)
    ]

    list(registry.import_tenants(specs))

    changes = registry.changes_since(0)
    assert [change.added for change in changes] == [
        Names(spec.subdomain, spec.path_prefix, spec.domains) for spec in specs
    ]
    assert published == changes


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


# -- a bounded number of custom domains per tenant (issue 9, E21) ----------------
# A lookup returns the tenant with all its domains, so its cost grows with
# them; the registry bounds how many one tenant may have.


def hosts(count: int, start: int = 0) -> list[str]:
    return [f"d{i}.acme.test" for i in range(start, start + count)]


def test_default_domain_limit(registry: TenantRegistry) -> None:
    assert registry.max_domains == 100
    registry.create_tenant("acme", owner_email="o@acme.test", domains=hosts(100))
    before = state(registry)

    with pytest.raises(TooManyDomains, match="'acme'.*101.*limit is 100"):
        registry.add_domain("acme", "one-more.acme.test")

    assert state(registry) == before


def test_domain_limit_counts_only_new_hosts(registry: TenantRegistry) -> None:
    registry.create_tenant("acme", owner_email="o@acme.test", domains=hosts(100))

    tenant = registry.add_domain("acme", "d5.acme.test", primary=True)

    assert tenant.primary_domain == "d5.acme.test"


def test_domain_limit_freed_by_remove(
    database_url: str, registry: TenantRegistry
) -> None:
    with TenantRegistry(database_url, max_domains=2) as limited:
        limited.create_tenant("acme", owner_email="o@acme.test", domains=hosts(2))
        limited.remove_domain("acme", "d0.acme.test")

        tenant = limited.add_domain("acme", "d9.acme.test")

    assert tenant.domains == ("d1.acme.test", "d9.acme.test")


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda r: r.create_tenant("acme", owner_email="o@a.test", domains=hosts(3)),
            id="create",
        ),
        pytest.param(
            lambda r: r.new_tenant("acme", owner_email="o@a.test", domains=hosts(3)),
            id="new-tenant",
        ),
    ],
)
def test_domain_limit_at_create(database_url: str, write: Write) -> None:
    with TenantRegistry(database_url, max_domains=2) as limited:
        limited.migrate()
        before = state(limited)

        with pytest.raises(TooManyDomains, match="'acme'.*3.*limit is 2"):
            write(limited)

        assert state(limited) == before


def test_domain_limit_at_import(database_url: str, registry: TenantRegistry) -> None:
    with TenantRegistry(database_url, max_domains=2) as limited:
        # Built by hand, so new_tenant() did not count them.
        specs = [
            NewTenant("big", "o@big.test", domains=tuple(hosts(3))),
            NewTenant("small", "o@small.test", domains=tuple(hosts(2, start=10))),
        ]

        big, small = limited.import_tenants(specs)

    assert big.status is ImportStatus.CONFLICT
    assert isinstance(big.error, TooManyDomains)
    assert small.status is ImportStatus.CREATED
    assert [t.slug for t in registry.list_tenants()] == ["small"]


@pytest.mark.parametrize(
    "max_domains",
    [
        pytest.param(0, id="zero"),
        pytest.param(-1, id="negative"),
        pytest.param(2.5, id="float"),
        pytest.param(True, id="bool"),
    ],
)
def test_domain_limit_invalid(database_url: str, max_domains: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="max_domains"):
        TenantRegistry(database_url, max_domains=max_domains)
