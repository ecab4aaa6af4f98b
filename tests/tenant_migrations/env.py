"""Alembic environment of the test tenants' models.

Each run migrates one tenant: run it through
``dispatcher.data_migrations.TenantMigrations``, not plain ``alembic``.
"""

from tenant_models import Base

from dispatcher.data_migrations import run_migrations

run_migrations(Base.metadata)
