"""Changes carry the names they introduce: a nullable JSON ``names`` column.

A follower then forgets only those names' "unknown host" answers instead of
re-asking about every host. Rows written before this revision keep NULL, which
reads back as "unknown": consumers must assume any name changed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 09:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: on both backends a metadata-only change, so the
    # feed (which only grows) is not rewritten and not locked for long.
    with op.batch_alter_table("tenant_changes") as batch_op:
        batch_op.add_column(sa.Column("names", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenant_changes") as batch_op:
        batch_op.drop_column("names")
