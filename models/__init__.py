"""The SQLAlchemy schema of the tenant registry.

Installed as ``dispatcher.models`` (never as a top-level ``models`` package, which
would collide with an application's own); only the registry's modules import it.

The tables (:mod:`dispatcher.models.tables`, SQLAlchemy Core) are what serving
reads; the ORM classes (``Base``, ``Tenant``, ``User``, ``Domain``, ``Change``,
from :mod:`dispatcher.models.schema`) and the complete ``metadata`` (with the
index only DDL needs) are loaded on first access, so importing this package
does not import the ORM.
"""

from typing import TYPE_CHECKING, Any

from dispatcher.models.tables import changes as changes
from dispatcher.models.tables import domains as domains
from dispatcher.models.tables import tenants as tenants
from dispatcher.models.tables import users as users
from dispatcher.tenant import TenantStatus as TenantStatus

if TYPE_CHECKING:
    from dispatcher.models.schema import Base as Base
    from dispatcher.models.schema import Change as Change
    from dispatcher.models.schema import Domain as Domain
    from dispatcher.models.schema import Tenant as Tenant
    from dispatcher.models.schema import User as User
    from dispatcher.models.tables import metadata as metadata

__all__ = [
    "Base",
    "Change",
    "Domain",
    "Tenant",
    "TenantStatus",
    "User",
    "changes",
    "domains",
    "metadata",
    "tenants",
    "users",
]

_LOADED_WITH_THE_ORM = frozenset(
    {"Base", "Change", "Domain", "Tenant", "User", "metadata"}
)


def __getattr__(name: str) -> Any:
    # On first access: serving never needs the ORM nor the DDL-only index.
    if name in _LOADED_WITH_THE_ORM:
        from dispatcher.models import schema

        return getattr(schema, name) if name != "metadata" else schema.Base.metadata
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
