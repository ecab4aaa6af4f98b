"""Creating many tenants at once: what happened to each, and one batch's work.

Usage (through the registry, which runs each batch in one transaction)::

    specs = [registry.new_tenant(row["slug"], owner_email=row["email"]) for row in rows]
    for result in registry.import_tenants(specs, batch_size=500):
        if result.status is ImportStatus.CONFLICT:
            print(result.spec.slug, result.error)

Idempotent: a tenant that already exists with the same settings is
``UNCHANGED``; one that exists differently, or whose names are taken, is a
``CONFLICT`` and is not written. The other tenants of the batch are written
with a few batched statements, not a round trip per tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import insert, select

from dispatcher.changes import Names, Operation, TenantChange
from dispatcher.exceptions import Conflict, TenantExists, TooManyDomains
from dispatcher.models.tables import changes as change_table
from dispatcher.models.tables import domains as domain_table
from dispatcher.models.tables import tenants as tenant_table
from dispatcher.models.tables import users as user_table
from dispatcher.queries import SNAPSHOTS, snapshots
from dispatcher.rules import TenantRules
from dispatcher.tenant import NewTenant, Tenant, TenantStatus, thaw
from dispatcher.validation import json_equal

if TYPE_CHECKING:
    # dispatcher.writes loads the ORM: imported by import_batch, which only
    # runs inside a write, so importing ImportResult (as the registry does for
    # every worker) does not.
    from dispatcher.writes import Taken, Transaction

__all__ = ["ImportResult", "ImportStatus", "import_batch"]


class ImportStatus(StrEnum):
    """What an import did with one requested tenant."""

    CREATED = "created"
    UNCHANGED = "unchanged"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What :meth:`TenantRegistry.import_tenants` did with one requested tenant."""

    spec: NewTenant
    status: ImportStatus
    error: Conflict | None = None


def import_batch(
    tx: Transaction, rules: TenantRules, batch: Sequence[NewTenant]
) -> list[ImportResult]:
    """Decide for each tenant of ``batch``, in order, and create the accepted ones."""
    from dispatcher.writes import Taken

    session = tx.session
    slugs = {spec.slug for spec in batch}
    existing = {
        tenant.slug: tenant
        for tenant in snapshots(
            session.execute(SNAPSHOTS.where(tenant_table.c.slug.in_(slugs)))
        )
    }
    # Existing slugs are decided on before names are compared: not loaded here.
    taken = Taken.load(session, batch)
    results: list[ImportResult] = []
    accepted: list[NewTenant] = []
    for spec in batch:
        result = _decide(spec, existing.get(spec.slug), taken, rules)
        results.append(result)
        if result.status is ImportStatus.CREATED:
            accepted.append(spec)
            taken.claim(spec)
    if accepted:
        _create(tx, accepted)
    return results


def _decide(
    spec: NewTenant, existing: Tenant | None, taken: Taken, rules: TenantRules
) -> ImportResult:
    try:
        # A spec built by hand, past new_tenant(), may have too many.
        rules.check_domain_count(spec.slug, len(spec.domains))
    except TooManyDomains as e:
        return ImportResult(spec, ImportStatus.CONFLICT, e)
    if existing is not None:
        if _same(existing, spec):
            return ImportResult(spec, ImportStatus.UNCHANGED)
        return ImportResult(
            spec,
            ImportStatus.CONFLICT,
            TenantExists(f"tenant {spec.slug!r} already exists with other settings"),
        )
    conflict = taken.conflict(spec)
    if conflict is not None:
        return ImportResult(spec, ImportStatus.CONFLICT, conflict)
    return ImportResult(spec, ImportStatus.CREATED)


def _same(tenant: Tenant, spec: NewTenant) -> bool:
    return (
        tenant.owner_email == spec.owner_email
        and tenant.subdomain == spec.subdomain
        and tenant.path_prefix == spec.path_prefix
        # The primary domain comes first; the others are stored in host order.
        and tenant.domains[:1] == spec.domains[:1]
        and sorted(tenant.domains) == sorted(spec.domains)
        and json_equal(tenant.config, spec.config)
        # No server named says nothing about placement: a file re-run after
        # its tenants were placed or moved is still unchanged.
        and spec.data_server in (None, tenant.data_server)
    )


def _create(tx: Transaction, specs: Sequence[NewTenant]) -> None:
    """Insert validated, conflict-free tenants with a few batched statements."""
    s = tx.session
    tx.claim(specs)
    emails = {spec.owner_email: spec.owner_name for spec in reversed(specs)}
    owner_ids: dict[str, int] = {
        email: user_id
        for email, user_id in s.execute(
            select(user_table.c.email, user_table.c.id).where(
                user_table.c.email.in_(emails)
            )
        )
    }
    new_owners = [
        {"email": email, "name": name}
        for email, name in emails.items()
        if email not in owner_ids
    ]
    if new_owners:
        owner_ids.update(
            (email, user_id)
            for email, user_id in s.execute(
                insert(user_table).returning(
                    user_table.c.email, user_table.c.id, sort_by_parameter_order=True
                ),
                new_owners,
            )
        )
    changes = [
        TenantChange(0, spec.slug, Operation.CREATED, Names.of(spec)) for spec in specs
    ]
    generations = s.scalars(
        insert(change_table).returning(
            change_table.c.generation, sort_by_parameter_order=True
        ),
        [
            {
                "slug": spec.slug,
                "operation": Operation.CREATED,
                "names": change.names_to_json(),
            }
            for spec, change in zip(specs, changes, strict=True)
        ],
    ).all()
    tenant_ids = s.scalars(
        insert(tenant_table).returning(tenant_table.c.id, sort_by_parameter_order=True),
        [
            {
                "slug": spec.slug,
                "owner_id": owner_ids[spec.owner_email],
                "subdomain": spec.subdomain,
                "path_prefix": spec.path_prefix,
                "config": thaw(spec.config),
                "data_server": spec.data_server,
                "status": TenantStatus.ACTIVE,
                "version": generation,
            }
            for spec, generation in zip(specs, generations, strict=True)
        ],
    ).all()
    domains = [
        {"tenant_id": tenant_id, "host": host, "is_primary": index == 0}
        for spec, tenant_id in zip(specs, tenant_ids, strict=True)
        for index, host in enumerate(spec.domains)
    ]
    if domains:
        s.execute(insert(domain_table), domains)
    tx.changes.extend(
        replace(change, generation=generation)
        for change, generation in zip(changes, generations, strict=True)
    )
