"""Where each tenant's data lives: a nullable, indexed ``tenants.data_server``.

The name of a server of the deployment's TenantData configuration; NULL until
a tenant is placed (every tenant of an older registry). The index serves
placement, which counts tenants per server.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: a metadata-only change on both backends, so the
    # tenants table is neither rewritten nor locked for long.
    op.add_column(
        "tenants", sa.Column("data_server", sa.String(length=63), nullable=True)
    )
    op.create_index(op.f("ix_tenants_data_server"), "tenants", ["data_server"])


def downgrade() -> None:
    op.drop_index(op.f("ix_tenants_data_server"), table_name="tenants")
    # In place, never by batch mode's copy of the table: on SQLite, dropping
    # the old tenants table with foreign keys enforced (as the registry's
    # connections do) would cascade to every domain. SQLite drops an
    # unindexed, unconstrained column in place since 3.35.
    op.drop_column("tenants", "data_server")
