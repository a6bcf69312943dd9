"""What the API reads from a request before any model sees it: one text check for every route, versions within
the registry's range, and JSON bodies that mean one thing (pipeline.serving.schemas, pipeline.serving.handlers)."""

from __future__ import annotations

import json

import pytest

from pipeline.serving.handlers import read_json
from pipeline.serving.schemas import MAX_VERSION, normalised_version, text_problem


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("i am happy", None),
        ("\u200bjoy\u200b", None),  # a visible word among zero-width characters
        ("é", None),
        ("\u0301", None),  # a lone combining accent still shows
        ("🙂", None),
        (" \t\n", "text is empty: give some words to explain"),
        ("\x00", "text has no visible character"),
        ("\u200b\u200c\u200d\u2060\ufeff", "text has no visible character"),
        ("\u202e\u2066\u00ad", "text has no visible character"),  # bidi controls, soft hyphen
        ("\u3164\u115f\ufe0f", "text has no visible character"),  # Hangul fillers, a variation selector
        ("x" * 11, "text is too long: 11 characters > 10"),
        ("ok \ud800", "text is not valid Unicode: a lone surrogate at character 3"),
    ],
)
def test_one_text_check_for_every_route(text: str, problem: str | None) -> None:
    found = text_problem(text, "text", 10, "explain")
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem), found


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, None), ("1", "1"), (" 007 ", "7"), (2, "2"), (MAX_VERSION, str(MAX_VERSION)), ("0" * 30 + "5", "5")],
)
def test_versions_are_normalised(given: str | int | None, expected: str | None) -> None:
    assert normalised_version(given) == expected


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("0", "positive integer,"),
        ("-1", "positive integer,"),
        ("1.0", "positive integer,"),
        ("²", "positive integer,"),
        (MAX_VERSION + 1, f"up to {MAX_VERSION}"),
        ("99999999999999999999", f"up to {MAX_VERSION}"),
        ("9" * 5000, f"up to {MAX_VERSION}"),  # refused before int() is asked to read 5,000 digits
    ],
)
def test_versions_the_registry_cannot_hold_are_refused(given: str | int, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        normalised_version(given)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"text": "a", "text": "b"}', "duplicate key 'text'"),
        (b'{"texts": [{"a": 1, "a": 1}]}', "duplicate key 'a'"),
        (b"\xff", "not UTF-8"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b'{"version": ' + b"9" * 5000 + b"}", "too many digits"),
        (b"{not json", "Expecting property name"),
    ],
)
def test_a_json_body_that_does_not_mean_one_thing_is_a_decode_error(body: bytes, why: str) -> None:
    with pytest.raises(json.JSONDecodeError, match=why):
        read_json(body)
    assert read_json(b'{"text": "a", "version": "1"}') == {"text": "a", "version": "1"}
