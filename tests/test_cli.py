"""Tests of ``tenantctl``, the admin CLI in ``dispatcher/cli.py``.

Every test drives the real click group against a real database (a SQLite file,
or a PostgreSQL schema of its own; see ``conftest.py``) and checks what the
database holds afterwards through a ``TenantRegistry``, not just what was printed.

The CLI's contract: exit 0 on success, 1 for a conflict, an unknown tenant or an
unavailable database, 2 for bad input; an error is one line on stderr, never a
traceback, and a refused command changes nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from demo_data_helpers import data_names, refusing_tenant_data
from servers import free_port, request, running
from sqlalchemy import create_engine, inspect, text
from tenant_data_probe import DIRECTORY_VARIABLE, SERVER_URL_VARIABLE, forget_servers

from dispatcher import TenantNotFound, TenantRegistry
from dispatcher.cli import cli
from dispatcher.data import TenantData
from dispatcher.demo.data import Note, make_tenant_data

Tenantctl = Callable[..., Result]
State = tuple[list[dict[str, Any]], int]

TENANTCTL_SCRIPT = Path(sys.executable).with_name("tenantctl")
UNREACHABLE_SQLITE = "sqlite:////nonexistent-dir/x.db"
#: The first line ``add`` prints when it created the tenant's data too.
CREATED_WITH_DATA = (
    r"created tenant '{slug}'; its data is in 't_{slug}_[0-9a-f]{{8}}'\n"
)


@pytest.fixture(autouse=True)
def _drops_tenant_schemas(tenant_data_location: dict[str, Any]) -> None:
    """On PostgreSQL, the schemas the demo's tenant data (the default) makes
    in the run's database are dropped after each test."""


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def tenantctl(runner: CliRunner, database_url: str) -> Tenantctl:
    """Run ``tenantctl --database-url <this test's database> ARGS...``."""

    def invoke(*args: str, stdin: str | None = None) -> Result:
        return runner.invoke(
            cli,
            ["--database-url", database_url, *args],
            input=stdin,
            prog_name="tenantctl",
        )

    return invoke


@pytest.fixture
def tenants(registry: TenantRegistry) -> TenantRegistry:
    """The migrated registry, holding tenants ``acme`` and ``beta``."""
    registry.create_tenant(
        "acme",
        owner_email="owner@acme.test",
        subdomain="acme",
        domains=["shop.acme.test"],
        config={"greeting": "Hi"},
    )
    registry.create_tenant("beta", owner_email="owner@beta.test", path_prefix="beta")
    return registry


def state(registry: TenantRegistry) -> State:
    """Everything a refused command must leave as it was."""
    tenants = [tenant.to_dict() for tenant in registry.list_tenants()]
    return tenants, registry.latest_generation()


def slugs(registry: TenantRegistry) -> list[str]:
    return [tenant.slug for tenant in registry.list_tenants()]


def error_line(result: Result, exit_code: int, *, progress: str = "") -> str:
    """The one line a refused command printed, after checking how it ended.

    ``progress``: a progress label allowed before it (``import``'s).
    """
    assert result.exit_code == exit_code, result.output
    # CliRunner swallows an uncaught exception (no traceback in the output!):
    # only SystemExit means the CLI itself decided how to end.
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if progress and lines and lines[0] == progress:
        del lines[0]
    assert len(lines) == 1, result.stderr
    return lines[0]


def succeeded(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    assert result.exception is None, repr(result.exception)
    return result


def table_names(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def write_csv(path: Path, text: str) -> Path:
    """Write ``text`` as is: the test controls every line ending."""
    path.write_text(text, encoding="utf-8", newline="")
    return path


def row_errors(result: Result, file: Path) -> dict[int, str]:
    """``{line: message}`` of the ``FILE:LINE: message`` lines on stderr."""
    pattern = re.compile(rf"{re.escape(str(file))}:(\d+): (.+)")
    errors: dict[int, str] = {}
    for line in result.stderr.splitlines():
        if not line.strip():
            continue
        match = pattern.fullmatch(line)
        if match is None:
            # Only the progress bar's label may appear besides the row errors.
            assert line.startswith("importing "), result.stderr
            continue
        assert int(match[1]) not in errors, result.stderr
        errors[int(match[1])] = match[2]
    return errors


# -- db upgrade -------------------------------------------------------------------


def test_db_upgrade_on_an_empty_database_is_idempotent(
    tenantctl: Tenantctl, database_url: str
) -> None:
    assert table_names(database_url) == []
    first = succeeded(tenantctl("db", "upgrade"))
    assert re.search(r" upgraded from no schema to \w+\n$", first.stdout)
    assert first.stderr == ""
    again = succeeded(tenantctl("db", "upgrade"))
    assert again.stdout.endswith(" already; nothing changed\n")
    assert again.stderr == ""
    assert {"tenants", "domains", "users", "tenant_changes"} <= set(
        table_names(database_url)
    )
    with TenantRegistry(database_url) as registry:
        assert state(registry) == ([], 0)


def test_db_upgrade_keeps_existing_tenants(
    tenants: TenantRegistry, tenantctl: Tenantctl
) -> None:
    before = state(tenants)
    succeeded(tenantctl("db", "upgrade", "head"))
    assert state(tenants) == before


def test_db_upgrade_to_an_unknown_revision_is_bad_input(
    tenantctl: Tenantctl, database_url: str
) -> None:
    result = tenantctl("db", "upgrade", "bogus")
    assert "'bogus'" in error_line(result, 2)
    assert table_names(database_url) == []


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["list"], id="list"),
        pytest.param(["show", "acme"], id="show"),
        pytest.param(["add", "acme", "--owner", "owner@acme.test"], id="add"),
        pytest.param(["disable", "acme"], id="disable"),
        pytest.param(["enable", "acme"], id="enable"),
        pytest.param(["remove", "acme", "--yes"], id="remove"),
        pytest.param(["config", "set", "acme", "size", "5"], id="config-set"),
        pytest.param(["config", "unset", "acme", "size"], id="config-unset"),
        pytest.param(["domain", "add", "acme", "shop.acme.test"], id="domain-add"),
        pytest.param(
            ["domain", "remove", "acme", "shop.acme.test"], id="domain-remove"
        ),
        pytest.param(["import", "{csv}"], id="import"),
    ],
)
def test_a_command_on_an_unmigrated_database_says_to_run_db_upgrade(
    tenantctl: Tenantctl, database_url: str, tmp_path: Path, args: list[str]
) -> None:
    csv_file = write_csv(tmp_path / "t.csv", "slug,owner_email\nacme,o@acme.test\n")
    result = tenantctl(*(arg.format(csv=csv_file) for arg in args))
    # import prints its progress label before it touches the database.
    line = error_line(result, 1, progress="importing t.csv")
    assert "run 'tenantctl db upgrade'" in line
    assert table_names(database_url) == []


# -- the acceptance flow --------------------------------------------------


def test_acceptance_flow(tenantctl: Tenantctl, database_url: str) -> None:
    succeeded(tenantctl("db", "upgrade"))
    result = succeeded(
        tenantctl("add", "acme", "--owner", "owner@acme.test", "--subdomain", "acme")
    )
    # The demo's tenant data (the default) is created with the tenant.
    assert re.match(CREATED_WITH_DATA.format(slug="acme"), result.stdout)
    succeeded(tenantctl("disable", "acme", "--reason", "unpaid"))

    shown = json.loads(succeeded(tenantctl("show", "acme", "--json")).stdout)
    assert shown["slug"] == "acme"
    assert shown["owner_email"] == "owner@acme.test"
    assert shown["subdomain"] == "acme"
    assert shown["status"] == "disabled"
    assert shown["disabled_reason"] == "unpaid"

    with TenantRegistry(database_url) as registry:
        before = state(registry)
        result = tenantctl("add", "acme2", "--owner", "x@y.test", "--subdomain", "ACME")
        assert "'acme'" in error_line(result, 1)
        assert state(registry) == before
        with pytest.raises(TenantNotFound):
            registry.get_tenant("acme2")


# -- add ----------------------------------------------------------------------------


def test_add_with_every_option(registry: TenantRegistry, tenantctl: Tenantctl) -> None:
    result = succeeded(
        tenantctl(
            "add",
            "Acme",
            "--owner",
            "Owner@Acme.Test",
            "--owner-name",
            "Ann Owner",
            "--subdomain",
            "acme",
            "--path-prefix",
            "Acme-Shop",
            "--domain",
            "Shop.Acme.Test.",
            "--domain",
            "acme.test",
            "--config",
            "greeting=Hello",
            "--config",
            "size=5",
            "--config",
            'theme={"colour": "red", "dark": true}',
            "--config",
            "features=[1, 2]",
            "--config",
            "formula=a=b",
            "--config",
            "empty=",
            "--json",
        )
    )
    added = json.loads(result.stdout)
    assert {key: added[key] for key in added if not key.endswith("_at")} == {
        "slug": "acme",
        "owner_email": "owner@acme.test",
        "owner_name": "Ann Owner",
        "subdomain": "acme",
        "path_prefix": "acme-shop",
        "domains": ["shop.acme.test", "acme.test"],
        "config": {
            "greeting": "Hello",
            "size": 5,
            "theme": {"colour": "red", "dark": True},
            "features": [1, 2],
            "formula": "a=b",
            "empty": "",
        },
        "status": "active",
        "disabled_reason": None,
        "data_server": None,
        "maintenance": None,
        "version": registry.latest_generation(),
    }
    # The JSON printed is the tenant as stored, and as `show --json` prints it.
    assert added == registry.get_tenant("acme").to_dict()
    assert json.loads(succeeded(tenantctl("show", "acme", "--json")).stdout) == added


def test_add_prints_the_tenant(registry: TenantRegistry, tenantctl: Tenantctl) -> None:
    result = succeeded(tenantctl("add", "acme", "--owner", "owner@acme.test"))
    lines = result.stdout.splitlines()
    assert re.fullmatch(CREATED_WITH_DATA.format(slug="acme"), lines[0] + "\n")
    fields = dict(line.split(maxsplit=1) for line in lines[1:])
    assert fields["slug:"] == "acme"
    assert fields["owner_email:"] == "owner@acme.test"
    assert fields["subdomain:"] == "acme"  # given no address: its slug
    assert fields["config:"] == "{}"
    assert fields["status:"] == "active"
    assert result.stderr == ""
    assert slugs(registry) == ["acme"]


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        pytest.param("Hello", "Hello", id="word"),
        pytest.param("two words", "two words", id="words"),
        pytest.param("5", 5, id="int"),
        pytest.param("2.5", 2.5, id="float"),
        pytest.param("true", True, id="bool"),
        pytest.param("null", None, id="null"),
        pytest.param('"5"', "5", id="json-string"),
        pytest.param("[1, 2]", [1, 2], id="list"),
        pytest.param('{"a": 1}', {"a": 1}, id="object"),
        pytest.param("not {json", "not {json", id="braces-inside-a-sentence"),
        pytest.param("1.2.3", "1.2.3", id="a-version-is-a-word"),
    ],
)
def test_add_config_value_is_json_if_it_parses(
    registry: TenantRegistry, tenantctl: Tenantctl, value: str, stored: Any
) -> None:
    succeeded(
        tenantctl("add", "acme", "--owner", "o@acme.test", "--config", f"k={value}")
    )
    assert registry.get_tenant("acme").to_dict()["config"] == {"k": stored}


@pytest.mark.parametrize(
    ("args", "exit_code", "named"),
    [
        pytest.param(
            ["add", "Bad_Slug", "--owner", "o@x.test"], 2, "'Bad_Slug'", id="bad-slug"
        ),
        pytest.param(
            ["add", "bad-", "--owner", "o@x.test"], 2, "'bad-'", id="slug-dash"
        ),
        pytest.param(
            ["add", "gamma", "--owner", "o@x.test", "--subdomain", "www"],
            2,
            "'www'",
            id="reserved-subdomain",
        ),
        pytest.param(
            ["add", "gamma", "--owner", "o@x.test", "--path-prefix", "admin"],
            2,
            "'admin'",
            id="reserved-path-prefix",
        ),
        pytest.param(
            ["add", "gamma", "--owner", "not-an-email"],
            2,
            "'not-an-email'",
            id="bad-email",
        ),
        pytest.param(
            ["add", "gamma", "--owner", "o@x.test", "--domain", "1.2.3.4"],
            2,
            "'1.2.3.4'",
            id="ip-domain",
        ),
        pytest.param(
            ["add", "gamma", "--owner", "o@x.test", "--domain", "localhost"],
            2,
            "'localhost'",
            id="one-label-domain",
        ),
        pytest.param(
            ["add", "gamma", "--owner", "o@x.test", "--config", "size"],
            2,
            "'size'",
            id="config-without-equals",
        ),
        pytest.param(
            ["add", "gamma", "--owner", "o@x.test", "--config", "=5"],
            2,
            "'=5'",
            id="config-without-key",
        ),
        pytest.param(
            ["add", "acme", "--owner", "o@x.test"], 1, "'acme'", id="duplicate-slug"
        ),
        pytest.param(
            ["add", "ACME", "--owner", "o@x.test"],
            1,
            "'acme'",
            id="duplicate-slug-other-case",
        ),
        pytest.param(
            ["add", "gamma", "--owner", "o@x.test", "--subdomain", "ACME"],
            1,
            "'acme'",
            id="subdomain-taken",
        ),
        pytest.param(
            ["add", "gamma", "--owner", "o@x.test", "--path-prefix", "beta"],
            1,
            "'beta'",
            id="path-prefix-taken",
        ),
        pytest.param(
            ["add", "gamma", "--owner", "o@x.test", "--domain", "SHOP.acme.test"],
            1,
            "'shop.acme.test'",
            id="domain-taken",
        ),
    ],
)
def test_add_refuses(
    tenants: TenantRegistry,
    tenantctl: Tenantctl,
    args: list[str],
    exit_code: int,
    named: str,
) -> None:
    before = state(tenants)
    result = tenantctl(*args)
    assert named in error_line(result, exit_code)
    assert result.stdout == ""
    assert state(tenants) == before


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["add", "acme", "--owner", "o@x.test", "--config"], id="add"),
        pytest.param(["config", "set", "acme"], id="config-set"),
    ],
)
def test_a_config_value_that_is_not_json_is_stored_as_a_string(
    registry: TenantRegistry, tenantctl: Tenantctl, args: list[str]
) -> None:
    # "VALUE is JSON if it parses, else a string": NaN and Infinity are not JSON.
    if args[0] == "config":
        registry.create_tenant("acme", owner_email="o@x.test")
        args = [*args, "ratio", "NaN"]
    else:
        args = [*args, "ratio=NaN"]
    succeeded(tenantctl(*args))
    assert dict(registry.get_tenant("acme").config) == {"ratio": "NaN"}


# -- list and show ----------------------------------------------------------------


def test_list_without_tenants(registry: TenantRegistry, tenantctl: Tenantctl) -> None:
    assert succeeded(tenantctl("list")).stdout == "no tenants\n"
    assert json.loads(succeeded(tenantctl("list", "--json")).stdout) == []


def test_list_prints_a_table(tenants: TenantRegistry, tenantctl: Tenantctl) -> None:
    tenants.disable_tenant("acme", "unpaid")
    result = succeeded(tenantctl("list"))
    header, *rows = result.stdout.splitlines()
    assert re.split(r"\s{2,}", header) == [
        "SLUG",
        "STATUS",
        "SUBDOMAIN",
        "PATH PREFIX",
        "DOMAINS",
        "OWNER",
    ]
    assert [row.split() for row in rows] == [
        ["acme", "disabled", "acme", "-", "shop.acme.test", "owner@acme.test"],
        ["beta", "active", "-", "beta", "-", "owner@beta.test"],
    ]
    # Columns line up under their headings.
    for heading, cell in [("STATUS", "disabled"), ("DOMAINS", "shop.acme.test")]:
        assert rows[0].index(cell) == header.index(heading)
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param([], ["acme", "beta"], id="all"),
        pytest.param(["--status", "disabled"], ["acme"], id="disabled"),
        pytest.param(["--status", "active"], ["beta"], id="active"),
    ],
)
def test_list_filters_by_status(
    tenants: TenantRegistry, tenantctl: Tenantctl, args: list[str], expected: list[str]
) -> None:
    tenants.disable_tenant("acme", "unpaid")
    table = succeeded(tenantctl("list", *args)).stdout.splitlines()
    assert [row.split()[0] for row in table[1:]] == expected
    listed = json.loads(succeeded(tenantctl("list", *args, "--json")).stdout)
    assert listed == [tenants.get_tenant(slug).to_dict() for slug in expected]


def test_list_status_without_matches(
    tenants: TenantRegistry, tenantctl: Tenantctl
) -> None:
    result = succeeded(tenantctl("list", "--status", "disabled"))
    assert result.stdout == "no tenants\n"


def test_list_refuses_an_unknown_status(
    tenants: TenantRegistry, tenantctl: Tenantctl
) -> None:
    # A click usage error: several lines (usage, hint, error), but no traceback.
    result = tenantctl("list", "--status", "bogus")
    assert result.exit_code == 2
    assert isinstance(result.exception, SystemExit)
    assert "'bogus'" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize("slug", ["acme", "ACME", " acme "])
def test_show(tenants: TenantRegistry, tenantctl: Tenantctl, slug: str) -> None:
    result = succeeded(tenantctl("show", slug))
    fields = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert fields["slug:"] == "acme"
    assert fields["subdomain:"] == "acme"
    assert fields["path_prefix:"] == "-"
    assert fields["domains:"] == "shop.acme.test"
    assert fields["config:"] == '{"greeting": "Hi"}'
    shown = json.loads(succeeded(tenantctl("show", slug, "--json")).stdout)
    assert shown == tenants.get_tenant("acme").to_dict()


# -- unknown tenants ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["show", "nope"], id="show"),
        pytest.param(["show", "nope", "--json"], id="show-json"),
        pytest.param(["enable", "nope"], id="enable"),
        pytest.param(["disable", "nope", "--reason", "unpaid"], id="disable"),
        pytest.param(["remove", "nope", "--yes"], id="remove"),
        pytest.param(["remove", "nope"], id="remove-asking"),
        pytest.param(["config", "set", "nope", "size", "5"], id="config-set"),
        pytest.param(["config", "unset", "nope", "greeting"], id="config-unset"),
        pytest.param(["domain", "add", "nope", "shop.nope.test"], id="domain-add"),
        pytest.param(
            ["domain", "remove", "nope", "shop.acme.test"], id="domain-remove"
        ),
    ],
)
def test_unknown_tenant(
    tenants: TenantRegistry, tenantctl: Tenantctl, args: list[str]
) -> None:
    before = state(tenants)
    result = tenantctl(*args, stdin="y\n")
    assert "'nope'" in error_line(result, 1)
    assert result.stdout == ""
    assert state(tenants) == before


# -- enable, disable, remove --------------------------------------------------------


def test_disable_and_enable(tenants: TenantRegistry, tenantctl: Tenantctl) -> None:
    result = succeeded(tenantctl("disable", "acme", "--reason", "unpaid", "--json"))
    disabled = json.loads(result.stdout)
    assert (disabled["status"], disabled["disabled_reason"]) == ("disabled", "unpaid")
    assert disabled == tenants.get_tenant("acme").to_dict()
    assert tenants.get_tenant("beta").is_active

    generation = tenants.latest_generation()
    succeeded(tenantctl("disable", "acme", "--reason", "unpaid"))
    assert tenants.latest_generation() == generation  # nothing to change

    result = succeeded(tenantctl("enable", "acme"))
    assert result.stdout.startswith("enabled tenant 'acme'\n")
    acme = tenants.get_tenant("acme")
    assert acme.is_active
    assert acme.disabled_reason is None


def test_remove_yes(tenants: TenantRegistry, tenantctl: Tenantctl) -> None:
    result = succeeded(tenantctl("remove", "acme", "--yes"))
    # Made by the registry alone, acme has no data (see "tenant data" below).
    assert result.stdout == "removed tenant 'acme'; it had no data to archive\n"
    assert result.stderr == ""
    assert slugs(tenants) == ["beta"]
    # Its names are free again.
    succeeded(
        tenantctl(
            "add",
            "acme2",
            "--owner",
            "owner@acme.test",
            "--subdomain",
            "acme",
            "--domain",
            "shop.acme.test",
        )
    )


@pytest.mark.parametrize(
    ("stdin", "removed"),
    [
        pytest.param("y\n", True, id="y"),
        pytest.param("yes\n", True, id="yes"),
        pytest.param("n\n", False, id="n"),
        pytest.param("\n", False, id="default-is-no"),
        pytest.param("", False, id="eof"),
    ],
)
def test_remove_asks_first(
    tenants: TenantRegistry, tenantctl: Tenantctl, stdin: str, removed: bool
) -> None:
    before = state(tenants)
    result = tenantctl("remove", "acme", stdin=stdin)
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert "Traceback" not in result.output
    assert "Delete tenant 'acme' and its domains?" in result.stderr
    if removed:
        assert result.exit_code == 0
        assert result.stdout == "removed tenant 'acme'; it had no data to archive\n"
        assert slugs(tenants) == ["beta"]
    else:
        # No is the answer the question invited: not an error.
        assert result.exit_code == 0
        assert result.stdout == "nothing removed: tenant 'acme' is still there\n"
        assert state(tenants) == before


# -- config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "key", "stored"),
    [
        pytest.param(["greeting", "Hello"], "greeting", "Hello", id="string"),
        pytest.param(["size", "5"], "size", 5, id="int"),
        pytest.param(["size", "5", "--string"], "size", "5", id="forced-string"),
        pytest.param(["obj", '{"a": 1}'], "obj", {"a": 1}, id="object"),
        pytest.param(["on", "true"], "on", True, id="bool"),
        pytest.param(["on", "true", "--string"], "on", "true", id="bool-as-string"),
    ],
)
def test_config_set(
    tenants: TenantRegistry,
    tenantctl: Tenantctl,
    args: list[str],
    key: str,
    stored: Any,
) -> None:
    result = succeeded(tenantctl("config", "set", "acme", *args, "--json"))
    expected = {"greeting": "Hi", key: stored}
    assert json.loads(result.stdout)["config"] == expected
    assert tenants.get_tenant("acme").to_dict()["config"] == expected
    assert dict(tenants.get_tenant("beta").config) == {}


def test_config_set_prints_the_tenant(
    tenants: TenantRegistry, tenantctl: Tenantctl
) -> None:
    result = succeeded(tenantctl("config", "set", "acme", "size", "5"))
    assert result.stdout.startswith("tenant 'acme': set 'size'\n")
    assert '{"greeting": "Hi", "size": 5}' in result.stdout


def test_config_unset(tenants: TenantRegistry, tenantctl: Tenantctl) -> None:
    tenants.update_config("acme", {"size": 5, "colour": "red"})
    result = succeeded(tenantctl("config", "unset", "acme", "greeting"))
    assert result.stdout.startswith("tenant 'acme': unset greeting\n")
    assert dict(tenants.get_tenant("acme").config) == {"size": 5, "colour": "red"}

    succeeded(tenantctl("config", "unset", "acme", "size", "colour"))
    assert dict(tenants.get_tenant("acme").config) == {}

    generation = tenants.latest_generation()
    succeeded(tenantctl("config", "unset", "acme", "absent"))
    assert tenants.latest_generation() == generation


# -- domains ------------------------------------------------------------------------


def test_domain_add_and_remove(tenants: TenantRegistry, tenantctl: Tenantctl) -> None:
    def domains(slug: str) -> list[str]:
        return list(tenants.get_tenant(slug).domains)

    result = succeeded(tenantctl("domain", "add", "acme", "Www.Acme.Test."))
    # The name as stored and routed, not as typed.
    assert result.stdout.startswith("tenant 'acme': added 'www.acme.test'\n")
    assert domains("acme") == ["shop.acme.test", "www.acme.test"]

    result = succeeded(tenantctl("domain", "add", "acme", "acme.test", "--primary"))
    assert domains("acme") == ["acme.test", "shop.acme.test", "www.acme.test"]

    result = succeeded(tenantctl("domain", "remove", "acme", "acme.test", "--json"))
    assert json.loads(result.stdout)["domains"] == ["shop.acme.test", "www.acme.test"]
    assert tenants.find_by_host("acme.test") is None

    # A tenant's first domain is its primary one, --primary or not.
    succeeded(tenantctl("domain", "add", "beta", "beta.test"))
    assert tenants.get_tenant("beta").primary_domain == "beta.test"


def test_domain_add_twice_changes_nothing(
    tenants: TenantRegistry, tenantctl: Tenantctl
) -> None:
    before = state(tenants)
    succeeded(tenantctl("domain", "add", "acme", "shop.acme.test"))
    assert state(tenants) == before


@pytest.mark.parametrize(
    ("args", "exit_code", "named"),
    [
        pytest.param(
            ["add", "beta", "shop.acme.test"], 1, "'shop.acme.test'", id="taken"
        ),
        pytest.param(
            ["add", "beta", "Shop.Acme.Test", "--primary"],
            1,
            "'shop.acme.test'",
            id="taken-primary",
        ),
        pytest.param(
            ["remove", "acme", "other.acme.test"],
            1,
            "'other.acme.test'",
            id="remove-absent",
        ),
        pytest.param(
            ["remove", "beta", "shop.acme.test"],
            1,
            "'shop.acme.test'",
            id="remove-other-tenants",
        ),
        pytest.param(["add", "acme", "1.2.3.4"], 2, "'1.2.3.4'", id="ip-address"),
        pytest.param(["add", "acme", "bad_host.test"], 2, "bad_host", id="underscore"),
        pytest.param(["add", "acme", "localhost"], 2, "'localhost'", id="one-label"),
        pytest.param(["remove", "acme", "x-.test"], 2, "'x-.test'", id="remove-bad"),
    ],
)
def test_domain_refuses(
    tenants: TenantRegistry,
    tenantctl: Tenantctl,
    args: list[str],
    exit_code: int,
    named: str,
) -> None:
    before = state(tenants)
    result = tenantctl("domain", *args)
    assert named in error_line(result, exit_code)
    assert result.stdout == ""
    assert state(tenants) == before


# -- which database -----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["list"], id="list"),
        pytest.param(["db", "upgrade"], id="db-upgrade"),
        pytest.param(["add", "acme", "--owner", "o@acme.test"], id="add"),
    ],
)
def test_an_invalid_database_url_is_bad_input(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(cli, ["--database-url", "nonsense", *args])
    assert "'nonsense'" in error_line(result, 2)
    assert list(tmp_path.iterdir()) == []  # no fallback to the default file


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(UNREACHABLE_SQLITE, id="sqlite"),
        pytest.param("postgresql+psycopg://postgres@127.0.0.1:1/x", id="postgresql"),
    ],
)
@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["list"], id="list"),
        pytest.param(["db", "upgrade"], id="db-upgrade"),
        pytest.param(["add", "acme", "--owner", "o@acme.test"], id="add"),
    ],
)
def test_an_unreachable_database(runner: CliRunner, url: str, args: list[str]) -> None:
    result = runner.invoke(cli, ["--database-url", url, *args])
    line = error_line(result, 1)
    if args == ["list"] and url == UNREACHABLE_SQLITE:
        # It only reads: a missing file is no registry, said before connecting.
        assert line == (
            "Error: no registry at /nonexistent-dir/x.db: the file does not"
            " exist; run 'tenantctl db upgrade'"
        )
        return
    assert url in line
    assert "unavailable" in line


def test_the_default_database_is_a_sqlite_file_in_the_current_directory(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = succeeded(runner.invoke(cli, ["db", "upgrade"]))
    assert "sqlite:///dispatcher.sqlite3" in result.stdout
    assert (tmp_path / "dispatcher.sqlite3").is_file()
    succeeded(runner.invoke(cli, ["add", "acme", "--owner", "o@acme.test"]))
    with TenantRegistry(f"sqlite:///{tmp_path / 'dispatcher.sqlite3'}") as registry:
        assert slugs(registry) == ["acme"]


def test_the_environment_names_the_database(
    runner: CliRunner,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISPATCHER_DATABASE_URL", database_url)
    succeeded(runner.invoke(cli, ["db", "upgrade"]))
    succeeded(runner.invoke(cli, ["add", "acme", "--owner", "o@acme.test"]))
    assert not (tmp_path / "dispatcher.sqlite3").exists()
    with TenantRegistry(database_url) as registry:
        assert slugs(registry) == ["acme"]


def test_the_option_overrides_the_environment(
    runner: CliRunner,
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    from_env = tmp_path / "from-env.sqlite3"
    monkeypatch.setenv("DISPATCHER_DATABASE_URL", f"sqlite:///{from_env}")
    option = ["--database-url", database_url]
    succeeded(runner.invoke(cli, [*option, "db", "upgrade"]))
    succeeded(runner.invoke(cli, [*option, "add", "acme", "--owner", "o@acme.test"]))
    assert not from_env.exists()
    assert not (tmp_path / "dispatcher.sqlite3").exists()
    with TenantRegistry(database_url) as registry:
        assert slugs(registry) == ["acme"]


# -- import -------------------------------------------------------------------------

GOOD_CSV = (
    "slug,owner_email,owner_name,subdomain,path_prefix,domains,config\n"
    'acme,owner@acme.test,Ann Owner,acme,,shop.acme.test acme.test,"{""plan"": '
    '""pro"", ""seats"": 5}"\n'
    "\n"
    "Beta,Owner@Beta.Test,,beta,beta,,\n"
    "gamma,g@gamma.test,,,,  gamma.test  ,{}\n"
    "\n"
)


def test_import_with_warnings_as_errors(
    registry: TenantRegistry, tenantctl: Tenantctl, tmp_path: Path
) -> None:
    """pytest runs with ``filterwarnings = error``; so may a strict deployment."""
    file = write_csv(tmp_path / "t.csv", "slug,owner_email\nacme,o@acme.test\n")
    result = succeeded(tenantctl("import", str(file)))
    assert result.stdout == "1 created, 0 unchanged, 0 failed\n"
    assert slugs(registry) == ["acme"]


def test_import(registry: TenantRegistry, tenantctl: Tenantctl, tmp_path: Path) -> None:
    file = write_csv(tmp_path / "tenants.csv", GOOD_CSV)
    result = succeeded(tenantctl("import", str(file)))
    assert result.stdout == "3 created, 0 unchanged, 0 failed\n"
    assert row_errors(result, file) == {}

    def fields(slug: str) -> dict[str, Any]:
        tenant = registry.get_tenant(slug).to_dict()
        return {
            key: tenant[key]
            for key in (
                "owner_email",
                "owner_name",
                "subdomain",
                "path_prefix",
                "domains",
                "config",
                "status",
            )
        }

    assert slugs(registry) == ["acme", "beta", "gamma"]
    assert fields("acme") == {
        "owner_email": "owner@acme.test",
        "owner_name": "Ann Owner",
        "subdomain": "acme",
        "path_prefix": None,
        "domains": ["shop.acme.test", "acme.test"],
        "config": {"plan": "pro", "seats": 5},
        "status": "active",
    }
    assert fields("beta") == {
        "owner_email": "owner@beta.test",
        "owner_name": None,
        "subdomain": "beta",
        "path_prefix": "beta",
        "domains": [],
        "config": {},
        "status": "active",
    }
    assert fields("gamma")["domains"] == ["gamma.test"]
    assert fields("gamma")["config"] == {}


def test_import_twice_changes_nothing(
    registry: TenantRegistry, tenantctl: Tenantctl, tmp_path: Path
) -> None:
    file = write_csv(tmp_path / "tenants.csv", GOOD_CSV)
    succeeded(tenantctl("import", str(file)))
    before = state(registry)
    result = succeeded(tenantctl("import", str(file)))
    assert result.stdout == "0 created, 3 unchanged, 0 failed\n"
    assert row_errors(result, file) == {}
    assert state(registry) == before


def test_import_twice_with_several_domains_changes_nothing(
    registry: TenantRegistry, tenantctl: Tenantctl, tmp_path: Path
) -> None:
    # The primary domain first, the others in no particular (not sorted) order.
    file = write_csv(
        tmp_path / "tenants.csv",
        "slug,owner_email,domains\nacme,o@acme.test,www.acme.test acme.test a.test\n",
    )
    succeeded(tenantctl("import", str(file)))
    before = state(registry)
    result = tenantctl("import", str(file))
    assert row_errors(result, file) == {}
    assert result.stdout == "0 created, 1 unchanged, 0 failed\n"
    assert result.exit_code == 0
    assert state(registry) == before


def test_import_reports_bad_rows_and_writes_the_good_ones(
    tenants: TenantRegistry, tenantctl: Tenantctl, tmp_path: Path
) -> None:
    file = write_csv(
        tmp_path / "tenants.csv",
        "slug,owner_email,subdomain,config\n"  # 1
        "good1,o@x.test,good1,\n"  # 2
        "Bad_Slug,o@x.test,,\n"  # 3
        "bad-json,o@x.test,,{oops\n"  # 4
        'not-object,o@x.test,,"[1, 2]"\n'  # 5
        "too-many,o@x.test,,,extra\n"  # 6
        "taken,o@x.test,acme,\n"  # 7: acme's subdomain
        "good1,o@x.test,other,\n"  # 8: the same slug again
        "bad-email,nobody,,\n"  # 9
        "good2,o@x.test,good2,\n",  # 10
    )
    acme = tenants.get_tenant("acme").to_dict()
    result = tenantctl("import", str(file))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    assert result.stdout == "2 created, 0 unchanged, 7 failed\n"
    errors = row_errors(result, file)
    assert sorted(errors) == [3, 4, 5, 6, 7, 8, 9]
    assert "'Bad_Slug'" in errors[3]
    assert "'[1, 2]'" in errors[5]
    assert "more fields" in errors[6]
    assert "'acme'" in errors[7]
    assert "'good1'" in errors[8]
    assert "'nobody'" in errors[9]

    assert slugs(tenants) == ["acme", "beta", "good1", "good2"]
    assert tenants.get_tenant("good1").subdomain == "good1"  # the first row won
    assert tenants.get_tenant("acme").to_dict() == acme


def test_import_reports_a_row_with_too_many_domains_and_writes_the_others(
    registry: TenantRegistry, tenantctl: Tenantctl, tmp_path: Path
) -> None:
    hosts = " ".join(f"h{i}.test" for i in range(registry.max_domains + 1))
    file = write_csv(
        tmp_path / "t.csv",
        f"slug,owner_email,domains\nmany,o@x.test,{hosts}\ngood,o@x.test,\n",
    )
    result = tenantctl("import", str(file))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    errors = row_errors(result, file)
    assert sorted(errors) == [2]
    assert "custom domains" in errors[2]
    assert result.stdout == "1 created, 0 unchanged, 1 failed\n"
    assert slugs(registry) == ["good"]


# Each way a file is refused whole: tests/test_csvfile.py. Here: one line on
# stderr, exit 2, and nothing written, not even the good rows before the bad byte.
@pytest.mark.parametrize(
    ("content", "named"),
    [
        pytest.param(
            b"slug,owner_email,colour\nacme,o@acme.test,red\n",
            "'colour'",
            id="unknown-column",
        ),
        pytest.param(
            b"slug,owner_email\nacme,o@acme.test\nb\xe9ta,o@beta.test\n",
            "UTF-8",
            id="latin-1",
        ),
    ],
)
def test_import_refuses_a_bad_file(
    registry: TenantRegistry,
    tenantctl: Tenantctl,
    tmp_path: Path,
    content: bytes,
    named: str,
) -> None:
    file = tmp_path / "tenants.csv"
    file.write_bytes(content)
    before = state(registry)
    result = tenantctl("import", str(file))
    line = error_line(result, 2)
    assert str(file) in line
    assert named in line
    assert result.stdout == ""
    assert state(registry) == before


# -- tenant data ------------------------------------------------------------------
#
# DISPATCHER_APP_FACTORY is unset here, so the demo's tenant data is the default:
# files beside a SQLite registry, schemas in a PostgreSQL registry's database.

ARCHIVED = r"removed tenant '{slug}'; its data is archived as '(?P<archive>[^']+)'\n"


@pytest.fixture
def demo_data(database_url: str) -> Iterator[TenantData]:
    """The demo's tenant data beside this test's registry, as tenantctl finds it."""
    data = make_tenant_data(database_url)
    yield data
    data.dispose()


def test_add_creates_the_data_and_remove_archives_it(
    registry: TenantRegistry,
    tenantctl: Tenantctl,
    database_url: str,
    demo_data: TenantData,
) -> None:
    before = data_names(database_url)
    result = succeeded(
        tenantctl("add", "acme", "--owner", "o@acme.test", "--subdomain", "acme")
    )
    acme = registry.get_tenant("acme")
    name = demo_data.schema_name(acme)
    assert result.stdout.startswith(f"created tenant 'acme'; its data is in {name!r}\n")
    assert acme.is_active  # enabled once its data exists
    assert demo_data.exists(acme)
    with demo_data.sessionmaker_for(acme).begin() as session:
        session.add(Note(body="kept"))

    result = tenantctl("remove", "acme", stdin="y\n")
    assert "Its data is archived, not deleted." in result.stderr
    found = re.fullmatch(ARCHIVED.format(slug="acme"), succeeded(result).stdout)
    assert found is not None, result.stdout
    archive = found["archive"]
    assert archive.startswith(f"{name}_archived_")
    assert slugs(registry) == []
    assert not demo_data.exists(acme)
    # Moved aside, never dropped: the archive is all that is new.
    assert data_names(database_url) - before == {archive}


def test_add_whose_data_cannot_be_created_leaves_nothing(
    registry: TenantRegistry, tenantctl: Tenantctl, database_url: str
) -> None:
    before = data_names(database_url)
    with refusing_tenant_data(database_url):
        result = tenantctl("add", "acme", "--owner", "o@acme.test")
        line = error_line(result, 1)
        assert "preparing tenant 'acme' failed" in line
        assert "it was not created" in line
        assert data_names(database_url) == before
    assert slugs(registry) == []
    # The name is free: with the cause gone, the same command works.
    succeeded(tenantctl("add", "acme", "--owner", "o@acme.test"))


def test_without_tenant_data_add_and_remove_are_as_before(
    registry: TenantRegistry,
    tenantctl: Tenantctl,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISPATCHER_TENANT_DATA", "")
    before = data_names(database_url)
    result = succeeded(tenantctl("add", "acme", "--owner", "o@acme.test"))
    assert result.stdout.startswith("created tenant 'acme'\n")
    result = succeeded(tenantctl("remove", "acme", "--yes"))
    assert result.stdout == "removed tenant 'acme'\n"
    assert data_names(database_url) == before


def test_another_app_factory_has_no_tenant_data_unless_named(
    registry: TenantRegistry,
    tenantctl: Tenantctl,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DISPATCHER_APP_FACTORY", "gunicorn_probe_app:create_app")
    before = data_names(database_url)
    result = succeeded(tenantctl("add", "acme", "--owner", "o@acme.test"))
    assert result.stdout.startswith("created tenant 'acme'\n")
    assert data_names(database_url) == before


def test_the_named_tenant_data_is_used(
    registry: TenantRegistry,
    tenantctl: Tenantctl,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory = tmp_path / "named"
    monkeypatch.setenv("DISPATCHER_TENANT_DATA", " tenant_data_probe:data ")
    monkeypatch.setenv(DIRECTORY_VARIABLE, str(directory))
    succeeded(tenantctl("add", "acme", "--owner", "o@acme.test"))
    [created] = directory.iterdir()
    result = succeeded(tenantctl("remove", "acme", "--yes"))
    found = re.fullmatch(ARCHIVED.format(slug="acme"), result.stdout)
    assert found is not None, result.stdout
    assert [p.stem for p in directory.iterdir()] == [found["archive"]]
    assert found["archive"].startswith(created.stem + "_archived_")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        pytest.param("nonexistent.module:data", "cannot be imported", id="module"),
        pytest.param("os:sep", "is a str, not a dispatcher.data.TenantData", id="type"),
        # Its module raises as the attribute is read: no directory configured.
        pytest.param("tenant_data_probe:data", "failed to load: KeyError", id="raises"),
    ],
)
@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["add", "new", "--owner", "o@new.test"], id="add"),
        pytest.param(["remove", "acme", "--yes"], id="remove"),
        pytest.param(["import", "{csv}"], id="import"),
    ],
)
def test_a_bad_tenant_data_setting_is_bad_input(
    tenants: TenantRegistry,
    tenantctl: Tenantctl,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    says: str,
    args: list[str],
) -> None:
    monkeypatch.setenv("DISPATCHER_TENANT_DATA", value)
    csv_file = write_csv(tmp_path / "t.csv", "slug,owner_email\nnew,o@new.test\n")
    before = state(tenants)
    result = tenantctl(*(arg.format(csv=csv_file) for arg in args))
    line = error_line(result, 2)
    assert line.startswith(f"Error: DISPATCHER_TENANT_DATA={value!r}")
    assert says in line
    assert state(tenants) == before
    # Commands that touch no tenant data do not need it.
    assert slugs(tenants) == ["acme", "beta"]
    succeeded(tenantctl("list"))
    succeeded(tenantctl("disable", "acme"))


def test_the_demos_data_needs_a_registry_file(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        cli, ["--database-url", "sqlite://", "add", "a", "--owner", "o@a.test"]
    )
    line = error_line(result, 2)
    assert "DISPATCHER_TENANT_DATA is unset" in line
    assert "in-memory" in line
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def probe_servers() -> Iterator[None]:
    """``tenant_data_probe:servers`` is closed after the test that made it."""
    yield
    forget_servers()


def test_add_places_the_data_on_the_named_server(
    probe_servers: None,
    registry: TenantRegistry,
    tenantctl: Tenantctl,
    database_url: str,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if backend != "postgresql":
        pytest.skip("data servers are PostgreSQL's")
    monkeypatch.setenv("DISPATCHER_TENANT_DATA", "tenant_data_probe:servers")
    monkeypatch.setenv(SERVER_URL_VARIABLE, database_url)
    before = data_names(database_url)
    result = succeeded(
        tenantctl("add", "acme", "--owner", "o@acme.test", "--data-server", "eu")
    )
    assert "data_server:      eu" in result.stdout
    acme = registry.get_tenant("acme")
    assert acme.data_server == "eu"
    assert len(data_names(database_url) - before) == 1

    refused = tenantctl("add", "beta", "--owner", "o@beta.test", "--data-server", "us")
    line = error_line(refused, 2)
    assert "'us'" in line
    assert "'main', 'eu'" in line
    assert slugs(registry) == ["acme"]


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        pytest.param(None, "", id="the-demos"),
        pytest.param("", "names no tenant data", id="none"),
    ],
)
def test_a_data_server_nothing_would_honour_is_bad_input(
    registry: TenantRegistry,
    tenantctl: Tenantctl,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    setting: str | None,
    says: str,
) -> None:
    if setting is not None:
        monkeypatch.setenv("DISPATCHER_TENANT_DATA", setting)
    elif backend == "sqlite":
        says = "SQLite files, on no named server"
    else:
        says = "the configured servers are 'default'"
    before = state(registry)
    result = tenantctl("add", "acme", "--owner", "o@acme.test", "--data-server", "eu")
    line = error_line(result, 2)
    assert line.startswith("Error: --data-server")
    assert "'eu'" in line
    assert says in line
    assert state(registry) == before


def test_import_creates_each_new_tenants_data(
    registry: TenantRegistry,
    tenantctl: Tenantctl,
    tmp_path: Path,
    database_url: str,
    demo_data: TenantData,
) -> None:
    file = write_csv(tmp_path / "tenants.csv", GOOD_CSV)
    before = data_names(database_url)
    succeeded(tenantctl("import", str(file)))
    tenants = registry.list_tenants()
    assert [t.slug for t in tenants] == ["acme", "beta", "gamma"]
    assert all(demo_data.exists(tenant) for tenant in tenants)
    made = data_names(database_url) - before
    assert len(made) == 3
    # Again: unchanged, and no data made twice.
    result = succeeded(tenantctl("import", str(file)))
    assert result.stdout == "0 created, 3 unchanged, 0 failed\n"
    assert data_names(database_url) - before == made


def test_import_removes_a_tenant_whose_data_cannot_be_created(
    registry: TenantRegistry, tenantctl: Tenantctl, tmp_path: Path, database_url: str
) -> None:
    file = write_csv(tmp_path / "t.csv", "slug,owner_email\nacme,o@acme.test\n")
    before = data_names(database_url)
    with refusing_tenant_data(database_url):
        result = tenantctl("import", str(file))
        assert data_names(database_url) == before
    assert result.exit_code == 1, result.output
    assert result.stdout == "0 created, 0 unchanged, 1 failed\n"
    [message] = row_errors(result, file).values()
    assert message.startswith("tenant 'acme' was not created: ")
    assert slugs(registry) == []


# -- hostile input ----------------------------------------------------------------

DEEP_UNCLOSED = "[" * 100_000  # more than Python's recursion limit, and not JSON
DEEP_CLOSED = "[" * 5_000 + "]" * 5_000  # JSON, deeper than Python can parse
DEEP_PARSEABLE = "[" * 100 + "]" * 100  # parses, deeper than the config limit


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(DEEP_UNCLOSED, id="unclosed"),
        pytest.param(DEEP_CLOSED, id="closed"),
        pytest.param(DEEP_PARSEABLE, id="parseable"),
    ],
)
@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["config", "set", "acme", "k", "{value}"], id="config-set"),
        pytest.param(
            ["add", "gamma", "--owner", "o@x.test", "--config", "k={value}"], id="add"
        ),
    ],
)
def test_deeply_nested_json_is_one_line_of_bad_input(
    tenants: TenantRegistry, tenantctl: Tenantctl, args: list[str], value: str
) -> None:
    before = state(tenants)
    result = tenantctl(*(arg.format(value=value) for arg in args))
    line = error_line(result, 2)
    assert "nested" in line
    assert len(line) < 300  # the value is shown shortened
    assert state(tenants) == before


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["config", "set", "acme", "k", DEEP_UNCLOSED], id="config-set"),
        pytest.param(["import", "{csv}"], id="import"),
    ],
)
def test_deeply_nested_json_in_the_real_program(
    tenants: TenantRegistry, database_url: str, tmp_path: Path, args: list[str]
) -> None:
    csv_file = write_csv(
        tmp_path / "t.csv", f"slug,owner_email,config\ndeep,o@x.test,{DEEP_UNCLOSED}\n"
    )
    completed = subprocess.run(
        [
            str(TENANTCTL_SCRIPT),
            "--database-url",
            database_url,
            *(arg.format(csv=csv_file) for arg in args),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert completed.returncode in (1, 2), completed.stderr
    assert "Traceback" not in completed.stderr
    lines = completed.stderr.splitlines()
    assert len(lines) == 1, completed.stderr
    assert "nested" in lines[0]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(
            ["add", "gamma", "--owner", "o@x.test", "--owner-name", "Ann\x1b[2J"],
            "owner name",
            id="owner-name-escape",
        ),
        pytest.param(
            ["add", "gamma", "--owner", "o@x.test", "--owner-name", "Ann\nOwner"],
            "owner name",
            id="owner-name-newline",
        ),
        pytest.param(
            ["add", "gamma", "--owner", "o\x1b[31m@x.test"], "e-mail", id="e-mail"
        ),
        pytest.param(
            ["add", "gamma", "--owner", "o\u202e@x.test"], "e-mail", id="e-mail-bidi"
        ),
        pytest.param(
            ["disable", "acme", "--reason", "unpaid\x1b]0;owned\x07"],
            "disabled reason",
            id="reason-escape",
        ),
        pytest.param(
            ["disable", "acme", "--reason", "unpaid\r\nOK"],
            "disabled reason",
            id="reason-line-break",
        ),
    ],
)
def test_control_characters_are_refused(
    tenants: TenantRegistry, tenantctl: Tenantctl, args: list[str], named: str
) -> None:
    before = state(tenants)
    result = tenantctl(*args)
    line = error_line(result, 2)
    assert named in line
    assert "control characters" in line
    assert line.isprintable()
    assert state(tenants) == before


def test_control_characters_are_refused_in_an_import_file(
    registry: TenantRegistry, tenantctl: Tenantctl, tmp_path: Path
) -> None:
    file = write_csv(
        tmp_path / "t.csv",
        "slug,owner_email,owner_name\n"
        "one,one@x.test,Ann\x1b[2J\n"
        "two,tw\x07o@x.test,\n"
        "three,three@x.test,Ann\n",
    )
    result = tenantctl("import", str(file))
    assert result.exit_code == 1, result.output
    errors = row_errors(result, file)
    assert sorted(errors) == [2, 3]
    assert all("control characters" in error for error in errors.values())
    assert slugs(registry) == ["three"]
    assert "\x1b" not in result.output and "\x07" not in result.output


# Lower case: the e-mail column holds only lower case (a CHECK constraint).
HOSTILE = "ann\x1b]0;owned\x07\x1b[1m\r\u202eevil\u2028x\x9b"


def _plant_hostile_rows(registry: TenantRegistry) -> None:
    """Rows written before the rules existed, or by a tool that ignores them."""
    registry.disable_tenant("acme", "unpaid")
    with registry.engine.begin() as connection:
        connection.execute(
            text("UPDATE users SET name = :name, email = :prefix || email"),
            {"name": HOSTILE, "prefix": HOSTILE},
        )
        connection.execute(
            text("UPDATE tenants SET disabled_reason = :reason"), {"reason": HOSTILE}
        )


def _assert_escaped(output: str) -> None:
    # Every character printed is one a terminal shows; the hostile ones are
    # there, escaped as Python would in a string literal.
    assert all(line.isprintable() for line in output.splitlines()), repr(output)
    assert "\\x1b]0;owned\\x07\\x1b[1m\\r\\u202eevil\\u2028x\\x9b" in output


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["list"], id="list"),
        pytest.param(["show", "acme"], id="show"),
        pytest.param(["config", "set", "acme", "k", "v"], id="config-set"),
        pytest.param(["enable", "acme"], id="enable"),
    ],
)
def test_output_escapes_control_characters(
    tenants: TenantRegistry, tenantctl: Tenantctl, args: list[str]
) -> None:
    _plant_hostile_rows(tenants)
    result = succeeded(tenantctl(*args))
    _assert_escaped(result.stdout)
    assert result.stdout.count("\n") == len(result.stdout.splitlines())


def test_json_output_keeps_control_characters_as_json_escapes(
    tenants: TenantRegistry, tenantctl: Tenantctl
) -> None:
    _plant_hostile_rows(tenants)
    result = succeeded(tenantctl("show", "acme", "--json"))
    assert result.stdout.isascii()
    assert json.loads(result.stdout)["owner_name"] == HOSTILE


def test_headlines_escape_what_the_user_typed(
    tenants: TenantRegistry, tenantctl: Tenantctl
) -> None:
    # config keys are JSON strings, so any text is a key; print it escaped.
    succeeded(tenantctl("config", "set", "acme", "k\x1b[2J", "v"))
    result = succeeded(tenantctl("config", "unset", "acme", "k\x1b[2J"))
    headline = result.stdout.splitlines()[0]
    assert headline == "tenant 'acme': unset k\\x1b[2J"


def test_errors_escape_control_characters(
    registry: TenantRegistry, tenantctl: Tenantctl, tmp_path: Path
) -> None:
    file = write_csv(tmp_path / "t\x1b[2J.csv", "slug,colour\nacme,red\n")
    result = tenantctl("import", str(file))
    line = error_line(result, 2)
    assert line.isprintable()
    assert "t\\x1b[2J.csv" in line


# -- base domain --------------------------------------------------------------------


def _with_base_domain(
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    environment: str | None,
    option: str | None,
) -> Tenantctl:
    """``tenantctl`` with $DISPATCHER_BASE_DOMAIN and --base-domain as given."""
    if environment is None:
        monkeypatch.delenv("DISPATCHER_BASE_DOMAIN", raising=False)
    else:
        monkeypatch.setenv("DISPATCHER_BASE_DOMAIN", environment)
    options = [] if option is None else ["--base-domain", option]

    def invoke(*args: str) -> Result:
        return runner.invoke(
            cli,
            ["--database-url", database_url, *options, *args],
            prog_name="tenantctl",
        )

    return invoke


@pytest.mark.parametrize(
    ("environment", "option", "host", "base"),
    [
        pytest.param(None, None, "victim.localhost", "'localhost'", id="default"),
        pytest.param(None, None, "Victim.LOCALHOST.", "'localhost'", id="spelling"),
        pytest.param(
            "example.test", None, "victim.example.test", "'example.test'", id="env"
        ),
        pytest.param(
            " Example.TEST. ",
            None,
            "a.b.example.test",
            "'example.test'",
            id="env-spelling",
        ),
        pytest.param(
            None, "example.test", "victim.example.test", "'example.test'", id="option"
        ),
        pytest.param(
            "other.test",
            "example.test",
            "example.test",
            "'example.test'",
            id="option-wins",
        ),
        pytest.param(
            "",
            "example.test",
            "x.example.test",
            "'example.test'",
            id="option-over-empty-env",
        ),
    ],
)
def test_a_custom_domain_under_the_base_domain_is_refused(
    tenants: TenantRegistry,
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    environment: str | None,
    option: str | None,
    host: str,
    base: str,
    tmp_path: Path,
) -> None:
    tenantctl = _with_base_domain(
        runner, monkeypatch, database_url, environment, option
    )
    before = state(tenants)
    for args in (
        ["domain", "add", "beta", host],
        ["domain", "add", "beta", host, "--primary"],
        ["add", "mallory", "--owner", "m@evil.test", "--domain", host],
    ):
        line = error_line(tenantctl(*args), 2)
        assert base in line
        assert "base domain" in line
    file = write_csv(
        tmp_path / "t.csv", f"slug,owner_email,domains\nmallory,m@evil.test,{host}\n"
    )
    result = tenantctl("import", str(file))
    assert result.exit_code == 1
    assert base in row_errors(result, file)[2]
    assert state(tenants) == before


@pytest.mark.parametrize(
    ("environment", "option", "host"),
    [
        pytest.param("", None, "victim.localhost", id="empty-env-means-none"),
        pytest.param(None, "", "victim.localhost", id="empty-option-means-none"),
        pytest.param("localhost", "", "victim.localhost", id="empty-option-over-env"),
        pytest.param("example.test", None, "victim.localhost", id="env-not-default"),
        pytest.param("other.test", "example.test", "x.other.test", id="option-not-env"),
        pytest.param(None, None, "localhost.test", id="only-a-lookalike"),
    ],
)
def test_a_custom_domain_outside_the_base_domain_is_accepted(
    tenants: TenantRegistry,
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    environment: str | None,
    option: str | None,
    host: str,
) -> None:
    tenantctl = _with_base_domain(
        runner, monkeypatch, database_url, environment, option
    )
    succeeded(tenantctl("domain", "add", "beta", host))
    assert tenants.find_by_host(host).slug == "beta"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("exa mple.test", id="space"),
        pytest.param("example.test:8000", id="port"),
        pytest.param("ex_ample.test", id="underscore"),
    ],
)
@pytest.mark.parametrize("where", ["option", "environment"])
def test_an_invalid_base_domain_is_bad_input(
    registry: TenantRegistry,
    runner: CliRunner,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    value: str,
    where: str,
) -> None:
    tenantctl = _with_base_domain(
        runner,
        monkeypatch,
        database_url,
        value if where == "environment" else None,
        value if where == "option" else None,
    )
    line = error_line(tenantctl("list"), 2)
    assert repr(value.strip().lower()) in line or repr(value) in line
    assert "--base-domain or $DISPATCHER_BASE_DOMAIN" in line


def test_serve_uses_the_base_domain_option(
    registry: TenantRegistry, database_url: str, tmp_path: Path
) -> None:
    registry.create_tenant(
        "acme",
        owner_email="owner@acme.test",
        subdomain="acme",
        config={"greeting": "Hello from Acme"},
    )
    port = free_port()
    command = [
        str(TENANTCTL_SCRIPT),
        "--database-url",
        database_url,
        "--base-domain",
        "Example.Test",
        "serve",
        "--port",
        str(port),
    ]
    env = {**os.environ, "DISPATCHER_BASE_DOMAIN": "localhost"}
    with running(
        command, port=port, env=env, log_path=tmp_path / "serve.log", cwd=tmp_path
    ) as server:
        answer = request(server.port, host=f"acme.example.test:{port}")
        assert answer.status == 200, server.log()
        assert "Hello from Acme" in answer.body
        assert request(server.port, host=f"acme.localhost:{port}").status == 404


# -- the installed programs ---------------------------------------------------------


@pytest.mark.parametrize(
    "program",
    [
        pytest.param([sys.executable, "-m", "dispatcher"], id="python-m"),
        pytest.param([str(TENANTCTL_SCRIPT)], id="tenantctl"),
    ],
)
def test_help_of_the_real_program(program: list[str], tmp_path: Path) -> None:
    completed = subprocess.run(
        [*program, "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("Usage: tenantctl ")
    for command in ("add", "config", "db", "domain", "import", "list", "remove"):
        assert re.search(rf"^  {command}\b", completed.stdout, re.MULTILINE)
    assert completed.stderr == ""
    assert list(tmp_path.iterdir()) == []


def test_an_error_of_the_real_program(
    registry: TenantRegistry, database_url: str, tmp_path: Path
) -> None:
    completed = subprocess.run(
        [str(TENANTCTL_SCRIPT), "--database-url", database_url, "show", "nope"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert "Traceback" not in completed.stderr
    assert completed.stderr.count("\n") == 1
    assert completed.stderr.strip() == "Error: no tenant has the slug 'nope'"


def test_version(runner: CliRunner) -> None:
    result = succeeded(runner.invoke(cli, ["--version"], prog_name="tenantctl"))
    assert result.stdout == "tenantctl, version 0.1.0\n"
