"""The tenant registry's tables, in SQLAlchemy Core.

Names that route requests (slugs, subdomains, path prefixes, host names, e-mails)
are stored already normalised, so plain unique indexes settle races between
spellings such as ``acme`` and ``ACME``; the CHECK constraints keep a raw SQL
write from smuggling an upper-case spelling past them.

Plain :class:`~sqlalchemy.Table` objects, not ORM classes: serving reads the
registry with Core statements built on these, so a worker never imports the
ORM. The ORM classes of :mod:`dispatcher.models.schema` (for writes) and the
migrations map onto these same tables and this same ``metadata``.

One index is declared there, not here: the partial unique index that allows a
tenant one primary domain names its ``WHERE`` for SQLite and PostgreSQL, and
declaring it loads SQLAlchemy's PostgreSQL dialect (2 MiB), which a worker on
a SQLite registry never needs. Only DDL needs the index (migrations, whose
revisions spell it out, and autogenerate): take the complete ``metadata`` from
``Base.metadata`` or ``dispatcher.models.metadata``, which import the schema.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from dispatcher.tenant import TenantStatus, utcnow

__all__ = ["NAMING_CONVENTION", "changes", "domains", "metadata", "tenants", "users"]

# Deterministic constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _timestamp(name: str, *, on_update: bool = False) -> Column[dt.datetime]:
    return Column(
        name,
        DateTime(timezone=True),
        nullable=False,
        default=utcnow,
        onupdate=utcnow if on_update else None,
    )


#: A tenant owner's account.
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200)),
    _timestamp("created_at"),
    CheckConstraint("email = lower(email)", name="email_lower"),
)

#: One customer: the row ``create_app`` builds an app from.
tenants = Table(
    "tenants",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("slug", String(63), nullable=False, unique=True),
    Column(
        "owner_id",
        ForeignKey("users.id", ondelete="RESTRICT"),
        nullable=False,
        index=True,
    ),
    Column("subdomain", String(63), unique=True),
    Column("path_prefix", String(63), unique=True),
    Column("config", JSON, nullable=False, default=dict),
    Column(
        "status",
        Enum(
            TenantStatus,
            name="tenant_status",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda statuses: [s.value for s in statuses],
        ),
        nullable=False,
        default=TenantStatus.ACTIVE,
    ),
    Column("disabled_reason", Text),
    # The named server (of TenantData's configuration) that holds the tenant's
    # data; NULL: none recorded. Indexed: placement counts tenants per server.
    Column("data_server", String(63), index=True),
    # The generation of the tenant's latest change: it only grows, and a tenant
    # re-created under an old slug never repeats a version a cache may hold.
    Column("version", BigInteger, nullable=False),
    _timestamp("created_at"),
    _timestamp("updated_at", on_update=True),
    # The data-migration ledger (see dispatcher.ledger): the tenant-migration
    # revisions its data is at ("" base; NULL never recorded), the revision
    # an upgrade may be moving it to (a run killed mid-way leaves it), when
    # the revision was recorded, and the last failed upgrade's error.
    Column("data_revision", String(255)),
    Column("data_target", String(255)),
    Column("data_migrated_at", DateTime(timezone=True)),
    Column("data_error", Text),
    # NULL, or the tenant's maintenance mode as JSON (see dispatcher.maintenance):
    # since, retry_after, message and the key its bypass cookies are signed with.
    Column("maintenance", JSON),
    # The SHA-256 (hex) of the unused one-time bypass token; never in snapshots.
    Column("maintenance_bypass", String(64)),
    CheckConstraint("slug = lower(slug)", name="slug_lower"),
    CheckConstraint("subdomain = lower(subdomain)", name="subdomain_lower"),
    CheckConstraint("path_prefix = lower(path_prefix)", name="path_prefix_lower"),
)

#: A custom host name that routes to a tenant.
domains = Table(
    "domains",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "tenant_id",
        ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("host", String(253), nullable=False, unique=True),
    Column("is_primary", Boolean, nullable=False, default=False),
    _timestamp("created_at"),
    CheckConstraint("host = lower(host)", name="host_lower"),
    # uq_domains_tenant_id_primary: in dispatcher.models.schema (see above).
)

#: The change feed: one row per registry write, in commit order.
#:
#: Followers ask for ``generation > G``, a primary-key range scan whose cost
#: depends on the number of changes since G, not on the number of tenants.
#: Rows name the tenant by slug, not by foreign key: a deleted tenant's change
#: must outlive it, and caches key their apps by slug.
changes = Table(
    "tenant_changes",
    metadata,
    Column(
        "generation",
        BigInteger().with_variant(Integer, "sqlite"),
        primary_key=True,
    ),
    Column("slug", String(63), nullable=False),
    Column("operation", String(32), nullable=False),
    # The names the change made route to the tenant, as
    # {"subdomain": ..., "path_prefix": ..., "domains": [...], "removed": {...}}
    # where "removed" (same keys) holds those it stopped routing to it; NULL
    # on rows older than revision 0002, read back as "unknown".
    Column("names", JSON),
    # Indexed: the feed is pruned by age (see dispatcher.retention).
    Column(
        "changed_at",
        DateTime(timezone=True),
        nullable=False,
        default=utcnow,
        index=True,
    ),
    sqlite_autoincrement=True,
)
