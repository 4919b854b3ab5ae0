"""A request body is read exactly as json.loads (and the lone-surrogate check) read it, orjson or not; the exchange
reads a body's length and stream as werkzeug does."""
import io
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from werkzeug.sansio.utils import get_content_length
from werkzeug.wsgi import get_input_stream

from shim.api.common import parse_body, reject_lone_surrogates
from shim.api.exchange import Exchange
from shim.errors import InvalidRequest


def by_json(data):
    """What reading a body was before orjson: json.loads, then the lone-surrogate check."""
    return reject_lone_surrogates(json.loads(data), data)


def outcome(read, data):
    """(kind, value): what read(data) gives, or the type of error it raises (and its message, for shim's 400s)."""
    try:
        return "value", read(data)
    except InvalidRequest as err:
        return "400", err.message
    except (ValueError, RecursionError) as err:
        return "error", type(err).__name__ if not isinstance(err, json.JSONDecodeError) else "JSONDecodeError"


def same(a, b):
    """Equal, with NaN equal to itself and an int never equal to a float (json.loads keeps them apart)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def assert_read_alike(data):
    ours, theirs = outcome(parse_body, data), outcome(by_json, data)
    assert ours[0] == theirs[0], (data, ours, theirs)
    if ours[0] == "value":
        assert same(ours[1], theirs[1]), (data, ours, theirs)
    else:
        assert ours == theirs


EDGES = [
    b'{"seed": 123456789012345678901234567890}',  # past 64 bits: orjson would read a float
    b'{"seed": 18446744073709551615}', b'{"seed": 18446744073709551616}', b'{"seed": -9223372036854775809}',
    b'{"n": -0, "t": -0.0, "x": 1E5, "y": 1e-400, "z": 1e400}',
    b'{"t": NaN}', b'{"t": Infinity}', b'{"t": -Infinity}',
    b'\xef\xbb\xbf{"model": "m"}',  # a BOM
    '{"model": "m"}'.encode("utf-16"), '{"model": "m"}'.encode("utf-32-le"),
    b'{"content": "\\ud800"}', b'{"content": "\\udc00x"}', b'{"\\ud800": 1}', b'{"content": "\\ud83d\\ude00"}',
    b'{"content": "\xed\xa0\x80"}',  # a surrogate's UTF-8 bytes
    b'{"content": "\xff"}', b'{"content": "caf\xc3\xa9 \xe2\x80\xa8"}',
    b'{"a": 1, "a": 2}', b'[1, 2', b'{"a": 1,}', b'{"a": 01}', b'"\x01"', b'  {"a": [true, false, null]}  \n',
    b'[' * 2000 + b']' * 2000, b'{"a": "' + b"x" * 100_000 + b'"}', b'{"id": "12345678901234567890123"}',
]


@pytest.mark.parametrize("data", EDGES)
def test_edge_bodies_are_read_as_json_loads_reads_them(data):
    assert_read_alike(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-(2 ** 80), max_value=2 ** 80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_is_read_as_json_loads_reads_it(value):
    text = json.dumps(value, ensure_ascii=False)
    assert_read_alike(text.encode("utf-8", "surrogatepass"))
    assert_read_alike(json.dumps(value).encode())  # escaped, lone surrogates as \\u escapes


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_are_read_as_json_loads_reads_them(data):
    assert_read_alike(data)


def exchange(environ):
    return Exchange({"HTTP_X_REQUEST_ID": "r", **environ}, services=None)


@pytest.mark.parametrize("environ", [
    {}, {"CONTENT_LENGTH": "0"}, {"CONTENT_LENGTH": "42"}, {"CONTENT_LENGTH": "0042"}, {"CONTENT_LENGTH": " 42 "},
    {"CONTENT_LENGTH": "-1"}, {"CONTENT_LENGTH": "+5"}, {"CONTENT_LENGTH": "4_2"}, {"CONTENT_LENGTH": "\u0664\u0662"},
    {"CONTENT_LENGTH": "²"}, {"CONTENT_LENGTH": ""}, {"CONTENT_LENGTH": "x"},
    {"CONTENT_LENGTH": "42", "HTTP_TRANSFER_ENCODING": "chunked"},
    {"CONTENT_LENGTH": "42", "HTTP_TRANSFER_ENCODING": "gzip"}, {"HTTP_TRANSFER_ENCODING": "chunked"},
])
def test_a_body_length_is_read_as_werkzeug_reads_it(environ):
    expected = get_content_length(environ.get("CONTENT_LENGTH"), environ.get("HTTP_TRANSFER_ENCODING"))
    assert exchange(environ).content_length == expected


@pytest.mark.parametrize("environ", [
    {"CONTENT_LENGTH": "3", "wsgi.input_terminated": True},
    {"CONTENT_LENGTH": "3"}, {}, {"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True},
])
def test_a_body_stream_reads_as_werkzeugs_does(environ):
    made = [{**environ, "wsgi.input": io.BytesIO(b"abcdef")} for _ in range(2)]
    ours, theirs = exchange(made[0]).body, get_input_stream(made[1])
    assert ours.read() == theirs.read()
    if "wsgi.input_terminated" in environ:
        assert ours is made[0]["wsgi.input"]  # a server that ends the stream itself has it read as it is
