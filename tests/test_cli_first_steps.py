"""``tenantctl``'s first steps, as a new user takes them (issue 15): each
stumble a new user hit, with the behaviour that replaced it.

Real databases (a SQLite file, or a PostgreSQL schema of the test's own) and,
where the behaviour is the program's (standard input, exit codes), the real
``tenantctl`` in a subprocess.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from servers import TENANTCTL
from sqlalchemy import make_url
from test_cli import (
    Tenantctl,
    error_line,
    slugs,
    state,
    succeeded,
    table_names,
    write_csv,
)

from dispatcher import TenantRegistry
from dispatcher.cli import cli


@pytest.fixture(autouse=True)
def _drops_tenant_schemas(tenant_data_location: dict[str, Any]) -> None:
    """On PostgreSQL, the schemas the demo's tenant data (the default) makes
    in the run's database are dropped after each test."""


@pytest.fixture
def tenantctl(database_url: str) -> Tenantctl:
    """Run ``tenantctl --database-url <this test's database> ARGS...``."""

    def invoke(*args: str, stdin: str | None = None) -> Any:
        return CliRunner().invoke(
            cli, ["--database-url", database_url, *args], input=stdin
        )

    return invoke


@pytest.fixture
def tenants(registry: TenantRegistry) -> TenantRegistry:
    registry.create_tenant(
        "acme", owner_email="owner@acme.test", subdomain="acme", config={"a": 1}
    )
    return registry


def program(
    *args: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The real ``tenantctl`` with ``args``, ``stdin`` on its standard input."""
    return subprocess.run(
        [str(TENANTCTL), *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        check=False,
    )


# -- 3. a tenant can be reached -----------------------------------------------------


def test_add_without_an_address_is_reached_by_its_slug_as_subdomain(
    registry: TenantRegistry, tenantctl: Tenantctl
) -> None:
    succeeded(tenantctl("add", "gamma", "--owner", "o@gamma.test"))

    found = registry.find_by_subdomain("gamma")
    assert found is not None and found.slug == "gamma"


def test_an_address_given_is_the_only_one(
    registry: TenantRegistry, tenantctl: Tenantctl
) -> None:
    succeeded(tenantctl("add", "gamma", "--owner", "o@x.test", "--path-prefix", "g"))
    succeeded(tenantctl("add", "delta", "--owner", "o@x.test", "--domain", "d.test"))

    assert registry.get_tenant("gamma").subdomain is None
    assert registry.get_tenant("delta").subdomain is None


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(
            ["gamma", "--no-subdomain"], "--path-prefix or --domain", id="no-subdomain"
        ),
        pytest.param(
            ["gamma", "--no-subdomain", "--subdomain", "g"],
            "--subdomain and --no-subdomain",
            id="contradiction",
        ),
        pytest.param(["www"], "'www' is reserved as a subdomain", id="reserved-slug"),
    ],
)
def test_a_tenant_without_an_address_is_refused(
    registry: TenantRegistry, tenantctl: Tenantctl, args: list[str], named: str
) -> None:
    before = state(registry)

    line = error_line(tenantctl("add", *args, "--owner", "o@x.test"), 2)

    assert named in line
    assert state(registry) == before


def test_no_subdomain_with_another_address(
    registry: TenantRegistry, tenantctl: Tenantctl
) -> None:
    args = ["gamma", "--owner", "o@x.test", "--no-subdomain", "--path-prefix", "g"]
    succeeded(tenantctl("add", *args))

    assert registry.get_tenant("gamma").subdomain is None


def test_an_import_row_without_an_address_gets_its_slug_as_subdomain(
    registry: TenantRegistry, tenantctl: Tenantctl, tmp_path: Path
) -> None:
    file = write_csv(
        tmp_path / "t.csv",
        "slug,owner_email,path_prefix\ngamma,o@x.test,\ndelta,o@x.test,d\n",
    )
    succeeded(tenantctl("import", str(file)))
    # Re-running the same file changes nothing: the default is the same.
    again = succeeded(tenantctl("import", str(file)))

    assert again.stdout == "0 created, 2 unchanged, 0 failed\n"
    assert registry.get_tenant("gamma").subdomain == "gamma"
    assert registry.get_tenant("delta").subdomain is None


def test_add_says_a_tenant_needs_an_address(runner_help: str) -> None:
    assert "A tenant needs an address" in runner_help


@pytest.fixture
def runner_help() -> str:
    result = CliRunner().invoke(cli, ["add", "--help"], terminal_width=80)
    return " ".join(result.stdout.split())


# -- 5. every write command accepts --json ----------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["add", "gamma", "--owner", "o@x.test"], id="add"),
        pytest.param(["disable", "acme"], id="disable"),
        pytest.param(["enable", "acme"], id="enable"),
        pytest.param(["remove", "acme", "--yes"], id="remove"),
        pytest.param(["config", "set", "acme", "k", "5"], id="config-set"),
        pytest.param(["config", "unset", "acme", "a"], id="config-unset"),
        pytest.param(["domain", "add", "acme", "a.test"], id="domain-add"),
        pytest.param(["import", "{csv}"], id="import"),
        pytest.param(["db", "upgrade"], id="db-upgrade"),
        pytest.param(["maintenance", "on", "acme"], id="maintenance-on"),
        pytest.param(["maintenance", "off", "acme"], id="maintenance-off"),
        pytest.param(["feed", "prune"], id="feed-prune"),
    ],
)
def test_every_write_command_prints_one_json_object(
    tenants: TenantRegistry, tenantctl: Tenantctl, tmp_path: Path, args: list[str]
) -> None:
    csv_file = write_csv(tmp_path / "t.csv", "slug,owner_email\ngamma,o@x.test\n")

    result = succeeded(tenantctl(*(a.format(csv=csv_file) for a in args), "--json"))

    assert isinstance(json.loads(result.stdout), dict)


def test_import_json_reports_each_bad_row_and_still_says_it_on_stderr(
    registry: TenantRegistry, tenantctl: Tenantctl, tmp_path: Path
) -> None:
    file = write_csv(
        tmp_path / "t.csv", "slug,owner_email\ngamma,o@x.test\nBad_,o@x.test\n"
    )

    result = tenantctl("import", str(file), "--json")

    assert result.exit_code == 1
    answer = json.loads(result.stdout)
    assert (answer["created"], answer["unchanged"], answer["failed"]) == (1, 0, 1)
    assert [error["line"] for error in answer["errors"]] == [3]
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"{file}:3: ")


def test_remove_json(tenants: TenantRegistry, tenantctl: Tenantctl) -> None:
    answer = json.loads(succeeded(tenantctl("remove", "acme", "--json")).stdout)
    # EOF at the prompt: not removed, and said as JSON.
    assert answer == {"slug": "acme", "removed": False}

    answer = json.loads(
        succeeded(tenantctl("remove", "acme", "--yes", "--json")).stdout
    )
    assert answer["slug"] == "acme" and answer["removed"] is True
    assert slugs(tenants) == []


# -- 6. the rest of the first steps ---------------------------------------------------


def test_import_dash_reads_standard_input(
    registry: TenantRegistry, database_url: str, tmp_path: Path
) -> None:
    rows = "slug,owner_email,subdomain\ngamma,o@x.test,gamma\nBad_,o@x.test,b\n"

    done = program("--database-url", database_url, "import", "-", stdin=rows)

    assert done.returncode == 1
    assert done.stdout == "1 created, 0 unchanged, 1 failed\n"
    assert re.fullmatch(r"<stdin>:3: slug 'Bad_' .*\n", done.stderr)
    assert slugs(registry) == ["gamma"]


def test_db_upgrade_base_is_refused(tenantctl: Tenantctl, database_url: str) -> None:
    line = error_line(tenantctl("db", "upgrade", "base"), 2)

    assert "'base'" in line and "never downgrades" in line
    assert table_names(database_url) == []


def test_config_unset_of_a_missing_key_says_so(
    tenants: TenantRegistry, tenantctl: Tenantctl
) -> None:
    generation = tenants.latest_generation()

    result = succeeded(tenantctl("config", "unset", "acme", "nope"))

    assert result.stdout.splitlines()[0] == (
        "tenant 'acme': no key 'nope' in its config, nothing to unset"
    )
    assert tenants.latest_generation() == generation
    both = succeeded(tenantctl("config", "unset", "acme", "a", "nope", "--json"))
    assert json.loads(both.stdout)["unset"] == ["a"]
    assert json.loads(both.stdout)["missing"] == ["nope"]


def test_disable_without_a_reason_keeps_the_reason(
    tenants: TenantRegistry, tenantctl: Tenantctl
) -> None:
    succeeded(tenantctl("disable", "acme", "--reason", "unpaid"))
    generation = tenants.latest_generation()

    succeeded(tenantctl("disable", "acme"))

    assert tenants.get_tenant("acme").disabled_reason == "unpaid"
    assert tenants.latest_generation() == generation  # nothing changed
    succeeded(tenantctl("disable", "acme", "--reason", ""))
    assert tenants.get_tenant("acme").disabled_reason is None


def test_declining_remove_in_the_real_program_is_not_an_error(
    tenants: TenantRegistry, database_url: str
) -> None:
    done = program("--database-url", database_url, "remove", "acme", stdin="n\n")

    assert done.returncode == 0
    assert done.stdout == "nothing removed: tenant 'acme' is still there\n"
    assert slugs(tenants) == ["acme"]


def _leaves(
    command: click.Command, path: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    if isinstance(command, click.Group):
        return [
            leaf
            for name, sub in command.commands.items()
            for leaf in _leaves(sub, (*path, name))
        ]
    return [path]


@pytest.mark.parametrize("path", _leaves(cli), ids=" ".join)
def test_every_command_takes_database_url_after_its_name(
    path: tuple[str, ...], tmp_path: Path
) -> None:
    # A missing file named after the command: a command that found the option
    # refuses it or creates it; one that did not would say "no such option".
    result = CliRunner().invoke(cli, [*path, "--database-url", "x://", "--help"])

    assert result.exit_code == 0, result.output
    assert "--database-url URL" in result.stdout


def test_database_url_after_the_subcommand_is_the_one_used(
    tenants: TenantRegistry, database_url: str, tmp_path: Path
) -> None:
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"
    runner = CliRunner()

    listed = runner.invoke(
        cli, ["--database-url", elsewhere, "list", "--database-url", database_url]
    )
    set_ = runner.invoke(
        cli, ["config", "set", "acme", "k", "5", "--database-url", database_url]
    )
    fed = runner.invoke(cli, ["feed", "show", "--database-url", database_url])

    assert succeeded(listed).stdout.splitlines()[1].startswith("acme ")
    succeeded(set_)
    assert tenants.get_tenant("acme").config["k"] == 5
    assert succeeded(fed).stdout.startswith("kept ")
    assert not (tmp_path / "elsewhere.sqlite3").exists()


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["add", "gamma", "--owner", "o@x.test", "--config"], id="add"),
        pytest.param(["config", "set", "acme", "k"], id="config-set"),
    ],
)
def test_a_value_that_starts_as_json_and_is_not_is_refused(
    tenants: TenantRegistry, tenantctl: Tenantctl, args: list[str]
) -> None:
    before = state(tenants)
    value = '{"a":1'
    if args[0] == "add":
        args = [*args, f"k={value}"]
    else:
        args = [*args, value]

    line = error_line(tenantctl(*args), 2)

    assert "'{\"a\":1'" in line and "starts with '{', as JSON does" in line
    assert state(tenants) == before


def test_string_stores_what_starts_as_json_as_typed(
    tenants: TenantRegistry, tenantctl: Tenantctl
) -> None:
    succeeded(tenantctl("config", "set", "acme", "k", '{"a":1', "--string"))

    assert tenants.get_tenant("acme").config["k"] == '{"a":1'


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["config", "set", "acme", "", "5"], id="config-set"),
        pytest.param(["config", "set", "acme", " ", "5"], id="config-set-blank"),
        pytest.param(
            ["add", "gamma", "--owner", "o@x.test", "--config", " =5"], id="add"
        ),
    ],
)
def test_an_empty_config_key_is_refused(
    tenants: TenantRegistry, tenantctl: Tenantctl, args: list[str]
) -> None:
    before = state(tenants)

    assert "empty" in error_line(tenantctl(*args), 2)
    assert state(tenants) == before


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["list"], id="list"),
        pytest.param(["show", "acme"], id="show"),
        pytest.param(["status"], id="status"),
        pytest.param(["feed", "show"], id="feed-show"),
        pytest.param(["data", "show", "acme"], id="data-show"),
        pytest.param(["data", "servers"], id="data-servers"),
        pytest.param(["data", "archives"], id="data-archives"),
        pytest.param(["run", "acme", "--", "routes"], id="run"),
    ],
)
def test_a_command_that_only_reads_never_creates_a_database_file(
    tmp_path: Path, args: list[str]
) -> None:
    file = tmp_path / "registry.sqlite3"

    done = program("--database-url", f"sqlite:///{file}", *args, cwd=tmp_path)

    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr == (
        f"Error: no registry at {file}: the file does not exist;"
        " run 'tenantctl db upgrade'\n"
    )
    assert list(tmp_path.iterdir()) == []


def _read_only(database_url: str) -> str:
    """The same database, opened read-only: SQLite's ``mode=ro`` (root may
    write any file, so a permission would not stop the test), PostgreSQL's
    read-only transactions."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///file:{url.database}?mode=ro&uri=true"
    options = url.query["options"]
    assert isinstance(options, str)
    read_only = f"{options} -cdefault_transaction_read_only=on"
    return url.update_query_dict({"options": read_only}).render_as_string(
        hide_password=False
    )


def test_a_read_only_database_says_it_is_read_only(
    tenants: TenantRegistry, database_url: str
) -> None:
    before = state(tenants)
    read_only = _read_only(database_url)

    shown = program("--database-url", read_only, "show", "acme")
    done = program("--database-url", read_only, "disable", "acme")

    assert shown.returncode == 0, shown.stderr  # reading it works
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("Error: the database ")
    assert " is read-only: " in done.stderr
    assert state(tenants) == before


# -- 8. help texts ------------------------------------------------------------------


def _commands(command: click.Command, path: tuple[str, ...] = ()) -> list[Any]:
    found: list[Any] = [(path, command)]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            found += _commands(sub, (*path, name))
    return found


@pytest.mark.parametrize(
    ("path", "command"),
    [
        pytest.param(path, command, id=" ".join(path) or "tenantctl")
        for path, command in _commands(cli)
    ],
)
def test_every_option_says_what_it_is_for(
    path: tuple[str, ...], command: click.Command
) -> None:
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"tenantctl {' '.join(path)} {param.opts[0]}"
            # A value's metavar says what goes there, not just TEXT.
            if not param.is_flag and param.type is click.STRING:
                assert param.metavar, f"tenantctl {' '.join(path)} {param.opts[0]}"


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(path, id=" ".join(path) or "tenantctl")
        for path, command in _commands(cli)
        if isinstance(command, click.Group)
    ],
)
def test_no_command_summary_is_cut_off(path: tuple[str, ...]) -> None:
    result = succeeded(CliRunner().invoke(cli, [*path, "--help"], terminal_width=80))

    listed = result.stdout.split("Commands:\n")[1]
    assert "..." not in listed, listed


@pytest.mark.parametrize(
    ("option", "metavar"),
    [("--owner", "EMAIL"), ("--domain", "HOST"), ("--config", "KEY=VALUE")],
)
def test_add_says_what_goes_in_its_options(option: str, metavar: str) -> None:
    result = succeeded(CliRunner().invoke(cli, ["add", "--help"]))

    assert f"{option} {metavar}" in result.stdout


def test_serve_lists_the_variables_it_reads() -> None:
    result = succeeded(CliRunner().invoke(cli, ["serve", "--help"]))
    variables = set(re.findall(r"DISPATCHER_[A-Z_]+", result.stdout))

    # What dispatcher.wsgi reads to build the app serve runs (gunicorn's
    # own settings, DISPATCHER_GC and DISPATCHER_METRICS_ADDRESS, are not).
    assert variables >= {
        "DISPATCHER_DATABASE_URL",
        "DISPATCHER_BASE_DOMAIN",
        "DISPATCHER_APP_FACTORY",
        "DISPATCHER_SHARED_APP",
        "DISPATCHER_DEFAULT_APP",
        "DISPATCHER_TENANT_DATA",
        "DISPATCHER_TENANT_HEADER",
        "DISPATCHER_PATH_ROUTING",
        "DISPATCHER_PATH_ROUTING_HOSTS",
        "DISPATCHER_MAX_APPS",
        "DISPATCHER_DB_TIMEOUT",
        "DISPATCHER_FEED_MAX_AGE",
        "DISPATCHER_FEED_MAX_CHANGES",
        "DISPATCHER_SECRET_KEY",
        "DISPATCHER_MIGRATE",
        "DISPATCHER_METRICS",
        "DISPATCHER_METRICS_PATH",
        "DISPATCHER_HEALTH_PATH",
    }
