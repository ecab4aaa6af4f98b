"""Archived tenant data: how an archive is named, found and read back.

An archive is a tenant's schema (PostgreSQL) or file (SQLite) renamed to
``<schema name>_archived_<YYYYmmddHHMMSS>`` (UTC) when the tenant was removed.
The name alone says whose data it was and when it was set aside, so listing,
restoring and purging need no bookkeeping table that could disagree with the
database.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import Connection, text

from dispatcher.tenant import aware

__all__ = ["Archive", "archived_name", "list_schemas", "parse_archive"]

_STAMP = "%Y%m%d%H%M%S"
_ARCHIVE = re.compile(r"(t_[a-z0-9_]+)_archived_([0-9]{14})")
_ARCHIVED_SCHEMAS = text(
    "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_%\\_archived\\_%'"
    " ORDER BY nspname"
)


@dataclass(frozen=True, slots=True, order=True)
class Archive:
    """One archived tenant's data."""

    #: The archive's schema name (PostgreSQL) or file stem (SQLite).
    name: str
    #: The data server it lies on (``"default"`` for SQLite and single servers).
    server: str
    #: The schema or file name the tenant's data had.
    original: str
    #: When it was archived, UTC, to the second.
    archived_at: dt.datetime

    def to_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "server": self.server,
            "original": self.original,
            "archived_at": self.archived_at.isoformat(),
        }


def archived_name(name: str, when: dt.datetime) -> str:
    """The name ``name`` is archived under at ``when`` (UTC, to the second)."""
    return f"{name}_archived_{aware(when).astimezone(dt.UTC).strftime(_STAMP)}"


def parse_archive(name: str, server: str) -> Archive | None:
    """The archive called ``name``, or None when the name is not an archive's."""
    match = _ARCHIVE.fullmatch(name)
    if match is None:
        return None
    try:
        when = dt.datetime.strptime(match[2], _STAMP).replace(tzinfo=dt.UTC)
    except ValueError:
        return None
    return Archive(name=name, server=server, original=match[1], archived_at=when)


def list_schemas(connection: Connection, server: str) -> list[Archive]:
    """The archived tenant schemas of one PostgreSQL server."""
    archives = (
        parse_archive(name, server) for name in connection.scalars(_ARCHIVED_SCHEMAS)
    )
    return [archive for archive in archives if archive is not None]
