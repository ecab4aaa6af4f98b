"""Small helpers shared by test modules."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from dispatcher import CachePolicy, Tenant
from dispatcher.tenant import TenantStatus

#: A creation time with microseconds: schema names depend on all of it.
T0 = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)


def make_tenant(slug: str, created_at: dt.datetime = T0) -> Tenant:
    """An active tenant snapshot routed by subdomain, as the registry returns one."""
    return Tenant(
        slug=slug,
        owner_email=f"owner@{slug}.test",
        owner_name=None,
        subdomain=slug,
        path_prefix=None,
        domains=(),
        config={},
        status=TenantStatus.ACTIVE,
        disabled_reason=None,
        version=1,
        created_at=created_at,
        updated_at=created_at,
    )


def with_policy(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with the :class:`CachePolicy` settings among them gathered
    into one ``policy=``, so test helpers can take them as keywords."""
    settings = {name: options.pop(name) for name in _POLICY_FIELDS if name in options}
    if settings:
        options["policy"] = CachePolicy(**settings)
    return options


_POLICY_FIELDS = tuple(field.name for field in fields(CachePolicy))


#: Upper bound for every wait on another thread; only reached when a test fails.
WAIT = 10.0


class Timer:
    """A fake monotonic clock, after cachetools' ``tests/test_ttl.py`` ``Timer``.

    :meth:`watch` returns an event set once that many distinct threads have read
    the clock. The app cache reads it under its lock on every ``load``, before
    it looks for a build in flight, so "N threads read it" means "N threads are
    in ``load`` and the ones that are not building are waiting for the builder".
    """

    def __init__(self) -> None:
        self.time: float = 0
        self._lock = threading.Lock()
        self._watch: tuple[int, set[int], threading.Event] | None = None

    def __call__(self) -> float:
        watch = self._watch
        if watch is not None:
            wanted, readers, reached = watch
            with self._lock:
                readers.add(threading.get_ident())
                if len(readers) >= wanted:
                    reached.set()
        return self.time

    def tick(self, seconds: float = 1) -> None:
        self.time += seconds

    def watch(self, threads: int) -> threading.Event:
        reached = threading.Event()
        self._watch = (threads, set(), reached)
        return reached


class Background:
    """One call in a thread of its own; :meth:`join` returns or raises its result."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self.done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._result = call()
        except BaseException as e:  # re-raised by join()
            self._error = e
        finally:
            self.done.set()

    def wait(self) -> None:
        """Join the thread (bounded), so none outlives its test, even a failed one."""
        self._thread.join(WAIT)

    def join(self) -> Any:
        self.wait()
        assert not self._thread.is_alive(), "background call hung"
        if self._error is not None:
            raise self._error
        return self._result
