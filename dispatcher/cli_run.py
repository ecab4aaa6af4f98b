"""``tenantctl run`` and ``tenantctl each``: a tenant app's own Flask commands,
in one tenant or in every tenant (see :mod:`dispatcher.contexts`)."""

from __future__ import annotations

import click

__all__ = ["each", "run"]


@click.command()
def run() -> None:
    """Run one of a tenant app's Flask commands in that tenant."""


@click.command()
def each() -> None:
    """Run one of the tenant apps' Flask commands in every tenant."""
