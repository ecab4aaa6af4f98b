"""``tenantctl status``: one screen on the registry for an operator.

Where the registry is (its URL, password hidden), whether its schema is the
newest this code knows, how many tenants it holds by status and in
maintenance, the change feed's newest generation and size, and its last few
changes. Every read is one cheap query: counts are GROUP BYs, changes are read
backwards from the feed's primary key, so it stays quick on 100,000 tenants.

It only reads, so it never creates a registry: a SQLite file that does not
exist is refused rather than created empty by connecting to it.

Exit codes, as every ``tenantctl`` command: 0 shown; 1 no registry to show
(an unmigrated database, after showing where it looked, a missing SQLite
file, an unreachable database); 2 bad input. A schema behind or ahead of this
code's is shown with exit 0: the registry is there and readable, and the
screen says what to run.

``tenantctl`` imports this module to register the command, so the helpers it
shares with it are imported when the command runs: the import graph stays
acyclic (``tests/test_layering.py``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from dispatcher.exceptions import DispatcherError
from dispatcher.retention import FeedSummary, summarise
from dispatcher.tenant import TenantStatus

if TYPE_CHECKING:
    from dispatcher.changes import TenantChange
    from dispatcher.migrate import SchemaState
    from dispatcher.registry import TenantRegistry

__all__ = ["DEFAULT_CHANGES", "MAX_CHANGES", "status"]

#: Changes shown unless ``--changes`` says otherwise; at most MAX_CHANGES.
DEFAULT_CHANGES = 10
MAX_CHANGES = 1000

_UPGRADE = "run 'tenantctl db upgrade'"


@click.command(short_help="The registry at a glance.")
@click.option(
    "--changes",
    "changes_option",
    metavar="N",
    default=str(DEFAULT_CHANGES),
    show_default=True,
    help=f"Show the newest N changes of the feed (0 to {MAX_CHANGES}).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def status(ctx: click.Context, changes_option: str, as_json: bool) -> None:
    """The registry at a glance: where it is, its schema, tenants, the feed."""
    from dispatcher.cli import Failed, _registry

    limit = _count(changes_option)
    registry = _registry(ctx, reads_only=True)
    report = _read(registry, limit)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.screen())
    if report.tenants is None:
        raise Failed(f"the database {report.database} is not migrated; {_UPGRADE}")


def _count(text: str) -> int:
    """``--changes``' value; one line naming it if it is not 0 to MAX_CHANGES."""
    from dispatcher.cli import BadInput

    value = text.strip()
    if not value.isascii() or not value.isdigit() or int(value) > MAX_CHANGES:
        raise BadInput(
            f"--changes {text!r} must be a whole number from 0 to {MAX_CHANGES}"
        )
    return int(value)


@dataclass(frozen=True)
class _Status:
    """What the screen shows; None: not read (an unmigrated database)."""

    database: str
    revisions: tuple[str, ...]
    heads: tuple[str, ...]
    state: SchemaState
    tenants: dict[TenantStatus, int] | None
    in_maintenance: int | None
    feed: FeedSummary | None
    changes: list[TenantChange] | None

    def to_dict(self) -> dict[str, Any]:
        tenants = None
        if self.tenants is not None:
            tenants = {
                "total": sum(self.tenants.values()),
                **{status.value: count for status, count in self.tenants.items()},
                "in_maintenance": self.in_maintenance,
            }
        return {
            "database": self.database,
            "schema": {
                "revision": ",".join(self.revisions) or None,
                "newest": ",".join(self.heads),
                "state": self.state.value,
            },
            "tenants": tenants,
            "feed": None if self.feed is None else self.feed.to_dict(),
            "changes": None
            if self.changes is None
            else [
                {
                    "generation": change.generation,
                    "changed_at": _when(change, timespec="auto"),
                    "slug": change.slug,
                    "operation": change.operation.value,
                }
                for change in self.changes
            ],
        }

    def screen(self) -> str:
        from dispatcher.cli import _table

        rows = [("database:", self.database), ("schema:", self._schema())]
        if self.tenants is not None:
            rows.append(("tenants:", _tenants(self.tenants, self.in_maintenance)))
        if self.feed is not None:
            rows.append(("feed:", _feed(self.feed)))
        text = _table(None, rows)
        if self.changes is None or self.tenants is None:
            return text
        if not self.changes:
            return f"{text}\n\nno changes"
        header = ("GENERATION", "TIME", "SLUG", "OPERATION")
        lines = [
            (
                str(change.generation),
                _when(change, timespec="seconds") or "-",
                change.slug or "-",
                change.operation.value,
            )
            for change in self.changes
        ]
        return f"{text}\n\n{_table(header, lines)}"

    def _schema(self) -> str:
        from dispatcher.migrate import SchemaState

        revision, newest = ",".join(self.revisions), ",".join(self.heads)
        if self.state is SchemaState.UNMIGRATED:
            return "not migrated"
        if self.state is SchemaState.CURRENT:
            return f"{revision}, the newest"
        if self.state is SchemaState.BEHIND:
            return f"{revision}, behind {newest}: {_UPGRADE}"
        return f"{revision}, newer than {newest} (this tenantctl's newest)"


def _read(registry: TenantRegistry, limit: int) -> _Status:
    """Everything the screen shows, a query each; the tenant and feed reads
    only once the schema has tenant tables."""
    from dispatcher.cli import Failed
    from dispatcher.migrate import SchemaState, head_revisions, schema_state

    revisions = registry.schema_revisions()
    state = schema_state(revisions)
    found = _Status(
        registry.url, revisions, head_revisions(), state, None, None, None, None
    )
    if state is SchemaState.UNMIGRATED:
        return found
    try:
        return _Status(
            found.database,
            revisions,
            found.heads,
            state,
            registry.count_by_status(),
            registry.count_in_maintenance(),
            summarise(registry.database),
            registry.recent_changes(limit) if limit else None,
        )
    except DispatcherError as e:
        if state is not SchemaState.BEHIND:
            raise
        # This code's queries may need columns a later revision adds.
        raise Failed(
            f"{e} (the schema is at {','.join(revisions)}, behind"
            f" {','.join(found.heads)}; {_UPGRADE})"
        ) from e


def _feed(summary: FeedSummary) -> str:
    if summary.oldest is None or summary.oldest_at is None:
        return "empty"
    text = (
        f"newest generation {summary.newest}, {summary.changes} changes kept"
        f" (the oldest {summary.oldest}, written"
        f" {summary.oldest_at.isoformat(timespec='seconds')})"
    )
    if summary.resync_below is not None:
        text += f"; a process behind generation {summary.resync_below} resynchronises"
    return text


def _tenants(counts: dict[TenantStatus, int], in_maintenance: int | None) -> str:
    by_status = ", ".join(f"{count} {status.value}" for status, count in counts.items())
    return f"{sum(counts.values())} ({by_status}); {in_maintenance} in maintenance"


def _when(change: TenantChange, *, timespec: str) -> str | None:
    """When the change was written, in UTC; None if the row did not say."""
    if change.changed_at is None:
        return None
    return change.changed_at.isoformat(timespec=timespec)
