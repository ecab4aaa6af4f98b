"""``tenantctl maintenance``: one tenant's maintenance mode (see
:mod:`dispatcher.maintenance`)."""

from __future__ import annotations

import click

__all__ = ["maintenance"]


@click.group()
def maintenance() -> None:
    """Take one tenant down for maintenance (503), or bring it back."""
