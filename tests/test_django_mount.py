"""A real Django app mounted next to Flask tenant apps, in one interpreter."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from werkzeug.test import Client

from dispatcher import TenantRegistry

pytest.importorskip("django", reason="Django is in the 'test' extra")

EXAMPLE = Path(__file__).parent.parent / "scripts" / "django_mount_example.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("django_mount_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Django imports ROOT_URLCONF by this name.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_flask_tenant_and_django_share_one_dispatcher(
    example: ModuleType, registry: TenantRegistry
) -> None:
    registry.create_tenant("acme", owner_email="owner@acme.test", subdomain="acme")
    client = Client(example.make_application(registry))

    flask_answer = client.get("/", headers={"Host": "acme.localhost"})
    django_answer = client.get("/legacy/", headers={"Host": "acme.localhost"})

    assert flask_answer.status_code == 200
    assert flask_answer.json == {"framework": "flask", "tenant": "acme"}
    assert django_answer.status_code == 200
    assert json.loads(django_answer.get_data()) == {
        "framework": "django",
        "path": "/legacy/",
        "path_info": "/",
        "self_url": "/legacy/",
    }


def test_django_mount_answers_on_hosts_without_a_tenant(
    example: ModuleType, registry: TenantRegistry
) -> None:
    client = Client(example.make_application(registry))

    assert client.get("/legacy/", headers={"Host": "localhost"}).status_code == 200
    assert client.get("/", headers={"Host": "nobody.localhost"}).status_code == 404
