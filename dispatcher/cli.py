"""``tenantctl``: the admin tool. It parses and prints; the registry decides.

Exit codes: 0 success (declining a confirmation too: nothing was asked of
it), 1 a conflict, an unknown tenant, a missing, read-only or unavailable
database, 2 bad input. Errors are one line on stderr, never a traceback;
``--json`` makes a command print one JSON object on stdout instead of text.
``--database-url`` may come before the command or after it.
Plain-text output escapes every character a terminal would obey instead of
show (``\\x1b``, ``\\n``, ``\\u202e``), whatever the database holds.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError

from dispatcher.configtext import parse_value
from dispatcher.csvfile import BadFile, RowError, TenantFile, read_tenants
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
    DEVELOPMENT_PORT,
    TENANT_DATA_VARIABLE,
    feed_retention,
    parse_base_domain,
    tenant_data,
)
from dispatcher.settings import base_domain as default_base_domain
from dispatcher.settings import database_url as default_database_url
from dispatcher.tenant import Tenant, TenantFields, TenantStatus
from dispatcher.validation import normalise_domain, normalise_reason, shown

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
    refusal = _read_only_refusal(error)
    if refusal is not None:
        return Failed(f"the database{_shown_url()} is read-only: {refusal}")
    return Failed(str(error))


def _shown_url() -> str:
    """`` <url>``, the registry's URL with its password hidden, if one is open."""
    ctx = click.get_current_context(silent=True)
    obj = {} if ctx is None else ctx.find_root().ensure_object(dict)
    registry = obj.get("registry")
    return "" if registry is None else f" {registry.url}"


def _read_only_refusal(error: BaseException) -> str | None:
    """The database's own words if it refused a write for being read-only.

    SQLite's error is SQLITE_READONLY (a ``mode=ro`` URL, a file without
    write permission); PostgreSQL's SQLSTATE 25006 (a read-only transaction,
    a hot standby). The registry's error wraps the driver's.
    """
    cause: BaseException | None = error
    while cause is not None:
        driver = getattr(cause, "orig", cause)
        name = getattr(driver, "sqlite_errorname", "")
        if name.startswith("SQLITE_READONLY") or (
            getattr(driver, "sqlstate", None) == "25006"
        ):
            return str(driver).strip().splitlines()[0]
        cause = cause.__cause__
    return None


class _Group(click.Group):
    """Turns the registry's errors into one-line messages with the right exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DispatcherError as e:
            raise one_line(e) from e


def _registry(ctx: click.Context, *, reads_only: bool = False) -> TenantRegistry:
    """The registry for this invocation, opened on first use.

    ``reads_only``: the command only reads, so a SQLite file that does not
    exist is refused (exit 1) rather than created empty by connecting to it.
    """
    obj: dict[str, Any] = ctx.ensure_object(dict)
    if reads_only:
        refuse_missing_registry(obj["database_url"])
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


def refuse_missing_registry(database_url: str) -> None:
    """Refuse a registry that is a SQLite file that does not exist: a command
    that only reads must not create it empty by connecting to it."""
    missing = _missing_sqlite_file(database_url)
    if missing is not None:
        raise Failed(
            f"no registry at {missing}: the file does not exist;"
            " run 'tenantctl db upgrade'"
        )


def _missing_sqlite_file(database_url: str) -> Path | None:
    """The SQLite file ``database_url`` names, if it does not exist.

    In-memory databases and ``uri=true`` URLs (whose ``mode=`` decides) are
    not files to check.
    """
    try:
        url = make_url(database_url)
    except (ArgumentError, ValueError):
        return None  # the registry refuses it, naming the option
    if url.get_backend_name() != "sqlite" or "uri" in url.query:
        return None
    if not url.database or url.database == ":memory:":
        return None
    path = Path(url.database)
    return None if path.exists() else path.absolute()


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
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object."
    )(function)


_DATABASE_URL_HELP = (
    f"Registry database; default ${DATABASE_URL_VARIABLE} or a SQLite file "
    "'dispatcher.sqlite3' in the current directory."
)


def _database_url_anywhere(command: click.Command) -> None:
    """Accept ``--database-url`` after ``command``'s name too, and after each
    of its subcommands' names: ``tenantctl list --database-url URL``."""

    def remember(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
        # Parsed after tenantctl's own options: the one nearer the end wins.
        if value is not None:
            ctx.find_root().ensure_object(dict)["database_url"] = value

    command.params.append(
        click.Option(
            ["--database-url"],
            metavar="URL",
            expose_value=False,
            callback=remember,
            help=_DATABASE_URL_HELP,
        )
    )
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            _database_url_anywhere(subcommand)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--database-url", metavar="URL", help=_DATABASE_URL_HELP)
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
@_json_option
@click.pass_context
def db_upgrade(ctx: click.Context, revision: str, as_json: bool) -> None:
    """Apply the schema migrations (up to REVISION, default head).

    Says which revision the schema was at and is at now; at REVISION
    already, it says that nothing changed. It never downgrades.
    """
    registry = _registry(ctx)
    before = registry.schema_revisions()
    try:
        registry.migrate(revision)
    except ValueError as e:
        raise BadInput(str(e)) from e
    after = registry.schema_revisions()
    if as_json:
        answer = {
            "database": registry.url,
            "before": list(before),
            "after": list(after),
            "changed": before != after,
        }
        click.echo(json.dumps(answer))
        return
    if before == after:
        click.echo(
            _escape(
                f"database {registry.url} is at {_revisions(after)} already;"
                " nothing changed"
            )
        )
        return
    click.echo(
        _escape(
            f"database {registry.url} upgraded from {_revisions(before)}"
            f" to {_revisions(after)}"
        )
    )


def _revisions(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) or "no schema"


# -- tenants ----------------------------------------------------------------------


@cli.command(short_help="Create a tenant (and its data).")
@click.argument("slug")
@click.option(
    "--owner", "owner_email", metavar="EMAIL", required=True, help="Owner's e-mail."
)
@click.option("--owner-name", metavar="NAME", help="Owner's name.")
@click.option(
    "--subdomain",
    metavar="LABEL",
    help="Route <LABEL>.<base domain> to the tenant; default SLUG when no"
    " --path-prefix or --domain is given.",
)
@click.option(
    "--no-subdomain",
    is_flag=True,
    help="No subdomain: then --path-prefix or --domain must give its address.",
)
@click.option(
    "--path-prefix", metavar="LABEL", help="Route /<LABEL>/... to the tenant."
)
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
    help="Config entry, repeatable. VALUE is JSON if it parses; a word or"
    ' sentence is a string; text starting with {, [ or " must be valid JSON.',
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
    no_subdomain: bool,
    as_json: bool,
    **fields: Unpack[TenantFields],
) -> None:
    """Create tenant SLUG, and its data when the deployment has tenant data.

    A tenant needs an address to be reached by: a subdomain of the base
    domain (SLUG.localhost by default), a path prefix or a custom domain.
    Without --subdomain, --path-prefix or --domain its subdomain is SLUG;
    with --no-subdomain instead, it must be given one of the others.
    """
    fields["config"] = dict(_config_item(item) for item in config_items)
    registry = _registry(ctx)
    _give_an_address(slug, fields, no_subdomain, registry)
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


def _give_an_address(
    slug: str, fields: TenantFields, no_subdomain: bool, registry: TenantRegistry
) -> None:
    """The subdomain SLUG for a tenant given no address, or bad input saying
    what to add: a tenant nobody can reach is a mistake, never a default.
    Without a base domain nothing is added nor refused."""
    if no_subdomain and fields.get("subdomain"):
        raise BadInput("--subdomain and --no-subdomain contradict each other")
    if fields.get("subdomain") or fields.get("path_prefix") or fields.get("domains"):
        return
    if registry.base_domain is None:
        # No subdomains are routed: a header naming the slug may be how it is
        # reached (DISPATCHER_TENANT_HEADER); a subdomain would be no address.
        return
    if no_subdomain:
        raise BadInput(
            f"tenant {slug!r} would have no address (--no-subdomain): give"
            " --path-prefix or --domain"
        )
    if slug.strip().lower() in registry.reserved:
        raise BadInput(
            f"tenant {slug!r} needs an address, and {slug!r} is reserved as a"
            " subdomain: give --subdomain, --path-prefix or --domain"
        )
    fields["subdomain"] = slug


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
    if not sep or not key.strip():
        raise BadInput(
            f"--config {item!r} must look like KEY=VALUE, with a KEY that is not empty"
        )
    try:
        return key, parse_value(value)
    except InvalidConfig as e:
        raise BadInput(f"--config {shown(key)}=...: {e}") from e


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
    tenants = _registry(ctx, reads_only=True).list_tenants(status)
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
    _print_tenant(_registry(ctx, reads_only=True).get_tenant(slug), as_json)


@cli.command()
@click.argument("slug")
@click.option(
    "--reason",
    metavar="TEXT",
    help="Why, shown to admins (e.g. 'unpaid'); default: the reason it was"
    " disabled for already, if any; '' for none.",
)
@_json_option
@click.pass_context
def disable(ctx: click.Context, slug: str, reason: str | None, as_json: bool) -> None:
    """Stop serving tenant SLUG; its visitors get the disabled page."""
    if reason is not None and not reason.strip():
        reason = ""  # says "no reason", which None would not
    else:
        reason = normalise_reason(reason)
    tenant = _registry(ctx).disable_tenant(slug, reason)
    _print_tenant(tenant, as_json, f"disabled tenant {tenant.slug!r}")


@cli.command()
@click.argument("slug")
@_json_option
@click.pass_context
def enable(ctx: click.Context, slug: str, as_json: bool) -> None:
    """Serve tenant SLUG again."""
    tenant = _registry(ctx).enable_tenant(slug)
    _print_tenant(tenant, as_json, f"enabled tenant {tenant.slug!r}")


@cli.command(short_help="Delete a tenant; archive its data.")
@click.argument("slug")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_json_option
@click.pass_context
def remove(ctx: click.Context, slug: str, yes: bool, as_json: bool) -> None:
    """Delete tenant SLUG and its domains; archive its data, never drop it.

    Asks first, unless --yes; answering no removes nothing and exits 0.
    """
    registry = _registry(ctx)
    data = _tenant_data(ctx)
    tenant = registry.get_tenant(slug)
    question = f"Delete tenant {tenant.slug!r} and its domains?"
    if data is not None:
        question += " (Its data is archived, not deleted.)"
    if not yes and not _confirm(question):
        # The answer the question invited: not an error.
        if as_json:
            click.echo(json.dumps({"slug": tenant.slug, "removed": False}))
        else:
            click.echo(f"nothing removed: tenant {tenant.slug!r} is still there")
        return
    if data is None:
        registry.delete_tenant(tenant.slug)
        if as_json:
            click.echo(json.dumps({"slug": tenant.slug, "removed": True}))
        else:
            click.echo(f"removed tenant {tenant.slug!r}")
        return
    archives: list[str | None] = []

    def archive(removed: Tenant) -> None:
        archives.append(data.archive(removed))

    # Disabled first, so nothing writes while its data is moved aside; a failed
    # archive leaves it disabled, not deleted.
    Provisioner(registry, on_delete=[archive]).delete(tenant.slug)
    archived = archives[0] if archives else None
    if as_json:
        answer = {"slug": tenant.slug, "removed": True, "archive": archived}
        click.echo(json.dumps(answer))
        return
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
@click.option(
    "--string", "as_string", is_flag=True, help="Store VALUE as a string, as typed."
)
@_json_option
@click.pass_context
def config_set(
    ctx: click.Context, slug: str, key: str, value: str, as_string: bool, as_json: bool
) -> None:
    """Set KEY to VALUE in SLUG's config.

    VALUE is JSON if it parses (5, true, [1, 2], {"a": 1}); a word or sentence
    is a string; text starting with {, [ or " must be valid JSON, unless
    --string stores it as typed.
    """
    if not key.strip():
        raise BadInput(f"config key {key!r} must not be empty")
    if as_string:
        parsed: Any = value
    else:
        try:
            parsed = parse_value(value)
        except InvalidConfig as e:
            raise BadInput(f"{e}; or pass --string to store it as typed") from e
    tenant = _registry(ctx).update_config(slug, {key: parsed})
    _print_tenant(tenant, as_json, f"tenant {tenant.slug!r}: set {key!r}")


@config.command("unset", short_help="Remove KEYS from SLUG's config.")
@click.argument("slug")
@click.argument("keys", nargs=-1, required=True)
@_json_option
@click.pass_context
def config_unset(
    ctx: click.Context, slug: str, keys: tuple[str, ...], as_json: bool
) -> None:
    """Remove KEYS from SLUG's config; a key it does not have is named, and
    left as it is (exit 0)."""
    registry = _registry(ctx)
    had = registry.get_tenant(slug).config
    tenant = registry.unset_config(slug, *keys)
    removed = [key for key in keys if key in had]
    missing = [key for key in keys if key not in had]
    if as_json:
        answer = {"tenant": tenant.to_dict(), "unset": removed, "missing": missing}
        click.echo(json.dumps(answer, indent=2))
        return
    said = []
    if removed:
        said.append(f"unset {', '.join(removed)}")
    if missing:
        said.append(
            f"no key {', '.join(map(repr, missing))} in its config, nothing to unset"
        )
    _print_tenant(tenant, as_json, f"tenant {tenant.slug!r}: {'; '.join(said)}")


# -- domains ----------------------------------------------------------------------


@cli.group()
def domain() -> None:
    """Add or remove a tenant's custom host names."""


@domain.command("add", short_help="Route HOST to tenant SLUG.")
@click.argument("slug")
@click.argument("host")
@click.option("--primary", is_flag=True, help="Make HOST the primary domain.")
@_json_option
@click.pass_context
def domain_add(
    ctx: click.Context, slug: str, host: str, primary: bool, as_json: bool
) -> None:
    """Route HOST to tenant SLUG (its normalised form: lower case, no
    trailing dot, IDNA)."""
    registry = _registry(ctx)
    tenant = registry.add_domain(slug, host, primary=primary)
    added = registry.rules.domain(host)
    _print_tenant(tenant, as_json, f"tenant {tenant.slug!r}: added {added!r}")


@domain.command("remove")
@click.argument("slug")
@click.argument("host")
@_json_option
@click.pass_context
def domain_remove(ctx: click.Context, slug: str, host: str, as_json: bool) -> None:
    """Stop routing HOST to tenant SLUG."""
    tenant = _registry(ctx).remove_domain(slug, host)
    removed = normalise_domain(host)
    _print_tenant(tenant, as_json, f"tenant {tenant.slug!r}: removed {removed!r}")


# -- import -----------------------------------------------------------------------


@cli.command("import", short_help="Create the tenants a CSV file lists.")
@click.argument(
    "file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 10_000),
    default=500,
    show_default=True,
    help="Tenants written per transaction.",
)
@_json_option
@click.pass_context
def import_(ctx: click.Context, file: Path, batch_size: int, as_json: bool) -> None:
    """Create the tenants listed in FILE, a CSV with a header row ('-':
    standard input).

    Columns: slug, owner_email (required), owner_name, subdomain, path_prefix,
    domains (space-separated, first is primary), config (a JSON object),
    data_server. A row with no subdomain, path_prefix nor domains gets the
    subdomain named after its slug, as 'add' does.
    Re-running the same file changes nothing. Bad rows are reported by line
    number and skipped; the others are written. Exits 1 if any row failed.

    With tenant data, each new tenant's data is created once its batch is
    written (it may be served a moment before); a tenant whose data cannot be
    created is removed again and reported on its line.
    """
    registry = _registry(ctx)
    data = _tenant_data(ctx)
    try:
        listed = _read_tenants(file, registry)
    except BadFile as e:
        raise BadInput(str(e)) from e
    errors = list(listed.errors)
    lines = {row.spec.slug: row.line for row in listed.rows}
    counts = dict.fromkeys(ImportStatus, 0)
    results = registry.import_tenants(
        (row.spec for row in listed.rows), batch_size=batch_size
    )
    with _progress(len(listed.rows), f"importing {listed.file.name}") as bar:
        for result in results:
            problem = None if result.error is None else str(result.error)
            if result.status is ImportStatus.CREATED and data is not None:
                problem = _create_data(registry, data, result.spec.slug)
            if problem is None:
                counts[result.status] += 1
            else:
                errors.append(RowError(file, lines[result.spec.slug], problem))
            bar.update(1)
    errors.sort(key=lambda error: error.line)
    for error in errors:
        click.echo(_escape(str(error)), err=True)
    if as_json:
        answer = {
            "created": counts[ImportStatus.CREATED],
            "unchanged": counts[ImportStatus.UNCHANGED],
            "failed": len(errors),
            "errors": [{"line": e.line, "message": e.message} for e in errors],
        }
        click.echo(json.dumps(answer))
    else:
        click.echo(
            f"{counts[ImportStatus.CREATED]} created, "
            f"{counts[ImportStatus.UNCHANGED]} unchanged, {len(errors)} failed"
        )
    if errors:
        ctx.exit(1)


def _read_tenants(file: Path, registry: TenantRegistry) -> TenantFile:
    """The tenants ``file`` lists; ``-`` is standard input, read as UTF-8."""
    if str(file) != "-":
        return read_tenants(file, registry.rules)
    binary = sys.stdin.buffer
    stream = io.TextIOWrapper(binary, encoding="utf-8-sig", newline="")
    try:
        return read_tenants(Path("<stdin>"), registry.rules, stream)
    finally:
        stream.detach()  # standard input stays open


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


@cli.command(short_help="Serve the tenants on a development server.")
@click.option(
    "--host",
    metavar="ADDRESS",
    default="127.0.0.1",
    show_default=True,
    help="Interface to listen on (0.0.0.0: every one).",
)
@click.option(
    "--port",
    metavar="PORT",
    type=click.IntRange(1, 65535),
    default=DEVELOPMENT_PORT,
    show_default=True,
    help="TCP port to listen on.",
)
@click.option("--reload", is_flag=True, help="Restart when Python files change.")
@click.option(
    "--debug",
    is_flag=True,
    help="Interactive debugger on errors (only on a loopback --host).",
)
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, reload: bool, debug: bool) -> None:
    """Run the configured dispatcher with werkzeug's development server.

    It routes by the Host a browser sends: with the default base domain
    'localhost', open http://localhost:8000/ (the default app, the demo's
    signup) and http://acme.localhost:8000/ (the tenant with subdomain acme),
    no DNS set-up needed; 127.0.0.1 is no tenant's name. It prints these
    addresses first, then a line per request naming its Host and tenant.

    \b
    It reads, as gunicorn with dispatcher.wsgi does:
      DISPATCHER_DATABASE_URL, DISPATCHER_BASE_DOMAIN  (or the options)
      DISPATCHER_APP_FACTORY, DISPATCHER_SHARED_APP, DISPATCHER_DEFAULT_APP
      DISPATCHER_TENANT_DATA, DISPATCHER_TENANT_HEADER
      DISPATCHER_PATH_ROUTING, DISPATCHER_PATH_ROUTING_HOSTS
      DISPATCHER_MAX_APPS and the other cache settings, DISPATCHER_DB_TIMEOUT
      DISPATCHER_FEED_MAX_AGE, DISPATCHER_FEED_MAX_CHANGES
      DISPATCHER_SECRET_KEY, DISPATCHER_MIGRATE (upgrade the schema at start)
      DISPATCHER_METRICS, DISPATCHER_METRICS_PATH, DISPATCHER_HEALTH_PATH
    (see dispatcher/wsgi.py for each one's meaning and default).
    """
    import logging

    from werkzeug.debug import DebuggedApplication
    from werkzeug.serving import is_running_from_reloader, run_simple

    from dispatcher.devserver import (
        HideRunningOn,
        TenantRequestHandler,
        addresses,
        check_can_listen,
    )
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
    if not is_running_from_reloader():  # the reloader's child: said already
        try:
            check_can_listen(host, port)
        except socket.gaierror as e:
            raise BadInput(f"cannot listen on {host!r}:{port}: {e.strerror}") from e
        except OSError as e:
            raise Failed(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
        base_domain = ctx.obj["base_domain"]
        click.echo("Open the tenants at:", err=True)
        for address in addresses(base_domain, host, port):
            click.echo(f"  {address}", err=True)
        click.echo(
            f"Listening on {host}:{port}; a development server, not for"
            " production (use gunicorn with dispatcher.wsgi).",
            err=True,
        )
    logging.getLogger("werkzeug").addFilter(HideRunningOn())
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
for _command in cli.commands.values():
    _database_url_anywhere(_command)
