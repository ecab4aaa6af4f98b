"""``tenantctl maintenance on|off`` with click's CliRunner, on a real registry.

Exit codes as for every command: 0 done (or nothing to do), 1 an unknown
tenant, 2 bad input; a refused command prints one line on stderr and leaves
the registry as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result
from test_cli import error_line, succeeded

from dispatcher import TenantRegistry
from dispatcher.cli import cli
from dispatcher.maintenance import BYPASS_PATH, token_is_genuine

Tenantctl = Callable[..., Result]
BASE = "example.com"


@pytest.fixture
def tenantctl(database_url: str) -> Tenantctl:
    def invoke(*args: str) -> Result:
        return CliRunner().invoke(
            cli,
            ["--database-url", database_url, "--base-domain", BASE, *args],
            prog_name="tenantctl",
        )

    return invoke


@pytest.fixture
def tenants(registry: TenantRegistry) -> TenantRegistry:
    """``acme`` by subdomain, ``beta`` by path prefix, ``gamma`` by its domain."""
    registry.create_tenant("acme", owner_email="o@acme.test", subdomain="acme")
    registry.create_tenant("beta", owner_email="o@beta.test", path_prefix="beta")
    registry.create_tenant("gamma", owner_email="o@g.test", domains=["shop.g.test"])
    return registry


@pytest.mark.parametrize(
    ("slug", "address"),
    [
        pytest.param("acme", f"https://acme.{BASE}", id="subdomain"),
        pytest.param("beta", f"https://{BASE}/beta", id="path prefix"),
        pytest.param("gamma", "https://shop.g.test", id="custom domain"),
    ],
)
def test_on_prints_a_one_time_bypass_url(
    tenantctl: Tenantctl, tenants: TenantRegistry, slug: str, address: str
) -> None:
    result = succeeded(
        tenantctl(
            "maintenance", "on", slug, "--retry-after", "120", "--message", "Back"
        )
    )
    headline, url_line = result.stdout.splitlines()
    assert headline == f"tenant {slug!r} is in maintenance (503)"
    prefix = f"bypass (once): {address}{BYPASS_PATH}"
    assert url_line.startswith(prefix)
    token = url_line.removeprefix(prefix)
    window = tenants.get_tenant(slug).maintenance
    assert window is not None
    assert (window.retry_after, window.message) == (120, "Back")
    assert token_is_genuine(token, slug, window)
    assert tenants.redeem_bypass(slug, token)


def test_on_the_development_base_domain_the_url_is_tenantctl_serves(
    database_url: str, registry: TenantRegistry
) -> None:
    # tenantctl serve: http, port 8000, base domain localhost.
    registry.create_tenant("acme", owner_email="o@acme.test", subdomain="acme")
    result = succeeded(
        CliRunner().invoke(
            cli,
            ["--database-url", database_url, "--base-domain", "localhost"]
            + ["maintenance", "on", "acme"],
        )
    )
    url_line = result.stdout.splitlines()[-1]
    assert url_line.startswith(
        f"bypass (once): http://acme.localhost:8000{BYPASS_PATH}"
    )


@pytest.mark.parametrize(
    ("options", "address"),
    [
        pytest.param(["--port", "8443"], f"https://acme.{BASE}:8443", id="port"),
        pytest.param(["--scheme", "http"], f"http://acme.{BASE}", id="scheme"),
        pytest.param(
            ["--scheme", "http", "--port", "80"], f"http://acme.{BASE}:80", id="both"
        ),
    ],
)
def test_on_takes_the_urls_scheme_and_port(
    tenantctl: Tenantctl, tenants: TenantRegistry, options: list[str], address: str
) -> None:
    result = succeeded(tenantctl("maintenance", "on", "acme", *options))
    assert result.stdout.splitlines()[-1].startswith(
        f"bypass (once): {address}{BYPASS_PATH}"
    )


@pytest.mark.parametrize(
    ("options", "named"),
    [
        pytest.param(["--port", "0"], "'--port'", id="port 0"),
        pytest.param(["--scheme", "ftp"], "'--scheme'", id="ftp"),
    ],
)
def test_on_refuses_a_bad_scheme_or_port(
    tenantctl: Tenantctl, tenants: TenantRegistry, options: list[str], named: str
) -> None:
    result = tenantctl("maintenance", "on", "acme", *options)
    assert result.exit_code == 2 and named in result.stderr
    assert tenants.get_tenant("acme").maintenance is None


def test_on_with_json(tenantctl: Tenantctl, tenants: TenantRegistry) -> None:
    answer = json.loads(
        succeeded(tenantctl("maintenance", "on", "acme", "--json")).stdout
    )
    assert answer["tenant"]["maintenance"]["retry_after"] == 60
    assert answer["tenant"]["maintenance"]["message"] is None
    assert "key" not in answer["tenant"]["maintenance"]
    assert answer["bypass_url"] == f"https://acme.{BASE}{answer['bypass_path']}"
    token = answer["bypass_path"].removeprefix(BYPASS_PATH)
    assert tenants.redeem_bypass("acme", token)


def test_on_without_an_address_prints_the_path(
    database_url: str, tenants: TenantRegistry
) -> None:
    result = succeeded(
        CliRunner().invoke(
            cli,
            ["--database-url", database_url, "--base-domain", "", "maintenance"]
            + ["on", "acme"],
        )
    )
    last = result.stdout.splitlines()[-1]
    assert last.startswith(f"bypass (once), on the tenant's address: {BYPASS_PATH}")


def test_on_for_a_disabled_tenant_says_it_stays_disabled(
    tenantctl: Tenantctl, tenants: TenantRegistry
) -> None:
    tenants.disable_tenant("acme")
    result = succeeded(tenantctl("maintenance", "on", "acme"))
    assert "disabled too" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        pytest.param(["nosuch"], 1, "no tenant has the slug 'nosuch'", id="unknown"),
        pytest.param(
            ["acme", "--retry-after", "0"], 2, "--retry-after '0' must be", id="zero"
        ),
        pytest.param(
            ["acme", "--retry-after", "soon"], 2, "--retry-after 'soon'", id="text"
        ),
        pytest.param(
            ["acme", "--retry-after", "86401"], 2, "from 1 to 86400", id="too long"
        ),
        pytest.param(
            ["acme", "--message", "a\x1b[2Jb"],
            2,
            "must be one line of printable characters",
            id="control",
        ),
        pytest.param(
            ["acme", "--message", "x" * 501], 2, "at most 500", id="long message"
        ),
    ],
)
def test_on_refuses_bad_input_and_changes_nothing(
    tenantctl: Tenantctl,
    tenants: TenantRegistry,
    args: list[str],
    code: int,
    expected: str,
) -> None:
    before = tenants.latest_generation()
    line = error_line(tenantctl("maintenance", "on", *args), code)
    assert expected in line
    assert "\x1b" not in line
    assert tenants.latest_generation() == before
    assert tenants.get_tenant("acme").maintenance is None


def test_off_ends_maintenance(tenantctl: Tenantctl, tenants: TenantRegistry) -> None:
    _, token = tenants.start_maintenance("acme")
    result = succeeded(tenantctl("maintenance", "off", "acme"))
    assert result.stdout == "tenant 'acme' is out of maintenance\n"
    assert tenants.get_tenant("acme").maintenance is None
    assert not tenants.redeem_bypass("acme", token)


def test_off_without_maintenance_says_so_and_writes_nothing(
    tenantctl: Tenantctl, tenants: TenantRegistry
) -> None:
    before = tenants.latest_generation()
    result = succeeded(tenantctl("maintenance", "off", "acme"))
    assert result.stdout == "tenant 'acme' was not in maintenance; nothing changed\n"
    assert tenants.latest_generation() == before
    answer = json.loads(
        succeeded(tenantctl("maintenance", "off", "acme", "--json")).stdout
    )
    assert answer["was_in_maintenance"] is False
    assert answer["tenant"]["maintenance"] is None


def test_off_for_an_unknown_tenant(
    tenantctl: Tenantctl, tenants: TenantRegistry
) -> None:
    line = error_line(tenantctl("maintenance", "off", "nosuch"), 1)
    assert line == "Error: no tenant has the slug 'nosuch'"
