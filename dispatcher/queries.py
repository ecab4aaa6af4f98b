"""The registry's reads: precompiled statements and the one snapshot builder.

Usage::

    rows = database.read(BY_SUBDOMAIN, {"key": "acme"})
    snapshots(rows)  # -> [Tenant(slug='acme', ...)]

A tenant is read with its owner and all its domains in one statement that
returns one row per domain (or one row with ``host`` NULL); :func:`snapshots`
folds those rows into immutable :class:`~dispatcher.tenant.Tenant` snapshots.
Writes read their result back through the same statement, so a snapshot looks
the same whichever way it was made. The lookups run on the dispatcher's miss
path: they are built once, at import, and take their key as a parameter. They
are Core statements on the tables of :mod:`dispatcher.models.tables`, so
serving never imports the ORM.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby
from typing import Any

from sqlalchemy import (
    Row,
    Select,
    String,
    Text,
    and_,
    bindparam,
    cast,
    column,
    func,
    or_,
    select,
    table,
)

from dispatcher.changes import TenantChange
from dispatcher.models.tables import changes as change_table
from dispatcher.models.tables import domains as domain_table
from dispatcher.models.tables import tenants as tenant_table
from dispatcher.models.tables import users as user_table
from dispatcher.tenant import Maintenance, Tenant, TenantStatus, aware, freeze

__all__ = [
    "BY_HOST",
    "BY_HOST_OR_SUBDOMAIN",
    "BY_PATH_PREFIX",
    "BY_SLUG",
    "BY_SUBDOMAIN",
    "CHANGES_SINCE",
    "COUNT_BY_DATA_SERVER",
    "COUNT_BY_STATUS",
    "COUNT_IN_MAINTENANCE",
    "LATEST_GENERATION",
    "RECENT_CHANGES",
    "SCHEMA_REVISIONS",
    "SNAPSHOTS",
    "changes",
    "snapshots",
]

_COLUMNS = (
    tenant_table.c.id,
    tenant_table.c.slug,
    user_table.c.email,
    user_table.c.name,
    tenant_table.c.subdomain,
    tenant_table.c.path_prefix,
    tenant_table.c.config,
    tenant_table.c.status,
    tenant_table.c.disabled_reason,
    tenant_table.c.version,
    tenant_table.c.created_at,
    tenant_table.c.updated_at,
    tenant_table.c.data_server,
    tenant_table.c.maintenance,
    domain_table.c.host,
)
#: Every tenant, one row per domain, ordered by slug then primary domain first.
SNAPSHOTS: Select[Any] = (
    select(*_COLUMNS)
    .join(user_table, user_table.c.id == tenant_table.c.owner_id)
    .outerjoin(domain_table, domain_table.c.tenant_id == tenant_table.c.id)
    .order_by(
        tenant_table.c.slug, domain_table.c.is_primary.desc(), domain_table.c.host
    )
)
_KEY = bindparam("key", type_=String())
#: Lookups by one normalised name, the parameter ``key``.
BY_SLUG = SNAPSHOTS.where(tenant_table.c.slug == _KEY)
BY_SUBDOMAIN = SNAPSHOTS.where(tenant_table.c.subdomain == _KEY)
BY_PATH_PREFIX = SNAPSHOTS.where(tenant_table.c.path_prefix == _KEY)
_matched_domain = domain_table.alias()
_TENANT_OF_HOST = (
    select(_matched_domain.c.tenant_id)
    .where(_matched_domain.c.host == _KEY)
    .scalar_subquery()
)
BY_HOST = SNAPSHOTS.where(tenant_table.c.id == _TENANT_OF_HOST)
#: A custom domain ``key`` or a subdomain ``label`` in one statement; both
#: sides use an index.
BY_HOST_OR_SUBDOMAIN = SNAPSHOTS.where(
    or_(
        tenant_table.c.id == _TENANT_OF_HOST,
        tenant_table.c.subdomain == bindparam("label", type_=String()),
    )
)

#: ``(data_server, tenants)`` for each server, NULL for tenants with none
#: recorded: one pass over the index on ``data_server``.
COUNT_BY_DATA_SERVER: Select[str | None, int] = select(
    tenant_table.c.data_server, func.count().label("tenants")
).group_by(tenant_table.c.data_server)

#: ``(status, tenants)`` for each status that has tenants. No index serves a
#: count of every status: one pass over ``tenants``, the GROUP BY in memory.
COUNT_BY_STATUS: Select[Any] = select(
    tenant_table.c.status, func.count().label("tenants")
).group_by(tenant_table.c.status)

_maintenance = tenant_table.c.maintenance
#: How many tenants are in maintenance mode. Ending a window stores JSON
#: ``null`` (the ORM writes None so), which is no window.
COUNT_IN_MAINTENANCE: Select[Any] = select(func.count()).where(
    and_(_maintenance.is_not(None), cast(_maintenance, Text) != "null")
)

_CHANGE_COLUMNS = (
    change_table.c.generation,
    change_table.c.slug,
    change_table.c.operation,
    change_table.c.names,
    change_table.c.changed_at,
)
#: Changes after ``generation``, oldest first, at most ``limit``.
CHANGES_SINCE: Select[Any] = (
    select(*_CHANGE_COLUMNS)
    .where(change_table.c.generation > bindparam("generation"))
    .order_by(change_table.c.generation)
    .limit(bindparam("limit"))
)
#: The newest ``limit`` changes, newest first: the primary key read backwards.
RECENT_CHANGES: Select[Any] = (
    select(*_CHANGE_COLUMNS)
    .order_by(change_table.c.generation.desc())
    .limit(bindparam("limit"))
)
#: The newest change's generation, 0 if there is none.
LATEST_GENERATION: Select[Any] = select(
    func.coalesce(func.max(change_table.c.generation), 0)
)

#: The revisions Alembic recorded the schema at (its own table, not ours).
SCHEMA_REVISIONS: Select[Any] = select(column("version_num", String)).select_from(
    table("alembic_version")
)


def snapshots(rows: Iterable[Row[Any]]) -> list[Tenant]:
    """Fold the one-row-per-domain result of :data:`SNAPSHOTS` into snapshots."""
    tenants = []
    for _, group in groupby(rows, key=lambda row: row.id):
        tenant_rows = list(group)
        first = tenant_rows[0]
        tenants.append(
            Tenant(
                slug=first.slug,
                owner_email=first.email,
                owner_name=first.name,
                subdomain=first.subdomain,
                path_prefix=first.path_prefix,
                domains=tuple(row.host for row in tenant_rows if row.host is not None),
                config=freeze(first.config),
                status=TenantStatus(first.status),
                disabled_reason=first.disabled_reason,
                version=first.version,
                created_at=aware(first.created_at),
                updated_at=aware(first.updated_at),
                data_server=first.data_server,
                maintenance=Maintenance.from_json(first.maintenance),
            )
        )
    return tenants


def changes(rows: Iterable[Row[Any]]) -> list[TenantChange]:
    """The rows of :data:`CHANGES_SINCE` as changes."""
    return [
        TenantChange.from_row(
            row.generation, row.slug, row.operation, row.names, aware(row.changed_at)
        )
        for row in rows
    ]
