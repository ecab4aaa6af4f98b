"""Router: the host checked once, resolvers asked in order, hosts remembered."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import EnvironBuilder

from dispatcher.exceptions import InvalidHost, InvalidRequest
from dispatcher.router import MEMO_SIZE, Router
from dispatcher.routes import (
    NO_TENANT,
    HeaderKey,
    HeaderResolver,
    HostKey,
    PathKey,
    standard_resolvers,
)

BASE = "example.com"


def environ(host: str | None, path: str = "/", **more: Any) -> dict[str, Any]:
    built = EnvironBuilder(path=path).get_environ()
    built.pop("HTTP_HOST", None)
    if host is not None:
        built["HTTP_HOST"] = host
    built.update(more)
    return built


@pytest.fixture
def router() -> Router:
    return Router(
        [
            HeaderResolver("X-Tenant"),
            *standard_resolvers(base_domain=BASE, path_routing=True),
        ]
    )


@pytest.mark.parametrize(
    ("request_environ", "key"),
    [
        pytest.param(
            environ("acme.example.com"), HostKey("acme.example.com"), id="sub"
        ),
        pytest.param(environ("Shop.Acme.COM:8080"), HostKey("shop.acme.com"), id="dom"),
        pytest.param(environ("example.com", "/acme/x"), PathKey("acme"), id="path"),
        pytest.param(environ("example.com", "/"), None, id="apex"),
        pytest.param(environ("10.0.0.1"), None, id="ip"),
        pytest.param(
            environ("acme.example.com", HTTP_X_TENANT="beta"),
            HeaderKey("beta"),
            id="header first",
        ),
        pytest.param(
            environ("beta.example.com", RAW_URI="http://acme.example.com/"),
            HostKey("acme.example.com"),
            id="absolute-form",
        ),
    ],
)
def test_the_first_resolver_that_claims_decides(
    router: Router, request_environ: dict[str, Any], key: object
) -> None:
    assert router.resolve(request_environ)[0] == key


@pytest.mark.parametrize(
    ("request_environ", "error"),
    [
        pytest.param(environ("bad host"), InvalidHost, id="bad host"),
        pytest.param(environ(None), InvalidHost, id="no host on HTTP/1.1"),
        pytest.param(
            environ("acme.example.com", HTTP_X_TENANT="Not A Slug"),
            InvalidRequest,
            id="bad header",
        ),
    ],
)
def test_malformed_requests_raise_before_any_lookup(
    router: Router, request_environ: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        router.resolve(request_environ)
    assert router.host_keys == {}


def test_a_host_decided_by_its_host_is_remembered_as_one_key(router: Router) -> None:
    first, _ = router.resolve(environ("acme.example.com"))
    again, _ = router.resolve(environ("acme.example.com"))

    assert router.host_keys == {"acme.example.com": first}
    assert again is first  # the cache then finds the route by identity


def test_only_host_keys_are_remembered(router: Router) -> None:
    router.resolve(environ("example.com", "/acme/"))
    router.resolve(environ("example.com", HTTP_X_TENANT="beta"))

    assert router.host_keys == {}
    assert router.headers == ("HTTP_X_TENANT",)


def test_the_memos_are_bounded(router: Router) -> None:
    for i in range(MEMO_SIZE + 5):
        router.resolve(environ(f"t{i}.example.com"))

    assert len(router.host_keys) <= MEMO_SIZE
    assert len(router.hosts) <= MEMO_SIZE


def test_no_resolver_claims_no_tenant() -> None:
    router = Router([HeaderResolver("X-Tenant")])

    assert router.resolve(environ("acme.example.com")) == (None, NO_TENANT)


@pytest.mark.parametrize(
    ("resolvers", "error", "message"),
    [
        pytest.param([], ValueError, "resolvers is empty", id="empty"),
        pytest.param("X-Tenant", TypeError, "not str", id="a string"),
        pytest.param([object()], TypeError, "is not a Resolver", id="not one"),
    ],
)
def test_bad_resolvers_are_refused(
    resolvers: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        Router(resolvers)
