"""A tenant's app outside a request: scripts, commands and background jobs.

::

    from dispatcher import current_tenant

    with dispatcher.app_for("acme") as app:
        print(current_tenant.slug)          # "acme"
        notes = data.session.scalars(select(Note)).all()  # acme's data

The app is the one requests get: from the dispatcher's cache if it is built
(under any of the tenant's names), else built once by ``create_app``, in the
same single flight as the requests that want it meanwhile. It is leased until
the ``with`` block ends, so an eviction meanwhile (a change, a full cache)
tears it down only afterwards.

For a Flask app, the block runs in a request context for the tenant's root
URL (``app.test_request_context``, on its canonical host as
:func:`~dispatcher.context.tenant_url` gives it, ``http://localhost/`` if it
has none) whose environ carries the tenant under
:data:`~dispatcher.context.ENVIRON_KEY`, as a routed request's does: so
``current_tenant``, ``url_for(..., _external=True)`` and the tenant's data
session (:attr:`~dispatcher.data.TenantData.session`, on an app of its own
or on a shared app) work exactly as in a request. Its app context is a new
one, never another tenant's the caller may be inside. No ``before_request``
handler runs: nothing was requested. Any other WSGI app is handed over as
is, with no context.

Unlike a request, ``app_for`` reads the tenant from the registry every time
(one indexed query): an app built from an older snapshot is replaced first,
so code outside a request never runs on a tenant deleted, disabled or
changed moments ago, even before this process's change follower hears of it.
An unknown slug raises :exc:`~dispatcher.exceptions.TenantNotFound`, a
disabled tenant :exc:`~dispatcher.exceptions.TenantDisabledError`, a
malformed slug :exc:`~dispatcher.exceptions.InvalidName`;
``allow_disabled=True`` lets a disabled tenant in, on an app built for the
block alone. A tenant in maintenance mode is let in, on its own app (the one
behind the gate that answers its visitors 503): operators fix its data
meanwhile.
"""

from __future__ import annotations

from contextlib import ExitStack
from types import TracebackType
from typing import TYPE_CHECKING

from flask import Flask

from dispatcher.context import ENVIRON_KEY, tenant_url
from dispatcher.exceptions import TenantDisabledError, TenantNotFound
from dispatcher.maintenance_gate import MaintenanceGate
from dispatcher.routes import SlugKey
from dispatcher.validation import normalise_label

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from dispatcher.cache import AppCache, Entry
    from dispatcher.middleware import TenantDispatcher
    from dispatcher.tenant import Tenant

__all__ = ["TenantApp", "app_for"]

#: The root URL of a tenant with no canonical host of its own.
FALLBACK_URL = "http://localhost/"

# An app_for racing another one that read an older snapshot may lease that
# one's app; the loser replaces it, a bounded number of times.
_ATTEMPTS = 3


def app_for(
    dispatcher: TenantDispatcher, slug: str, *, allow_disabled: bool = False
) -> TenantApp:
    """The tenant's app, leased for a ``with`` block (see the module's text).

    :param allow_disabled: let a disabled tenant in too: its app is built for
        the block alone, outside the cache (which holds ``disabled_app`` for
        it), and torn down after it.
    :raise InvalidName: ``slug`` is malformed (at once, before the block).
    """
    return TenantApp(dispatcher, slug, allow_disabled=allow_disabled)


class TenantApp:
    """``with TenantApp(dispatcher, slug) as app:``: the tenant's app, leased,
    in a request context of its own if it is a Flask app.

    Once entered, :attr:`tenant` is the snapshot the app was built from.
    Enter it once.
    """

    def __init__(
        self, dispatcher: TenantDispatcher, slug: str, *, allow_disabled: bool = False
    ) -> None:
        self.dispatcher = dispatcher
        self.slug = normalise_label(slug, what="slug")
        self.allow_disabled = allow_disabled
        self.tenant: Tenant | None = None
        self._entered = False
        self._contexts = ExitStack()

    def __repr__(self) -> str:
        return f"TenantApp(slug={self.slug!r})"

    def __enter__(self) -> WSGIApplication:
        if self._entered:
            raise RuntimeError(f"{self!r} was entered already: make one per block")
        self._entered = True
        try:
            app, tenant = self._app()
            if isinstance(app, Flask):
                self._push(app, tenant)
        except BaseException:
            self._contexts.close()
            raise
        self.tenant = tenant
        return app

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Teardown handlers see the block's exception, as after a request;
        # the lease goes (or the disabled tenant's own app is torn down) last.
        self._contexts.__exit__(kind, error, traceback)

    def _app(self) -> tuple[WSGIApplication, Tenant]:
        dispatcher = self.dispatcher
        tenant = _read(dispatcher, self.slug)
        if tenant.is_active:
            entry = _lease(dispatcher, tenant)
            if entry.tenant.is_active:
                self._contexts.callback(entry.release)
                app = entry.app
                if isinstance(app, MaintenanceGate):
                    # Behind the gate: built once, torn down with the entry
                    # (after this lease), as for a bypassing request.
                    app = app.app()
                return app, entry.tenant
            # Disabled since it was read: the cache holds disabled_app for it.
            entry.release()
            tenant = entry.tenant
        if not self.allow_disabled:
            reason = f" ({tenant.disabled_reason})" if tenant.disabled_reason else ""
            raise TenantDisabledError(f"tenant {tenant.slug!r} is disabled{reason}")
        # Built and torn down by the dispatcher's own steps (the collector's
        # freeze after it and cut after it; a shared app is left alone).
        app = dispatcher._build_own(tenant)
        self._contexts.callback(dispatcher._teardown_tenant_app, app, tenant)
        return app, tenant

    def _push(self, app: Flask, tenant: Tenant) -> None:
        try:
            url = tenant_url(tenant, base_domain=self.dispatcher.base_domain)
        except ValueError:
            url = FALLBACK_URL
        # A new app context first: the request context would otherwise reuse
        # the caller's if it is the same (shared) app's, with another tenant's
        # data session in it.
        self._contexts.enter_context(app.app_context())
        self._contexts.enter_context(
            app.test_request_context(
                "/", base_url=url, environ_overrides={ENVIRON_KEY: tenant}
            )
        )


def _read(dispatcher: TenantDispatcher, slug: str) -> Tenant:
    """The tenant as the registry has it now."""
    # The dispatcher's own lookup: it starts following changes and notes an
    # outage, as a request's does.
    tenant = dispatcher._lookup(lambda registry: registry.find_by_slug(slug))
    if tenant is None:
        raise TenantNotFound(f"no tenant has the slug {slug!r}")
    return tenant


def _lease(dispatcher: TenantDispatcher, tenant: Tenant) -> Entry:
    """The cache's entry for ``tenant`` (an active snapshot) or a newer one, leased."""
    cache: AppCache = dispatcher._cache
    key = SlugKey(tenant.slug)
    for _ in range(_ATTEMPTS):
        # A miss builds from this snapshot (or reuses the app built from it
        # under another name); a route left by an earlier app_for may lead to
        # an older one, or a record of a dropped app to an older snapshot.
        entry = cache.lease(key) or cache.load(key, lambda: tenant)
        if entry is None:  # the lookup returns the tenant: never None
            raise TenantNotFound(f"no tenant has the slug {tenant.slug!r}")
        if entry.tenant.version >= tenant.version:
            return entry
        entry.release()
        cache.forget_unknown([key])
    raise TimeoutError(
        f"the app of tenant {tenant.slug!r} kept being replaced by older builds;"
        " try again"
    )
