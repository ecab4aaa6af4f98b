"""What the dispatcher counts as requests pass, and what it reports as it goes.

Requests are counted by outcome in a plain list of ints: the hit path adds one
to an element, with no lock and no call, and whoever wants the counts
(:meth:`~dispatcher.middleware.TenantDispatcher.outcomes`, the Prometheus
exporter in :mod:`dispatcher.metrics`) reads them when asked. Events off the
hit path (a registry lookup, a build, a change applied) go to an
:class:`Observer` as they happen, with their durations: they are rare next to
hits, and a histogram needs each value.

The outcomes partition the requests a dispatcher answers:

==============  ===============================================================
``hit``         served by a tenant's app (own or shared) already built
``miss``        served by a tenant's app after a lookup or a build
``disabled``    the tenant is disabled: ``disabled_app`` answered
``maintenance`` the tenant is in maintenance (a bypassing browser included)
``unknown``     the request named a tenant that does not exist
``no_tenant``   the request named no tenant (the apex, say): ``default_app``
``bad_host``    a malformed Host: 400
``unavailable`` the registry was unreachable or a build overran: 503
``failed``      the tenant's app failed to build: 500
==============  ===============================================================
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dispatcher.changes import TenantChange

__all__ = ["OUTCOMES", "Observer"]

#: The outcomes, in the order of their indices below.
OUTCOMES = (
    "hit",
    "disabled",
    "maintenance",
    "miss",
    "unknown",
    "no_tenant",
    "bad_host",
    "unavailable",
    "failed",
)
# An entry's app counts a hit on it as HIT, DISABLED or MAINTENANCE.
(
    HIT,
    DISABLED,
    MAINTENANCE,
    MISS,
    UNKNOWN,
    NO_TENANT,
    BAD_HOST,
    UNAVAILABLE,
    FAILED,
) = range(len(OUTCOMES))


class Observer:
    """Hears what happens off the hit path; these do nothing.

    Called in the thread where it happens (a request's, or the change
    follower's): an override must be quick and must not raise.
    """

    def looked_up(self, seconds: float, result: str) -> None:
        """A registry lookup took ``seconds``: ``found``, ``unknown`` or ``error``."""

    def built(self, seconds: float) -> None:
        """A tenant's own app was built by ``create_app`` in ``seconds``."""

    def applied(self, change: TenantChange, lag: float | None) -> None:
        """``change`` was applied, ``lag`` seconds after it was written (None:
        no write made it, a ``RESYNC``)."""


#: The observer of a dispatcher nobody observes.
NO_OBSERVER = Observer()
