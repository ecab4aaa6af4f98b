"""Schema migrations of the registry's database, with the bundled Alembic scripts.

Usage::

    from dispatcher.migrate import upgrade

    upgrade(registry.database)  # what registry.migrate() and 'tenantctl db upgrade' do

The only module that imports Alembic: ``import dispatcher`` does not, so a
serving process that never migrates never loads it. ``registry.migrate()``
imports this module when it runs.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config
from alembic.util import CommandError

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dispatcher.database import Database

__all__ = ["alembic_config", "upgrade"]


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config for the bundled migrations, bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(files("dispatcher.migrations")))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(database: Database, revision: str = "head") -> None:
    """Apply the migrations up to ``revision``, holding the registry's write lock.

    Raises ``ValueError`` for a revision Alembic does not know, and the
    registry's errors when the database cannot be reached.
    """
    # A migration's DDL may take long; its waits for locks may not.
    with database.write_connection(statement_timeout=0) as connection:
        try:
            command.upgrade(alembic_config(connection), revision)
        except CommandError as e:
            raise ValueError(f"cannot upgrade to revision {revision!r}: {e}") from e
