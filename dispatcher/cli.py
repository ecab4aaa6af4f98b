"""``tenantctl``: the admin tool. It parses and prints; the registry decides.

Exit codes: 0 success, 1 a conflict, an unknown tenant or an unavailable
database, 2 bad input. Errors are one line on stderr, never a traceback.
Plain-text output escapes every character a terminal would obey instead of
show (``\\x1b``, ``\\n``, ``\\u202e``), whatever the database holds.
"""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dispatcher.configtext import parse_value
from dispatcher.csvfile import BadFile, RowError, read_tenants
from dispatcher.exceptions import (
    DispatcherError,
    InvalidConfig,
    InvalidName,
)
from dispatcher.imports import ImportStatus
from dispatcher.provisioning import Provisioner
from dispatcher.registry import TenantRegistry
from dispatcher.settings import (
    BASE_DOMAIN_VARIABLE,
    DATABASE_URL_VARIABLE,
    DEFAULT_BASE_DOMAIN,
    TENANT_DATA_VARIABLE,
    feed_retention,
    parse_base_domain,
    tenant_data,
)
from dispatcher.settings import base_domain as default_base_domain
from dispatcher.settings import database_url as default_database_url
from dispatcher.tenant import Tenant, TenantFields, TenantStatus
from dispatcher.validation import normalise_reason

if TYPE_CHECKING:
    from typing import Unpack

    from dispatcher.data import TenantData

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])


class _OneLine(click.ClickException):
    """An error shown as one line, whatever characters its message holds."""

    def format_message(self) -> str:
        return _escape(self.message)


class BadInput(_OneLine):
    """The user asked for something invalid; nothing was changed."""

    exit_code = 2


class Failed(_OneLine):
    """The request was valid but could not be carried out; nothing was changed."""

    exit_code = 1


def one_line(error: DispatcherError) -> BadInput | Failed:
    """The registry's error as tenantctl shows it: a name or config it refused
    is bad input (exit 2), anything else a failure (exit 1)."""
    if isinstance(error, InvalidName | InvalidConfig):
        return BadInput(str(error))
    return Failed(str(error))


class _Group(click.Group):
    """Turns the registry's errors into one-line messages with the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DispatcherError as e:
            raise one_line(e) from e


def _registry(ctx: click.Context) -> TenantRegistry:
    """The registry for this invocation, opened on first use."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "registry" not in obj:
        try:
            # The server's retention: this process's first write prunes.
            retention = feed_retention()
        except ValueError as e:
            raise BadInput(str(e)) from e  # it names the variable
        try:
            obj["registry"] = TenantRegistry(
                obj["database_url"],
                base_domain=obj["base_domain"],
                retention=retention,
            )
        except ValueError as e:
            # The registry's message names the argument it refused.
            source = (
                f"--base-domain or ${BASE_DOMAIN_VARIABLE}"
                if str(e).startswith("base_domain")
                else f"--database-url or ${DATABASE_URL_VARIABLE}"
            )
            raise BadInput(f"{e}; check {source}") from e
        ctx.call_on_close(obj["registry"].close)
    registry: TenantRegistry = obj["registry"]
    return registry


def _tenant_data(ctx: click.Context) -> TenantData | None:
    """The deployment's tenant data (``DISPATCHER_TENANT_DATA``), or None.

    Found as the server finds it, with this invocation's database URL, so the
    demo's default lies beside the registry this command writes to.
    """
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "tenant_data" not in obj:
        environ = {**os.environ, DATABASE_URL_VARIABLE: obj["database_url"]}
        try:
            data = tenant_data(environ)
        except ValueError as e:
            raise BadInput(str(e)) from e
        if data is not None:
            ctx.call_on_close(data.dispose)
        obj["tenant_data"] = data
    found: TenantData | None = obj["tenant_data"]
    return found


def _json_option(function: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(function)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--database-url",
    metavar="URL",
    help=f"Registry database; default ${DATABASE_URL_VARIABLE} or a SQLite file "
    "'dispatcher.sqlite3' in the current directory.",
)
@click.option(
    "--base-domain",
    metavar="HOST",
    help=f"Domain tenants' subdomains live under, as the server routes them; "
    f"custom domains under it are refused. Default ${BASE_DOMAIN_VARIABLE} or "
    f"'{DEFAULT_BASE_DOMAIN}'; empty: none.",
)
@click.version_option(package_name="flask-tenant-dispatcher")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, base_domain: str | None) -> None:
    """Manage the tenants of a tenant-aware Flask deployment."""
    obj = ctx.ensure_object(dict)
    obj["database_url"] = database_url or default_database_url()
    obj["base_domain"] = (
        default_base_domain() if base_domain is None else parse_base_domain(base_domain)
    )


# -- db ---------------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Manage the registry's database schema."""


@db.command("upgrade")
@click.argument("revision", default="head")
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str) -> None:
    """Apply the schema migrations (up to REVISION, default head)."""
    registry = _registry(ctx)
    try:
        registry.migrate(revision)
    except ValueError as e:
        raise BadInput(str(e)) from e
    click.echo(_escape(f"database {registry.url} upgraded to {revision}"))


# -- tenants ----------------------------------------------------------------------


@cli.command()
@click.argument("slug")
@click.option("--owner", "owner_email", required=True, help="Owner's e-mail.")
@click.option("--owner-name", help="Owner's name.")
@click.option("--subdomain", help="Route <subdomain>.<base domain> to the tenant.")
@click.option("--path-prefix", help="Route /<prefix>/... to the tenant.")
@click.option(
    "--domain",
    "domains",
    multiple=True,
    metavar="HOST",
    help="Custom host name; repeat for more, the first is primary.",
)
@click.option(
    "--config",
    "config_items",
    multiple=True,
    metavar="KEY=VALUE",
    help="Config entry; VALUE is JSON if it parses, else a string. Repeatable.",
)
@click.option(
    "--data-server",
    metavar="NAME",
    help="The configured data server to hold its data; default: the one with "
    "the fewest tenants.",
)
@_json_option
@click.pass_context
def add(
    ctx: click.Context,
    slug: str,
    config_items: tuple[str, ...],
    as_json: bool,
    **fields: Unpack[TenantFields],
) -> None:
    """Create tenant SLUG, and its data when the deployment has tenant data."""
    fields["config"] = dict(_config_item(item) for item in config_items)
    registry = _registry(ctx)
    data = _tenant_data(ctx)
    server = fields.get("data_server")
    if server is not None:
        _check_data_server(data, server)
    if data is None:
        tenant = registry.create_tenant(slug, **fields)
        _print_tenant(tenant, as_json, f"created tenant {tenant.slug!r}")
        return
    # Served only once its data exists; a failed creation leaves no tenant. No
    # archive as its undo: the one thing that can fail is create, which leaves
    # nothing, and archiving after a name clash would move the clashing data.
    tenant = Provisioner(registry, on_create=[data.create]).create(slug, **fields)
    name = data.schema_name(tenant)
    headline = f"created tenant {tenant.slug!r}; its data is in {name!r}"
    _print_tenant(tenant, as_json, headline)


def _check_data_server(data: TenantData | None, server: str) -> None:
    """Refuse a placement nothing would honour, before anything is written."""
    if data is None:
        raise BadInput(
            f"--data-server {server!r} places a tenant's data, but"
            f" ${TENANT_DATA_VARIABLE} names no tenant data"
        )
    if data.servers is None:
        raise BadInput(
            f"--data-server {server!r}: this deployment's tenant data is SQLite"
            " files, on no named server"
        )
    try:
        data.servers.check(server)
    except DispatcherError as e:
        raise BadInput(f"--data-server: {e}") from e


def _config_item(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise BadInput(f"--config {item!r} must look like KEY=VALUE")
    return key, parse_value(value)


@cli.command("list")
@click.option(
    "--status",
    type=click.Choice([status.value for status in TenantStatus]),
    help="Only tenants with this status.",
)
@_json_option
@click.pass_context
def list_(ctx: click.Context, status: str | None, as_json: bool) -> None:
    """List tenants."""
    tenants = _registry(ctx).list_tenants(status)
    if as_json:
        click.echo(json.dumps([tenant.to_dict() for tenant in tenants], indent=2))
        return
    if not tenants:
        click.echo("no tenants")
        return
    header = ("SLUG", "STATUS", "SUBDOMAIN", "PATH PREFIX", "DOMAINS", "OWNER")
    rows = [
        (
            t.slug,
            t.status.value,
            t.subdomain or "-",
            t.path_prefix or "-",
            ",".join(t.domains) or "-",
            t.owner_email,
        )
        for t in tenants
    ]
    click.echo(_table(header, rows))


@cli.command()
@click.argument("slug")
@_json_option
@click.pass_context
def show(ctx: click.Context, slug: str, as_json: bool) -> None:
    """Show tenant SLUG."""
    _print_tenant(_registry(ctx).get_tenant(slug), as_json)


@cli.command()
@click.argument("slug")
@click.option("--reason", help="Why, shown to admins (e.g. 'unpaid').")
@_json_option
@click.pass_context
def disable(ctx: click.Context, slug: str, reason: str | None, as_json: bool) -> None:
    """Stop serving tenant SLUG; its visitors get the disabled page."""
    tenant = _registry(ctx).disable_tenant(slug, normalise_reason(reason))
    _print_tenant(tenant, as_json, f"disabled tenant {tenant.slug!r}")


@cli.command()
@click.argument("slug")
@_json_option
@click.pass_context
def enable(ctx: click.Context, slug: str, as_json: bool) -> None:
    """Serve tenant SLUG again."""
    tenant = _registry(ctx).enable_tenant(slug)
    _print_tenant(tenant, as_json, f"enabled tenant {tenant.slug!r}")


@cli.command()
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def remove(ctx: click.Context, slug: str, yes: bool) -> None:
    """Delete tenant SLUG and its domains; archive its data, never drop it."""
    registry = _registry(ctx)
    data = _tenant_data(ctx)
    tenant = registry.get_tenant(slug)
    question = f"Delete tenant {tenant.slug!r} and its domains?"
    if data is not None:
        question += " (Its data is archived, not deleted.)"
    if not yes and not _confirm(question):
        raise Failed(f"tenant {tenant.slug!r} not removed; pass --yes to skip asking")
    if data is None:
        registry.delete_tenant(tenant.slug)
        click.echo(f"removed tenant {tenant.slug!r}")
        return
    archives: list[str | None] = []

    def archive(removed: Tenant) -> None:
        archives.append(data.archive(removed))

    # Disabled first, so nothing writes while its data is moved aside; a failed
    # archive leaves it disabled, not deleted.
    Provisioner(registry, on_delete=[archive]).delete(tenant.slug)
    archived = archives[0] if archives else None
    click.echo(
        _escape(
            f"removed tenant {tenant.slug!r}; its data is archived as {archived!r}"
            if archived is not None
            else f"removed tenant {tenant.slug!r}; it had no data to archive"
        )
    )


def _confirm(question: str) -> bool:
    try:
        return click.confirm(question, err=True)
    except click.Abort:  # end of input: no answer is not a yes
        click.echo(err=True)
        return False


# -- config -----------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Change a tenant's config."""


@config.command("set")
@click.argument("slug")
@click.argument("key")
@click.argument("value")
@click.option("--string", "as_string", is_flag=True, help="Store VALUE as a string.")
@_json_option
@click.pass_context
def config_set(
    ctx: click.Context, slug: str, key: str, value: str, as_string: bool, as_json: bool
) -> None:
    """Set KEY to VALUE (JSON if it parses, else a string) in SLUG's config."""
    parsed = value if as_string else parse_value(value)
    tenant = _registry(ctx).update_config(slug, {key: parsed})
    _print_tenant(tenant, as_json, f"tenant {tenant.slug!r}: set {key!r}")


@config.command("unset")
@click.argument("slug")
@click.argument("keys", nargs=-1, required=True)
@_json_option
@click.pass_context
def config_unset(
    ctx: click.Context, slug: str, keys: tuple[str, ...], as_json: bool
) -> None:
    """Remove KEYS from SLUG's config."""
    tenant = _registry(ctx).unset_config(slug, *keys)
    _print_tenant(tenant, as_json, f"tenant {tenant.slug!r}: unset {', '.join(keys)}")


# -- domains ----------------------------------------------------------------------


@cli.group()
def domain() -> None:
    """Add or remove a tenant's custom host names."""


@domain.command("add")
@click.argument("slug")
@click.argument("host")
@click.option("--primary", is_flag=True, help="Make HOST the primary domain.")
@_json_option
@click.pass_context
def domain_add(
    ctx: click.Context, slug: str, host: str, primary: bool, as_json: bool
) -> None:
    """Route HOST to tenant SLUG."""
    tenant = _registry(ctx).add_domain(slug, host, primary=primary)
    _print_tenant(tenant, as_json, f"tenant {tenant.slug!r}: added {host!r}")


@domain.command("remove")
@click.argument("slug")
@click.argument("host")
@_json_option
@click.pass_context
def domain_remove(ctx: click.Context, slug: str, host: str, as_json: bool) -> None:
    """Stop routing HOST to tenant SLUG."""
    tenant = _registry(ctx).remove_domain(slug, host)
    _print_tenant(tenant, as_json, f"tenant {tenant.slug!r}: removed {host!r}")


# -- import -----------------------------------------------------------------------


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=500,
    show_default=True,
    help="Tenants written per transaction.",
)
@click.pass_context
def import_(ctx: click.Context, file: Path, batch_size: int) -> None:
    """Create the tenants listed in FILE, a CSV with a header row.

    Columns: slug, owner_email (required), owner_name, subdomain, path_prefix,
    domains (space-separated, first is primary), config (a JSON object).
    Re-running the same file changes nothing. Bad rows are reported by line
    number and skipped; the others are written. Exits 1 if any row failed.

    With tenant data, each new tenant's data is created once its batch is
    written (it may be served a moment before); a tenant whose data cannot be
    created is removed again and reported on its line.
    """
    registry = _registry(ctx)
    data = _tenant_data(ctx)
    try:
        listed = read_tenants(file, registry.rules)
    except BadFile as e:
        raise BadInput(str(e)) from e
    errors = list(listed.errors)
    lines = {row.spec.slug: row.line for row in listed.rows}
    counts = dict.fromkeys(ImportStatus, 0)
    results = registry.import_tenants(
        (row.spec for row in listed.rows), batch_size=batch_size
    )
    with _progress(len(listed.rows), f"importing {file.name}") as bar:
        for result in results:
            problem = None if result.error is None else str(result.error)
            if result.status is ImportStatus.CREATED and data is not None:
                problem = _create_data(registry, data, result.spec.slug)
            if problem is None:
                counts[result.status] += 1
            else:
                errors.append(RowError(file, lines[result.spec.slug], problem))
            bar.update(1)
    for error in sorted(errors, key=lambda error: error.line):
        click.echo(_escape(str(error)), err=True)
    click.echo(
        f"{counts[ImportStatus.CREATED]} created, "
        f"{counts[ImportStatus.UNCHANGED]} unchanged, {len(errors)} failed"
    )
    if errors:
        ctx.exit(1)


def _create_data(registry: TenantRegistry, data: TenantData, slug: str) -> str | None:
    """Create an imported tenant's data, or remove the tenant: why it failed."""
    tenant = registry.get_tenant(slug)
    try:
        data.create(tenant)
    except DispatcherError as e:
        # create leaves nothing behind; neither may the tenant stay without it.
        registry.delete_tenant(slug)
        return f"tenant {slug!r} was not created: {e}"
    return None


def _progress(length: int, label: str) -> Any:
    """A progress bar on an interactive stderr; silent otherwise."""
    if sys.stderr.isatty():
        return click.progressbar(length=length, label=label, file=sys.stderr)
    return _NoProgress()


class _NoProgress:
    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def update(self, steps: int) -> None:
        return None


# -- serve ------------------------------------------------------------------------

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface.")
@click.option("--port", type=click.IntRange(1, 65535), default=5000, show_default=True)
@click.option("--reload", is_flag=True, help="Restart when Python files change.")
@click.option(
    "--debug",
    is_flag=True,
    help="Interactive debugger on errors (only on a loopback --host).",
)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, reload: bool, debug: bool) -> None:
    """Run the configured dispatcher with werkzeug's development server.

    Configured by the DISPATCHER_* variables (see dispatcher.wsgi); with the
    default base domain 'localhost', http://acme.localhost:PORT/ reaches the
    tenant with subdomain acme, no DNS set-up needed.
    """
    from werkzeug.debug import DebuggedApplication
    from werkzeug.serving import run_simple

    from dispatcher.devserver import TenantRequestHandler
    from dispatcher.wsgi import make_server_app, migrate_at_start

    if debug and host not in _LOOPBACK:
        raise BadInput(
            f"--debug with --host {host!r} would let anyone on the network run "
            "code; use --host 127.0.0.1"
        )
    environ = {
        **os.environ,
        DATABASE_URL_VARIABLE: ctx.obj["database_url"],
        BASE_DOMAIN_VARIABLE: ctx.obj["base_domain"] or "",
    }
    try:
        application: Any = make_server_app(environ)
        # Once, before serving; the reloader's parent does not serve.
        if not reload or os.environ.get("WERKZEUG_RUN_MAIN") == "true":
            migrate_at_start(environ)
    except ValueError as e:
        raise BadInput(str(e)) from e
    if debug:
        application = DebuggedApplication(application, evalex=True)
    run_simple(
        host,
        port,
        application,
        use_reloader=reload,
        threaded=True,
        request_handler=TenantRequestHandler,
    )


# -- output -----------------------------------------------------------------------


def _print_tenant(tenant: Tenant, as_json: bool, headline: str | None = None) -> None:
    if as_json:
        click.echo(json.dumps(tenant.to_dict(), indent=2))
        return
    if headline:
        click.echo(_escape(headline))
    fields = tenant.to_dict()
    fields["domains"] = ", ".join(tenant.domains) or "-"
    fields["config"] = json.dumps(fields["config"], sort_keys=True)
    click.echo(
        _table(
            None,
            [
                (f"{key}:", "-" if value is None else str(value))
                for key, value in fields.items()
            ],
        )
    )


def _table(header: Sequence[str] | None, rows: Iterable[Sequence[str]]) -> str:
    lines = [tuple(header)] if header else []
    lines.extend(tuple(map(_escape, row)) for row in rows)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in lines
    )


# Control, format, separator, surrogate, private-use and unassigned characters:
# a terminal may obey them (escape sequences, line breaks, bidi overrides)
# or draw nothing, so a name could hide or rewrite what is printed around it.
_UNSHOWN = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _escape(text: str) -> str:
    """``text`` with the characters a terminal would not simply show escaped."""
    if text.isprintable():
        return text
    return "".join(
        char.encode("unicode_escape").decode("ascii")
        if unicodedata.category(char) in _UNSHOWN
        else char
        for char in text
    )


def main() -> None:
    """Entry point of the ``tenantctl`` script and ``python -m dispatcher``."""
    cli(prog_name="tenantctl")


# Registered last: its commands use this module's helpers.
from dispatcher.cli_data import data as _data_group  # noqa: E402

cli.add_command(_data_group)
from dispatcher.cli_feed import feed as _feed_group  # noqa: E402
from dispatcher.cli_maintenance import maintenance as _maintenance_group  # noqa: E402
from dispatcher.cli_run import each as _each_command  # noqa: E402
from dispatcher.cli_run import run as _run_command  # noqa: E402
from dispatcher.cli_status import status as _status_command  # noqa: E402

cli.add_command(_feed_group)
cli.add_command(_maintenance_group)
cli.add_command(_run_command)
cli.add_command(_each_command)
cli.add_command(_status_command)
