"""The tenant registry: tenants, their owners and domains, read and written.

Usage::

    registry = TenantRegistry("sqlite:///dispatcher.sqlite3")
    registry.migrate()
    registry.create_tenant("acme", owner_email="owner@acme.test", subdomain="acme")
    registry.find_by_subdomain("acme")  # -> Tenant snapshot, or None

Reads return immutable :class:`~dispatcher.tenant.Tenant` snapshots, never ORM
rows, so nothing outside the registry holds a session. Every write runs in one
serialised transaction that also appends to the change feed
(``tenant_changes``), and is published to ``registry.feed`` after its commit.

The registry keeps the reads and writes; its parts live beside it:
:mod:`~dispatcher.database` (the engine, bounded waits, the write lock, error
mapping), :mod:`~dispatcher.queries` (the lookups and the snapshot builder),
:mod:`~dispatcher.writes` (a write's transaction, names in use),
:mod:`~dispatcher.rules` (name rules), :mod:`~dispatcher.imports` (bulk
creation), :mod:`~dispatcher.migrate` (Alembic, imported only to migrate),
:mod:`~dispatcher.pubsub` and :mod:`~dispatcher.notify` (the change feed).

Reads are SQLAlchemy Core; writes use the ORM, imported at the first write
(with :mod:`~dispatcher.writes`), so a worker that only serves never loads it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import URL, Engine, Select, select
from sqlalchemy.exc import IntegrityError

from dispatcher.changes import Names, Notifier, Operation, TenantChange
from dispatcher.database import DEFAULT_TIMEOUT, Database
from dispatcher.exceptions import SchemaMissing, TenantNotFound
from dispatcher.imports import ImportResult, ImportStatus, import_batch
from dispatcher.models.tables import tenants as tenant_table
from dispatcher.notify import PostgresNotifier
from dispatcher.pubsub import ChangeHub
from dispatcher.queries import (
    BY_HOST,
    BY_HOST_OR_SUBDOMAIN,
    BY_PATH_PREFIX,
    BY_SLUG,
    BY_SUBDOMAIN,
    CHANGES_SINCE,
    COUNT_BY_DATA_SERVER,
    COUNT_BY_STATUS,
    COUNT_IN_MAINTENANCE,
    LATEST_GENERATION,
    RECENT_CHANGES,
    SCHEMA_REVISIONS,
    SNAPSHOTS,
    changes,
    snapshots,
)
from dispatcher.retention import (
    DEFAULT_RETENTION,
    FeedRetention,
    Pruned,
    Pruner,
    prune,
)
from dispatcher.rules import DEFAULT_MAX_DOMAINS, TenantRules, check_data_server
from dispatcher.tenant import (
    MAINTENANCE_RETRY_AFTER,
    NewTenant,
    Tenant,
    TenantFields,
    TenantStatus,
    thaw,
)
from dispatcher.validation import (
    DEFAULT_RESERVED,
    check_config,
    json_equal,
    normalise_domain,
)

if TYPE_CHECKING:
    from typing import Unpack

    from dispatcher.ledger import DataResult, LedgerEntry
    from dispatcher.models import Tenant as TenantRow
    from dispatcher.writes import Transaction

__all__ = ["ImportResult", "ImportStatus", "TenantRegistry"]


class TenantRegistry:
    """Tenants, their owners and domains, in a SQL database.

    :param url_or_engine: a SQLAlchemy URL (``sqlite:///file``,
        ``postgresql+psycopg://...``) or an :class:`~sqlalchemy.Engine`.
    :param reserved, base_domain, max_domains: the rules for tenants' names
        (see :class:`~dispatcher.rules.TenantRules`): labels no tenant may
        use, the base domain custom domains must stay out of, how many custom
        domains one tenant may have.
    :param notifier: wakes every process's change follower at each commit
        (:class:`~dispatcher.notify.PostgresNotifier`, which ``"auto"`` picks
        on PostgreSQL); None: followers only poll (SQLite always does).
    :param timeout: seconds a read may wait (for a lock, a pooled connection,
        a connect, a statement) before it raises :class:`RegistryUnavailable`,
        so a request gets 503 instead of hanging a worker; writes may wait
        ``max(timeout, 30)`` (see :class:`~dispatcher.database.Database`).
    :param retention: how much of the change feed to keep; this registry's
        writes prune the rest after their commit (see
        :mod:`dispatcher.retention`). None: they never prune.
    """

    def __init__(
        self,
        url_or_engine: str | URL | Engine,
        *,
        reserved: Collection[str] = DEFAULT_RESERVED,
        notifier: Notifier | None | Literal["auto"] = "auto",
        base_domain: str | None = None,
        max_domains: int = DEFAULT_MAX_DOMAINS,
        timeout: float = DEFAULT_TIMEOUT,
        retention: FeedRetention | None = DEFAULT_RETENTION,
    ) -> None:
        _check_notifier(notifier)
        if retention is not None and not isinstance(retention, FeedRetention):
            raise TypeError(
                f"retention must be a FeedRetention or None, not {retention!r}"
            )
        #: The engine, its bounded waits and write lock (see dispatcher.database).
        self.database = Database(url_or_engine, timeout=timeout)
        #: The rules every name is checked by before it is written.
        self.rules = TenantRules(
            reserved=reserved, base_domain=base_domain, max_domains=max_domains
        )
        if notifier == "auto":
            notifier = None
            if self.database.is_postgres:
                notifier = PostgresNotifier(self.engine.url, timeout=self.timeout)
        #: Wakes every process's follower at each commit; None: they poll.
        self.notifier: Notifier | None = notifier
        #: Subscribe here to hear this registry's writes (at once) and, once
        #: following, every other process's (see ChangeHub.follow).
        self.feed = ChangeHub(self, notifier)
        #: How much of the feed is kept; None: writes never prune it.
        self.retention = retention
        self._pruner = None if retention is None else Pruner(self.database, retention)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine; assigning one reconfigures the registry for it."""
        return self.database.engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        self.database.engine = engine

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return self.database.url

    @property
    def timeout(self) -> float:
        """Seconds a read may wait."""
        return self.database.timeout

    @property
    def write_timeout(self) -> float:
        """Seconds a write may wait."""
        return self.database.write_timeout

    @property
    def reserved(self) -> frozenset[str]:
        return self.rules.reserved

    @property
    def base_domain(self) -> str | None:
        return self.rules.base_domain

    @property
    def max_domains(self) -> int:
        return self.rules.max_domains

    def __repr__(self) -> str:
        return f"<TenantRegistry {self.url}>"

    def close(self) -> None:
        """Stop following changes; close pooled connections of an owned engine."""
        self.feed.close()
        self.database.close()

    def __enter__(self) -> TenantRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def migrate(self, revision: str = "head") -> None:
        """Apply the migrations up to ``revision``, like ``tenantctl db upgrade``."""
        # Imported here: serving never needs Alembic (see dispatcher.migrate).
        from dispatcher.migrate import upgrade

        upgrade(self.database, revision)

    # -- the change feed (a ChangeSource) -----------------------------------------

    def changes_since(
        self, generation: int, *, limit: int = 1000
    ) -> list[TenantChange]:
        """Changes committed after ``generation``, oldest first (at most ``limit``)."""
        rows = self.database.read(
            CHANGES_SINCE, {"generation": generation, "limit": limit}
        )
        return changes(rows)

    def latest_generation(self) -> int:
        """The generation of the newest change, or 0 if there is none."""
        return int(self.database.read(LATEST_GENERATION)[0][0])

    def recent_changes(self, limit: int = 10) -> list[TenantChange]:
        """The newest ``limit`` changes, newest first."""
        return changes(self.database.read(RECENT_CHANGES, {"limit": limit}))

    def prune_feed(
        self,
        retention: FeedRetention | None = None,
        *,
        now: datetime | None = None,
    ) -> Pruned:
        """Remove the changes ``retention`` (else this registry's, else the
        default) no longer keeps, now and all of them; the newest always stays.

        A follower that had not read a removed change resynchronises (see
        :mod:`dispatcher.retention`). ``now``: the time ages count from.
        """
        retention = retention or self.retention or DEFAULT_RETENTION
        return prune(self.database, retention, now=now)

    # -- reads ---------------------------------------------------------------------

    def get_tenant(self, slug: str) -> Tenant:
        """The tenant with this slug; raises :class:`TenantNotFound`."""
        tenant = self._find(BY_SLUG, slug.strip().lower())
        if tenant is None:
            raise TenantNotFound(f"no tenant has the slug {slug!r}")
        return tenant

    def find_by_slug(self, slug: str) -> Tenant | None:
        """The tenant with this slug (normalised), or None."""
        return self._find(BY_SLUG, slug)

    def find_by_host(self, host: str) -> Tenant | None:
        """The tenant whose custom domain is exactly ``host`` (normalised)."""
        return self._find(BY_HOST, host)

    def find_by_host_or_subdomain(self, host: str, label: str) -> Tenant | None:
        """The tenant with custom domain ``host``, else with subdomain ``label``.

        One query for the dispatcher's miss path on ``<label>.<base domain>``.
        """
        found = snapshots(
            self.database.read(BY_HOST_OR_SUBDOMAIN, {"key": host, "label": label})
        )
        # A custom domain wins over a subdomain, as in the resolution order.
        for tenant in found:
            if host in tenant.domains:
                return tenant
        return found[0] if found else None

    def find_by_subdomain(self, label: str) -> Tenant | None:
        """The tenant routed by this subdomain label (normalised)."""
        return self._find(BY_SUBDOMAIN, label)

    def find_by_path_prefix(self, prefix: str) -> Tenant | None:
        """The tenant routed by this first path segment (normalised)."""
        return self._find(BY_PATH_PREFIX, prefix)

    def list_tenants(self, status: TenantStatus | str | None = None) -> list[Tenant]:
        """All tenants ordered by slug, optionally only those with ``status``."""
        statement = SNAPSHOTS
        if status is not None:
            statement = statement.where(tenant_table.c.status == TenantStatus(status))
        return snapshots(self.database.read(statement))

    def count_by_data_server(self) -> dict[str | None, int]:
        """How many tenants each data server holds, in one query; the key
        None counts the tenants with no server recorded. Servers that hold
        no tenant are absent: the registry does not know the configured ones.
        """
        rows = self.database.read(COUNT_BY_DATA_SERVER)
        return {row.data_server: int(row.tenants) for row in rows}

    def count_by_status(self) -> dict[TenantStatus, int]:
        """How many tenants have each status (0 included), in one query."""
        counts = dict.fromkeys(TenantStatus, 0)
        for row in self.database.read(COUNT_BY_STATUS):
            counts[TenantStatus(row.status)] = int(row.tenants)
        return counts

    def count_in_maintenance(self) -> int:
        """How many tenants are in maintenance mode, whatever their status."""
        return int(self.database.read(COUNT_IN_MAINTENANCE)[0][0])

    def schema_revisions(self) -> tuple[str, ...]:
        """The revisions the registry's schema is at, as Alembic recorded
        them; none if it was never migrated (``migrate.schema_state`` says
        how they compare with this code's)."""
        try:
            rows = self.database.read(SCHEMA_REVISIONS)
        except SchemaMissing:
            return ()
        return tuple(sorted(row.version_num for row in rows))

    def _find(self, statement: Select[Any], key: str) -> Tenant | None:
        found = snapshots(self.database.read(statement, {"key": key}))
        return found[0] if found else None

    # -- writes --------------------------------------------------------------------

    def new_tenant(self, slug: str, **fields: Unpack[TenantFields]) -> NewTenant:
        """Validate and normalise a tenant to create; raises ``InvalidName``.

        The keywords are those of :class:`~dispatcher.tenant.TenantFields`
        (``owner_email`` is required), as for :meth:`create_tenant`.
        """
        return self.rules.new_tenant(slug, **fields)

    def create_tenant(
        self,
        slug: str,
        *,
        disabled_reason: str | None = None,
        allow_existing_owner: bool = True,
        **fields: Unpack[TenantFields],
    ) -> Tenant:
        """Create a tenant (and its owner, if new); the first domain is primary.

        ``registry.create_tenant("acme", owner_email=..., subdomain="acme")``:
        the keywords of :class:`~dispatcher.tenant.TenantFields`. With
        ``disabled_reason`` the tenant starts disabled, for example while
        provisioning hooks prepare it. With ``allow_existing_owner=False`` (a
        public signup, which has no proof that the caller controls the
        address) an owner e-mail that already has an account, in any spelling,
        raises :class:`OwnerExists` and nothing is written.
        """
        from dispatcher.models import Domain as DomainRow
        from dispatcher.models import Tenant as TenantRow

        spec = self.new_tenant(slug, **fields)
        with self._transaction() as tx:
            tx.check_free(spec)
            owner = tx.owner(
                spec.owner_email, spec.owner_name, existing=allow_existing_owner
            )
            row = TenantRow(
                slug=spec.slug,
                owner=owner,
                subdomain=spec.subdomain,
                path_prefix=spec.path_prefix,
                config=thaw(spec.config),
                data_server=spec.data_server,
                status=(
                    TenantStatus.ACTIVE
                    if disabled_reason is None
                    else TenantStatus.DISABLED
                ),
                disabled_reason=_clean_text(disabled_reason),
                domains=[
                    DomainRow(host=host, is_primary=index == 0)
                    for index, host in enumerate(spec.domains)
                ],
            )
            tx.session.add(row)
            tx.record(row, Operation.CREATED, added=Names.of(spec))
            row.created_at = row.updated_at
            return tx.snapshot(row)

    def update_config(
        self, slug: str, mapping: Mapping[str, Any], *, replace: bool = False
    ) -> Tenant:
        """Merge ``mapping`` into the tenant's config (or replace it entirely)."""
        updates = check_config(mapping)
        with self._transaction() as tx:
            row = tx.tenant(slug)
            config = updates if replace else {**row.config, **updates}
            check_config(config)
            _set_config(tx, row, config)
            return tx.snapshot(row)

    def unset_config(self, slug: str, *keys: str) -> Tenant:
        """Remove ``keys`` from the tenant's config; absent keys are ignored."""
        with self._transaction() as tx:
            row = tx.tenant(slug)
            _set_config(tx, row, {k: v for k, v in row.config.items() if k not in keys})
            return tx.snapshot(row)

    def disable_tenant(self, slug: str, reason: str | None = None) -> Tenant:
        """Stop serving the tenant; requests get the disabled answer.

        ``reason`` None keeps the reason a disabled tenant has (disabling it
        again says nothing new about why); ``""`` clears it.
        """
        if reason is None:
            return self._set_status(slug, TenantStatus.DISABLED, None, keep=True)
        return self._set_status(slug, TenantStatus.DISABLED, _clean_text(reason))

    def enable_tenant(self, slug: str) -> Tenant:
        """Serve a disabled tenant again."""
        return self._set_status(slug, TenantStatus.ACTIVE, None)

    def _set_status(
        self, slug: str, status: TenantStatus, reason: str | None, *, keep: bool = False
    ) -> Tenant:
        with self._transaction() as tx:
            row = tx.tenant(slug)
            if keep and row.status is status:
                reason = row.disabled_reason
            if row.status is not status or row.disabled_reason != reason:
                row.status = status
                row.disabled_reason = reason
                tx.record(row, _STATUS_CHANGES[status])
            return tx.snapshot(row)

    def set_data_server(self, slug: str, server: str | None) -> Tenant:
        """Record that the server named ``server`` (or none) holds the tenant's data.

        Only the record: moving the data is the caller's (``TenantData``'s)
        work, which checks that the server is configured. The change makes
        every process evict the tenant's app, whose engine points at the old
        server. Recording the same server again writes nothing.
        """
        server = check_data_server(server)
        with self._transaction() as tx:
            row = tx.tenant(slug)
            if row.data_server != server:
                row.data_server = server
                tx.record(row, Operation.DATA_SERVER)
            return tx.snapshot(row)

    def delete_tenant(self, slug: str, *, delete_owner: bool = False) -> None:
        """Delete the tenant and its domains; its owner's account stays unless
        ``delete_owner`` is set and the owner has no other tenant.

        ``delete_owner`` undoes a signup that created the account: a retry
        with the same address must not be refused as an existing owner.
        """
        with self._transaction() as tx:
            row = tx.tenant(slug)
            owner = row.owner
            hosts = tuple(domain.host for domain in row.domains)
            removed = Names(row.subdomain, row.path_prefix, hosts)
            tx.record(row, Operation.DELETED, removed=removed)
            tx.session.delete(row)
            if delete_owner:
                tx.session.flush()
                others = select(tenant_table.c.id).where(
                    tenant_table.c.owner_id == owner.id
                )
                if tx.session.scalars(others.limit(1)).first() is None:
                    tx.session.delete(owner)

    def set_subdomain(self, slug: str, subdomain: str | None) -> Tenant:
        """Route the tenant by this subdomain label, or by none."""
        label = self.rules.label(subdomain, "subdomain")
        return self._set_label(slug, "subdomain", label, Operation.SUBDOMAIN)

    def set_path_prefix(self, slug: str, path_prefix: str | None) -> Tenant:
        """Route the tenant by this first path segment, or by none."""
        label = self.rules.label(path_prefix, "path prefix")
        return self._set_label(slug, "path_prefix", label, Operation.PATH_PREFIX)

    def _set_label(
        self,
        slug: str,
        column: Literal["subdomain", "path_prefix"],
        label: str | None,
        operation: Operation,
    ) -> Tenant:
        with self._transaction() as tx:
            row = tx.tenant(slug)
            old: str | None = getattr(row, column)
            if label != old:
                added, removed = _names(column, label), _names(column, old)
                tx.check_free(
                    NewTenant(row.slug, "", None, added.subdomain, added.path_prefix),
                    exists=True,
                )
                setattr(row, column, label)
                tx.record(row, operation, added, removed=removed)
            return tx.snapshot(row)

    def add_domain(self, slug: str, host: str, *, primary: bool = False) -> Tenant:
        """Route ``host`` to the tenant; its first domain becomes the primary one."""
        from dispatcher.models import Domain as DomainRow

        host = self.rules.domain(host)
        with self._transaction() as tx:
            row = tx.tenant(slug)
            current = {domain.host: domain for domain in row.domains}
            if host not in current:
                self.rules.check_domain_count(row.slug, len(current) + 1)
                tx.check_free(NewTenant(row.slug, "", domains=(host,)), exists=True)
            make_primary = primary or not current
            if host in current and (current[host].is_primary or not make_primary):
                return tx.snapshot(row)
            if make_primary:
                for domain in row.domains:
                    domain.is_primary = False
                # The partial unique index allows one primary: clear before setting.
                tx.session.flush()
            if host in current:
                current[host].is_primary = True
            else:
                row.domains.append(DomainRow(host=host, is_primary=make_primary))
            tx.record(row, Operation.DOMAIN_ADDED, Names(domains=(host,)))
            return tx.snapshot(row)

    def remove_domain(self, slug: str, host: str) -> Tenant:
        """Stop routing ``host`` to the tenant; another domain becomes primary."""
        # Not rules.domain(): a domain that breaks today's rules can still go.
        host = normalise_domain(host)
        with self._transaction() as tx:
            row = tx.tenant(slug)
            domain = next((d for d in row.domains if d.host == host), None)
            if domain is None:
                raise TenantNotFound(f"tenant {row.slug!r} has no domain {host!r}")
            row.domains.remove(domain)
            if domain.is_primary and row.domains:
                tx.session.flush()
                min(row.domains, key=lambda d: d.id).is_primary = True
            tx.record(row, Operation.DOMAIN_REMOVED, removed=Names(domains=(host,)))
            return tx.snapshot(row)

    # -- maintenance mode (see dispatcher.maintenance) ----------------------------

    def start_maintenance(
        self,
        slug: str,
        *,
        retry_after: int = MAINTENANCE_RETRY_AFTER,
        message: str | None = None,
        opened_by: str | None = None,
    ) -> tuple[Tenant, str]:
        """Put the tenant in maintenance mode: its visitors get 503.

        Returns its snapshot and a new one-time bypass token (only its hash is
        stored): the URL :func:`dispatcher.maintenance.bypass_url` makes of it
        lets one browser through. Calling it again keeps the window (and the
        cookies it signed) and replaces the message, delay and token.
        ``opened_by`` names the tool opening it; None (an operator) makes the
        window the operator's, which no tool ends.
        """
        from dispatcher.maintenance import start

        with self._transaction() as tx:
            return start(
                tx, slug, retry_after=retry_after, message=message, opened_by=opened_by
            )

    def end_maintenance(self, slug: str, *, opened_by: str | None = None) -> Tenant:
        """Serve the tenant normally again; every bypass cookie becomes worthless.
        With ``opened_by``, only if that tool opened the window."""
        from dispatcher.maintenance import end

        with self._transaction() as tx:
            return end(tx, slug, opened_by=opened_by)

    def redeem_bypass(self, slug: str, token: str) -> bool:
        """Spend the tenant's one-time bypass token: True once, for the right
        token while the tenant is in maintenance; False otherwise."""
        from dispatcher.maintenance import redeem

        with self._transaction() as tx:
            return redeem(tx, slug, token)

    # -- the data-migration ledger (see dispatcher.ledger) -----------------------

    def data_ledger(self, *, behind: str | None = None) -> list[LedgerEntry]:
        """Each tenant's ledger entry, by slug, in one query; with ``behind``
        (a target revision) only those not recorded at it, or whose upgrade
        may still be in flight."""
        from dispatcher.ledger import read_ledger

        return read_ledger(self.database, behind)

    def mark_data_upgrading(self, slugs: Collection[str], target: str) -> None:
        """Record that an upgrade of these tenants to ``target`` may be in flight."""
        from dispatcher.ledger import mark_upgrading

        with self._transaction() as tx:
            mark_upgrading(tx, slugs, target)

    def record_data_results(self, results: Iterable[DataResult]) -> None:
        """Record upgrades' outcomes in one transaction; a tenant whose data
        changed revision gets a change, so every process rebuilds its app."""
        from dispatcher.ledger import record_results

        with self._transaction() as tx:
            record_results(tx, results)

    def import_tenants(
        self, specs: Iterable[NewTenant], *, batch_size: int = 500
    ) -> Iterator[ImportResult]:
        """Create many tenants, a transaction per batch; results in input order.

        Idempotent: a tenant that already exists with the same settings is
        ``UNCHANGED``; one that exists differently, or whose names are taken,
        is a ``CONFLICT`` and is not written. Other tenants of the batch are.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        iterator = iter(specs)
        while batch := list(islice(iterator, batch_size)):
            # Specs from new_tenant() passed this already; one built by hand may not.
            for spec in batch:
                for host in spec.domains:
                    self.rules.check_outside_base(host)
            with self._transaction() as tx:
                results = import_batch(tx, self.rules, batch)
            yield from results

    @contextmanager
    def _transaction(self) -> Iterator[Transaction]:
        """One serialised write transaction; publishes its changes after commit."""
        # Imported here, with the ORM it loads: serving only reads.
        from dispatcher.writes import Transaction

        refused: IntegrityError | None = None
        with self.database.write() as session:
            tx = Transaction(session)
            try:
                yield tx
                if tx.changes and self.notifier is not None:
                    # Sent at commit, never for a write that rolls back.
                    self.notifier.notify(
                        session.connection(), tx.changes[-1].generation
                    )
                session.commit()
            except IntegrityError as e:
                refused = e
        if refused is not None:
            # Rolled back; a new transaction finds out which name was taken.
            with self.database.write() as session:
                raise tx.conflict(session, refused) from refused
        self.feed.published(tx.changes)
        if tx.changes and self._pruner is not None:
            # After the commit, outside the write lock; never fails the write.
            self._pruner.after_commit(tx.changes[-1].generation)


_STATUS_CHANGES = {
    TenantStatus.ACTIVE: Operation.ENABLED,
    TenantStatus.DISABLED: Operation.DISABLED,
}


def _check_notifier(notifier: object) -> None:
    # Taken as is, a wrong one would fail every write, inside its transaction.
    if notifier is None or (isinstance(notifier, str) and notifier == "auto"):
        return
    if not (
        callable(getattr(notifier, "notify", None))
        and callable(getattr(notifier, "listen", None))
    ):
        raise TypeError(
            "notifier must be a Notifier (with notify() and listen()), 'auto'"
            f" or None, not {notifier!r}"
        )


def _set_config(tx: Transaction, row: TenantRow, config: dict[str, Any]) -> None:
    from sqlalchemy.orm.attributes import flag_modified

    if not json_equal(config, row.config):
        row.config = config
        # The ORM compares with ==, where True == 1: say it changed.
        flag_modified(row, "config")
        tx.record(row, Operation.CONFIG)


def _names(column: Literal["subdomain", "path_prefix"], label: str | None) -> Names:
    if column == "subdomain":
        return Names(subdomain=label)
    return Names(path_prefix=label)


def _clean_text(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None
