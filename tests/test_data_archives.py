"""Archived tenant data: list, restore and purge, on real SQLite files and schemas."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import T0, make_tenant
from sqlalchemy import MetaData, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dispatcher import Tenant
from dispatcher.data import TenantData, schema_name
from dispatcher.data_archives import Archive, archived_name, parse_archive
from dispatcher.exceptions import TenantDataError


class Base(DeclarativeBase):
    metadata = MetaData()


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))


@pytest.fixture
def data(tenant_data_location: dict[str, Any]) -> Iterator[TenantData]:
    data = TenantData(metadata=Base.metadata, **tenant_data_location)
    yield data
    data.dispose()


def add_item(data: TenantData, tenant: Tenant, title: str) -> None:
    with data.sessionmaker_for(tenant)() as session, session.begin():
        session.add(Item(title=title))


def titles(data: TenantData, tenant: Tenant) -> list[str]:
    with data.sessionmaker_for(tenant)() as session:
        return list(session.scalars(select(Item.title).order_by(Item.id)))


def test_archive_names_parse_back() -> None:
    name = archived_name("t_acme_1a2b3c4d", T0)
    assert name == "t_acme_1a2b3c4d_archived_20260102030405"
    assert parse_archive(name, "eu") == Archive(
        name=name,
        server="eu",
        original="t_acme_1a2b3c4d",
        archived_at=T0.replace(microsecond=0),
    )
    for other in (
        "t_acme_1a2b3c4d",
        "public",
        "t_acme_archived_2026",
        "t_acme_archived_20261399999999",  # month 13: not a time
        "x_acme_archived_20260102030405",
    ):
        assert parse_archive(other, "eu") is None


def test_archives_lists_what_archive_made(data: TenantData) -> None:
    acme, bravo = make_tenant("acme"), make_tenant("bravo")
    assert data.archives() == []
    data.create(acme)
    data.create(bravo)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    name = data.archive(acme)
    after = dt.datetime.now(dt.UTC)
    (archive,) = data.archives()
    assert archive.name == name
    assert archive.original == schema_name(acme)
    assert archive.server == "default"
    assert before <= archive.archived_at <= after
    # The live tenant's data is not an archive.
    assert data.exists(bravo)


def test_restore_gives_a_recreated_tenant_its_old_rows(data: TenantData) -> None:
    acme = make_tenant("acme")
    data.create(acme)
    add_item(data, acme, "kept")
    name = data.archive(acme)
    assert name is not None
    # Removed, then created again: a new tenant with a name of its own.
    again = make_tenant("acme", T0 + dt.timedelta(days=3))
    assert schema_name(again) != schema_name(acme)
    assert data.restore(name, again) == again
    assert titles(data, again) == ["kept"]
    assert data.archives() == []
    assert not data.exists(acme)


def test_restore_refuses_a_tenant_with_data_and_changes_nothing(
    data: TenantData,
) -> None:
    acme, bravo = make_tenant("acme"), make_tenant("bravo")
    data.create(acme)
    add_item(data, acme, "archived")
    name = data.archive(acme)
    assert name is not None
    data.create(bravo)
    add_item(data, bravo, "live")
    with pytest.raises(TenantDataError, match="'bravo' has data already"):
        data.restore(name, bravo, other_tenant=True)
    assert titles(data, bravo) == ["live"]
    assert [archive.name for archive in data.archives()] == [name]


def test_restore_of_an_unknown_archive_names_it(data: TenantData) -> None:
    acme = make_tenant("acme")
    for name in ("t_nope_00000000_archived_20260102030405", 'x"; DROP', "public"):
        with pytest.raises(TenantDataError, match="there is no archive"):
            data.restore(name, acme)
    assert not data.exists(acme)


def test_purge_deletes_only_archives_older_than_asked(data: TenantData) -> None:
    old, recent = make_tenant("old"), make_tenant("recent")
    for tenant in (old, recent):
        data.create(tenant)
    old_name = data.archive(old)
    recent_name = data.archive(recent)
    assert old_name is not None and recent_name is not None
    (first, second) = data.archives()
    # The clock is injected: "now" is 40 days after the archives were made.
    now = max(first.archived_at, second.archived_at) + dt.timedelta(days=40)
    assert data.purge(dt.timedelta(days=41), now=now) == []
    assert len(data.archives()) == 2
    purged = data.purge(dt.timedelta(days=40), now=now)
    assert {archive.name for archive in purged} == {old_name, recent_name}
    assert data.archives() == []


def test_purge_refuses_a_negative_age(data: TenantData) -> None:
    acme = make_tenant("acme")
    data.create(acme)
    data.archive(acme)
    for bad in (dt.timedelta(days=-1), 30):
        with pytest.raises(ValueError, match="older_than must be a timedelta"):
            data.purge(bad)  # type: ignore[arg-type]
    assert len(data.archives()) == 1


def test_restore_refuses_another_tenants_archive_unless_told(
    data: TenantData,
) -> None:
    """A slip copying a line of 'data archives' must not hand A's data to B."""
    acme, mallory = make_tenant("acme"), make_tenant("mallory")
    data.create(acme)
    add_item(data, acme, "acme's secret")
    name = data.archive(acme)
    assert name is not None
    with pytest.raises(TenantDataError, match="'acme'.*not.*'mallory'"):
        data.restore(name, mallory)
    assert not data.exists(mallory)
    assert [archive.name for archive in data.archives()] == [name]
    # On purpose (a tenant renamed by re-creating it): said out loud.
    data.restore(name, mallory, other_tenant=True)
    assert titles(data, mallory) == ["acme's secret"]
