"""Moving a tenant's data from one PostgreSQL data server to another.

Usage::

    from dispatcher.data_move import move

    tenant = move(data, registry.get_tenant("acme"), "eu")
    tenant.data_server  # 'eu'

(``tenantctl data move SLUG SERVER`` does the same.) The tenant is unavailable
only while its data is copied:

1. Refusals come first, with nothing changed: a server that is not
   configured, the tenant's own server, no registry, no data to move, a
   schema of that name on the target already, or objects a move cannot copy.
2. The tenant is disabled (reason ``"moving data"``): every process answers
   its requests with the disabled page once it hears the change.
3. A source transaction locks every table of the tenant's schema
   ``IN ACCESS EXCLUSIVE MODE``, after the writes in flight (they are copied).
   A writer that has not heard of the disable waits behind the lock, and as
   PostgreSQL looks a name up again after waiting for a lock, its statement
   fails once the schema is renamed, instead of writing into the archive.
4. The schema as it really is (read from PostgreSQL's catalog: columns the
   models lack, the tenant migrations' version table, enum types, sequences)
   is rebuilt on the target under the same name, rows streamed table by table
   with ``COPY``. Constraints and indexes follow the rows, as in ``pg_dump``,
   so foreign keys in any order (cycles, a row referencing a later one) copy
   as they are; sequences and identity columns go on where the source's
   stopped, so a new row never reuses an id.
5. Still in the source transaction, the schema is renamed to its archive
   name; the target commits, then the source. A failure before the target
   commits rolls both back; if the source then fails to commit, the target's
   copy is dropped again. Either way the tenant is served from the source.
6. The registry records the new server, which makes every process evict the
   tenant's app (its engine points at the old server), and the tenant is
   enabled again if the move disabled it.

A move copies tables (with their columns, defaults, constraints, indexes and
rows), sequences and enum types. It refuses a schema holding views, functions,
triggers, policies, domains or other types, partitioned or inherited tables,
rather than leave them behind. Owners, grants and comments are not copied:
the target's connection role owns the copy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, CursorResult, text
from sqlalchemy.exc import DBAPIError

from dispatcher.data_archives import archived_name
from dispatcher.database import first_line
from dispatcher.exceptions import DispatcherError, TenantDataError
from dispatcher.tenant import Tenant, TenantStatus, utcnow

if TYPE_CHECKING:
    from dispatcher.data import TenantData
    from dispatcher.registry import TenantRegistry

__all__ = ["MOVE_LOCK", "MOVING", "Moved", "move", "move_data"]

#: The disabled reason a tenant carries while its data is copied.
MOVING = "moving data"

_DEADLOCK = "40P01"
#: Locking every table can lose a deadlock against a writer in flight.
_LOCK_ATTEMPTS = 3
#: The catalog renders every name outside it schema-qualified, so the
#: definitions read on the source mean the same on the target. SET LOCAL ends
#: with the move's own transaction: no pooled connection keeps it.
_CATALOG_ONLY = "SET LOCAL search_path TO pg_catalog"

_IN_SCHEMA = "(SELECT oid FROM pg_namespace WHERE nspname = :schema)"
#: Taken (and held until its transaction ends) by every move of one tenant:
#: a second move of it is refused at once instead of racing the first.
MOVE_LOCK = text("SELECT pg_try_advisory_xact_lock(32330, hashtext(:slug))")
_SCHEMA_EXISTS = text("SELECT 1 FROM pg_namespace WHERE nspname = :schema")
_NOT_COPIED = text(
    f"""
    SELECT kind, name FROM (
        SELECT CASE c.relkind WHEN 'v' THEN 'view'
                              WHEN 'm' THEN 'materialized view'
                              WHEN 'f' THEN 'foreign table'
                              WHEN 'p' THEN 'partitioned table'
                              ELSE 'type' END AS kind,
               c.relname::text AS name
        FROM pg_class c
        WHERE c.relnamespace = {_IN_SCHEMA} AND c.relkind IN ('v', 'm', 'f', 'p', 'c')
        UNION ALL
        SELECT 'function', p.proname::text FROM pg_proc p
        WHERE p.pronamespace = {_IN_SCHEMA}
        UNION ALL
        SELECT 'type', t.typname::text FROM pg_type t
        WHERE t.typnamespace = {_IN_SCHEMA}
          AND (t.typtype IN ('d', 'r', 'm')
               OR (t.typtype = 'b' AND t.typcategory <> 'A'))
        UNION ALL
        SELECT 'trigger', c.relname || '.' || g.tgname
        FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
        WHERE c.relnamespace = {_IN_SCHEMA} AND NOT g.tgisinternal
        UNION ALL
        SELECT 'policy', c.relname || '.' || y.polname
        FROM pg_policy y JOIN pg_class c ON c.oid = y.polrelid
        WHERE c.relnamespace = {_IN_SCHEMA}
        UNION ALL
        SELECT 'inherited table', c.relname::text
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE c.relnamespace = {_IN_SCHEMA}
    ) AS found
    ORDER BY kind, name
    """
)
_TABLES = text(
    f"""
    SELECT c.relname, c.relpersistence = 'u' FROM pg_class c
    WHERE c.relnamespace = {_IN_SCHEMA} AND c.relkind = 'r'
    ORDER BY c.relname
    """
)
_COLUMNS = text(
    f"""
    SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
           CASE WHEN a.attcollation <> t.typcollation
                THEN quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
           END,
           a.attnotnull, a.attidentity, a.attgenerated,
           pg_get_expr(d.adbin, d.adrelid)
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    JOIN pg_type t ON t.oid = a.atttypid
    LEFT JOIN pg_collation co ON co.oid = a.attcollation
    LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = {_IN_SCHEMA} AND c.relkind = 'r'
    ORDER BY c.relname, a.attnum
    """
)
_CONSTRAINTS = text(
    f"""
    SELECT c.relname, k.conname, k.contype, pg_get_constraintdef(k.oid)
    FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
    WHERE c.relnamespace = {_IN_SCHEMA} AND c.relkind = 'r'
      AND k.contype IN ('p', 'u', 'c', 'x', 'f')
    ORDER BY c.relname, k.conname
    """
)
# The indexes no constraint makes: a constraint's own comes with it.
_INDEXES = text(
    f"""
    SELECT c.relname, pg_get_indexdef(i.indexrelid)
    FROM pg_index i
    JOIN pg_class c ON c.oid = i.indrelid
    JOIN pg_class x ON x.oid = i.indexrelid
    WHERE c.relnamespace = {_IN_SCHEMA} AND c.relkind = 'r'
      AND NOT EXISTS (
          SELECT 1 FROM pg_constraint k
          WHERE k.conrelid = i.indrelid AND k.conindid = i.indexrelid
            AND k.contype IN ('p', 'u', 'x'))
    ORDER BY c.relname, x.relname
    """
)
# deptype 'a': a serial column's sequence (OWNED BY); 'i': an identity column's.
_SEQUENCES = text(
    f"""
    SELECT c.relname, format_type(s.seqtypid, NULL), s.seqincrement, s.seqmin,
           s.seqmax, s.seqstart, s.seqcache, s.seqcycle,
           d.deptype, t.relname, a.attname
    FROM pg_class c
    JOIN pg_sequence s ON s.seqrelid = c.oid
    LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
         AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
    LEFT JOIN pg_class t ON t.oid = d.refobjid
    LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
    WHERE c.relnamespace = {_IN_SCHEMA} AND c.relkind = 'S'
    ORDER BY c.relname
    """
)
_ENUMS = text(
    f"""
    SELECT t.typname,
           coalesce(string_agg(quote_literal(e.enumlabel), ', '
                               ORDER BY e.enumsortorder), '')
    FROM pg_type t LEFT JOIN pg_enum e ON e.enumtypid = t.oid
    WHERE t.typnamespace = {_IN_SCHEMA} AND t.typtype = 'e'
    GROUP BY t.typname
    ORDER BY t.typname
    """
)
_SETVAL = text("SELECT setval(:sequence, :value, :called)")


@dataclass(frozen=True, slots=True)
class Moved:
    """What :func:`move_data` did."""

    #: The tenant's snapshot after the move: ``data_server`` is the target.
    tenant: Tenant
    #: The server the data came from, where its old copy now is an archive.
    source: str
    #: The server the data lives on now.
    target: str
    #: The old copy's name on the source (see ``tenantctl data archives``).
    archive: str
    #: The rows copied, over every table.
    rows: int


def move(data: TenantData, tenant: Tenant, server: str) -> Tenant:
    """Move the tenant's data to the data server called ``server``.

    Returns the tenant's snapshot after the move. See :func:`move_data`.
    """
    return move_data(data, tenant, server).tenant


def move_data(data: TenantData, tenant: Tenant, server: str) -> Moved:
    """Copy the tenant's data to ``server``, switch the registry to it and
    archive the old copy; the tenant is disabled meanwhile (module docstring).

    :raises TenantDataError: the move was refused or failed; unless the
        message says otherwise, nothing was changed and the tenant is served
        from its old server (enabled again if it was active).
    """
    if data.servers is None or not isinstance(tenant, Tenant):
        _plan(data, tenant, server)  # refuses them with the reason
    assert data.servers is not None
    # Held for the whole move, on the first server every mover of this
    # deployment reaches; released at the end, or when this process dies.
    with data._shared(data.servers.default).connect() as guard:
        if not guard.scalar(MOVE_LOCK, {"slug": tenant.slug}):
            raise TenantDataError(
                f"a move of tenant {tenant.slug!r} is in progress; try again"
                " once it has finished"
            )
        try:
            return _move_data(data, tenant, server)
        finally:
            guard.rollback()


def _move_data(data: TenantData, tenant: Tenant, server: str) -> Moved:
    plan = _plan(data, tenant, server)
    registry, slug = plan.registry, plan.tenant.slug
    disabled = plan.tenant.status is TenantStatus.ACTIVE
    if disabled:
        registry.disable_tenant(slug, MOVING)
    try:
        archive, rows = _copy(data, plan)
    except BaseException as error:
        if disabled:
            _enable_after_failure(registry, slug, error)
        raise
    try:
        moved = registry.set_data_server(slug, plan.target)
    except DispatcherError as error:
        raise _unrecorded(data, plan, archive, error, disabled) from error
    if disabled:
        try:
            moved = _enable(registry, slug)
        except DispatcherError as error:
            raise TenantDataError(
                f"moved tenant {slug!r} to data server {plan.target!r}, but could"
                f" not enable it again: {error}; run 'tenantctl enable {slug}'"
            ) from error
    return Moved(moved, plan.source, plan.target, archive, rows)


@dataclass(frozen=True, slots=True)
class _Plan:
    registry: TenantRegistry
    #: The registry's current snapshot, not the caller's.
    tenant: Tenant
    schema: str
    source: str
    target: str
    tables: tuple[str, ...]


def _plan(data: TenantData, tenant: Tenant, server: str) -> _Plan:
    """Every refusal, before anything changes."""
    if not isinstance(tenant, Tenant):
        raise TypeError(f"tenant must be a Tenant, not {type(tenant).__name__}")
    servers = data.servers
    if servers is None:
        raise TenantDataError(
            f"cannot move tenant {tenant.slug!r} to {server!r}: moving is between"
            " PostgreSQL servers, and this tenant data is in SQLite files"
        )
    target = servers.check(server, tenant.slug)
    registry = data.registry
    if registry is None:
        raise TenantDataError(
            f"cannot move tenant {tenant.slug!r}: this TenantData has no"
            " registry= to record the tenant's new data server in"
        )
    current = registry.get_tenant(tenant.slug)
    schema = data.schema_name(current)
    if schema != data.schema_name(tenant):
        raise TenantDataError(
            f"tenant {tenant.slug!r} was re-created since this snapshot was taken;"
            " move the current one"
        )
    source = data.server_of(current)
    if source == target:
        raise TenantDataError(
            f"the data of tenant {current.slug!r} is on data server {target!r} already"
        )
    for name in (source, target):
        driver = servers.urls[name].get_driver_name()
        if driver != "psycopg":
            raise TenantDataError(
                f"data server {name!r} uses driver {driver!r}; a move streams rows"
                " with psycopg's COPY, so give it a 'postgresql+psycopg://' URL"
            )
    with data._shared(source).connect() as connection:
        if connection.scalar(_SCHEMA_EXISTS, {"schema": schema}) is None:
            raise TenantDataError(
                f"tenant {current.slug!r} has no data ({schema!r}) on data server"
                f" {source!r} to move"
            )
        _refuse_what_is_not_copied(connection, current.slug, schema)
        tables = tuple(
            row[0] for row in connection.execute(_TABLES, {"schema": schema})
        )
    with data._shared(target).connect() as connection:
        if connection.scalar(_SCHEMA_EXISTS, {"schema": schema}) is not None:
            raise TenantDataError(
                f"schema {schema!r} exists already on data server {target!r};"
                f" moving tenant {current.slug!r} there would mix two copies"
            )
    return _Plan(registry, current, schema, source, target, tables)


def _refuse_what_is_not_copied(connection: Connection, slug: str, schema: str) -> None:
    found = connection.execute(_NOT_COPIED, {"schema": schema}).all()
    if found:
        listed = ", ".join(f"{kind} {name!r}" for kind, name in found)
        raise TenantDataError(
            f"schema {schema!r} of tenant {slug!r} holds what a move does not copy:"
            f" {listed}; move those by hand, or drop them first"
        )


@dataclass(slots=True)
class _Table:
    name: str
    unlogged: bool
    #: Each column's definition in CREATE TABLE.
    columns: list[str] = field(default_factory=list)
    #: The columns COPY carries: all but the generated ones.
    copied: list[str] = field(default_factory=list)
    #: (name, contype, definition)
    constraints: list[tuple[str, str, str]] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Sequence:
    name: str
    options: str
    #: 'a': OWNED BY a serial column; 'i': an identity column's; None: neither.
    dependency: str | None
    owner: tuple[str, str] | None


@dataclass(slots=True)
class _Layout:
    tables: list[_Table]
    sequences: list[_Sequence]
    enums: list[tuple[str, str]]


def _copy(data: TenantData, plan: _Plan) -> tuple[str, int]:
    """Steps 3 to 5: the archive's name and the rows copied."""
    schema, slug = plan.schema, plan.tenant.slug
    archive = archived_name(schema, utcnow())
    with (
        data._shared(plan.source).connect() as source,
        data._shared(plan.target).connect() as target,
    ):
        source_transaction = source.begin()
        try:
            source.exec_driver_sql(_CATALOG_ONLY)
            _lock(source, schema, plan.tables)
            layout = _read(source, slug, schema, plan.tables)
            with target.begin():
                rows = _rebuild(source, target, schema, layout)
                _sql(
                    source, f"ALTER SCHEMA {_ident(schema)} RENAME TO {_ident(archive)}"
                )
        # COPY runs on psycopg itself, whose errors SQLAlchemy does not wrap.
        except (DBAPIError, source.dialect.loaded_dbapi.Error) as error:
            source_transaction.rollback()
            raise TenantDataError(
                f"could not copy the data of tenant {slug!r} from data server"
                f" {plan.source!r} to {plan.target!r}: {first_line(error)};"
                " nothing was changed"
            ) from error
        except BaseException:
            source_transaction.rollback()
            raise
        try:
            source_transaction.commit()
        except DBAPIError as error:
            # The target has committed. Did the source, before the error?
            committed = _renamed(data, plan.source, schema, archive)
            if committed is False:
                raise TenantDataError(
                    f"could not archive the data of tenant {slug!r} on data server"
                    f" {plan.source!r}: {first_line(error)}; nothing was changed"
                    + _drop_copy(data, plan)
                ) from error
            if committed is None:
                raise TenantDataError(
                    f"could not tell whether the data of tenant {slug!r} on data server"
                    f" {plan.source!r} was archived as {archive!r}:"
                    f" {first_line(error)}; a copy is on {plan.target!r} as"
                    f" {schema!r}. If {schema!r} is still on {plan.source!r}, drop"
                    " the copy; else the move needs finishing by hand"
                ) from error
    return archive, rows


def _lock(source: Connection, schema: str, tables: tuple[str, ...]) -> None:
    """Wait for the writes in flight, then hold every writer off."""
    if not tables:
        return
    names = ", ".join(f"{_ident(schema)}.{_ident(name)}" for name in tables)
    for attempt in range(1, _LOCK_ATTEMPTS + 1):
        savepoint = source.begin_nested()
        try:
            _sql(source, f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
        except DBAPIError as error:
            savepoint.rollback()
            deadlock = getattr(error.orig, "sqlstate", None) == _DEADLOCK
            if deadlock and attempt < _LOCK_ATTEMPTS:
                continue
            raise
        savepoint.commit()
        return


def _read(
    source: Connection, slug: str, schema: str, tables: tuple[str, ...]
) -> _Layout:
    """The locked schema as it is."""
    _refuse_what_is_not_copied(source, slug, schema)
    bound = {"schema": schema}
    by_name = {
        name: _Table(name, unlogged)
        for name, unlogged in source.execute(_TABLES, bound)
    }
    if tuple(by_name) != tables:
        raise TenantDataError(
            f"the tables of tenant {slug!r} changed while the move began"
            f" ({', '.join(tables)} became {', '.join(by_name)}); nothing was"
            " changed, move it again"
        )
    sequences = []
    identities: dict[tuple[str, str], _Sequence] = {}
    for (
        name,
        kind,
        increment,
        least,
        most,
        start,
        cache,
        cycle,
        dep,
        table,
        column,
    ) in source.execute(_SEQUENCES, bound):
        options = (
            f"INCREMENT BY {increment} MINVALUE {least} MAXVALUE {most}"
            f" START WITH {start} CACHE {cache} {'' if cycle else 'NO '}CYCLE"
        )
        owner = (table, column) if dep is not None else None
        if dep == "i":
            options = f"SEQUENCE NAME {_ident(schema)}.{_ident(name)} {options}"
        else:
            options = f"AS {kind} {options}"
        sequence = _Sequence(name, options, dep, owner)
        sequences.append(sequence)
        if dep == "i" and owner is not None:
            identities[owner] = sequence
    for (
        table,
        name,
        kind,
        collation,
        not_null,
        identity,
        generated,
        expression,
    ) in source.execute(_COLUMNS, bound):
        parts = [_ident(name), kind]
        if collation is not None:
            parts.append(f"COLLATE {collation}")
        if generated:  # 's'; PostgreSQL 18 adds 'v'
            kept = "STORED" if generated == "s" else "VIRTUAL"
            parts.append(f"GENERATED ALWAYS AS ({expression}) {kept}")
        elif identity:
            how = "ALWAYS" if identity == "a" else "BY DEFAULT"
            options = identities[(table, name)].options
            parts.append(f"GENERATED {how} AS IDENTITY ({options})")
        elif expression is not None:
            parts.append(f"DEFAULT {expression}")
        if not_null:
            parts.append("NOT NULL")
        by_name[table].columns.append(" ".join(parts))
        if not generated:
            by_name[table].copied.append(name)
    for table, name, kind, definition in source.execute(_CONSTRAINTS, bound):
        by_name[table].constraints.append((name, kind, definition))
    for table, definition in source.execute(_INDEXES, bound):
        by_name[table].indexes.append(definition)
    enums = [(name, labels) for name, labels in source.execute(_ENUMS, bound)]
    return _Layout(list(by_name.values()), sequences, enums)


def _rebuild(
    source: Connection, target: Connection, schema: str, layout: _Layout
) -> int:
    """The schema on the target, rows and all; returns the rows copied."""

    def run(statement: str) -> None:
        _sql(target, statement)

    quoted = _ident(schema)
    target.exec_driver_sql(_CATALOG_ONLY)
    run(f"CREATE SCHEMA {quoted}")
    for name, labels in layout.enums:
        run(f"CREATE TYPE {quoted}.{_ident(name)} AS ENUM ({labels})")
    for sequence in layout.sequences:
        if sequence.dependency != "i":  # an identity column makes its own
            run(f"CREATE SEQUENCE {quoted}.{_ident(sequence.name)} {sequence.options}")
    for table in layout.tables:
        persistence = "UNLOGGED " if table.unlogged else ""
        run(
            f"CREATE {persistence}TABLE {quoted}.{_ident(table.name)}"
            f" ({', '.join(table.columns)})"
        )
    rows = sum(_copy_rows(source, target, schema, table) for table in layout.tables)
    # Foreign keys last: they may point at any table's keys.
    for foreign in (False, True):
        for table in layout.tables:
            for name, kind, definition in table.constraints:
                if (kind == "f") is foreign:
                    run(
                        f"ALTER TABLE {quoted}.{_ident(table.name)}"
                        f" ADD CONSTRAINT {_ident(name)} {definition}"
                    )
            if not foreign:
                for index in table.indexes:
                    run(index)
    for sequence in layout.sequences:
        name = f"{quoted}.{_ident(sequence.name)}"
        if sequence.dependency == "a" and sequence.owner is not None:
            owner, column = sequence.owner
            run(
                f"ALTER SEQUENCE {name} OWNED BY"
                f" {quoted}.{_ident(owner)}.{_ident(column)}"
            )
        # Where the source's stopped: an id handed out there is never reused.
        state: Any = _sql(source, f"SELECT last_value, is_called FROM {name}")
        value, called = state.one()
        target.execute(_SETVAL, {"sequence": name, "value": value, "called": called})
    return rows


def _copy_rows(
    source: Connection, target: Connection, schema: str, table: _Table
) -> int:
    """Stream one table's rows with COPY (text format: types need no OIDs to match)."""
    columns = ", ".join(map(_ident, table.copied))
    name = f"{_ident(schema)}.{_ident(table.name)}"
    with _raw(source).cursor() as out_cursor, _raw(target).cursor() as in_cursor:
        with (
            out_cursor.copy(f"COPY {name} ({columns}) TO STDOUT") as out,
            in_cursor.copy(f"COPY {name} ({columns}) FROM STDIN") as into,
        ):
            for block in out:
                into.write(block)
        return int(in_cursor.rowcount)


def _renamed(data: TenantData, server: str, schema: str, archive: str) -> bool | None:
    """Whether the source's commit took effect: True, False, or None (unknown)."""
    try:
        with data._shared(server).connect() as connection:
            names = {
                name
                for name in (schema, archive)
                if connection.scalar(_SCHEMA_EXISTS, {"schema": name}) is not None
            }
    except DBAPIError:
        return None
    if names == {archive}:
        return True
    if names == {schema}:
        return False
    return None


def _drop_copy(data: TenantData, plan: _Plan) -> str:
    """Compensate: the target's copy goes, the source's data stays the tenant's.

    Returns what to add to the error's message.
    """
    try:
        with data._shared(plan.target).begin() as connection:
            _sql(connection, f"DROP SCHEMA {_ident(plan.schema)} CASCADE")
    except DBAPIError as failure:
        return (
            f"; but dropping the copy {plan.schema!r} on {plan.target!r} failed:"
            f" {first_line(failure)}, drop it by hand"
        )
    return f"; the copy on {plan.target!r} was dropped"


def _unrecorded(
    data: TenantData, plan: _Plan, archive: str, error: DispatcherError, disabled: bool
) -> TenantDataError:
    """The data moved but the registry did not record it: put it back."""
    slug = plan.tenant.slug
    try:
        with data._shared(plan.source).begin() as connection:
            _sql(
                connection,
                f"ALTER SCHEMA {_ident(archive)} RENAME TO {_ident(plan.schema)}",
            )
    except DBAPIError as failure:
        return TenantDataError(
            f"moved the data of tenant {slug!r} to data server {plan.target!r} but the"
            f" registry could not record it ({error}), and restoring the old copy"
            f" failed ({first_line(failure)}); the tenant stays disabled. Run"
            f" 'tenantctl data restore {archive} {slug}', drop schema"
            f" {plan.schema!r} on {plan.target!r}, then 'tenantctl enable {slug}'"
        )
    undone = TenantDataError(
        f"could not record data server {plan.target!r} for tenant {slug!r}:"
        f" {error}; the move was undone, its data is on {plan.source!r}"
        + _drop_copy(data, plan)
    )
    if disabled:
        _enable_after_failure(plan.registry, slug, undone)
    return undone


def _enable(registry: TenantRegistry, slug: str) -> Tenant:
    """Enable the tenant unless someone else disabled it meanwhile."""
    current = registry.get_tenant(slug)
    if current.status is TenantStatus.DISABLED and current.disabled_reason == MOVING:
        return registry.enable_tenant(slug)
    return current


def _enable_after_failure(
    registry: TenantRegistry, slug: str, error: BaseException
) -> None:
    try:
        _enable(registry, slug)
    except DispatcherError as failure:
        error.add_note(
            f"tenant {slug!r} stays disabled: enabling it failed ({failure});"
            f" run 'tenantctl enable {slug}'"
        )


def _sql(connection: Connection, statement: str) -> CursorResult[Any]:
    """Run a statement built from catalog definitions, which may hold ``%``:
    with no parameters passed, the driver reads no placeholders in it."""
    return connection.exec_driver_sql(
        statement, execution_options={"no_parameters": True}
    )


def _raw(connection: Connection) -> Any:
    """The psycopg connection under ``connection``, in its transaction."""
    return connection.connection.driver_connection


def _ident(name: str) -> str:
    """``name`` as one quoted PostgreSQL identifier, whatever it holds."""
    return '"' + name.replace('"', '""') + '"'
