"""Immutable snapshots the registry hands out instead of live ORM rows.

Plain values only: importing this module imports no ORM, so tenant apps and
:mod:`dispatcher.context` can use it without the registry's machinery.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Required, TypedDict

__all__ = [
    "MAINTENANCE_RETRY_AFTER",
    "Maintenance",
    "NewTenant",
    "Tenant",
    "TenantFields",
    "TenantStatus",
    "aware",
    "freeze",
    "thaw",
    "utcnow",
]


class TenantStatus(StrEnum):
    """Whether a tenant is served."""

    ACTIVE = "active"
    DISABLED = "disabled"


def utcnow() -> dt.datetime:
    """The current time in UTC, as every timestamp of the registry is stored."""
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime) -> dt.datetime:
    """``value`` marked as UTC if it is naive (SQLite hands back naive ones)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def freeze(value: Any) -> Any:
    """Return a read-only deep copy of a JSON value: dicts become mapping proxies."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """Undo :func:`freeze`: plain dicts and lists, ready for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


#: The ``Retry-After`` seconds of a maintenance window unless told otherwise.
MAINTENANCE_RETRY_AFTER = 60


@dataclass(frozen=True, slots=True)
class Maintenance:
    """A tenant's maintenance mode: its visitors get 503 with ``Retry-After``.

    ``key`` signs the bypass cookies of this maintenance window (see
    :mod:`dispatcher.maintenance`): a new window has a new key, so a cookie
    of an earlier one is worthless. Never shown: not in ``repr`` nor
    :meth:`to_dict`.

    ``opened_by`` names the tool that opened the window (a fleet upgrade's is
    :data:`~dispatcher.maintenance.DATA_UPGRADE`), so a later run of it knows
    the window for its own and ends it; None: an operator, whose window no
    tool ends. Stored, never shown to visitors.
    """

    since: dt.datetime
    retry_after: int
    message: str | None
    key: str = field(repr=False)
    opened_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The public part, JSON-ready: no key."""
        return {
            "since": self.since.isoformat(),
            "retry_after": self.retry_after,
            "message": self.message,
        }

    def to_json(self) -> dict[str, Any]:
        """The stored form (the ``maintenance`` column), key included; no
        ``opened_by`` for an operator's, as in rows written before it existed."""
        stored = {**self.to_dict(), "key": self.key}
        if self.opened_by is not None:
            stored["opened_by"] = self.opened_by
        return stored

    @classmethod
    def from_json(cls, value: Any) -> Maintenance | None:
        """The stored form read back; None for NULL or anything malformed
        (a tenant is served rather than stuck behind an unreadable record)."""
        if not isinstance(value, Mapping):
            return None
        try:
            since = aware(dt.datetime.fromisoformat(value["since"]))
            retry_after = int(value["retry_after"])
            key = str(value["key"])
        except (KeyError, TypeError, ValueError):
            return None
        message = value.get("message")
        text = message if isinstance(message, str) else None
        opened_by = value.get("opened_by")
        tool = opened_by if isinstance(opened_by, str) else None
        return cls(since, retry_after, text, key, tool)


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant as the registry saw it at one version; safe to share across threads."""

    slug: str
    owner_email: str
    owner_name: str | None
    subdomain: str | None
    path_prefix: str | None
    #: Custom host names, the primary one first.
    domains: tuple[str, ...]
    config: Mapping[str, Any]
    status: TenantStatus
    disabled_reason: str | None
    #: Grows with every change of the tenant or its domains, never repeats.
    version: int
    created_at: dt.datetime
    updated_at: dt.datetime
    #: The named server that holds the tenant's data; None: none recorded.
    #: Last, with a default, so snapshots built by keyword before it existed
    #: (tenant apps' own tests) still build.
    data_server: str | None = None
    #: None, or the maintenance mode the tenant is in (served 503 meanwhile).
    maintenance: Maintenance | None = None

    @property
    def is_active(self) -> bool:
        return self.status is TenantStatus.ACTIVE

    @property
    def primary_domain(self) -> str | None:
        return self.domains[0] if self.domains else None

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as plain JSON-ready values."""
        return {
            "slug": self.slug,
            "owner_email": self.owner_email,
            "owner_name": self.owner_name,
            "subdomain": self.subdomain,
            "path_prefix": self.path_prefix,
            "domains": list(self.domains),
            "config": thaw(self.config),
            "status": self.status.value,
            "disabled_reason": self.disabled_reason,
            "data_server": self.data_server,
            "maintenance": (
                None if self.maintenance is None else self.maintenance.to_dict()
            ),
            "version": self.version,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class NewTenant:
    """A validated, normalised request to create a tenant (see ``new_tenant``)."""

    slug: str
    owner_email: str
    owner_name: str | None = None
    subdomain: str | None = None
    path_prefix: str | None = None
    #: Custom host names, the primary one first.
    domains: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    #: The named server to hold the tenant's data; None: left to placement.
    data_server: str | None = None


class TenantFields(TypedDict, total=False):
    """What a caller says about a tenant to create, besides its slug.

    The keywords of ``TenantRegistry.new_tenant`` and ``create_tenant``,
    ``Provisioner.create`` and ``tenantctl add``, written once::

        def create(self, slug: str, **fields: Unpack[TenantFields]) -> Tenant: ...
    """

    owner_email: Required[str]
    owner_name: str | None
    subdomain: str | None
    path_prefix: str | None
    #: Custom host names, the primary one first.
    domains: Iterable[str]
    #: A JSON object.
    config: Mapping[str, Any] | None
    #: The named server to hold the tenant's data (see ``check_data_server``).
    data_server: str | None
