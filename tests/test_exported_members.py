from __future__ import annotations

import types

import dispatcher

REQUIRED = {
    "DomainTaken",
    "ENVIRON_KEY",
    "HeaderResolver",
    "HealthApp",
    "InvalidName",
    "OwnerExists",
    "Tenant",
    "TenantDisabled",
    "TenantDisabledError",
    "TenantDispatcher",
    "TenantExists",
    "TenantInMaintenance",
    "TenantNotFound",
    "TenantRegistry",
    "TenantSessionInterface",
    "TooManyDomains",
    "current_tenant",
    "init_tenant_sessions",
    "standard_resolvers",
}


def test_all_is_sorted() -> None:
    assert dispatcher.__all__ == sorted(dispatcher.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(dispatcher.__all__) == len(set(dispatcher.__all__))


def test_all_names_exist() -> None:
    missing = [name for name in dispatcher.__all__ if not hasattr(dispatcher, name)]

    assert missing == []


def test_all_names_are_public() -> None:
    assert [name for name in dispatcher.__all__ if name.startswith("_")] == []


def test_public_names_are_in_all() -> None:
    # Like httpx: whatever the package imports for its users is listed in __all__.
    # Submodules (dispatcher.registry, ...) become attributes on import; skip them.
    public = {
        name
        for name, value in vars(dispatcher).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }

    assert sorted(public - set(dispatcher.__all__)) == []


def test_star_import_gives_all() -> None:
    namespace: dict[str, object] = {}
    exec("from dispatcher import *", namespace)
    namespace.pop("__builtins__")

    assert sorted(namespace) == sorted(dispatcher.__all__)


def test_required_names_exported() -> None:
    assert REQUIRED <= set(dispatcher.__all__)


def test_every_name_in_all_has_a_home() -> None:
    # Imported on first use: a name in __all__ must say where it lives.
    assert sorted(dispatcher._HOMES) == sorted(dispatcher.__all__)


def test_importing_the_package_loads_no_flask() -> None:
    import subprocess
    import sys

    probe = "import sys, dispatcher; print('flask' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )

    assert done.stdout.strip() == "False"
