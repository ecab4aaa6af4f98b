"""Helpers shared by the registry's test modules: a tenant's settings, and
everything a caller can observe of the database, to compare before and after."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from dispatcher import Tenant, TenantChange, TenantRegistry

Write = Callable[[TenantRegistry], object]

#: The settings of the ``acme`` fixture's tenant: every kind of name, a nested config.
ACME_SETTINGS: dict[str, Any] = {
    "owner_email": "owner@acme.test",
    "subdomain": "acme",
    "path_prefix": "acme",
    "domains": ["shop.acme.com", "www.acme.com"],
    "config": {"a": 1, "b": 2, "nested": {"list": [1, 2], "flag": True}},
}


def state(registry: TenantRegistry) -> tuple[list[Tenant], int, list[TenantChange]]:
    """Everything a caller can observe of the database."""
    return (
        registry.list_tenants(),
        registry.latest_generation(),
        registry.changes_since(0),
    )


def unchanged_after(registry: TenantRegistry, write: Write, error: type) -> None:
    """``write`` raises ``error`` and leaves no trace."""
    before = state(registry)

    with pytest.raises(error):
        write(registry)

    assert state(registry) == before
