"""Single flight: one caller computes a key's value, the others wait for it.

After cachetools' ``_cached.py`` (its ``condition`` variant): a table of the
keys in progress, guarded by the owner's lock. The first caller for a key
computes with no lock held; later callers wait for its outcome, the value or a
fresh copy of its error, instead of computing again.

Waiting is bounded, so a computation that hangs (a ``create_app`` stuck on a
dead socket) ties up the thread running it and no more:

* any number of callers may wait during its first :data:`BURST_WAIT` seconds:
  a cold burst (dozens of first requests for a tenant whose build takes
  milliseconds) is served by that one build;
* after that, only ``max_waiters`` more, counted in the flight's :class:`Queue`
  (flights that wait for one build share its queue, so the bound is the
  build's, whichever key they came by);
* nobody past the deadline, ``build_timeout`` from the start of the build: one
  deadline for the build, not a fresh timeout per waiter.

The rest get :class:`BuildTimeout` at once. A waiter that finds the build past
its deadline, or reaches the deadline waiting, reports it to the owner
(``overran``), which may answer that key from a backoff from then on::

    flights = Flights(lock, policy, timer)
    with lock:
        flight, ticket = flights.get(key), None
        if flight is None:
            flight = flights.start(key, Flight(Queue(timer(), policy.build_timeout)))
        else:
            ticket = flights.admit(flight, key, timer(), overran=log.warning)
    if ticket is None:
        return flights.lead(key, flight, compute)  # no lock held
    return flights.wait(ticket)  # compute's value, or its error raised afresh
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dispatcher.exceptions import DispatcherError
from dispatcher.policy import CachePolicy

__all__ = [
    "BURST_WAIT",
    "BuildTimeout",
    "Flight",
    "Flights",
    "Queue",
    "Ticket",
    "fresh",
]

#: Seconds from a build's start during which any number of requests may wait
#: for it, each no longer than that. A cold burst (dozens of first requests for
#: a tenant whose build takes milliseconds) is served by that one build; once a
#: build has run longer, it is slow or hung, and only ``max_waiters`` more wait.
BURST_WAIT = 0.25

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
F = TypeVar("F", bound="Flight[Any]")
E = TypeVar("E", bound=BaseException)


class BuildTimeout(DispatcherError):
    """Another request's build of this tenant did not finish in time; 503."""


def fresh(error: E) -> E:
    """A new exception like ``error``, for another caller to raise.

    Raising one object again and again would prepend every caller's frames
    (and their locals: each WSGI environ) to its one traceback.
    """
    try:
        copy = type(error)(*error.args)
    except Exception:
        return error
    copy.__cause__ = error.__cause__
    return copy


class Queue:
    """Who waits for one build, and until when: shared by all its flights."""

    __slots__ = ("started", "deadline", "waiters")

    def __init__(self, started: float, build_timeout: float) -> None:
        self.started = started
        # One deadline for the build, not a fresh timeout per waiter.
        self.deadline = started + build_timeout
        #: Callers waiting past the first BURST_WAIT seconds.
        self.waiters = 0


class Flight(Generic[V]):
    """One computation in progress that other callers wait for, and its outcome."""

    __slots__ = ("done", "value", "error", "queue")

    value: V

    def __init__(self, queue: Queue) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        #: The bound its waiters count against; an owner may point it at the
        #: queue of a build this flight itself waits for.
        self.queue = queue


@dataclass(frozen=True, slots=True)
class Ticket(Generic[V]):
    """A waiter's admission: what it waits for, until when, where it is counted."""

    flight: Flight[V]
    #: What the messages call it (the key the caller asked for).
    name: Hashable
    until: float
    #: The queue it is counted in; None for a burst waiter or a refused one.
    counted: Queue | None
    overran: Callable[[BuildTimeout], None]
    #: Raised at once by :meth:`Flights.wait`: the caller may not wait.
    refused: BaseException | None = None


class Flights(Generic[K, F]):
    """The flights in progress by key, and the bounds of waiting for them.

    :meth:`get`, :meth:`start`, :meth:`admit` and :meth:`values` expect the
    owner's ``lock`` held; :meth:`lead` and :meth:`wait` take it themselves, and
    never hold it while computing or waiting.
    """

    def __init__(
        self, lock: threading.Lock, policy: CachePolicy, timer: Callable[[], float]
    ) -> None:
        self._lock = lock
        self._policy = policy
        self._timer = timer
        self._pending: dict[K, F] = {}

    def get(self, key: K) -> F | None:
        return self._pending.get(key)

    def start(self, key: K, flight: F) -> F:
        """Make ``flight`` the one for ``key``: its caller must :meth:`lead` it."""
        self._pending[key] = flight
        return flight

    def values(self) -> Iterator[F]:
        return iter(self._pending.values())

    def __len__(self) -> int:
        return len(self._pending)

    def lead(self, key: K, flight: Flight[V], compute: Callable[[], V]) -> V:
        """Run ``compute`` and hand its outcome to ``flight``'s waiters."""
        try:
            flight.value = value = compute()
        except BaseException as e:
            flight.error = e
            raise
        finally:
            with self._lock:
                del self._pending[key]
            flight.done.set()
        return value

    def admit(
        self,
        flight: Flight[V],
        name: Hashable,
        now: float,
        overran: Callable[[BuildTimeout], None],
    ) -> Ticket[V]:
        """How long this caller may wait for ``flight``, if at all.

        ``overran`` is told (with the lock held) once the build is found past
        its deadline, now or when the wait reaches it.
        """
        build_timeout = self._policy.build_timeout
        max_waiters = self._policy.max_waiters
        queue = flight.queue
        if now >= queue.deadline:
            error = BuildTimeout(
                f"the app for {name!r} has been building for more than "
                f"{build_timeout:g} s (build_timeout)"
            )
            overran(error)
            # The owner keeps ``error``; this caller raises a copy, so the kept
            # one gathers no traceback.
            return Ticket(flight, name, now, None, overran, fresh(error))
        if queue.waiters < max_waiters:
            queue.waiters += 1
            return Ticket(flight, name, queue.deadline, queue, overran)
        burst_ends = queue.started + BURST_WAIT
        if now < burst_ends:
            return Ticket(flight, name, min(burst_ends, queue.deadline), None, overran)
        refused = BuildTimeout(
            f"{queue.waiters} requests already wait for the app for {name!r} "
            f"(max_waiters={max_waiters})"
        )
        return Ticket(flight, name, now, None, overran, refused)

    def wait(self, ticket: Ticket[V]) -> V:
        """The admitted flight's value, or its error raised afresh.

        Raises :class:`BuildTimeout` if the ticket was refused or the flight is
        not done in time.
        """
        if ticket.refused is not None:
            raise ticket.refused
        flight = ticket.flight
        try:
            done = flight.done.wait(ticket.until - self._timer())
        finally:
            if ticket.counted is not None:
                with self._lock:
                    ticket.counted.waiters -= 1
        if not done:
            raise self._timed_out(ticket)
        if flight.error is not None:
            raise fresh(flight.error)
        return flight.value

    def _timed_out(self, ticket: Ticket[Any]) -> BaseException:
        if ticket.until < ticket.flight.queue.deadline:
            return BuildTimeout(
                f"the app for {ticket.name!r} was not built within "
                f"{BURST_WAIT:g} s and {self._policy.max_waiters} requests "
                "already wait for it (max_waiters)"
            )
        error = BuildTimeout(
            f"the app for {ticket.name!r} was not built within "
            f"{self._policy.build_timeout:g} s"
        )
        with self._lock:
            ticket.overran(error)
        return fresh(error)
