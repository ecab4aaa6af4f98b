"""The tenant registry: the one module that speaks SQL.

Usage::

    registry = TenantRegistry("sqlite:///dispatcher.sqlite3")
    registry.migrate()
    registry.create_tenant("acme", owner_email="owner@acme.test", subdomain="acme")
    registry.find_by_subdomain("acme")  # -> Tenant snapshot, or None

Reads return immutable :class:`~dispatcher.tenant.Tenant` snapshots, never ORM rows,
so nothing outside this module holds a session. Every write runs in one
transaction that also appends to the change feed (``tenant_changes``); writes are
serialised (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on PostgreSQL) so
generations are handed out in commit order and a follower reading
``generation > G`` never skips a change that commits late.

No call waits without bound (``timeout``, 5 s by default): a read blocked by a
lock (a migration's ``ALTER TABLE``, ``LOCK TABLE``), a full pool or a server
that does not accept the connection raises :class:`RegistryUnavailable` after
about ``timeout`` seconds. On PostgreSQL each read runs in a transaction that
begins with ``SET LOCAL statement_timeout`` and ``lock_timeout``: settings that
travel with the transaction, so they hold behind PgBouncer in transaction mode
too (a ``SET`` at connect, or ``options=-c ...``, which PgBouncer refuses,
would not). Writes wait longer for each other: ``write_timeout``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import StrEnum
from importlib.resources import files
from itertools import groupby, islice
from typing import Any, Literal, cast

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    Executable,
    Row,
    Select,
    String,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    make_url,
    or_,
    select,
    text,
)
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.attributes import flag_modified

from dispatcher import forks
from dispatcher.changes import NO_NAMES, Names, Notifier, Operation, TenantChange
from dispatcher.exceptions import (
    Conflict,
    DomainTaken,
    InvalidName,
    OwnerExists,
    RegistryUnavailable,
    SchemaMissing,
    TenantExists,
    TenantNotFound,
    TooManyDomains,
)
from dispatcher.models import Change as ChangeRow
from dispatcher.models import Domain as DomainRow
from dispatcher.models import Tenant as TenantRow
from dispatcher.models import TenantStatus
from dispatcher.models import User as UserRow
from dispatcher.notify import PostgresNotifier, connect_timeout
from dispatcher.pubsub import ChangeHub
from dispatcher.resolve import normalise_base_domain
from dispatcher.tenant import NewTenant, Tenant, aware, freeze, thaw, utcnow
from dispatcher.validation import (
    DEFAULT_RESERVED,
    check_config,
    json_equal,
    normalise_domain,
    normalise_email,
    normalise_label,
    normalise_owner_name,
)

__all__ = ["ImportResult", "ImportStatus", "TenantRegistry", "alembic_config"]

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process.
_WRITE_LOCK_KEY = 0x7E4A47_5EED
#: Custom domains one tenant may have: every lookup returns them all.
DEFAULT_MAX_DOMAINS = 100
#: Seconds a read may wait for a lock, a pooled connection or a connect.
DEFAULT_TIMEOUT = 5.0
#: Writes queue behind each other (and behind migrations); they may wait at
#: least this long.
MIN_WRITE_TIMEOUT = 30.0

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
    DomainRow.host,
)
# One row per domain (or one row with host NULL): a snapshot in one query.
_SNAPSHOTS: Select[Any] = (
    select(*_COLUMNS)
    .join(UserRow, UserRow.id == TenantRow.owner_id)
    .outerjoin(DomainRow, DomainRow.tenant_id == TenantRow.id)
    .order_by(TenantRow.slug, DomainRow.is_primary.desc(), DomainRow.host)
)
_CHANGES = cast(Table, ChangeRow.__table__)
_KEY = bindparam("key", type_=String())
_BY_SLUG = _SNAPSHOTS.where(TenantRow.slug == _KEY)
_BY_SUBDOMAIN = _SNAPSHOTS.where(TenantRow.subdomain == _KEY)
_BY_PATH_PREFIX = _SNAPSHOTS.where(TenantRow.path_prefix == _KEY)
_matched_domain = aliased(DomainRow)
_TENANT_OF_HOST = (
    select(_matched_domain.tenant_id)
    .where(_matched_domain.host == _KEY)
    .scalar_subquery()
)
_BY_HOST = _SNAPSHOTS.where(TenantRow.id == _TENANT_OF_HOST)
# A custom domain or a subdomain in one statement; both sides use an index.
_BY_HOST_OR_SUBDOMAIN = _SNAPSHOTS.where(
    or_(
        TenantRow.id == _TENANT_OF_HOST,
        TenantRow.subdomain == bindparam("label", type_=String()),
    )
)


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the bundled migrations, bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(files("dispatcher.migrations")))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


class ImportStatus(StrEnum):
    CREATED = "created"
    UNCHANGED = "unchanged"
    CONFLICT = "conflict"


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What :meth:`TenantRegistry.import_tenants` did with one requested tenant."""

    spec: NewTenant
    status: ImportStatus
    error: Conflict | None = None


class TenantRegistry:
    """Tenants, their owners and domains, in a SQL database.

    :param url_or_engine: a SQLAlchemy URL (``sqlite:///file``,
        ``postgresql+psycopg://...``) or an :class:`~sqlalchemy.Engine`.
    :param reserved: labels no tenant may use as subdomain or path prefix.
    :param notifier: wakes every process's change follower at each commit
        (:class:`~dispatcher.notify.PostgresNotifier`, which ``"auto"`` picks
        on PostgreSQL); None: followers only poll (SQLite always does).
    :param base_domain: the dispatcher's base domain (tenants are served as
        ``<subdomain>.<base_domain>``); a custom domain equal to it or under it
        is refused, so it can never take over another tenant's subdomain or a
        reserved one. None: no such check (the dispatcher routes no subdomains).
    :param max_domains: how many custom domains one tenant may have; a lookup
        reads all of a tenant's domains, so this bounds its cost.
    :param timeout: seconds a read may wait (for a lock, a pooled connection,
        a connect, a statement) before it raises :class:`RegistryUnavailable`,
        so a request gets 503 instead of hanging a worker. Writes may wait
        ``max(timeout, 30)`` seconds. For a given Engine only the statement and
        lock waits apply: its pool and connect timeouts are its own.
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
    ) -> None:
        self.timeout = _check_timeout(timeout)
        self.write_timeout = max(self.timeout, MIN_WRITE_TIMEOUT)
        if isinstance(url_or_engine, Engine):
            engine = url_or_engine
            self._owns_engine = False
        elif isinstance(url_or_engine, str | URL):
            engine = _create_engine(url_or_engine, self.timeout)
            self._owns_engine = True
        else:
            raise TypeError(
                "TenantRegistry needs a database URL or an Engine, "
                f"not {type(url_or_engine).__name__}"
            )
        if isinstance(reserved, str):
            raise TypeError("reserved must be a collection of labels, not a string")
        self.reserved = frozenset(label.lower() for label in reserved)
        self.base_domain = normalise_base_domain(base_domain)
        self.max_domains = _check_max_domains(max_domains)
        self.engine = engine
        if notifier == "auto":
            notifier = None
            if self._is_postgres:
                notifier = PostgresNotifier(engine.url, timeout=self.timeout)
        #: Wakes every process's follower at each commit; None: they poll.
        self.notifier: Notifier | None = notifier
        #: Subscribe here to hear this registry's writes (at once) and, once
        #: following, every other process's (see ChangeHub.follow).
        self.feed = ChangeHub(self, notifier)
        # One hook per process for all registries: see _forked.
        forks.on_fork_in_child(self, TenantRegistry._forked)

    def _forked(self) -> None:
        """In a forked child: drop the parent's pooled connections."""
        # close=False: the parent still owns those sockets.
        self.engine.dispose(close=False)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine; assigning one reconfigures the registry for it."""
        return self._engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        self._engine = engine
        self._is_postgres = engine.dialect.name == "postgresql"
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)
        read_ms, write_ms = _ms(self.timeout), _ms(self.write_timeout)
        # Same pool; the option makes SQLite take the write lock at BEGIN.
        self._writer = engine.execution_options(
            dispatcher_write=True, dispatcher_busy_ms=write_ms
        )
        # Reads are single statements: autocommit lets _read send BEGIN with
        # the SET LOCALs in one round trip on PostgreSQL. On SQLite the
        # connections are already in autocommit mode (see _sqlite_connect):
        # just skip BEGIN, and wait for a lock at most the read timeout.
        if engine.dialect.name == "sqlite":
            self._reader = engine.execution_options(
                dispatcher_read=True, dispatcher_busy_ms=read_ms
            )
        else:
            self._reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        # Trusted integers only: this runs as one simple-protocol query.
        self._begin_read = (
            f"BEGIN; SET LOCAL statement_timeout = {read_ms}; "
            f"SET LOCAL lock_timeout = {read_ms}"
        )

    def __repr__(self) -> str:
        return f"<TenantRegistry {self.url}>"

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Stop following changes; close pooled connections of an owned engine."""
        self.feed.close()
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> TenantRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- schema ------------------------------------------------------------------

    def migrate(self, revision: str = "head") -> None:
        """Apply the migrations up to ``revision``, like ``tenantctl db upgrade``."""
        with self._errors(), self._writer.begin() as connection:
            # A migration's DDL may take long; its waits for locks may not.
            self._lock_writes(connection, statement_timeout=0)
            try:
                command.upgrade(alembic_config(connection), revision)
            except CommandError as e:
                raise ValueError(f"cannot upgrade to revision {revision!r}: {e}") from e

    # -- the change feed (a ChangeSource) -----------------------------------------

    def changes_since(
        self, generation: int, *, limit: int = 1000
    ) -> list[TenantChange]:
        """Changes committed after ``generation``, oldest first (at most ``limit``)."""
        statement = (
            select(
                ChangeRow.generation,
                ChangeRow.slug,
                ChangeRow.operation,
                ChangeRow.names,
            )
            .where(ChangeRow.generation > generation)
            .order_by(ChangeRow.generation)
            .limit(limit)
        )
        return [
            TenantChange.from_row(row.generation, row.slug, row.operation, row.names)
            for row in self._read(statement)
        ]

    def latest_generation(self) -> int:
        """The generation of the newest change, or 0 if there is none."""
        statement = select(func.coalesce(func.max(ChangeRow.generation), 0))
        return int(self._read(statement)[0][0])

    # -- reads ---------------------------------------------------------------------

    def get_tenant(self, slug: str) -> Tenant:
        """The tenant with this slug; raises :class:`TenantNotFound`."""
        tenant = self._find(_BY_SLUG, slug.strip().lower())
        if tenant is None:
            raise TenantNotFound(f"no tenant has the slug {slug!r}")
        return tenant

    def find_by_slug(self, slug: str) -> Tenant | None:
        """The tenant with this slug (normalised), or None."""
        return self._find(_BY_SLUG, slug)

    def find_by_host(self, host: str) -> Tenant | None:
        """The tenant whose custom domain is exactly ``host`` (normalised)."""
        return self._find(_BY_HOST, host)

    def find_by_host_or_subdomain(self, host: str, label: str) -> Tenant | None:
        """The tenant with custom domain ``host``, else with subdomain ``label``.

        One query for the dispatcher's miss path on ``<label>.<base domain>``.
        """
        found = _snapshots(
            self._read(_BY_HOST_OR_SUBDOMAIN, {"key": host, "label": label})
        )
        # A custom domain wins over a subdomain, as in the resolution order.
        for tenant in found:
            if host in tenant.domains:
                return tenant
        return found[0] if found else None

    def find_by_subdomain(self, label: str) -> Tenant | None:
        """The tenant routed by this subdomain label (normalised)."""
        return self._find(_BY_SUBDOMAIN, label)

    def find_by_path_prefix(self, prefix: str) -> Tenant | None:
        """The tenant routed by this first path segment (normalised)."""
        return self._find(_BY_PATH_PREFIX, prefix)

    def list_tenants(self, status: TenantStatus | str | None = None) -> list[Tenant]:
        """All tenants ordered by slug, optionally only those with ``status``."""
        statement = _SNAPSHOTS
        if status is not None:
            statement = statement.where(TenantRow.status == TenantStatus(status))
        return _snapshots(self._read(statement))

    def _find(self, statement: Select[Any], key: str) -> Tenant | None:
        found = _snapshots(self._read(statement, {"key": key}))
        return found[0] if found else None

    def _read(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """Run a read; once more on a fresh connection if the pooled one was dead.

        A database restart kills every pooled connection; the first use of one
        invalidates the pool, and the retry connects anew. This replaces a
        pre-ping round trip on every checkout.
        """
        with self._errors():
            try:
                return self._read_once(statement, parameters)
            except DBAPIError as e:
                if not e.connection_invalidated:
                    raise
            return self._read_once(statement, parameters)

    def _read_once(
        self, statement: Executable, parameters: Mapping[str, Any] | None
    ) -> Sequence[Row[Any]]:
        with self._reader.connect() as connection:
            if not self._is_postgres:
                return connection.execute(statement, parameters).all()
            # The timeouts travel with this transaction, not with the session.
            connection.exec_driver_sql(self._begin_read)
            try:
                rows = connection.execute(statement, parameters).all()
            except BaseException:
                _roll_back_quietly(connection)
                raise
            connection.exec_driver_sql("COMMIT")
            return rows

    # -- validation ----------------------------------------------------------------

    def new_tenant(
        self,
        slug: str,
        *,
        owner_email: str,
        owner_name: str | None = None,
        subdomain: str | None = None,
        path_prefix: str | None = None,
        domains: Iterable[str] = (),
        config: Mapping[str, Any] | None = None,
    ) -> NewTenant:
        """Validate and normalise a tenant to create; raises ``InvalidName``."""
        if isinstance(domains, str):
            raise TypeError("domains must be a collection of host names, not a string")
        hosts = tuple(dict.fromkeys(normalise_domain(host) for host in domains))
        for host in hosts:
            self._check_outside_base(host)
        slug = normalise_label(slug, what="slug")
        self._check_domain_count(slug, len(hosts))
        return NewTenant(
            slug=slug,
            owner_email=normalise_email(owner_email),
            owner_name=normalise_owner_name(owner_name),
            subdomain=self._label(subdomain, "subdomain"),
            path_prefix=self._label(path_prefix, "path prefix"),
            domains=hosts,
            config=freeze(check_config(config or {})),
        )

    def _check_domain_count(self, slug: str, count: int) -> None:
        if count > self.max_domains:
            raise TooManyDomains(
                f"tenant {slug!r} would have {count} custom domains; the limit "
                f"is {self.max_domains} (TenantRegistry's max_domains)"
            )

    def _check_outside_base(self, host: str) -> None:
        """Refuse a custom domain that would shadow ``<label>.<base_domain>``."""
        base = self.base_domain
        if base is None:
            return
        if host == base:
            raise InvalidName(
                f"host name {host!r} is the base domain {base!r}; "
                "a custom domain must lie outside it"
            )
        if host.endswith("." + base):
            raise InvalidName(
                f"host name {host!r} is under the base domain {base!r}; "
                "use a subdomain instead"
            )

    def _label(self, value: str | None, what: str) -> str | None:
        if value is None:
            return None
        return normalise_label(value, what=what, reserved=self.reserved)

    # -- writes --------------------------------------------------------------------

    def create_tenant(
        self,
        slug: str,
        *,
        owner_email: str,
        owner_name: str | None = None,
        subdomain: str | None = None,
        path_prefix: str | None = None,
        domains: Iterable[str] = (),
        config: Mapping[str, Any] | None = None,
        disabled_reason: str | None = None,
        allow_existing_owner: bool = True,
    ) -> Tenant:
        """Create a tenant (and its owner, if new); the first domain is primary.

        With ``disabled_reason`` the tenant starts disabled, for example while
        provisioning hooks prepare it. With ``allow_existing_owner=False`` (a
        public signup, which has no proof that the caller controls the
        address) an owner e-mail that already has an account, in any spelling,
        raises :class:`OwnerExists` and nothing is written.
        """
        spec = self.new_tenant(
            slug,
            owner_email=owner_email,
            owner_name=owner_name,
            subdomain=subdomain,
            path_prefix=path_prefix,
            domains=domains,
            config=config,
        )
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
            if not json_equal(config, row.config):
                row.config = config
                # The ORM compares with ==, where True == 1: say it changed.
                flag_modified(row, "config")
                tx.record(row, Operation.CONFIG)
            return tx.snapshot(row)

    def unset_config(self, slug: str, *keys: str) -> Tenant:
        """Remove ``keys`` from the tenant's config; absent keys are ignored."""
        with self._transaction() as tx:
            row = tx.tenant(slug)
            config = {k: v for k, v in row.config.items() if k not in keys}
            if not json_equal(config, row.config):
                row.config = config
                # The ORM compares with ==, where True == 1: say it changed.
                flag_modified(row, "config")
                tx.record(row, Operation.CONFIG)
            return tx.snapshot(row)

    def disable_tenant(self, slug: str, reason: str | None = None) -> Tenant:
        """Stop serving the tenant; requests get the disabled answer."""
        reason = _clean_text(reason)
        with self._transaction() as tx:
            row = tx.tenant(slug)
            if row.status is not TenantStatus.DISABLED or row.disabled_reason != reason:
                row.status = TenantStatus.DISABLED
                row.disabled_reason = reason
                tx.record(row, Operation.DISABLED)
            return tx.snapshot(row)

    def enable_tenant(self, slug: str) -> Tenant:
        """Serve a disabled tenant again."""
        with self._transaction() as tx:
            row = tx.tenant(slug)
            if row.status is not TenantStatus.ACTIVE:
                row.status = TenantStatus.ACTIVE
                row.disabled_reason = None
                tx.record(row, Operation.ENABLED)
            return tx.snapshot(row)

    def delete_tenant(self, slug: str) -> None:
        """Delete the tenant and its domains; its owner's account stays."""
        with self._transaction() as tx:
            row = tx.tenant(slug)
            hosts = tuple(domain.host for domain in row.domains)
            removed = Names(row.subdomain, row.path_prefix, hosts)
            tx.record(row, Operation.DELETED, removed=removed)
            tx.session.delete(row)

    def set_subdomain(self, slug: str, subdomain: str | None) -> Tenant:
        """Route the tenant by this subdomain label, or by none."""
        label = self._label(subdomain, "subdomain")
        with self._transaction() as tx:
            row = tx.tenant(slug)
            if label != row.subdomain:
                tx.check_free(NewTenant(row.slug, "", subdomain=label), exists=True)
                removed = Names(subdomain=row.subdomain)
                row.subdomain = label
                tx.record(
                    row, Operation.SUBDOMAIN, Names(subdomain=label), removed=removed
                )
            return tx.snapshot(row)

    def set_path_prefix(self, slug: str, path_prefix: str | None) -> Tenant:
        """Route the tenant by this first path segment, or by none."""
        label = self._label(path_prefix, "path prefix")
        with self._transaction() as tx:
            row = tx.tenant(slug)
            if label != row.path_prefix:
                tx.check_free(NewTenant(row.slug, "", path_prefix=label), exists=True)
                removed = Names(path_prefix=row.path_prefix)
                row.path_prefix = label
                tx.record(
                    row,
                    Operation.PATH_PREFIX,
                    Names(path_prefix=label),
                    removed=removed,
                )
            return tx.snapshot(row)

    def add_domain(self, slug: str, host: str, *, primary: bool = False) -> Tenant:
        """Route ``host`` to the tenant; its first domain becomes the primary one."""
        host = normalise_domain(host)
        self._check_outside_base(host)
        with self._transaction() as tx:
            row = tx.tenant(slug)
            current = {domain.host: domain for domain in row.domains}
            if host not in current:
                self._check_domain_count(row.slug, len(current) + 1)
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
            yield from self._import_batch(batch)

    def _import_batch(self, batch: Sequence[NewTenant]) -> list[ImportResult]:
        # Specs from new_tenant() passed this already; one built by hand may not.
        for spec in batch:
            for host in spec.domains:
                self._check_outside_base(host)
        with self._transaction() as tx:
            session = tx.session
            slugs = {spec.slug for spec in batch}
            existing = {
                tenant.slug: tenant
                for tenant in _snapshots(
                    session.execute(_SNAPSHOTS.where(TenantRow.slug.in_(slugs)))
                )
            }
            taken = _Taken.load(session, batch)
            results: list[ImportResult] = []
            accepted: list[NewTenant] = []
            for spec in batch:
                result = self._import_decision(spec, existing.get(spec.slug), taken)
                results.append(result)
                if result.status is ImportStatus.CREATED:
                    accepted.append(spec)
                    taken.claim(spec)
            if accepted:
                tx.bulk_create(accepted)
        return results

    def _import_decision(
        self, spec: NewTenant, existing: Tenant | None, taken: _Taken
    ) -> ImportResult:
        try:
            # A spec built by hand, past new_tenant(), may have too many.
            self._check_domain_count(spec.slug, len(spec.domains))
        except TooManyDomains as e:
            return ImportResult(spec, ImportStatus.CONFLICT, e)
        return _import_decision(spec, existing, taken)

    # -- plumbing ----------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[_Transaction]:
        """One serialised write transaction; publishes its changes after commit."""
        with self._errors(), self._write_session() as session:
            tx = _Transaction(session)
            try:
                yield tx
                if tx.changes and self.notifier is not None:
                    # Sent at commit, never for a write that rolls back.
                    self.notifier.notify(
                        session.connection(), tx.changes[-1].generation
                    )
                session.commit()
            except IntegrityError as e:
                # Only a writer that bypasses the registry's lock gets here.
                raise _conflict(e) from e
        self.feed.published(tx.changes)

    @contextmanager
    def _write_session(self) -> Iterator[Session]:
        """A session in a begun, write-locked transaction, rolled back unless
        committed.

        Nothing is written before the lock is taken, so a pooled connection
        found dead there is replaced once, as for reads.
        """
        for attempt in (1, 2):
            session = Session(self._writer, expire_on_commit=False)
            try:
                session.begin()
                self._lock_writes(session.connection())
                break
            except DBAPIError as e:
                session.close()
                if attempt == 2 or not e.connection_invalidated:
                    raise
        try:
            yield session
        finally:
            session.close()

    def _lock_writes(
        self, connection: Connection, *, statement_timeout: int | None = None
    ) -> None:
        """Bound the transaction's waits, then take the registry's write lock."""
        if not self._is_postgres:
            return  # BEGIN IMMEDIATE took it, waiting at most the busy timeout
        write_ms = _ms(self.write_timeout)
        connection.execute(
            text(
                "SELECT set_config('statement_timeout', :statement, true), "
                "set_config('lock_timeout', :lock, true)"
            ),
            {
                "statement": str(
                    write_ms if statement_timeout is None else statement_timeout
                ),
                "lock": str(write_ms),
            },
        )
        connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": _WRITE_LOCK_KEY}
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn driver errors into the registry's own, naming the database."""
        try:
            yield
        except (OperationalError, ProgrammingError) as e:
            if _is_missing_table(e):
                raise SchemaMissing(
                    f"the database {self.url} has no tenant tables; "
                    "run 'tenantctl db upgrade' first"
                ) from e
            raise RegistryUnavailable(
                f"the database {self.url} is unavailable: {_first_line(e)}"
            ) from e
        except PoolTimeout as e:
            raise RegistryUnavailable(
                f"the database {self.url} has no free connection: {e}"
            ) from e
        except DBAPIError as e:
            # IntegrityError became a Conflict inside the transaction; any
            # other driver error is the database's trouble, not the caller's.
            raise RegistryUnavailable(
                f"the database {self.url} failed: {_first_line(e)}"
            ) from e


class _Transaction:
    """The helpers every write needs, bound to one session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.changes: list[TenantChange] = []

    def tenant(self, slug: str) -> TenantRow:
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
        s = self.session
        if not exists and s.scalar(
            select(TenantRow.id).where(TenantRow.slug == spec.slug)
        ):
            raise TenantExists(f"tenant {spec.slug!r} already exists")
        if spec.subdomain is not None and s.scalar(
            select(TenantRow.id).where(TenantRow.subdomain == spec.subdomain)
        ):
            raise DomainTaken(f"subdomain {spec.subdomain!r} is already taken")
        if spec.path_prefix is not None and s.scalar(
            select(TenantRow.id).where(TenantRow.path_prefix == spec.path_prefix)
        ):
            raise DomainTaken(f"path prefix {spec.path_prefix!r} is already taken")
        if spec.domains:
            host = s.scalar(
                select(DomainRow.host).where(DomainRow.host.in_(spec.domains)).limit(1)
            )
            if host is not None:
                raise DomainTaken(f"host name {host!r} is already taken")

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
        change = TenantChange(0, row.slug, operation, added, removed)
        # Core, not the ORM: an autoflush here would write a new tenant before
        # it has the version this statement hands out.
        generation: int = (
            self.session.connection()
            .execute(
                insert(_CHANGES).returning(_CHANGES.c.generation),
                {
                    "slug": row.slug,
                    "operation": operation,
                    "names": change.names_to_json(),
                    "changed_at": utcnow(),
                },
            )
            .scalar_one()
        )
        row.version = generation
        row.updated_at = utcnow()
        self.changes.append(replace(change, generation=generation))

    def snapshot(self, row: TenantRow) -> Tenant:
        self.session.flush()
        self.session.refresh(row, ["domains"])
        return Tenant(
            slug=row.slug,
            owner_email=row.owner.email,
            owner_name=row.owner.name,
            subdomain=row.subdomain,
            path_prefix=row.path_prefix,
            domains=tuple(domain.host for domain in row.domains),
            config=freeze(row.config),
            status=row.status,
            disabled_reason=row.disabled_reason,
            version=row.version,
            created_at=aware(row.created_at),
            updated_at=aware(row.updated_at),
        )

    def bulk_create(self, specs: Sequence[NewTenant]) -> None:
        """Insert validated, conflict-free tenants with a few batched statements."""
        s = self.session
        emails = {spec.owner_email: spec.owner_name for spec in reversed(specs)}
        owner_ids: dict[str, int] = {
            email: user_id
            for email, user_id in s.execute(
                select(UserRow.email, UserRow.id).where(UserRow.email.in_(emails))
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
                    insert(UserRow).returning(
                        UserRow.email, UserRow.id, sort_by_parameter_order=True
                    ),
                    new_owners,
                )
            )
        changes = [
            TenantChange(0, spec.slug, Operation.CREATED, Names.of(spec))
            for spec in specs
        ]
        generations = s.scalars(
            insert(ChangeRow).returning(
                ChangeRow.generation, sort_by_parameter_order=True
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
            insert(TenantRow).returning(TenantRow.id, sort_by_parameter_order=True),
            [
                {
                    "slug": spec.slug,
                    "owner_id": owner_ids[spec.owner_email],
                    "subdomain": spec.subdomain,
                    "path_prefix": spec.path_prefix,
                    "config": thaw(spec.config),
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
            s.execute(insert(DomainRow), domains)
        self.changes.extend(
            replace(change, generation=generation)
            for change, generation in zip(changes, generations, strict=True)
        )


@dataclass
class _Taken:
    """Names already in use, loaded once per import batch and grown as it goes."""

    slugs: set[str]
    subdomains: set[str]
    path_prefixes: set[str]
    hosts: set[str]

    @classmethod
    def load(cls, session: Session, batch: Sequence[NewTenant]) -> _Taken:
        def existing(column: Any, values: Iterable[str | None]) -> set[str]:
            wanted = {value for value in values if value is not None}
            if not wanted:
                return set()
            return set(session.scalars(select(column).where(column.in_(wanted))))

        return cls(
            slugs=set(),  # existing slugs are handled before this check
            subdomains=existing(TenantRow.subdomain, (s.subdomain for s in batch)),
            path_prefixes=existing(
                TenantRow.path_prefix, (s.path_prefix for s in batch)
            ),
            hosts=existing(DomainRow.host, (h for s in batch for h in s.domains)),
        )

    def conflict(self, spec: NewTenant) -> Conflict | None:
        if spec.slug in self.slugs:
            return TenantExists(f"tenant {spec.slug!r} appears twice")
        if spec.subdomain in self.subdomains:
            return DomainTaken(f"subdomain {spec.subdomain!r} is already taken")
        if spec.path_prefix in self.path_prefixes:
            return DomainTaken(f"path prefix {spec.path_prefix!r} is already taken")
        for host in spec.domains:
            if host in self.hosts:
                return DomainTaken(f"host name {host!r} is already taken")
        return None

    def claim(self, spec: NewTenant) -> None:
        self.slugs.add(spec.slug)
        if spec.subdomain is not None:
            self.subdomains.add(spec.subdomain)
        if spec.path_prefix is not None:
            self.path_prefixes.add(spec.path_prefix)
        self.hosts.update(spec.domains)


def _import_decision(
    spec: NewTenant, existing: Tenant | None, taken: _Taken
) -> ImportResult:
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
    )


def _snapshots(rows: Iterable[Row[Any]]) -> list[Tenant]:
    """Fold the one-row-per-domain result of ``_SNAPSHOTS`` into snapshots."""
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
            )
        )
    return tenants


def _check_max_domains(max_domains: int) -> int:
    if not isinstance(max_domains, int) or isinstance(max_domains, bool):
        raise TypeError(
            f"max_domains must be an integer, not {type(max_domains).__name__}"
        )
    if max_domains < 1:
        raise ValueError(f"max_domains must be at least 1, not {max_domains}")
    return max_domains


def _create_engine(url: str | URL, timeout: float) -> Engine:
    try:
        url = make_url(url)
        options: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql":
            if "connect_timeout" not in url.query:
                options["connect_args"] = {"connect_timeout": connect_timeout(timeout)}
        elif url.get_backend_name() == "sqlite":
            # pysqlite's busy timeout until the first BEGIN sets the read or write
            # one: the connect event's PRAGMAs must not wait longer either.
            options["connect_args"] = {"timeout": timeout}
        # No pre-ping: reads retry once on a dead connection (see _read).
        try:
            return create_engine(url, pool_timeout=timeout, **options)
        except TypeError:
            # A pool that never makes callers wait (SQLite in memory) takes
            # no pool_timeout.
            return create_engine(url, **options)
    except ArgumentError as e:
        raise ValueError(f"database URL {str(url)!r} is not valid: {e}") from e
    except ModuleNotFoundError as e:
        raise ValueError(
            f"database URL {str(url)!r} needs the missing driver {e.name!r}; "
            "for PostgreSQL install the 'postgres' extra"
        ) from e


def _configure_sqlite(engine: Engine) -> None:
    """Make pysqlite transactional the SQLAlchemy way, and writers wait, not fail."""
    # Several registries may share one engine: install the listeners once.
    if not event.contains(engine, "connect", _sqlite_connect):
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # pysqlite's own BEGIN handling breaks SAVEPOINT and defers locks; emit our own.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # A write takes the lock at BEGIN, so two writers queue instead of one of
    # them failing to upgrade a read lock half-way through.
    options = connection.get_execution_options()
    busy_ms = options.get("dispatcher_busy_ms")
    if busy_ms is not None and connection.info.get("dispatcher_busy_ms") != busy_ms:
        # Reads give up soon; writes, queued behind each other, wait longer.
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(busy_ms)}")
        connection.info["dispatcher_busy_ms"] = busy_ms
    if options.get("dispatcher_write"):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif not options.get("dispatcher_read"):
        connection.exec_driver_sql("BEGIN")


def _roll_back_quietly(connection: Connection) -> None:
    """End a failed read's transaction; a dead connection is the pool's to drop."""
    try:
        connection.exec_driver_sql("ROLLBACK")
    except DBAPIError:
        log.debug("rolling back a failed read failed", exc_info=True)


def _check_timeout(timeout: float) -> float:
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise TypeError(
            f"timeout must be a number of seconds, not {type(timeout).__name__}"
        )
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(
            f"timeout must be a positive, finite number of seconds, not {timeout!r}"
        )
    return float(timeout)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _is_missing_table(error: DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) == "42P01" or "no such table" in str(
        error.orig
    )


def _conflict(error: IntegrityError) -> Conflict:
    message = str(error.orig)
    if "slug" in message:
        return TenantExists(f"a tenant with that slug already exists ({message})")
    return DomainTaken(f"a name of that tenant is already taken ({message})")


def _first_line(error: DBAPIError) -> str:
    return str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else ""


def _clean_text(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return value or None
