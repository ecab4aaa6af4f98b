"""The dispatcher's resolution step: which tenant, if any, a request names.

A :class:`Router` validates the request's host, then asks its resolvers (see
:mod:`dispatcher.routes`) in order; the first that claims the request decides
it, found or not. It remembers each raw Host header's normalised host, and,
when a :class:`~dispatcher.routes.HostKey` decided a request (the host alone
did) with no path shift, that key, for the dispatcher's hit path::

    router = Router(standard_resolvers(base_domain="example.com"))
    key, match = router.resolve(environ)  # InvalidRequest: answer 400
    if key is not None:
        ...  # look the tenant up by match.find, cache it under key

Nothing here does I/O; ``environ`` is only read, except that an absolute-form
request target's host replaces ``HTTP_HOST``, as under werkzeug.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from dispatcher.resolve import request_host, target_authority
from dispatcher.routes import NO_TENANT, HostKey, Match, Resolver, RouteKey

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from dispatcher.changes import Names

__all__ = ["Router"]

# Raw Host headers remembered. Only valid hosts get in, and a memo is emptied
# when full, so spoofed hosts cannot grow it.
MEMO_SIZE = 10_000


class Router:
    """Resolvers asked in order, and what their answers taught about hosts.

    :param resolvers: the ways requests name tenants, in the order to ask them.
    """

    def __init__(self, resolvers: Iterable[Resolver]) -> None:
        self.resolvers = _check_resolvers(resolvers)
        #: The environ keys that can make a resolver claim a request: while
        #: one is present, the Host header alone does not decide it.
        self.headers = tuple(
            name for resolver in self.resolvers for name in resolver.headers
        )
        #: Raw Host header -> normalised host.
        self.hosts: dict[str, str] = {}
        #: Raw Host header -> the HostKey that decided its last request.
        self.host_keys: dict[str, HostKey] = {}

    def __repr__(self) -> str:
        return f"Router({list(self.resolvers)!r})"

    def resolve(self, environ: WSGIEnvironment) -> tuple[RouteKey | None, Match]:
        """The key to cache the request's tenant under, and the match that
        names it; ``(None, match)`` if the request names no tenant.

        :raise InvalidRequest: if the host, or what a resolver reads, is
            malformed (:exc:`~dispatcher.exceptions.InvalidHost` for the host).
        """
        raw, host = self._host(environ)
        path_info: str = environ.get("PATH_INFO", "")
        for resolver in self.resolvers:
            match = resolver.match(host, path_info, environ)
            if match is None:
                continue
            key = match.key
            if key is not None and match.find is None:
                raise TypeError(f"{resolver!r} named {key!r} but gave no find")
            # The hit path serves a remembered Host as is: never one whose
            # match moves part of the path into SCRIPT_NAME.
            if raw is not None and type(key) is HostKey and not match.prefix:
                key = self._remember(raw, key)
            return key, match
        return None, NO_TENANT

    def route_keys(self, slug: str, *names: Names) -> set[RouteKey]:
        """The keys under which any resolver caches requests for ``names``."""
        return {
            key
            for each in names
            for resolver in self.resolvers
            for key in resolver.route_keys(slug, each)
        }

    def forget(self) -> None:
        """Forget every host (in a forked child, say)."""
        self.hosts.clear()
        self.host_keys.clear()

    def _host(self, environ: WSGIEnvironment) -> tuple[str | None, str]:
        """The raw Host the request names, and its normalised host."""
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
            host = self.hosts.get(raw)
            if host is not None:
                return raw, host
        host = request_host(
            raw,
            environ.get("SERVER_NAME"),
            environ.get("SERVER_PORT"),
            environ.get("wsgi.url_scheme", "http"),
            environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        )
        if raw is not None:
            if len(self.hosts) >= MEMO_SIZE:
                self.hosts.clear()
            self.hosts[raw] = host
        return raw, host

    def _remember(self, raw: str, key: HostKey) -> HostKey:
        known = self.host_keys.get(raw)
        if known is not None and known == key:
            # One key object per Host: the hit path then finds its route by
            # identity, without calling RouteKey.__eq__.
            return known
        if len(self.host_keys) >= MEMO_SIZE:
            self.host_keys.clear()
        self.host_keys[raw] = key
        return key


def _check_resolvers(resolvers: Iterable[Resolver]) -> tuple[Resolver, ...]:
    if isinstance(resolvers, str) or not isinstance(resolvers, Iterable):
        raise TypeError(
            f"resolvers must be a list of resolvers, not {type(resolvers).__name__}"
        )
    checked = tuple(resolvers)
    if not checked:
        raise ValueError("resolvers is empty: no request could name a tenant")
    for resolver in checked:
        headers = getattr(resolver, "headers", None)
        if not (
            isinstance(headers, tuple)
            and all(isinstance(name, str) for name in headers)
            and callable(getattr(resolver, "match", None))
            and callable(getattr(resolver, "route_keys", None))
        ):
            raise TypeError(
                f"resolvers entry {resolver!r} is not a Resolver: it needs"
                " headers (a tuple of environ keys), match() and route_keys()"
            )
    return checked
