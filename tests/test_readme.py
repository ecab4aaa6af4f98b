"""The README's first steps, run as written.

The "Using it" example is the README's own text: its Python block is saved as
``saas.py`` and its shell block's ``tenantctl`` lines run in a real process,
in order, on this test's database; then the example's ``application`` answers
the README's request. The Quickstart's demo CSV imports beside a site signed
up under the README's example name.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from servers import COMMAND_TIMEOUT, TENANTCTL, tenantctl
from werkzeug.test import Client

from dispatcher import TenantRegistry

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.index("\n## ", start + 1)
    return README[start:end]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, re.S)


def test_the_using_it_example_answers_after_its_steps(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    using_it = section("Using it")
    [example] = blocks(using_it, "python")[:1]
    (tmp_path / "saas.py").write_text(example)
    steps = blocks(using_it, "sh")[0]
    commands = [
        shlex.split(line.split("#", 1)[0])
        for line in steps.splitlines()
        if line.startswith("tenantctl ")
    ]
    assert [command[:2] for command in commands] == [
        ["tenantctl", "db"],
        ["tenantctl", "add"],
    ]
    environ = {
        **os.environ,
        "DISPATCHER_DATABASE_URL": database_url,
        "DISPATCHER_APP_FACTORY": "saas:create_app",
        "DISPATCHER_TENANT_DATA": "",
        "DISPATCHER_SECRET_KEY": "s" * 64,
        "PYTHONPATH": str(tmp_path),
    }
    for command in commands:
        done = subprocess.run(
            [str(TENANTCTL), *command[1:]],
            env=environ,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    assert not (tmp_path / "dispatcher-tenants").exists()  # no demo data made

    for name in ("DISPATCHER_DATABASE_URL", "DISPATCHER_SECRET_KEY"):
        monkeypatch.setenv(name, environ[name])
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("saas", None)
    import saas  # type: ignore[import-not-found]

    try:
        answer = Client(saas.application).get("/", headers={"Host": "acme.example.com"})
        assert answer.get_data(as_text=True) == "Hello from acme, visit 1"
    finally:
        saas.application.close()
        saas.registry.close()
        sys.modules.pop("saas", None)


def test_the_demo_csv_imports_beside_the_readmes_example_site(
    registry: TenantRegistry, database_url: str
) -> None:
    # The Quickstart signs up sites; the README's example name is acme.
    registry.create_tenant("acme", owner_email="ada@acme.test", subdomain="acme")

    tenantctl(database_url, "import", str(ROOT / "scripts" / "demo_tenants.csv"))

    slugs = sorted(tenant.slug for tenant in registry.list_tenants())
    assert slugs == ["acme", "contoso", "northwind"]
