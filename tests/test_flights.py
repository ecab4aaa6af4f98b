"""The single-flight helper on its own: one caller computes, the others wait.

Time is a fake clock, read by admission; the one real wait is a waiter that
reaches a 0.05 s deadline. Threads are joined with a bound.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from helpers import Background, Timer

from dispatcher.flights import BURST_WAIT, BuildTimeout, Flight, Flights, Queue, fresh
from dispatcher.policy import CachePolicy


class Overruns:
    """The ``overran`` of one admission: records each call and whether the lock
    was held then."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock = lock
        self.calls: list[tuple[BuildTimeout, bool]] = []

    def __call__(self, error: BuildTimeout) -> None:
        self.calls.append((error, self.lock.locked()))


class Setup:
    def __init__(self, **policy: Any) -> None:
        self.lock = threading.Lock()
        self.timer = Timer()
        self.policy = CachePolicy(**policy)
        self.flights: Flights[str, Flight[Any]] = Flights(
            self.lock, self.policy, self.timer
        )
        self.overruns = Overruns(self.lock)

    def start(self, key: str = "k") -> Flight[Any]:
        queue = Queue(self.timer(), self.policy.build_timeout)
        with self.lock:
            return self.flights.start(key, Flight(queue))

    def admit(self, flight: Flight[Any], name: str = "k") -> Any:
        with self.lock:
            return self.flights.admit(flight, name, self.timer(), self.overruns)


def test_one_caller_computes_and_the_others_get_its_value() -> None:
    setup = Setup(max_waiters=8)
    flight = setup.start()
    tickets = [setup.admit(flight) for _ in range(8)]
    waiters = [Background(lambda t=t: setup.flights.wait(t)) for t in tickets]
    computed: list[bool] = []

    def compute() -> str:
        # No lock is held while computing: the owner's other callers go on.
        assert setup.lock.acquire(blocking=False)
        setup.lock.release()
        computed.append(True)
        return "value"

    assert setup.flights.lead("k", flight, compute) == "value"

    assert [waiter.join() for waiter in waiters] == ["value"] * 8
    assert computed == [True]
    assert setup.flights.get("k") is None
    assert len(setup.flights) == 0
    assert flight.queue.waiters == 0


def test_waiters_get_a_fresh_copy_of_the_error_and_the_caller_the_original() -> None:
    setup = Setup()
    flight = setup.start()
    ticket = setup.admit(flight)
    waiter = Background(lambda: setup.flights.wait(ticket))
    cause = OSError("socket closed")
    error = RuntimeError("create_app failed")

    def compute() -> None:
        raise error from cause

    with pytest.raises(RuntimeError) as raised:
        setup.flights.lead("k", flight, compute)
    assert raised.value is error

    with pytest.raises(RuntimeError) as copied:
        waiter.join()
    assert copied.value is not error
    assert copied.value.args == error.args
    assert copied.value.__cause__ is cause
    assert setup.flights.get("k") is None


def test_fresh_keeps_an_error_it_cannot_copy() -> None:
    class NeedsTwo(Exception):
        def __init__(self, a: str, b: str) -> None:
            super().__init__(f"{a} {b}")

    error = NeedsTwo("a", "b")
    assert fresh(error) is error


def test_a_cold_burst_waits_whatever_max_waiters() -> None:
    setup = Setup(max_waiters=0)
    flight = setup.start()
    setup.timer.time = BURST_WAIT / 2

    ticket = setup.admit(flight)

    assert ticket.refused is None
    assert ticket.counted is None  # not counted against max_waiters
    assert ticket.until == BURST_WAIT


def test_past_the_burst_only_max_waiters_wait() -> None:
    setup = Setup(max_waiters=2)
    flight = setup.start()
    setup.timer.time = BURST_WAIT

    admitted = [setup.admit(flight) for _ in range(2)]
    refused = setup.admit(flight)

    assert [t.counted for t in admitted] == [flight.queue] * 2
    assert flight.queue.waiters == 2
    with pytest.raises(BuildTimeout, match=r"2 requests already wait .*max_waiters=2"):
        setup.flights.wait(refused)
    assert setup.overruns.calls == []
    # A waiter that is done frees its place.
    setup.flights.lead("k", flight, lambda: "value")
    assert setup.flights.wait(admitted[0]) == "value"
    assert flight.queue.waiters == 1


def test_flights_that_share_a_queue_share_its_bound() -> None:
    setup = Setup(max_waiters=1)
    build = setup.start("build")
    lookup = setup.start("lookup")
    lookup.queue = build.queue  # the lookup waits for that build
    setup.timer.time = BURST_WAIT

    assert setup.admit(build).counted is build.queue
    with pytest.raises(BuildTimeout, match="already wait"):
        setup.flights.wait(setup.admit(lookup))


def test_a_build_past_its_deadline_turns_callers_away_and_says_so_once() -> None:
    setup = Setup(build_timeout=30)
    flight = setup.start()
    setup.timer.time = 30

    ticket = setup.admit(flight, "acme.example.test")

    [(overran, locked)] = setup.overruns.calls
    assert locked  # the owner may update its state
    assert "'acme.example.test' has been building for more than 30 s" in str(overran)
    with pytest.raises(BuildTimeout) as raised:
        setup.flights.wait(ticket)
    # The owner keeps its error; the caller raises a copy of it.
    assert raised.value is not overran
    assert str(raised.value) == str(overran)


def test_a_waiter_that_reaches_the_deadline_says_the_build_overran() -> None:
    setup = Setup(build_timeout=0.05)
    flight = setup.start()
    ticket = setup.admit(flight, "acme.example.test")

    with pytest.raises(BuildTimeout, match="not built within 0.05 s"):
        setup.flights.wait(ticket)  # 0.05 s of real time

    [(overran, locked)] = setup.overruns.calls
    assert locked
    assert "'acme.example.test'" in str(overran)
    assert flight.queue.waiters == 0


def test_a_burst_waiter_that_is_not_served_in_time_is_not_an_overrun() -> None:
    setup = Setup(max_waiters=0, build_timeout=30)
    flight = setup.start()
    setup.timer.time = BURST_WAIT - 0.05
    ticket = setup.admit(flight)

    with pytest.raises(BuildTimeout, match=r"within 0.25 s .*\(max_waiters\)"):
        setup.flights.wait(ticket)  # 0.05 s of real time

    assert setup.overruns.calls == []
