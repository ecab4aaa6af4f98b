"""The demo's tenant data: each site's notes, in its own schema or SQLite file.

Usage::

    data = make_tenant_data("sqlite:///dispatcher.sqlite3")
    # -> files in dispatcher-tenants/, beside the registry's file
    data = make_tenant_data("postgresql+psycopg://app@db/saas")
    # -> a schema per tenant in the registry's own database

``dispatcher.wsgi`` and ``tenantctl`` build it from ``DISPATCHER_DATABASE_URL``
when ``DISPATCHER_TENANT_DATA`` is unset and the demo's app is served (see
:func:`dispatcher.settings.tenant_data`). Nothing here opens a connection or
touches a file: the engine connects, and the directory is made, when a
tenant's data is first created.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import DateTime, Integer, String, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dispatcher.data import TenantData
from dispatcher.tenant import utcnow

__all__ = ["MAX_NOTE", "TENANTS_DIRECTORY", "Base", "Note", "make_tenant_data"]

#: The folder of the tenants' SQLite files, beside the registry's file.
TENANTS_DIRECTORY = "dispatcher-tenants"
#: The longest note, in characters.
MAX_NOTE = 500


class Base(DeclarativeBase):
    """The demo tenant app's models: each tenant has its own copy of their tables."""


class Note(Base):
    """A note a visitor left on a site."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(String(MAX_NOTE))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )


def make_tenant_data(database_url: str) -> TenantData:
    """The demo's tenant data beside the registry at ``database_url``.

    PostgreSQL: a schema per tenant in the registry's database. SQLite: a file
    per tenant in :data:`TENANTS_DIRECTORY` in the registry file's folder.

    :raises ValueError: the registry is an in-memory SQLite database (there is
        no folder to put the files in), or neither SQLite nor PostgreSQL.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return TenantData(url, metadata=Base.metadata)
    database = url.database
    if not database or database == ":memory:" or url.query.get("mode") == "memory":
        raise ValueError(
            f"the registry {url.render_as_string()!r} is an in-memory SQLite"
            " database, with no folder to keep tenants' files in"
        )
    directory = Path(database).parent / TENANTS_DIRECTORY
    return TenantData("sqlite://", metadata=Base.metadata, directory=directory)
