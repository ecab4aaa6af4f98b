"""``tenantctl maintenance``: one tenant's maintenance mode (see
:mod:`dispatcher.maintenance`).

``tenantctl`` imports this module to register the group, so the helpers it
shares with it are imported when a command runs: the import graph stays
acyclic (``tests/test_layering.py``).
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit, urlunsplit

import click

from dispatcher.maintenance import (
    BYPASS_PATH,
    MAX_RETRY_AFTER,
    bypass_url,
    check_retry_after,
)
from dispatcher.settings import DEVELOPMENT_PORT
from dispatcher.tenant import MAINTENANCE_RETRY_AFTER

__all__ = ["maintenance"]

_json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object."
)


@click.group()
def maintenance() -> None:
    """Take one tenant down for maintenance (503), or bring it back."""


@maintenance.command("on")
@click.argument("slug")
@click.option(
    "--retry-after",
    "retry_after_text",
    metavar="SECONDS",
    default=str(MAINTENANCE_RETRY_AFTER),
    show_default=True,
    help=f"The Retry-After sent with the 503, 1 to {MAX_RETRY_AFTER}.",
)
@click.option(
    "--message", metavar="TEXT", help="Shown on the maintenance page (one line)."
)
@click.option(
    "--scheme",
    type=click.Choice(["http", "https"]),
    help="The bypass URL's scheme; default: http on the base domain localhost"
    " (tenantctl serve), else https.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    metavar="PORT",
    help="The bypass URL's port; default: 8000 on the base domain localhost"
    " (tenantctl serve), else none.",
)
@_json_option
@click.pass_context
def maintenance_on(
    ctx: click.Context,
    slug: str,
    retry_after_text: str,
    message: str | None,
    scheme: str | None,
    port: int | None,
    as_json: bool,
) -> None:
    """Put tenant SLUG in maintenance: its visitors get 503.

    Prints a one-time bypass URL: the browser that opens it gets a cookie
    that lets it through for 12 hours, until maintenance ends. The URL is on
    the tenant's primary domain, else its subdomain of the base domain, else
    <base domain>/<path prefix>; the cookie works on that host only. Running
    it again keeps the cookies already given and prints a new URL.
    """
    from dispatcher.cli import BadInput, _escape, _registry

    retry_after = _retry_after(retry_after_text, BadInput)
    registry = _registry(ctx)
    tenant, token = registry.start_maintenance(
        slug, retry_after=retry_after, message=message
    )
    path = BYPASS_PATH + token
    # The development server's address unless told: tenantctl serve listens
    # on http, port 8000, with the base domain localhost.
    developing = registry.base_domain == "localhost"
    scheme = scheme or ("http" if developing else "https")
    port = port or (DEVELOPMENT_PORT if developing else None)
    try:
        url: str | None = bypass_url(
            tenant, token, base_domain=registry.base_domain, scheme=scheme
        )
    except ValueError:
        url = None  # no address to print: the path, on whatever host serves it
    if url is not None and port is not None:
        parts = urlsplit(url)
        url = urlunsplit(parts._replace(netloc=f"{parts.netloc}:{port}"))
    if as_json:
        answer = {"tenant": tenant.to_dict(), "bypass_url": url, "bypass_path": path}
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(_escape(f"tenant {tenant.slug!r} is in maintenance (503)"))
    if not tenant.is_active:
        click.echo(_escape("it is disabled too: visitors get the disabled page"))
    if url is None:
        click.echo(_escape(f"bypass (once), on the tenant's address: {path}"))
    else:
        click.echo(_escape(f"bypass (once): {url}"))


@maintenance.command("off")
@click.argument("slug")
@_json_option
@click.pass_context
def maintenance_off(ctx: click.Context, slug: str, as_json: bool) -> None:
    """Serve tenant SLUG again; every bypass cookie becomes worthless.

    A tenant not in maintenance is left as it is (exit 0, like ``enable``).
    """
    from dispatcher.cli import _escape, _registry

    registry = _registry(ctx)
    was_on = registry.get_tenant(slug).maintenance is not None
    tenant = registry.end_maintenance(slug)
    if was_on:
        headline = f"tenant {tenant.slug!r} is out of maintenance"
    else:
        headline = f"tenant {tenant.slug!r} was not in maintenance; nothing changed"
    if as_json:
        answer = {"tenant": tenant.to_dict(), "was_in_maintenance": was_on}
        click.echo(json.dumps(answer, indent=2))
        return
    click.echo(_escape(headline))


def _retry_after(text: str, error: type[click.ClickException]) -> int:
    """``--retry-after`` as seconds, or one line naming the value and the rule."""
    try:
        return check_retry_after(int(text.strip()))
    except ValueError as e:
        raise error(
            f"--retry-after {text!r} must be a whole number of seconds from 1"
            f" to {MAX_RETRY_AFTER}"
        ) from e
