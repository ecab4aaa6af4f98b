"""``tenantctl feed``: the change feed (see :mod:`dispatcher.retention`).

``tenantctl`` imports this module to register the group, so the helpers it
shares with it are imported when a command runs: the import graph stays
acyclic (``tests/test_layering.py``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

import click

from dispatcher.retention import FeedSummary, parse_duration, summarise
from dispatcher.settings import feed_retention

if TYPE_CHECKING:
    from dispatcher.retention import FeedRetention

__all__ = ["feed"]

_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object."
)


@click.group()
def feed() -> None:
    """The change feed every process follows."""


@feed.command()
@click.option(
    "--max-age",
    metavar="DURATION",
    help="Remove changes older than this (7d, 12h, 30m); default:"
    " $DISPATCHER_FEED_MAX_AGE, else 7d.",
)
@click.option(
    "--max-changes",
    metavar="N",
    help="Keep only the newest N changes; default: $DISPATCHER_FEED_MAX_CHANGES,"
    " else 100000.",
)
@_json_option
@click.pass_context
def prune(
    ctx: click.Context, max_age: str | None, max_changes: str | None, as_json: bool
) -> None:
    """Remove old changes now; the newest is always kept.

    A process that had not read a removed change drops what it built
    (it resynchronises) instead of missing it.
    """
    from dispatcher.cli import _registry

    retention = _retention(max_age, max_changes)
    registry = _registry(ctx)
    pruned = registry.prune_feed(retention)
    summary = summarise(registry.database)
    if as_json:
        click.echo(json.dumps({"removed": pruned.removed, **summary.to_dict()}))
        return
    click.echo(f"removed {pruned.removed} changes; {_kept(summary)}")


@feed.command()
@_json_option
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """The feed's size, its newest and its oldest change."""
    from dispatcher.cli import _registry

    summary = summarise(_registry(ctx, reads_only=True).database)
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
        return
    click.echo(_kept(summary))


def _retention(max_age: str | None, max_changes: str | None) -> FeedRetention:
    """The configured retention with the options' values instead, if given."""
    from dispatcher.cli import BadInput

    try:
        retention = feed_retention()
    except ValueError as e:
        raise BadInput(str(e)) from e
    changes: dict[str, Any] = {}
    if max_age is not None:
        try:
            changes["max_age"] = parse_duration(max_age)
        except ValueError as e:
            raise BadInput(f"--max-age: {e}") from e
    if max_changes is not None:
        changes["max_changes"] = _count(max_changes)
    try:
        return dataclasses.replace(retention, **changes)
    except ValueError as e:
        raise BadInput(f"--max-changes {max_changes!r}: {e}") from e


def _count(text: str) -> int:
    from dispatcher.cli import BadInput

    value = text.strip()
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise BadInput(
            f"--max-changes {text!r} must be a whole number of at least 1"
            " (the newest change is always kept)"
        )
    return int(value)


def _kept(summary: FeedSummary) -> str:
    if summary.oldest is None or summary.oldest_at is None:
        return "the feed is empty"
    kept = (
        f"kept {summary.changes} changes, generations {summary.oldest}"
        f" to {summary.newest}, the oldest written"
        f" {summary.oldest_at.isoformat(timespec='seconds')}"
    )
    if summary.resync_below is not None:
        kept += f"; a process behind generation {summary.resync_below} resynchronises"
    return kept
