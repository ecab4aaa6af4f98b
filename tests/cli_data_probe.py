"""The tenant data ``tests/test_cli_data.py`` names in ``DISPATCHER_TENANT_DATA``.

``DISPATCHER_TENANT_DATA=cli_data_probe:data`` (with ``tests/`` on the path).
In-process tests set ``data`` to a TenantData of their own; a ``tenantctl``
subprocess gets one built from ``$CLI_DATA_URL`` (and ``$CLI_DATA_DIRECTORY``
for SQLite files) when it names it.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from dispatcher.data import TenantData

URL_VARIABLE = "CLI_DATA_URL"
DIRECTORY_VARIABLE = "CLI_DATA_DIRECTORY"


class Base(DeclarativeBase):
    metadata = MetaData()


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))


def __getattr__(name: str) -> Any:
    # Read when named, not at import: each test has its own databases.
    if name == "data":
        return TenantData(
            os.environ[URL_VARIABLE],
            metadata=Base.metadata,
            directory=os.environ.get(DIRECTORY_VARIABLE),
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
