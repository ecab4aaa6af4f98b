"""Fleet upgrades: every tenant's data to one revision, in parallel, resumable.

Usage (what ``tenantctl data upgrade`` does)::

    from dispatcher.fleet import FleetUpgrade

    fleet = FleetUpgrade(tenant_data, registry, "heads", jobs=4)
    summary = fleet.run(fleet.behind(), canary=10, report=print)

The ledger (:mod:`dispatcher.ledger`) says which tenants are behind, in one
query, so a run with nothing to do reads one (empty) result and stops. Each
tenant's upgrade is one transaction (:meth:`TenantMigrations.upgrade_from`);
before a phase starts, its tenants are marked in flight (``data_target``);
results are recorded in batches once their transactions have ended, with a
``DATA_REVISION`` change for each tenant whose data moved. Wherever the run
stops (a failure, Ctrl-C, SIGKILL), each tenant's data is at its old revision
or its new one, and the ledger says "at ``data_revision``, or at
``data_target`` while it is set": the next run finds those tenants behind and
finishes them.

Alembic's context is module-global, so parallel jobs are processes (forked:
they inherit the tenant data and the tenants); each holds at most one data
connection at a time and dies with the run (``PR_SET_PDEATHSIG`` on Linux),
its open transaction rolled back by the database.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from dispatcher.database import first_line
from dispatcher.exceptions import DispatcherError, TenantDataError
from dispatcher.ledger import DataResult, LedgerEntry, ledger_revision
from dispatcher.maintenance import DATA_UPGRADE

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

    from dispatcher.data import TenantData
    from dispatcher.registry import TenantRegistry
    from dispatcher.tenant import Tenant

__all__ = ["FleetUpgrade", "Outcome", "Status", "Summary"]

#: Outcomes recorded per registry transaction at most, and seconds at most
#: between two records while outcomes arrive.
RECORD_BATCH = 100
RECORD_EVERY = 1.0


class Status(StrEnum):
    UPGRADED = "upgraded"
    CURRENT = "current"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Outcome:
    """One tenant's upgrade."""

    slug: str
    status: Status
    #: Its revisions before (on failure: as the ledger recorded them, or None).
    before: tuple[str, ...] | None
    #: Its revisions after; None when a failure left them unknown.
    after: tuple[str, ...] | None
    error: str | None
    seconds: float
    #: True when the tenant is left in a window a fleet upgrade opened (its
    #: upgrade failed): the run that upgrades it ends it, or the operator.
    left_in_maintenance: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "status": self.status.value,
            "from": None if self.before is None else list(self.before),
            "to": None if self.after is None else list(self.after),
            "error": self.error,
            "seconds": round(self.seconds, 4),
            "left_in_maintenance": self.left_in_maintenance,
        }

    def result(self) -> DataResult:
        """What the ledger records of it."""
        if self.status is Status.FAILED:
            # Rolled back or unknown (after None: the ledger keeps its
            # in-flight mark), or upgraded and then failing to end maintenance.
            changed = self.after is not None and self.after != self.before
            return DataResult(self.slug, self.after, changed, self.error)
        return DataResult(self.slug, self.after, self.status is Status.UPGRADED)


@dataclass
class Summary:
    """A run's counts; ``not_tried``: tenants a failed canary left untouched."""

    counts: dict[Status, int] = field(default_factory=lambda: dict.fromkeys(Status, 0))
    failed: list[str] = field(default_factory=list)
    #: Tenants left in a window a fleet upgrade opened.
    left_in_maintenance: list[str] = field(default_factory=list)
    canary_failed: bool = False
    not_tried: int = 0
    seconds: float = 0.0

    def add(self, outcome: Outcome) -> None:
        self.counts[outcome.status] += 1
        if outcome.status is Status.FAILED:
            self.failed.append(outcome.slug)
        if outcome.left_in_maintenance:
            self.left_in_maintenance.append(outcome.slug)

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": {
                **{status.value: count for status, count in self.counts.items()},
                "failed_tenants": self.failed,
                "left_in_maintenance": self.left_in_maintenance,
                "canary_failed": self.canary_failed,
                "not_tried": self.not_tried,
                "seconds": round(self.seconds, 3),
            }
        }


class FleetUpgrade:
    """Upgrades of many tenants' data to ``revision``, ``jobs`` at a time.

    :param registry: where the ledger is read and written (and maintenance
        mode turned on and off, with ``maintenance``).
    :param maintenance: each tenant is put in maintenance mode for its own
        upgrade; one already in it is left in it, one whose upgrade failed
        stays in it.

    A window a fleet upgrade opened (``opened_by`` :data:`DATA_UPGRADE`: a
    run killed, or the upgrade failed) is the run's own, with or without
    ``maintenance``: it ends once the tenant is at the target. An operator's
    window (``tenantctl maintenance on``, even on a run's) is never ended.
    """

    def __init__(
        self,
        tenant_data: TenantData,
        registry: TenantRegistry,
        revision: str = "heads",
        *,
        jobs: int = 1,
        maintenance: bool = False,
    ) -> None:
        if tenant_data.migrations is None:
            raise TenantDataError(
                "this TenantData has no tenant migrations; pass migrations="
                "'path/to/tenant_migrations'"
            )
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ValueError(f"jobs must be an integer >= 1, not {jobs!r}")
        self.tenant_data = tenant_data
        self.registry = registry
        self.revision = revision
        self.jobs = jobs
        self.maintenance = maintenance
        #: The ledger's spelling of where the run takes each tenant.
        self.target = ledger_revision(tenant_data.migrations.resolve(revision))

    def behind(self) -> list[LedgerEntry]:
        """The tenants the ledger does not record at the target, by slug."""
        return self.registry.data_ledger(behind=self.target)

    def run(
        self,
        entries: Sequence[LedgerEntry],
        *,
        canary: int = 0,
        report: Callable[[Outcome], None] = lambda outcome: None,
    ) -> Summary:
        """Upgrade these tenants (the first ``canary`` first, stopping there if
        one fails), calling ``report`` with each outcome as it comes.

        On KeyboardInterrupt the tenants in flight finish (or roll back), what
        finished is recorded, and it propagates.
        """
        started = time.perf_counter()
        summary = Summary()
        phases = [list(entries)]
        if canary > 0 and len(entries) > canary:
            phases = [list(entries[:canary]), list(entries[canary:])]
        with _Jobs(self, entries) as jobs:
            for number, phase in enumerate(phases):
                before = len(summary.failed)
                self._phase(jobs, phase, summary, report)
                if number == 0 and len(phases) > 1 and len(summary.failed) > before:
                    summary.canary_failed = True
                    summary.not_tried = len(phases[1])
                    break
        summary.seconds = time.perf_counter() - started
        return summary

    def _phase(
        self,
        jobs: _Jobs,
        entries: list[LedgerEntry],
        summary: Summary,
        report: Callable[[Outcome], None],
    ) -> None:
        if not entries:
            return
        self.registry.mark_data_upgrading([each.slug for each in entries], self.target)
        pending: list[Outcome] = []
        last = time.monotonic()
        try:
            for outcome in jobs.outcomes(entries):
                summary.add(outcome)
                pending.append(outcome)
                report(outcome)
                if len(pending) >= RECORD_BATCH or time.monotonic() - last >= (
                    RECORD_EVERY
                ):
                    self._record(pending)
                    last = time.monotonic()
        finally:
            self._record(pending)

    def _record(self, pending: list[Outcome]) -> None:
        if pending:
            self.registry.record_data_results([each.result() for each in pending])
            pending.clear()


class _Jobs:
    """Runs tenants' upgrades: in this process (one job), or in forked ones."""

    def __init__(self, fleet: FleetUpgrade, entries: Iterable[LedgerEntry]) -> None:
        self._work = _Work(
            fleet.tenant_data,
            fleet.registry,
            {entry.slug: entry for entry in entries},
            fleet.revision,
            fleet.maintenance,
        )
        # A forked pool starts all its processes at once: no more than there
        # are tenants to upgrade.
        self._size = min(fleet.jobs, len(self._work.entries))
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Jobs:
        if self._size > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            migrations = self._work.tenant_data.migrations
            if migrations is not None:
                migrations.load()  # once here, not once per job

            # Forked: the children inherit the work (tenant snapshots are not
            # picklable) and nothing is imported again.
            self._pool = ProcessPoolExecutor(
                self._size,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_start_job,
                initargs=(self._work, os.getpid()),
            )
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def outcomes(self, entries: list[LedgerEntry]) -> Iterable[Outcome]:
        """Each entry's outcome, as they finish."""
        if self._pool is None:
            for entry in entries:
                yield self._work.upgrade(entry.slug)
            return
        from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, wait

        # At most two tenants queued per job: Ctrl-C leaves little to cancel.
        todo = iter(entries)
        running: set[Future[Outcome]] = set()
        try:
            while True:
                while len(running) < 2 * self._size:
                    queued = next(todo, None)
                    if queued is None:
                        break
                    running.add(self._pool.submit(_upgrade_in_job, queued.slug))
                if not running:
                    return
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BrokenExecutor as error:
            raise TenantDataError(
                "a job's process died (killed, or out of memory); the tenants it"
                " had in flight stay marked in the ledger: run the upgrade again"
            ) from error
        except KeyboardInterrupt:
            for future in running:
                future.cancel()
            # The tenants in flight finish (or roll back): record them too.
            for future in running:
                if not future.cancelled():
                    yield future.result()
            raise


@dataclass(frozen=True, slots=True)
class _Work:
    """What every job needs: inherited by forked jobs, never pickled."""

    tenant_data: TenantData
    registry: TenantRegistry
    entries: dict[str, LedgerEntry]
    revision: str
    maintenance: bool

    def upgrade(self, slug: str) -> Outcome:
        """One tenant's upgrade, in one transaction, as an outcome."""
        entry = self.entries[slug]
        tenant = entry.tenant
        started = time.perf_counter()
        entered = False
        before: tuple[str, ...] | None = entry.revision
        after: tuple[str, ...] | None = None
        try:
            # An earlier run's window is this run's to end. Ending checks the
            # window is still a run's: an operator may have taken it since.
            entered = _opened_by_a_run(tenant)
            if self.maintenance and not entered:
                # An operator's window stays theirs: maybe opened after the run
                # read the ledger, so it is read now.
                now = self.registry.get_tenant(slug)
                if now.maintenance is None:
                    now, _ = self.registry.start_maintenance(
                        slug, opened_by=DATA_UPGRADE
                    )
                entered = _opened_by_a_run(now)
            before, after = _upgrade(self.tenant_data, tenant, self.revision)
            if entered:
                self.registry.end_maintenance(slug, opened_by=DATA_UPGRADE)
                entered = False
        except KeyboardInterrupt:
            # Ctrl-C in this process (one job): the tenant's transaction rolled
            # back (or committed): its data is consistent; serve it again.
            if entered:
                self.registry.end_maintenance(slug, opened_by=DATA_UPGRADE)
            raise
        except Exception as error:
            # A boundary: whatever one tenant's migration raises (its own code
            # may raise anything) is its failure, recorded; the run goes on.
            message = _message(error)
            if after is not None:
                message = f"upgraded, but ending maintenance failed: {message}"
            return Outcome(
                slug,
                Status.FAILED,
                before,
                after,
                message,
                time.perf_counter() - started,
                left_in_maintenance=entered,
            )
        finally:
            if self.tenant_data.directory is not None:
                self.tenant_data.dispose(tenant)  # a file's engine each: let go
        status = Status.CURRENT if before == after else Status.UPGRADED
        return Outcome(slug, status, before, after, None, time.perf_counter() - started)


def _opened_by_a_run(tenant: Tenant) -> bool:
    window = tenant.maintenance
    return window is not None and window.opened_by == DATA_UPGRADE


def _message(error: Exception) -> str:
    """One line: ours as worded, a driver's first line, anything else typed."""
    if isinstance(error, SQLAlchemyError):
        return first_line(error)
    text = str(error).strip().splitlines()
    if isinstance(error, DispatcherError) and text:
        return text[0]
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _upgrade(
    tenant_data: TenantData, tenant: Tenant, revision: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The tenant's revisions before and after its upgrade, one transaction."""
    migrations = tenant_data.migrations
    assert migrations is not None  # FleetUpgrade checked
    name = tenant_data.schema_name(tenant)
    if tenant_data.directory is not None:
        if not tenant_data.exists(tenant):
            raise TenantDataError(
                f"tenant {tenant.slug!r} has no data ({name!r}) to upgrade"
            )
        with tenant_data.engine_for(tenant).begin() as connection:
            return migrations.upgrade_from(connection, None, revision)
    # A schema that does not exist is refused by the run's first query.
    with tenant_data.engine_for(tenant).begin() as connection:
        return migrations.upgrade_from(connection, name, revision)


#: A forked job's work, set once by its initializer (the process runs nothing else).
_job_work: _Work | None = None


def _start_job(work: _Work, parent: int) -> None:
    global _job_work
    _job_work = work
    # Ctrl-C is the parent's to handle: it lets the tenants in flight finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent)


def _upgrade_in_job(slug: str) -> Outcome:
    assert _job_work is not None
    return _job_work.upgrade(slug)


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this job when the run's process dies (even by SIGKILL),
    instead of waiting forever for work; its open transaction rolls back."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl: too late to be told
        os._exit(1)
