"""The demo's tenant data in tests: what exists beside a registry, and refusing it.

The demo keeps each tenant's data beside the registry at ``DISPATCHER_DATABASE_URL``
(:func:`dispatcher.demo.data.make_tenant_data`): files in a folder next to a
SQLite registry, schemas in a PostgreSQL registry's database.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from dispatcher.demo.data import TENANTS_DIRECTORY


def tenants_directory(database_url: str) -> Path:
    """Where the demo keeps the tenants' files beside a SQLite registry."""
    database = make_url(database_url).database
    assert database, database_url
    return Path(database).parent / TENANTS_DIRECTORY


def data_names(database_url: str) -> set[str]:
    """The files (by stem) beside a SQLite registry, or the schemas of a
    PostgreSQL one's database: compare before and after to see what was made."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        directory = tenants_directory(database_url)
        return {p.stem for p in directory.iterdir()} if directory.is_dir() else set()
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return set(connection.scalars(text("SELECT nspname FROM pg_namespace")))
    finally:
        engine.dispose()


@contextmanager
def refusing_tenant_data(database_url: str) -> Iterator[None]:
    """While inside, creating the demo's tenant data beside the registry fails.

    SQLite: a file stands where the tenants' folder would be. PostgreSQL: an
    event trigger refuses every ``CREATE TABLE``, so the schema is made and
    then its first table refused, in one transaction: nothing may remain.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        blocker = tenants_directory(database_url)
        blocker.write_text("a file where the tenants' folder would be")
        try:
            yield
        finally:
            blocker.unlink()
        return
    name = f"refuse_tables_{uuid.uuid4().hex[:8]}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(
                text(
                    f"CREATE FUNCTION {name}() RETURNS event_trigger"
                    " LANGUAGE plpgsql AS"
                    " $$ BEGIN RAISE EXCEPTION 'tables refused by the test'; END $$"
                )
            )
            connection.execute(
                text(
                    f"CREATE EVENT TRIGGER {name} ON ddl_command_end"
                    f" WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION {name}()"
                )
            )
        try:
            yield
        finally:
            with engine.connect() as connection:
                connection.execute(text(f"DROP EVENT TRIGGER {name}"))
                connection.execute(text(f"DROP FUNCTION {name}()"))
    finally:
        engine.dispose()
