"""Maintenance mode per tenant: 503 for its visitors, a bypass for its owner.

A maintenance window (:class:`~dispatcher.tenant.Maintenance`) has a key of
its own, made when it starts and dropped when it ends. Everything that lets
someone through is signed with it (HMAC-SHA256), so the dispatcher checks it
without the database, and a cookie of an earlier window is worthless::

    tenant, token = registry.start_maintenance("acme", message="Back at 14:00")
    print(bypass_url(tenant, token, base_domain="example.com"))
    # https://acme.example.com/_maintenance/bypass/<token>

- The **token** is ``<nonce>.<mac>``: the dispatcher refuses one whose MAC is
  wrong before asking the registry, so guessing never makes the database
  write. The registry keeps only its SHA-256 and spends it once
  (:func:`redeem`), whichever process asks first.
- The **cookie** (``tenant_bypass_<slug>``) is ``<expiry>.<mac>``, bound to the
  tenant's slug and the window's key, valid for :data:`COOKIE_LIFETIME`.

:func:`start`, :func:`end` and :func:`redeem` run inside the registry's write
transaction (see :meth:`~dispatcher.registry.TenantRegistry.start_maintenance`);
the rest is pure. :mod:`dispatcher.maintenance_gate` is the WSGI side.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import replace
from typing import TYPE_CHECKING

from dispatcher.changes import Operation
from dispatcher.exceptions import InvalidName, TenantNotFound
from dispatcher.tenant import Maintenance, Tenant, utcnow
from dispatcher.validation import shown

if TYPE_CHECKING:
    from dispatcher.writes import Transaction

__all__ = [
    "BYPASS_PATH",
    "COOKIE_LIFETIME",
    "DATA_UPGRADE",
    "MAX_MESSAGE",
    "MAX_RETRY_AFTER",
    "bypass_url",
    "check_retry_after",
    "cookie_is_valid",
    "cookie_name",
    "cookie_value",
    "end",
    "new_token",
    "normalise_message",
    "redeem",
    "start",
    "token_is_genuine",
]

#: ``opened_by`` of the windows a fleet upgrade (``tenantctl data upgrade``)
#: opens: a later run ends them once it has the tenant at its target.
DATA_UPGRADE = "data upgrade"
#: Where a bypass token is redeemed, under the tenant's root.
BYPASS_PATH = "/_maintenance/bypass/"
#: Seconds a bypass cookie lets its browser through (Laravel's: 12 hours).
COOKIE_LIFETIME = 12 * 60 * 60
#: Characters a maintenance message may have.
MAX_MESSAGE = 500
#: The longest ``Retry-After`` (a day): beyond it clients give up anyway.
MAX_RETRY_AFTER = 24 * 60 * 60
# Longer than any token new_token makes: refused before any hashing.
_MAX_TOKEN = 128


# -- the registry's writes ------------------------------------------------------


def start(
    tx: Transaction,
    slug: str,
    *,
    retry_after: int,
    message: str | None,
    opened_by: str | None = None,
) -> tuple[Tenant, str]:
    """Start (or update) the tenant's maintenance window; a new bypass token.

    An ongoing window keeps its start and key, so the cookies it signed stay
    valid; its delay, message and token are replaced. ``opened_by`` names the
    tool opening it (None: an operator); once an operator has started a
    window, it is theirs, so no tool ends it.
    """
    retry_after = check_retry_after(retry_after)
    message = normalise_message(message)
    row = tx.tenant(slug)
    current = Maintenance.from_json(row.maintenance)
    if current is None:
        key = secrets.token_hex(32)
        window = Maintenance(utcnow(), retry_after, message, key, opened_by)
    else:
        owner = opened_by if current.opened_by == opened_by else None
        window = replace(
            current, retry_after=retry_after, message=message, opened_by=owner
        )
    token = new_token(row.slug, window)
    row.maintenance = window.to_json()
    row.maintenance_bypass = token_hash(token)
    tx.record(row, Operation.MAINTENANCE)
    return tx.snapshot(row), token


def end(tx: Transaction, slug: str, *, opened_by: str | None = None) -> Tenant:
    """End the tenant's maintenance window and its key; writes nothing if
    there is none, or (with ``opened_by``) if that tool did not open it."""
    row = tx.tenant(slug)
    if opened_by is not None:
        current = Maintenance.from_json(row.maintenance)
        if current is None or current.opened_by != opened_by:
            return tx.snapshot(row)
    if row.maintenance is not None or row.maintenance_bypass is not None:
        row.maintenance = None
        row.maintenance_bypass = None
        tx.record(row, Operation.MAINTENANCE)
    return tx.snapshot(row)


def redeem(tx: Transaction, slug: str, token: str) -> bool:
    """Spend the tenant's bypass token: True if ``token`` is it, once.

    Serialised by the registry's write lock, so two processes redeeming the
    same token cannot both succeed. No change is recorded: snapshots do not
    hold the token, and no app has to go.
    """
    if not isinstance(token, str) or len(token) > _MAX_TOKEN:
        return False
    try:
        row = tx.tenant(slug)
    except TenantNotFound:
        return False
    stored = row.maintenance_bypass
    if Maintenance.from_json(row.maintenance) is None or stored is None:
        return False
    if not hmac.compare_digest(stored, token_hash(token)):
        return False
    row.maintenance_bypass = None
    return True


# -- input ----------------------------------------------------------------------


def check_retry_after(value: object) -> int:
    """``value`` if it is a whole number of seconds from 1 to a day."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"retry_after must be an integer, not {value!r}")
    if not 1 <= value <= MAX_RETRY_AFTER:
        raise ValueError(
            f"retry_after {value!r} must be from 1 to {MAX_RETRY_AFTER} seconds"
        )
    return value


def normalise_message(value: str | None) -> str | None:
    """The message stripped (empty: None); one line of printable characters,
    at most :data:`MAX_MESSAGE` of them."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidName(
            f"maintenance message must be a string, not {type(value).__name__}"
        )
    message = value.strip()
    if not message.isprintable():
        raise InvalidName(
            f"maintenance message {shown(message)} must be one line of printable"
            " characters: control and format characters and line breaks are"
            " not allowed"
        )
    if len(message) > MAX_MESSAGE:
        raise InvalidName(
            f"maintenance message {shown(message)} has {len(message)} characters;"
            f" at most {MAX_MESSAGE} are allowed"
        )
    return message or None


# -- the bypass token -----------------------------------------------------------


def new_token(slug: str, window: Maintenance) -> str:
    """A bypass token for the tenant's window: ``<nonce>.<mac>``."""
    nonce = secrets.token_urlsafe(16)
    return f"{nonce}.{_mac(window.key, 'token', slug, nonce)}"


def token_is_genuine(token: str, slug: str, window: Maintenance) -> bool:
    """Whether ``token`` was made by :func:`new_token` for this tenant and
    window (not whether it is still unspent: only the registry knows)."""
    if len(token) > _MAX_TOKEN:
        return False
    nonce, _, mac = token.partition(".")
    expected = _mac(window.key, "token", slug, nonce)
    return hmac.compare_digest(mac.encode(), expected.encode())


def token_hash(token: str) -> str:
    """What the registry stores of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def bypass_url(
    tenant: Tenant, token: str, *, base_domain: str | None, scheme: str = "https"
) -> str:
    """The one-time URL that lets one browser through: on the tenant's
    canonical address (see :func:`~dispatcher.context.tenant_url`), its
    primary domain, subdomain or ``<base_domain>/<path prefix>``, then
    :data:`BYPASS_PATH` and the token. Raises ValueError if it has none."""
    # Imported here: dispatcher.context loads Flask, which tenantctl's other
    # commands (this module is imported to register its group) never need.
    from dispatcher.context import tenant_url

    return tenant_url(
        tenant, BYPASS_PATH + token, base_domain=base_domain, scheme=scheme
    )


# -- the bypass cookie ----------------------------------------------------------


def cookie_name(slug: str) -> str:
    """The tenant's own cookie name: tenants reached by path share a host."""
    return f"tenant_bypass_{slug}"


def cookie_value(slug: str, window: Maintenance, expires: int) -> str:
    """A cookie value letting its holder through until ``expires`` (Unix time)."""
    return f"{expires}.{_mac(window.key, 'cookie', slug, str(expires))}"


def cookie_is_valid(value: str, slug: str, window: Maintenance, now: float) -> bool:
    """Whether ``value`` was signed for this tenant and window, and is unexpired."""
    expires, _, mac = value.partition(".")
    if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
        return False
    expected = _mac(window.key, "cookie", slug, expires)
    return hmac.compare_digest(mac.encode(), expected.encode()) and now < int(expires)


def _mac(key: str, purpose: str, *parts: str) -> str:
    # The purpose keeps a token from passing as a cookie, and the other way.
    message = "\x00".join((purpose, *parts)).encode()
    digest = hmac.new(key.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
