"""Unit tests for shim.protocols.anthropic: plain dicts in, dataclasses and dicts out; and the blueprint over a fake."""
import base64
import json

import pytest

from shim import generation as g
from shim.backends.scheduler import fits
from shim.errors import (BackendUnavailable, ContextLengthExceeded, InvalidRequest, ModelNotFound, ServerBusy,
                         ShimError, Unauthorized, Unsupported)
from shim.protocols.anthropic import request as req
from shim.protocols.anthropic import response as resp
from shim.streaming import parse_sse

USER = {"role": "user", "content": "Hi"}
WEATHER = {"name": "get_weather", "description": "Weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
PNG = base64.b64encode(b"\x89PNG fake").decode()


def messages(**fields):
    return req.parse_messages({"model": "m", "max_tokens": 100, "messages": [USER], **fields})


def refused(exc_type, param, **fields):
    with pytest.raises(exc_type) as caught:
        messages(**fields)
    assert caught.value.param == param, caught.value.message
    return caught.value


# ---------------------------------------------------------------- requests

def test_minimal_request_defaults():
    call = messages()
    r = call.request
    assert (r.model, r.max_tokens, r.stop, r.tools, r.think, r.response_format) == ("m", 100, (), (), None, None)
    assert r.messages == (g.Message("user", "Hi"),)
    assert (call.stream, call.user_id) == (False, None)


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "messages": [USER]}, "max_tokens"),
    ({"max_tokens": 5, "messages": [USER]}, "model"),
    ({"model": "m", "max_tokens": 5}, "messages"),
    ({"model": "m", "max_tokens": 5, "messages": []}, "messages"),
    ({"model": "m", "max_tokens": 0, "messages": [USER]}, "max_tokens"),
    ({"model": "m", "max_tokens": "5", "messages": [USER]}, "max_tokens"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 7}]}, "messages[0].content"),
    ({"model": "m", "max_tokens": 5, "messages": [USER], "temperature": 1.5}, "temperature"),
    ({"model": "m", "max_tokens": 5, "messages": [USER], "stop_sequences": [1]}, "stop_sequences"),
    ({"model": "m", "max_tokens": 5, "messages": [USER], "stream": "yes"}, "stream"),
])
def test_bad_fields_are_named(body, param):
    with pytest.raises(InvalidRequest) as caught:
        req.parse_messages(body)
    assert caught.value.param == param


def test_unknown_fields_and_claude_code_extras_are_accepted():
    call = messages(context_management={"edits": []}, service_tier="auto", container=None, inference_geo="eu",
                    cache_control={"type": "ephemeral"}, metadata={"user_id": "u-1"}, brand_new_field={"x": 1})
    assert call.user_id == "u-1"


def test_system_string_blocks_and_system_messages_are_one_system_prompt():
    system = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1; cch=abc;"},
              {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    turns = [USER, {"role": "system", "content": "Answer in French."}, {"role": "assistant", "content": "Salut"}]
    r = messages(system=system, messages=turns).request
    assert r.messages[0] == g.Message("system", "You are terse.\nAnswer in French.")
    assert [m.role for m in r.messages] == ["system", "user", "assistant"]
    assert messages(system="S").request.messages[0] == g.Message("system", "S")


def test_consecutive_turns_of_one_role_are_merged():
    r = messages(messages=[USER, {"role": "user", "content": [{"type": "text", "text": "there"}]}]).request
    assert r.messages == (g.Message("user", "Hi\nthere"),)


def test_tool_round_trip_history():
    turns = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "I should call", "signature": "sig"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Calling."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "Here you go."},
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "no station"}]}]},
    ]
    r = messages(messages=turns, tools=[WEATHER]).request
    assert [m.role for m in r.messages] == ["user", "assistant", "tool", "tool", "user"]
    assistant = r.messages[1]
    assert (assistant.content, assistant.reasoning) == ("Calling.", "I should call")
    assert [(c.id, c.name, json.loads(c.arguments)) for c in assistant.tool_calls] == [
        ("toolu_1", "get_weather", {"city": "Paris"}), ("toolu_2", "get_weather", {"city": "Rome"})]
    assert r.messages[2] == g.Message("tool", "sunny", tool_call_id="toolu_1", name="get_weather")
    assert r.messages[3] == g.Message("tool", "Error: no station", tool_call_id="toolu_2", name="get_weather")
    assert r.messages[4] == g.Message("user", "Here you go.")


def test_image_and_document_blocks():
    content = [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
               {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain",
                                                                  "data": "milk, eggs"}},
               {"type": "text", "text": "Summarise."}]
    message = messages(messages=[{"role": "user", "content": content}]).request.messages[0]
    assert message.images == (b"\x89PNG fake",)
    assert message.content == "Notes\nmilk, eggs\nSummarise."


@pytest.mark.parametrize("block, param", [
    ({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}, "messages[0].content[0].source"),
    ({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "%%%"}},
     "messages[0].content[0].source.data"),
    ({"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": PNG}},
     "messages[0].content[0].source.media_type"),
    ({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PNG}},
     "messages[0].content[0].source"),
    ({"type": "tool_result", "content": "x"}, "messages[0].content[0].tool_use_id"),
    ({"type": "tool_use", "name": "f", "input": [1]}, "messages[0].content[0].input"),
    ({"text": "no type"}, "messages[0].content[0].type"),
])
def test_bad_blocks_are_named(block, param):
    with pytest.raises(InvalidRequest) as caught:
        messages(messages=[{"role": "user", "content": [block]}])
    assert caught.value.param == param


def test_server_feature_blocks_in_a_replay_are_dropped_not_refused():
    content = [{"type": "server_tool_use", "id": "srv", "name": "web_search", "input": {}},
               {"type": "web_search_tool_result", "tool_use_id": "srv", "content": []},
               {"type": "search_result", "title": "T", "source": "s", "content": [{"type": "text", "text": "body"}]},
               {"type": "text", "text": "ok"}]
    assert messages(messages=[{"role": "user", "content": content}]).request.messages[0].content == "T\nbody\nok"


def test_tools_and_tool_choice():
    r = messages(tools=[{**WEATHER, "cache_control": {"type": "ephemeral"}, "defer_loading": True, "strict": True}],
                 tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}).request
    assert r.tools == (g.Tool("get_weather", "Weather in a city", WEATHER["input_schema"]),)
    assert (r.tool_choice, r.parallel_tool_calls) == (g.ToolChoice.named("get_weather"), False)
    for kind, mode in (("auto", "auto"), ("any", "required"), ("none", "none")):
        r = messages(tools=[WEATHER], tool_choice={"type": kind}).request
        assert (r.tool_choice.mode, r.parallel_tool_calls) == (mode, True)


@pytest.mark.parametrize("fields, param", [
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"description": "no name"}]}, "tools[0].name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "other"}}, "tool_choice.name"),
    ({"tools": [WEATHER], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"tool_choice": {"type": "any"}}, "tool_choice"),
    ({"mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]}, "mcp_servers"),
])
def test_bad_tools_are_named(fields, param):
    refused(InvalidRequest, param, **fields)


def test_thinking_and_effort():
    assert messages(thinking={"type": "enabled", "budget_tokens": 2048}).request.think == g.Think(True, None, 2048)
    effort = messages(thinking={"type": "enabled", "budget_tokens": 2048}, output_config={"effort": "high"})
    assert effort.request.think == g.Think(True, "high", 2048)
    # Adaptive leaves it to the model: Claude Code sends it to every model, thinking or not.
    assert messages(thinking={"type": "adaptive"}, output_config={"effort": "high"}).request.think is None
    assert messages(thinking={"type": "disabled"}).request.think == g.Think(False)
    refused(InvalidRequest, "thinking.budget_tokens", thinking={"type": "enabled"})
    refused(InvalidRequest, "thinking.type", thinking={"type": "sometimes"})
    refused(InvalidRequest, "output_config.effort", output_config={"effort": "extreme"})


def test_sampling_stops_and_output_format():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    r = messages(temperature=0.5, top_p=0.9, top_k=40, stop_sequences=["END", ""],
                 output_config={"format": {"type": "json_schema", "schema": schema}}).request
    assert (r.sampling.temperature, r.sampling.top_p, r.sampling.top_k, r.stop) == (0.5, 0.9, 40, ("END",))
    assert r.response_format == g.ResponseFormat("json_schema", schema=schema)


def test_count_tokens_needs_no_max_tokens():
    r = req.parse_count_tokens({"model": "m", "messages": [USER], "system": "S"})
    assert (r.max_tokens, len(r.messages)) == (None, 2)
    assert req.estimate_tokens(r) >= 1


# ---------------------------------------------------------------- whole messages

def finish(reason="stop", prompt=10, completion=4, cached=0, stop_sequence=None):
    return g.Finish(reason, usage=g.Usage(prompt, completion, cached), stop_sequence=stop_sequence)


def test_render_message_text_thinking_and_tool_use():
    call = g.ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    choice = g.Choice(0, text="Let me check.", thinking="hmm", tool_calls=[call], finish=finish("tool_calls"))
    body = resp.render_message(choice, id="msg_1", model="m")
    assert [b["type"] for b in body["content"]] == ["thinking", "text", "tool_use"]
    assert body["content"][2] == {"type": "tool_use", "id": "call_1", "name": "get_weather",
                                  "input": {"city": "Paris"}}
    assert (body["stop_reason"], body["stop_sequence"]) == ("tool_use", None)


@pytest.mark.parametrize("event, called, expected", [
    (finish("stop"), False, ("end_turn", None)),
    (finish("length"), False, ("max_tokens", None)),
    (finish("length"), True, ("max_tokens", None)),
    (finish("stop"), True, ("tool_use", None)),
    (finish("stop", stop_sequence="END"), False, ("stop_sequence", "END")),
])
def test_stop_reasons(event, called, expected):
    assert resp.stop_reason(event, called) == expected


def test_usage_keeps_cached_tokens_out_of_input_tokens():
    assert resp.render_usage(g.Usage(100, 7, cached_tokens=60)) == {
        "input_tokens": 40, "output_tokens": 7, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 60}
    assert resp.render_usage(g.Usage(0, 7), prompt_tokens=12)["input_tokens"] == 12


def test_a_cut_off_tool_call_still_has_an_object_input():
    body = resp.render_message(g.Choice(0, tool_calls=[g.ToolCall("c", "f", '{"city": "Pa', partial=True)],
                                        finish=finish("length")), id="msg_1", model="m")
    assert body["content"][0]["input"] == {} and body["stop_reason"] == "max_tokens"


# ---------------------------------------------------------------- streams

def stream(*events, prompt_tokens=0):
    renderer = resp.MessageStream(id="msg_1", model="m", prompt_tokens=prompt_tokens)
    chunks = list(renderer.begin())
    for event in events:
        chunks += renderer.chunks(event)
    return chunks + list(renderer.end())


def test_stream_event_sequence_with_every_block_kind():
    chunks = stream(g.Accepted(prompt_tokens=25), g.ReasoningDelta("hmm"), g.TextDelta("Hi"), g.TextDelta(" there"),
                    g.ToolCallDelta(g.ToolCall("toolu_1", "get_weather", '{"city":"Paris"}')),
                    finish("tool_calls", prompt=25, completion=9))
    assert [c["type"] for c in chunks] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    assert chunks[0]["message"]["usage"]["input_tokens"] == 25
    assert chunks[0]["message"]["stop_reason"] is None
    assert [c["index"] for c in chunks if c["type"].startswith("content_block")] == [0] * 4 + [1] * 4 + [2] * 3
    assert chunks[4]["delta"] == {"type": "signature_delta", "signature": ""}
    assert chunks[10]["content_block"] == {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    assert json.loads(chunks[11]["delta"]["partial_json"]) == {"city": "Paris"}
    assert chunks[13]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert chunks[13]["usage"]["output_tokens"] == 9


def test_streamed_argument_pieces_go_out_as_input_json_deltas_of_one_tool_use_block():
    call = g.ToolCall("toolu_1", "get_weather", '{"city":"Paris"}')
    pieces = [g.ToolCallArgumentsDelta(text, "toolu_1", "get_weather") for text in ('{"ci', 'ty":', '"Paris"}')]
    chunks = stream(g.Accepted(), g.TextDelta("Let me see."), *pieces, g.ToolCallDelta(call), finish("tool_calls"))
    assert [c["type"] for c in chunks] == [
        "message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]
    assert chunks[5]["content_block"] == {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
    sent = "".join(c["delta"]["partial_json"] for c in chunks if c.get("delta", {}).get("type") == "input_json_delta")
    assert json.loads(sent) == {"city": "Paris"} and chunks[-2]["delta"]["stop_reason"] == "tool_use"


def test_a_streamed_call_with_no_argument_pieces_closes_with_an_empty_object():
    chunks = stream(g.Accepted(), g.ToolCallArgumentsDelta("", "toolu_1", "now"),
                    g.ToolCallDelta(g.ToolCall("toolu_1", "now", "{}")), finish("tool_calls"))
    sent = "".join(c["delta"]["partial_json"] for c in chunks if c.get("delta", {}).get("type") == "input_json_delta")
    assert sent == "{}" and [c["type"] for c in chunks].count("content_block_start") == 1


def test_stream_start_uses_the_estimate_when_the_backend_gives_no_count():
    chunks = stream(g.Accepted(), g.TextDelta("x"), finish(prompt=0), prompt_tokens=42)
    assert chunks[0]["message"]["usage"]["input_tokens"] == 42
    assert chunks[-2]["usage"]["input_tokens"] == 42


def test_stream_reports_the_matched_stop_sequence():
    chunks = stream(g.Accepted(), g.TextDelta("a"), finish(stop_sequence="END"))
    assert chunks[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}


def test_stream_error_event_ends_without_message_stop():
    renderer = resp.MessageStream(id="msg_1", model="m")
    list(renderer.chunks(g.Accepted()))
    assert renderer.error(ServerBusy("busy")) == [
        {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}]


# ---------------------------------------------------------------- errors and models

@pytest.mark.parametrize("err, status, kind", [
    (InvalidRequest("bad"), 400, "invalid_request_error"),
    (Unsupported("no"), 400, "invalid_request_error"),
    (Unauthorized("key"), 401, "authentication_error"),
    (ModelNotFound("x"), 404, "not_found_error"),
    (ShimError("too big", status=413), 413, "request_too_large"),
    (ShimError("slow down", status=429), 429, "rate_limit_error"),
    (ServerBusy("full"), 529, "overloaded_error"),
    (ShimError("boom"), 500, "api_error"),
    (BackendUnavailable("down"), 503, "api_error"),
    (ShimError("late", status=504), 504, "timeout_error"),
    (ShimError("gone", status=405), 405, "invalid_request_error"),
])
def test_error_types_and_statuses(err, status, kind):
    body, got = resp.render_error(err)
    assert got == status and body == {"type": "error", "error": {"type": kind, "message": err.message}}


def test_context_overflow_is_worded_as_anthropic_words_it():
    request = g.GenerationRequest("m", messages=(g.Message("user", "x"),), max_tokens=300)
    with pytest.raises(ContextLengthExceeded) as too_long:
        fits(5000, request, 4096)
    assert resp.render_error(too_long.value)[0]["error"]["message"] == "prompt is too long: 5000 tokens > 4096 maximum"
    with pytest.raises(ContextLengthExceeded) as too_much:
        fits(4000, request, 4096)
    assert resp.render_error(too_much.value)[0]["error"]["message"] == (
        "input length and `max_tokens` exceed context limit: 4000 + 300 > 4096, decrease input length or "
        "`max_tokens` and try again")


def test_model_list_pages():
    infos = [g.ModelInfo(name=n, backend="b", modified_at=0) for n in ("a", "b", "c", "d")]
    page = resp.render_models(infos, limit=2)
    assert ([m["id"] for m in page["data"]], page["has_more"], page["first_id"], page["last_id"]) == (
        ["a", "b"], True, "a", "b")
    assert [m["id"] for m in resp.render_models(infos, after_id="b", limit=2)["data"]] == ["c", "d"]
    assert resp.render_models(infos, after_id="b", limit=2)["has_more"] is False
    before = resp.render_models(infos, before_id="d", limit=2)
    assert ([m["id"] for m in before["data"]], before["has_more"]) == (["b", "c"], True)
    assert page["data"][0] == {"type": "model", "id": "a", "display_name": "a", "created_at": "1970-01-01T00:00:00Z"}
    with pytest.raises(InvalidRequest):
        resp.parse_model_page({"limit": "0"})


# ---------------------------------------------------------------- the blueprint, over the fake backend

BODY = {"model": "fake-model", "max_tokens": 20, "messages": [USER]}
ANTHROPIC = {"anthropic-version": "2023-06-01"}


def named_events(response):
    """(event name, data) of each frame of a named-SSE answer."""
    frames = response.get_data(as_text=True).split("\n\n")
    pairs = []
    for frame in filter(None, frames):
        lines = frame.split("\n")
        assert lines[0].startswith("event: "), frame  # the SDK drops frames without an event line
        pairs.append((lines[0][7:], json.loads(next(parse_sse(["\n".join(lines[1:] + [""]).encode()])))))
    return pairs


def test_api_whole_message(client, fake):
    fake.say("Hello", " there")
    response = client.post("/v1/messages?beta=true", json=BODY, headers=ANTHROPIC)
    body = response.get_json()
    assert response.status_code == 200 and response.headers["request-id"].startswith("req_")
    assert body["content"] == [{"type": "text", "text": "Hello there"}]
    assert (body["stop_reason"], body["usage"]["input_tokens"], body["usage"]["output_tokens"]) == ("end_turn", 3, 2)


def test_api_stream_names_every_event(client, fake):
    fake.say("Hel", "lo")
    response = client.post("/v1/messages", json={**BODY, "stream": True})
    assert response.mimetype == "text/event-stream" and response.headers["X-Accel-Buffering"] == "no"
    events = named_events(response)
    assert all(name == data["type"] for name, data in events)
    assert [name for name, _ in events][:2] == ["message_start", "ping"]
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "Hello"
    assert events[-1][0] == "message_stop"


def test_api_error_mid_stream_is_an_error_event(client, fake):
    fake.fail_after(["Hel"], BackendUnavailable("upstream went away"))
    events = named_events(client.post("/v1/messages", json={**BODY, "stream": True}))
    assert events[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "upstream went away"}})
    assert "message_stop" not in [name for name, _ in events]


def test_api_errors_have_anthropics_shape(client):
    missing = client.post("/v1/messages", json={**BODY, "model": "nope"})
    assert missing.status_code == 404 and missing.get_json()["error"]["type"] == "not_found_error"
    bad = client.post("/v1/messages", json={"model": "fake-model", "messages": [USER]})
    assert bad.status_code == 400 and bad.get_json() == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "'max_tokens' is required"}}
    wrong_method = client.get("/v1/messages")
    assert wrong_method.status_code == 405 and wrong_method.get_json()["type"] == "error"


def test_api_full_queue_is_529_overloaded(fake):
    from shim.app import create_app
    from shim.config import Settings
    from shim.router import Route, Router
    app = create_app(Settings(embedded_model=False, max_queue=1), router=Router({"fake": fake}, [
        Route("fake-model", "fake", "fake-model")]))
    app.extensions["shim"].admission.enter("fake-model")  # one request already in flight
    response = app.test_client().post("/v1/messages", json=BODY)
    assert response.status_code == 529 and response.get_json()["error"]["type"] == "overloaded_error"


def test_api_keys_by_x_api_key_or_bearer(fake):
    from shim.app import create_app
    from shim.config import Settings
    from shim.router import Route, Router
    app = create_app(Settings(embedded_model=False, api_keys=("sekrit",)),
                     router=Router({"fake": fake}, [Route("fake-model", "fake", "fake-model")]))
    client = app.test_client()
    denied = client.post("/v1/messages", json=BODY, headers={"x-api-key": "wrong"})
    assert denied.status_code == 401 and denied.get_json()["error"]["type"] == "authentication_error"
    assert client.post("/v1/messages", json=BODY, headers={"x-api-key": "sekrit"}).status_code == 200
    assert client.post("/v1/messages", json=BODY, headers={"Authorization": "Bearer sekrit"}).status_code == 200
    models = client.get("/v1/models", headers={**ANTHROPIC, "x-api-key": "wrong"})
    assert models.status_code == 401 and models.get_json()["error"]["type"] == "authentication_error"
    assert client.get("/v1/models", headers={**ANTHROPIC, "x-api-key": "sekrit"}).get_json()["data"][0]["type"] == \
        "model"


def test_api_models_shape_follows_anthropic_version(client):
    answer = client.get("/v1/models", headers=ANTHROPIC)
    assert answer.headers["request-id"].startswith("req_")
    anthropic = answer.get_json()
    assert anthropic["data"][0]["type"] == "model" and {"has_more", "first_id", "last_id"} <= set(anthropic)
    assert client.get("/v1/models").get_json()["object"] == "list"
    one = client.get("/v1/models/alias", headers=ANTHROPIC).get_json()
    assert (one["type"], one["id"]) == ("model", "alias")
    missing = client.get("/v1/models/nope", headers=ANTHROPIC)
    assert missing.status_code == 404 and missing.get_json()["error"]["type"] == "not_found_error"
    assert client.get("/v1/models/nope").get_json()["error"]["code"] == "model_not_found"


def test_api_count_tokens_estimates_for_a_backend_without_a_tokenizer(client):
    response = client.post("/v1/messages/count_tokens", json={"model": "fake-model", "messages": [
        {"role": "user", "content": "x" * 400}]})
    assert response.get_json() == {"input_tokens": 100}


def test_api_stream_starts_at_once_and_pings_while_the_model_is_silent(fake):
    import threading
    import time

    from shim.app import create_app
    from shim.config import Settings
    from shim.router import Route, Router
    app = create_app(Settings(embedded_model=False, heartbeat_seconds=0.1),
                     router=Router({"fake": fake}, [Route("fake-model", "fake", "fake-model")]))
    fake.say("Hel", "lo")
    fake.hold = threading.Event()  # the model goes silent after its first piece, until released
    response = app.test_client().post("/v1/messages", json={**BODY, "stream": True}, buffered=False)
    frames = iter(response.response)
    started = time.monotonic()
    first = [next(frames) for _ in range(2)]
    assert [f.split(b"\n")[0] for f in first] == [b"event: message_start", b"event: ping"]
    assert time.monotonic() - started < 1
    seen = b""
    while seen.count(b"event: ping") < 4:  # one after message_start, then one per silent 0.1 s
        seen += next(frames)
    fake.hold.set()
    rest = b"".join(frames)
    assert b"event: message_stop" in rest
    response.close()


def test_api_cors_preflight_allows_the_anthropic_sdks_headers(fake):
    from shim.app import create_app
    from shim.config import Settings
    from shim.router import Route, Router
    app = create_app(Settings(embedded_model=False, cors_origins=("https://app.example",)),
                     router=Router({"fake": fake}, [Route("fake-model", "fake", "fake-model")]))
    preflight = app.test_client().options("/v1/messages", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key, anthropic-version, anthropic-beta"})
    allowed = {h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")}
    assert preflight.status_code == 204
    assert {"x-api-key", "anthropic-version", "anthropic-beta", "anthropic-dangerous-direct-browser-access"} <= allowed
