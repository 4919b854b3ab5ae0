"""The HTTP layer over the fake backend: framing, shapes and error paths of both protocols."""
import contextlib
import datetime
import json

import pytest

from shim import generation as g
from shim.errors import UpstreamError

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def sse_events(response):
    text = response.get_data(as_text=True)
    assert text.endswith("data: [DONE]\n\n")
    frames = [f for f in text.split("\n\n") if f]
    return [json.loads(f[len("data: "):]) for f in frames if f.startswith("data: {")]


def ndjson(response):
    lines = response.get_data(as_text=True).split("\n")
    assert lines[-1] == "" and all(lines[:-1]), "NDJSON must be one object per line, no blank lines"
    return [json.loads(line) for line in lines[:-1]]


def test_chat_completion_json(client, fake):
    body = client.post("/v1/chat/completions", json=CHAT).get_json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello world", "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                           "prompt_tokens_details": {"cached_tokens": 0}}
    assert fake.history[0].messages[0].content == "hi"


def test_whole_answers_are_compact_json_in_the_fields_order_with_line_breakers_escaped(client, fake):
    fake.say("a\u2028b", " é")
    raw = client.post("/v1/chat/completions", json=CHAT).get_data()
    assert raw.startswith(b'{"id":"chatcmpl-') and b'"content":"a\\u2028b \xc3\xa9"' in raw
    assert json.loads(raw)["choices"][0]["message"]["content"] == "a\u2028b é"


def test_the_json_provider_hands_types_only_flask_knows_to_flask(client):
    provider = client.application.json
    assert json.loads(provider.dumps({"when": datetime.date(2026, 1, 2)})) == {"when": "Fri, 02 Jan 2026 00:00:00 GMT"}


def test_chat_completion_alias_resolves_and_echoes_requested_name(client, fake):
    body = client.post("/v1/chat/completions", json={**CHAT, "model": "alias"}).get_json()
    assert body["model"] == "alias"
    assert fake.history[0].model == "fake-model"


def test_chat_stream_frames(client):
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": True,
                                                         "stream_options": {"include_usage": True}})
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    chunks = sse_events(response)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "Hello"}
    assert chunks[1]["choices"][0]["delta"] == {"content": " world"}
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[3]["choices"] == [] and chunks[3]["usage"]["total_tokens"] == 5
    assert len({c["id"] for c in chunks}) == 1


def test_chat_stream_error_mid_stream_is_in_band(client, fake):
    fake.fail_after(["partial"], UpstreamError("upstream went away"))
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    chunks = sse_events(response)
    assert chunks[0]["choices"][0]["delta"]["content"] == "partial"
    assert chunks[-1] == {"error": {"message": "upstream went away", "type": "api_error", "param": None,
                                    "code": "upstream_error"}}


def test_ollama_stream_error_mid_stream_is_in_band(client, fake):
    fake.fail_after(["partial"], UpstreamError("upstream went away"))
    lines = ndjson(client.post("/api/generate", json={"model": "fake-model", "prompt": "x"}))
    assert lines[0]["response"] == "partial"
    assert lines[-1] == {"error": "upstream went away"}


def test_stream_close_cancels_generation(client, fake):
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    next(response.response)
    response.close()
    assert fake.cancels[0].is_set()


def test_ollama_generate_stream(client):
    lines = ndjson(client.post("/api/generate", json={"model": "fake-model", "prompt": "x"}))
    assert [line["response"] for line in lines] == ["Hello", " world", ""]
    final = lines[-1]
    assert final["done"] is True and final["done_reason"] == "stop" and final["context"] == [1, 2, 3]
    assert final["eval_count"] == 2 and final["prompt_eval_count"] == 3 and final["total_duration"] == 1000
    assert all(not line["done"] for line in lines[:-1])


def test_ollama_chat_not_streaming(client):
    body = client.post("/api/chat", json={**CHAT, "stream": False}).get_json()
    assert body["message"] == {"role": "assistant", "content": "Hello world"}
    assert body["done"] is True and "context" not in body


def test_ollama_chat_tool_calls(client, fake):
    fake.say(reason="tool_calls", tool_calls=[g.ToolCall("call_1", "get_weather", '{"city": "Paris"}')])
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    lines = ndjson(client.post("/api/chat", json={**CHAT, "tools": tools}))
    call_line = [line for line in lines if line["message"].get("tool_calls")][0]
    assert call_line["message"]["tool_calls"][0]["function"] == {"index": 0, "name": "get_weather",
                                                                 "arguments": {"city": "Paris"}}
    assert lines[-1]["done_reason"] == "stop"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_openai_malformed_json(client, path):
    response = client.post(path, data="{not json", content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert "not valid JSON" in error["message"] and error["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat", "/api/show"])
def test_ollama_malformed_json(client, path):
    response = client.post(path, data="[1,", content_type="application/json")
    assert response.status_code == 400
    assert "not valid JSON" in response.get_json()["error"]


def test_missing_body(client):
    response = client.post("/api/chat")
    assert response.status_code == 400 and response.get_json() == {"error": "missing request body"}


def test_openai_wrong_type_names_field(client):
    response = client.post("/v1/chat/completions", json={**CHAT, "temperature": "hot"})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "temperature"


def test_ollama_wrong_option_type_names_field(client):
    response = client.post("/api/generate", json={"model": "fake-model", "prompt": "x",
                                                  "options": {"temperature": "hot"}})
    assert response.status_code == 400 and "options.temperature" in response.get_json()["error"]


def test_unknown_model_openai(client):
    response = client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert response.status_code == 404
    assert response.get_json()["error"] == {"message": "model 'nope' not found", "type": "invalid_request_error",
                                            "param": "model", "code": "model_not_found"}


def test_unknown_model_ollama(client):
    response = client.post("/api/chat", json={**CHAT, "model": "nope"})
    assert response.status_code == 404 and response.get_json() == {"error": "model 'nope' not found"}


def test_wrong_method(client):
    response = client.get("/v1/chat/completions")
    assert response.status_code == 405 and "POST" in response.headers["Allow"]
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert client.get("/api/chat").get_json()["error"].startswith("method GET is not allowed")


def test_unknown_path(client):
    assert client.get("/v1/nothing").get_json()["error"]["code"] == "not_found"
    assert "no such endpoint" in client.get("/api/nothing").get_json()["error"]


def test_oversized_body(client):
    response = client.post("/api/chat", data="x" * 5000, content_type="application/json")
    assert response.status_code == 413 and "limit" in response.get_json()["error"]


def test_envelope_success_and_error(client):
    body = client.post("/api/v1/chat/completions", json=CHAT).get_json()
    assert body["success"] is True and body["code"] == "200" and body["message"] == "successful"
    assert body["data"]["choices"][0]["message"]["content"] == "Hello world"
    error = client.post("/api/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert error.status_code == 404
    assert error.get_json() == {"success": False, "code": "404", "message": "model 'nope' not found", "data": None}


def test_models_lists(client):
    assert client.get("/v1/models").get_json()["data"][0]["id"] == "fake-model"
    assert client.get("/v1/models/alias").get_json()["id"] == "alias"
    assert client.get("/v1/models/fake-model:latest").get_json()["id"] == "fake-model"
    assert client.get("/v1/models/nope").status_code == 404
    assert client.get("/api/tags").get_json()["models"][0]["name"] == "fake-model"
    assert client.get("/api/ps").get_json()["models"][0]["name"] == "fake-model"


def test_root_and_version(client):
    assert client.get("/").get_data(as_text=True) == "Ollama is running"
    assert client.head("/").status_code == 200
    assert "version" in client.get("/api/version").get_json()


def test_n_choices(client):
    body = client.post("/v1/chat/completions", json={**CHAT, "n": 3}).get_json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert body["usage"]["completion_tokens"] == 6


LONE = "\\ud800"  # JSON text for a high surrogate with no low one after it: valid JSON, not valid Unicode


@pytest.mark.parametrize("method, path, body, field", [
    ("POST", "/v1/chat/completions",
     '{"model": "fake-model", "messages": [{"role": "user", "content": "hi LONE"}]}', "messages[0].content"),
    ("POST", "/api/v1/chat/completions", '{"model": "LONE", "messages": []}', "model"),
    ("POST", "/v1/completions", '{"model": "fake-model", "prompt": ["ok", "LONE"]}', "prompt[1]"),
    ("POST", "/v1/embeddings", '{"model": "fake-model", "input": "\\udfff"}', "input"),
    ("POST", "/api/generate", '{"model": "fake-model", "prompt": "x", "options": {"stop": ["LONE"]}}',
     "options.stop[0]"),
    ("POST", "/api/chat", '{"model": "fake-model", "messages": [{"role": "user", "content": "x", "images": ["LONE"]}]}',
     "messages[0].images[0]"),
    ("POST", "/api/show", '{"model": "LONE"}', "model"),
    ("POST", "/api/embed", '{"model": "fake-model", "input": ["LONE"]}', "input[0]"),
    ("POST", "/api/embeddings", '{"model": "fake-model", "prompt": "LONE"}', "prompt"),
    ("POST", "/api/pull", '{"model": "LONE"}', "model"),
    ("POST", "/api/push", '{"name": "LONE"}', "name"),
    ("POST", "/api/create", '{"model": "mine", "system": "LONE"}', "system"),
    ("POST", "/api/copy", '{"source": "fake-model", "destination": "LONE"}', "destination"),
    ("DELETE", "/api/delete", '{"model": "LONE"}', "model"),
])
def test_lone_surrogate_anywhere_is_a_400_naming_the_field(client, method, path, body, field):
    response = client.open(path, method=method, data=body.replace("LONE", LONE), content_type="application/json")
    assert response.status_code == 400, response.get_data()
    if path.startswith("/v1/"):
        error = response.get_json()["error"]
        assert error["param"] == field and "surrogate" in error["message"]
    else:
        body = response.get_json()
        message = body["message"] if path.startswith("/api/v1/") else body["error"]
        assert f"'{field}' holds a lone UTF-16 surrogate" in message


@pytest.mark.parametrize("body, message", [
    (b'{"model": "fake-model", "messages": [], "\\udc00": 1}', "a key in the request body holds"),
    (b'{"model": "fake-model", "options": {"ok": {"\\ud800x": 1}}}', "a key in 'options.ok' holds"),
    (b'{"model": "\xed\xa0\x80"}', "'model' holds"),  # a surrogate sent as raw (CESU-style) UTF-8 bytes
    (b'{"model": "\\uDBFF"}', "'model' holds"),
    (b'{"model": "fake-model", "messages": ["\\ud83d", "\\ude00"]}', "'messages[1]' holds"),  # a pair's halves apart
])
def test_lone_surrogate_in_a_key_or_raw_bytes_is_a_400(client, body, message):
    response = client.post("/api/chat", data=body, content_type="application/json")
    assert response.status_code == 400 and message in response.get_json()["error"]


@pytest.mark.parametrize("content, text", [
    ("\\ud83d\\ude00", "\U0001F600"),  # a pair is one character
    ("\\\\ud800", "\\ud800"),  # an escaped backslash, then the letters ud800
    ("\ud55c\uad6d\uc5b4", "\ud55c\uad6d\uc5b4"),  # Hangul: raw UTF-8 bytes starting 0xed, no surrogate
])
def test_strings_without_lone_surrogates_pass(client, fake, content, text):
    body = '{"model": "fake-model", "messages": [{"role": "user", "content": "%s"}]}' % content
    response = client.post("/v1/chat/completions", data=body.encode(), content_type="application/json")
    assert response.status_code == 200 and fake.history[0].messages[0].content == text


@contextlib.contextmanager
def serving(app):
    """A request to app under way (its exchange current), as the views see one."""
    from shim.api import exchange
    token = exchange.entered(exchange.Exchange({}, app.extensions["shim"]))
    try:
        yield
    finally:
        exchange.left(token)


def test_stream_response_frames_begin_chunks_end_then_closes(client):
    from shim.api import common
    from shim.protocols.render import StreamRenderer
    from shim.streaming import SSE

    class Letters(StreamRenderer):
        def begin(self):
            return [{"at": "begin"}]

        def chunks(self, event):
            return [{"at": event}]

    with serving(client.application):
        answer = common.stream_response(common.Started(iter(["a", "b"])), Letters(), SSE())
    assert b"".join(answer.body) == (b'data: {"at":"begin"}\n\ndata: {"at":"a"}\n\n'
                                     b'data: {"at":"b"}\n\ndata: [DONE]\n\n')


def test_a_stream_whose_events_beat_themselves_is_written_once_per_pause_with_no_feeder(client, monkeypatch):
    from shim.api import common
    from shim.protocols.render import StreamRenderer
    from shim.streaming import HEARTBEAT, PAUSE, SSE

    class Letters(StreamRenderer):
        def chunks(self, event):
            return [{"at": event}]
    monkeypatch.setattr(common, "with_heartbeats", lambda *a: pytest.fail("the events carry their own heartbeats"))
    with serving(client.application):
        started = common.Started(iter(["a", "b", PAUSE, HEARTBEAT, PAUSE, "c"]), beats=True)
        writes = list(common.stream_response(started, Letters(), SSE()).body)
    assert writes == [b'data: {"at":"a"}\n\ndata: {"at":"b"}\n\n', b": ping\n\n",
                      b'data: {"at":"c"}\n\n', b"data: [DONE]\n\n"]


def _gathered(monkeypatch, events, gone, watch_seconds):
    from shim.api import common
    looks = []
    monkeypatch.setattr(common, "client_watch", lambda: lambda: looks.append(1) or gone)
    monkeypatch.setattr(common, "WATCH_SECONDS", watch_seconds)
    return common.gather(common.Started(iter(events))), looks


def test_gather_looks_for_a_gone_client_once_per_interval_not_per_event(monkeypatch):
    events = [g.TextDelta("x")] * 100 + [g.Finish("stop")]
    gathered, looks = _gathered(monkeypatch, events, gone=False, watch_seconds=60)
    assert gathered == events and looks == []


def test_gather_stops_when_the_client_is_gone(monkeypatch):
    from shim.errors import Cancelled
    with pytest.raises(Cancelled):
        _gathered(monkeypatch, [g.TextDelta("x")] * 3, gone=True, watch_seconds=0)
