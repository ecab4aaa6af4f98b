"""Tests of the data-migration ledger, on a real registry (SQLite or PostgreSQL)."""

from __future__ import annotations

import pytest

from dispatcher import TenantRegistry
from dispatcher.changes import Operation
from dispatcher.ledger import DataResult, ledger_revision, parse_revision


@pytest.fixture
def tenants(registry: TenantRegistry) -> list[str]:
    slugs = ["acme", "bravo", "charlie"]
    for slug in slugs:
        registry.create_tenant(slug, owner_email=f"o@{slug}.test")
    return slugs


def slugs_behind(registry: TenantRegistry, target: str) -> list[str]:
    return [entry.slug for entry in registry.data_ledger(behind=target)]


@pytest.mark.parametrize(
    ("revisions", "stored"),
    [
        pytest.param(("0002",), "0002", id="one head"),
        pytest.param(("b2", "a1"), "a1,b2", id="heads sorted"),
        pytest.param((), "", id="base"),
    ],
)
def test_revisions_round_trip(revisions: tuple[str, ...], stored: str) -> None:
    assert ledger_revision(revisions) == stored
    assert parse_revision(stored) == tuple(sorted(revisions))
    assert parse_revision(None) is None


def test_a_new_tenant_was_never_recorded(
    registry: TenantRegistry, tenants: list[str]
) -> None:
    entries = registry.data_ledger()
    assert [entry.slug for entry in entries] == tenants
    assert {(e.revision, e.target, e.migrated_at, e.error) for e in entries} == {
        (None, None, None, None)
    }
    assert entries[0].tenant == registry.get_tenant("acme")
    assert slugs_behind(registry, "0001") == tenants


def test_recorded_tenants_are_no_longer_behind(
    registry: TenantRegistry, tenants: list[str]
) -> None:
    registry.record_data_results(
        [DataResult("acme", ("0001",)), DataResult("bravo", ("0002",))]
    )
    assert slugs_behind(registry, "0001") == ["bravo", "charlie"]
    assert slugs_behind(registry, "0002") == ["acme", "charlie"]
    [acme] = [entry for entry in registry.data_ledger() if entry.slug == "acme"]
    assert (acme.revision, acme.target, acme.error) == (("0001",), None, None)
    assert acme.migrated_at is not None


def test_a_tenant_marked_in_flight_is_behind_until_recorded(
    registry: TenantRegistry, tenants: list[str]
) -> None:
    registry.record_data_results([DataResult(slug, ("0002",)) for slug in tenants])
    assert slugs_behind(registry, "0002") == []
    # A run marks its tenants, then dies before recording: the ledger says
    # "at 0002, or at the target", and the next run looks at them again.
    registry.mark_data_upgrading(["acme", "charlie"], "0003")
    assert slugs_behind(registry, "0002") == ["acme", "charlie"]
    entries = {entry.slug: entry for entry in registry.data_ledger()}
    assert (entries["acme"].revision, entries["acme"].target) == (("0002",), "0003")
    registry.record_data_results([DataResult("acme", ("0003",), changed=True)])
    entries = {entry.slug: entry for entry in registry.data_ledger()}
    assert (entries["acme"].revision, entries["acme"].target) == (("0003",), None)
    assert slugs_behind(registry, "0003") == ["bravo", "charlie"]


def test_a_revision_change_is_in_the_feed_and_a_record_alone_is_not(
    registry: TenantRegistry, tenants: list[str]
) -> None:
    before = registry.latest_generation()
    version = registry.get_tenant("acme").version
    registry.record_data_results(
        [DataResult("acme", ("0002",), changed=True), DataResult("bravo", ("0002",))]
    )
    changes = registry.changes_since(before)
    assert [(c.slug, c.operation) for c in changes] == [
        ("acme", Operation.DATA_REVISION)
    ]
    assert registry.get_tenant("acme").version > version


def test_a_failure_keeps_the_recorded_revision_and_mark_and_adds_the_error(
    registry: TenantRegistry, tenants: list[str]
) -> None:
    registry.record_data_results([DataResult("acme", ("0001",))])
    registry.mark_data_upgrading(["acme", "bravo"], "0002")
    registry.record_data_results(
        [
            DataResult("acme", None, error="column exists"),
            DataResult("bravo", None, error="no data"),
        ]
    )
    entries = {entry.slug: entry for entry in registry.data_ledger()}
    acme, bravo = entries["acme"], entries["bravo"]
    # Rolled back, or failed at commit: nobody knows which, so the in-flight
    # mark stays ("at 0001, or at 0002").
    assert (acme.revision, acme.target) == (("0001",), "0002")
    assert acme.error == "column exists"
    assert (bravo.revision, bravo.target, bravo.error) == (None, "0002", "no data")
    assert slugs_behind(registry, "0002") == tenants
    registry.record_data_results([DataResult("acme", ("0002",), changed=True)])
    assert {entry.slug: entry for entry in registry.data_ledger()}["acme"].error is None


def test_results_of_a_tenant_deleted_meanwhile_are_skipped(
    registry: TenantRegistry, tenants: list[str]
) -> None:
    registry.mark_data_upgrading(tenants, "0002")
    registry.delete_tenant("bravo")
    registry.record_data_results(
        [DataResult(slug, ("0002",), changed=True) for slug in tenants]
    )
    assert slugs_behind(registry, "0002") == []
    assert [entry.slug for entry in registry.data_ledger()] == ["acme", "charlie"]


def test_a_tenant_with_several_domains_is_one_entry(registry: TenantRegistry) -> None:
    registry.create_tenant(
        "multi", owner_email="o@multi.test", domains=["a.example", "b.example"]
    )
    [entry] = registry.data_ledger(behind="0001")
    assert entry.tenant.domains == ("a.example", "b.example")


def test_marks_and_records_in_batches_of_many(registry: TenantRegistry) -> None:
    slugs = [f"t{index:04d}" for index in range(1200)]
    list(
        registry.import_tenants(
            registry.new_tenant(slug, owner_email=f"o@{slug}.test") for slug in slugs
        )
    )
    registry.mark_data_upgrading(slugs, "0001")
    assert len(registry.data_ledger(behind="0001")) == 1200
    registry.record_data_results(DataResult(slug, ("0001",)) for slug in slugs)
    assert registry.data_ledger(behind="0001") == []
