"""The settings a site's owner may change: checked here, written by the registry.

Each returns the cleaned value or raises :exc:`SettingRefused` with a message
for the owner. The colour is the strictest: it goes into the page's CSS,
where HTML escaping does not help.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "DEFAULT_COLOUR",
    "MAX_GREETING",
    "MAX_SITE_NAME",
    "SettingRefused",
    "clean_colour",
    "clean_greeting",
    "clean_site_name",
    "shown_colour",
]

MAX_SITE_NAME = 100
MAX_GREETING = 200
DEFAULT_COLOUR = "#3b5bdb"
_HEX_COLOUR = re.compile(r"#[0-9a-f]{6}|#[0-9a-f]{3}")
# What a stored colour may be to reach the CSS: a hex value or a plain name
# (a config set by tenantctl may hold "red").
_SAFE_COLOUR = re.compile(r"#[0-9a-fA-F]{3,8}|[a-zA-Z]{1,20}")


class SettingRefused(ValueError):
    """A setting's value breaks its rule; the message says which."""


def _has_controls(value: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in value)


def clean_site_name(value: str) -> str:
    name = value.strip()
    if not name:
        raise SettingRefused("Please give the site a name.")
    if len(name) > MAX_SITE_NAME:
        raise SettingRefused(
            f"The site's name is longer than {MAX_SITE_NAME} characters."
        )
    if _has_controls(name):
        raise SettingRefused("The site's name holds control characters.")
    return name


def clean_greeting(value: str) -> str:
    greeting = value.strip()
    if len(greeting) > MAX_GREETING:
        raise SettingRefused(f"The greeting is longer than {MAX_GREETING} characters.")
    if _has_controls(greeting):
        raise SettingRefused("The greeting holds control characters.")
    return greeting


def clean_colour(value: str) -> str:
    colour = value.strip().lower()
    if not _HEX_COLOUR.fullmatch(colour):
        raise SettingRefused(
            f"The colour {value.strip()[:20]!r} must look like #3b5bdb"
            " (a '#' and 3 or 6 hexadecimal digits)."
        )
    return colour


def shown_colour(value: object) -> str:
    """A stored colour if it is safe in CSS, else :data:`DEFAULT_COLOUR`."""
    if isinstance(value, str) and _SAFE_COLOUR.fullmatch(value):
        return value
    return DEFAULT_COLOUR
