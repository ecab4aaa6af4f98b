"""Ways of identifying a tenant from a request: resolvers and their route keys.

A resolver's :meth:`~Resolver.match` looks at a request's host, path and
headers, and says, with no side effect, whether the request is its to decide
and if so which tenant it names: a :class:`Match` with a typed route key (the
app cache's key), how to look the tenant up in the registry, and how to shift
the path once the tenant is found (as starlette's ``Mount`` returns a child
scope for the router to apply). The dispatcher asks its resolvers in order;
the first that claims a request decides it.

Route keys are small types, one per kind, so a host, a path prefix and a
header value can never be mistaken for each other in the cache. They subclass
``str`` only for speed (the hit path hashes one per request and ``str`` keeps
its hash); equality also compares the type, so ``HostKey("a") !=
PathKey("a")``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from dispatcher.changes import Names
    from dispatcher.tenant import Tenant

__all__ = [
    "NO_TENANT",
    "HeaderKey",
    "HostKey",
    "Match",
    "PathKey",
    "Resolver",
    "RouteKey",
    "TenantFinder",
]


class RouteKey(str):
    """A cache key naming a tenant one way; equal only to a key of its own kind."""

    __slots__ = ()
    # str's hash, cached in the object: the hit path pays nothing for the type.
    __hash__ = str.__hash__

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str.__repr__(self)})"


class HostKey(RouteKey):
    """A normalised host name; the route depends on the host alone."""

    __slots__ = ()


class PathKey(RouteKey):
    """A tenant's path prefix (the first path segment, without slashes)."""

    __slots__ = ()


class HeaderKey(RouteKey):
    """A tenant's slug as a trusted gateway sent it in a request header."""

    __slots__ = ()


class TenantFinder(Protocol):
    """The registry's lookups a resolver may use."""

    def find_by_slug(self, slug: str) -> Tenant | None: ...

    def find_by_host(self, host: str) -> Tenant | None: ...

    def find_by_host_or_subdomain(self, host: str, label: str) -> Tenant | None: ...

    def find_by_path_prefix(self, prefix: str) -> Tenant | None: ...


@dataclass(frozen=True, slots=True)
class Match:
    """A resolver's answer: the request names the tenant under ``key``.

    ``key`` None: the request is this resolver's to decide, and it names no
    tenant (the default app answers). ``prefix``: moved from ``PATH_INFO`` to
    ``SCRIPT_NAME`` once the tenant is found, so its links include it.
    """

    key: RouteKey | None
    find: Callable[[TenantFinder], Tenant | None] | None = None
    prefix: str = ""
    path_info: str = ""

    def apply(self, environ: WSGIEnvironment) -> None:
        """Shift the path for the tenant app; call only once a tenant is found."""
        if self.prefix:
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + self.prefix
            environ["PATH_INFO"] = self.path_info


#: The match of a resolver that claims a request naming no tenant.
NO_TENANT = Match(None)


class Resolver(Protocol):
    """One way of identifying a tenant.

    ``headers``: the ``environ`` keys (``HTTP_X_TENANT``) whose presence can
    make this resolver claim a request. A resolver with none must decide
    whether it claims a request from its host alone (the path may choose the
    key): the dispatcher relies on that to remember, per Host header, which
    resolver decides, and to serve repeat hosts without asking again.
    """

    headers: tuple[str, ...]

    def match(
        self, host: str, path_info: str, environ: WSGIEnvironment
    ) -> Match | None:
        """The request's route (None: not this resolver's to decide).

        ``host`` is normalised and valid. Must not change ``environ``; may
        raise :class:`~dispatcher.exceptions.InvalidRequest` (answered 400).
        """
        ...

    def route_keys(self, slug: str, names: Names) -> Iterable[RouteKey]:
        """The keys under which this resolver caches requests for tenant ``slug``
        reached by ``names`` (a change's added or removed names)."""
        ...
