"""Create items.

Revision ID: 0001
Revises:
Create Date: 2026-12-01 16:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
    )
    op.create_index("ix_items_title", "items", ["title"])


def downgrade() -> None:
    op.drop_index("ix_items_title", table_name="items")
    op.drop_table("items")
