"""Alembic history of the registry schema; ``TenantRegistry.migrate`` runs it."""
