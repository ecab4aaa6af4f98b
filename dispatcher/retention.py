"""Keep the change feed bounded: old changes are pruned by age and by count.

Usage::

    registry = TenantRegistry(url, retention=FeedRetention(max_age=timedelta(days=7)))
    registry.create_tenant(...)  # a write prunes after its commit, when due
    registry.prune_feed()  # -> Pruned(removed=..., newest=..., done=True)
    summarise(registry.database)  # -> FeedSummary(changes=..., oldest=..., ...)

A change is pruned when it is older than ``max_age`` or not among the newest
``max_changes``, and never if it is the newest: ``latest_generation()`` keeps
counting up. Pruning removes a prefix of the feed in generation order (it
stops at the first change it keeps, even if later ones are older by a skewed
clock), so whatever a follower has not read yet is either all there or begins
with the marker below.

The last change a prune removes is not deleted: it becomes a ``resync``
marker, keeping its generation and losing what it said. A follower at
generation G reads rows after G; if the marker's generation H is above G, the
follower had not read H (nor, maybe, earlier pruned changes), reads the marker
as :attr:`~dispatcher.changes.Operation.RESYNC`, so its process drops what it
built, and goes on with the changes that remain. A follower at or past H never
sees it. A resync thus fires exactly when a follower missed a pruned change,
whatever gaps the generations have (a rolled-back insert on PostgreSQL), and
the poll stays its one primary-key range scan, unchanged.

A prune runs in batches of ``batch_size`` changes, each its own short write
transaction, so even a feed of millions of rows never holds the write lock for
long nor builds a large transaction. Writers prune after their commit, outside
their transaction (:class:`Pruner`): a process's first write, then every
``prune_every`` generations; a failed prune is logged, never the write's error.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, func, select, update

from dispatcher import forks
from dispatcher.changes import Operation
from dispatcher.models.tables import changes as change_table
from dispatcher.tenant import aware, utcnow

if TYPE_CHECKING:
    from dispatcher.database import Database

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_CHANGES",
    "DEFAULT_RETENTION",
    "FeedRetention",
    "FeedSummary",
    "Pruned",
    "Pruner",
    "parse_duration",
    "prune",
    "summarise",
]

log = logging.getLogger(__name__)

#: A process away (paused, partitioned, a laptop asleep) for up to a week
#: catches up change by change instead of dropping every app it built.
DEFAULT_MAX_AGE = dt.timedelta(days=7)
#: About 20 MiB on PostgreSQL. A follower further behind resynchronises once
#: instead of replaying more than 100 pages of changes.
DEFAULT_MAX_CHANGES = 100_000
#: The feed may grow by this many changes between two automatic prunes.
DEFAULT_PRUNE_EVERY = 1000
#: Rows deleted per transaction: a few milliseconds of write lock.
DEFAULT_BATCH_SIZE = 1000
#: An automatic prune stops after this many batches, so the write that runs
#: it waits a bounded time; the next write goes on where it stopped.
AUTO_BATCHES = 10

_MARKER = Operation.RESYNC.value
#: The largest count a retention may name: its SQL (an OFFSET, a LIMIT) binds
#: it as a signed 64-bit integer.
MAX_COUNT = 2**62
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"([0-9]+)\s*([smhdw])")


@dataclass(frozen=True, slots=True)
class FeedRetention:
    """How much of the change feed is kept.

    :param max_age: changes older than this are pruned; None: any age.
    :param max_changes: only the newest this many are kept; None: any number.
    :param prune_every: a writer prunes when the feed has grown by this many
        generations since its last prune.
    :param batch_size: rows deleted per transaction (and one more change
        turned into the marker).
    """

    max_age: dt.timedelta | None = DEFAULT_MAX_AGE
    max_changes: int | None = DEFAULT_MAX_CHANGES
    prune_every: int = DEFAULT_PRUNE_EVERY
    batch_size: int = DEFAULT_BATCH_SIZE

    def __post_init__(self) -> None:
        if self.max_age is not None and (
            not isinstance(self.max_age, dt.timedelta) or self.max_age <= dt.timedelta()
        ):
            raise ValueError(
                f"max_age must be a positive timedelta or None, not {self.max_age!r}"
            )
        if self.max_changes is not None:
            _check_count("max_changes", self.max_changes)
        _check_count("prune_every", self.prune_every)
        _check_count("batch_size", self.batch_size)


def _check_count(name: str, value: object) -> None:
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or not 1 <= value <= MAX_COUNT
    ):
        raise ValueError(
            f"{name} must be a whole number from 1 to {MAX_COUNT}, not {value!r}"
        )


#: What a registry keeps unless told otherwise.
DEFAULT_RETENTION = FeedRetention()


def parse_duration(text: str) -> dt.timedelta:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` or a sum such as
    ``"1d12h"``, as a timedelta; raises ValueError unless it is positive."""
    spelled = text.strip().lower()
    parts = _DURATION.findall(spelled)
    if not parts or _DURATION.sub("", spelled).strip():
        raise ValueError(
            f"duration {text!r} must be a number and a unit (s, m, h, d or w),"
            " such as 7d or 12h"
        )
    seconds = sum(int(number) * _UNITS[unit] for number, unit in parts)
    if seconds == 0:
        raise ValueError(f"duration {text!r} must be longer than zero")
    try:
        return dt.timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(
            f"duration {text!r} must be at most {dt.timedelta.max.days} days"
        ) from None


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one prune did."""

    #: Changes removed (their rows deleted, the last one turned into a marker).
    removed: int
    #: The newest generation when the prune began (0: an empty feed).
    newest: int
    #: False if ``max_batches`` stopped the prune with more to remove.
    done: bool


@dataclass(frozen=True, slots=True)
class FeedSummary:
    """The feed as it is now."""

    #: Changes kept (the marker not counted).
    changes: int
    #: The newest generation; 0 if the feed is empty.
    newest: int
    #: The oldest change kept, and when it was written; None if there is none.
    oldest: int | None
    oldest_at: dt.datetime | None
    #: The marker's generation: a follower behind it resynchronises. None
    #: until a prune removed something.
    resync_below: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": self.changes,
            "newest": self.newest,
            "oldest": self.oldest,
            "oldest_at": None if self.oldest_at is None else self.oldest_at.isoformat(),
            "resync_below": self.resync_below,
        }


_generation = change_table.c.generation
#: The newest generation and the oldest of the newest ``skip + 1`` (NULL if
#: there are fewer): both read from the primary key's index.
_BOUNDS = select(
    func.coalesce(func.max(_generation), 0).label("newest"),
    select(_generation)
    .order_by(_generation.desc())
    .offset(bindparam("skip"))
    .limit(1)
    .scalar_subquery()
    .label("count_floor"),
)
# Both start at the last marker this prune made: an index scan from the
# feed's start would step over every row deleted so far that vacuum has not
# reclaimed yet, making a long prune quadratic on PostgreSQL.
_OLDEST = (
    select(_generation, change_table.c.operation, change_table.c.changed_at)
    .where(_generation >= bindparam("start"))
    .order_by(_generation)
    .limit(bindparam("limit"))
)
_DELETE_BELOW = delete(change_table).where(
    _generation >= bindparam("start"), _generation < bindparam("below")
)
_MARK = (
    update(change_table)
    .where(_generation == bindparam("marker"))
    .values(operation=_MARKER, slug="", names=None)
)


def prune(
    database: Database,
    retention: FeedRetention,
    *,
    now: dt.datetime | None = None,
    max_batches: int | None = None,
) -> Pruned:
    """Remove the changes ``retention`` no longer keeps, a batch per transaction.

    :param now: the time ages are measured from (tests inject one).
    :param max_batches: stop after this many batches; None: until done.
    """
    now = utcnow() if now is None else now
    cutoff = None
    if retention.max_age is not None:
        try:
            cutoff = now - retention.max_age
        except OverflowError:
            pass  # before the year 1: no change is that old
    skip = (retention.max_changes or 1) - 1
    bounds = database.read(_BOUNDS, {"skip": skip})[0]
    newest, count_floor = int(bounds.newest), bounds.count_floor
    # Below count_floor a change is not among the newest max_changes (None:
    # there are fewer); read once: later writes only make it keep more.
    keep_from = 0
    if retention.max_changes is not None and count_floor is not None:
        keep_from = count_floor
    removed = batches = start = 0
    held = 0.0
    while max_batches is None or batches < max_batches:
        if held and not database.is_postgres:
            # SQLite's waiting writers poll for the lock (sleeping up to 100
            # ms between tries) rather than queue for it, as PostgreSQL's do:
            # taking it again at once would starve them for the whole prune.
            time.sleep(held)
        batches += 1
        with database.write_connection() as connection:
            began = time.monotonic()  # the lock is taken: held from here
            rows = connection.execute(
                _OLDEST, {"start": start, "limit": retention.batch_size + 1}
            ).all()
            prefix = removable(rows, newest=newest, keep_from=keep_from, cutoff=cutoff)
            changes = sum(1 for row in prefix if row.operation != _MARKER)
            if changes:
                marker = prefix[-1].generation
                connection.execute(_DELETE_BELOW, {"start": start, "below": marker})
                connection.execute(_MARK, {"marker": marker})
                start = marker
        held = time.monotonic() - began
        removed += changes
        if not changes or len(prefix) < len(rows):
            return Pruned(removed, newest, done=True)
    return Pruned(removed, newest, done=False)


def removable(
    rows: Sequence[Any],
    *,
    newest: int,
    keep_from: int,
    cutoff: dt.datetime | None,
) -> Sequence[Any]:
    """The leading ``rows`` (oldest first) that may go: each older than
    ``cutoff`` or below ``keep_from``, and below ``newest``.

    A prefix only: a change kept keeps every later one, so the feed never
    has a hole a follower could read past.
    """
    for index, row in enumerate(rows):
        old = cutoff is not None and aware(row.changed_at) < cutoff
        if row.generation >= newest or not (row.generation < keep_from or old):
            return rows[:index]
    return rows


_SUMMARY = select(
    func.count().label("changes"),
    func.min(_generation).label("oldest"),
    func.coalesce(func.max(_generation), 0).label("newest"),
).where(change_table.c.operation != _MARKER)
_MARKERS = select(func.max(_generation)).where(change_table.c.operation == _MARKER)
_WRITTEN_AT = select(change_table.c.changed_at).where(
    _generation == bindparam("generation")
)


def summarise(database: Database) -> FeedSummary:
    """The feed's size, newest and oldest change, and its resync marker."""
    row = database.read(_SUMMARY)[0]
    marker = database.read(_MARKERS)[0][0]
    oldest_at = None
    if row.oldest is not None:
        written = database.read(_WRITTEN_AT, {"generation": row.oldest})[0][0]
        oldest_at = aware(written)
    return FeedSummary(int(row.changes), int(row.newest), row.oldest, oldest_at, marker)


class Pruner:
    """Prunes the feed after a process's writes: at its first write, then
    whenever the feed has grown by ``prune_every`` generations since.

    One prune at a time in a process (a writer that finds one running goes
    on); across processes the write lock serialises their batches, and a
    second prune finds little left to do.
    """

    def __init__(self, database: Database, retention: FeedRetention) -> None:
        self.database = database
        self.retention = retention
        #: The generation at which the next write prunes; 0: the next write.
        self.next_at = 0
        self._lock = threading.Lock()
        forks.on_fork_in_child(self, Pruner._forked)

    def _forked(self) -> None:
        # A parent's thread may have held it at the fork.
        self._lock = threading.Lock()

    def after_commit(self, generation: int) -> Pruned | None:
        """Prune if due, after a write that committed up to ``generation``;
        returns what it did, None if it did not run (or failed, logged)."""
        if generation < self.next_at or not self._lock.acquire(blocking=False):
            return None
        try:
            if generation < self.next_at:
                return None  # another thread pruned meanwhile
            self.next_at = generation + self.retention.prune_every
            try:
                pruned = prune(self.database, self.retention, max_batches=AUTO_BATCHES)
            except Exception:
                # The write has committed; its caller must not see this.
                log.warning("pruning the change feed failed", exc_info=True)
                return None
            if not pruned.done:
                self.next_at = 0
            return pruned
        finally:
            self._lock.release()
