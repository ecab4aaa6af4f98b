"""TenantRules: reserved labels, the base domain and the domain limit, as the
registry applies them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from registry_helpers import Write, state, unchanged_after

from dispatcher import (
    InvalidName,
    NewTenant,
    TenantRegistry,
    TooManyDomains,
)
from dispatcher.rules import TenantRules, check_data_server
from dispatcher.validation import shown


def test_custom_reserved(database_url: str, registry: TenantRegistry) -> None:
    with TenantRegistry(database_url, reserved={"Acme"}) as custom:
        unchanged_after(
            custom,
            lambda r: r.create_tenant("x", owner_email="o@x.test", subdomain="acme"),
            InvalidName,
        )
        tenant = custom.create_tenant("y", owner_email="o@y.test", subdomain="www")

    assert tenant.subdomain == "www"


def test_reserved_string_refused(database_url: str) -> None:
    with pytest.raises(TypeError):
        TenantRegistry(database_url, reserved="www")


def test_new_tenant_normalises(registry: TenantRegistry) -> None:
    spec = registry.new_tenant(
        "ACME",
        owner_email="Owner@Acme.TEST",
        subdomain="Acme",
        domains=["Shop.Acme.com."],
        config={"a": [1]},
    )

    assert spec == NewTenant(
        slug="acme",
        owner_email="owner@acme.test",
        subdomain="acme",
        domains=("shop.acme.com",),
        config={"a": (1,)},
    )


# -- custom domains stay outside the base domain (issue 9, C13) ------------------


BASE_DOMAIN = "example.com"


def normal(host: str) -> str:
    return host.lower().removesuffix(".")


@pytest.fixture
def based(database_url: str, registry: TenantRegistry) -> Iterator[TenantRegistry]:
    """A registry that knows the dispatcher's base domain (``registry`` migrated)."""
    with TenantRegistry(database_url, base_domain="Example.COM.") as based:
        yield based


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("victim.example.com", id="subdomain"),
        pytest.param("API.Example.com.", id="reserved-label-spelling"),
        pytest.param("a.b.example.com", id="deeper"),
        pytest.param("example.com", id="apex"),
        pytest.param("www.example.com", id="www"),
    ],
)
@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda r, host: r.create_tenant(
                "mallory", owner_email="m@evil.test", domains=["ok.evil.test", host]
            ),
            id="create",
        ),
        pytest.param(lambda r, host: r.add_domain("acme", host), id="add-domain"),
        pytest.param(
            lambda r, host: r.new_tenant(
                "mallory", owner_email="m@evil.test", domains=[host]
            ),
            id="new-tenant",
        ),
        pytest.param(
            lambda r, host: list(
                r.import_tenants(
                    # Built by hand, past new_tenant(), but normalised as specs are.
                    [NewTenant("mallory", "m@evil.test", domains=(normal(host),))]
                )
            ),
            id="import-unchecked-spec",
        ),
    ],
)
def test_custom_domain_under_base_domain_refused(
    based: TenantRegistry, write: Callable[[TenantRegistry, str], object], host: str
) -> None:
    based.create_tenant("acme", owner_email="owner@acme.test", subdomain="acme")
    before = state(based)

    with pytest.raises(InvalidName, match="base domain 'example.com'") as exc_info:
        write(based, host)

    assert repr(normal(host)) in str(exc_info.value)
    assert state(based) == before


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("notexample.com", id="suffix-not-label"),
        pytest.param("example.com.evil.test", id="prefix"),
        pytest.param("example.org", id="other-tld"),
    ],
)
def test_custom_domain_outside_base_domain_allowed(
    based: TenantRegistry, host: str
) -> None:
    tenant = based.create_tenant("acme", owner_email="o@acme.test", domains=[host])

    assert tenant.domains == (host,)


def test_without_base_domain_any_host_allowed(registry: TenantRegistry) -> None:
    tenant = registry.create_tenant(
        "acme", owner_email="o@acme.test", domains=["acme.example.com"]
    )

    assert tenant.domains == ("acme.example.com",)


def test_base_domain_normalised(based: TenantRegistry) -> None:
    assert based.base_domain == BASE_DOMAIN


@pytest.mark.parametrize(
    ("base_domain", "error"),
    [
        pytest.param("example.com:8080", ValueError, id="port"),
        pytest.param("exa mple.com", ValueError, id="space"),
        pytest.param("[::1]", ValueError, id="ipv6"),
        pytest.param("", ValueError, id="empty"),
        pytest.param(b"example.com", TypeError, id="bytes"),
    ],
)
def test_base_domain_invalid(database_url: str, base_domain: Any, error: type) -> None:
    with pytest.raises(error, match="base_domain"):
        TenantRegistry(database_url, base_domain=base_domain)


# -- a bounded number of custom domains per tenant (issue 9, E21) ----------------
# A lookup returns the tenant with all its domains, so its cost grows with
# them; the registry bounds how many one tenant may have.


def hosts(count: int, start: int = 0) -> list[str]:
    return [f"d{i}.acme.test" for i in range(start, start + count)]


def test_default_domain_limit(registry: TenantRegistry) -> None:
    assert registry.max_domains == 100
    registry.create_tenant("acme", owner_email="o@acme.test", domains=hosts(100))
    before = state(registry)

    with pytest.raises(TooManyDomains, match="'acme'.*101.*limit is 100"):
        registry.add_domain("acme", "one-more.acme.test")

    assert state(registry) == before


def test_domain_limit_counts_only_new_hosts(registry: TenantRegistry) -> None:
    registry.create_tenant("acme", owner_email="o@acme.test", domains=hosts(100))

    tenant = registry.add_domain("acme", "d5.acme.test", primary=True)

    assert tenant.primary_domain == "d5.acme.test"


def test_domain_limit_freed_by_remove(
    database_url: str, registry: TenantRegistry
) -> None:
    with TenantRegistry(database_url, max_domains=2) as limited:
        limited.create_tenant("acme", owner_email="o@acme.test", domains=hosts(2))
        limited.remove_domain("acme", "d0.acme.test")

        tenant = limited.add_domain("acme", "d9.acme.test")

    assert tenant.domains == ("d1.acme.test", "d9.acme.test")


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(
            lambda r: r.create_tenant("acme", owner_email="o@a.test", domains=hosts(3)),
            id="create",
        ),
        pytest.param(
            lambda r: r.new_tenant("acme", owner_email="o@a.test", domains=hosts(3)),
            id="new-tenant",
        ),
    ],
)
def test_domain_limit_at_create(database_url: str, write: Write) -> None:
    with TenantRegistry(database_url, max_domains=2) as limited:
        limited.migrate()
        before = state(limited)

        with pytest.raises(TooManyDomains, match="'acme'.*3.*limit is 2"):
            write(limited)

        assert state(limited) == before


@pytest.mark.parametrize(
    "max_domains",
    [
        pytest.param(0, id="zero"),
        pytest.param(-1, id="negative"),
        pytest.param(2.5, id="float"),
        pytest.param(True, id="bool"),
    ],
)
def test_domain_limit_invalid(database_url: str, max_domains: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="max_domains"):
        TenantRegistry(database_url, max_domains=max_domains)


# -- the tenant's keywords, written once (TenantFields) ----------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda r: r.new_tenant("acme", owner_email="o@a.test", subdomian="a"),
            "'subdomian'",
            id="misspelt",
        ),
        pytest.param(
            lambda r: r.create_tenant("acme", owner_mail="o@a.test"),
            "'owner_mail'",
            id="misspelt-create",
        ),
        pytest.param(
            lambda r: r.create_tenant("acme", subdomain="acme"),
            "'owner_email'",
            id="missing-owner",
        ),
    ],
)
def test_a_keyword_no_tenant_has_is_refused(
    registry: TenantRegistry, call: Write, message: str
) -> None:
    unchanged_after(registry, call, TypeError)

    with pytest.raises(TypeError, match=message):
        call(registry)


def test_rules_on_their_own() -> None:
    rules = TenantRules(reserved={"Shop"}, base_domain="Example.COM.", max_domains=1)

    spec = rules.new_tenant("ACME", owner_email="O@Acme.test", subdomain="Acme")

    assert spec == NewTenant("acme", "o@acme.test", subdomain="acme")
    assert rules.reserved == {"shop"}
    assert rules.base_domain == "example.com"
    assert rules.domain("Acme.TEST.") == "acme.test"
    with pytest.raises(InvalidName, match="reserved"):
        rules.label("shop", "subdomain")
    with pytest.raises(TooManyDomains):
        rules.new_tenant("acme", owner_email="o@a.test", domains=["a.test", "b.test"])
    assert "example.com" in repr(rules)


# -- where a tenant's data lives (issue 11, several servers) ------------------------
# The rules check a server name's form; which servers exist is TenantData's
# configuration, which the registry does not know.


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("eu", id="plain"),
        pytest.param("a", id="one-letter"),
        pytest.param("eu-west_2", id="digits-hyphen-underscore"),
        pytest.param("s" + "x" * 62, id="63-characters"),
        pytest.param("eu-", id="trailing-hyphen"),
    ],
)
def test_data_server_name_accepted(name: str) -> None:
    spec = TenantRules().new_tenant("acme", owner_email="o@a.test", data_server=name)

    assert spec.data_server == name
    assert check_data_server(name) == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("EU", id="upper-case"),
        pytest.param(" eu", id="space"),
        pytest.param("2eu", id="starts-with-digit"),
        pytest.param("-eu", id="starts-with-hyphen"),
        pytest.param("_eu", id="starts-with-underscore"),
        pytest.param("eu.west", id="dot"),
        pytest.param("eu\n", id="newline"),
        pytest.param("s" + "x" * 63, id="64-characters"),
        pytest.param("\u212aelvin", id="kelvin-sign"),
    ],
)
def test_data_server_name_refused(name: str) -> None:
    rule = re.escape("^[a-z][a-z0-9_-]{0,62}$")

    with pytest.raises(InvalidName, match=f"data server .*{rule}") as exc_info:
        TenantRules().new_tenant("acme", owner_email="o@a.test", data_server=name)

    assert shown(name) in str(exc_info.value)


@pytest.mark.parametrize("value", [pytest.param(b"eu", id="bytes"), 5])
def test_data_server_name_must_be_text(value: Any) -> None:
    with pytest.raises(InvalidName, match="data server must be a string"):
        check_data_server(value)


def test_no_data_server_is_none() -> None:
    spec = TenantRules().new_tenant("acme", owner_email="o@a.test")

    assert spec.data_server is None
    assert check_data_server(None) is None
