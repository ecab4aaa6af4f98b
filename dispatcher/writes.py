"""What every registry write needs inside its transaction, and the names in use.

Usage (the registry does this for each write)::

    with database.write() as session:
        tx = Transaction(session)
        row = tx.tenant("acme")
        tx.check_free(NewTenant("acme", "", subdomain="shop"), exists=True)
        row.subdomain = "shop"
        tx.record(row, Operation.SUBDOMAIN, Names(subdomain="shop"))
        tenant = tx.snapshot(row)
        session.commit()

:class:`Taken` is the one place a name conflict is worded, whether a single
write finds the name taken, an import finds it taken by an earlier tenant of
its batch, or the database refused a write that raced a writer which bypassed
the registry's write lock (:meth:`Transaction.conflict` then asks which of the
claimed names is taken, rather than reading the driver's message).

Writes use the ORM (the classes of :mod:`dispatcher.models.schema`): the
registry imports this module on its first write, so a worker that only serves
never loads it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dispatcher.changes import NO_NAMES, Names, Operation, TenantChange
from dispatcher.database import first_line
from dispatcher.exceptions import (
    Conflict,
    DomainTaken,
    OwnerExists,
    TenantExists,
    TenantNotFound,
)
from dispatcher.models import Domain as DomainRow
from dispatcher.models import Tenant as TenantRow
from dispatcher.models import User as UserRow
from dispatcher.models.tables import changes as change_table
from dispatcher.queries import BY_SLUG, snapshots
from dispatcher.tenant import NewTenant, Tenant, utcnow

__all__ = ["Taken", "Transaction"]


class Transaction:
    """The helpers every write needs, bound to one write-locked session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        #: The changes written so far, to publish after commit.
        self.changes: list[TenantChange] = []
        # The tenants whose names this transaction writes, and whether each
        # exists already: what to look up if the database refuses the write.
        self._claims: list[tuple[NewTenant, bool]] = []

    def tenant(self, slug: str) -> TenantRow:
        """The tenant's row; raises :class:`TenantNotFound`."""
        key = slug.strip().lower() if isinstance(slug, str) else slug
        row = self.session.scalars(
            select(TenantRow).where(TenantRow.slug == key)
        ).one_or_none()
        if row is None:
            raise TenantNotFound(f"no tenant has the slug {slug!r}")
        return row

    def owner(self, email: str, name: str | None, *, existing: bool = True) -> UserRow:
        """The owner's account, created if new; ``existing=False`` refuses one."""
        user = self.session.scalars(
            select(UserRow).where(UserRow.email == email)
        ).one_or_none()
        if user is not None and not existing:
            raise OwnerExists(
                f"an account for {email!r} already exists; a new tenant is "
                "attached to it only with proof of control of that address"
            )
        if user is None:
            user = UserRow(email=email, name=name)
            self.session.add(user)
        elif user.name is None and name is not None:
            user.name = name
        return user

    def check_free(self, spec: NewTenant, *, exists: bool = False) -> None:
        """Raise if a name of ``spec`` is taken (the slug too, unless ``exists``)."""
        self.claim((spec,), exists=exists)
        slugs = () if exists else (spec.slug,)
        conflict = Taken.load(self.session, (spec,), slugs=slugs).conflict(spec)
        if conflict is not None:
            raise conflict

    def claim(self, specs: Iterable[NewTenant], *, exists: bool = False) -> None:
        """Note that this transaction writes the names of ``specs``."""
        self._claims.extend((spec, exists) for spec in specs)

    def record(
        self,
        row: TenantRow,
        operation: Operation,
        added: Names = NO_NAMES,
        *,
        removed: Names = NO_NAMES,
    ) -> None:
        """Append to the change feed; the tenant's version becomes its generation.

        ``added`` and ``removed``: the names the change made route to the
        tenant, and those it stopped routing to it.
        """
        now = utcnow()
        change = TenantChange(0, row.slug, operation, added, removed, now)
        # Core, not the ORM: an autoflush here would write a new tenant before
        # it has the version this statement hands out.
        generation: int = (
            self.session.connection()
            .execute(
                insert(change_table).returning(change_table.c.generation),
                {
                    "slug": row.slug,
                    "operation": operation,
                    "names": change.names_to_json(),
                    "changed_at": now,
                },
            )
            .scalar_one()
        )
        row.version = generation
        row.updated_at = now
        self.changes.append(replace(change, generation=generation))

    def snapshot(self, row: TenantRow) -> Tenant:
        """The tenant as this transaction has written it, read as any lookup is."""
        [tenant] = snapshots(self.session.execute(BY_SLUG, {"key": row.slug}))
        return tenant

    def conflict(self, session: Session, error: IntegrityError) -> Conflict:
        """The conflict the database reported with ``error``, found by asking
        (in ``session``, a new transaction) which claimed name is now taken.

        Only a writer that bypasses the registry's write lock can take a name
        between :meth:`check_free` and the commit.
        """
        specs = [spec for spec, _ in self._claims]
        slugs = [spec.slug for spec, exists in self._claims if not exists]
        taken = Taken.load(session, specs, slugs=slugs)
        for spec in specs:
            conflict = taken.conflict(spec)
            if conflict is not None:
                return conflict
        tenants = ", ".join(dict.fromkeys(repr(spec.slug) for spec in specs))
        return Conflict(
            f"the database refused the write of tenant {tenants or '(unknown)'}, "
            f"which a concurrent write conflicted with: {first_line(error)}"
        )


@dataclass
class Taken:
    """Names in use among those of some tenants to create; grows as they are
    claimed, so an import finds a name taken by an earlier tenant of its batch."""

    slugs: set[str]
    subdomains: set[str]
    path_prefixes: set[str]
    hosts: set[str]

    @classmethod
    def load(
        cls, session: Session, specs: Sequence[NewTenant], *, slugs: Iterable[str] = ()
    ) -> Taken:
        """The names of ``specs`` that are taken (of their slugs, only ``slugs``)."""

        def existing(column: Any, values: Iterable[str | None]) -> set[str]:
            wanted = {value for value in values if value is not None}
            if not wanted:
                return set()
            return set(session.scalars(select(column).where(column.in_(wanted))))

        return cls(
            slugs=existing(TenantRow.slug, slugs),
            subdomains=existing(TenantRow.subdomain, (s.subdomain for s in specs)),
            path_prefixes=existing(
                TenantRow.path_prefix, (s.path_prefix for s in specs)
            ),
            hosts=existing(DomainRow.host, (h for s in specs for h in s.domains)),
        )

    def conflict(self, spec: NewTenant) -> Conflict | None:
        """The first name of ``spec`` that is taken, as the error to raise."""
        if spec.slug in self.slugs:
            return TenantExists(f"tenant {spec.slug!r} already exists")
        if spec.subdomain in self.subdomains:
            return DomainTaken(f"subdomain {spec.subdomain!r} is already taken")
        if spec.path_prefix in self.path_prefixes:
            return DomainTaken(f"path prefix {spec.path_prefix!r} is already taken")
        for host in spec.domains:
            if host in self.hosts:
                return DomainTaken(f"host name {host!r} is already taken")
        return None

    def claim(self, spec: NewTenant) -> None:
        """Count the names of ``spec`` as taken from now on."""
        self.slugs.add(spec.slug)
        if spec.subdomain is not None:
            self.subdomains.add(spec.subdomain)
        if spec.path_prefix is not None:
            self.path_prefixes.add(spec.path_prefix)
        self.hosts.update(spec.domains)
