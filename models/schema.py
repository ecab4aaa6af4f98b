"""The tenant registry's ORM classes, for writes and migrations.

Each class maps onto its table of :mod:`dispatcher.models.tables` (the one
definition of the schema), adding the relationships writes navigate, and the
one index serving has no use for (see there). Imported only to write or
migrate: serving reads through Core and never loads the ORM.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, text
from sqlalchemy.orm import DeclarativeBase, Mapped, relationship

from dispatcher.models import tables
from dispatcher.tenant import TenantStatus

__all__ = ["Base", "Change", "Domain", "Tenant", "User"]

# At most one primary domain per tenant, enforced by the database. Declared
# here, not in tables: its PostgreSQL option loads that dialect (see tables).
Index(
    "uq_domains_tenant_id_primary",
    tables.domains.c.tenant_id,
    unique=True,
    sqlite_where=text("is_primary"),
    postgresql_where=text("is_primary"),
)


class Base(DeclarativeBase):
    metadata = tables.metadata


class User(Base):
    """A tenant owner's account."""

    __table__ = tables.users

    id: Mapped[int]
    email: Mapped[str]
    name: Mapped[str | None]
    created_at: Mapped[dt.datetime]

    tenants: Mapped[list[Tenant]] = relationship(back_populates="owner")


class Tenant(Base):
    """One customer: the row ``create_app`` builds an app from."""

    __table__ = tables.tenants

    id: Mapped[int]
    slug: Mapped[str]
    owner_id: Mapped[int]
    subdomain: Mapped[str | None]
    path_prefix: Mapped[str | None]
    config: Mapped[dict[str, Any]]
    status: Mapped[TenantStatus]
    disabled_reason: Mapped[str | None]
    data_server: Mapped[str | None]
    version: Mapped[int]
    data_revision: Mapped[str | None]
    data_target: Mapped[str | None]
    data_migrated_at: Mapped[dt.datetime | None]
    data_error: Mapped[str | None]
    maintenance: Mapped[dict[str, Any] | None]
    maintenance_bypass: Mapped[str | None]
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]

    owner: Mapped[User] = relationship(back_populates="tenants")
    domains: Mapped[list[Domain]] = relationship(
        back_populates="tenant",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by=lambda: (Domain.is_primary.desc(), Domain.host),
    )


class Domain(Base):
    """A custom host name that routes to a tenant."""

    __table__ = tables.domains

    id: Mapped[int]
    tenant_id: Mapped[int]
    host: Mapped[str]
    is_primary: Mapped[bool]
    created_at: Mapped[dt.datetime]

    tenant: Mapped[Tenant] = relationship(back_populates="domains")


class Change(Base):
    """The change feed: one row per registry write, in commit order."""

    __table__ = tables.changes

    generation: Mapped[int]
    slug: Mapped[str]
    operation: Mapped[str]
    names: Mapped[dict[str, Any] | None]
    changed_at: Mapped[dt.datetime]
