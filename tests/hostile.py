"""Hostile input for every endpoint: hypothesis strategies for mutated and raw bodies, and the check of an error's shape."""
import json

from hypothesis import strategies as st

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


lone_surrogate_text = st.tuples(st.text(max_size=5), st.integers(0xD800, 0xDFFF).map(chr), st.text(max_size=5)).map(
    "".join)
"A string holding one unpaired UTF-16 surrogate (st.text never draws surrogates, so it cannot find a pair)."


with_lone_surrogate = st.recursive(
    lone_surrogate_text | st.dictionaries(lone_surrogate_text, json_value, min_size=1, max_size=2),
    lambda inner: st.lists(inner, min_size=1, max_size=3) | st.dictionaries(st.text(max_size=8), inner, min_size=1,
                                                                            max_size=3), max_leaves=6)
"A JSON value with a lone surrogate somewhere in it, as a value or a key."
