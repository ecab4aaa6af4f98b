"""``tenantctl data``: the tenants' own data (see :mod:`dispatcher.data`).

The deployment's :class:`~dispatcher.data.TenantData` is named by
``DISPATCHER_TENANT_DATA=module:attribute``.
"""

from __future__ import annotations

import click

__all__ = ["data"]


@click.group()
def data() -> None:
    """Each tenant's own data: migrations, archives, servers."""
