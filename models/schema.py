"""The tenant registry's tables.

Names that route requests (slugs, subdomains, path prefixes, host names, e-mails)
are stored already normalised, so plain unique indexes settle races between
spellings such as ``acme`` and ``ACME``; the CHECK constraints keep a raw SQL
write from smuggling an upper-case spelling past them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dispatcher.tenant import TenantStatus, utcnow

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dict[str, Any]: JSON}


class User(Base):
    """A tenant owner's account."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("email = lower(email)", name="email_lower"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )

    tenants: Mapped[list[Tenant]] = relationship(back_populates="owner")


class Tenant(Base):
    """One customer: the row ``create_app`` builds an app from."""

    __tablename__ = "tenants"
    __table_args__ = (
        CheckConstraint("slug = lower(slug)", name="slug_lower"),
        CheckConstraint("subdomain = lower(subdomain)", name="subdomain_lower"),
        CheckConstraint("path_prefix = lower(path_prefix)", name="path_prefix_lower"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    owner_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="RESTRICT"), index=True
    )
    subdomain: Mapped[str | None] = mapped_column(String(63), unique=True)
    path_prefix: Mapped[str | None] = mapped_column(String(63), unique=True)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[TenantStatus] = mapped_column(
        Enum(
            TenantStatus,
            name="tenant_status",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda statuses: [s.value for s in statuses],
        ),
        default=TenantStatus.ACTIVE,
    )
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # The named server (of TenantData's configuration) that holds the tenant's
    # data; NULL: none recorded. Indexed: placement counts tenants per server.
    data_server: Mapped[str | None] = mapped_column(String(63), index=True)
    # The generation of the tenant's latest change: it only grows, and a tenant
    # re-created under an old slug never repeats a version a cache may hold.
    version: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    owner: Mapped[User] = relationship(back_populates="tenants")
    domains: Mapped[list[Domain]] = relationship(
        back_populates="tenant",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by=lambda: (Domain.is_primary.desc(), Domain.host),
    )


class Domain(Base):
    """A custom host name that routes to a tenant."""

    __tablename__ = "domains"
    __table_args__ = (
        CheckConstraint("host = lower(host)", name="host_lower"),
        # At most one primary domain per tenant, enforced by the database.
        Index(
            "uq_domains_tenant_id_primary",
            "tenant_id",
            unique=True,
            sqlite_where=text("is_primary"),
            postgresql_where=text("is_primary"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(
        ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    host: Mapped[str] = mapped_column(String(253), unique=True)
    is_primary: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )

    tenant: Mapped[Tenant] = relationship(back_populates="domains")


class Change(Base):
    """The change feed: one row per registry write, in commit order.

    Followers ask for ``generation > G``, a primary-key range scan whose cost
    depends on the number of changes since G, not on the number of tenants.
    Rows name the tenant by slug, not by foreign key: a deleted tenant's change
    must outlive it, and caches key their apps by slug.
    """

    __tablename__ = "tenant_changes"
    __table_args__ = {"sqlite_autoincrement": True}

    generation: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True
    )
    slug: Mapped[str] = mapped_column(String(63))
    operation: Mapped[str] = mapped_column(String(32))
    # The names the change made route to the tenant, as
    # {"subdomain": ..., "path_prefix": ..., "domains": [...], "removed": {...}}
    # where "removed" (same keys) holds those it stopped routing to it; NULL
    # on rows older than revision 0002, read back as "unknown".
    names: Mapped[dict[str, Any] | None]
    changed_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )
