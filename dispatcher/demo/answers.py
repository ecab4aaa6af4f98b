"""The demo's pages for the answers the dispatcher gives itself.

Styled like the rest of the demo, each with a link back to the signup page::

    TenantDispatcher(
        registry,
        create_app,
        default_app=create_signup_app(registry, base_domain),  # its own 404 too
        **dispatcher_answers(base_domain),
    )

Plain WSGI apps (no Flask app behind them): the dispatcher calls them for
requests no tenant app answers. The library's own defaults
(:mod:`dispatcher.answers`) stay plain; these are the demo's choice.

- :class:`SiteDisabled`: 403 for a disabled tenant; the page names no tenant
  (a site may be disabled for abuse, and its name is not to be promoted).
- :class:`SiteInMaintenance`: 503 with the tenant's own ``Retry-After`` and
  message, as :class:`dispatcher.answers.TenantInMaintenance` answers.
- :class:`ServiceDown`: 503 with ``Retry-After`` when a request cannot be
  served now (the registry is unreachable, a build is too slow).

None may be cached: the site is back the moment its state changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from jinja2 import Environment, FileSystemLoader, select_autoescape
from werkzeug.wrappers import Request, Response

from dispatcher.answers import TenantDisabled, TenantInMaintenance
from dispatcher.context import ENVIRON_KEY
from dispatcher.demo.links import apex_url
from dispatcher.tenant import MAINTENANCE_RETRY_AFTER, Tenant

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "ANSWER_COLOUR",
    "DispatcherAnswers",
    "ServiceDown",
    "SiteDisabled",
    "SiteInMaintenance",
    "dispatcher_answers",
    "page_templates",
]

#: The colour of pages that belong to no site: the signup site's grey.
ANSWER_COLOUR = "#495057"
TEMPLATES = Path(__file__).parent / "templates"


def page_templates() -> Environment:
    """The demo's templates, for rendering without a Flask app."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"])
    )


class _Answer:
    """A styled page with a status, a heading and lines, and a link back."""

    status = 500
    heading = ""

    def __init__(self, base_domain: str | None, templates: Environment) -> None:
        self.base_domain = base_domain
        self.templates = templates

    def lines(self, environ: WSGIEnvironment) -> Sequence[str]:
        return ()

    def retry_after(self, environ: WSGIEnvironment) -> int | None:
        return None

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        request = Request(environ)
        retry_after = self.retry_after(environ)
        body = self.templates.get_template("answer.html").render(
            heading=self.heading,
            lines=self.lines(environ),
            retry_after=retry_after,
            apex=apex_url(request.scheme, request.host, self.base_domain),
            colour=ANSWER_COLOUR,
        )
        response = Response(body, status=self.status, mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response(environ, start_response)


class SiteDisabled(_Answer):
    """403 for a disabled tenant."""

    status = 403
    heading = "This site is unavailable"

    def lines(self, environ: WSGIEnvironment) -> Sequence[str]:
        return (TenantDisabled.description,)


class SiteInMaintenance(_Answer):
    """503 for a tenant in maintenance, with its ``Retry-After`` and message."""

    status = 503
    heading = "Down for maintenance"

    def _window(self, environ: WSGIEnvironment) -> Any:
        tenant = environ.get(ENVIRON_KEY)
        return tenant.maintenance if isinstance(tenant, Tenant) else None

    def lines(self, environ: WSGIEnvironment) -> Sequence[str]:
        window = self._window(environ)
        lines = [TenantInMaintenance.description]
        if window is not None and window.message:
            lines.append(window.message)
        return lines

    def retry_after(self, environ: WSGIEnvironment) -> int | None:
        window = self._window(environ)
        if window is None:
            return MAINTENANCE_RETRY_AFTER
        retry_after: int = window.retry_after
        return retry_after


class ServiceDown(_Answer):
    """503 with ``Retry-After`` for a request that cannot be served now."""

    status = 503
    heading = "Temporarily unavailable"

    def __init__(
        self, base_domain: str | None, templates: Environment, retry_after: int = 5
    ) -> None:
        super().__init__(base_domain, templates)
        self.seconds = retry_after

    def lines(self, environ: WSGIEnvironment) -> Sequence[str]:
        return ("This site cannot be reached right now; nothing is lost.",)

    def retry_after(self, environ: WSGIEnvironment) -> int | None:
        return self.seconds


class DispatcherAnswers(TypedDict):
    """Keyword arguments of :class:`~dispatcher.TenantDispatcher`."""

    disabled_app: WSGIApplication
    maintenance_app: WSGIApplication
    unavailable_app: WSGIApplication


def dispatcher_answers(
    base_domain: str | None, *, retry_after: int = 5
) -> DispatcherAnswers:
    """The demo's ``disabled_app``, ``maintenance_app`` and ``unavailable_app``,
    as keyword arguments of :class:`~dispatcher.TenantDispatcher`.

    ``retry_after``: the ``Retry-After`` of the unavailable page (the
    dispatcher's own ``retry_after``).
    """
    templates = page_templates()
    return {
        "disabled_app": SiteDisabled(base_domain, templates),
        "maintenance_app": SiteInMaintenance(base_domain, templates),
        "unavailable_app": ServiceDown(base_domain, templates, retry_after),
    }
