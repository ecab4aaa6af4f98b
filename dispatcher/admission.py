"""Which built app leaves when the cache is full: W-TinyLFU over CLOCK queues.

Plain LRU lets a scan, or churn over more tenants than slots, push out the
tenants that matter. W-TinyLFU (as in Caffeine) admits by frequency instead:

* A new app always enters a small **window** (1% of the slots, at least one),
  so an app is never dropped by its own insertion and a burst of new tenants
  still gets served from the cache while it lasts.
* When the cache is full, the window's victim (the **candidate**) competes with
  the main region's victim: it moves into the main region only if a
  :class:`FrequencySketch` has seen it more often; otherwise the candidate
  itself is dropped. A one-hit wonder therefore cannot push out a hot tenant;
  among keys seen once at most, the older goes, as in LRU.
* Both regions are CLOCK queues: a hit only sets ``used`` on the entry, with no
  lock and no call (the dispatcher's hit path); the eviction sweep reads and
  clears the flag, gives the entry a second chance, and counts it in the
  sketch. Misses (insertions) are counted too. So the sketch counts "missed,
  or hit again since the sweep last looked": a frequency in rounds of the
  clock, not in requests, bounded per round whatever the request rate.

The sketch is a count-min sketch of counters capped at 15 (four rows, each
the power of two at least four times the cache's size: 32 bytes per slot at
most, against hundreds of kilobytes per built app); after
ten increments per slot every counter is halved, so yesterday's popular tenant
fades. Keys are hashed with BLAKE2b, not ``hash()``, so a trace replays
identically in every process.

::

    policy = WindowTinyLfu(maxsize)
    policy.add("acme")  # a miss: "acme" enters the window
    slug = policy.victim(take_used)  # cache full: the key to drop, forgotten
    policy.discard("acme")  # removed by the cache itself (expired, evicted)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from hashlib import blake2b
from typing import Protocol

__all__ = [
    "Clock",
    "FrequencySketch",
    "Policy",
    "SecondChance",
    "TakeUsed",
    "WindowTinyLfu",
]

#: Reads and clears an entry's ``used`` flag (hit since the sweep last looked).
TakeUsed = Callable[[str], bool]

#: Counters saturate here (four bits' worth, as in Caffeine).
MAX_COUNT = 15
#: Counters are halved after this many increments per slot of the cache.
SAMPLE_FACTOR = 10
DEPTH = 4
#: Each row has at least this many counters per slot, and at least MIN_WIDTH.
WIDTH_FACTOR = 4
MIN_WIDTH = 64

_HALF = bytes(count >> 1 for count in range(256))


class FrequencySketch:
    """How often each key was seen lately, approximately, in bounded memory.

    ``frequency`` never undercounts what was counted since the last halving
    (count-min), is at most :data:`MAX_COUNT`, and the table never grows:
    ``DEPTH`` rows of the power of two at least ``4 * capacity`` bytes.

    :param capacity: how many keys the cache holds (at least 1).
    """

    __slots__ = ("width", "sample_size", "increments", "_mask", "_table")

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int):
            raise TypeError(f"capacity must be an integer, not {capacity!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, not {capacity!r}")
        # Four counters per key held, so few keys share all their counters.
        self.width = 1 << (max(MIN_WIDTH, WIDTH_FACTOR * capacity) - 1).bit_length()
        self.sample_size = SAMPLE_FACTOR * capacity
        #: Increments since the last halving (itself halved then).
        self.increments = 0
        self._mask = self.width - 1
        # Allocated at the first sighting: a worker that never misses (or a
        # store whose cache never fills) pays nothing for it.
        self._table = bytearray()

    @property
    def nbytes(self) -> int:
        return DEPTH * self.width

    def increment(self, key: str) -> None:
        """Count one sighting of ``key``; halve everything every sample."""
        table = self._table
        if not table:
            table = self._table = bytearray(DEPTH * self.width)
        for index in self._indexes(key):
            if table[index] < MAX_COUNT:
                table[index] += 1
        self.increments += 1
        if self.increments >= self.sample_size:
            self.halve()

    def frequency(self, key: str) -> int:
        """Sightings of ``key`` since the counters were last halved, at most."""
        table = self._table
        if not table:
            return 0
        return min(table[index] for index in self._indexes(key))

    def halve(self) -> None:
        """Age every count: what was popular long ago weighs half as much."""
        self._table = bytearray(self._table.translate(_HALF))
        self.increments //= 2

    def _indexes(self, key: str) -> list[int]:
        hashed = int.from_bytes(blake2b(key.encode(), digest_size=8).digest())
        low, step = hashed & 0xFFFFFFFF, (hashed >> 32) | 1  # odd: rows differ
        mask, width = self._mask, self.width
        return [row * width + ((low + row * step) & mask) for row in range(DEPTH)]


class Clock:
    """Keys oldest first; a used key gets a second chance at the back."""

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, key: str) -> None:
        """Put ``key`` at the back (newest)."""
        self._keys[key] = None
        self._keys.move_to_end(key)

    def discard(self, key: str) -> None:
        self._keys.pop(key, None)

    def clear(self) -> None:
        self._keys.clear()

    def oldest_unused(
        self, take_used: TakeUsed, seen: Callable[[str], None] | None = None
    ) -> str:
        """The front key once used keys ahead of it went round (``seen`` each).

        Ends within one turn: every flag it passes is cleared. The key stays.
        """
        keys = self._keys
        while True:
            key = next(iter(keys))
            if not take_used(key):
                return key
            if seen is not None:
                seen(key)
            keys.move_to_end(key)


class Policy(Protocol):
    """What :class:`dispatcher.entries.Apps` asks of an eviction policy."""

    def add(self, key: str) -> None:
        """``key`` was stored (a miss; or replaced)."""

    def discard(self, key: str) -> None:
        """``key`` left the cache by another way (expired, popped)."""

    def clear(self) -> None:
        """Every key left the cache."""

    def victim(self, take_used: TakeUsed) -> str:
        """The key to drop to make room for one more, already forgotten."""
        ...


class SecondChance:
    """Today's policy: one CLOCK queue, the approximation of LRU."""

    __slots__ = ("_queue",)

    def __init__(self) -> None:
        self._queue = Clock()

    def add(self, key: str) -> None:
        if key not in self._queue:
            self._queue.add(key)

    def discard(self, key: str) -> None:
        self._queue.discard(key)

    def clear(self) -> None:
        self._queue.clear()

    def victim(self, take_used: TakeUsed) -> str:
        key = self._queue.oldest_unused(take_used)
        self._queue.discard(key)
        return key


class WindowTinyLfu:
    """A window that always admits, a main region admitted to by frequency.

    :param maxsize: slots of the cache; the window gets ``window`` of them
        (at least one), the main region the rest.
    """

    __slots__ = ("window_size", "main_size", "sketch", "_window", "_main")

    def __init__(self, maxsize: int, *, window: float = 0.01) -> None:
        if not 0 < window <= 1:
            raise ValueError(f"window must be a share in (0, 1], not {window!r}")
        self.sketch = FrequencySketch(maxsize)
        self.window_size = max(1, round(maxsize * window))
        self.main_size = maxsize - self.window_size
        self._window = Clock()
        self._main = Clock()

    def add(self, key: str) -> None:
        self.sketch.increment(key)
        if key in self._window or key in self._main:
            return  # replaced in place: it keeps its region and its turn
        self._window.add(key)
        # Until the main region is full, the window overflows into it freely.
        while len(self._window) > self.window_size and len(self._main) < self.main_size:
            moved = self._window.oldest_unused(self._never)
            self._window.discard(moved)
            self._main.add(moved)

    def discard(self, key: str) -> None:
        self._window.discard(key)
        self._main.discard(key)

    def clear(self) -> None:
        self._window.clear()
        self._main.clear()

    def victim(self, take_used: TakeUsed) -> str:
        counted = self.sketch.increment
        if len(self._window) < self.window_size or not self._window:
            # The main region is over its share (window entries expired or
            # were invalidated): it gives up its oldest unused entry.
            key = self._main.oldest_unused(take_used, counted)
            self._main.discard(key)
            return key
        candidate = self._window.oldest_unused(take_used, counted)
        self._window.discard(candidate)
        if not self._main:
            return candidate
        victim = self._main.oldest_unused(take_used, counted)
        if _admits(self.sketch.frequency(candidate), self.sketch.frequency(victim)):
            self._main.discard(victim)
            self._main.add(candidate)
            return victim
        return candidate

    @staticmethod
    def _never(_key: str) -> bool:
        return False


def _admits(candidate: int, victim: int) -> bool:
    """Whether the window's victim takes the main region's victim's slot.

    Only if seen more often: on a tie the incumbent stays, which keeps a hot
    set whose counts were just halved from being flushed by equals. Except
    between keys seen once at most (one-hit wonders, or nothing known): then
    the newer wins, as in LRU.
    """
    return candidate > victim or candidate == victim <= 1
