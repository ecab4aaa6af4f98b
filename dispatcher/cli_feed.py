"""``tenantctl feed``: the change feed (see :mod:`dispatcher.retention`)."""

from __future__ import annotations

import click

__all__ = ["feed"]


@click.group()
def feed() -> None:
    """The change feed every process follows."""
