"""Tests of ``dispatcher.configtext``: configs and config values typed as text.
``tests/test_cli.py`` drives them through ``tenantctl``."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.configtext import parse_config, parse_value
from dispatcher.exceptions import InvalidConfig

DEEP_UNCLOSED = "[" * 100_000  # more than Python's recursion limit, and not JSON
DEEP_CLOSED = "[" * 5_000 + "]" * 5_000  # JSON, deeper than Python can parse
TOO_DEEP = "is nested too deeply to parse; the limit is 32 levels of objects and lists"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        pytest.param('{"seats": 5}', {"seats": 5}, id="object"),
        pytest.param("5", 5, id="number"),
        pytest.param("true", True, id="true"),
        pytest.param("null", None, id="null"),
        pytest.param('"quoted"', "quoted", id="json-string"),
        pytest.param("Hi there", "Hi there", id="text"),
        pytest.param("", "", id="empty"),
        pytest.param("NaN", "NaN", id="nan"),
        pytest.param("-Infinity", "-Infinity", id="infinity"),
        pytest.param("1.2.3", "1.2.3", id="a-version-is-a-word"),
        pytest.param("a {b", "a {b", id="a-brace-inside-a-sentence"),
    ],
)
def test_parse_value(text: str, value: Any) -> None:
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            '{"a":1',
            "config value '{\"a\":1' starts with '{', as JSON does, but is not"
            " JSON: Expecting ',' delimiter: line 1 column 7 (char 6); to store it"
            " as text, write it as a JSON string",
            id="unclosed-object",
        ),
        pytest.param(
            " [NaN]",
            "config value ' [NaN]' starts with '[', as JSON does, but is not JSON:"
            " NaN is not JSON; to store it as text, write it as a JSON string",
            id="nan-inside",
        ),
        pytest.param(
            '"unclosed',
            "config value '\"unclosed' starts with '\"', as JSON does, but is not"
            " JSON: Unterminated string starting at: line 1 column 1 (char 0); to"
            " store it as text, write it as a JSON string",
            id="unclosed-string",
        ),
    ],
)
def test_parse_value_refuses_what_starts_as_json_and_is_not(
    text: str, message: str
) -> None:
    # Only JSON starts with {, [ or ": a broken one is a typo, not a string.
    with pytest.raises(InvalidConfig) as refused:
        parse_value(text)

    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("text", "config"),
    [
        pytest.param('{"plan": "pro", "seats": 5}', {"plan": "pro", "seats": 5}),
        pytest.param('  {"a": [1, {"b": null}]}\n', {"a": [1, {"b": None}]}),
        pytest.param("{}", {}, id="empty-object"),
        pytest.param("", {}, id="empty"),
        pytest.param(" \t", {}, id="blank"),
    ],
)
def test_parse_config(text: str, config: dict[str, Any]) -> None:
    assert parse_config(text) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            " {oops ",
            "config '{oops' is not JSON: Expecting property name enclosed in "
            "double quotes: line 1 column 2 (char 1)",
            id="not-json",
        ),
        pytest.param(
            '{"a": NaN}', "config '{\"a\": NaN}' is not JSON: NaN is not JSON", id="nan"
        ),
        pytest.param("[1, 2]", "config '[1, 2]' must be a JSON object", id="list"),
        pytest.param('"text"', "config '\"text\"' must be a JSON object", id="string"),
        pytest.param(
            "x" * 100,
            f"config '{'x' * 77}...' is not JSON: Expecting value: line 1 column 1 "
            "(char 0)",
            id="shown-shortened",
        ),
    ],
)
def test_parse_config_refuses(text: str, message: str) -> None:
    with pytest.raises(InvalidConfig) as refused:
        parse_config(text)

    assert str(refused.value) == message


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(DEEP_UNCLOSED, id="unclosed"),
        pytest.param(DEEP_CLOSED, id="closed"),
    ],
)
def test_too_deep_to_parse_is_one_short_message(text: str) -> None:
    shown = repr(text[:77] + "...")

    with pytest.raises(InvalidConfig) as value:
        parse_value(text)
    with pytest.raises(InvalidConfig) as config:
        parse_config(text)

    assert str(value.value) == f"config value {shown} {TOO_DEEP}"
    assert str(config.value) == f"config {shown} {TOO_DEEP}"
