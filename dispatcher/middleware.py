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

A request is resolved in this order:

1. Mounted apps (``mounts={"/static": app}``), longest prefix first.
2. The Host header (``SERVER_NAME`` for HTTP/1.0 requests without one); a
   malformed host is answered with 400 before any cache or database access.
3. A tenant's custom domain (exact match), then a single-label subdomain of
   ``base_domain``. The apex, ``www.``, IP addresses and the
   ``path_routing_hosts`` name no tenant.
4. With ``path_routing``, on the apex of ``base_domain``, its ``www.`` and the
   ``path_routing_hosts`` only: the first path segment as a tenant's path
   prefix; it moves from ``PATH_INFO`` to ``SCRIPT_NAME`` so the tenant's links
   include it. Any other host reaches no tenant by path: a tenant's links are
   built from the Host it was reached on, so a spoofed Host must not reach it.
5. ``default_app``, or 404.

A disabled tenant gets ``disabled_app`` (default: 403). While the database is
unreachable, tenants already built keep being served (past ``app_ttl`` for up
to ``stale_if_error`` more seconds); others get 503.

``X-Forwarded-Host`` and similar headers are ignored. Behind a proxy that sets
them, wrap the dispatcher in :class:`werkzeug.middleware.proxy_fix.ProxyFix`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import (
    BadRequest,
    InternalServerError,
    NotFound,
    ServiceUnavailable,
)

from dispatcher import forks
from dispatcher.answers import TenantDisabled
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
from dispatcher.changes import Names, Operation, TenantChange
from dispatcher.context import ENVIRON_KEY
from dispatcher.exceptions import InvalidHost, RegistryUnavailable, SchemaMissing
from dispatcher.policy import CachePolicy
from dispatcher.registry import TenantRegistry
from dispatcher.resolve import (
    first_segment,
    is_apex,
    match_mount,
    normalise_base_domain,
    normalise_mount_prefix,
    parse_host,
    request_host,
    subdomain_of,
    target_authority,
)
from dispatcher.streams import Leases, guard_input
from dispatcher.tenant import Tenant

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["TenantDispatcher"]

log = logging.getLogger(__name__)

DEFAULT_POLICY = CachePolicy()

# Raw Host header -> routing key, so a repeat host skips parsing. Only valid
# hosts get in, and the memo is emptied when full, so spoofed hosts cannot grow it.
_HOST_MEMO_SIZE = 10_000
# Routing keys of hosts that name no tenant. "/" is no path key ("/<prefix>")
# nor a host, so no route is ever stored under it.
_NO_HOST_TENANT = ""
_PATH_HOST = "/"


class TenantDispatcher:
    """A WSGI app that hands each request to its tenant's app.

    :param registry: where tenants are looked up.
    :param create_app: builds a WSGI app (a Flask app, say) from a :class:`Tenant`.
    :param base_domain: route ``<label>.<base_domain>`` by subdomain; None: don't.
    :param path_routing: route ``/<prefix>/...`` by the tenant's path prefix,
        on the apex of ``base_domain`` (and its ``www.``) and on
        ``path_routing_hosts``; it needs at least one of them.
    :param path_routing_hosts: more hosts to route by path on, such as
        ``localhost`` or ``127.0.0.1`` (any port); they name no tenant.
    :param default_app: answers requests that name no tenant; None: 404.
    :param disabled_app: answers requests for disabled tenants; None: 403.
    :param mounts: fixed WSGI apps by path prefix, served before any tenant.
    :param policy: how many apps are kept, how long, how long a build may
        take, and how often other processes' writes are polled for.
    :param retry_after: ``Retry-After`` seconds sent with 503 answers.
    :param teardown: called once per evicted app, after its last response.
    :param timer: a monotonic clock in seconds.
    """

    def __init__(
        self,
        registry: TenantRegistry,
        create_app: Callable[[Tenant], WSGIApplication],
        *,
        base_domain: str | None = None,
        path_routing: bool = False,
        path_routing_hosts: Collection[str] = (),
        default_app: WSGIApplication | None = None,
        disabled_app: WSGIApplication | None = None,
        mounts: Mapping[str, WSGIApplication] | None = None,
        policy: CachePolicy = DEFAULT_POLICY,
        retry_after: int = 5,
        teardown: Teardown = default_teardown,
        timer: Timer = time.monotonic,
    ) -> None:
        if not isinstance(registry, TenantRegistry):
            raise TypeError(
                f"registry must be a TenantRegistry, not {type(registry).__name__}"
            )
        _check_callable("create_app", create_app)
        for name, app in (("default_app", default_app), ("disabled_app", disabled_app)):
            if app is not None:
                _check_callable(name, app)
        _check_callable("teardown", teardown)
        _check_callable("timer", timer)
        _check_number("retry_after", retry_after, integer=True, minimum=1)
        if not isinstance(policy, CachePolicy):
            raise TypeError(f"policy must be a CachePolicy, not {policy!r}")
        self.policy = policy
        self.registry = registry
        self.create_app = create_app
        self.base_domain = normalise_base_domain(base_domain)
        self.path_routing = bool(path_routing)
        self.path_routing_hosts = _check_path_routing_hosts(
            path_routing_hosts, self.path_routing, self.base_domain
        )
        # Hosts routed by path: their routing key is _PATH_HOST.
        self._path_hosts = self.path_routing_hosts
        if self.path_routing and self.base_domain is not None:
            apex = self.base_domain
            self._path_hosts = self._path_hosts | {apex, f"www.{apex}"}
        self.default_app: WSGIApplication = default_app or NotFound()
        self.disabled_app: WSGIApplication = disabled_app or TenantDisabled()
        self.mounts = _check_mounts(mounts or {})
        self._mount_prefixes = tuple(
            sorted(self.mounts, key=lambda prefix: (-len(prefix), prefix))
        )
        self.retry_after = retry_after
        self._cache = AppCache(
            self._build,
            policy=policy,
            teardown=self._teardown_tenant_app,
            timer=timer,
        )
        self.teardown = teardown
        self._host_keys: dict[str, str] = {}
        self._routes = self._cache.routes
        self._timer = timer
        self._hot_hits = 0
        # Wraps the tenant apps' response bodies; counts those never closed.
        self._leases = Leases()
        self._outage = _Outage(timer)
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
        # before and valid, whose tenant's app is built, fresh and not retired.
        # Entry.acquire() is spelled out: append a lease, then check retired.
        # An absolute-form target (RAW_URI, or REQUEST_URI under uWSGI, is
        # "http://host/...") names the host instead of Host: left to _host_key.
        entry = self._routes.get(self._host_keys.get(environ.get("HTTP_HOST")))  # type: ignore[arg-type]
        if (
            entry is not None
            and self._timer() < entry.expires_at
            and not self._mount_prefixes
            and (environ.get("RAW_URI") or environ.get("REQUEST_URI") or "/")[0] == "/"
        ):
            entry.leases.append(None)
            if not entry.retired:
                entry.used = True
                self._hot_hits += 1
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
        path_info: str = environ.get("PATH_INFO", "")
        if self._mount_prefixes:
            mounted = match_mount(path_info, self._mount_prefixes)
            if mounted is not None:
                prefix, rest = mounted
                _shift(environ, prefix, rest)
                return self.mounts[prefix](environ, start_response)
        try:
            host_key = self._host_key(environ)
        except InvalidHost as e:
            return BadRequest(str(e))(environ, start_response)
        try:
            if host_key and host_key != _PATH_HOST:
                entry = self._cache.get(host_key, lambda: self._find_by_host(host_key))
                if entry is not None:
                    return _serve(entry, environ, start_response, self._leases)
            elif host_key:
                found = first_segment(path_info)
                if found is not None:
                    segment, rest = found
                    path_key = "/" + segment
                    entry = self._cache.get(
                        path_key, lambda: self._find_by_path_prefix(segment)
                    )
                    if entry is not None:
                        _shift(environ, path_key, rest)
                        return _serve(entry, environ, start_response, self._leases)
        except (RegistryUnavailable, SchemaMissing):
            # Logged once per outage, by the lookup that met it first.
            self._outage.refused()
            return self._unavailable(environ, start_response)
        except BuildTimeout as e:
            # The cache warns once when a build overruns and backs it off.
            log.debug("%s", e)
            return self._unavailable(environ, start_response)
        except BuildFailed:
            return InternalServerError()(environ, start_response)
        return self.default_app(environ, start_response)

    def _host_key(self, environ: WSGIEnvironment) -> str:
        """The normalised host to look tenants up by; "" if it names none, and
        :data:`_PATH_HOST` if tenants are found by path on it."""
        raw: str | None = environ.get("HTTP_HOST")
        # RAW_URI: gunicorn, werkzeug; REQUEST_URI: uWSGI (werkzeug sets both).
        authority = target_authority(
            environ.get("RAW_URI") or environ.get("REQUEST_URI")
        )
        if authority is not None:
            # RFC 9112 section 3.2.2: the target's host wins over Host, and the
            # tenant app must see the host it was routed by, as under werkzeug.
            raw = environ["HTTP_HOST"] = authority
        if raw is not None:
            key = self._host_keys.get(raw)
            if key is not None:
                return key
        host = request_host(
            raw,
            environ.get("SERVER_NAME"),
            environ.get("SERVER_PORT"),
            environ.get("wsgi.url_scheme", "http"),
            environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        )
        key = self._routing_key(host)
        if raw is not None:
            if len(self._host_keys) >= _HOST_MEMO_SIZE:
                self._host_keys.clear()
            self._host_keys[raw] = key
        return key

    def _routing_key(self, host: str) -> str:
        if host in self._path_hosts:
            return _PATH_HOST
        if host.startswith("[") or host.rpartition(".")[2].isdigit():
            return _NO_HOST_TENANT  # an IP address
        if self.base_domain is not None and is_apex(host, self.base_domain):
            return _NO_HOST_TENANT
        return host

    def _find_by_path_prefix(self, segment: str) -> Tenant | None:
        return self._lookup(self.registry.find_by_path_prefix, segment)

    def _find_by_host(self, host: str) -> Tenant | None:
        label = None
        if self.base_domain is not None:
            label = subdomain_of(host, self.base_domain)
        if label is None:
            return self._lookup(self.registry.find_by_host, host)
        return self._lookup(self.registry.find_by_host_or_subdomain, host, label)

    def _lookup(self, find: Callable[..., Tenant | None], *names: str) -> Tenant | None:
        """``find(*names)`` after starting to follow changes; notes outages."""
        try:
            self._follow()
            tenant = find(*names)
        except (RegistryUnavailable, SchemaMissing) as e:
            self._outage.failed(e)
            raise
        self._outage.succeeded()
        return tenant

    def _build(self, tenant: Tenant) -> WSGIApplication:
        if not tenant.is_active:
            return self.disabled_app
        return self.create_app(tenant)

    def _teardown_tenant_app(self, app: WSGIApplication, tenant: Tenant) -> None:
        # The disabled app is shared by every disabled tenant: never torn down.
        if app is not self.disabled_app:
            self.teardown(app, tenant)

    def _unavailable(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        answer = ServiceUnavailable(retry_after=self.retry_after)
        return answer(environ, start_response)

    # -- cache control ---------------------------------------------------------

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
        self._host_keys.clear()
        self._cache.forget_everything()
        self._follow_lock = threading.Lock()
        self._following_in = None
        self._outage = _Outage(self._timer)

    def _on_change(self, change: TenantChange) -> None:
        self.invalidate(change)

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
            # The change says which names it made route to its tenant: only
            # those may have been unknown or routed elsewhere until now.
            evicted = self._cache.invalidate(
                change.slug, change.generation, names_changed=False
            )
            keys = self._routing_keys(change.added)
            if keys:
                self._cache.forget_unknown(keys)
            return evicted
        # Unknown names (a change recorded before they were, or RESYNC-like):
        # any unknown name may now be known, any host route may have moved.
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

    def _routing_keys(self, names: Names) -> list[str]:
        """The routing keys under which requests for ``names`` are cached."""
        hosts = list(names.domains)
        if names.subdomain is not None and self.base_domain is not None:
            hosts.append(f"{names.subdomain}.{self.base_domain}")
        keys = [self._routing_key(host) for host in hosts]
        # "" and _PATH_HOST are never looked up by host, so never cached as such.
        keys = [key for key in keys if key not in (_NO_HOST_TENANT, _PATH_HOST)]
        if names.path_prefix is not None:
            keys.append("/" + names.path_prefix)
        return keys

    def stats(self) -> CacheStats:
        """Hits, misses, builds, evictions and sizes of the app cache."""
        stats = self._cache.stats()
        return replace(
            stats,
            hits=stats.hits + self._hot_hits,
            leaked_leases=self._leases.leaked,
        )

    def close(self) -> None:
        """Stop hearing the registry's changes and tear every app down.

        The registry's change follower (shared by its dispatchers) runs until
        ``registry.close()``.
        """
        self._unsubscribe()
        self._cache.clear()


class _Outage:
    """The registry's outages, logged once when each starts and once when it ends.

    A lookup that succeeds while none is under way reads one attribute and
    takes no lock; failures, and the first success after them, take the lock.
    """

    def __init__(self, timer: Timer) -> None:
        self._timer = timer
        self._lock = threading.Lock()
        self._since: float | None = None
        self._refused = 0

    def failed(self, error: Exception) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = self._timer()
            self._refused = 0
        log.warning(
            "the registry is unavailable: %s; tenants without a built app get"
            " 503 until it is back",
            error,
        )

    def refused(self) -> None:
        with self._lock:
            self._refused += 1

    def succeeded(self) -> None:
        if self._since is None:
            return
        with self._lock:
            if self._since is None:
                return  # another thread saw the end first
            down_for = self._timer() - self._since
            refused, self._since = self._refused, None
        log.warning(
            "the registry is available again after %.1f s; %d requests got 503"
            " meanwhile",
            down_for,
            refused,
        )


_NEW_HOSTS = frozenset({Operation.CREATED, Operation.DOMAIN_ADDED})
# Changes that can make a name that was unknown route to a tenant.
_NEW_NAMES = _NEW_HOSTS | {Operation.SUBDOMAIN, Operation.PATH_PREFIX}


def _is_host_key(key: object) -> bool:
    return isinstance(key, str) and not key.startswith("/")


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


def _shift(environ: WSGIEnvironment, prefix: str, rest: str) -> None:
    environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
    environ["PATH_INFO"] = rest


def _check_callable(name: str, value: object) -> None:
    if not callable(value):
        raise TypeError(f"{name} must be callable, not {type(value).__name__}")


def _check_number(
    name: str,
    value: Any,
    *,
    integer: bool = False,
    minimum: float,
    exclusive: bool = False,
) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, not {value!r}")
    if math.isnan(value) or value < minimum or (exclusive and value == minimum):
        bound = f"greater than {minimum}" if exclusive else f"at least {minimum}"
        raise ValueError(f"{name} must be {bound}, not {value!r}")


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")


def _check_path_routing_hosts(
    hosts: Collection[str], path_routing: bool, base_domain: str | None
) -> frozenset[str]:
    if isinstance(hosts, str) or not isinstance(hosts, Collection):
        raise TypeError(
            "path_routing_hosts must be a collection of host names, "
            f"not {type(hosts).__name__}"
        )
    checked = frozenset(_check_path_routing_host(host) for host in hosts)
    if checked and not path_routing:
        raise ValueError(
            f"path_routing_hosts {sorted(checked)!r} are given but path_routing"
            " is off: turn it on, or list no hosts"
        )
    if path_routing and base_domain is None and not checked:
        # Routing by path on every host would let any Host header reach every
        # tenant, and the tenant's links would point at that host.
        raise ValueError(
            "path_routing needs a base_domain or path_routing_hosts: the hosts"
            " on which /<prefix>/ names a tenant"
        )
    return checked


def _check_path_routing_host(host: object) -> str:
    if not isinstance(host, str):
        raise TypeError(
            f"path_routing_hosts entry {host!r} must be a host name, "
            f"not {type(host).__name__}"
        )
    try:
        name = parse_host(host)
    except InvalidHost as e:
        raise ValueError(
            f"path_routing_hosts entry {host!r} is not a host name: {e}"
        ) from e
    # parse_host drops a port; the dispatcher routes by host whatever the port,
    # so a listed port would promise what is not done.
    has_port = not host.endswith("]") if name.startswith("[") else ":" in host
    if has_port:
        raise ValueError(
            f"path_routing_hosts entry {host!r} must be a host name without a"
            " port (every port of the host is routed alike)"
        )
    return name


def _check_mounts(mounts: Mapping[str, WSGIApplication]) -> dict[str, WSGIApplication]:
    if not isinstance(mounts, Mapping):
        raise TypeError(f"mounts must be a mapping, not {type(mounts).__name__}")
    checked = {}
    for prefix, app in mounts.items():
        _check_callable(f"mounts[{prefix!r}]", app)
        checked[normalise_mount_prefix(prefix)] = app
    return checked
