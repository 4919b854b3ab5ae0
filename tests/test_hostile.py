"""Hostile input: malformed and adversarial bodies at every endpoint never give a 5xx or kill a worker."""
import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shim.app import create_app
from shim.config import Settings
from shim.router import Route, Router
from tests.fakes import FakeBackend

CASES = {"count": 0}

OPENAI_POSTS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/api/v1/chat/completions"]
OLLAMA_POSTS = ["/api/generate", "/api/chat", "/api/show", "/api/embed", "/api/embeddings", "/api/pull",
                "/api/copy", "/api/create", "/api/push"]
ANTHROPIC_POSTS = ["/v1/messages", "/v1/messages/count_tokens"]
ANTHROPIC_ERRORS = ("invalid_request_error", "authentication_error", "permission_error", "not_found_error",
                    "request_too_large", "rate_limit_error", "api_error", "overloaded_error")
TEMPLATES = {
    "/v1/messages": {"model": "M", "max_tokens": 1, "system": [{"type": "text", "text": "s"}], "stream": False,
                     "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "temperature": 0.5,
                     "stop_sequences": ["x"], "tools": [], "tool_choice": {"type": "auto"},
                     "thinking": {"type": "disabled"}, "metadata": {"user_id": "u"}},
    "/v1/messages/count_tokens": {"model": "M", "messages": [{"role": "user", "content": "hi"}], "system": "s"},
    "/v1/chat/completions": {"model": "M", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1,
                             "stream": False, "temperature": 0.5, "stop": ["x"], "n": 1, "tools": [],
                             "response_format": {"type": "text"}, "logprobs": False, "seed": 1},
    "/v1/completions": {"model": "M", "prompt": "hi", "max_tokens": 1, "stream": False, "logprobs": 1},
    "/v1/embeddings": {"model": "M", "input": ["a", "b"], "encoding_format": "float"},
    "/api/generate": {"model": "M", "prompt": "hi", "stream": False, "options": {"num_predict": 1, "top_k": 3},
                      "format": "json", "images": [], "keep_alive": "5m"},
    "/api/chat": {"model": "M", "messages": [{"role": "user", "content": "hi"}], "stream": False,
                  "options": {"num_predict": 1}, "tools": []},
    "/api/embed": {"model": "M", "input": "hi"},
}
MAX_TOKEN_FIELDS = {"max_tokens": 1, "n": 1}

json_leaf = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
             | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)


def mutated_body(path, model):
    """A valid body for path with one field replaced, removed or added by hypothesis."""
    template = json.loads(json.dumps(TEMPLATES.get(path, {"model": "M"})).replace('"M"', json.dumps(model)))
    keys = sorted(template) + ["unknown_field"]
    return st.tuples(st.sampled_from(keys), json_value, st.booleans()).map(
        lambda change: _apply(template, *change))


def _apply(template, key, value, remove):
    body = dict(template)
    if remove:
        body.pop(key, None)
    else:
        body[key] = value
    return body


def raw_bodies():
    return st.one_of(
        st.binary(max_size=200),
        st.just(b""), st.just(b"\xff\xfe\x00garbage"), st.just(b"[" * 50_000), st.just(b'{"a":' * 20_000),
        st.just(b"{" + b'"x":"' + b"y" * 20_000 + b'"}'), st.just(b"null"), st.just(b"[]"), st.just(b'"text"'),
        st.just(b'{"model": "\xc3\x28"}'), json_value.map(lambda v: json.dumps(v).encode()),
    )


def check_shape(path, status, body_bytes):
    """A 4xx carries an error in the protocol of its path; nothing is a 5xx."""
    assert status < 500, (path, status, body_bytes[:300])
    if status < 400:
        return
    body = json.loads(body_bytes)
    if path.startswith("/v1/messages"):
        assert body["type"] == "error" and body["error"]["type"] in ANTHROPIC_ERRORS
        assert isinstance(body["error"]["message"], str)
    elif path.startswith("/api/v1/"):
        assert body["success"] is False and isinstance(body["message"], str)
    elif path.startswith("/v1/"):
        assert isinstance(body["error"]["message"], str) and body["error"]["type"]
    else:
        assert isinstance(body["error"], str) and body["error"]


@pytest.fixture(scope="module")
def client():
    fake = FakeBackend("M")
    router = Router({"fake": fake}, [Route("M", "fake", "M")])
    return create_app(Settings(embedded_model=False, max_body_bytes=64 * 1024), router=router).test_client()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_bodies_in_process(client, data):
    path = data.draw(st.sampled_from(OPENAI_POSTS + OLLAMA_POSTS + ANTHROPIC_POSTS))
    body = data.draw(mutated_body(path, "M"))
    response = client.post(path, data=json.dumps(body), content_type="application/json")
    check_shape(path, response.status_code, response.get_data())
    CASES["count"] += 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(OPENAI_POSTS + OLLAMA_POSTS + ANTHROPIC_POSTS), raw=raw_bodies(),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]))
def test_raw_bodies_in_process(client, path, raw, content_type):
    response = client.post(path, data=raw, content_type=content_type)
    check_shape(path, response.status_code, response.get_data())
    CASES["count"] += 1


def test_enormous_body_is_413(client):
    response = client.post("/api/chat", data=b"x" * (65 * 1024), content_type="application/json")
    assert response.status_code == 413
    CASES["count"] += 1


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_bodies_against_gunicorn_and_the_real_model(shim_url, data):
    path = data.draw(st.sampled_from(OPENAI_POSTS + OLLAMA_POSTS[:5] + ANTHROPIC_POSTS))
    body = data.draw(mutated_body(path, "smollm2:135m"))
    for field, value in MAX_TOKEN_FIELDS.items():  # keep every generation to one token, whatever else changed
        if body.get(field) is None or (isinstance(body[field], int) and not isinstance(body[field], bool)):
            body[field] = value
    if body.get("options") is None:
        body["options"] = {}
    if isinstance(body["options"], dict):
        body["options"] = {**body["options"], "num_predict": 1}
    response = requests.post(shim_url + path, data=json.dumps(body), timeout=60,
                             headers={"Content-Type": "application/json"})
    check_shape(path, response.status_code, response.content)
    CASES["count"] += 1


lone_surrogate_text = st.tuples(st.text(max_size=5), st.integers(0xD800, 0xDFFF).map(chr), st.text(max_size=5)).map(
    "".join)
"A string holding one unpaired UTF-16 surrogate (st.text never draws surrogates, so it cannot find a pair)."
with_lone_surrogate = st.recursive(
    lone_surrogate_text | st.dictionaries(lone_surrogate_text, json_value, min_size=1, max_size=2),
    lambda inner: st.lists(inner, min_size=1, max_size=3) | st.dictionaries(st.text(max_size=8), inner, min_size=1,
                                                                            max_size=3), max_leaves=6)
"A JSON value with a lone surrogate somewhere in it, as a value or a key."


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_lone_surrogates_anywhere_are_a_400_naming_the_field(client, data):
    path = data.draw(st.sampled_from(OPENAI_POSTS + OLLAMA_POSTS + ANTHROPIC_POSTS))
    body = data.draw(mutated_body(path, "M"))
    key = data.draw(st.sampled_from(sorted(body) + ["unknown_field"]))
    body[key] = data.draw(with_lone_surrogate)
    response = client.post(path, data=json.dumps(body), content_type="application/json")  # as \udxxx escapes
    check_shape(path, response.status_code, response.get_data())
    assert response.status_code == 400
    error = response.get_json()
    message = error["error"]["message"] if path.startswith("/v1/") else error.get("message") or error["error"]
    assert "lone UTF-16 surrogate" in message and f"'{key}" in message
    CASES["count"] += 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(OPENAI_POSTS + OLLAMA_POSTS + ANTHROPIC_POSTS), raw=raw_bodies())
def test_raw_bodies_against_gunicorn(shim_url, path, raw):
    response = requests.post(shim_url + path, data=raw, timeout=30, headers={"Content-Type": "application/json"})
    check_shape(path, response.status_code, response.content)
    assert requests.get(shim_url + "/health", timeout=5).ok, "the worker must live on"
    CASES["count"] += 1


@pytest.mark.parametrize("path, body, field", [
    ("/api/show", b'{"model": "\\ud800"}', "'model'"),
    ("/api/chat", b'{"model": "smollm2:135m", "messages": [{"role": "user", "content": "hi \\udfff"}]}',
     "'messages[0].content'"),
])
def test_lone_surrogate_against_gunicorn(shim_url, path, body, field):
    response = requests.post(shim_url + path, data=body, timeout=30, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and f"{field} holds a lone UTF-16 surrogate" in response.json()["error"]
    CASES["count"] += 1
