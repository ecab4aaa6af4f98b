"""The app a tenant in maintenance is served by: 503, or its own app for
those holding a bypass.

The dispatcher builds a :class:`MaintenanceGate` instead of the tenant's app
while ``tenant.maintenance`` is set (the change that sets or clears it evicts
the entry everywhere), so a tenant not in maintenance pays nothing per request.
The tenant's own app is built only when a bypassing request needs it: while
in maintenance its schema may be mid-upgrade.

Under the tenant's root (after the dispatcher's path shift):

- ``GET /_maintenance/bypass/<token>``: a genuine token (checked against the
  window's key, here) is spent at the registry; if it was unspent, the answer
  sets the bypass cookie and redirects to the tenant's root (303). Otherwise
  403, and a token whose signature is wrong never reaches the registry.
- a request carrying a valid bypass cookie: the tenant's own app.
- anything else: ``answer`` (the dispatcher's ``maintenance_app``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from werkzeug.exceptions import (
    Forbidden,
    InternalServerError,
    MethodNotAllowed,
    ServiceUnavailable,
)
from werkzeug.http import parse_cookie
from werkzeug.utils import redirect

from dispatcher.exceptions import RegistryError
from dispatcher.logs import BUILDING, DISPATCHING
from dispatcher.maintenance import (
    BYPASS_PATH,
    COOKIE_LIFETIME,
    cookie_is_valid,
    cookie_name,
    cookie_value,
    token_is_genuine,
)
from dispatcher.tenant import Maintenance, Tenant

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["MaintenanceGate"]

log = logging.getLogger(__name__)


class InvalidBypass(Forbidden):
    """A bypass link that is wrong, spent, or of an earlier window."""

    description = (
        "This maintenance bypass link is not valid: it has been used already,"
        " or maintenance has ended or started again. Ask for a new one."
    )


class MaintenanceGate:
    """Answers for one tenant in maintenance (see the module docstring).

    :param tenant: the tenant, in maintenance.
    :param build: builds the tenant's own app; called at most once.
    :param answer: answers everyone without a bypass.
    :param redeem: spends a bypass token: ``registry.redeem_bypass``.
    :param clock: Unix time in seconds, for cookies' expiry.
    """

    def __init__(
        self,
        tenant: Tenant,
        build: Callable[[], WSGIApplication],
        answer: WSGIApplication,
        redeem: Callable[[str, str], bool],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if tenant.maintenance is None:
            raise ValueError(f"tenant {tenant.slug!r} is not in maintenance")
        self.tenant = tenant
        self.window: Maintenance = tenant.maintenance
        self._build = build
        self._answer = answer
        self._redeem = redeem
        self._clock = clock
        self._cookie = cookie_name(tenant.slug)
        self._lock = threading.Lock()
        self._app: WSGIApplication | None = None
        self._released = False
        # Tokens the registry answered for (each is spent, or never will be):
        # a leaked link replayed costs it no write transaction per request.
        self._answered: set[str] = set()

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO") or "/"
        if path.startswith(BYPASS_PATH):
            token = path.removeprefix(BYPASS_PATH)
            return self._bypass(token, environ, start_response)
        if self._holds_bypass(environ):
            # A build here is on no slow path of the dispatcher's: its lines
            # carry this request's id as they would there (dispatcher.logs).
            dispatching = DISPATCHING.set(environ)
            try:
                app = self.app()
            except Exception:
                slug = self.tenant.slug
                log.exception(
                    "building tenant %r's app failed", slug, extra={"tenant": slug}
                )
                return InternalServerError()(environ, start_response)
            finally:
                DISPATCHING.reset(dispatching)
            return app(environ, start_response)
        return self._answer(environ, start_response)

    def app(self) -> WSGIApplication:
        """The tenant's own app, built on first use."""
        with self._lock:
            if self._released:
                raise RuntimeError(f"tenant {self.tenant.slug!r}'s gate was released")
            if self._app is None:
                building = BUILDING.set(self.tenant.slug)
                try:
                    self._app = self._build()
                finally:
                    BUILDING.reset(building)
            return self._app

    def release(self) -> WSGIApplication | None:
        """Stop building; the tenant's own app, if it was built, to tear down."""
        with self._lock:
            self._released = True
            app, self._app = self._app, None
            return app

    def _holds_bypass(self, environ: WSGIEnvironment) -> bool:
        value = parse_cookie(environ).get(self._cookie)
        return value is not None and cookie_is_valid(
            value, self.tenant.slug, self.window, self._clock()
        )

    def _bypass(
        self, token: str, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") != "GET":
            return MethodNotAllowed(["GET"])(environ, start_response)
        slug = self.tenant.slug
        # Checked here first: only a token this window's key signed may cost
        # a registry write.
        if token in self._answered or not token_is_genuine(token, slug, self.window):
            return _no_store(InvalidBypass(), environ, start_response)
        try:
            redeemed = self._redeem(slug, token)
        except RegistryError:
            answer = ServiceUnavailable(retry_after=self.window.retry_after)
            return answer(environ, start_response)
        self._answered.add(token)
        if not redeemed:
            return _no_store(InvalidBypass(), environ, start_response)
        root = environ.get("SCRIPT_NAME", "")
        expires = int(self._clock()) + COOKIE_LIFETIME
        response = redirect(f"{root}/", 303)
        response.headers["Cache-Control"] = "no-store"
        response.set_cookie(
            self._cookie,
            cookie_value(slug, self.window, expires),
            max_age=COOKIE_LIFETIME,
            path=root or "/",  # the tenant's own, under path routing
            secure=environ.get("wsgi.url_scheme") == "https",
            httponly=True,
            samesite="Lax",
        )  # no domain: host-only
        return response(environ, start_response)


def _no_store(
    answer: Forbidden, environ: WSGIEnvironment, start_response: StartResponse
) -> Iterable[bytes]:
    response = answer.get_response(environ)
    response.headers["Cache-Control"] = "no-store"
    return response(environ, start_response)
