"""Tenant data: each tenant's own schema (PostgreSQL) or file (SQLite).

Usage::

    from dispatcher.data import TenantData

    data = TenantData("postgresql+psycopg://app@db/saas", metadata=Base.metadata)

    def create_app(tenant):
        app = Flask(__name__)
        data.init_app(app, tenant)

        @app.get("/items")
        def items():
            return [item.title for item in data.session.scalars(select(Item))]

        return app

    provisioner = Provisioner(
        registry, on_create=[data.create], on_delete=[data.archive]
    )

On PostgreSQL every tenant app of the process shares ONE engine per data
server, so each server's pool holds at most ``pool_size + max_overflow``
connections (:attr:`TenantData.bound`) whatever the number of tenants. A
tenant's engine is a view on it
(``execution_options(schema_translate_map={None: schema})``): statements name
the tenant's schema in every table name, and nothing sets ``search_path``, so
no pooled connection carries one tenant's state into another's request, even
behind a pooler in transaction mode. Tables defined with an explicit schema are
left alone: shared by every tenant, and not created by :meth:`TenantData.create`.

On SQLite every tenant has its own file, ``<directory>/<schema name>.sqlite3``,
opened read-write only (an archived tenant's file is never re-created empty).
Its engine holds no connection between sessions (``NullPool``), so open files
are bounded by the sessions in flight, not by the cached apps;
:meth:`TenantData.dispose` forgets a tenant's engine, and :meth:`init_app`
registers it in ``app.extensions["dispatcher.teardown"]`` so the dispatcher
calls it when it evicts the app.

A shared app (one app for every tenant, ``TenantDispatcher(...,
shared_app=app)``) is bound once with :meth:`TenantData.init_shared_app`:
:attr:`TenantData.session` inside a request is then a session on the data of
the request's tenant (``current_tenant``), closed at the app context's
teardown. The engines of the tenants served lately are kept, at most
:data:`SHARED_ENGINES`; on SQLite the file's engine is forgotten when its
tenant leaves them. Flask-SQLAlchemy's ``db.session`` is not offered there:
it takes its engine from the app, which is the same for every tenant.

Raw SQL: :func:`sqlalchemy.text` is not rewritten by the translate map, and an
unqualified table name would be looked up through ``search_path`` (on
PostgreSQL: not the tenant's schema). Qualify each tenant table with
:data:`TENANT_SCHEMA` and run the statement on the tenant's session or
connection::

    data.session.execute(text(f"SELECT title FROM {TENANT_SCHEMA}.items"))

Several servers: ``TenantData({"main": url1, "eu": url2}, metadata=...,
registry=registry)``. The registry records each tenant's server
(``Tenant.data_server``; none recorded means the first). :meth:`create` places
a new tenant on the server it names, else on the one with the fewest tenants,
and records it; the snapshot it returns says where.

Tenant migrations: with ``migrations="path/to/tenant_migrations"`` (an Alembic
environment of the tenant models, see :mod:`dispatcher.data_migrations`),
:meth:`create` stamps the new schema at the head instead of replaying every
revision, and :meth:`upgrade` brings one tenant's schema up to date.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    Table,
    create_mock_engine,
    make_url,
    text,
)
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from sqlalchemy.schema import CreateSchema

from dispatcher import data_move, forks
from dispatcher.data_archives import Archive, archived_name, list_schemas
from dispatcher.data_servers import DEFAULT_SERVER, Servers
from dispatcher.data_sqlite import SqliteFiles
from dispatcher.exceptions import TenantDataError
from dispatcher.tenant import Tenant, aware, utcnow

if TYPE_CHECKING:
    from flask import Flask

    from dispatcher.data_migrations import TenantMigrations
    from dispatcher.registry import TenantRegistry

__all__ = [
    "SHARED_ENGINES",
    "TENANT_SCHEMA",
    "Archive",
    "TenantData",
    "archived_name",
    "schema_name",
    "tenant_tables",
]

#: Put before a tenant table's name in ``text()``: rendered as the tenant's schema.
TENANT_SCHEMA = "__[SCHEMA__none]"

EXTENSION = "dispatcher.data"

#: Tenants whose engines a shared app keeps (PostgreSQL: views on the one
#: pool; SQLite: a file's engine, which holds no connection between sessions).
SHARED_ENGINES = 1024

#: Room for ``_archived_YYYYmmddHHMMSS`` (24 characters) within PostgreSQL's 63.
_READABLE_LENGTH = 24
_NOT_IDENTIFIER = re.compile(r"[^a-z0-9]+")
_DUPLICATE_SCHEMA = "42P06"
_NAMESPACE = text("SELECT 1 FROM pg_namespace WHERE nspname = :name")
#: Stands for the tenant's schema in the creation script; no name contains it.
_STAND_IN = "tenant_schema_stand_in_0d5e"


def schema_name(tenant: Tenant) -> str:
    """The schema (or file) name of a tenant's data: ``t_<slug>_<8 hex>``.

    Derived from the slug and the creation time, so a tenant re-created on a
    deleted one's slug gets a fresh name. Only ``[a-z0-9_]``, at most 35
    characters: a valid unquoted PostgreSQL identifier, also when archived.
    """
    if not isinstance(tenant, Tenant):
        raise TypeError(f"tenant must be a Tenant, not {type(tenant).__name__}")
    created = aware(tenant.created_at).astimezone(dt.UTC)
    identity = f"{tenant.slug}\x00{created.isoformat(timespec='microseconds')}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:8]
    readable = _NOT_IDENTIFIER.sub("_", tenant.slug.lower()).strip("_")
    readable = readable[:_READABLE_LENGTH].rstrip("_")
    return f"t_{readable}_{digest}" if readable else f"t_{digest}"


def _readable(name: str) -> str:
    """The slug part of a schema name: ``t_my_shop_1a2b3c4d`` -> ``my_shop``."""
    return name.removeprefix("t_").rpartition("_")[0]


def tenant_tables(metadata: MetaData) -> list[Table]:
    """The tables of ``metadata`` each tenant has its own of: those without a schema."""
    return [table for table in metadata.sorted_tables if table.schema is None]


def _app_context_id() -> int:
    from flask.globals import app_ctx

    return id(app_ctx._get_current_object())  # type: ignore[attr-defined]


class _Binding:
    """What :meth:`TenantData.init_app` stores in ``app.extensions``.

    ``tenant`` is None for a shared app: each request's tenant is the one.
    """

    __slots__ = ("data", "scoped", "tenant")

    def __init__(
        self,
        data: TenantData,
        tenant: Tenant | None,
        scoped: scoped_session[Session],
    ):
        self.data = data
        self.tenant = tenant
        self.scoped = scoped


class _RecentEngines:
    """The engines of the tenants a shared app served lately, at most ``size``.

    ``open(key)`` makes one, outside the lock; ``close(key)`` is told when one
    leaves (after the lock is released).
    """

    def __init__(
        self,
        open: Callable[[tuple[str, str]], Engine],
        close: Callable[[tuple[str, str]], None],
        size: int,
    ) -> None:
        self._open = open
        self._close = close
        self._size = size
        self._lock = threading.Lock()
        self._engines: OrderedDict[tuple[str, str], Engine] = OrderedDict()

    def get(self, key: tuple[str, str]) -> Engine:
        with self._lock:
            engine = self._engines.get(key)
            if engine is not None:
                self._engines.move_to_end(key)
                return engine
        opened = self._open(key)
        with self._lock:
            engine = self._engines.setdefault(key, opened)
            self._engines.move_to_end(key)
            left = []
            while len(self._engines) > self._size:
                left.append(self._engines.popitem(last=False)[0])
        for gone in left:
            self._close(gone)
        return engine

    def forget(self, key: tuple[str, str] | None = None) -> None:
        """Forget one tenant's engine (its data was archived, say), or all."""
        with self._lock:
            if key is None:
                self._engines.clear()
            else:
                self._engines.pop(key, None)


class TenantData:
    """Where every tenant's data lives, on one bounded pool per database server.

    :param url: a PostgreSQL URL; or several, by server name
        (``{"main": url, "eu": url}``, the first is the default); or
        ``sqlite://`` with ``directory``.
    :param metadata: the tenant apps' tables (defined without a schema).
    :param directory: SQLite only: the folder of the tenants' files.
    :param pool_size: PostgreSQL connections kept open, per server.
    :param max_overflow: PostgreSQL connections opened beyond ``pool_size``
        under load; the process never holds more than their sum per server.
    :param pool_timeout: seconds a session waits for a free connection
        before :class:`sqlalchemy.exc.TimeoutError`.
    :param connect_timeout: seconds a new connection may take before the
        server counts as unreachable.
    :param retry_after: the ``Retry-After`` of a 503 for an unreachable server.
    :param migrations: the tenant models' Alembic environment (a directory).
    :param registry: where each tenant's server is recorded; needed with
        several servers.
    """

    def __init__(
        self,
        url: str | URL | Mapping[str, str | URL],
        *,
        metadata: MetaData,
        directory: str | Path | None = None,
        pool_size: int = 5,
        max_overflow: int = 5,
        pool_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retry_after: int = 5,
        migrations: str | Path | None = None,
        registry: TenantRegistry | None = None,
    ) -> None:
        urls = (
            dict(url) if isinstance(url, Mapping) else {DEFAULT_SERVER: make_url(url)}
        )
        if not urls:
            raise ValueError("url names no data server; give a URL or a mapping")
        first = make_url(next(iter(urls.values())))
        #: The default server's URL.
        self.url = first
        self.backend = first.get_backend_name()
        if self.backend not in ("postgresql", "sqlite"):
            raise ValueError(
                f"url {first.render_as_string()!r} names backend {self.backend!r};"
                " tenant data lives on 'postgresql' or 'sqlite'"
            )
        if not isinstance(metadata, MetaData):
            raise TypeError(
                f"metadata must be a MetaData, not {type(metadata).__name__}"
            )
        if self.backend == "sqlite":
            if len(urls) > 1:
                raise ValueError(
                    "several data servers must all be 'postgresql';"
                    " SQLite tenants share one directory"
                )
            if directory is None:
                raise ValueError("a SQLite TenantData needs directory= for its files")
            if first.database:
                raise ValueError(
                    f"url {first.render_as_string()!r} names a database;"
                    " SQLite tenants get one file each in directory=, so pass 'sqlite://'"
                )
        elif directory is not None:
            raise ValueError(f"directory={directory!r} is for SQLite only")
        for name, value, least in (
            ("pool_size", pool_size, 1),
            ("max_overflow", max_overflow, 0),
            ("retry_after", retry_after, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, not {value!r}")
        for name, seconds in (
            ("pool_timeout", pool_timeout),
            ("connect_timeout", connect_timeout),
        ):
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise TypeError(f"{name} must be a number, not {seconds!r}")
            if not seconds > 0:
                raise ValueError(f"{name} must be > 0, not {seconds!r}")
        self.metadata = metadata
        self.directory = None if directory is None else Path(directory)
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.pool_timeout = float(pool_timeout)
        #: Seconds a 503 for an unreachable data server asks clients to wait.
        self.retry_after = retry_after
        self.registry = registry
        self.migrations: TenantMigrations | None = None
        if migrations is not None:
            # Imported here: Alembic stays out of deployments without migrations.
            from dispatcher.data_migrations import TenantMigrations

            self.migrations = TenantMigrations(migrations)
        self.servers: Servers | None = None
        self._script: str | None = None
        self._files: SqliteFiles | None = None
        if self.directory is not None:
            self._files = SqliteFiles(first, self.directory)
        else:
            self.servers = Servers(
                urls,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=self.pool_timeout,
                connect_timeout=connect_timeout,
            )
            if len(self.servers.names) > 1 and registry is None:
                raise ValueError(
                    "several data servers need registry=:"
                    " it records each tenant's server"
                )
        self._recent = _RecentEngines(
            self._open_recent, self._close_recent, SHARED_ENGINES
        )
        # One hook per process for every TenantData: see _forked.
        forks.on_fork_in_child(self, TenantData._forked)

    def _forked(self) -> None:
        """In a forked child: none of the parent's pooled connections.

        A pooled socket used by two processes would interleave their messages.
        """
        if self.servers is not None:
            self.servers.forked()

    @property
    def bound(self) -> int:
        """The most connections one server's shared PostgreSQL pool ever holds."""
        return self.pool_size + self.max_overflow

    def schema_name(self, tenant: Tenant) -> str:
        """The tenant's schema (PostgreSQL) or file stem (SQLite)."""
        return schema_name(tenant)

    def server_of(self, tenant: Tenant) -> str:
        """The data server the tenant's snapshot records (None: the default).

        :raises TenantDataError: that server is not configured here.
        """
        recorded = tenant.data_server
        if self.servers is None:
            if recorded not in (None, DEFAULT_SERVER):
                raise TenantDataError(
                    f"data server {recorded!r} of tenant {tenant.slug!r} is not"
                    " configured; SQLite tenant data has one directory"
                )
            return DEFAULT_SERVER
        if recorded is None:
            return self.servers.default
        return self.servers.check(recorded, tenant.slug)

    def engine_for(self, tenant: Tenant) -> Engine:
        """An engine for the tenant's data (PostgreSQL: a view on its server's pool)."""
        name = schema_name(tenant)
        if self._files is not None:
            return self._files.engine(name)
        return self._engine(self.server_of(tenant), name)

    def sessionmaker_for(self, tenant: Tenant) -> sessionmaker[Session]:
        """A session factory bound to the tenant's data."""
        return sessionmaker(bind=self.engine_for(tenant))

    def dispose(self, tenant: Tenant | None = None) -> None:
        """Forget a SQLite tenant's engine, or with no tenant every engine.

        A tenant's call never touches the shared PostgreSQL pools; ``dispose()``
        closes them too, for process shutdown. A forked worker starts with
        pools of its own (the parent's connections stay the parent's).
        """
        if self._files is not None:
            if tenant is None:
                self._recent.forget()
                self._files.dispose_all()
            else:
                self._recent.forget((DEFAULT_SERVER, schema_name(tenant)))
                self._files.dispose(schema_name(tenant))
        elif tenant is None and self.servers is not None:
            self._recent.forget()
            self.servers.dispose()

    def place(self, tenant: Tenant) -> Tenant:
        """Choose the new tenant's server and record it; the snapshot that says so.

        The server the tenant names (``data_server=`` at creation) if it is
        configured, else the one with the fewest tenants, ties to the first.
        With one server nothing is recorded: no recorded server means the first.
        """
        if self.servers is None or tenant.data_server is not None:
            self.server_of(tenant)  # refuse a server that is not configured
            return tenant
        if len(self.servers.names) == 1 or self.registry is None:
            return tenant
        counts = self.registry.count_by_data_server()
        # The tenant itself is counted, unplaced; it is not on any server yet.
        counts[None] = counts.get(None, 1) - 1
        server = self.servers.least_used(counts)
        return self.registry.set_data_server(tenant.slug, server)

    def create(self, tenant: Tenant) -> Tenant:
        """Place the tenant, create its schema (or file) and tables, all or nothing.

        The tables come from the metadata and, with ``migrations=``, are
        stamped at the migrations' head in the same transaction: a signup costs
        one ``CREATE TABLE`` per table, not a replay of every revision (with
        ``registry=``, the data-migration ledger records the heads). Returns
        the tenant's snapshot after placement (a Provisioner hands it to later
        hooks).

        :raises TenantDataError: the name exists already, the tenant's server
            is not configured, or the database refused; nothing is left behind.
        """
        tenant = self.place(tenant)
        name = schema_name(tenant)
        if self._files is not None:
            self._files.create(
                name, tenant.slug, tenant_tables(self.metadata), self._stamp
            )
        else:
            self._create_schema(tenant, name)
        if self.migrations is not None and self.registry is not None:
            from dispatcher.ledger import DataResult

            # The ledger says where the new data is, so fleet upgrades do not
            # count it behind; no change is recorded: its apps are new.
            self.registry.record_data_results(
                [DataResult(tenant.slug, self.migrations.heads)]
            )
        return tenant

    def _create_schema(self, tenant: Tenant, name: str) -> None:
        server = self.server_of(tenant)
        try:
            with self._shared(server).begin() as connection:
                # DDL is transactional on PostgreSQL: a failure drops the schema too.
                connection.execute(CreateSchema(name))
                # Every CREATE of the tenant's tables in one round trip.
                connection.exec_driver_sql(self._creation_script(name))
                tenant_connection = connection.execution_options(
                    schema_translate_map={None: name}
                )
                self._stamp(tenant_connection, name)
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) == _DUPLICATE_SCHEMA:
                raise TenantDataError(
                    f"schema {name!r} of tenant {tenant.slug!r} exists already"
                    f" on data server {server!r}; a tenant's data is created once"
                ) from error
            raise TenantDataError(
                f"data server {server!r} refused to create schema {name!r} of"
                f" tenant {tenant.slug!r}: {error.orig}"
            ) from error

    def _creation_script(self, schema: str) -> str:
        """The DDL ``create_all`` would run for a new schema, as one script.

        Rendered once per TenantData with a stand-in schema name, then the
        tenant's (``[a-z0-9_]`` only, so it needs no quoting) replaces it: a
        signup sends one statement batch instead of one per table and index.
        """
        script = self._script
        if script is None:
            dialect = self._shared(self._server_names()[0]).dialect
            statements: list[str] = []

            def collect(element: Any, *_args: Any, **_kw: Any) -> None:
                compiled = element.compile(
                    dialect=dialect,
                    schema_translate_map={None: _STAND_IN},
                    render_schema_translate=True,
                )
                statements.append(str(compiled).strip())

            mock = create_mock_engine(self.url, collect)
            # checkfirst would look through search_path; the schema is new.
            self.metadata.create_all(
                mock, tables=tenant_tables(self.metadata), checkfirst=False
            )
            script = self._script = ";\n".join(statements)
        return script.replace(_STAND_IN, schema)

    def _stamp(self, connection: Connection, schema: str | None = None) -> None:
        """Record the tenant migrations' head in a new schema (None: a file)."""
        if self.migrations is not None:
            self.migrations.stamp(connection, schema)

    def archive(self, tenant: Tenant) -> str | None:
        """Move the tenant's data aside under a timestamped name; never drop it.

        Returns the archive's name, or None when the tenant had no data (a
        creation that failed), so it can undo :meth:`create` in a Provisioner.
        """
        name = schema_name(tenant)
        target = archived_name(name, utcnow())
        if self._files is not None:
            return self._files.archive(name, target, tenant.slug)
        server = self.server_of(tenant)
        with self._shared(server).begin() as connection:
            if connection.scalar(_NAMESPACE, {"name": name}) is None:
                return None
            try:
                connection.execute(text(f'ALTER SCHEMA "{name}" RENAME TO "{target}"'))
            except DBAPIError as error:
                raise TenantDataError(
                    f"could not archive schema {name!r} of tenant {tenant.slug!r}"
                    f" as {target!r} on data server {server!r}: {error.orig}"
                ) from error
        return target

    def exists(self, tenant: Tenant) -> bool:
        """Whether the tenant's schema (or file) exists."""
        name = schema_name(tenant)
        if self._files is not None:
            return self._files.path(name).exists()
        with self._shared(self.server_of(tenant)).connect() as connection:
            return connection.scalar(_NAMESPACE, {"name": name}) is not None

    def archives(self) -> list[Archive]:
        """Every archive, on every server, oldest first."""
        if self._files is not None:
            found = self._files.archives(DEFAULT_SERVER)
        else:
            found = []
            for server in self._server_names():
                with self._shared(server).connect() as connection:
                    found += list_schemas(connection, server)
        return sorted(found, key=lambda archive: (archive.archived_at, archive.name))

    def restore(
        self, archive: str, tenant: Tenant, *, other_tenant: bool = False
    ) -> Tenant:
        """Make the archive called ``archive`` the data of ``tenant`` again.

        The tenant (re-created in the registry, say) must have no data of its
        own: archive that first. An archive whose name says it was another
        tenant's is refused unless ``other_tenant`` is set: a slip copying
        a name must not hand one customer's data to another. An archive on
        another server than the tenant's becomes its data there, and the
        registry records the move. The archive keeps its migration revision:
        run :meth:`upgrade` after. Returns the tenant's snapshot.

        :raises TenantDataError: no such archive, another tenant's, or the
            tenant has data.
        """
        found = [each for each in self.archives() if each.name == archive]
        if not found:
            raise TenantDataError(
                f"there is no archive {archive!r}; 'tenantctl data archives' lists them"
            )
        whose, mine = _readable(found[0].original), _readable(schema_name(tenant))
        if whose != mine and not other_tenant:
            raise TenantDataError(
                f"{archive!r} is the archive of tenant {whose!r}, not of"
                f" {tenant.slug!r}; to give it to {tenant.slug!r} on purpose,"
                " pass other_tenant=True (tenantctl: --other-tenant)"
            )
        if self.exists(tenant):
            raise TenantDataError(
                f"tenant {tenant.slug!r} has data already ({schema_name(tenant)!r});"
                " archive it before restoring another copy"
            )
        source = found[0]
        name = schema_name(tenant)
        if self._files is not None:
            self._files.restore(archive, name, tenant.slug)
            return tenant
        if source.server != self.server_of(tenant) and self.registry is None:
            raise TenantDataError(
                f"archive {archive!r} is on data server {source.server!r}, not on"
                f" tenant {tenant.slug!r}'s; restoring it there needs registry="
            )
        with self._shared(source.server).begin() as connection:
            connection.execute(text(f'ALTER SCHEMA "{archive}" RENAME TO "{name}"'))
        if source.server != self.server_of(tenant) and self.registry is not None:
            tenant = self.registry.set_data_server(tenant.slug, source.server)
        return tenant

    def purge(
        self, older_than: dt.timedelta, *, now: dt.datetime | None = None
    ) -> list[Archive]:
        """Delete for good the archives made more than ``older_than`` ago.

        Returns what was deleted. The one call that drops tenant data, and only
        archived data.
        """
        if not isinstance(older_than, dt.timedelta) or older_than < dt.timedelta(0):
            raise ValueError(
                f"older_than must be a timedelta of zero or more, not {older_than!r}"
            )
        cutoff = aware(now or utcnow()) - older_than
        purged = [each for each in self.archives() if each.archived_at <= cutoff]
        for archive in purged:
            if self._files is not None:
                self._files.purge(archive.name)
                continue
            with self._shared(archive.server).begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{archive.name}" CASCADE'))
        return purged

    def move(self, tenant: Tenant, server: str) -> Tenant:
        """Move the tenant's data to another PostgreSQL server; the new snapshot.

        The tenant is disabled only while its data is copied; the old copy
        becomes an archive on the old server. See :mod:`dispatcher.data_move`.
        """
        return data_move.move(self, tenant, server)

    def upgrade(self, tenant: Tenant, revision: str = "heads") -> tuple[str, ...]:
        """Run the tenant migrations in the tenant's schema (or file), in one
        transaction; returns its revisions after."""
        migrations = self._migrations()
        name = schema_name(tenant)
        if not self.exists(tenant):
            raise TenantDataError(
                f"tenant {tenant.slug!r} has no data ({name!r}) to upgrade"
            )
        if self._files is not None:
            with self._files.engine(name).begin() as connection:
                return migrations.upgrade(connection, None, revision)
        with self._shared(self.server_of(tenant)).begin() as connection:
            return migrations.upgrade(connection, name, revision)

    def revision(self, tenant: Tenant) -> tuple[str, ...]:
        """The tenant migration revisions the tenant's schema (or file) is at."""
        migrations = self._migrations()
        name = schema_name(tenant)
        if self._files is not None:
            with self._files.engine(name).connect() as connection:
                return migrations.current(connection, None)
        with self._shared(self.server_of(tenant)).connect() as connection:
            return migrations.current(connection, name)

    def _migrations(self) -> TenantMigrations:
        if self.migrations is None:
            raise TenantDataError(
                "this TenantData has no tenant migrations; pass migrations="
                "'path/to/tenant_migrations'"
            )
        return self.migrations

    def init_app(self, app: Flask, tenant: Tenant, *, db: Any = None) -> None:
        """Bind ``app`` to the tenant's data: :attr:`session` inside it is the tenant's.

        The session lives for one app context (a request) and is closed at its
        teardown. On SQLite the tenant's engine is disposed when the dispatcher
        tears the app down. With ``db`` (a Flask-SQLAlchemy ``SQLAlchemy``),
        ``db.session`` in ``app`` is the tenant's too, on the same shared pool.
        A request that cannot reach the tenant's data server gets 503 with
        ``Retry-After``.
        """
        if EXTENSION in app.extensions:
            raise RuntimeError(f"app {app.name!r} is already bound to a tenant's data")
        engine = self.engine_for(tenant)
        scoped = scoped_session(sessionmaker(bind=engine), scopefunc=_app_context_id)
        if db is not None:
            if getattr(db, "metadata", self.metadata) is not self.metadata:
                # create() would make other tables than the ones db's models use.
                raise ValueError(
                    "db.metadata is not this TenantData's metadata; build it as"
                    " TenantData(url, metadata=db.metadata)"
                )
            from dispatcher import data_flask

            data_flask.bind_flask_sqlalchemy(db, app, engine)
        self._bind(app, _Binding(self, tenant, scoped))
        if self._files is not None:
            teardown: list[Any] = app.extensions.setdefault("dispatcher.teardown", [])
            teardown.append(partial(self.dispose, tenant))

    def init_shared_app(self, app: Flask, *, db: Any = None) -> None:
        """Bind a shared ``app``: :attr:`session` in a request is its tenant's.

        The tenant is the one the dispatcher routed the request to
        (``current_tenant``); the session lives for the app context and is
        closed at its teardown. A request that cannot reach its tenant's data
        server gets 503 with ``Retry-After``.

        :raises TypeError: ``db`` was given: Flask-SQLAlchemy's ``db.session``
            takes its engine from the app, one for every tenant of a shared
            app; use ``data.session``.
        """
        if db is not None:
            raise TypeError(
                f"db= is not supported on shared app {app.name!r}:"
                " Flask-SQLAlchemy's db.session takes its engine from the app,"
                " the same for every tenant of a shared app; use data.session"
                " (with db.Model models and select()) instead"
            )
        from flask import appcontext_pushed

        if EXTENSION in app.extensions:
            raise RuntimeError(f"app {app.name!r} is already bound to a tenant's data")
        scoped = scoped_session(sessionmaker(), scopefunc=_app_context_id)
        remove_session = self._bind(app, _Binding(self, None, scoped))
        # Keyed by the context's id(): a session a dead context left (a
        # teardown that raised before ours) must not reach a new context at
        # the same address, maybe another tenant's request.
        appcontext_pushed.connect(remove_session, app, weak=False)

    def _bind(self, app: Flask, binding: _Binding) -> Callable[..., None]:
        """Store ``binding`` in ``app``, with the 503 for unreachable data and
        the session's removal at each app context's teardown (returned)."""
        # Imported here, as Flask is: tenantctl's data commands never bind apps.
        from dispatcher import data_flask

        data_flask.answer_unavailable(app, self.retry_after)
        app.extensions[EXTENSION] = binding
        scoped = binding.scoped

        def remove_session(*_args: Any, **_extra: Any) -> None:
            scoped.remove()

        app.teardown_appcontext(remove_session)
        return remove_session

    @property
    def session(self) -> Session:
        """The current app context's session, bound to its app's tenant (on a
        shared app, to its request's tenant)."""
        from flask import current_app, has_app_context

        if not has_app_context():
            raise RuntimeError(
                "data.session was used outside a Flask app context; use it inside"
                " a request of an app bound with data.init_app(app, tenant)"
            )
        binding = current_app.extensions.get(EXTENSION)
        if not isinstance(binding, _Binding) or binding.data is not self:
            raise RuntimeError(
                f"app {current_app.name!r} is not bound to this TenantData;"
                " call data.init_app(app, tenant) in its factory"
            )
        if binding.tenant is None:
            return self._request_session(binding.scoped, current_app.name)
        return binding.scoped()

    def _request_session(self, scoped: scoped_session[Session], app: str) -> Session:
        """A shared app's session: on the data of the request's tenant."""
        from flask import has_request_context, request

        from dispatcher.context import ENVIRON_KEY

        tenant = request.environ.get(ENVIRON_KEY) if has_request_context() else None
        if not isinstance(tenant, Tenant):
            raise RuntimeError(
                f"data.session on shared app {app!r} is its request's tenant's"
                " data, and this app context has no request a TenantDispatcher"
                " routed to a tenant"
            )
        key = (self.server_of(tenant), schema_name(tenant))
        if scoped.registry.has():
            session = scoped.registry()
            owner = session.info.get(EXTENSION)
            if owner != key:
                # Two tenants' requests in one app context (nested test
                # request contexts): never hand one the other's session.
                raise RuntimeError(
                    f"data.session of this app context is tenant data {owner!r},"
                    f" not {key!r} of tenant {tenant.slug!r}: push an app"
                    " context per tenant's request"
                )
            return session
        session = scoped(bind=self._recent.get(key))
        session.info[EXTENSION] = key
        return session

    def _open_recent(self, key: tuple[str, str]) -> Engine:
        server, schema = key
        if self._files is not None:
            return self._files.engine(schema)
        return self._engine(server, schema)

    def _close_recent(self, key: tuple[str, str]) -> None:
        if self._files is not None:
            self._files.dispose(key[1])

    def _server_names(self) -> tuple[str, ...]:
        return (DEFAULT_SERVER,) if self.servers is None else self.servers.names

    def _shared(self, server: str) -> Engine:
        """The server's shared engine (PostgreSQL only)."""
        assert self.servers is not None
        return self.servers.engine(server)

    def _engine(self, server: str, schema: str) -> Engine:
        return self._shared(server).execution_options(
            schema_translate_map={None: schema}
        )
