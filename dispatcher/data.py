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

On PostgreSQL every tenant app of the process shares ONE engine, so one pool
holds at most ``pool_size + max_overflow`` connections (:attr:`TenantData.bound`)
whatever the number of tenants. A tenant's engine is a view on it
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

Raw SQL: :func:`sqlalchemy.text` is not rewritten by the translate map, and an
unqualified table name would be looked up through ``search_path`` (on
PostgreSQL: not the tenant's schema). Qualify each tenant table with
:data:`TENANT_SCHEMA` and run the statement on the tenant's session or
connection::

    data.session.execute(text(f"SELECT title FROM {TENANT_SCHEMA}.items"))
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import threading
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, MetaData, Table, create_engine, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, scoped_session, sessionmaker
from sqlalchemy.schema import CreateSchema

from dispatcher import data_flask, forks
from dispatcher.data_sqlite import SqliteFiles
from dispatcher.database import pooler_safe_args
from dispatcher.exceptions import TenantDataError
from dispatcher.tenant import Tenant, aware, utcnow

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "TENANT_SCHEMA",
    "TenantData",
    "archived_name",
    "schema_name",
    "tenant_tables",
]

#: Put before a tenant table's name in ``text()``: rendered as the tenant's schema.
TENANT_SCHEMA = "__[SCHEMA__none]"

EXTENSION = "dispatcher.data"

#: Room for ``_archived_YYYYmmddHHMMSS`` (24 characters) within PostgreSQL's 63.
_READABLE_LENGTH = 24
_NOT_IDENTIFIER = re.compile(r"[^a-z0-9]+")
_DUPLICATE_SCHEMA = "42P06"
_NAMESPACE = text("SELECT 1 FROM pg_namespace WHERE nspname = :name")


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


def tenant_tables(metadata: MetaData) -> list[Table]:
    """The tables of ``metadata`` each tenant has its own of: those without a schema."""
    return [table for table in metadata.sorted_tables if table.schema is None]


def archived_name(name: str, when: dt.datetime) -> str:
    """The name ``name`` is archived under at ``when`` (UTC, to the second)."""
    return f"{name}_archived_{aware(when).astimezone(dt.UTC):%Y%m%d%H%M%S}"


def _app_context_id() -> int:
    from flask.globals import app_ctx

    return id(app_ctx._get_current_object())  # type: ignore[attr-defined]


class _Binding:
    """What :meth:`TenantData.init_app` stores in ``app.extensions``."""

    __slots__ = ("data", "scoped", "tenant")

    def __init__(
        self, data: TenantData, tenant: Tenant, scoped: scoped_session[Session]
    ):
        self.data = data
        self.tenant = tenant
        self.scoped = scoped


class TenantData:
    """Where every tenant's data lives, on one bounded pool per database.

    :param url: a PostgreSQL URL, or ``sqlite://`` with ``directory``.
    :param metadata: the tenant apps' tables (defined without a schema).
    :param directory: SQLite only: the folder of the tenants' files.
    :param pool_size: PostgreSQL connections kept open.
    :param max_overflow: PostgreSQL connections opened beyond ``pool_size``
        under load; the process never holds more than their sum.
    :param pool_timeout: seconds a session waits for a free connection
        before :class:`sqlalchemy.exc.TimeoutError`.
    :param retry_after: the ``Retry-After`` of a 503 for an unreachable server.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        metadata: MetaData,
        directory: str | Path | None = None,
        pool_size: int = 5,
        max_overflow: int = 5,
        pool_timeout: float = 30.0,
        retry_after: int = 5,
    ) -> None:
        self.url = make_url(url)
        self.backend = self.url.get_backend_name()
        if self.backend not in ("postgresql", "sqlite"):
            raise ValueError(
                f"url {self.url.render_as_string()!r} names backend {self.backend!r};"
                " tenant data lives on 'postgresql' or 'sqlite'"
            )
        if not isinstance(metadata, MetaData):
            raise TypeError(
                f"metadata must be a MetaData, not {type(metadata).__name__}"
            )
        if self.backend == "sqlite":
            if directory is None:
                raise ValueError("a SQLite TenantData needs directory= for its files")
            if self.url.database:
                raise ValueError(
                    f"url {self.url.render_as_string()!r} names a database;"
                    " SQLite tenants get one file each in directory=, so pass 'sqlite://'"
                )
        elif directory is not None:
            raise ValueError(f"directory={directory!r} is for SQLite only")
        for name, value, least in (
            ("pool_size", pool_size, 1),
            ("max_overflow", max_overflow, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, not {value!r}")
        if isinstance(pool_timeout, bool) or not isinstance(pool_timeout, int | float):
            raise TypeError(f"pool_timeout must be a number, not {pool_timeout!r}")
        if not pool_timeout > 0:
            raise ValueError(f"pool_timeout must be > 0, not {pool_timeout!r}")
        self.metadata = metadata
        self.directory = None if directory is None else Path(directory)
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.pool_timeout = float(pool_timeout)
        #: Seconds a 503 for an unreachable data server asks clients to wait.
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._engine: Engine | None = None
        self._files = (
            None if self.directory is None else SqliteFiles(self.url, self.directory)
        )
        # One hook per process for every TenantData: see _forked.
        forks.on_fork_in_child(self, TenantData._forked)

    def _forked(self) -> None:
        """In a forked child: new lock, and none of the parent's pooled connections.

        Another thread of the parent may have held the lock at the fork, and a
        pooled socket used by two processes would interleave their messages.
        """
        self._lock = threading.Lock()
        if self._engine is not None:
            # close=False: the parent still owns those sockets.
            self._engine.dispose(close=False)

    @property
    def bound(self) -> int:
        """The most connections the shared PostgreSQL pool ever holds."""
        return self.pool_size + self.max_overflow

    def schema_name(self, tenant: Tenant) -> str:
        """The tenant's schema (PostgreSQL) or file stem (SQLite)."""
        return schema_name(tenant)

    def engine_for(self, tenant: Tenant) -> Engine:
        """An engine for the tenant's data: on PostgreSQL, a view on the shared pool."""
        name = schema_name(tenant)
        if self._files is not None:
            return self._files.engine(name)
        return self._shared().execution_options(schema_translate_map={None: name})

    def sessionmaker_for(self, tenant: Tenant) -> sessionmaker[Session]:
        """A session factory bound to the tenant's data."""
        return sessionmaker(bind=self.engine_for(tenant))

    def dispose(self, tenant: Tenant | None = None) -> None:
        """Forget a SQLite tenant's engine, or with no tenant every engine.

        A tenant's call never touches the shared PostgreSQL pool; ``dispose()``
        closes it too, for process shutdown. A forked worker starts with a
        pool of its own (the parent's connections stay the parent's).
        """
        if tenant is not None:
            if self._files is not None:
                self._files.dispose(schema_name(tenant))
            return
        if self._files is not None:
            self._files.dispose_all()
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    def create(self, tenant: Tenant) -> None:
        """Create the tenant's schema (or file) and its tables, all or nothing.

        :raises TenantDataError: the name exists already, or the database
            refused; nothing is left behind.
        """
        name = schema_name(tenant)
        if self._files is not None:
            self._files.create(name, tenant.slug, tenant_tables(self.metadata))
            return
        try:
            with self._shared().begin() as connection:
                # DDL is transactional on PostgreSQL: a failure drops the schema too.
                connection.execute(CreateSchema(name))
                tenant_connection = connection.execution_options(
                    schema_translate_map={None: name}
                )
                # checkfirst would look through search_path; the schema is new.
                self.metadata.create_all(
                    tenant_connection,
                    tables=tenant_tables(self.metadata),
                    checkfirst=False,
                )
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) == _DUPLICATE_SCHEMA:
                raise TenantDataError(
                    f"schema {name!r} of tenant {tenant.slug!r} exists already;"
                    " a tenant's data is created once"
                ) from error
            raise TenantDataError(
                f"the database refused to create schema {name!r} of tenant"
                f" {tenant.slug!r}: {error.orig}"
            ) from error

    def archive(self, tenant: Tenant) -> str | None:
        """Move the tenant's data aside under a timestamped name; never drop it.

        Returns the archive's name, or None when the tenant had no data (a
        creation that failed), so it can undo :meth:`create` in a Provisioner.
        """
        name = schema_name(tenant)
        target = archived_name(name, utcnow())
        if self._files is not None:
            return self._files.archive(name, target, tenant.slug)
        with self._shared().begin() as connection:
            if connection.scalar(_NAMESPACE, {"name": name}) is None:
                return None
            try:
                connection.execute(text(f'ALTER SCHEMA "{name}" RENAME TO "{target}"'))
            except DBAPIError as error:
                raise TenantDataError(
                    f"could not archive schema {name!r} of tenant {tenant.slug!r}"
                    f" as {target!r}: {error.orig}"
                ) from error
        return target

    def exists(self, tenant: Tenant) -> bool:
        """Whether the tenant's schema (or file) exists."""
        name = schema_name(tenant)
        if self._files is not None:
            return self._files.path(name).exists()
        with self._shared().connect() as connection:
            return connection.scalar(_NAMESPACE, {"name": name}) is not None

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
            data_flask.bind_flask_sqlalchemy(db, app, engine)
        data_flask.answer_unavailable(app, self.retry_after)
        app.extensions[EXTENSION] = _Binding(self, tenant, scoped)

        def remove_session(_error: BaseException | None) -> None:
            scoped.remove()

        app.teardown_appcontext(remove_session)
        if self._files is not None:
            teardown: list[Any] = app.extensions.setdefault("dispatcher.teardown", [])
            teardown.append(partial(self.dispose, tenant))

    @property
    def session(self) -> Session:
        """The current app context's session, bound to its app's tenant."""
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
        return binding.scoped()

    def _shared(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = create_engine(
                    self.url,
                    pool_size=self.pool_size,
                    max_overflow=self.max_overflow,
                    pool_timeout=self.pool_timeout,
                    pool_pre_ping=True,
                    connect_args=pooler_safe_args(self.url),
                )
            return self._engine
