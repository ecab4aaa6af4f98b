"""The change feed: what each registry write changed, and how processes hear of it.

Every registry write appends a :class:`TenantChange` to the feed in its own
transaction. A change says which tenant changed, how (an :class:`Operation`),
and which names (subdomain, path prefix, custom domains) it made route to the
tenant or stop routing to it, so a process forgets exactly those routes and
"unknown name" answers and nothing else.

How processes hear of changes is pluggable, the way httpx takes a
``transport=``: a :class:`ChangeSource` (the registry) is polled by a
:class:`~dispatcher.follower.ChangeFollower`; a :class:`Notifier`, if there is
one, is told of each write at commit and wakes followers at once. PostgreSQL
has one (:class:`dispatcher.notify.PostgresNotifier`); SQLite has none, and
followers poll.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from dispatcher.tenant import NewTenant, Tenant

__all__ = [
    "NO_NAMES",
    "ChangeSource",
    "Listener",
    "Names",
    "Notifier",
    "Operation",
    "TenantChange",
]


class Operation(StrEnum):
    """What a change did to its tenant."""

    CREATED = "created"
    CONFIG = "config"
    DISABLED = "disabled"
    ENABLED = "enabled"
    DELETED = "deleted"
    SUBDOMAIN = "subdomain"
    PATH_PREFIX = "path_prefix"
    DOMAIN_ADDED = "domain_added"
    DOMAIN_REMOVED = "domain_removed"
    #: The tenant's data moved to another server: its apps, whose engines
    #: point at the old one, must go. Its names route as before.
    DATA_SERVER = "data_server"
    #: The tenant's data moved to another tenant-migration revision: its
    #: apps, built against the old schema, must go.
    DATA_REVISION = "data_revision"
    #: Maintenance mode turned on or off (or its message changed).
    MAINTENANCE = "maintenance"
    #: Not a write: a follower that starts (or resumes) without knowing what
    #: happened before publishes it, and anything may have changed.
    RESYNC = "resync"


@dataclass(frozen=True, slots=True)
class Names:
    """Names that route to a tenant, all normalised."""

    subdomain: str | None = None
    path_prefix: str | None = None
    domains: tuple[str, ...] = ()

    @classmethod
    def of(cls, tenant: Tenant | NewTenant) -> Names:
        """Every name that routes to ``tenant``."""
        return cls(tenant.subdomain, tenant.path_prefix, tuple(tenant.domains))

    def __bool__(self) -> bool:
        return bool(self.subdomain or self.path_prefix or self.domains)

    def to_json(self) -> dict[str, Any]:
        return {
            "subdomain": self.subdomain,
            "path_prefix": self.path_prefix,
            "domains": list(self.domains),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Names:
        return cls(
            subdomain=value.get("subdomain"),
            path_prefix=value.get("path_prefix"),
            domains=tuple(value.get("domains") or ()),
        )


#: No names at all.
NO_NAMES = Names()


@dataclass(frozen=True, slots=True)
class TenantChange:
    """One entry of the registry's change feed."""

    generation: int
    slug: str
    operation: Operation
    #: The names the change made route to the tenant; None when not recorded
    #: (a change written before the feed kept names): any name may have.
    added: Names | None = None
    #: The names the change stopped routing to the tenant.
    removed: Names = NO_NAMES
    #: When the write was recorded (UTC, the writer's clock); None for a
    #: ``RESYNC`` no write made. A follower's lag is measured from it; not
    #: part of what the change is (equal changes may be read at other times).
    changed_at: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Operation("bogus") raises ValueError naming the value.
        object.__setattr__(self, "operation", Operation(self.operation))

    @property
    def names_known(self) -> bool:
        return self.added is not None

    def names_to_json(self) -> dict[str, Any]:
        """The feed's ``names`` column for this change.

        The added names stay at the top level, where the release before
        removed names were kept reads them: during a rolling deploy its
        processes still forget exactly what a new tenant or domain affects.
        """
        added = NO_NAMES if self.added is None else self.added
        return {**added.to_json(), "removed": self.removed.to_json()}

    @classmethod
    def from_row(
        cls,
        generation: int,
        slug: str,
        operation: str,
        names: Any,
        changed_at: datetime | None = None,
    ) -> TenantChange:
        """A change read back from the feed, whatever version wrote its names.

        An operation this version does not know (a newer version's) reads as
        :attr:`Operation.RESYNC`: what it changed is unknown, so anything may
        have; raising instead would stop every follower at that row for good.
        """
        try:
            op = Operation(operation)
        except ValueError:
            return cls(generation, slug, Operation.RESYNC, changed_at=changed_at)
        if not isinstance(names, Mapping):
            # Older than the column: the names are unknown.
            return cls(generation, slug, op, changed_at=changed_at)
        # Rows written before removed names were kept have no "removed".
        removed = Names.from_json(names.get("removed") or {})
        return cls(generation, slug, op, Names.from_json(names), removed, changed_at)


class ChangeSource(Protocol):
    """Where a follower reads the feed: the registry."""

    def changes_since(
        self, generation: int, *, limit: int = 1000
    ) -> list[TenantChange]: ...

    def latest_generation(self) -> int: ...


class Listener(Protocol):
    """A connection that waits for a notifier's wake-ups."""

    def wait(self, timeout: float) -> bool:
        """Whether a wake-up arrived within ``timeout`` seconds."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Listener: ...

    def __exit__(self, *exc_info: object) -> None: ...


class Notifier(Protocol):
    """Tells every process at once that the feed has grown.

    ``notify`` runs inside the write's transaction, so the wake-up is sent if
    and only if the write commits; ``listen`` opens a :class:`Listener`.
    """

    def notify(self, connection: Connection, generation: int) -> None: ...

    def listen(self) -> Listener: ...
