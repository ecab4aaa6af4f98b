"""Items get a slug, filled in from their title.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 16:10:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("items", sa.Column("slug", sa.String(200), nullable=True))
    op.execute("UPDATE items SET slug = lower(title)")


def downgrade() -> None:
    op.drop_column("items", "slug")
