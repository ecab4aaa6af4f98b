"""Ways of identifying a tenant from a request: resolvers and their route keys.

A resolver's :meth:`~Resolver.match` looks at a request's host, path and
headers, and says, with no side effect, whether the request is its to decide
and if so which tenant it names: a :class:`Match` with a typed route key (the
app cache's key), how to look the tenant up in the registry, and how to shift
the path once the tenant is found (as starlette's ``Mount`` returns a child
scope for the router to apply). The dispatcher asks its resolvers in order;
the first that claims a request decides it, found or not: no other resolver
is asked after a claim.

Three ship here. :func:`standard_resolvers` builds the usual list from the
dispatcher's shorthand (``base_domain``, ``path_routing``,
``path_routing_hosts``): :class:`PathResolver` on the hosts routed by path,
then :class:`HostResolver`. Identifying tenants by a header a trusted gateway
sets is one more resolver, put first::

    from dispatcher import HeaderResolver, TenantDispatcher, standard_resolvers

    application = TenantDispatcher(
        registry,
        create_app,
        resolvers=[
            HeaderResolver("X-Tenant"),
            *standard_resolvers(base_domain="example.com"),
        ],
    )

Route keys are small types, one per kind, so a host, a path prefix and a
header value can never be mistaken for each other in the cache. They subclass
``str`` only for speed (the hit path hashes one per request and ``str`` keeps
its hash); equality also compares the type, so ``HostKey("a") !=
PathKey("a")``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from dispatcher.resolve import (
    configured_host,
    first_segment,
    is_apex,
    normalise_base_domain,
    parse_slug,
    subdomain_of,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

    from dispatcher.changes import Names
    from dispatcher.tenant import Tenant

__all__ = [
    "NO_TENANT",
    "HeaderKey",
    "HeaderResolver",
    "HostKey",
    "HostResolver",
    "Match",
    "PathKey",
    "PathResolver",
    "Resolver",
    "RouteKey",
    "SlugKey",
    "TenantFinder",
    "normalise_hosts",
    "standard_resolvers",
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


class SlugKey(RouteKey):
    """A tenant's slug as code outside a request names it
    (:func:`~dispatcher.contexts.app_for`)."""

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
    tenant (the default app answers). ``prefix``: the start of ``PATH_INFO``
    that moves to ``SCRIPT_NAME`` once the tenant is found, so its links
    include it. A match depends on no more of the request than its key does,
    so a resolver may hand the same one to every request for that key.
    """

    key: RouteKey | None
    find: Callable[[TenantFinder], Tenant | None] | None = None
    prefix: str = ""

    def apply(self, environ: WSGIEnvironment) -> None:
        """Shift the path for the tenant app; call only once a tenant is found."""
        if self.prefix:
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + self.prefix
            environ["PATH_INFO"] = environ["PATH_INFO"][len(self.prefix) :]


#: Path segments whose match a PathResolver keeps.
MATCH_MEMO_SIZE = 10_000

#: The match of a resolver that claims a request naming no tenant.
NO_TENANT = Match(None)


class Resolver(Protocol):
    """One way of identifying a tenant.

    ``headers``: the ``environ`` keys (``HTTP_X_TENANT``) whose presence can
    make this resolver claim a request. A resolver with none must decide
    whether it claims a request from its host alone (the path may choose the
    key), and a :class:`HostKey` must be chosen by the host alone: the
    dispatcher relies on both to serve a repeat Host header whose resolver
    answered a HostKey without asking again (unless a resolver's header is
    present, or the match shifts the path).
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


class HostResolver:
    """A tenant's custom domain, then a single-label subdomain of ``base_domain``.

    Claims every request: IP addresses, the apex of ``base_domain`` and its
    ``www.`` name no tenant; any other host is looked up, in one query, as a
    custom domain and (if it is ``<label>.<base_domain>``) as a subdomain, the
    custom domain winning. Put it after the resolvers of more specific hosts.

    :param base_domain: route ``<label>.<base_domain>`` by subdomain; None:
        custom domains only.
    """

    headers: tuple[str, ...] = ()

    def __init__(self, base_domain: str | None = None) -> None:
        self.base_domain = normalise_base_domain(base_domain)

    def __repr__(self) -> str:
        return f"HostResolver(base_domain={self.base_domain!r})"

    def match(self, host: str, path_info: str, environ: WSGIEnvironment) -> Match:
        if host.startswith("[") or host.rpartition(".")[2].isdigit():
            return NO_TENANT  # an IP address
        base = self.base_domain
        label = None
        if base is not None:
            if is_apex(host, base):
                return NO_TENANT
            label = subdomain_of(host, base)
        if label is None:
            return Match(HostKey(host), lambda finder: finder.find_by_host(host))
        return Match(
            HostKey(host),
            lambda finder: finder.find_by_host_or_subdomain(host, label),
        )

    def route_keys(self, slug: str, names: Names) -> list[RouteKey]:
        keys: list[RouteKey] = [HostKey(domain) for domain in names.domains]
        if names.subdomain is not None and self.base_domain is not None:
            keys.append(HostKey(f"{names.subdomain}.{self.base_domain}"))
        return keys


class PathResolver:
    """The first path segment as a tenant's path prefix, on some hosts only.

    On its hosts (the apex of ``base_domain`` and its ``www.``, and ``hosts``)
    it claims every request, and a path with no valid first segment names no
    tenant: it never falls through to a lookup by host. Other hosts are not
    its to decide. Routing by path on any host would let a spoofed Host reach
    every tenant, whose links are built from the Host it was reached on.

    The segment moves from ``PATH_INFO`` to ``SCRIPT_NAME`` once the tenant is
    found, so the tenant's links include it.

    :param base_domain: route by path on it and on ``www.<base_domain>``.
    :param hosts: more hosts to route by path on, such as ``localhost`` (any
        port); at least one host in all.
    """

    headers: tuple[str, ...] = ()

    def __init__(
        self, *, base_domain: str | None = None, hosts: Collection[str] = ()
    ) -> None:
        base = normalise_base_domain(base_domain)
        listed = normalise_hosts(hosts)
        if base is None and not listed:
            raise ValueError(
                "PathResolver needs a base_domain or hosts: the hosts on which"
                " /<prefix>/ names a tenant"
            )
        self.base_domain = base
        self.hosts = listed if base is None else listed | {base, f"www.{base}"}
        # Segment -> its match, so repeat requests build no Match, and the
        # cache finds their route by identity. Only valid labels get in, and
        # it is emptied when full: made-up segments cannot grow it.
        self._matches: dict[str, Match] = {}

    def __repr__(self) -> str:
        return f"PathResolver(hosts={sorted(self.hosts)!r})"

    def match(
        self, host: str, path_info: str, environ: WSGIEnvironment
    ) -> Match | None:
        if host not in self.hosts:
            return None
        found = first_segment(path_info)
        if found is None:
            return NO_TENANT
        segment = found[0]
        match = self._matches.get(segment)
        if match is None:
            if len(self._matches) >= MATCH_MEMO_SIZE:
                self._matches.clear()
            match = self._matches[segment] = Match(
                PathKey(segment),
                lambda finder: finder.find_by_path_prefix(segment),
                "/" + segment,
            )
        return match

    def route_keys(self, slug: str, names: Names) -> list[RouteKey]:
        if names.path_prefix is None:
            return []
        return [PathKey(names.path_prefix)]


# RFC 9110 token characters, less "_" (some servers drop headers with one) and
# the rarer symbols: a name every server passes on as HTTP_<NAME>.
_HEADER_NAME_RE = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*", re.ASCII)
# WSGI passes these as CONTENT_TYPE and CONTENT_LENGTH, without HTTP_.
_UNPREFIXED_HEADERS = frozenset({"content-type", "content-length"})


class HeaderResolver:
    """A tenant named by its slug in a request header, such as ``X-Tenant``.

    Claims a request only when the header is present; a value that is not a
    slug (lower-case, one DNS label) is answered with 400, an unknown slug
    by the default app. The slug is looked up as is, whatever the host.

    Security: use it only behind a gateway that sets the header on every
    request it passes on and strips it from what clients send, in every
    spelling a server may map to the same ``environ`` key (``X-Tenant`` and
    ``X_Tenant`` both become ``HTTP_X_TENANT`` on servers that keep
    underscores; werkzeug and gunicorn drop those). Trusted from
    the open internet, the header lets anyone reach any tenant from any host,
    and a tenant's links would point at the host it was reached on.

    :param header: the header's name, as sent (``X-Tenant``).
    """

    def __init__(self, header: str = "X-Tenant") -> None:
        if not isinstance(header, str):
            raise TypeError(f"header must be a str, not {type(header).__name__}")
        if not _HEADER_NAME_RE.fullmatch(header):
            raise ValueError(
                f"header {header!r} must be a header name: letters and digits,"
                " in words joined by '-'"
            )
        if header.lower() in _UNPREFIXED_HEADERS or header.lower() == "host":
            raise ValueError(f"header {header!r} is the request's own, not a tenant's")
        self.header = header
        self.headers: tuple[str, ...] = ("HTTP_" + header.upper().replace("-", "_"),)

    def __repr__(self) -> str:
        return f"HeaderResolver({self.header!r})"

    def match(
        self, host: str, path_info: str, environ: WSGIEnvironment
    ) -> Match | None:
        value: str | None = environ.get(self.headers[0])
        if value is None:
            return None
        slug = parse_slug(value, f"{self.header} header")
        return Match(HeaderKey(slug), lambda finder: finder.find_by_slug(slug))

    def route_keys(self, slug: str, names: Names) -> list[RouteKey]:
        # Any change may be the one that created the tenant (whose names may
        # be none at all: reached by header only): its "unknown" answer goes.
        return [HeaderKey(slug)]


def standard_resolvers(
    *,
    base_domain: str | None = None,
    path_routing: bool = False,
    path_routing_hosts: Collection[str] = (),
) -> list[Resolver]:
    """The resolvers of the dispatcher's shorthand, in the order it asks them.

    With ``path_routing``, a :class:`PathResolver` on the apex of
    ``base_domain``, its ``www.`` and ``path_routing_hosts``; then a
    :class:`HostResolver` on ``base_domain``.

    :raise ValueError: if ``path_routing_hosts`` are given without
        ``path_routing``, or ``path_routing`` has no host to route on.
    """
    hosts = normalise_hosts(path_routing_hosts, "path_routing_hosts")
    if hosts and not path_routing:
        raise ValueError(
            f"path_routing_hosts {sorted(hosts)!r} are given but path_routing"
            " is off: turn it on, or list no hosts"
        )
    resolvers: list[Resolver] = []
    if path_routing:
        if base_domain is None and not hosts:
            # Routing by path on every host would let any Host header reach
            # every tenant, and the tenant's links would point at that host.
            raise ValueError(
                "path_routing needs a base_domain or path_routing_hosts: the"
                " hosts on which /<prefix>/ names a tenant"
            )
        resolvers.append(PathResolver(base_domain=base_domain, hosts=hosts))
    resolvers.append(HostResolver(base_domain))
    return resolvers


def normalise_hosts(hosts: Collection[str], what: str = "hosts") -> frozenset[str]:
    """Check configured host names (no port); return them as :func:`parse_host` does.

    :param what: the setting's name, for the messages.
    :raise TypeError: if ``hosts`` is a string or not a collection of strings.
    :raise ValueError: if an entry is not a host name or has a port.
    """
    if isinstance(hosts, str) or not isinstance(hosts, Collection):
        raise TypeError(
            f"{what} must be a collection of host names, not {type(hosts).__name__}"
        )
    return frozenset(configured_host(host, f"{what} entry") for host in hosts)
