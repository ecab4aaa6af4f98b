"""Maintenance mode per tenant: 503 for its visitors, a bypass for its owner."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dispatcher.tenant import Tenant
    from dispatcher.writes import Transaction

__all__: list[str] = []


def start(
    tx: Transaction, slug: str, *, retry_after: int, message: str | None
) -> tuple[Tenant, str]:
    raise NotImplementedError


def end(tx: Transaction, slug: str) -> Tenant:
    raise NotImplementedError


def redeem(tx: Transaction, slug: str, token: str) -> bool:
    raise NotImplementedError
