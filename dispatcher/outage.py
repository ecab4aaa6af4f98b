"""The registry's outages as the dispatcher sees them: logged once each way.

While the database is down every cold request fails its lookup; logging each
would flood the log. :class:`Outage` logs when an outage starts (the first
failed lookup), counts the requests refused meanwhile, and logs when it ends
(the first lookup that succeeds)::

    outage = Outage(time.monotonic, log)
    try:
        tenant = registry.find_by_host(host)
    except RegistryUnavailable as e:
        outage.failed(e)
    else:
        outage.succeeded()
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Outage"]

# Not about the tenant whose request met the outage (dispatcher.logs would
# tag the line with it): every tenant without a built app is refused.
NO_TENANT = {"tenant": "-"}


class Outage:
    """The registry's outages, logged once when each starts and once when it ends.

    A lookup that succeeds while none is under way reads one attribute and
    takes no lock; failures, and the first success after them, take the lock.

    :param timer: a monotonic clock in seconds.
    :param log: where to log (the dispatcher's logger).
    """

    def __init__(self, timer: Callable[[], float], log: logging.Logger) -> None:
        self._timer = timer
        self._log = log
        self._lock = threading.Lock()
        self._since: float | None = None
        self._refused = 0

    def failed(self, error: Exception) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = self._timer()
            self._refused = 0
        self._log.warning(
            "the registry is unavailable: %s; tenants without a built app get"
            " 503 until it is back",
            error,
            extra=NO_TENANT,
        )

    def refused(self) -> None:
        with self._lock:
            self._refused += 1

    def succeeded(self) -> None:
        if self._since is None:
            return
        with self._lock:
            if self._since is None:
                return  # another thread saw the end first
            down_for = self._timer() - self._since
            refused, self._since = self._refused, None
        self._log.warning(
            "the registry is available again after %.1f s; %d requests got 503"
            " meanwhile",
            down_for,
            refused,
            extra=NO_TENANT,
        )
