"""Rules for the names and configs the registry stores. Pure functions, no I/O.

Every function returns the normalised value or raises ``InvalidName`` /
``InvalidConfig`` with a message naming the value and the rule it broke.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any

from dispatcher.exceptions import InvalidConfig, InvalidName

__all__ = [
    "DEFAULT_RESERVED",
    "MAX_OWNER_NAME",
    "MAX_CONFIG_BYTES",
    "check_config",
    "json_equal",
    "normalise_owner_name",
    "normalise_domain",
    "normalise_email",
    "normalise_label",
]

#: Labels no tenant may take as subdomain or path prefix: they name
#: infrastructure or the default app's own pages.
DEFAULT_RESERVED = frozenset(
    {
        "admin", "api", "app", "assets", "auth", "cdn", "dashboard", "docs",
        "ftp", "help", "imap", "localhost", "login", "logout", "mail", "media",
        "mx", "ns1", "ns2", "pop", "register", "signup", "smtp", "static",
        "status", "support", "webmail", "www",
    }
)  # fmt: skip

MAX_CONFIG_BYTES = 64 * 1024
MAX_OWNER_NAME = 200  # the column's length

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LABEL_RULE = "1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
_IDEOGRAPHIC_DOTS = str.maketrans(dict.fromkeys("\u3002\uff0e\uff61", "."))
_EMAIL_LOCAL = re.compile(r"[^\s@\x00-\x1f\x7f]{1,64}")


def _shown(value: str) -> str:
    """The value as it appears in a message: quoted, and short even when it is not."""
    return repr(value if len(value) <= 80 else value[:77] + "...")


def normalise_label(
    value: str, *, what: str = "subdomain", reserved: Collection[str] = ()
) -> str:
    """Lower-case and check a slug, subdomain or path prefix (one DNS label)."""
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be a string, not {type(value).__name__}")
    # ASCII first: str.lower() would turn the Kelvin sign into a plain 'k'.
    label = value.strip()
    if not label.isascii() or not _LABEL.fullmatch(label := label.lower()):
        raise InvalidName(f"{what} {_shown(value)} must be {_LABEL_RULE}")
    if label in reserved:
        raise InvalidName(f"{what} {label!r} is reserved; choose another name")
    return label


def normalise_domain(value: str) -> str:
    """Check a custom host name; return it lower-case, punycoded, no final dot."""
    if not isinstance(value, str):
        raise InvalidName(f"host name must be a string, not {type(value).__name__}")
    # IDNA treats these full stops as dots; map them before the final dot goes.
    host = value.strip().translate(_IDEOGRAPHIC_DOTS)
    host = host.removesuffix(".")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise InvalidName(
                f"host name {_shown(value)} cannot be converted to punycode: {e}"
            ) from e
    host = host.lower()
    if len(host) > 253:
        raise InvalidName(f"host name {_shown(value)} is longer than 253 characters")
    labels = host.split(".")
    if len(labels) < 2:
        raise InvalidName(
            f"host name {_shown(value)} must have at least two labels, "
            "like 'shop.example.com'"
        )
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise InvalidName(
                f"host name {_shown(value)} has label {_shown(label)}; "
                f"each label must be {_LABEL_RULE}"
            )
    if labels[-1].isdigit():
        raise InvalidName(
            f"host name {_shown(value)} is an IP address; use a domain name"
        )
    return host


def normalise_email(value: str) -> str:
    """Check an owner's e-mail address; return it lower-cased, domain punycoded."""
    if not isinstance(value, str):
        raise InvalidName(f"e-mail must be a string, not {type(value).__name__}")
    address = value.strip()
    local, at, domain = address.rpartition("@")
    # Addresses are compared case-insensitively in practice; one spelling per
    # owner. Lower-case before checking: it can change the length.
    local = local.lower()
    if not at or not _EMAIL_LOCAL.fullmatch(local):
        raise InvalidName(f"e-mail {_shown(value)} must look like 'name@example.com'")
    try:
        domain = normalise_domain(domain)
    except InvalidName as e:
        raise InvalidName(f"e-mail {_shown(value)} has a bad domain: {e}") from e
    return f"{local}@{domain}"


def check_config(value: Mapping[str, Any]) -> dict[str, Any]:
    """Check a tenant config is a JSON object; return a plain deep copy of it."""
    if not isinstance(value, Mapping):
        raise InvalidConfig(
            f"config must be a JSON object (a mapping), not {type(value).__name__}"
        )
    try:
        encoded = json.dumps(_plain(value), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidConfig(f"config is not valid JSON: {e}") from e
    except RecursionError as e:
        raise InvalidConfig("config is nested too deeply") from e
    if len(encoded.encode()) > MAX_CONFIG_BYTES:
        raise InvalidConfig(
            f"config is {len(encoded.encode())} bytes as JSON; "
            f"the limit is {MAX_CONFIG_BYTES}"
        )
    result: dict[str, Any] = json.loads(encoded)
    return result


def _plain(value: Any) -> Any:
    """Dicts and lists from any mappings and sequences (a snapshot's frozen config)."""
    if isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise InvalidConfig(f"config key {key!r} must be a string")
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, str | int | float):
        return value
    raise InvalidConfig(
        f"config value {value!r} ({type(value).__name__}) is not a JSON value"
    )


def json_equal(left: Any, right: Any) -> bool:
    """Equal as JSON: unlike ``==``, ``True`` and ``1`` differ."""
    return json.dumps(_plain(left), sort_keys=True) == json.dumps(
        _plain(right), sort_keys=True
    )


def normalise_owner_name(value: str | None) -> str | None:
    """Strip an owner's display name; empty becomes None; at most 200 characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidName(f"owner name must be a string, not {type(value).__name__}")
    name = value.strip()
    if len(name) > MAX_OWNER_NAME:
        raise InvalidName(
            f"owner name {_shown(name)} is longer than {MAX_OWNER_NAME} characters"
        )
    return name or None
