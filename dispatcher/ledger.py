"""The data-migration ledger: per tenant, the revision its data is at."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dispatcher.database import Database
    from dispatcher.writes import Transaction

__all__ = ["DataResult", "LedgerEntry"]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    slug: str


@dataclass(frozen=True, slots=True)
class DataResult:
    slug: str


def read_ledger(database: Database, behind: str | None) -> list[LedgerEntry]:
    raise NotImplementedError


def mark_upgrading(tx: Transaction, slugs: Collection[str], target: str) -> None:
    raise NotImplementedError


def record_results(tx: Transaction, results: Iterable[DataResult]) -> None:
    raise NotImplementedError
