"""A small in-process rate limiter for the signup form, per client address.

Usage::

    limiter = RateLimiter(limit=5, window=60.0)
    wait = limiter.hit(client_key(request.remote_addr))
    if wait is not None:
        ...  # 429, Retry-After: wait

At most ``limit`` hits per client in any ``window`` seconds (a sliding
window: the client may hit again once its oldest hit in the window is
``window`` seconds old). Memory is bounded whatever the number of clients:
the ``max_clients`` most recently seen are remembered, the least recently
seen forgotten first (so a client that shows up from more than
``max_clients`` addresses can get past the limit: it needs that many
addresses, and then no per-address limit helps anyway).

Per process: each gunicorn worker keeps its own, so a client may send up to
``limit`` times the number of workers. A limit shared by every process needs
shared state (the database, Redis, or the proxy in front: nginx
``limit_req``).
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable

__all__ = ["RateLimiter", "client_key"]

#: IPv6 addresses are grouped by this prefix length: one host (one customer
#: line) commonly gets a whole /64, so single addresses cost an attacker nothing.
IPV6_PREFIX = 64


def client_key(address: str | None) -> str:
    """The bucket of client ``address``: itself for IPv4, its /64 for IPv6."""
    if not address:
        return ""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address  # a Unix socket's peer, say: one bucket for the lot
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, IPV6_PREFIX), strict=False))
    return str(parsed)


class RateLimiter:
    """At most ``limit`` hits per key in any ``window`` seconds; thread-safe."""

    def __init__(
        self,
        limit: int = 5,
        window: float = 60.0,
        *,
        max_clients: int = 10_000,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, value in (("limit", limit), ("max_clients", max_clients)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not (isinstance(window, int | float) and 0 < window < math.inf):
            raise ValueError(f"window must be a positive number, not {window!r}")
        self.limit = limit
        self.window = float(window)
        self.max_clients = max_clients
        self._timer = timer
        self._lock = threading.Lock()
        # key -> times of its hits within the window, oldest first.
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def hit(self, key: str) -> float | None:
        """Count a hit by ``key``: None if allowed, else seconds until it would be.

        A refused hit is not counted, so waiting the returned time is enough.
        """
        with self._lock:
            now = self._timer()
            hits = self._hits.get(key)
            if hits is None:
                hits = self._hits[key] = deque(maxlen=self.limit)
                if len(self._hits) > self.max_clients:
                    self._hits.popitem(last=False)
            else:
                self._hits.move_to_end(key)
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return hits[0] + self.window - now
            hits.append(now)
            return None

    def __len__(self) -> int:
        """How many clients are remembered."""
        with self._lock:
            return len(self._hits)
