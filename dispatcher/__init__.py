"""A tenant-aware WSGI dispatcher for Flask: one deployment, one app per customer."""

from dispatcher.exceptions import Conflict as Conflict
from dispatcher.exceptions import DispatcherError as DispatcherError
from dispatcher.exceptions import DomainTaken as DomainTaken
from dispatcher.exceptions import InvalidConfig as InvalidConfig
from dispatcher.exceptions import InvalidHost as InvalidHost
from dispatcher.exceptions import InvalidName as InvalidName
from dispatcher.exceptions import RegistryError as RegistryError
from dispatcher.exceptions import RegistryUnavailable as RegistryUnavailable
from dispatcher.exceptions import SchemaMissing as SchemaMissing
from dispatcher.exceptions import TenantExists as TenantExists
from dispatcher.exceptions import TenantNotFound as TenantNotFound
from dispatcher.registry import ImportResult as ImportResult
from dispatcher.registry import ImportStatus as ImportStatus
from dispatcher.registry import TenantRegistry as TenantRegistry
from dispatcher.tenant import NewTenant as NewTenant
from dispatcher.tenant import Tenant as Tenant
from dispatcher.tenant import TenantChange as TenantChange
from dispatcher.tenant import TenantStatus as TenantStatus

__all__ = [
    "Conflict",
    "DispatcherError",
    "DomainTaken",
    "ImportResult",
    "ImportStatus",
    "InvalidConfig",
    "InvalidHost",
    "InvalidName",
    "NewTenant",
    "RegistryError",
    "RegistryUnavailable",
    "SchemaMissing",
    "Tenant",
    "TenantChange",
    "TenantExists",
    "TenantNotFound",
    "TenantRegistry",
    "TenantStatus",
]
