"""The data-migration ledger: per tenant, the revision its data is at.

Four columns of ``tenants`` (registry revision 0004): ``data_revision``, the
tenant-migration heads its data is at (comma-separated and sorted, ``""`` at
base, NULL never recorded); ``data_target``, set while an upgrade to that
revision may be in flight; ``data_migrated_at``, when ``data_revision`` was
recorded; ``data_error``, the last failed upgrade's error.

The ledger is true at every moment of a fleet upgrade: a tenant's data is at
``data_revision``, or, while ``data_target`` is set, at ``data_target``. So
:func:`mark_upgrading` is written before an upgrade starts and
:func:`record_results` only after its transaction committed (or rolled back).

Usage (the registry's ``data_ledger``, ``mark_data_upgrading`` and
``record_data_results`` wrap these)::

    behind = registry.data_ledger(behind=ledger_revision(("0002",)))
    registry.mark_data_upgrading([entry.slug for entry in behind], "0002")
    registry.record_data_results([DataResult("acme", ("0001",), ("0002",))])
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby, islice
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, bindparam, or_, select, update

from dispatcher.changes import Operation
from dispatcher.models.tables import tenants as tenant_table
from dispatcher.queries import SNAPSHOTS, snapshots
from dispatcher.tenant import Tenant, aware, utcnow

if TYPE_CHECKING:
    from dispatcher.database import Database
    from dispatcher.writes import Transaction

__all__ = [
    "DataResult",
    "LedgerEntry",
    "ledger_revision",
    "mark_upgrading",
    "parse_revision",
    "read_ledger",
    "record_results",
]

#: Tenants per statement of a batched write: far below any backend's limit
#: on bound parameters.
_CHUNK = 500

_TARGET = bindparam("target", type_=String())
_LEDGER = SNAPSHOTS.add_columns(
    tenant_table.c.data_revision,
    tenant_table.c.data_target,
    tenant_table.c.data_migrated_at,
    tenant_table.c.data_error,
)
#: Tenants not recorded at ``target``, or whose upgrade may be in flight.
_BEHIND = _LEDGER.where(
    or_(
        tenant_table.c.data_revision.is_(None),
        tenant_table.c.data_revision != _TARGET,
        tenant_table.c.data_target.is_not(None),
    )
)
_RECORD = (
    update(tenant_table)
    .where(tenant_table.c.slug == bindparam("key"))
    .values(
        data_revision=bindparam("revision"),
        data_target=None,
        data_migrated_at=bindparam("migrated_at"),
        data_error=bindparam("error"),
    )
)
#: A failure whose revision is unknown: the recorded revision and in-flight
#: mark stay. A failed upgrade rolled back, unless it failed at its commit,
#: where nobody knows: "at data_revision, or at data_target" stays true either
#: way, and the next run looks at the tenant again.
_RECORD_ERROR = (
    update(tenant_table)
    .where(tenant_table.c.slug == bindparam("key"))
    .values(data_error=bindparam("error"))
)


def ledger_revision(revisions: Iterable[str]) -> str:
    """Revisions as the ledger stores them: sorted, comma-separated, ``""`` base."""
    return ",".join(sorted(revisions))


def parse_revision(stored: str | None) -> tuple[str, ...] | None:
    """The ledger's text read back; None: never recorded."""
    if stored is None:
        return None
    return tuple(each for each in stored.split(",") if each)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A tenant and what the ledger says of its data."""

    tenant: Tenant
    #: The revisions its data is at; None: never recorded.
    revision: tuple[str, ...] | None
    #: The revision an upgrade may be moving it to (a run stopped mid-way).
    target: str | None
    migrated_at: dt.datetime | None
    #: The last failed upgrade's error; None once one succeeded.
    error: str | None

    @property
    def slug(self) -> str:
        return self.tenant.slug


@dataclass(frozen=True, slots=True)
class DataResult:
    """One tenant's upgrade, to record once its transaction has ended.

    ``revision``: the revisions its data is at now; None when unknown (a
    failure): what was recorded stays, in-flight mark included. ``changed``: its data
    moved revision, so its apps must be rebuilt.
    """

    slug: str
    revision: tuple[str, ...] | None
    changed: bool = False
    error: str | None = None


def read_ledger(database: Database, behind: str | None) -> list[LedgerEntry]:
    """Every tenant's entry by slug, in one query; with ``behind`` (a ledger
    revision) only those not recorded at it or whose upgrade may be in flight."""
    if behind is None:
        rows = database.read(_LEDGER)
    else:
        rows = database.read(_BEHIND, {"target": behind})
    entries = []
    for _, group in groupby(rows, key=lambda row: row.id):
        tenant_rows = list(group)
        first = tenant_rows[0]
        [tenant] = snapshots(tenant_rows)
        entries.append(
            LedgerEntry(
                tenant=tenant,
                revision=parse_revision(first.data_revision),
                target=first.data_target,
                migrated_at=(
                    None
                    if first.data_migrated_at is None
                    else aware(first.data_migrated_at)
                ),
                error=first.data_error,
            )
        )
    return entries


def mark_upgrading(tx: Transaction, slugs: Collection[str], target: str) -> None:
    """Record that these tenants' data may be moving to ``target`` from now on."""
    connection = tx.session.connection()
    for chunk in _chunks(slugs):
        connection.execute(
            update(tenant_table)
            .where(tenant_table.c.slug.in_(chunk))
            .values(data_target=target)
        )


def record_results(tx: Transaction, results: Iterable[DataResult]) -> None:
    """Record each tenant's revision (or error) and clear its in-flight mark;
    a tenant whose data changed revision gets a ``DATA_REVISION`` change.

    One statement for the ledger columns of them all, one query for the rows
    of the changed ones; a tenant deleted meanwhile is skipped.
    """
    from dispatcher.models import Tenant as TenantRow

    listed = list(results)
    if not listed:
        return
    now = utcnow()
    connection = tx.session.connection()
    known = [
        {
            "key": result.slug,
            "revision": ledger_revision(result.revision),
            "migrated_at": now,
            "error": result.error,
        }
        for result in listed
        if result.revision is not None
    ]
    unknown = [
        {"key": result.slug, "error": result.error}
        for result in listed
        if result.revision is None
    ]
    for statement, parameters in ((_RECORD, known), (_RECORD_ERROR, unknown)):
        if parameters:
            connection.execute(statement, parameters)
    changed = [result.slug for result in listed if result.changed]
    for chunk in _chunks(changed):
        rows = tx.session.scalars(select(TenantRow).where(TenantRow.slug.in_(chunk)))
        for row in sorted(rows, key=lambda row: row.slug):
            tx.record(row, Operation.DATA_REVISION)


def _chunks(items: Iterable[Any]) -> Iterable[Sequence[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, _CHUNK)):
        yield chunk
