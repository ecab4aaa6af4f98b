"""How long and how many built apps are kept: one value object, checked once.

Like httpx's ``Timeout`` and ``Limits``: the settings are written here once,
with their defaults and their rules, and the same object is handed to the
dispatcher, its cache and the ``DISPATCHER_*`` environment parsing::

    policy = CachePolicy(max_apps=5000, app_ttl=600)
    TenantDispatcher(registry, create_app, policy=policy)

    CachePolicy.from_environ(os.environ)  # DISPATCHER_MAX_APPS=5000 ...
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["CachePolicy"]

#: Each setting's environment variable is this prefix plus its upper-cased name.
ENVIRON_PREFIX = "DISPATCHER_"


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """The app cache's bounds, timeouts and freshness, checked on creation.

    :param max_apps: most tenant apps kept built (least recently used out first).
    :param max_tenants: most tenant records kept: of tenants served by a
        shared app, and of tenants whose own app was dropped for room (a
        record is about 2 KiB; an app hundreds). Bounded, since anyone who
        can sign up and send requests can make records.
    :param app_ttl: seconds an app is kept after its build.
    :param negative_size: most unknown names remembered as unknown.
    :param negative_ttl: seconds an unknown name is remembered as unknown.
    :param build_timeout: seconds a build may take, counted from its start;
        requests still waiting then get 503, and so do the tenant's requests
        for ``failure_backoff`` after that.
    :param max_waiters: most requests that wait for one tenant's build once it
        has run for a quarter of a second (a cold burst waits in full); the
        rest get 503 at once. Keep it below a worker's threads.
    :param failure_backoff: seconds before a failed build is tried again.
    :param stale_if_error: seconds past ``app_ttl`` an app may still be served
        while the database is down (None: as long as ``app_ttl``).
    :param poll_interval: follow other processes' registry writes, polling at
        most this often (PostgreSQL also wakes on NOTIFY); None: only this
        registry object's own writes evict.
    """

    max_apps: int = 1000
    max_tenants: int = 10_000
    app_ttl: float = 3600.0
    negative_size: int = 10_000
    negative_ttl: float = 5.0
    build_timeout: float = 30.0
    max_waiters: int = 2
    failure_backoff: float = 5.0
    stale_if_error: float | None = None
    poll_interval: float | None = 1.0

    def __post_init__(self) -> None:
        _check("max_apps", self.max_apps, integer=True, minimum=1)
        _check("max_tenants", self.max_tenants, integer=True, minimum=1)
        _check("negative_size", self.negative_size, integer=True, minimum=1)
        _check("max_waiters", self.max_waiters, integer=True, minimum=0)
        for name in ("app_ttl", "negative_ttl", "failure_backoff"):
            _check(name, getattr(self, name), above=True)
        # Waited for with Event.wait, which refuses infinity.
        _check("build_timeout", self.build_timeout, above=True, finite=True)
        if self.stale_if_error is not None:
            _check("stale_if_error", self.stale_if_error)
        if self.poll_interval is not None:
            _check("poll_interval", self.poll_interval, above=True, finite=True)

    @property
    def stale_window(self) -> float:
        """Seconds past ``app_ttl`` an app may be served while the database is down."""
        return self.app_ttl if self.stale_if_error is None else self.stale_if_error

    def replace(self, **changes: Any) -> CachePolicy:
        """A copy with ``changes`` applied, checked like a new one."""
        return replace(self, **changes)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> CachePolicy:
        """The policy the ``DISPATCHER_<SETTING>`` variables describe.

        Unset or empty variables keep the default. ``DISPATCHER_POLL_INTERVAL=0``
        and ``DISPATCHER_STALE_IF_ERROR`` unset mean None. A bad value raises
        ``ValueError`` naming the variable.
        """
        values: dict[str, Any] = {}
        for field in fields(cls):
            name = ENVIRON_PREFIX + field.name.upper()
            text = environ.get(name, "").strip()
            if not text:
                continue
            kind = int if field.name in _INTEGERS else float
            try:
                number = kind(text)
            except ValueError:
                raise ValueError(
                    f"{name}={text!r} must be {_KIND_NAMES[kind]}"
                ) from None
            if field.name == "poll_interval" and number == 0:
                values[field.name] = None
            else:
                values[field.name] = number
        try:
            return cls(**values)
        except (TypeError, ValueError) as e:
            setting = str(e).split(" ", 1)[0]
            raise ValueError(f"{ENVIRON_PREFIX}{setting.upper()}: {e}") from e


_INTEGERS = frozenset({"max_apps", "max_tenants", "negative_size", "max_waiters"})
_KIND_NAMES = {int: "a whole number", float: "a number"}


def _check(
    name: str,
    value: Any,
    *,
    integer: bool = False,
    minimum: float = 0,
    above: bool = False,
    finite: bool = False,
) -> None:
    """Raise TypeError or ValueError naming ``name`` if ``value`` breaks its rule."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, not {value!r}")
    if math.isnan(value) or value < minimum or (above and value == minimum):
        bound = f"greater than {minimum}" if above else f"at least {minimum}"
        raise ValueError(f"{name} must be {bound}, not {value!r}")
    if finite and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
