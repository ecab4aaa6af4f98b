"""Schema migrations of the registry's database, with the bundled Alembic scripts.

Usage::

    from dispatcher.migrate import upgrade

    upgrade(registry.database)  # what registry.migrate() and 'tenantctl db upgrade' do
    schema_state(registry.schema_revisions())  # -> SchemaState.CURRENT

The only module that imports Alembic: ``import dispatcher`` does not, so a
serving process that never migrates never loads it. ``registry.migrate()``
imports this module when it runs.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum
from importlib.resources import files
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dispatcher.database import Database

__all__ = ["SchemaState", "alembic_config", "head_revisions", "schema_state", "upgrade"]


class SchemaState(StrEnum):
    """Where a registry's schema stands against the migrations this code has."""

    #: At the newest revision this code knows.
    CURRENT = "current"
    #: At an older one: ``tenantctl db upgrade`` brings it to the newest.
    BEHIND = "behind"
    #: At a revision this code does not know: a newer version migrated it.
    AHEAD = "ahead"
    #: Never migrated: no tenant tables.
    UNMIGRATED = "unmigrated"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the bundled migrations, bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(files("dispatcher.migrations")))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Apply the migrations up to ``revision``, holding the registry's write lock.

    Raises ``ValueError`` for a revision Alembic does not know, for ``base``
    (before every migration: Alembic would upgrade to it by doing nothing,
    and this never downgrades), and the registry's errors when the database
    cannot be reached.
    """
    if revision.strip().lower() == "base":
        raise ValueError(
            "cannot upgrade to revision 'base': it is before every migration,"
            " so upgrading to it changes nothing, and tenantctl never"
            " downgrades (that would drop the tenants)"
        )
    # A migration's DDL may take long; its waits for locks may not.
    with database.write_connection(statement_timeout=0) as connection:
        try:
            command.upgrade(alembic_config(connection), revision)
        except CommandError as e:
            raise ValueError(f"cannot upgrade to revision {revision!r}: {e}") from e


def head_revisions() -> tuple[str, ...]:
    """The newest revisions of the bundled migrations (one, unless they branch)."""
    return tuple(sorted(ScriptDirectory.from_config(alembic_config()).get_heads()))


def schema_state(revisions: Collection[str]) -> SchemaState:
    """How a schema at ``revisions`` (``registry.schema_revisions()``)
    compares with the bundled migrations."""
    if not revisions:
        return SchemaState.UNMIGRATED
    scripts = ScriptDirectory.from_config(alembic_config())
    if set(revisions) == set(scripts.get_heads()):
        return SchemaState.CURRENT
    for revision in revisions:
        try:
            known = scripts.get_revision(revision)
        except CommandError:
            known = None
        if known is None:
            return SchemaState.AHEAD
    return SchemaState.BEHIND
