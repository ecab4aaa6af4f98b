"""The owners' accounts of a site, in the site's own data.

Passwords are stored as werkzeug's ``generate_password_hash`` makes them
(scrypt, salted) and checked with ``check_password_hash``. A sign-in with an
unknown address costs the same hash check as one with a wrong password, so
its timing does not tell which addresses have accounts.
"""

from __future__ import annotations

import hashlib
import secrets
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from dispatcher.demo.data import Account

__all__ = [
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "add_account",
    "check_sign_in",
    "password_stamp",
    "set_password",
    "password_problem",
]

#: The shortest password accepted, in characters.
MIN_PASSWORD = 10
#: The longest: hashing is slow on purpose, so a huge one costs the server.
MAX_PASSWORD = 200


def password_problem(password: str) -> str | None:
    """Why ``password`` cannot be an account's password, or None."""
    if len(password) < MIN_PASSWORD:
        return f"The password must be at least {MIN_PASSWORD} characters long."
    if len(password) > MAX_PASSWORD:
        return f"The password must be at most {MAX_PASSWORD} characters long."
    return None


def add_account(session: Session, email: str, password: str) -> None:
    """Store an account for ``email`` (lower-cased) and commit."""
    session.add(
        Account(email=email.lower(), password_hash=generate_password_hash(password))
    )
    session.commit()


def set_password(session: Session, email: str, password: str) -> bool:
    """Give ``email``'s account ``password``, making the account if there is
    none (a site imported with ``tenantctl import`` has no owner's account);
    commit. Returns whether the account was made."""
    account = session.scalar(select(Account).where(Account.email == email.lower()))
    if account is None:
        add_account(session, email, password)
        return True
    account.password_hash = generate_password_hash(password)
    session.commit()
    return False


def check_sign_in(session: Session, email: str, password: str) -> str | None:
    """The account's address if ``password`` is its password, else None."""
    if len(password) > MAX_PASSWORD:
        return None
    account = session.scalar(
        select(Account).where(Account.email == email.strip().lower())
    )
    stored = account.password_hash if account is not None else _stand_in_hash()
    # Always one hash check, found or not: the time taken tells nothing.
    if check_password_hash(stored, password) and account is not None:
        return account.email
    return None


def password_stamp(session: Session, email: str) -> str | None:
    """A short digest of ``email``'s stored password hash, or None (no account).

    Kept in a signed-in session and compared at each request: a new password
    changes it, which signs out every browser signed in with the old one.
    """
    stored = session.scalar(
        select(Account.password_hash).where(Account.email == email.lower())
    )
    if stored is None:
        return None
    return hashlib.sha256(stored.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def _stand_in_hash() -> str:
    """A hash of a password nobody knows, checked when the address is unknown."""
    return generate_password_hash(secrets.token_urlsafe(32))
