"""A tenant-aware WSGI dispatcher for Flask: one deployment, one app per customer.

The public names are imported on first use (PEP 562), so what needs only a
few of them (``tenantctl`` working on the registry, a script) does not load
Flask, werkzeug and the serving machinery.
"""

# Underscored: whatever the package holds without one is a public name.
import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from dispatcher.answers import TenantDisabled as TenantDisabled
    from dispatcher.answers import TenantInMaintenance as TenantInMaintenance
    from dispatcher.cache import BuildFailed as BuildFailed
    from dispatcher.cache import BuildTimeout as BuildTimeout
    from dispatcher.cache import CacheStats as CacheStats
    from dispatcher.cache import default_teardown as default_teardown
    from dispatcher.changes import TenantChange as TenantChange
    from dispatcher.context import ENVIRON_KEY as ENVIRON_KEY
    from dispatcher.context import current_tenant as current_tenant
    from dispatcher.context import tenant_from_environ as tenant_from_environ
    from dispatcher.context import tenant_url as tenant_url
    from dispatcher.exceptions import Conflict as Conflict
    from dispatcher.exceptions import DispatcherError as DispatcherError
    from dispatcher.exceptions import DomainTaken as DomainTaken
    from dispatcher.exceptions import InvalidConfig as InvalidConfig
    from dispatcher.exceptions import InvalidHost as InvalidHost
    from dispatcher.exceptions import InvalidName as InvalidName
    from dispatcher.exceptions import OwnerExists as OwnerExists
    from dispatcher.exceptions import RegistryError as RegistryError
    from dispatcher.exceptions import RegistryUnavailable as RegistryUnavailable
    from dispatcher.exceptions import SchemaMissing as SchemaMissing
    from dispatcher.exceptions import TenantDisabledError as TenantDisabledError
    from dispatcher.exceptions import TenantExists as TenantExists
    from dispatcher.exceptions import TenantNotFound as TenantNotFound
    from dispatcher.exceptions import TooManyDomains as TooManyDomains
    from dispatcher.health import HealthApp as HealthApp
    from dispatcher.logs import TenantLogFilter as TenantLogFilter
    from dispatcher.middleware import TenantDispatcher as TenantDispatcher
    from dispatcher.policy import CachePolicy as CachePolicy
    from dispatcher.provisioning import Provisioner as Provisioner
    from dispatcher.provisioning import ProvisioningFailed as ProvisioningFailed
    from dispatcher.registry import ImportResult as ImportResult
    from dispatcher.registry import ImportStatus as ImportStatus
    from dispatcher.registry import TenantRegistry as TenantRegistry
    from dispatcher.routes import HeaderResolver as HeaderResolver
    from dispatcher.routes import HostResolver as HostResolver
    from dispatcher.routes import PathResolver as PathResolver
    from dispatcher.routes import standard_resolvers as standard_resolvers
    from dispatcher.sessions import SharedSessionInterface as SharedSessionInterface
    from dispatcher.sessions import TenantSessionInterface as TenantSessionInterface
    from dispatcher.sessions import init_shared_sessions as init_shared_sessions
    from dispatcher.sessions import init_tenant_sessions as init_tenant_sessions
    from dispatcher.tenant import NewTenant as NewTenant
    from dispatcher.tenant import Tenant as Tenant
    from dispatcher.tenant import TenantStatus as TenantStatus

#: Where each public name lives.
_HOMES = {
    "BuildFailed": "dispatcher.cache",
    "BuildTimeout": "dispatcher.cache",
    "CachePolicy": "dispatcher.policy",
    "CacheStats": "dispatcher.cache",
    "Conflict": "dispatcher.exceptions",
    "DispatcherError": "dispatcher.exceptions",
    "DomainTaken": "dispatcher.exceptions",
    "ENVIRON_KEY": "dispatcher.context",
    "HeaderResolver": "dispatcher.routes",
    "HealthApp": "dispatcher.health",
    "HostResolver": "dispatcher.routes",
    "ImportResult": "dispatcher.registry",
    "ImportStatus": "dispatcher.registry",
    "InvalidConfig": "dispatcher.exceptions",
    "InvalidHost": "dispatcher.exceptions",
    "InvalidName": "dispatcher.exceptions",
    "NewTenant": "dispatcher.tenant",
    "OwnerExists": "dispatcher.exceptions",
    "PathResolver": "dispatcher.routes",
    "Provisioner": "dispatcher.provisioning",
    "ProvisioningFailed": "dispatcher.provisioning",
    "RegistryError": "dispatcher.exceptions",
    "RegistryUnavailable": "dispatcher.exceptions",
    "SchemaMissing": "dispatcher.exceptions",
    "SharedSessionInterface": "dispatcher.sessions",
    "Tenant": "dispatcher.tenant",
    "TenantChange": "dispatcher.changes",
    "TenantDisabled": "dispatcher.answers",
    "TenantDisabledError": "dispatcher.exceptions",
    "TenantDispatcher": "dispatcher.middleware",
    "TenantExists": "dispatcher.exceptions",
    "TenantInMaintenance": "dispatcher.answers",
    "TenantLogFilter": "dispatcher.logs",
    "TenantNotFound": "dispatcher.exceptions",
    "TenantRegistry": "dispatcher.registry",
    "TenantSessionInterface": "dispatcher.sessions",
    "TenantStatus": "dispatcher.tenant",
    "TooManyDomains": "dispatcher.exceptions",
    "current_tenant": "dispatcher.context",
    "default_teardown": "dispatcher.cache",
    "init_shared_sessions": "dispatcher.sessions",
    "init_tenant_sessions": "dispatcher.sessions",
    "standard_resolvers": "dispatcher.routes",
    "tenant_from_environ": "dispatcher.context",
    "tenant_url": "dispatcher.context",
}


def __getattr__(name: str) -> _Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'dispatcher' has no attribute {name!r}")
    value = getattr(_importlib.import_module(home), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "BuildFailed",
    "BuildTimeout",
    "CachePolicy",
    "CacheStats",
    "Conflict",
    "DispatcherError",
    "DomainTaken",
    "ENVIRON_KEY",
    "HeaderResolver",
    "HealthApp",
    "HostResolver",
    "ImportResult",
    "ImportStatus",
    "InvalidConfig",
    "InvalidHost",
    "InvalidName",
    "NewTenant",
    "OwnerExists",
    "PathResolver",
    "Provisioner",
    "ProvisioningFailed",
    "RegistryError",
    "RegistryUnavailable",
    "SchemaMissing",
    "SharedSessionInterface",
    "Tenant",
    "TenantChange",
    "TenantDisabled",
    "TenantDisabledError",
    "TenantDispatcher",
    "TenantExists",
    "TenantInMaintenance",
    "TenantLogFilter",
    "TenantNotFound",
    "TenantRegistry",
    "TenantSessionInterface",
    "TenantStatus",
    "TooManyDomains",
    "current_tenant",
    "default_teardown",
    "init_shared_sessions",
    "init_tenant_sessions",
    "standard_resolvers",
    "tenant_from_environ",
    "tenant_url",
]
