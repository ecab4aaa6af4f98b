"""import_tenants: batches, idempotence, conflicts within and outside a batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from registry_helpers import ACME_SETTINGS, state

from dispatcher import (
    DomainTaken,
    ImportResult,
    ImportStatus,
    NewTenant,
    Tenant,
    TenantChange,
    TenantExists,
    TenantRegistry,
    TooManyDomains,
)
from dispatcher.changes import Names

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
        and tenant.data_server == spec.data_server
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
        _spec(registry, "foxtrot", data_server="eu"),
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
        pytest.param({"data_server": "eu"}, id="data-server"),
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


def test_domain_limit_at_import(database_url: str, registry: TenantRegistry) -> None:
    with TenantRegistry(database_url, max_domains=2) as limited:
        # Built by hand, so new_tenant() did not count them.
        specs = [
            NewTenant(
                "big", "o@big.test", domains=("d0.a.test", "d1.a.test", "d2.a.test")
            ),
            NewTenant("small", "o@small.test", domains=("d3.a.test", "d4.a.test")),
        ]

        big, small = limited.import_tenants(specs)

    assert big.status is ImportStatus.CONFLICT
    assert isinstance(big.error, TooManyDomains)
    assert small.status is ImportStatus.CREATED
    assert [t.slug for t in registry.list_tenants()] == ["small"]


# -- where the tenants' data lives (issue 11) --------------------------------------


def test_import_on_the_same_data_server_is_unchanged(registry: TenantRegistry) -> None:
    spec = _spec(registry, "acme", data_server="eu")
    _import(registry, [spec])
    before = state(registry)

    [result] = _import(registry, [spec])

    assert result.status is ImportStatus.UNCHANGED
    assert state(registry) == before


def test_import_without_a_data_server_keeps_the_placement(
    registry: TenantRegistry,
) -> None:
    """A file that names no server says nothing about placement: re-running
    it after the tenants were placed (or moved) changes and refuses nothing."""
    spec = _spec(registry, "acme", subdomain="acme")
    _import(registry, [spec])
    registry.set_data_server("acme", "eu")
    before = state(registry)

    [result] = _import(registry, [spec])

    assert result.status is ImportStatus.UNCHANGED
    assert state(registry) == before
    assert registry.get_tenant("acme").data_server == "eu"


def test_import_on_another_data_server_is_a_conflict(
    registry: TenantRegistry,
) -> None:
    _import(registry, [_spec(registry, "acme", data_server="eu")])
    before = state(registry)

    [result] = _import(registry, [_spec(registry, "acme", data_server="us")])

    assert result.status is ImportStatus.CONFLICT
    assert isinstance(result.error, TenantExists)
    assert state(registry) == before
    assert registry.count_by_data_server() == {"eu": 1}
