"""One-time sign-in links: the signup hands its new owner over to the new site.

The signup runs on the apex and the new site is another host, with a session
cookie of its own (see :func:`dispatcher.sessions.init_tenant_sessions`): the
apex cannot sign anyone in there. It sends the browser to a link instead::

    token = make_link(secret, tenant)
    # -> 303 to http://acme.localhost:8000/welcome?token=<token>

    # on the new site, which then signs its owner (tenant.owner_email) in:
    link = read_link(secret, tenant, token)
    if spend(data.session, link.nonce): ...

A link is:

- **bound to one tenant**: signed with a key of the tenant's own, derived from
  the deployment secret with the tenant's slug and creation time (HKDF, as the
  session keys, under a label of its own so that no link key is a session
  key), and naming both inside: worthless on any other site, and on a tenant
  re-created under the same name;
- **short-lived**: it expires :data:`LINK_LIFETIME` seconds after it is made;
- **one-time**: its random nonce is written to the site's own data
  (:class:`~dispatcher.demo.data.SpentLink`) when it is used; a second use
  finds it there;
- **impersonal**: it is signed, not encrypted, and its address lands in
  access logs, so it holds only the site, its creation time, the nonce and
  the time it was made. Whom it signs in is the tenant's owner
  (``tenant.owner_email``), which the site knows.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dispatcher.demo.data import SpentLink
from dispatcher.sessions import hkdf_sha256
from dispatcher.tenant import Tenant, aware

__all__ = ["LINK_LIFETIME", "InvalidLink", "Link", "make_link", "read_link", "spend"]

#: Seconds a sign-in link may wait before it is used: the redirect that carries
#: it is followed at once.
LINK_LIFETIME = 120
#: Seconds a link may seem to come from the future (clocks of two hosts).
CLOCK_SKEW = 5
_LABEL = b"flask-tenant-dispatcher/demo-sign-in-link/v1\x00"
_SALT = "sign-in-link"


class InvalidLink(ValueError):
    """A sign-in link that is forged, another site's, expired or malformed."""


@dataclass(frozen=True, slots=True)
class Link:
    """What a valid link says: its one-time nonce (it signs the site's owner in)."""

    nonce: str


def _identity(tenant: Tenant) -> tuple[str, int]:
    # Whole microseconds since the epoch, as the session keys use it.
    return tenant.slug, round(aware(tenant.created_at).timestamp() * 1_000_000)


def _serializer(secret: str | bytes, tenant: Tenant) -> URLSafeSerializer:
    slug, created = _identity(tenant)
    ikm = secret.encode() if isinstance(secret, str) else secret
    key = hkdf_sha256(
        ikm, salt=b"", info=_LABEL + f"{slug}\0{created}".encode(), length=32
    )
    return URLSafeSerializer(key, salt=_SALT)


def make_link(
    secret: str | bytes,
    tenant: Tenant,
    *,
    now: Callable[[], float] = time.time,
) -> str:
    """A token that signs ``tenant``'s owner in on its site, once, soon."""
    slug, created = _identity(tenant)
    payload = {
        "site": slug,
        "created": created,
        "nonce": secrets.token_urlsafe(24),
        "issued": int(now()),
    }
    token: str = _serializer(secret, tenant).dumps(payload)
    return token


def read_link(
    secret: str | bytes,
    tenant: Tenant,
    token: str,
    *,
    now: Callable[[], float] = time.time,
) -> Link:
    """The link ``token`` if it is ``tenant``'s and fresh; else :exc:`InvalidLink`.

    Checks the signature, the site and the age; whether it was used already is
    :func:`spend`'s to find out.
    """
    try:
        payload: Any = _serializer(secret, tenant).loads(token)
    except BadSignature:
        raise InvalidLink("the sign-in link is another site's, or altered") from None
    if not isinstance(payload, dict):
        raise InvalidLink("the sign-in link is malformed")
    slug, created = _identity(tenant)
    if payload.get("site") != slug or payload.get("created") != created:
        raise InvalidLink("the sign-in link is another site's")
    nonce, issued = payload.get("nonce"), payload.get("issued")
    if not isinstance(nonce, str):
        raise InvalidLink("the sign-in link is malformed")
    if isinstance(issued, bool) or not isinstance(issued, int):
        raise InvalidLink("the sign-in link is malformed")
    age = now() - issued
    if age > LINK_LIFETIME or age < -CLOCK_SKEW:
        raise InvalidLink(f"the sign-in link expired (it lasts {LINK_LIFETIME} s)")
    return Link(nonce)


def spend(session: Session, nonce: str) -> bool:
    """Mark the link with ``nonce`` used, in the site's data; False if it was."""
    session.add(SpentLink(nonce=nonce))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return False
    return True
