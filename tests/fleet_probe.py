"""The tenant data ``tests/test_fleet.py``'s tenantctl processes name.

``DISPATCHER_TENANT_DATA=fleet_probe:data`` (with ``tests/`` on the path):
built from ``$FLEET_DATA_URL`` (and ``$FLEET_DATA_DIRECTORY`` for SQLite
files) with the tenant migrations at ``$FLEET_MIGRATIONS``; tenants are looked
up in tenantctl's registry (``--database-url``).
"""

from __future__ import annotations

import os
from typing import Any

from cli_data_probe import Base

from dispatcher.data import TenantData

URL_VARIABLE = "FLEET_DATA_URL"
DIRECTORY_VARIABLE = "FLEET_DATA_DIRECTORY"
MIGRATIONS_VARIABLE = "FLEET_MIGRATIONS"
#: A directory where the gated migration says it was reached ("reached",
#: holding the pid of the process running it) and waits to be let through
#: ("release").
GATE_VARIABLE = "FLEET_GATE"

#: A tenant migration adding a column to ``items``. In a tenant holding an
#: item titled "block" it waits at the gate; "fail" makes it fail; "die"
#: kills the process running it.
GATED_REVISION = """
import os
import time
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _holds(title):
    found = sa.text("SELECT count(*) FROM items WHERE title = :title")
    return op.get_bind().execute(found, {"title": title}).scalar() > 0


def upgrade():
    op.add_column("items", sa.Column("note", sa.String(50)))
    gate = os.environ.get("FLEET_GATE")
    if gate and _holds("block"):
        Path(gate, "reached").write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not Path(gate, "release").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the gate was never opened")
            time.sleep(0.02)
    if _holds("fail"):
        raise RuntimeError("this tenant refuses revision 0002")
    if _holds("die"):  # the process running the migration is killed
        os.kill(os.getpid(), 9)


def downgrade():
    op.drop_column("items", "note")
"""


def __getattr__(name: str) -> Any:
    # Read when named, not at import: each test has its own databases.
    if name == "data":
        return TenantData(
            os.environ[URL_VARIABLE],
            metadata=Base.metadata,
            directory=os.environ.get(DIRECTORY_VARIABLE),
            migrations=os.environ[MIGRATIONS_VARIABLE],
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
