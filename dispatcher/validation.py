"""Rules for the names and configs the registry stores. Pure functions, no I/O.

Every function returns the normalised value or raises ``InvalidName`` /
``InvalidConfig`` with a message naming the value and the rule it broke.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Collection, Mapping
from typing import Any

import idna

from dispatcher.exceptions import InvalidConfig, InvalidName

__all__ = [
    "DEFAULT_RESERVED",
    "LABEL_PATTERN",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_OWNER_NAME",
    "check_config",
    "is_reserved",
    "json_equal",
    "normalise_domain",
    "normalise_email",
    "normalise_label",
    "normalise_owner_name",
    "shown",
    "normalise_reason",
]

#: Labels no tenant may take as subdomain or path prefix. A tenant holding one
#: of them under the base domain would receive traffic meant for the operator:
#: clients look these names up on their own, without anyone typing them.
#: The rule (see :func:`is_reserved`): a label is reserved if it is one of
#: these, or one of these followed by digits (``ns1``, ``mx2``, ``www3``,
#: ``pop3``): numbered siblings of the same service.
DEFAULT_RESERVED = frozenset(
    {
        # The default app's own pages and the operator's web hosts.
        "admin", "api", "app", "assets", "auth", "cdn", "dashboard", "docs",
        "help", "login", "logout", "media", "register", "signup", "static",
        "status", "support", "www",
        # Mail. Clients configure themselves from autoconfig (Thunderbird),
        # autodiscover (Outlook), lyncdiscover and sip (Skype/Teams),
        # enterpriseenrollment/-registration (Intune); senders fetch mta-sts
        # (RFC 8461) and openpgpkey (Web Key Directory) policies and keys.
        "autoconfig", "autodiscover", "email", "enterpriseenrollment",
        "enterpriseregistration", "exchange", "imap", "lyncdiscover", "mail",
        "mta-sts", "mx", "openpgpkey", "owa", "pop", "sip", "smtp", "webmail",
        # Network and DNS. Machines resolve wpad (proxy auto-config) and isatap
        # (IPv6 tunnels) under their search domain; the rest name servers.
        "dns", "ftp", "isatap", "localhost", "ns", "ntp", "vpn", "wpad",
    }
)  # fmt: skip
# Underscore names (_dmarc, _domainkey, _mta-sts, _acme-challenge) need no entry:
# no label may contain '_'.

MAX_CONFIG_BYTES = 64 * 1024
#: How deeply objects and lists may nest in a config, the config itself being
#: level 1. Real configs are shallow; the limit keeps every recursive walk of a
#: config (here, in snapshots, in ``json``) far from Python's recursion limit.
MAX_CONFIG_DEPTH = 32
MAX_OWNER_NAME = 200  # the column's length

#: One label of a host name, as a tenant's slug, subdomain or path prefix must
#: be: lower-case letters, digits and inner hyphens, 1-63 of them. A pattern to
#: build other expressions from (the request's host and path in resolve).
LABEL_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_LABEL = re.compile(LABEL_PATTERN)
_LABEL_RULE = "1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
_IDEOGRAPHIC_DOTS = str.maketrans(dict.fromkeys("\u3002\uff0e\uff61", "."))
_EMAIL_LOCAL = re.compile(r"[^\s@]{1,64}")
# Characters a terminal or a log obeys rather than shows: C0 and C1 controls
# and DEL (escape sequences, line breaks), the Unicode line and paragraph
# separators, and the bidi embeddings, overrides and isolates that reorder the
# text after them ("Trojan Source"). Zero-width joiners stay: some scripts
# need them.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_RULE = "control characters are not allowed"


def shown(value: str) -> str:
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
        raise InvalidName(f"{what} {shown(value)} must be {_LABEL_RULE}")
    if is_reserved(label, reserved):
        raise InvalidName(f"{what} {label!r} is reserved; choose another name")
    return label


def is_reserved(label: str, reserved: Collection[str] = DEFAULT_RESERVED) -> bool:
    """Whether ``label`` (lower-case) is in ``reserved``, or one of them plus digits."""
    return label in reserved or label.rstrip("0123456789") in reserved


def normalise_domain(value: str) -> str:
    """Check a custom host name; return it lower-case, punycoded, no final dot.

    Internationalised names follow IDNA 2008 with the UTS 46 mapping, as
    browsers do: ``faß.de`` is ``xn--fa-hia.de``, not IDNA 2003's ``fass.de``.
    """
    if not isinstance(value, str):
        raise InvalidName(f"host name must be a string, not {type(value).__name__}")
    # IDNA treats these full stops as dots; map them before the final dot goes.
    host = value.strip().translate(_IDEOGRAPHIC_DOTS)
    host = host.removesuffix(".")
    # Other names take UTS 46's mapping, not str.lower(): it keeps ß and final
    # sigma, which are letters of their own in IDNA 2008, and folds widths.
    host = host.lower() if host.isascii() else _uts46_map(host, value)
    labels = [_ascii_label(label, value) for label in host.split(".")]
    host = ".".join(labels)
    if len(host) > 253:
        raise InvalidName(f"host name {shown(value)} is longer than 253 characters")
    if len(labels) < 2:
        raise InvalidName(
            f"host name {shown(value)} must have at least two labels, "
            "like 'shop.example.com'"
        )
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise InvalidName(
                f"host name {shown(value)} has label {shown(label)}; "
                f"each label must be {_LABEL_RULE}"
            )
    if labels[-1].isdigit():
        raise InvalidName(
            f"host name {shown(value)} is an IP address; use a domain name"
        )
    return host


def _uts46_map(host: str, value: str) -> str:
    """UTS 46 mapping, non-transitional: case folding, width, ß kept."""
    try:
        return idna.uts46_remap(host, std3_rules=True, transitional=False)
    except idna.IDNAError as e:
        raise _not_idna(value, e) from e


def _ascii_label(label: str, value: str) -> str:
    """An A-label for a Unicode label; an A-label checked; other labels as they are.

    An ASCII label that does not start with ``xn--`` is left to the LDH rule.
    """
    if label.isascii() and not label.startswith("xn--"):
        return label
    try:
        if label.isascii():
            # Decoding checks the U-label it stands for; encoding it again must
            # give the same text, or one name would have two spellings.
            decoded = idna.ulabel(label)
            if idna.alabel(decoded).decode("ascii") != label:
                raise idna.IDNAError(
                    f"{label!r} is not the canonical punycode of {decoded!r}"
                )
            return label
        return idna.alabel(label).decode("ascii")
    except idna.IDNAError as e:
        raise _not_idna(value, e) from e


def _not_idna(value: str, error: idna.IDNAError) -> InvalidName:
    return InvalidName(
        f"host name {shown(value)} cannot be converted to punycode "
        f"(IDNA 2008 rules): {error}"
    )


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
        raise InvalidName(f"e-mail {shown(value)} must look like 'name@example.com'")
    _refuse_control(local, f"e-mail {shown(value)}")
    try:
        domain = normalise_domain(domain)
    except InvalidName as e:
        raise InvalidName(f"e-mail {shown(value)} has a bad domain: {e}") from e
    return f"{local}@{domain}"


def check_config(value: Mapping[str, Any]) -> dict[str, Any]:
    """Check a tenant config is a JSON object; return a plain deep copy of it."""
    if not isinstance(value, Mapping):
        raise InvalidConfig(
            f"config must be a JSON object (a mapping), not {type(value).__name__}"
        )
    _check_depth(value)
    try:
        encoded = json.dumps(_plain(value), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidConfig(f"config is not valid JSON: {e}") from e
    if len(encoded.encode()) > MAX_CONFIG_BYTES:
        raise InvalidConfig(
            f"config is {len(encoded.encode())} bytes as JSON; "
            f"the limit is {MAX_CONFIG_BYTES}"
        )
    result: dict[str, Any] = json.loads(encoded)
    return result


def _check_depth(config: Mapping[str, Any]) -> None:
    """Refuse a config nested deeper than the limit, without recursing."""
    level: list[Any] = [config]
    for _ in range(MAX_CONFIG_DEPTH):
        level = [
            item
            for container in level
            for item in (
                container.values() if isinstance(container, Mapping) else container
            )
            if isinstance(item, Mapping | list | tuple)
        ]
        if not level:
            return
    raise InvalidConfig(
        f"config is nested more than {MAX_CONFIG_DEPTH} levels deep; "
        f"the limit is {MAX_CONFIG_DEPTH} levels of objects and lists"
    )


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
            f"owner name {shown(name)} is longer than {MAX_OWNER_NAME} characters"
        )
    _refuse_control(name, f"owner name {shown(name)}")
    return name or None


def normalise_reason(value: str | None) -> str | None:
    """Strip why a tenant is disabled; empty becomes None; one line, no controls."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidName(
            f"disabled reason must be a string, not {type(value).__name__}"
        )
    reason = value.strip()
    _refuse_control(reason, f"disabled reason {shown(reason)}")
    return reason or None


def _refuse_control(text: str, subject: str) -> None:
    """Refuse text holding a character terminals and logs obey instead of show."""
    found = _CONTROL.search(text)
    if found:
        raise InvalidName(
            f"{subject} holds U+{ord(found[0]):04X} "
            f"({unicodedata.name(found[0], 'a control character')}); "
            f"{_CONTROL_RULE}"
        )
