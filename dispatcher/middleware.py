"""Dispatch each request to its tenant's own WSGI app.

This replaces the "Application Dispatching" pattern of Flask's documentation
(``SubdomainDispatcher``/``PathDispatcher``) with a bounded, validated one::

    from dispatcher import TenantDispatcher, TenantRegistry

    def create_app(tenant):
        app = Flask(__name__)
        app.config.update(tenant.config)
        return app

    application = TenantDispatcher(
        TenantRegistry("sqlite:///dispatcher.sqlite3"),
        create_app,
        base_domain="example.com",
        path_routing=True,
    )

A request is dispatched in this order:

1. Its host (Host header; ``SERVER_NAME`` for HTTP/1.0 without one; the host
   of an absolute-form target wins) is validated: a malformed one gets 400
   before any cache or database access.
2. The resolvers (:mod:`dispatcher.routes`) are asked in order; the first that
   claims the request decides which tenant it names, or that it names none.
   ``base_domain``, ``path_routing`` and ``path_routing_hosts`` are shorthand
   for :func:`~dispatcher.routes.standard_resolvers`: by path prefix on the
   apex, its ``www.`` and ``path_routing_hosts``; elsewhere by custom domain,
   then subdomain. ``resolvers=`` gives the list (say, with a header's).
3. The tenant's app, cached or built by ``create_app``; the resolver's path
   shift (``/<prefix>`` into ``SCRIPT_NAME``) is applied once it is found.
4. ``default_app``, or 404, for a request that names no known tenant.

A disabled tenant gets ``disabled_app`` (default: 403). A tenant in maintenance
(``tenantctl maintenance on``) gets ``maintenance_app`` (default: 503 with
``Retry-After``), except for browsers holding its bypass cookie (see
:mod:`dispatcher.maintenance_gate`); disabled wins. While the database is
unreachable, tenants already built keep being served (past ``app_ttl`` for up
to ``stale_if_error`` more seconds); others get 503.

Shared apps: instead of an app per tenant, one app can serve every tenant
(or one app per plan), as django-tenants does. The request carries its tenant
(:data:`~dispatcher.context.current_tenant`: its config, and through
:meth:`~dispatcher.data.TenantData.init_shared_app` its data), so memory does
not grow with tenants' apps and a change to a tenant rebuilds nothing::

    shop = Flask(__name__)  # reads current_tenant.config per request
    application = TenantDispatcher(registry, shared_app=shop, base_domain=...)

    # Mixed: most tenants on the plan's shared app, a few with their own.
    def create_app(tenant):
        if tenant.config.get("plan") == "enterprise":
            return build_own_app(tenant)
        return shop

    TenantDispatcher(registry, create_app, shared_app=shop, base_domain=...)

A shared app belongs to whoever made it: the dispatcher never tears it down
(not on eviction, disable, change or :meth:`~TenantDispatcher.close`), and its
tenants' records are bounded by ``policy.max_tenants``, apart from own apps'
``max_apps``.

Fixed apps next to the tenants (a Django app under ``/legacy``) are werkzeug's
job: ``DispatcherMiddleware(TenantDispatcher(...), {"/legacy": django_app})``.
``X-Forwarded-Host`` and similar headers are ignored. Behind a proxy that sets
them, wrap the dispatcher in :class:`werkzeug.middleware.proxy_fix.ProxyFix`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING

from werkzeug.exceptions import (
    BadRequest,
    InternalServerError,
    NotFound,
    ServiceUnavailable,
)

from dispatcher import collector, counts, forks
from dispatcher.answers import TenantDisabled, TenantInMaintenance
from dispatcher.cache import (
    AppCache,
    BuildFailed,
    BuildTimeout,
    CacheStats,
    Entry,
    Teardown,
    Timer,
    default_teardown,
)
from dispatcher.changes import Operation, TenantChange
from dispatcher.context import ENVIRON_KEY
from dispatcher.counts import NO_OBSERVER, OUTCOMES, Observer
from dispatcher.exceptions import InvalidRequest, RegistryUnavailable, SchemaMissing
from dispatcher.logs import DISPATCHING
from dispatcher.maintenance_gate import MaintenanceGate
from dispatcher.outage import Outage
from dispatcher.policy import CachePolicy
from dispatcher.registry import TenantRegistry
from dispatcher.resolve import normalise_base_domain
from dispatcher.router import Router
from dispatcher.routes import (
    HostKey,
    Resolver,
    TenantFinder,
    normalise_hosts,
    standard_resolvers,
)
from dispatcher.streams import Leases, guard_input
from dispatcher.tenant import Tenant, utcnow

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from dispatcher.follower import ChangeFollower

__all__ = ["TenantDispatcher"]

log = logging.getLogger(__name__)

DEFAULT_POLICY = CachePolicy()


class TenantDispatcher:
    """A WSGI app that hands each request to its tenant's app.

    :param registry: where tenants are looked up.
    :param create_app: builds a WSGI app (a Flask app, say) from a :class:`Tenant`;
        with ``shared_app``, it may return one of the shared apps (that very
        object) to serve the tenant with it. None: every active tenant is
        served by ``shared_app``.
    :param shared_app: a WSGI app serving many tenants, or a list of them
        (say one per plan; ``create_app`` picks); never torn down by the
        dispatcher. Give it, ``create_app``, or both.
    :param resolvers: the ways requests name tenants, asked in order (see
        :mod:`dispatcher.routes`); None: the standard ones the next three
        parameters describe. Give one or the other, not both.
    :param base_domain: route ``<label>.<base_domain>`` by subdomain; None: don't.
    :param path_routing: route ``/<prefix>/...`` by the tenant's path prefix,
        on the apex of ``base_domain`` (and its ``www.``) and on
        ``path_routing_hosts``; it needs at least one of them.
    :param path_routing_hosts: more hosts to route by path on, such as
        ``localhost`` or ``127.0.0.1`` (any port); they name no tenant.
    :param default_app: answers requests that name no tenant; None: 404.
    :param disabled_app: answers requests for disabled tenants; None: 403.
    :param maintenance_app: answers requests for tenants in maintenance,
        without a bypass; None: 503 with the tenant's ``Retry-After`` and
        message (:class:`~dispatcher.answers.TenantInMaintenance`).
    :param unavailable_app: answers requests that cannot be served now (the
        registry is unreachable, a build overran ``build_timeout``); it should
        answer 503 with ``Retry-After``. None: werkzeug's 503 with
        ``retry_after``.
    :param policy: how many apps are kept, how long, how long a build may
        take, and how often other processes' writes are polled for.
    :param retry_after: ``Retry-After`` seconds sent with 503 answers.
    :param teardown: called once per evicted app that belonged to one
        tenant, after its last response (never for shared apps,
        ``disabled_app``, ``maintenance_app`` nor ``default_app``; for a
        tenant in maintenance, only if a bypassing request built its app).
    :param timer: a monotonic clock in seconds.
    """

    def __init__(
        self,
        registry: TenantRegistry,
        create_app: Callable[[Tenant], WSGIApplication] | None = None,
        *,
        shared_app: WSGIApplication | Sequence[WSGIApplication] | None = None,
        resolvers: Iterable[Resolver] | None = None,
        base_domain: str | None = None,
        path_routing: bool = False,
        path_routing_hosts: Collection[str] = (),
        default_app: WSGIApplication | None = None,
        disabled_app: WSGIApplication | None = None,
        maintenance_app: WSGIApplication | None = None,
        unavailable_app: WSGIApplication | None = None,
        policy: CachePolicy = DEFAULT_POLICY,
        retry_after: int = 5,
        teardown: Teardown = default_teardown,
        timer: Timer = time.monotonic,
    ) -> None:
        if not isinstance(registry, TenantRegistry):
            raise TypeError(
                f"registry must be a TenantRegistry, not {type(registry).__name__}"
            )
        shared = _shared_apps(shared_app)
        if create_app is None:
            if not shared:
                raise TypeError(
                    "TenantDispatcher needs create_app (an app per tenant),"
                    " shared_app (one app for every tenant), or both"
                )
            if len(shared) > 1:
                raise TypeError(
                    f"shared_app is a list of {len(shared)} apps: give"
                    " create_app too, returning the one each tenant uses"
                )
        else:
            _check_callable("create_app", create_app)
        for name, app in (
            ("default_app", default_app),
            ("disabled_app", disabled_app),
            ("maintenance_app", maintenance_app),
            ("unavailable_app", unavailable_app),
        ):
            if app is not None:
                _check_callable(name, app)
        _check_callable("teardown", teardown)
        _check_callable("timer", timer)
        _check_retry_after(retry_after)
        if not isinstance(policy, CachePolicy):
            raise TypeError(f"policy must be a CachePolicy, not {policy!r}")
        self.policy = policy
        self.registry = registry
        self.create_app = create_app
        #: The shared apps as given (empty: every app is a tenant's own).
        self.shared_apps: tuple[WSGIApplication, ...] = shared
        #: The shorthand as given, normalised (None, False, empty with resolvers=).
        self.base_domain = normalise_base_domain(base_domain)
        self.path_routing = bool(path_routing)
        self.path_routing_hosts = normalise_hosts(
            path_routing_hosts, "path_routing_hosts"
        )
        if resolvers is None:
            resolvers = standard_resolvers(
                base_domain=self.base_domain,
                path_routing=self.path_routing,
                path_routing_hosts=self.path_routing_hosts,
            )
        elif self.base_domain or self.path_routing or self.path_routing_hosts:
            raise ValueError(
                "resolvers= replaces base_domain, path_routing and"
                " path_routing_hosts: give the resolvers (standard_resolvers()"
                " builds those three's), or those three, not both"
            )
        self._router = Router(resolvers)
        self.resolvers = self._router.resolvers
        self.default_app: WSGIApplication = default_app or NotFound()
        self.disabled_app: WSGIApplication = disabled_app or TenantDisabled()
        self.maintenance_app: WSGIApplication = maintenance_app or TenantInMaintenance()
        self.retry_after = retry_after
        self.unavailable_app: WSGIApplication = unavailable_app or ServiceUnavailable(
            retry_after=retry_after
        )
        # By identity: a shared app need not be hashable. The tuple above
        # and the attributes keep the objects, so their ids stay theirs.
        # default_app too: create_app may hand it to a tenant (a landing page
        # for tenants not set up yet), and it serves every unknown name.
        self._shared_ids = frozenset(
            map(
                id,
                (*shared, self.disabled_app, self.maintenance_app, self.default_app),
            )
        )
        self._cache = AppCache(
            self._build,
            policy=policy,
            teardown=self._teardown_tenant_app,
            timer=timer,
            shared=self.is_shared,
            outcome=self._outcome_of,
        )
        self.teardown = teardown
        # The hit path's lookups, without a call: Host -> HostKey -> entry;
        # while a resolver's header is present the Host does not decide.
        self._host_keys = self._router.host_keys
        self._headers = self._router.headers
        self._routes = self._cache.routes
        self._timer = timer
        # Requests by outcome (dispatcher.counts): the hit path adds to
        # _hot[entry.outcome], every other request to _slow[outcome].
        self._hot = [0] * len(OUTCOMES)
        self._slow = [0] * len(OUTCOMES)
        #: Hears lookups, builds and changes applied (dispatcher.metrics sets it).
        self.observer: Observer = NO_OBSERVER
        self._observer_failing = False
        # Wraps the tenant apps' response bodies; counts those never closed.
        self._leases = Leases()
        self._outage = Outage(timer, log)
        # Changes written through this registry object evict at once; with a
        # poll_interval, the registry's follower publishes everyone else's.
        self._unsubscribe = registry.feed.subscribe(self._on_change)
        self.poll_interval = policy.poll_interval
        self._following_in: int | None = None
        self._follow_lock = threading.Lock()
        # A forked worker starts afresh: see _forked().
        forks.on_fork_in_child(self, TenantDispatcher._forked)

    # -- the request path ------------------------------------------------------

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        if "CONTENT_LENGTH" in environ or "HTTP_TRANSFER_ENCODING" in environ:
            guard_input(environ)  # a malformed body is a 400, not a 500
        # The hit path, inlined because it runs on every request: a Host seen
        # before, decided by a HostKey, whose tenant's app is built, fresh and
        # not retired. Entry.acquire() is spelled out: append a lease, then
        # check retired. An absolute-form target (RAW_URI, or REQUEST_URI
        # under uWSGI, is "http://host/...") names the host instead of Host,
        # and a resolver's header may claim the request: left to _dispatch.
        entry = self._routes.get(self._host_keys.get(environ.get("HTTP_HOST")))  # type: ignore[arg-type]
        if (
            entry is not None
            and self._timer() < entry.expires_at
            and (environ.get("RAW_URI") or environ.get("REQUEST_URI") or "/")[0] == "/"
            and not (self._headers and _any_present(self._headers, environ))
        ):
            entry.leases.append(None)
            if not entry.retired:
                entry.used = True
                self._hot[entry.outcome] += 1
                environ[ENVIRON_KEY] = entry.tenant
                try:
                    body = entry.app(environ, start_response)
                except BaseException:
                    entry.release()
                    raise
                return self._leases.wrap(body, entry, environ)
            entry.release()
        return self._dispatch(environ, start_response)

    def _dispatch(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        # Lines logged meanwhile (a failing build, an outage) carry this
        # request's id; reset however it ends, so the next request on this
        # thread never carries it (see dispatcher.logs).
        token = DISPATCHING.set(environ)
        try:
            return self._resolve_and_serve(environ, start_response)
        finally:
            DISPATCHING.reset(token)

    def _resolve_and_serve(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        slow = self._slow
        try:
            key, match = self._router.resolve(environ)
        except InvalidRequest as e:
            slow[counts.BAD_HOST] += 1
            return BadRequest(str(e))(environ, start_response)
        find = match.find
        if key is None or find is None:  # the router lets no key go without find
            slow[counts.NO_TENANT] += 1
            return self.default_app(environ, start_response)
        try:
            # Lease first: a hit (a path route, say) then builds no closure.
            entry = self._cache.lease(key)
            if entry is not None:
                slow[entry.outcome] += 1
            else:
                entry = self._cache.load(key, lambda: self._lookup(find))
                if entry is None:
                    slow[counts.UNKNOWN] += 1
                else:
                    hit = entry.outcome == counts.HIT
                    slow[counts.MISS if hit else entry.outcome] += 1
        except (RegistryUnavailable, SchemaMissing):
            # Logged once per outage, by the lookup that met it first.
            self._outage.refused()
            slow[counts.UNAVAILABLE] += 1
            return self._unavailable(environ, start_response)
        except BuildTimeout as e:
            # The cache warns once when a build overruns and backs it off.
            log.debug("%s", e)
            slow[counts.UNAVAILABLE] += 1
            return self._unavailable(environ, start_response)
        except BuildFailed:
            slow[counts.FAILED] += 1
            return InternalServerError()(environ, start_response)
        if entry is None:
            return self.default_app(environ, start_response)
        match.apply(environ)
        return _serve(entry, environ, start_response, self._leases)

    def _lookup(self, find: Callable[[TenantFinder], Tenant | None]) -> Tenant | None:
        """``find(registry)`` after starting to follow changes; notes outages."""
        started = self._timer()
        try:
            self._follow()
            tenant = find(self.registry)
        except (RegistryUnavailable, SchemaMissing) as e:
            self._tell(self.observer.looked_up, self._timer() - started, "error")
            self._outage.failed(e)
            raise
        result = "unknown" if tenant is None else "found"
        self._tell(self.observer.looked_up, self._timer() - started, result)
        self._outage.succeeded()
        return tenant

    def _build(self, tenant: Tenant) -> WSGIApplication:
        if not tenant.is_active:
            return self.disabled_app
        if tenant.maintenance is not None:
            # The gate builds the tenant's app only for a bypassing request:
            # while in maintenance its schema may be mid-upgrade.
            return MaintenanceGate(
                tenant,
                lambda: self._build_own(tenant),
                self.maintenance_app,
                self.registry.redeem_bypass,
            )
        return self._build_own(tenant)

    def _build_own(self, tenant: Tenant) -> WSGIApplication:
        """The app ``create_app`` (or the shared app) serves ``tenant`` with."""
        if self.create_app is None:
            return self.shared_apps[0]
        started = self._timer()
        app = self.create_app(tenant)
        if not self.is_shared(app):
            self._tell(self.observer.built, self._timer() - started)
            collector.built(app)
        return app

    def _tell(self, event: Callable[..., None], *args: object) -> None:
        """Tell the observer of ``event``: its failure (a full disk under its
        metric files, say) never fails a request, and is logged once until it
        recovers."""
        try:
            event(*args)
        except Exception:
            if not self._observer_failing:
                log.exception("the dispatcher's observer failed on %s", event)
            self._observer_failing = True
        else:
            self._observer_failing = False

    def _outcome_of(self, app: WSGIApplication) -> int:
        """What a request ``app`` serves counts as (see :mod:`dispatcher.counts`)."""
        if app is self.disabled_app:
            return counts.DISABLED
        if isinstance(app, MaintenanceGate):
            return counts.MAINTENANCE
        return counts.HIT

    def is_shared(self, app: object) -> bool:
        """Whether ``app`` serves many tenants: a shared app, ``disabled_app``,
        ``maintenance_app`` or ``default_app``."""
        return id(app) in self._shared_ids

    def _teardown_tenant_app(self, app: WSGIApplication, tenant: Tenant) -> None:
        if isinstance(app, MaintenanceGate):
            # What is torn down is the app behind it, if a bypass built one.
            built = app.release()
            if built is None:
                return
            app = built
        # Shared apps (disabled_app, default_app too) serve others and belong to
        # whoever made them: never torn down here.
        if not self.is_shared(app):
            self.teardown(app, tenant)
            collector.released(app)

    def _unavailable(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        return self.unavailable_app(environ, start_response)

    # -- cache control ---------------------------------------------------------

    def follow(self) -> ChangeFollower | None:
        """Follow other processes' changes in this process from now on (the
        first lookup starts it otherwise); the follower, None without
        ``poll_interval``. A readiness check calls it, so a worker that has
        served nothing yet is not reported as not following."""
        self._follow()
        return self.registry.feed.follower if self.poll_interval is not None else None

    def _follow(self) -> None:
        # Before the first lookup in each process: the follower reads the
        # feed's newest generation (one indexed query), so no change committed
        # after this lookup can be missed; its threads do the rest. Lookups
        # racing the first one wait for it.
        if self.poll_interval is None or self._following_in == os.getpid():
            return
        with self._follow_lock:
            if self._following_in != os.getpid():
                self.registry.feed.follow(self.poll_interval)
                self._following_in = os.getpid()

    def _forked(self) -> None:
        """In a forked child: nothing built in the parent may serve here.

        Its apps may predate changes this process's follower will never see
        (it starts at the generation of its own first lookup), and they hold
        the parent's connections. Everything is looked up and built anew, and
        every lock is new: another thread of the parent may have held one.
        """
        self._router.forget()
        self._cache.forget_everything()
        self._follow_lock = threading.Lock()
        self._following_in = None
        self._outage = Outage(self._timer, log)

    def _on_change(self, change: TenantChange) -> None:
        self.invalidate(change)
        # A RESYNC may be a pruned change's marker: its time says nothing.
        written = change.changed_at
        lag = None
        if written is not None and change.operation is not Operation.RESYNC:
            lag = (utcnow() - written).total_seconds()
        self._tell(self.observer.applied, change, lag)

    def evict(self, slug: str) -> bool:
        """Drop ``slug``'s app now; the next request builds a fresh one."""
        return self._cache.invalidate(slug)

    def invalidate(self, change: TenantChange) -> bool:
        """Apply a change from the registry's feed: evict the app if older."""
        if change.operation is Operation.RESYNC:
            # What was built before the follower started may predate changes
            # it will never report.
            self._cache.clear()
            return True
        if change.added is not None:
            # The change says which names it made route to its tenant, and
            # which it took away: only their routes and "unknown" answers go.
            evicted = self._cache.invalidate(
                change.slug, change.generation, names_changed=False
            )
            keys = self._router.route_keys(change.slug, change.added, change.removed)
            if keys:
                self._cache.forget_unknown(keys)
            return evicted
        # Unknown names (a change recorded before they were): any unknown
        # name may now be known, any host route may have moved.
        evicted = self._cache.invalidate(
            change.slug,
            change.generation,
            names_changed=change.operation in _NEW_NAMES,
        )
        if change.operation in _NEW_HOSTS:
            # A new custom domain wins over a subdomain some host already
            # routes to: look every host up again (path routes cannot clash).
            self._cache.forget_routes(_is_host_key)
        return evicted

    def app_for(self, slug: str) -> AbstractContextManager[WSGIApplication]:
        """The tenant's app, from this dispatcher's cache and factory, for code
        outside a request: ``with dispatcher.app_for("acme") as app: ...``.

        See :func:`dispatcher.contexts.app_for`.
        """
        from dispatcher.contexts import app_for

        return app_for(self, slug)

    def stats(self) -> CacheStats:
        """Hits, misses, builds, evictions and sizes of the app cache."""
        stats = self._cache.stats()
        return replace(
            stats,
            hits=stats.hits + sum(self._hot),
            leaked_leases=self._leases.leaked,
        )

    def outcomes(self) -> dict[str, int]:
        """Requests answered by outcome since this object was made (a forked
        worker's include its parent's): see :mod:`dispatcher.counts`."""
        return {
            name: hot + slow
            for name, hot, slow in zip(OUTCOMES, self._hot, self._slow, strict=True)
        }

    def close(self) -> None:
        """Stop hearing the registry's changes and tear every tenant's own app down.

        Shared apps are left as they are: they are their maker's to close.
        The registry's change follower (shared by its dispatchers) runs until
        ``registry.close()``.
        """
        self._unsubscribe()
        self._cache.clear()


_NEW_HOSTS = frozenset({Operation.CREATED, Operation.DOMAIN_ADDED})
# Changes that can make a name that was unknown route to a tenant.
_NEW_NAMES = _NEW_HOSTS | {Operation.SUBDOMAIN, Operation.PATH_PREFIX}


def _is_host_key(key: object) -> bool:
    return type(key) is HostKey


def _any_present(names: tuple[str, ...], environ: WSGIEnvironment) -> bool:
    return any(name in environ for name in names)


def _serve(
    entry: Entry,
    environ: WSGIEnvironment,
    start_response: StartResponse,
    leases: Leases,
) -> Iterable[bytes]:
    environ[ENVIRON_KEY] = entry.tenant
    try:
        body = entry.app(environ, start_response)
    except BaseException:
        entry.release()
        raise
    return leases.wrap(body, entry, environ)


def _shared_apps(
    value: WSGIApplication | Sequence[WSGIApplication] | None,
) -> tuple[WSGIApplication, ...]:
    """``shared_app`` as a tuple of apps, checked."""
    if value is None:
        return ()
    if isinstance(value, list | tuple):
        if not value:
            raise TypeError("shared_app is an empty list: give at least one app")
        for i, app in enumerate(value):
            if not callable(app):
                raise TypeError(
                    f"shared_app[{i}] must be a WSGI app (callable), not {app!r}"
                )
        return tuple(value)
    if not callable(value):
        raise TypeError(
            f"shared_app must be a WSGI app (callable) or a list of them, not {value!r}"
        )
    return (value,)


def _check_callable(name: str, value: object) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, not {type(value).__name__}")


def _check_retry_after(value: object) -> None:
    # werkzeug drops a falsy Retry-After, so 0 would silently send none.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"retry_after must be an integer, not {value!r}")
    if value < 1:
        raise ValueError(f"retry_after must be at least 1, not {value!r}")
