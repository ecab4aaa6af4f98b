"""The demo's tenant data: each site's board, owner and spent sign-in links,
in its own schema or SQLite file.

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

from sqlalchemy import Boolean, DateTime, Integer, String, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dispatcher.data import TenantData
from dispatcher.tenant import utcnow

__all__ = [
    "MAX_EMAIL",
    "MAX_ITEM",
    "MAX_ITEM_ID",
    "TENANTS_DIRECTORY",
    "Account",
    "Base",
    "Item",
    "Note",
    "SpentLink",
    "make_tenant_data",
]

#: The folder of the tenants' SQLite files, beside the registry's file.
TENANTS_DIRECTORY = "dispatcher-tenants"
#: The longest item on a board, in characters.
MAX_ITEM = 200
#: The largest task number a board can hold: PostgreSQL's INTEGER (int4). A
#: larger one, in an address, names no task (and would overflow the query).
MAX_ITEM_ID = 2**31 - 1
#: The longest e-mail address (RFC 5321's path limit).
MAX_EMAIL = 254


class Base(DeclarativeBase):
    """The demo tenant app's models: each tenant has its own copy of their tables."""


class Item(Base):
    """A task on the site's board."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(String(MAX_ITEM))
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )


#: The board item's name from when the demo kept notes: tests and probes that
#: need some tenant table with a ``body`` still use it.
Note = Item


class Account(Base):
    """Someone who may sign in to the site: its owner, made at signup.

    Kept in the site's own data, so no other site can read the password hash.
    """

    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Lower-cased, as the registry stores the owner's address.
    email: Mapped[str] = mapped_column(String(MAX_EMAIL), unique=True)
    #: werkzeug.security.generate_password_hash's output (method$salt$hash).
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow
    )


class SpentLink(Base):
    """A one-time sign-in link already used: the nonce makes it unusable again."""

    __tablename__ = "spent_links"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    spent_at: Mapped[dt.datetime] = mapped_column(
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
