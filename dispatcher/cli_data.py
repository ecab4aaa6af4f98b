"""``tenantctl data``: the tenants' own data (see :mod:`dispatcher.data`).

The deployment's :class:`~dispatcher.data.TenantData` is named by
``DISPATCHER_TENANT_DATA=module:attribute``. Tenants are looked up in its
registry (``registry=``), else in tenantctl's (``--database-url``).

``tenantctl`` imports this module to register the group, so the helpers it
shares with it are imported when a command runs: the import graph stays
acyclic (``tests/test_layering.py``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy.exc import SQLAlchemyError

from dispatcher.data_move import move_data
from dispatcher.data_servers import DEFAULT_SERVER
from dispatcher.database import first_line
from dispatcher.exceptions import TenantDataError
from dispatcher.fleet import FleetUpgrade, Outcome, Status, Summary
from dispatcher.ledger import DataResult, LedgerEntry, parse_revision
from dispatcher.settings import TENANT_DATA_VARIABLE
from dispatcher.tenant import Tenant, utcnow

if TYPE_CHECKING:
    from dispatcher.data import TenantData
    from dispatcher.data_archives import Archive
    from dispatcher.registry import TenantRegistry

__all__ = ["data"]

_DAYS = re.compile(r"[0-9]+")


class _DataGroup(click.Group):
    """A data server's database errors as one line and exit 1.

    The registry turns its own into :class:`DispatcherError`, which
    ``tenantctl``'s group already shows that way.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SQLAlchemyError as e:
            from dispatcher.cli import Failed

            raise Failed(f"a data server failed: {first_line(e)}") from e


_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object."
)


@click.group(cls=_DataGroup)
def data() -> None:
    """Each tenant's own data: migrations, archives, servers."""


def _data(ctx: click.Context, *, reads_only: bool = False) -> TenantData:
    """The deployment's TenantData; bad input when there is none.

    ``reads_only``: the command only reads, so a registry that is a missing
    SQLite file is refused before anything connects to it.
    """
    from dispatcher.cli import BadInput, _tenant_data, refuse_missing_registry

    found = _tenant_data(ctx)
    if found is None:
        raise BadInput(
            f"set {TENANT_DATA_VARIABLE}=module:attribute to the deployment's"
            " TenantData: 'tenantctl data' works on it"
        )
    if reads_only:
        refuse_missing_registry(ctx.obj["database_url"])
    return found


def _tenants(ctx: click.Context, tenant_data: TenantData) -> TenantRegistry:
    """Where tenants are looked up: the data's own registry, else tenantctl's."""
    if tenant_data.registry is not None:
        return tenant_data.registry
    from dispatcher.cli import _registry

    return _registry(ctx)


def _echo(line: str) -> None:
    from dispatcher.cli import _escape

    click.echo(_escape(line))


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[str]]) -> str:
    from dispatcher.cli import _table as table

    return table(header, rows)


def _revisions(revisions: tuple[str, ...] | None) -> str:
    if revisions is None:
        return "unknown"
    return ", ".join(revisions) or "base"


# -- upgrade ----------------------------------------------------------------------


@data.command("upgrade")
@click.option(
    "--revision",
    metavar="REVISION",
    default="heads",
    show_default=True,
    help="The tenant migration revision to upgrade to.",
)
@click.option(
    "--jobs",
    default="1",
    show_default=True,
    metavar="N",
    help="Tenants upgraded at once, each job a process with one data connection.",
)
@click.option(
    "--only",
    multiple=True,
    metavar="SLUG",
    help="Upgrade only this tenant (repeat it, or separate slugs with commas).",
)
@click.option(
    "--exclude",
    multiple=True,
    metavar="SLUG",
    help="Leave this tenant alone (repeat it, or separate slugs with commas).",
)
@click.option(
    "--canary",
    default="0",
    metavar="K",
    help="Upgrade K tenants first, and stop there if one of them fails.",
)
@click.option(
    "--maintenance",
    is_flag=True,
    help="Put each tenant in maintenance mode during its own upgrade.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON line per tenant, then a summary."
)
@click.pass_context
def upgrade(
    ctx: click.Context,
    revision: str,
    jobs: str,
    only: tuple[str, ...],
    exclude: tuple[str, ...],
    canary: str,
    maintenance: bool,
    as_json: bool,
) -> None:
    """Run the tenant migrations in every tenant's data that is behind.

    The ledger (in the registry) says which tenants are behind, in one query;
    each tenant is upgraded in one transaction, JOBS at a time. A tenant that
    fails is recorded with its error and skipped; the run goes on and exits 1.
    Run it again to retry the failed and finish an interrupted run.

    With --maintenance each tenant answers 503 during its own upgrade; one in
    maintenance mode already stays in it, one whose upgrade failed too. A
    window a data upgrade opened (a failed or killed run) ends once a run,
    with or without --maintenance, has the tenant at the target.
    """
    from dispatcher.cli import BadInput, Failed, _progress

    tenant_data = _data(ctx)
    if tenant_data.migrations is None:
        raise Failed(
            f"the TenantData that {TENANT_DATA_VARIABLE} names has no tenant"
            " migrations; give it migrations='path/to/tenant_migrations'"
        )
    if not revision.strip():
        raise BadInput(f"--revision {revision!r} must name a revision, or 'heads'")
    job_count = _whole("--jobs", jobs, least=1)
    canary_count = _whole("--canary", canary, least=0)
    only_slugs, exclude_slugs = _slugs(only), _slugs(exclude)
    both = only_slugs.keys() & exclude_slugs.keys()
    if both:
        raise BadInput(
            f"--only and --exclude both name tenant {sorted(both)[0]!r};"
            " name each tenant in one of them"
        )
    registry = _tenants(ctx, tenant_data)
    fleet = FleetUpgrade(
        tenant_data,
        registry,
        revision.strip(),
        jobs=job_count,
        maintenance=maintenance,
    )
    entries, named_current = _choose(
        registry, fleet.behind(), only_slugs, exclude_slugs
    )
    targets = parse_revision(fleet.target) or ()
    target = _revisions(targets)
    report = _reporter(as_json)
    for slug in named_current:
        report(Outcome(slug, Status.CURRENT, targets, targets, None, 0.0))
    if not entries and not named_current:
        if as_json:
            click.echo(json.dumps(Summary().to_json()))
        else:
            click.echo(f"nothing to upgrade: no tenant is behind {target}")
        return
    with _progress(len(entries), "upgrading tenant data") as bar:

        def reported(outcome: Outcome) -> None:
            if sys.stderr.isatty():
                # Clear the bar's line: the tenant's line takes it, and the
                # bar is drawn again below.
                click.echo("\r\x1b[K", nl=False, err=True)
            report(outcome)
            bar.update(1)

        try:
            summary = fleet.run(entries, canary=canary_count, report=reported)
        except KeyboardInterrupt:
            click.echo(
                "interrupted: what finished is recorded; run 'tenantctl data"
                " upgrade' again to finish",
                err=True,
            )
            ctx.exit(130)
    summary.counts[Status.CURRENT] += len(named_current)
    if as_json:
        click.echo(json.dumps(summary.to_json()))
    else:
        counts = summary.counts
        left = summary.left_in_maintenance
        click.echo(
            f"{counts[Status.UPGRADED]} upgraded, {counts[Status.CURRENT]} needed"
            f" nothing, {counts[Status.FAILED]} failed"
            + (f", {summary.not_tried} not tried" if summary.not_tried else "")
            + (
                f"; {len(left)} left in maintenance mode: {_quoted(left)}"
                if left
                else ""
            )
        )
    if summary.canary_failed:
        raise Failed(
            f"the canary failed ({_quoted(summary.failed)}): stopped before the"
            f" other {summary.not_tried} tenant(s), which are untouched"
        )
    if summary.failed:
        raise Failed(
            f"{len(summary.failed)} tenant(s) failed ({_quoted(summary.failed)}),"
            " each recorded with its error; the next run retries them"
        )


def _choose(
    registry: TenantRegistry,
    behind: list[LedgerEntry],
    only: dict[str, str],
    exclude: dict[str, str],
) -> tuple[list[LedgerEntry], list[str]]:
    """The tenants to upgrade, and those ``only`` names that are at the target.

    :raises BadInput: ``only`` or ``exclude`` names a tenant that does not exist.
    """
    from dispatcher.cli import BadInput

    found = {entry.slug for entry in behind}
    # Named tenants the ledger does not list are at the target, or unknown.
    current = []
    for slug, spelled in {**only, **exclude}.items():
        if slug not in found and registry.find_by_slug(slug) is None:
            option = "--only" if slug in only else "--exclude"
            raise BadInput(f"{option} {spelled!r} names no tenant; nothing was changed")
        if slug in only and slug not in found:
            current.append(slug)
    entries = [
        entry
        for entry in behind
        if (not only or entry.slug in only) and entry.slug not in exclude
    ]
    return entries, current


def _reporter(as_json: bool) -> Callable[[Outcome], None]:
    """Print each tenant's outcome: a JSON line, or a line for people."""

    def report(outcome: Outcome) -> None:
        if as_json:
            click.echo(json.dumps(outcome.to_json()))
        elif outcome.status is Status.UPGRADED:
            _echo(
                f"tenant {outcome.slug!r}: upgraded from"
                f" {_revisions(outcome.before)} to {_revisions(outcome.after)}"
            )
        elif outcome.status is Status.CURRENT:
            _echo(f"tenant {outcome.slug!r}: at {_revisions(outcome.after)} already")
        else:
            kept = (
                "; left in maintenance mode (the run that upgrades it ends it,"
                f" or 'tenantctl maintenance off {outcome.slug}')"
                if outcome.left_in_maintenance
                else ""
            )
            _echo(f"tenant {outcome.slug!r}: failed: {outcome.error}{kept}")

    return report


def _whole(option: str, value: str, *, least: int) -> int:
    """A whole number of at least ``least``, or bad input naming the option."""
    from dispatcher.cli import BadInput

    if not _DAYS.fullmatch(value.strip()) or int(value) < least:
        raise BadInput(f"{option} {value!r} must be a whole number, {least} or more")
    return int(value)


def _slugs(values: Iterable[str]) -> dict[str, str]:
    """The slugs of repeated or comma-separated options: normalised -> as given."""
    slugs: dict[str, str] = {}
    for value in values:
        for each in value.split(","):
            if each.strip():
                slugs.setdefault(each.strip().lower(), each.strip())
    return slugs


def _quoted(slugs: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(repr(slug) for slug in slugs[:most])
    return shown + (f" and {len(slugs) - most} more" if len(slugs) > most else "")


# -- archives ---------------------------------------------------------------------


@data.command("archives")
@_json_option
@click.pass_context
def archives(ctx: click.Context, as_json: bool) -> None:
    """List the archived tenant data, oldest first."""
    found = _data(ctx, reads_only=True).archives()
    if as_json:
        click.echo(json.dumps([archive.to_dict() for archive in found], indent=2))
        return
    if not found:
        click.echo("no archives")
        return
    click.echo(_table(("ARCHIVE", "SERVER", "ORIGINAL", "ARCHIVED AT"), _rows(found)))


def _rows(archives: list[Archive]) -> list[tuple[str, ...]]:
    return [
        (archive.name, archive.server, archive.original, _when(archive.archived_at))
        for archive in archives
    ]


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@data.command("archive", short_help="Move tenant SLUG's data aside as an archive.")
@click.argument("slug")
@_json_option
@click.pass_context
def archive_(ctx: click.Context, slug: str, as_json: bool) -> None:
    """Move tenant SLUG's data aside as an archive (to restore an older one)."""
    tenant_data = _data(ctx)
    tenant = _tenants(ctx, tenant_data).get_tenant(slug)
    name = tenant_data.archive(tenant)
    if as_json:
        click.echo(json.dumps({"slug": tenant.slug, "archive": name}))
    elif name is None:
        _echo(f"tenant {tenant.slug!r} has no data to archive")
    else:
        _echo(f"archived the data of tenant {tenant.slug!r} as {name!r}")


@data.command("restore", short_help="Make ARCHIVE the data of tenant SLUG.")
@click.argument("archive")
@click.argument("slug")
@click.option(
    "--other-tenant",
    is_flag=True,
    help="ARCHIVE was another tenant's: give it to SLUG on purpose.",
)
@_json_option
@click.pass_context
def restore(
    ctx: click.Context, archive: str, slug: str, other_tenant: bool, as_json: bool
) -> None:
    """Make ARCHIVE the data of tenant SLUG again; SLUG must have no data."""
    tenant_data = _data(ctx)
    registry = _tenants(ctx, tenant_data)
    tenant = registry.get_tenant(slug)
    restored = tenant_data.restore(archive, tenant, other_tenant=other_tenant)
    server = tenant_data.server_of(restored)
    revision = None
    if tenant_data.migrations is not None:
        revision = tenant_data.revision(restored)
        # The ledger said where the data it replaced was: the next fleet
        # upgrade must find this one behind.
        registry.record_data_results([DataResult(restored.slug, revision, True)])
    if as_json:
        answer = {
            "archive": archive,
            "slug": restored.slug,
            "server": server,
            "revision": None if revision is None else list(revision),
        }
        click.echo(json.dumps(answer))
        return
    _echo(
        f"restored archive {archive!r} as the data of tenant {restored.slug!r}"
        f" on data server {server!r}"
    )
    if tenant_data.migrations is not None:
        _echo(
            f"it is at revision {_revisions(revision)} as"
            f" archived; 'tenantctl data upgrade --only {restored.slug}' upgrades it"
        )


@data.command("purge")
@click.option(
    "--older-than",
    "days",
    required=True,
    metavar="DAYS",
    help="Purge the archives made more than DAYS days ago (0: every archive).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_json_option
@click.pass_context
def purge(ctx: click.Context, days: str, yes: bool, as_json: bool) -> None:
    """Delete for good the archives older than DAYS days.

    Asks first, unless --yes; answering no purges nothing and exits 0.
    """
    from dispatcher.cli import BadInput, _confirm

    if not _DAYS.fullmatch(days.strip()):
        raise BadInput(
            f"--older-than {days!r} must be a whole number of days, 0 or more"
        )
    count = int(days)
    tenant_data = _data(ctx)
    now = utcnow()
    try:
        age = dt.timedelta(days=count)
        cutoff = now - age
    except OverflowError:  # before year 1: no archive is that old
        _purged([], as_json, f"no archive is older than {count} days")
        return
    due = [each for each in tenant_data.archives() if each.archived_at <= cutoff]
    if not due:
        _purged([], as_json, f"no archive is older than {count} days")
        return
    if not yes:
        # On stderr with the question, so that stdout keeps to the answer.
        table = _table(("ARCHIVE", "SERVER", "ORIGINAL", "ARCHIVED AT"), _rows(due))
        click.echo(table, err=as_json)
        if not _confirm(f"Delete these {len(due)} archive(s) for good?"):
            # The answer the question invited: not an error.
            _purged([], as_json, "nothing purged")
            return
    purged = tenant_data.purge(age, now=now)
    for archive in purged if not as_json else ():
        _echo(f"purged archive {archive.name!r} on data server {archive.server!r}")
    if as_json:
        _purged(purged, as_json, "")


def _purged(purged: Sequence[Archive], as_json: bool, text: str) -> None:
    if as_json:
        listed = [archive.to_dict() for archive in purged]
        click.echo(json.dumps({"purged": listed}))
    else:
        click.echo(text)


# -- servers and moves ------------------------------------------------------------


@data.command("move")
@click.argument("slug")
@click.argument("server")
@_json_option
@click.pass_context
def move(ctx: click.Context, slug: str, server: str, as_json: bool) -> None:
    """Move tenant SLUG's data to data server SERVER.

    The tenant is disabled while its data is copied, then served from SERVER;
    the old copy stays behind as an archive.
    """
    tenant_data = _data(ctx)
    tenant = _tenants(ctx, tenant_data).get_tenant(slug)
    moved = move_data(tenant_data, tenant, server)
    if as_json:
        answer = {
            "slug": moved.tenant.slug,
            "source": moved.source,
            "target": moved.target,
            "rows": moved.rows,
            "archive": moved.archive,
        }
        click.echo(json.dumps(answer))
        return
    _echo(
        f"moved tenant {moved.tenant.slug!r} from data server {moved.source!r} to"
        f" {moved.target!r} ({moved.rows} rows); the old copy is archive"
        f" {moved.archive!r} on {moved.source!r}"
    )


@data.command("servers")
@_json_option
@click.pass_context
def servers(ctx: click.Context, as_json: bool) -> None:
    """List the data servers and how many tenants each holds."""
    tenant_data = _data(ctx, reads_only=True)
    counts = _tenants(ctx, tenant_data).count_by_data_server()
    listed = _servers(tenant_data, counts)
    if as_json:
        click.echo(json.dumps(listed, indent=2))
        return
    rows = []
    for server in listed:
        notes = [
            note
            for note, applies in (
                ("default", server["default"]),
                ("not configured", not server["configured"]),
            )
            if applies
        ]
        name = server["name"] + (f" ({', '.join(notes)})" if notes else "")
        rows.append((name, str(server["tenants"]), server["location"] or "-"))
    click.echo(_table(("SERVER", "TENANTS", "LOCATION"), rows))


def _servers(
    tenant_data: TenantData, counts: dict[str | None, int]
) -> list[dict[str, Any]]:
    """Each configured server, then each recorded one that is not configured."""
    if tenant_data.servers is None:
        locations = {DEFAULT_SERVER: str(tenant_data.directory)}
        default = DEFAULT_SERVER
    else:
        locations = {
            name: url.render_as_string(hide_password=True)
            for name, url in tenant_data.servers.urls.items()
        }
        default = tenant_data.servers.default
    listed = [
        {
            "name": name,
            # No server recorded means the default one.
            "tenants": counts.get(name, 0)
            + (counts.get(None, 0) if name == default else 0),
            "default": name == default,
            "configured": True,
            "location": location,
        }
        for name, location in locations.items()
    ]
    for name, count in sorted(counts.items(), key=lambda item: str(item[0])):
        if name is not None and name not in locations:
            listed.append(
                {
                    "name": name,
                    "tenants": count,
                    "default": False,
                    "configured": False,
                    "location": None,
                }
            )
    return listed


@data.command("show")
@click.argument("slug")
@_json_option
@click.pass_context
def show(ctx: click.Context, slug: str, as_json: bool) -> None:
    """Show where tenant SLUG's data lives, and its migration revision."""
    tenant_data = _data(ctx, reads_only=True)
    tenant = _tenants(ctx, tenant_data).get_tenant(slug)
    shown = _show(tenant_data, tenant)
    if tenant.maintenance is not None:
        # Who opened it: a data upgrade's window ends with the run that has
        # the tenant at the target; an operator's with 'maintenance off'.
        shown["maintenance"] = tenant.maintenance.opened_by or "operator"
    if as_json:
        click.echo(json.dumps(shown, indent=2))
        return
    rows = []
    for key, value in shown.items():
        if isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, list):
            text = _revisions(tuple(value))
        else:
            text = "-" if value is None else str(value)
        rows.append((f"{key}:", text))
    click.echo(_table(None, rows))


def _show(tenant_data: TenantData, tenant: Tenant) -> dict[str, Any]:
    shown: dict[str, Any] = {"slug": tenant.slug}
    try:
        shown["server"] = tenant_data.server_of(tenant)
    except TenantDataError:
        # What to show when a server was renamed away: where the registry
        # says the data is, and that it cannot be reached from here.
        shown.update(server=tenant.data_server, configured=False)
        shown["schema"] = tenant_data.schema_name(tenant)
        return shown
    shown["schema"] = tenant_data.schema_name(tenant)
    shown["exists"] = exists = tenant_data.exists(tenant)
    if tenant_data.migrations is not None:
        shown["revision"] = list(tenant_data.revision(tenant)) if exists else None
    return shown
