"""Fleet operations: a data-migration ledger and maintenance mode per tenant,
and an index that lets the change feed be pruned by age.

``tenants`` gains, all nullable with no default (metadata-only changes on both
backends, so the table is neither rewritten nor locked for long):

- ``data_revision``: the tenant-migration revisions its data is at
  (comma-separated heads; empty: base), as the last fleet upgrade recorded;
  NULL: never recorded.
- ``data_target``: set while an upgrade to that revision may be in flight; a
  run killed mid-way leaves it, so the ledger says "at ``data_revision`` or
  ``data_target``" rather than something untrue.
- ``data_migrated_at``: when ``data_revision`` was recorded.
- ``data_error``: the last failed upgrade's error; NULL once one succeeds.
- ``maintenance``: NULL, or the maintenance mode the tenant is in (JSON: since,
  retry_after, message and the key its bypass cookies are signed with).
- ``maintenance_bypass``: the SHA-256 of the unused one-time bypass token.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 09:00:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    ("data_revision", sa.String(length=255)),
    ("data_target", sa.String(length=255)),
    ("data_migrated_at", sa.DateTime(timezone=True)),
    ("data_error", sa.Text()),
    ("maintenance", sa.JSON()),
    ("maintenance_bypass", sa.String(length=64)),
)


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("tenants", sa.Column(name, type_, nullable=True))
    op.create_index(
        op.f("ix_tenant_changes_changed_at"), "tenant_changes", ["changed_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_tenant_changes_changed_at"), table_name="tenant_changes")
    # In place, never by batch mode's copy of the table (see 0003): SQLite
    # drops an unindexed, unconstrained column in place since 3.35.
    for name, _ in reversed(_COLUMNS):
        op.drop_column("tenants", name)
