"""`distilkit serve`'s body parsing: orjson's fast path gives exactly what the standard
json module gives (the reference: the value, its types, and every 422 message), on
random JSON documents and on the inputs where the two libraries differ."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("orjson")

from distilkit.deploy.schemas import ApiError, parse_embeddings, parse_json


def reference(body: bytes) -> tuple[str, object]:
    """What the json module makes of a body: ("ok", value) or ("error", 422 message)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        return "error", f"the body is not UTF-8 ({error.reason} at byte {error.start})"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return "error", f"the body is not JSON: {error.msg} at character {error.pos}"
    if not isinstance(value, dict):
        return "error", f"the body must be a JSON object, got {type(value).__name__}"
    return "ok", value


def parsed(body: bytes) -> tuple[str, object]:
    try:
        return "ok", parse_json(body)
    except ApiError as error:
        assert error.status == 422 and error.field == "body"
        return "error", error.message


def typed(value: object) -> object:
    """A value with the type of every leaf spelled out (1 == 1.0 == True in Python)."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    if isinstance(value, float) and value != value:
        return ("float", "nan")
    return (type(value).__name__, value)


def random_value(generator: np.random.Generator, depth: int = 0) -> str:
    """JSON text of a random value: nested objects and lists, strings with escapes and
    non-ASCII characters, integers up to 30 digits, floats, true, false, null."""
    kind = generator.integers(0, 8 if depth < 3 else 5)
    if kind == 0:
        digits = int(generator.integers(1, 31))
        number = "".join(str(d) for d in generator.integers(0, 10, digits)).lstrip("0") or "0"
        return ("-" if generator.random() < 0.3 else "") + number
    if kind == 1:
        return repr(float(generator.standard_normal() * 10.0 ** generator.integers(-30, 30)))
    if kind == 2:
        return str(generator.choice(["true", "false", "null", "1e400", "-0", "0.1", "1E5"]))
    if kind in (3, 4):
        alphabet = ["a", "Z", " ", "é", "漢", "\\n", '\\"', "\\u00e9", "\\ud83d\\ude00", "😀", "/"]
        return '"' + "".join(generator.choice(alphabet, generator.integers(0, 8))) + '"'
    if kind == 5:
        items = [random_value(generator, depth + 1) for _ in range(generator.integers(0, 4))]
        return "[" + ", ".join(items) + "]"
    keys = ["input", "inputs", "model", "dimensions", "é", "a"]
    items = [
        f'"{generator.choice(keys)}": {random_value(generator, depth + 1)}'
        for _ in range(generator.integers(0, 5))
    ]
    return "{" + ", ".join(items) + "}"


def test_parse_json_agrees_with_the_json_module_on_random_documents():
    generator = np.random.default_rng(11)
    bodies = [random_value(generator).encode() for _ in range(3000)]
    bodies = [b"{" + b'"x": ' + body + b"}" for body in bodies[:1500]] + bodies[1500:]
    for body in bodies:
        want, got = reference(body), parsed(body)
        assert got[0] == want[0], body
        assert (typed(got[1]) if got[0] == "ok" else got[1]) == (
            typed(want[1]) if want[0] == "ok" else want[1]
        ), body


@pytest.mark.parametrize(
    "body",
    [
        b'{"inputs": 123456789012345678901234567890}',  # orjson: a float; json: an int
        b'{"inputs": -9223372036854775809}',
        b'{"dimensions": 18446744073709551616}',
        b'{"a": NaN, "b": Infinity, "c": -Infinity}',  # json takes these, orjson does not
        b'{"a": 1e400}',
        b'{"a": "\\ud800"}',  # a lone surrogate: json keeps it, orjson refuses
        b'\xef\xbb\xbf{"inputs": "a"}',  # a BOM
        b"\xff\xfe{}",
        b'{"inputs": "caf\xc3\xa9", "inputs": "last"}',  # duplicate keys: the last wins
        b'{"inputs": "a"} trailing',
        b'{"inputs": "x\x01y"}',
        b"",
        b"[1, 2]",
        b'"text"',
    ],
)
def test_parse_json_agrees_with_the_json_module_where_orjson_differs(body):
    want, got = reference(body), parsed(body)
    assert got[0] == want[0]
    assert (typed(got[1]) if got[0] == "ok" else got[1]) == (
        typed(want[1]) if want[0] == "ok" else want[1]
    )


def test_a_huge_integer_is_named_as_sent():
    """The 422 for a 20-digit `dimensions` quotes the integer, not a float orjson made."""
    with pytest.raises(ApiError) as caught:
        parse_embeddings(parse_json(b'{"input": "a", "dimensions": 18446744073709551616}'), 384, 8)
    assert caught.value.field == "dimensions"
    assert caught.value.message.endswith("got 18446744073709551616")
