"""``tenantctl status``: one screen on the registry for an operator.

``tenantctl`` imports this module to register the command, so the helpers it
shares with it are imported when the command runs: the import graph stays
acyclic (``tests/test_layering.py``).
"""

from __future__ import annotations

import click

__all__ = ["status"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """The registry at a glance: where it is, its schema, tenants, the feed."""
    raise click.ClickException("not written yet")
