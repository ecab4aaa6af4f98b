"""Errors raised by the dispatcher and its registry.

The tree, so callers can catch as narrowly or as widely as they need::

    DispatcherError
    ├── InvalidName (also ValueError)    a slug, label, host or e-mail breaks a rule
    ├── InvalidConfig (also ValueError)  a tenant config that is not a JSON object
    ├── InvalidRequest (also ValueError) a request names its tenant malformedly
    │   └── InvalidHost                  its Host header is malformed
    ├── TenantDataError                  a tenant's schema or file clashes or is refused
    ├── TenantDisabledError              a script or job asked for a disabled tenant
    └── RegistryError
        ├── TenantNotFound (also LookupError)
        ├── Conflict
        │   ├── TenantExists             the slug is taken
        │   ├── DomainTaken              a subdomain, path prefix or host is taken
        │   ├── OwnerExists              the owner's account exists, and may not
        │   │                            be attached to without proof of control
        │   └── TooManyDomains           a tenant would exceed the domain limit
        ├── SchemaMissing                the database has not been migrated
        └── RegistryUnavailable          the database cannot be reached

Every message names the offending value and the rule it broke.
"""

from __future__ import annotations


class DispatcherError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidName(DispatcherError, ValueError):
    """A slug, subdomain, path prefix, host name or e-mail address breaks a rule."""


class InvalidConfig(DispatcherError, ValueError):
    """A tenant config is not a JSON object with string keys."""


class InvalidRequest(DispatcherError, ValueError):
    """A request names its tenant in a malformed way; answered with 400."""


class InvalidHost(InvalidRequest):
    """A request's Host header is malformed; answered with 400."""


class RegistryError(DispatcherError):
    """The tenant registry could not do what was asked."""


class TenantNotFound(RegistryError, LookupError):
    """No tenant has the given slug."""


class Conflict(RegistryError):
    """A write would break a uniqueness rule or a limit; nothing was written."""


class TenantExists(Conflict):
    """Another tenant already has this slug."""


class DomainTaken(Conflict):
    """Another tenant already routes this subdomain, path prefix or host name."""


class OwnerExists(Conflict):
    """An account with this owner e-mail exists, and the caller (a signup) may
    not attach a new tenant to it without proof that it controls the address."""


class TooManyDomains(Conflict):
    """A tenant would have more custom domains than the registry allows."""


class SchemaMissing(RegistryError):
    """The database has no tenant tables yet; run the migrations."""


class RegistryUnavailable(RegistryError):
    """The database could not be reached; the caller may retry later."""


class TenantDisabledError(DispatcherError):
    """Code outside a request (a script, a command, a job) asked for a disabled
    tenant's app; nothing ran in it."""


class TenantDataError(DispatcherError):
    """A tenant's data (schema or file) could not be created or archived;
    nothing was left half-made."""
