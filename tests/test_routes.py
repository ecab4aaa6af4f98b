"""Route keys and resolvers, their ``match`` called directly on plain values.

Like werkzeug's ``tests/sansio``: each resolver's ``match(host, path_info,
environ)`` is pure, so the cases are tables. ``host`` is given normalised, as
the dispatcher passes it; the dispatcher-level behaviour (400s, hit path,
invalidation) is in ``test_middleware.py``. Whether a match's ``find`` asks
the registry the right question is checked against a real registry.
"""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher import TenantRegistry
from dispatcher.changes import NO_NAMES, Names
from dispatcher.exceptions import InvalidRequest
from dispatcher.routes import (
    NO_TENANT,
    HeaderKey,
    HeaderResolver,
    HostKey,
    HostResolver,
    Match,
    PathKey,
    PathResolver,
    Resolver,
    RouteKey,
    normalise_hosts,
    standard_resolvers,
)

BASE = "example.com"

#: What a match says, without its find: (key, prefix, the PATH_INFO the tenant
#: app sees, "" if unshifted); None for "not mine".
Said = tuple[RouteKey | None, str, str] | None


def said(match: Match | None, path_info: str = "") -> Said:
    if match is None:
        return None
    environ: dict[str, Any] = {"PATH_INFO": path_info}
    match.apply(environ)
    return match.key, match.prefix, environ["PATH_INFO"] if match.prefix else ""


# -- route keys -----------------------------------------------------------------


def test_route_keys_of_different_kinds_never_meet() -> None:
    keys = {HostKey("acme"): "host", PathKey("acme"): "path", HeaderKey("acme"): "hdr"}
    assert len(keys) == 3
    assert keys[PathKey("acme")] == "path"
    assert HostKey("acme") != PathKey("acme")
    assert HostKey("acme") != "acme"
    assert "acme" != HostKey("acme")
    assert HostKey("acme") == HostKey("acme")
    assert hash(HostKey("acme")) == hash("acme")  # str's hash, for speed
    assert repr(PathKey("acme")) == "PathKey('acme')"


def test_match_applies_its_shift_only_when_asked() -> None:
    environ: dict[str, Any] = {"SCRIPT_NAME": "/mnt", "PATH_INFO": "/acme/x"}
    match = Match(PathKey("acme"), lambda finder: None, "/acme")
    assert environ == {"SCRIPT_NAME": "/mnt", "PATH_INFO": "/acme/x"}
    match.apply(environ)
    assert environ == {"SCRIPT_NAME": "/mnt/acme", "PATH_INFO": "/x"}
    NO_TENANT.apply(environ)
    assert environ == {"SCRIPT_NAME": "/mnt/acme", "PATH_INFO": "/x"}


# -- HostResolver ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("base_domain", "host", "expected"),
    [
        pytest.param(BASE, "acme.example.com", HostKey("acme.example.com"), id="sub"),
        pytest.param(BASE, "shop.acme.test", HostKey("shop.acme.test"), id="custom"),
        pytest.param(BASE, "a.b.example.com", HostKey("a.b.example.com"), id="deep"),
        pytest.param(BASE, "evilexample.com", HostKey("evilexample.com"), id="evil"),
        pytest.param(BASE, "example.com", None, id="apex"),
        pytest.param(BASE, "www.example.com", None, id="www"),
        pytest.param(BASE, "127.0.0.1", None, id="ipv4"),
        pytest.param(BASE, "[::1]", None, id="ipv6"),
        pytest.param(BASE, "10.0.0.300", None, id="digits-last-label"),
        pytest.param(None, "example.com", HostKey("example.com"), id="no-base-apex"),
        pytest.param(None, "acme.example.com", HostKey("acme.example.com"), id="nb"),
        pytest.param(None, "192.0.2.1", None, id="no-base-ip"),
    ],
)
def test_host_resolver_match(
    base_domain: str | None, host: str, expected: HostKey | None
) -> None:
    """Claims every host; names no tenant on IPs, the apex and www."""
    match = HostResolver(base_domain).match(host, "/acme/x", {})
    assert match is not None
    assert said(match) == (expected, "", "")
    assert (match.find is None) == (expected is None)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param(
            Names("acme", "acme", ("shop.acme.test", "acme.test")),
            [
                HostKey("shop.acme.test"),
                HostKey("acme.test"),
                HostKey("acme.example.com"),
            ],
            id="every-name",
        ),
        pytest.param(Names(path_prefix="acme"), [], id="path-only"),
        pytest.param(NO_NAMES, [], id="none"),
    ],
)
def test_host_resolver_route_keys(names: Names, expected: list[RouteKey]) -> None:
    assert list(HostResolver(BASE).route_keys("acme", names)) == expected


def test_host_resolver_route_keys_without_base_domain() -> None:
    keys = HostResolver().route_keys("acme", Names("acme", None, ("acme.test",)))
    assert list(keys) == [HostKey("acme.test")]


# -- PathResolver ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "path_info", "expected"),
    [
        pytest.param(
            "example.com", "/acme/x", (PathKey("acme"), "/acme", "/x"), id="p"
        ),
        pytest.param("example.com", "/acme", (PathKey("acme"), "/acme", ""), id="bare"),
        pytest.param("example.com", "/acme/", (PathKey("acme"), "/acme", "/"), id="/"),
        pytest.param(
            "www.example.com", "/a-1/x/y", (PathKey("a-1"), "/a-1", "/x/y"), id="www"
        ),
        pytest.param(
            "localhost", "/acme/", (PathKey("acme"), "/acme", "/"), id="listed"
        ),
        pytest.param("example.com", "/", (None, "", ""), id="root"),
        pytest.param("example.com", "", (None, "", ""), id="empty"),
        pytest.param("example.com", "/ACME/x", (None, "", ""), id="upper-case"),
        pytest.param("example.com", "//acme/x", (None, "", ""), id="double-slash"),
        pytest.param("example.com", "/../acme", (None, "", ""), id="dot-dot"),
        pytest.param("example.com", "/" + "a" * 64, (None, "", ""), id="64-chars"),
        pytest.param("example.com", "/acm\xc3\xa9/", (None, "", ""), id="utf-8"),
        pytest.param("example.com", "acme/x", (None, "", ""), id="no-slash"),
        pytest.param("acme.example.com", "/beta/", None, id="subdomain"),
        pytest.param("attacker.test", "/acme/", None, id="foreign-host"),
        pytest.param("x.www.example.com", "/acme/", None, id="under-www"),
        pytest.param("x.localhost", "/acme/", None, id="under-listed"),
        pytest.param("127.0.0.1", "/acme/", None, id="unlisted-ip"),
    ],
)
def test_path_resolver_match(host: str, path_info: str, expected: Said) -> None:
    """On its hosts it claims every request, and a path with no valid first
    segment names no tenant (never a lookup by host); elsewhere, not its own."""
    resolver = PathResolver(base_domain=BASE, hosts=["localhost"])
    assert said(resolver.match(host, path_info, {}), path_info) == expected


def test_path_resolver_hosts() -> None:
    assert PathResolver(base_domain="Example.COM.").hosts == {
        "example.com",
        "www.example.com",
    }
    assert PathResolver(hosts=["App.Test.", "[::1]"]).hosts == {"app.test", "[::1]"}


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        pytest.param({}, ValueError, "needs a base_domain or hosts", id="no-host"),
        pytest.param(
            {"hosts": "localhost"},
            TypeError,
            "hosts must be a collection of host names, not str",
            id="hosts-a-string",
        ),
        pytest.param(
            {"hosts": ["localhost:5000"]},
            ValueError,
            "hosts entry 'localhost:5000' must be a host name without a port",
            id="port",
        ),
        pytest.param(
            {"base_domain": "example.com:80"},
            ValueError,
            "base_domain 'example.com:80'",
            id="base-port",
        ),
    ],
)
def test_path_resolver_bad_configuration(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        PathResolver(**options)


def test_path_resolver_route_keys() -> None:
    resolver = PathResolver(base_domain=BASE)
    assert list(resolver.route_keys("acme", Names("a", "acme", ("a.test",)))) == [
        PathKey("acme")
    ]
    assert list(resolver.route_keys("acme", Names(subdomain="a"))) == []


# -- HeaderResolver -------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({"HTTP_X_TENANT": "beta"}, (HeaderKey("beta"), "", ""), id="slug"),
        pytest.param(
            {"HTTP_X_TENANT": "b" * 63}, (HeaderKey("b" * 63), "", ""), id="63-chars"
        ),
        pytest.param({}, None, id="absent"),
        pytest.param({"HTTP_X_TENANT_ID": "beta"}, None, id="other-header"),
    ],
)
def test_header_resolver_match(environ: dict[str, Any], expected: Said) -> None:
    """Claims a request only when its header is present; host and path do not
    matter, and the path is left alone."""
    match = HeaderResolver("X-Tenant").match("acme.example.com", "/acme/x", environ)
    assert said(match) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("Beta", id="upper-case"),
        pytest.param("beta ", id="space"),
        pytest.param("beta,acme", id="list"),
        pytest.param("beta.example.com", id="host"),
        pytest.param("-beta", id="leading-hyphen"),
        pytest.param("b" * 64, id="64-chars"),
        pytest.param("b\xe9ta", id="latin-1"),
        pytest.param("beta\x00", id="nul"),
    ],
)
def test_header_resolver_refuses_a_malformed_value(value: str) -> None:
    with pytest.raises(InvalidRequest) as exc_info:
        HeaderResolver("X-Tenant").match("example.com", "/", {"HTTP_X_TENANT": value})
    message = str(exc_info.value)
    assert message.startswith(f"invalid X-Tenant header {value!r}")
    assert "must be a tenant slug" in message


@pytest.mark.parametrize(
    ("header", "key"),
    [
        pytest.param("X-Tenant", "HTTP_X_TENANT", id="x-tenant"),
        pytest.param("x-tenant-slug", "HTTP_X_TENANT_SLUG", id="lower-case"),
        pytest.param("Tenant", "HTTP_TENANT", id="one-word"),
    ],
)
def test_header_resolver_reads_the_wsgi_key(header: str, key: str) -> None:
    assert HeaderResolver(header).headers == (key,)


@pytest.mark.parametrize(
    ("header", "error", "message"),
    [
        pytest.param(b"X-Tenant", TypeError, "header must be a str", id="bytes"),
        pytest.param("", ValueError, "header '' must be a header name", id="empty"),
        pytest.param("X Tenant", ValueError, "'X Tenant' must be", id="space"),
        pytest.param("X_Tenant", ValueError, "'X_Tenant' must be", id="underscore"),
        pytest.param("X-Tenant:", ValueError, "'X-Tenant:' must be", id="colon"),
        pytest.param("-X", ValueError, "'-X' must be", id="leading-hyphen"),
        pytest.param("Host", ValueError, "'Host' is the request's own", id="host"),
        pytest.param(
            "Content-Type", ValueError, "the request's own", id="content-type"
        ),
    ],
)
def test_header_resolver_bad_configuration(
    header: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        HeaderResolver(header)


@pytest.mark.parametrize(
    "names",
    [
        pytest.param(NO_NAMES, id="no-names"),
        pytest.param(Names("acme", "acme", ("acme.test",)), id="every-name"),
    ],
)
def test_header_resolver_route_keys(names: Names) -> None:
    """Any change may have created the slug: its "unknown" answer must go."""
    assert list(HeaderResolver().route_keys("acme", names)) == [HeaderKey("acme")]


# -- a match's find, against a real registry -------------------------------------


@pytest.mark.parametrize(
    ("resolver", "host", "path_info", "environ", "slug"),
    [
        pytest.param(HostResolver(BASE), "acme.example.com", "/", {}, "acme", id="sub"),
        pytest.param(HostResolver(BASE), "shop.acme.test", "/", {}, "acme", id="dom"),
        pytest.param(HostResolver(BASE), "b.example.com", "/", {}, "alpha", id="wins"),
        pytest.param(HostResolver(BASE), "beta.example.com", "/", {}, None, id="none"),
        pytest.param(HostResolver(), "shop.acme.test", "/", {}, "acme", id="no-base"),
        pytest.param(
            PathResolver(base_domain=BASE), BASE, "/acme/x", {}, "acme", id="path"
        ),
        pytest.param(
            HeaderResolver(), BASE, "/", {"HTTP_X_TENANT": "bravo"}, "bravo", id="hdr"
        ),
        pytest.param(
            HeaderResolver(), BASE, "/", {"HTTP_X_TENANT": "nosuch"}, None, id="hdr-0"
        ),
    ],
)
def test_find_asks_the_registry(
    registry: TenantRegistry,
    resolver: Resolver,
    host: str,
    path_info: str,
    environ: dict[str, Any],
    slug: str | None,
) -> None:
    registry.create_tenant(
        "acme",
        owner_email="owner@acme.test",
        subdomain="acme",
        path_prefix="acme",
        domains=["shop.acme.test"],
    )
    registry.create_tenant(
        "alpha", owner_email="o@alpha.test", domains=["b.example.com"]
    )
    registry.create_tenant("bravo", owner_email="o@bravo.test", subdomain="b")
    match = resolver.match(host, path_info, environ)
    assert match is not None and match.find is not None
    tenant = match.find(registry)
    assert (tenant and tenant.slug) == slug


# -- standard_resolvers ---------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        pytest.param({}, "[HostResolver(base_domain=None)]", id="nothing"),
        pytest.param(
            {"base_domain": "Example.COM"},
            "[HostResolver(base_domain='example.com')]",
            id="base",
        ),
        pytest.param(
            {"base_domain": BASE, "path_routing": True},
            "[PathResolver(hosts=['example.com', 'www.example.com']),"
            " HostResolver(base_domain='example.com')]",
            id="path-first",
        ),
        pytest.param(
            {"path_routing": True, "path_routing_hosts": ["localhost"]},
            "[PathResolver(hosts=['localhost']), HostResolver(base_domain=None)]",
            id="listed-hosts",
        ),
    ],
)
def test_standard_resolvers(options: dict[str, Any], expected: str) -> None:
    assert repr(standard_resolvers(**options)) == expected


def test_header_identification_is_one_line() -> None:
    resolvers = [HeaderResolver("X-Tenant"), *standard_resolvers(base_domain=BASE)]
    assert repr(resolvers) == (
        "[HeaderResolver('X-Tenant'), HostResolver(base_domain='example.com')]"
    )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param(
            {"path_routing": True},
            "path_routing needs a base_domain or path_routing_hosts",
            id="path-routing-nowhere",
        ),
        pytest.param(
            {"path_routing_hosts": ["localhost"]},
            r"path_routing_hosts \['localhost'\] are given but path_routing is off",
            id="hosts-without-path-routing",
        ),
    ],
)
def test_standard_resolvers_bad_configuration(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        standard_resolvers(**options)


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        pytest.param([], frozenset(), id="none"),
        pytest.param(
            ["App.Test.", "app.test", "[::1]", "127.0.0.1"],
            frozenset({"app.test", "[::1]", "127.0.0.1"}),
            id="normalised",
        ),
    ],
)
def test_normalise_hosts(hosts: list[str], expected: frozenset[str]) -> None:
    assert normalise_hosts(hosts) == expected


@pytest.mark.parametrize(
    ("hosts", "error", "message"),
    [
        pytest.param([42], TypeError, "hosts entry 42 must be a host name, not int"),
        pytest.param(["a_b.test"], ValueError, "'a_b.test' is not a host name: .*'_'"),
        pytest.param(["[::1]:80"], ValueError, "without a port"),
        pytest.param(None, TypeError, "not NoneType"),
    ],
)
def test_normalise_hosts_invalid(
    hosts: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        normalise_hosts(hosts)


def test_a_path_resolver_hands_repeat_segments_one_match() -> None:
    """Repeat requests build no Match, and their key is the same object, which
    the cache finds by identity; the shift still follows each request's path."""
    resolver = PathResolver(base_domain=BASE)

    first = resolver.match(BASE, "/acme/x", {})
    again = resolver.match(BASE, "/acme/y/z", {})

    assert first is again and first is not None
    assert said(again, "/acme/y/z") == (PathKey("acme"), "/acme", "/y/z")
