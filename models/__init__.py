"""The SQLAlchemy schema of the tenant registry. Imports nothing from ``dispatcher``."""

from models.schema import Base as Base
from models.schema import Change as Change
from models.schema import Domain as Domain
from models.schema import Tenant as Tenant
from models.schema import TenantStatus as TenantStatus
from models.schema import User as User

__all__ = ["Base", "Change", "Domain", "Tenant", "TenantStatus", "User"]
