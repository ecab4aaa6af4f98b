"""The registry's reads: precompiled statements and the one snapshot builder.

Usage::

    rows = database.read(BY_SUBDOMAIN, {"key": "acme"})
    snapshots(rows)  # -> [Tenant(slug='acme', ...)]

A tenant is read with its owner and all its domains in one statement that
returns one row per domain (or one row with ``host`` NULL); :func:`snapshots`
folds those rows into immutable :class:`~dispatcher.tenant.Tenant` snapshots.
Writes read their result back through the same statement, so a snapshot looks
the same whichever way it was made. The lookups run on the dispatcher's miss
path: they are built once, at import, and take their key as a parameter.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby
from typing import Any

from sqlalchemy import Row, Select, String, bindparam, func, or_, select
from sqlalchemy.orm import aliased

from dispatcher.changes import TenantChange
from dispatcher.models import Change as ChangeRow
from dispatcher.models import Domain as DomainRow
from dispatcher.models import Tenant as TenantRow
from dispatcher.models import User as UserRow
from dispatcher.tenant import Tenant, TenantStatus, aware, freeze

__all__ = [
    "BY_HOST",
    "BY_HOST_OR_SUBDOMAIN",
    "BY_PATH_PREFIX",
    "BY_SLUG",
    "BY_SUBDOMAIN",
    "CHANGES_SINCE",
    "COUNT_BY_DATA_SERVER",
    "LATEST_GENERATION",
    "SNAPSHOTS",
    "changes",
    "snapshots",
]

_COLUMNS = (
    TenantRow.id,
    TenantRow.slug,
    UserRow.email,
    UserRow.name,
    TenantRow.subdomain,
    TenantRow.path_prefix,
    TenantRow.config,
    TenantRow.status,
    TenantRow.disabled_reason,
    TenantRow.version,
    TenantRow.created_at,
    TenantRow.updated_at,
    TenantRow.data_server,
    DomainRow.host,
)
#: Every tenant, one row per domain, ordered by slug then primary domain first.
SNAPSHOTS: Select[Any] = (
    select(*_COLUMNS)
    .join(UserRow, UserRow.id == TenantRow.owner_id)
    .outerjoin(DomainRow, DomainRow.tenant_id == TenantRow.id)
    .order_by(TenantRow.slug, DomainRow.is_primary.desc(), DomainRow.host)
)
_KEY = bindparam("key", type_=String())
#: Lookups by one normalised name, the parameter ``key``.
BY_SLUG = SNAPSHOTS.where(TenantRow.slug == _KEY)
BY_SUBDOMAIN = SNAPSHOTS.where(TenantRow.subdomain == _KEY)
BY_PATH_PREFIX = SNAPSHOTS.where(TenantRow.path_prefix == _KEY)
_matched_domain = aliased(DomainRow)
_TENANT_OF_HOST = (
    select(_matched_domain.tenant_id)
    .where(_matched_domain.host == _KEY)
    .scalar_subquery()
)
BY_HOST = SNAPSHOTS.where(TenantRow.id == _TENANT_OF_HOST)
#: A custom domain ``key`` or a subdomain ``label`` in one statement; both
#: sides use an index.
BY_HOST_OR_SUBDOMAIN = SNAPSHOTS.where(
    or_(
        TenantRow.id == _TENANT_OF_HOST,
        TenantRow.subdomain == bindparam("label", type_=String()),
    )
)

#: ``(data_server, tenants)`` for each server, NULL for tenants with none
#: recorded: one pass over the index on ``data_server``.
COUNT_BY_DATA_SERVER: Select[str | None, int] = select(
    TenantRow.data_server, func.count().label("tenants")
).group_by(TenantRow.data_server)

#: Changes after ``generation``, oldest first, at most ``limit``.
CHANGES_SINCE: Select[Any] = (
    select(ChangeRow.generation, ChangeRow.slug, ChangeRow.operation, ChangeRow.names)
    .where(ChangeRow.generation > bindparam("generation"))
    .order_by(ChangeRow.generation)
    .limit(bindparam("limit"))
)
#: The newest change's generation, 0 if there is none.
LATEST_GENERATION: Select[Any] = select(
    func.coalesce(func.max(ChangeRow.generation), 0)
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
            )
        )
    return tenants


def changes(rows: Iterable[Row[Any]]) -> list[TenantChange]:
    """The rows of :data:`CHANGES_SINCE` as changes."""
    return [
        TenantChange.from_row(row.generation, row.slug, row.operation, row.names)
        for row in rows
    ]
