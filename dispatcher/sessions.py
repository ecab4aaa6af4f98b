"""Tenant-safe Flask sessions: a key per tenant, a cookie scoped to the tenant.

Usage, in your ``create_app``::

    import os

    from flask import Flask
    from dispatcher import init_tenant_sessions


    def create_app(tenant):
        app = Flask(__name__)
        app.config.update(tenant.config)
        init_tenant_sessions(
            app,
            tenant,
            os.environ["DISPATCHER_SECRET_KEY"],  # one for the whole deployment
            # While rotating: the secrets it replaced, separated by spaces.
            previous_secrets=os.environ.get("DISPATCHER_OLD_SECRET_KEYS", "").split(),
        )
        return app

Why: with path routing every tenant is on the same host, and Flask's session
cookie has ``Path=/``, so a browser sends tenant A's session to tenant B.
With one ``SECRET_KEY`` for all tenants B accepts it; with a key per tenant,
logging into A overwrites (logs you out of) B. :func:`init_tenant_sessions`
fixes both:

- **A key per tenant.** ``SECRET_KEY`` is HKDF-SHA256 (RFC 5869) of the
  deployment secret with the tenant's slug, its creation time and a label of
  this library as context (a tenant that takes a deleted one's slug gets a
  key of its own): stable across processes and restarts, different for every slug,
  and no tenant's key tells anything about another's or the deployment
  secret. A cookie signed for A fails B's signature check.
- **A cookie per tenant.** :class:`TenantSessionInterface` sets the cookie's
  ``Path`` to the request's ``SCRIPT_NAME`` (``/acme`` when the tenant is
  reached by path prefix, ``/`` by subdomain or custom domain; computed per
  request, since one tenant app can be reached both ways), and never a
  ``Domain``: the cookie is host-only, so ``acme.example.com`` does not share
  it with ``example.com`` or ``beta.example.com``. A ``SESSION_COOKIE_DOMAIN``
  or ``SESSION_COOKIE_PATH`` already configured is refused with
  :class:`ValueError`; one set later is ignored. ``SameSite`` defaults to
  ``Lax`` if the app chose none.

A shared app (one app serving many tenants, ``TenantDispatcher(...,
shared_app=app)``) gets the same from :func:`init_shared_sessions`: the key of
each request's tenant (``current_tenant``), derived the same way and kept in a
small cache, so a cookie signed at tenant A fails at tenant B on the very same
app::

    shop = Flask(__name__)
    init_shared_sessions(shop, os.environ["DISPATCHER_SECRET_KEY"])

Its ``SECRET_KEY`` is left alone and signs no session: it is the same for
every tenant of the app, so anything else signed with it (a token in a link)
is valid at every tenant. A request that names no tenant (an app called
outside the dispatcher) raises :exc:`RuntimeError` rather than use a key.

Path-routed tenants still share one origin (scheme, host, port): the browser
keeps their cookies apart, but their pages' scripts can reach each other.
Tenants whose code or content you do not trust belong on subdomains.

Rotation: put the new secret in ``secret`` and the old one in
``previous_secrets``; cookies signed with the old one are still accepted
(Flask's ``SECRET_KEY_FALLBACKS``, derived the same way) and every response
that changes the session signs it with the new one. Once the longest session
lifetime (``PERMANENT_SESSION_LIFETIME``, 31 days by default) has passed,
drop the old secret. To log everyone out at once, change the secret without
keeping the old one.

The deployment secret must be at least :data:`MIN_SECRET_BYTES` bytes; make
one with ``python -c 'import secrets; print(secrets.token_urlsafe(32))'``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from functools import lru_cache, partial
from typing import TYPE_CHECKING
from urllib.parse import quote

from flask import request
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from dispatcher.context import ENVIRON_KEY
from dispatcher.tenant import Tenant

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "MIN_SECRET_BYTES",
    "SharedSessionInterface",
    "TenantSessionInterface",
    "derive_tenant_secret",
    "hkdf_sha256",
    "init_shared_sessions",
    "init_tenant_sessions",
]

#: The shortest deployment secret accepted, in bytes (UTF-8 for a str).
MIN_SECRET_BYTES = 32

# HKDF's "info": what the key is for. A new use of the deployment secret gets a
# label of its own, so its keys never equal the session keys.
_SESSION_KEY_LABEL = b"flask-tenant-dispatcher/session-key/v1\x00"
_KEY_BYTES = 32
#: Tenants whose derived keys a shared app keeps (HKDF costs two HMACs each).
DERIVED_KEYS = 1024


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869): ``length`` bytes of key from ``ikm``."""
    if not 0 < length <= 255 * hashlib.sha256().digest_size:
        raise ValueError(f"length {length} must be between 1 and 8160 bytes")
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def derive_tenant_secret(secret: str | bytes, tenant: Tenant) -> bytes:
    """``tenant``'s session key, derived from the deployment ``secret``.

    The context is the tenant's slug and the moment it was created: a slug is
    not a tenant's identity, since a deleted tenant's slug can be taken again
    (a signup, ``tenantctl remove`` then ``add``), and the new tenant must not
    accept the sessions of the old one.
    """
    ikm = _secret_bytes(secret, "secret")
    if not isinstance(tenant, Tenant):
        raise TypeError(
            f"tenant must be the Tenant snapshot create_app receives, "
            f"not {type(tenant).__name__}"
        )
    return _derive(ikm, tenant.slug, _created(tenant))


def _created(tenant: Tenant) -> int:
    # Whole microseconds since the epoch: the same whatever time zone the
    # database hands the timestamp back in.
    return round(tenant.created_at.timestamp() * 1_000_000)


def _derive(ikm: bytes, slug: str, created: int) -> bytes:
    context = f"{slug}\0{created}".encode()
    return hkdf_sha256(
        ikm, salt=b"", info=_SESSION_KEY_LABEL + context, length=_KEY_BYTES
    )


def init_tenant_sessions(
    app: Flask,
    tenant: Tenant,
    secret: str | bytes,
    *,
    previous_secrets: Iterable[str | bytes] = (),
) -> None:
    """Give ``app`` tenant ``tenant``'s session key and tenant-scoped cookies.

    ``tenant`` is the snapshot ``create_app`` receives. Sets
    ``SECRET_KEY``, ``SECRET_KEY_FALLBACKS`` (from ``previous_secrets``) and
    the app's session interface; see the module docstring.
    """
    key = derive_tenant_secret(secret, tenant)
    slug = tenant.slug
    fallbacks = [
        derive_tenant_secret(_secret_bytes(old, f"previous_secrets[{i}]"), tenant)
        for i, old in enumerate(previous_secrets)
    ]
    _scope_cookies(app, f"tenant {slug!r}'s app")
    app.config["SECRET_KEY"] = key
    app.config["SECRET_KEY_FALLBACKS"] = fallbacks
    app.session_interface = TenantSessionInterface()
    app.extensions["dispatcher.sessions"] = slug


def init_shared_sessions(
    app: Flask,
    secret: str | bytes,
    *,
    previous_secrets: Iterable[str | bytes] = (),
) -> None:
    """Give a shared ``app`` each request's tenant's session key and cookies.

    Like :func:`init_tenant_sessions`, with the tenant read per request from
    the dispatcher (``current_tenant``) instead of fixed at build. The app's
    ``SECRET_KEY`` signs no session; see the module docstring.
    """
    current = _secret_bytes(secret, "secret")
    previous = tuple(
        _secret_bytes(old, f"previous_secrets[{i}]")
        for i, old in enumerate(previous_secrets)
    )
    _scope_cookies(app, f"shared app {app.name!r}")
    app.session_interface = SharedSessionInterface(current, previous)
    app.extensions["dispatcher.sessions"] = None  # no one tenant's


def _scope_cookies(app: Flask, whose: str) -> None:
    """Refuse a cookie domain or path set on ``app``; SameSite Lax unless set."""
    for name in ("SESSION_COOKIE_DOMAIN", "SESSION_COOKIE_PATH"):
        value = app.config.get(name)
        if value:
            raise ValueError(
                f"{name}={value!r} is set on {whose}: tenant "
                "sessions are host-only and their path is each request's "
                "SCRIPT_NAME; remove the setting"
            )
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"


class TenantSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, scoped to the tenant of each request."""

    def get_cookie_domain(self, app: Flask) -> None:
        # Host-only whatever the config says: a Domain= on the parent domain
        # would hand the cookie to every other tenant's subdomain.
        return None

    def get_cookie_path(self, app: Flask) -> str:
        # SCRIPT_NAME is "/acme" when the dispatcher routed by path prefix and
        # "" when by host; the same app can be reached both ways.
        return quote(request.script_root, safe="/") or "/"


class SharedSessionInterface(TenantSessionInterface):
    """Tenant sessions on a shared app: signed with each request's tenant's key.

    :param secret: the deployment secret.
    :param previous: secrets it replaced, still accepted (as fallbacks).
    """

    def __init__(self, secret: bytes, previous: tuple[bytes, ...] = ()) -> None:
        # (slug, created) -> the tenant's keys, fallbacks first, current last
        # (itsdangerous signs with the last). Bounded: memory does not grow
        # with tenants.
        self._keys: Callable[[str, int], tuple[bytes, ...]] = lru_cache(
            maxsize=DERIVED_KEYS
        )(partial(_tenant_keys, (*previous, secret)))

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer:
        tenant = request.environ.get(ENVIRON_KEY)
        if not isinstance(tenant, Tenant):
            # Never fall back on a key: it would be some tenant's, or all's.
            raise RuntimeError(
                f"shared app {app.name!r} got a request with no tenant: its"
                " sessions are signed with the key of the tenant a"
                " TenantDispatcher routed the request to"
            )
        return URLSafeTimedSerializer(
            list(self._keys(tenant.slug, _created(tenant))),
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={
                "key_derivation": self.key_derivation,
                "digest_method": self.digest_method,
            },
        )


def _tenant_keys(
    secrets: tuple[bytes, ...], slug: str, created: int
) -> tuple[bytes, ...]:
    return tuple(_derive(secret, slug, created) for secret in secrets)


def _secret_bytes(secret: str | bytes, name: str) -> bytes:
    if isinstance(secret, str):
        secret = secret.encode()
    elif not isinstance(secret, bytes):
        raise TypeError(f"{name} must be str or bytes, not {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        # The length only: an error message must not leak the secret.
        raise ValueError(
            f"{name} must be at least {MIN_SECRET_BYTES} bytes long, not "
            f"{len(secret)}; make one with: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'"
        )
    return secret
