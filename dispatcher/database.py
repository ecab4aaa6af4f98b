"""The registry's database: one engine with bounded waits, serialised writes,
and the driver's errors turned into the registry's own.

Usage::

    database = Database("sqlite:///dispatcher.sqlite3", timeout=5.0)
    rows = database.read(select(TenantRow.slug))  # RegistryUnavailable after ~5 s
    with database.write() as session:  # write-locked; rolled back unless committed
        session.add(row)
        session.commit()

No call waits without bound (``timeout``, 5 s by default): a read blocked by a
lock (a migration's ``ALTER TABLE``, ``LOCK TABLE``), a full pool or a server
that does not accept the connection raises :class:`RegistryUnavailable` after
about ``timeout`` seconds. On PostgreSQL each read runs in a transaction that
begins with ``SET LOCAL statement_timeout`` and ``lock_timeout``: settings that
travel with the transaction, so they hold behind PgBouncer in transaction mode
too (a ``SET`` at connect, or ``options=-c ...``, which PgBouncer refuses,
would not). Writes wait longer for each other: ``write_timeout``.

Writes are serialised (``BEGIN IMMEDIATE`` on SQLite, an advisory lock on
PostgreSQL), so the change feed's generations are handed out in commit order
and a follower reading ``generation > G`` never skips a change that commits
late. A database restart kills every pooled connection: a read, or a write
before it has written anything, is retried once on a fresh connection instead
of pinging before every checkout.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    URL,
    Connection,
    Engine,
    Executable,
    Row,
    create_engine,
    event,
    make_url,
    text,
)
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from dispatcher import forks
from dispatcher.exceptions import RegistryUnavailable, SchemaMissing
from dispatcher.notify import connect_timeout

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = [
    "DEFAULT_TIMEOUT",
    "MIN_WRITE_TIMEOUT",
    "Database",
    "check_timeout",
    "first_line",
]

log = logging.getLogger(__name__)

#: Seconds a read may wait for a lock, a pooled connection or a connect.
DEFAULT_TIMEOUT = 5.0
#: Writes queue behind each other (and behind migrations); they may wait at
#: least this long.
MIN_WRITE_TIMEOUT = 30.0
# Any constant works; it only has to be the same in every process.
_WRITE_LOCK_KEY = 0x7E4A47_5EED
_LOCK_WRITES = text(
    "SELECT set_config('statement_timeout', :statement, true), "
    "set_config('lock_timeout', :lock, true)"
)
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


class Database:
    """An engine set up for the registry, and the three ways the registry uses it.

    :param url_or_engine: a SQLAlchemy URL (``sqlite:///file``,
        ``postgresql+psycopg://...``) or an :class:`~sqlalchemy.Engine`, which
        stays the caller's (:meth:`close` leaves it open).
    :param timeout: seconds a read may wait (for a lock, a pooled connection,
        a connect, a statement) before it raises :class:`RegistryUnavailable`.
        Writes may wait ``max(timeout, 30)`` seconds. For a given Engine only
        the statement and lock waits apply: its pool and connect timeouts are
        its own.
    """

    def __init__(
        self, url_or_engine: str | URL | Engine, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.timeout = check_timeout(timeout)
        self.write_timeout = max(self.timeout, MIN_WRITE_TIMEOUT)
        if isinstance(url_or_engine, Engine):
            engine = url_or_engine
            self._owns_engine = False
        elif isinstance(url_or_engine, str | URL):
            engine = _create_engine(url_or_engine, self.timeout)
            self._owns_engine = True
        else:
            raise TypeError(
                "the registry needs a database URL or an Engine, "
                f"not {type(url_or_engine).__name__}"
            )
        self.engine = engine
        # One hook per process for all databases: see _forked.
        forks.on_fork_in_child(self, Database._forked)

    def _forked(self) -> None:
        """In a forked child: drop the parent's pooled connections."""
        # close=False: the parent still owns those sockets.
        self.engine.dispose(close=False)

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine; assigning one reconfigures the database for it."""
        return self._engine

    @engine.setter
    def engine(self, engine: Engine) -> None:
        self._engine = engine
        #: Whether the server is PostgreSQL (else SQLite).
        self.is_postgres = engine.dialect.name == "postgresql"
        read_ms, write_ms = _ms(self.timeout), _ms(self.write_timeout)
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine)
        # Same pool; the option makes SQLite take the write lock at BEGIN.
        self._writer = engine.execution_options(
            dispatcher_write=True, dispatcher_busy_ms=write_ms
        )
        # Reads are single statements: autocommit lets read() send BEGIN with
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

    @property
    def url(self) -> str:
        """The database URL with any password hidden, in its user part or in
        its query (libpq's ``password``, ``sslpassword``)."""
        url = self.engine.url
        hidden = {key: "***" for key in url.query if "password" in key.lower()}
        if not hidden:
            return url.render_as_string(hide_password=True)
        shown = url.update_query_dict(hidden).render_as_string(hide_password=True)
        return shown.replace("=%2A%2A%2A", "=***")  # as the user part shows it

    def __repr__(self) -> str:
        return f"<Database {self.url}>"

    def close(self) -> None:
        """Close the pooled connections of an engine this object created."""
        if self._owns_engine:
            self.engine.dispose()

    # -- reads ---------------------------------------------------------------------

    def read(
        self, statement: Executable, parameters: Mapping[str, Any] | None = None
    ) -> Sequence[Row[Any]]:
        """Run a read; once more on a fresh connection if the pooled one was dead.

        A database restart kills every pooled connection; the first use of one
        invalidates the pool, and the retry connects anew. This replaces a
        pre-ping round trip on every checkout.
        """
        with self.errors():
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
            if not self.is_postgres:
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

    # -- writes --------------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in a begun, write-locked transaction, rolled back unless
        committed; driver errors leave it as the registry's own.

        Nothing is written before the lock is taken, so a pooled connection
        found dead there is replaced once, as for reads.
        """
        # Imported here: reads (all that serving does) never load the ORM.
        from sqlalchemy.orm import Session

        with self.errors():
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

    @contextmanager
    def write_connection(
        self, *, statement_timeout: int | None = None
    ) -> Iterator[Connection]:
        """A connection in a write-locked transaction, committed at the end.

        :param statement_timeout: milliseconds a statement may run, 0 for no
            limit (a migration's DDL); None: the write timeout. Waits for a
            lock are bounded by the write timeout either way.
        """
        with self.errors(), self._writer.begin() as connection:
            self._lock_writes(connection, statement_timeout=statement_timeout)
            yield connection

    def _lock_writes(
        self, connection: Connection, *, statement_timeout: int | None = None
    ) -> None:
        """Bound the transaction's waits, then take the registry's write lock."""
        if not self.is_postgres:
            return  # BEGIN IMMEDIATE took it, waiting at most the busy timeout
        write_ms = _ms(self.write_timeout)
        if statement_timeout is None:
            statement_timeout = write_ms
        connection.execute(
            _LOCK_WRITES, {"statement": str(statement_timeout), "lock": str(write_ms)}
        )
        connection.execute(_ADVISORY_LOCK, {"key": _WRITE_LOCK_KEY})

    # -- errors --------------------------------------------------------------------

    @contextmanager
    def errors(self) -> Iterator[None]:
        """Turn driver errors into the registry's own, naming the database.

        An ``IntegrityError`` is the caller's to turn into a
        :class:`~dispatcher.exceptions.Conflict` before it gets here: only it
        knows what it tried to write.
        """
        try:
            yield
        except (OperationalError, ProgrammingError) as e:
            if _is_missing_table(e):
                raise SchemaMissing(
                    f"the database {self.url} has no tenant tables; "
                    "run 'tenantctl db upgrade' first"
                ) from e
            raise RegistryUnavailable(
                f"the database {self.url} is unavailable: {first_line(e)}"
            ) from e
        except PoolTimeout as e:
            raise RegistryUnavailable(
                f"the database {self.url} has no free connection: {e}"
            ) from e
        except DBAPIError as e:
            # Any other driver error is the database's trouble, not the caller's.
            raise RegistryUnavailable(
                f"the database {self.url} failed: {first_line(e)}"
            ) from e


def check_timeout(timeout: float) -> float:
    """``timeout`` as a float; raises if it is not a positive, finite number."""
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise TypeError(
            f"timeout must be a number of seconds, not {type(timeout).__name__}"
        )
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(
            f"timeout must be a positive, finite number of seconds, not {timeout!r}"
        )
    return float(timeout)


def _create_engine(url: str | URL, timeout: float) -> Engine:
    try:
        url = make_url(url)
        options: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql":
            options["connect_args"] = postgres_connect_args(url, timeout)
        elif url.get_backend_name() == "sqlite":
            # pysqlite's busy timeout until the first BEGIN sets the read or write
            # one: the connect event's PRAGMAs must not wait longer either.
            options["connect_args"] = {"timeout": timeout}
        # No pre-ping: reads retry once on a dead connection (see Database.read).
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


def postgres_connect_args(url: URL, timeout: float) -> dict[str, Any]:
    """The registry's psycopg arguments: safe behind a pooler, bounded connect."""
    args = pooler_safe_args(url)
    if "connect_timeout" not in url.query:
        args["connect_timeout"] = connect_timeout(timeout)
    return args


def pooler_safe_args(url: URL) -> dict[str, Any]:
    """Driver arguments for an engine that may sit behind a transaction pooler.

    psycopg prepares a statement it has run five times, and the prepared
    statement lives on the server connection; behind PgBouncer in transaction
    mode (before 1.21) that connection passes to other clients, whose own
    prepares then clash with it. The cost on a direct connection is a parse
    per statement. psycopg2 never prepares.
    """
    return {"prepare_threshold": None} if url.get_driver_name() == "psycopg" else {}


def _configure_sqlite(engine: Engine) -> None:
    """Make pysqlite transactional the SQLAlchemy way, and writers wait, not fail."""
    # Several databases may share one engine: install the listeners once.
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


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _is_missing_table(error: DBAPIError) -> bool:
    return getattr(error.orig, "sqlstate", None) == "42P01" or "no such table" in str(
        error.orig
    )


def first_line(error: BaseException) -> str:
    """The first line of an error's message, the driver's own under
    SQLAlchemy's wrapper: enough to name the cause."""
    cause = error.orig if isinstance(error, DBAPIError) else error
    lines = str(cause).strip().splitlines()
    return lines[0] if lines else type(cause).__name__
