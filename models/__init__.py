"""The SQLAlchemy schema of the tenant registry.

Installed as ``dispatcher.models`` (never as a top-level ``models`` package, which
would collide with an application's own); only the registry's modules import it.
"""

from dispatcher.models.schema import Base as Base
from dispatcher.models.schema import Change as Change
from dispatcher.models.schema import Domain as Domain
from dispatcher.models.schema import Tenant as Tenant
from dispatcher.models.schema import User as User
from dispatcher.tenant import TenantStatus as TenantStatus

__all__ = ["Base", "Change", "Domain", "Tenant", "TenantStatus", "User"]
