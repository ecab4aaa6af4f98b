"""Configs and config values as a person types them, parsed as JSON.

Usage::

    parse_value('{"seats": 5}')  # {'seats': 5}
    parse_value("Hi")  # 'Hi': not JSON, so a string
    parse_value('{"seats": 5')  # InvalidConfig: starts as JSON, is not JSON
    parse_config('{"plan": "pro"}')  # {'plan': 'pro'}
    parse_config("")  # {}
    parse_config("[1, 2]")  # InvalidConfig: must be a JSON object

``tenantctl`` parses a value typed after ``KEY=`` with :func:`parse_value`,
and an import file's ``config`` column with :func:`parse_config`. A value
is JSON if it parses, and a word or a sentence (``Hi``, ``1.2.3``, ``NaN``)
is the string it reads as; but text that starts with ``{``, ``[`` or ``"``
can only have meant JSON, so if it does not parse it is refused rather than
stored as a string nobody asked for (a typo would go unnoticed until an app
reads a string where it wanted an object). JSON here
is strict: ``NaN`` and ``Infinity`` parse in Python but are not JSON. Text
nested deeper than Python can parse raises ``InvalidConfig`` with a short
message, never ``RecursionError``. The rules for a stored config (its size,
its depth) are :func:`dispatcher.validation.check_config`'s.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from dispatcher.exceptions import InvalidConfig
from dispatcher.validation import MAX_CONFIG_DEPTH, shown

__all__ = ["JSON_STARTS", "parse_config", "parse_value"]


#: What JSON text starts with and a plain word never does.
JSON_STARTS = ("{", "[", '"')


def parse_value(text: str) -> Any:
    """``text`` parsed as JSON if it is JSON, else ``text`` itself; text
    starting with one of :data:`JSON_STARTS` must be JSON."""
    try:
        return _loads(text)
    except ValueError as e:
        start = text.lstrip()[:1]
        if start and start in JSON_STARTS:
            raise InvalidConfig(
                f"config value {shown(text)} starts with {start!r}, as JSON does,"
                f" but is not JSON: {e}; to store it as text, write it as a JSON"
                " string"
            ) from e
        return text
    except RecursionError as e:
        raise InvalidConfig(_too_deep("config value", text)) from e


def parse_config(text: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object; blank text is an empty one."""
    text = text.strip()
    if not text:
        return {}
    try:
        config = _loads(text)
    except ValueError as e:
        raise InvalidConfig(f"config {shown(text)} is not JSON: {e}") from e
    except RecursionError as e:
        raise InvalidConfig(_too_deep("config", text)) from e
    if not isinstance(config, dict):
        raise InvalidConfig(f"config {shown(text)} must be a JSON object")
    return config


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_not_json)


def _not_json(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not JSON")


def _too_deep(what: str, text: str) -> str:
    # Deeper than Python parses, so deeper than any config may be.
    return (
        f"{what} {shown(text)} is nested too deeply to parse; the limit is "
        f"{MAX_CONFIG_DEPTH} levels of objects and lists"
    )
