"""Initial schema: users, tenants, domains and the change feed.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 04:28:28.518973

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
        "tenant_changes",
        sa.Column(
            "generation",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("operation", sa.String(length=32), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("generation", name=op.f("pk_tenant_changes")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("email = lower(email)", name=op.f("ck_users_email_lower")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=63), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("subdomain", sa.String(length=63), nullable=True),
        sa.Column("path_prefix", sa.String(length=63), nullable=True),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "active",
                "disabled",
                name="tenant_status",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("disabled_reason", sa.Text(), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "path_prefix = lower(path_prefix)",
            name=op.f("ck_tenants_path_prefix_lower"),
        ),
        sa.CheckConstraint("slug = lower(slug)", name=op.f("ck_tenants_slug_lower")),
        sa.CheckConstraint(
            "subdomain = lower(subdomain)", name=op.f("ck_tenants_subdomain_lower")
        ),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["users.id"],
            name=op.f("fk_tenants_owner_id_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("path_prefix", name=op.f("uq_tenants_path_prefix")),
        sa.UniqueConstraint("slug", name=op.f("uq_tenants_slug")),
        sa.UniqueConstraint("subdomain", name=op.f("uq_tenants_subdomain")),
    )
    op.create_index(op.f("ix_tenants_owner_id"), "tenants", ["owner_id"])
    op.create_table(
        "domains",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("host", sa.String(length=253), nullable=False),
        sa.Column("is_primary", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("host = lower(host)", name=op.f("ck_domains_host_lower")),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_domains_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_domains")),
        sa.UniqueConstraint("host", name=op.f("uq_domains_host")),
    )
    op.create_index(op.f("ix_domains_tenant_id"), "domains", ["tenant_id"])
    # At most one primary domain per tenant.
    op.create_index(
        "uq_domains_tenant_id_primary",
        "domains",
        ["tenant_id"],
        unique=True,
        sqlite_where=sa.text("is_primary"),
        postgresql_where=sa.text("is_primary"),
    )


def downgrade() -> None:
    op.drop_index("uq_domains_tenant_id_primary", table_name="domains")
    op.drop_index(op.f("ix_domains_tenant_id"), table_name="domains")
    op.drop_table("domains")
    op.drop_index(op.f("ix_tenants_owner_id"), table_name="tenants")
    op.drop_table("tenants")
    op.drop_table("users")
    op.drop_table("tenant_changes")
