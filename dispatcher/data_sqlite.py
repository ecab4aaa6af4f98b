"""SQLite tenant data: one file per tenant, one engine per file, opened on demand.

Used by :class:`dispatcher.data.TenantData`; usage::

    files = SqliteFiles(make_url("sqlite://"), Path("/var/lib/saas/tenants"))
    files.create("t_acme_1a2b3c4d", "acme", list(metadata.sorted_tables))
    with files.engine("t_acme_1a2b3c4d").connect() as connection: ...

Engines hold no connection between uses (``NullPool``): open files are bounded
by the connections in use, however many tenants are cached.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, Engine, Table, create_engine
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from dispatcher.data_archives import Archive, parse_archive
from dispatcher.exceptions import TenantDataError

__all__ = ["SqliteFiles"]

SUFFIX = ".sqlite3"


class SqliteFiles:
    """The tenants' SQLite files in one directory, and their engines."""

    def __init__(self, url: URL, directory: Path) -> None:
        self.url = url
        self.directory = directory
        self._lock = threading.Lock()
        self._engines: dict[str, Engine] = {}

    def path(self, name: str) -> Path:
        """The file of the tenant whose data is called ``name``."""
        return self.directory / f"{name}{SUFFIX}"

    def engine(self, name: str) -> Engine:
        """The tenant's engine; its file must exist (never created empty here)."""
        with self._lock:
            engine = self._engines.get(name)
            if engine is None:
                engine = self._engines[name] = self._open(name, "rw")
            return engine

    def dispose(self, name: str) -> None:
        """Forget the tenant's engine; the next use opens a new one."""
        with self._lock:
            engine = self._engines.pop(name, None)
        if engine is not None:
            engine.dispose()

    def dispose_all(self) -> None:
        """Forget every tenant's engine."""
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.dispose()

    def create(
        self,
        name: str,
        slug: str,
        tables: list[Table],
        then: Callable[[Connection], None],
    ) -> None:
        """Create the tenant's file and tables, then run ``then`` in the same
        transaction; on failure remove the file."""
        path = self.path(name)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            # "x": claiming the name fails if another tenant's file has it.
            path.open("xb").close()
        except FileExistsError:
            raise TenantDataError(
                f"file {str(path)!r} of tenant {slug!r} exists already;"
                " a tenant's data is created once"
            ) from None
        except OSError as error:
            raise TenantDataError(
                f"could not create file {str(path)!r} of tenant {slug!r}: {error}"
            ) from error
        engine = self._open(name, "rw")
        try:
            with engine.begin() as connection:
                # pysqlite begins before DML only: without this, each CREATE
                # would commit (and sync the file) on its own.
                connection.exec_driver_sql("BEGIN")
                for table in tables:
                    table.create(connection)
                then(connection)
        except SQLAlchemyError as error:
            engine.dispose()
            self.dispose(name)
            _remove(path)
            raise TenantDataError(
                f"could not create the tables of tenant {slug!r}"
                f" in {str(path)!r}: {error}"
            ) from error
        engine.dispose()

    def archive(self, name: str, target: str, slug: str) -> str | None:
        """Rename the tenant's file to ``target``; its name, or None if it has none."""
        self.dispose(name)
        path, archived = self.path(name), self.path(target)
        try:
            # link then unlink: unlike rename, never replaces an existing archive.
            os.link(path, archived)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise TenantDataError(
                f"could not archive file {str(path)!r} of tenant {slug!r}"
                f" as {str(archived)!r}: {error}"
            ) from error
        path.unlink()
        return target

    def archives(self, server: str) -> list[Archive]:
        """The archived files in the directory."""
        if not self.directory.is_dir():
            return []
        found = (
            parse_archive(path.name.removesuffix(SUFFIX), server)
            for path in self.directory.glob(f"t_*_archived_*{SUFFIX}")
        )
        return [archive for archive in found if archive is not None]

    def restore(self, archive: str, name: str, slug: str) -> None:
        """Make the archived file ``archive`` the file of the tenant called ``name``."""
        source, target = self.path(archive), self.path(name)
        try:
            # link then unlink: never replaces a file the tenant has meanwhile.
            os.link(source, target)
        except FileExistsError:
            raise TenantDataError(
                f"tenant {slug!r} has data already ({str(target)!r});"
                " archive it before restoring another copy"
            ) from None
        except OSError as error:
            raise TenantDataError(
                f"could not restore {str(source)!r} for tenant {slug!r}: {error}"
            ) from error
        source.unlink()

    def purge(self, archive: str) -> None:
        """Delete an archived file for good."""
        _remove(self.path(archive))

    def _open(self, name: str, mode: str) -> Engine:
        uri = f"{self.path(name).resolve().as_uri()}?mode={mode}"

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, check_same_thread=False)

        return create_engine(
            self.url,
            creator=connect,
            poolclass=NullPool,
            # Renders TENANT_SCHEMA in text() as "main": this file.
            execution_options={"schema_translate_map": {None: None}},
        )


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-journal")):
        leftover.unlink(missing_ok=True)
