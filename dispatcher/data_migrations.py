"""Tenant migrations: the tenant models' own Alembic environment, one tenant at a time.

Usage::

    from dispatcher.data_migrations import TenantMigrations

    migrations = TenantMigrations("tenant_migrations")  # a directory with env.py

    with engine.begin() as connection:  # the caller's transaction, committed by it
        migrations.upgrade(connection, "t_acme_1a2b3c4d")  # PostgreSQL: the schema
    with tenant_file_engine.begin() as connection:
        migrations.upgrade(connection, None)  # SQLite: the file's own database

The environment's ``env.py`` hands its models to :func:`run_migrations`::

    from dispatcher.data_migrations import run_migrations
    from myapp.models import Base

    run_migrations(Base.metadata)

Revisions are written as for any single database, with unqualified names
(``op.create_table("items", ...)``, ``op.add_column("items", ...)``,
``op.execute("UPDATE items SET ...")``); one run addresses one tenant:

- its connection carries ``schema_translate_map={None: schema}``, which names
  the schema in what SQLAlchemy renders from a ``Table``: ``create_table``,
  ``drop_table``, ``create_index``, ``drop_index``, ``create_foreign_key`` and
  the other ``create_*_constraint`` ops;
- on PostgreSQL, ``SET LOCAL search_path`` to the schema, for what Alembic
  renders from plain names (``add_column``, ``drop_column``, ``alter_column``,
  ``rename_table``, ``bulk_insert``) and for ``op.execute``'s raw SQL. It ends
  with the transaction, so unlike a plain ``SET`` it cannot stay on a pooled
  server connection (PgBouncer in transaction mode) for another client;
- the version table (``alembic_version``) is the tenant's own: in its schema
  (``version_table_schema``), or in its file.

Nothing here commits: a failing migration raises, and the caller's rollback
undoes the whole run (DDL is transactional on PostgreSQL, and on SQLite once
the run has opened the file's transaction itself).

The second module that imports Alembic, after :mod:`dispatcher.migrate`;
``import dispatcher`` imports neither.
"""

from __future__ import annotations

import ast
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, text
from sqlalchemy.exc import SQLAlchemyError

from dispatcher import forks
from dispatcher.exceptions import TenantDataError

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from alembic.runtime.migration import MigrationContext, MigrationInfo, RevisionStep
    from alembic.script import ScriptDirectory
    from sqlalchemy import Connection

__all__ = ["TenantMigrations", "run_migrations"]

#: ``config.attributes`` keys a run sets; a custom env.py may read the first two.
CONNECTION = "connection"
SCHEMA = "tenant_schema"
_RUNNER = "dispatcher.tenant_migrations"
#: The run's own: whether the version table exists, and the heads after
#: each migration applied (Alembic's ``on_version_apply``).
_HAS_VERSION_TABLE = "dispatcher.has_version_table"
_HEADS = "dispatcher.heads"

VERSION_TABLE = "alembic_version"

_OUTSIDE = (
    "tenant migrations run in one tenant's schema (or file) at a time, so not"
    " through plain 'alembic': use 'tenantctl data upgrade --only SLUG', or"
    " TenantMigrations(directory).upgrade(connection, schema) from Python"
)

_PG_STATE = text(
    "SELECT current_setting('search_path'),"
    " EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = :schema),"
    " to_regclass(:version_table) IS NOT NULL"
)
_SQLITE_STATE = text(
    "SELECT EXISTS (SELECT 1 FROM sqlite_master"
    " WHERE type = 'table' AND name = :version_table)"
)
_RESTORE_SEARCH_PATH = text("SELECT set_config('search_path', :path, true)")

# Alembic's ``context`` and ``op`` are module globals pointing at the run in
# progress: two runs at once in one process would share them.
_one_run = threading.Lock()


def _new_lock_after_fork() -> None:
    global _one_run
    # Another thread of the parent may have held it at the fork.
    _one_run = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


class TenantMigrations:
    """A tenant models' Alembic environment, run in one tenant's schema or file.

    :param directory: the environment: ``env.py`` (calling
        :func:`run_migrations`), ``script.py.mako`` and ``versions/``. Its
        revisions are read once, at first use.
    """

    def __init__(self, directory: str | Path) -> None:
        path = Path(directory)
        if not (path / "env.py").is_file():
            raise ValueError(
                f"tenant migrations {str(path)!r} must be a directory with an"
                " env.py (an Alembic environment: env.py, script.py.mako, versions/)"
            )
        self.directory = path
        self._lock = threading.Lock()
        self._script: ScriptDirectory | None = None
        self._heads: tuple[str, ...] = ()
        #: (heads,) as the revision files spell them, () if they do not plainly.
        self._static_heads: tuple[tuple[str, ...], ...] | None = None
        forks.on_fork_in_child(self, TenantMigrations._forked)

    def _forked(self) -> None:
        # Another thread of the parent may have held it at the fork.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TenantMigrations({str(self.directory)!r})"

    @property
    def heads(self) -> tuple[str, ...]:
        """The newest revisions: where :meth:`stamp` puts a new tenant.

        Read from the revision files' text when they spell their ids plainly
        (Alembic's template does), without importing Alembic: a fleet upgrade
        with nothing to do compares them with the ledger and stops there.
        """
        if self._script is None:
            with self._lock:
                if self._static_heads is None:
                    self._static_heads = _read_heads(self.directory / "versions")
            if self._static_heads:
                return self._static_heads[0]
        self._scripts()
        return self._heads

    def load(self) -> None:
        """Read every revision now (importing Alembic), not at the first
        upgrade: processes forked afterwards inherit them."""
        self._scripts()

    def resolve(self, revision: str) -> tuple[str, ...]:
        """The revisions ``revision`` names (``heads``: the heads), sorted.

        :raises TenantDataError: Alembic does not know ``revision``, or it is
            relative (``+1``): its target depends on each tenant's revision.
        """
        if revision == "heads":
            return tuple(sorted(self.heads))
        from alembic.script.revision import RevisionError
        from alembic.util import CommandError

        script = self._scripts()
        try:
            found = script.revision_map.get_revisions(revision)
        except (CommandError, RevisionError, ValueError) as error:
            raise TenantDataError(
                f"cannot upgrade to revision {revision!r}: {error}"
            ) from error
        named = sorted(
            each.revision for each in found if each is not None and each != "base"
        )
        if not named or revision.startswith(("+", "-")):
            raise TenantDataError(
                f"cannot upgrade to revision {revision!r}: name a revision of"
                f" {str(self.directory)!r} or 'heads'"
            )
        return tuple(named)

    def stamp(self, connection: Connection, schema: str | None) -> None:
        """Record the heads as the tenant's revisions, in the caller's transaction.

        For a new tenant whose tables were just created from the models: its
        version table is created in ``schema`` (SQLite: ``None``, the file) and
        holds the heads. No migration and no ``env.py`` runs.

        :raises TenantDataError: the schema does not exist, or the tenant has a
            version table already (then :meth:`upgrade` is what moves it).
        """
        heads = self.heads
        _require_transactions(connection)
        if _State.read(connection, schema).has_version_table:
            raise TenantDataError(
                f"{_where(connection, schema)} has a version table already,"
                f" at {self.current(connection, schema)}; stamp is for a new"
                " tenant's tables, upgrade moves an existing tenant"
            )
        # Alembic's MigrationContext.stamp would look for the table twice more
        # and compute the steps; the state above already says it is absent.
        table = _version_table(schema)
        table.create(connection, checkfirst=False)
        if heads:
            connection.execute(
                table.insert(), [{"version_num": head} for head in heads]
            )

    def upgrade(
        self, connection: Connection, schema: str | None, revision: str = "heads"
    ) -> tuple[str, ...]:
        """Run the migrations of one tenant up to ``revision``; its revisions after.

        See :meth:`upgrade_from`.
        """
        return self.upgrade_from(connection, schema, revision)[1]

    def upgrade_from(
        self, connection: Connection, schema: str | None, revision: str = "heads"
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Run the migrations of one tenant up to ``revision``; its revisions
        before and after.

        Runs ``env.py`` with ``connection`` (in the caller's transaction, never
        committed here) in ``config.attributes``, statements addressing only
        ``schema``. On failure the caller must roll back.

        :raises TenantDataError: the schema does not exist, Alembic does not
            know ``revision`` (or cannot move there), or the database refused
            a migration's statement.
        """
        if not isinstance(revision, str) or not revision:
            raise ValueError(f"revision must be a non-empty string, not {revision!r}")
        from alembic.config import Config
        from alembic.runtime.environment import EnvironmentContext
        from alembic.script.revision import RevisionError
        from alembic.util import CommandError

        script = self._scripts()
        _require_transactions(connection)
        if not connection.in_transaction():
            connection.begin()  # the caller's, committed or rolled back by it
        state = _State.read(connection, schema)
        # Locked on PostgreSQL: another run upgrading this tenant now (two
        # fleet upgrades at once) is waited for, and its revisions read after
        # it, instead of replaying its migrations and failing at its commit.
        lock = connection.dialect.name == "postgresql"
        before = _heads_in(connection, schema, lock) if state.has_version_table else ()
        try:
            # Alembic's own plan, without running env.py: a tenant at the
            # target costs these two queries, not a run.
            # Typed as one revision; Alembic's own calls pass the heads tuple.
            if not script._upgrade_revs(revision, before):  # type: ignore[arg-type]
                return before, before
        except (CommandError, RevisionError) as error:
            raise TenantDataError(
                f"cannot upgrade {_where(connection, schema)} to revision"
                f" {revision!r}: {error}"
            ) from error
        translate = connection.get_execution_options().get("schema_translate_map")
        config = Config()
        config.set_main_option("script_location", str(self.directory))
        config.attributes.update(
            {
                CONNECTION: connection,
                SCHEMA: schema,
                _RUNNER: True,
                _HAS_VERSION_TABLE: state.has_version_table,
            }
        )

        def steps(heads: Any, _context: MigrationContext) -> list[RevisionStep]:
            return script._upgrade_revs(revision, heads)

        try:
            with _one_run:
                state.enter(connection)
                connection.execution_options(schema_translate_map={None: schema})
                with EnvironmentContext(
                    config, script, fn=steps, destination_rev=revision
                ):
                    script.run_env()
        except (CommandError, RevisionError) as error:
            raise TenantDataError(
                f"cannot upgrade {_where(connection, schema)} to revision"
                f" {revision!r}: {error}"
            ) from error
        except SQLAlchemyError as error:
            raise TenantDataError(
                f"upgrading {_where(connection, schema)} to revision {revision!r}"
                f" failed, roll the transaction back: {error}"
            ) from error
        finally:
            connection.execution_options(schema_translate_map=translate)
        state.leave(connection)
        applied = config.attributes.get(_HEADS)
        if applied:  # heads after the last migration, as Alembic wrote them
            return before, tuple(applied)
        return before, _heads_in(connection, schema)

    def current(self, connection: Connection, schema: str | None) -> tuple[str, ...]:
        """The tenant's revisions: ``()`` when it has no version table.

        :raises TenantDataError: the schema does not exist.
        """
        if not _State.read(connection, schema).has_version_table:
            return ()
        return _heads_in(connection, schema)

    def _scripts(self) -> ScriptDirectory:
        script = self._script
        if script is not None:
            return script
        from alembic.script import ScriptDirectory
        from alembic.script.revision import RevisionError
        from alembic.util import CommandError

        with self._lock:
            if self._script is None:
                try:
                    script = ScriptDirectory(self.directory)
                    # Reads every revision now, once: later calls only look up.
                    self._heads = tuple(script.get_heads())
                except (CommandError, RevisionError) as error:
                    raise ValueError(
                        f"tenant migrations {str(self.directory)!r}: {error}"
                    ) from error
                self._script = script
            return self._script


class _State:
    """What a run finds in the tenant's schema, and how it leaves the connection."""

    __slots__ = ("has_version_table", "schema", "search_path")

    def __init__(
        self, schema: str | None, has_version_table: bool, search_path: str | None
    ) -> None:
        self.schema = schema
        self.has_version_table = has_version_table
        #: PostgreSQL: the transaction's search_path before the run.
        self.search_path = search_path

    @classmethod
    def read(cls, connection: Connection, schema: str | None) -> _State:
        """One query; :class:`TenantDataError` when ``schema`` does not exist."""
        dialect = connection.dialect.name
        if dialect == "sqlite":
            if schema is not None:
                raise ValueError(
                    f"schema={schema!r} is for PostgreSQL; a SQLite tenant's data is"
                    " its connection's own file: pass None"
                )
            found = connection.scalar(_SQLITE_STATE, {"version_table": VERSION_TABLE})
            return cls(schema, bool(found), None)
        if dialect != "postgresql":
            raise ValueError(
                f"tenant migrations run on PostgreSQL or SQLite, not {dialect!r}"
            )
        if not isinstance(schema, str) or not schema:
            raise ValueError(
                f"schema must name the tenant's PostgreSQL schema, not {schema!r}"
            )
        quoted = _quoted(connection, schema)
        row = connection.execute(
            _PG_STATE, {"schema": schema, "version_table": f"{quoted}.{VERSION_TABLE}"}
        ).one()
        if not row[1]:
            raise TenantDataError(
                f"tenant schema {schema!r} does not exist; create the tenant's data"
                " first (TenantData.create)"
            )
        return cls(schema, bool(row[2]), row[0])

    def enter(self, connection: Connection) -> None:
        """Point raw SQL at the tenant for this transaction only."""
        if self.schema is not None:
            quoted = _quoted(connection, self.schema)
            connection.exec_driver_sql(f"SET LOCAL search_path TO {quoted}")
            return
        # pysqlite opens a transaction before DML only: without a BEGIN, a
        # migration's DDL would be committed as it runs, and a later failure
        # would leave the tenant's file half-migrated.
        raw = connection.connection.dbapi_connection
        if getattr(raw, "in_transaction", True) is False:
            connection.exec_driver_sql("BEGIN")

    def leave(self, connection: Connection) -> None:
        """The caller's search_path again, for the rest of its transaction."""
        if self.search_path is not None:
            connection.execute(_RESTORE_SEARCH_PATH, {"path": self.search_path})


def run_migrations(target_metadata: MetaData | None = None) -> None:
    """Run the migrations of the tenant :class:`TenantMigrations` is upgrading.

    What a tenant environment's ``env.py`` calls. The connection and the
    schema come from the run, in ``context.config.attributes``.

    :raises alembic.util.CommandError: called outside such a run (plain
        ``alembic upgrade`` prints its message).
    """
    from alembic import context
    from alembic.util import CommandError

    try:
        attributes = context.config.attributes
    except (AttributeError, NameError):  # env.py imported outside Alembic
        attributes = {}
    if not attributes.get(_RUNNER):
        raise CommandError(_OUTSIDE)
    connection: Connection = attributes[CONNECTION]
    schema: str | None = attributes[SCHEMA]

    def applied(
        ctx: MigrationContext,
        step: MigrationInfo,
        heads: Collection[Any],
        run_args: Mapping[str, Any],
    ) -> None:
        attributes[_HEADS] = sorted(heads)

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        on_version_apply=applied,
    )
    if attributes.get(_HAS_VERSION_TABLE):
        # The run found the version table already; Alembic would look it up
        # again (a catalog query, the dearest statement of a one-column
        # migration) before reading it.
        migration_context = context.get_context()
        if hasattr(migration_context, "_has_version_table"):
            migration_context._has_version_table = lambda: True  # type: ignore[method-assign]
    with context.begin_transaction():
        context.run_migrations()


def _require_transactions(connection: Connection) -> None:
    """Refuse an autocommit connection: each statement would commit alone, and
    a ``SET LOCAL`` would end before the next statement."""
    raw = connection.connection.dbapi_connection
    autocommits = getattr(raw, "autocommit", False) is True or (
        # pysqlite before Python 3.12's autocommit attribute
        connection.dialect.name == "sqlite"
        and getattr(raw, "isolation_level", "") is None
    )
    if autocommits:
        raise ValueError(
            f"tenant migrations need a connection in a transaction, not one in"
            f" autocommit mode ({connection.engine.url.render_as_string()!r}):"
            " use 'with engine.begin() as connection'"
        )


def _version_table(schema: str | None) -> Table:
    """Alembic's version table (``MigrationContext``'s default layout) in ``schema``."""
    return Table(
        VERSION_TABLE,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
        schema=schema,
    )


def _heads_in(
    connection: Connection, schema: str | None, lock: bool = False
) -> tuple[str, ...]:
    """The version table's rows, sorted: one query, as the caller knows the
    table exists (Alembic's ``get_current_heads`` would look it up first, a
    catalog query dearer than the read); ``lock``: ``FOR UPDATE``."""
    table = VERSION_TABLE
    if schema is not None:
        table = f"{_quoted(connection, schema)}.{VERSION_TABLE}"
    for_update = " FOR UPDATE" if lock else ""
    found = connection.exec_driver_sql(f"SELECT version_num FROM {table}{for_update}")
    return tuple(sorted(row[0] for row in found))


def _quoted(connection: Connection, schema: str) -> str:
    # Names from schema_name() need no quotes; quoting anyway keeps any other
    # name one identifier.
    return connection.dialect.identifier_preparer.quote_identifier(schema)


def _where(connection: Connection, schema: str | None) -> str:
    """The tenant's data, for a message: its schema, or its SQLite file."""
    if schema is not None:
        return f"tenant schema {schema!r}"
    try:
        files = connection.exec_driver_sql("PRAGMA database_list").all()
    except SQLAlchemyError:
        return "the tenant's SQLite file"
    return next(
        (f"tenant file {row[2]!r}" for row in files if row[1] == "main" and row[2]),
        "the tenant's SQLite file",
    )


def _read_heads(versions: Path) -> tuple[tuple[str, ...], ...]:
    """``(heads,)`` from the revision files' text, or ``()`` when any of them
    names its revision or down revisions otherwise than as plain literals
    (Alembic, which runs each file, then reads them).

    The files are Alembic's (``versions/*.py``, not ``__init__`` nor
    ``.#`` lock files); a file with ``depends_on`` also defers to Alembic.
    """
    revisions: set[str] = set()
    downs: set[str] = set()
    try:
        paths = sorted(versions.glob("*.py"))
        for path in paths:
            if path.name.startswith((".#", "__init__")):
                continue
            values = _literals(ast.parse(path.read_bytes(), str(path)))
            revision, down = values.get("revision"), values.get("down_revision")
            if not isinstance(revision, str) or values.get("depends_on"):
                return ()
            if isinstance(down, str):
                downs.add(down)
            elif isinstance(down, tuple | list) and all(
                isinstance(each, str) for each in down
            ):
                downs.update(down)
            elif down is not None:
                return ()
            revisions.add(revision)
    except (OSError, SyntaxError, ValueError):
        return ()
    if not revisions or not downs <= revisions:
        return ()
    return (tuple(sorted(revisions - downs)),)


def _literals(module: ast.Module) -> dict[str, Any]:
    """The module-level ``name = literal`` (or ``name: T = literal``) of the
    three names Alembic reads; a name assigned twice or not plainly is absent."""
    found: dict[str, Any] = {}
    wanted = ("revision", "down_revision", "depends_on")
    for node in module.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in wanted:
            if target.id in found:
                raise ValueError(f"{target.id} is assigned twice")
            found[target.id] = ast.literal_eval(value)
    return found
