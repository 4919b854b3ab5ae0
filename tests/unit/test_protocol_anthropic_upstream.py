"""The Messages API as an upstream, pure: GenerationRequest -> request body, stream events and Messages -> events."""
import base64
import json

import pytest

from shim import generation as g
from shim.errors import Unsupported
from shim.protocols.anthropic import upstream as protocol
from tests.support import HI
from tests.support import WEATHER_TOOL as WEATHER

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF"
TIME = g.Tool("get_time", "", {})


def body(**fields):
    fields.setdefault("messages", HI)
    return protocol.request_body(g.GenerationRequest(model="m", **fields))


def read(*events):
    reader = protocol.StreamReader()
    out = [e for event in events for e in reader.events(event)]
    return out + reader.end(g.Timings())


def start(usage=None):
    return {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
                                                 "model": "m", "content": [], "stop_reason": None,
                                                 "usage": usage or {"input_tokens": 5, "output_tokens": 1}}}


def block(index, content_block):
    return {"type": "content_block_start", "index": index, "content_block": content_block}


def delta(index, **d):
    return {"type": "content_block_delta", "index": index, "delta": d}


def stop(index):
    return {"type": "content_block_stop", "index": index}


def end(reason="end_turn", sequence=None, usage=None):
    return [{"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
             "usage": usage or {"output_tokens": 3}}, {"type": "message_stop"}]


def text_stream(*pieces, reason="end_turn", sequence=None):
    return [start(), block(0, {"type": "text", "text": ""}),
            *(delta(0, type="text_delta", text=p) for p in pieces), stop(0), *end(reason, sequence)]


# ---------------------------------------------------------------- the request

def test_minimal_body_streams_with_the_default_max_tokens():
    assert body() == {"model": "m", "max_tokens": 4096, "stream": True,
                      "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}


def test_max_tokens_default_is_the_backends_setting_and_a_request_max_tokens_wins():
    request = g.GenerationRequest(model="m", messages=HI)
    assert protocol.request_body(request, max_tokens_default=100)["max_tokens"] == 100
    assert body(max_tokens=7)["max_tokens"] == 7


def test_sampling_and_stop_sequences():
    sent = body(sampling=g.Sampling(temperature=0.0, top_p=0.9, top_k=40), stop=("END", "\n\n"))
    assert sent["temperature"] == 0.0 and sent["top_p"] == 0.9 and sent["top_k"] == 40
    assert sent["stop_sequences"] == ["END", "\n\n"]


def test_system_messages_are_lifted_into_system():
    sent = body(messages=(g.Message("system", "Be brief."), g.Message("user", "hi"), g.Message("system", "Be kind.")))
    assert sent["system"] == "Be brief.\nBe kind."
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


def test_a_prompt_with_system_and_images_is_one_user_turn():
    sent = body(messages=None, prompt="What is it?", system="Be brief.", images=(JPEG,))
    assert sent["system"] == "Be brief."
    assert sent["messages"] == [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                     "data": base64.b64encode(JPEG).decode()}},
        {"type": "text", "text": "What is it?"}]}]


@pytest.mark.parametrize("image, media_type", [(PNG, "image/png"), (JPEG, "image/jpeg"), (b"GIF89a..", "image/gif"),
                                               (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp")])
def test_images_are_base64_blocks_with_their_media_type(image, media_type):
    sent = body(messages=(g.Message("user", "", images=(image,)),))
    assert sent["messages"][0]["content"] == [{"type": "image", "source": {
        "type": "base64", "media_type": media_type, "data": base64.b64encode(image).decode()}}]


def test_tool_calls_and_results_round_trip_with_results_merged_into_one_user_turn():
    calls = (g.ToolCall("call_1", "get_weather", '{"city": "Paris"}'), g.ToolCall("call_2", "get_time", ""))
    sent = body(messages=(g.Message("user", "Weather and time?"), g.Message("assistant", "Looking.", tool_calls=calls),
                          g.Message("tool", "18C", tool_call_id="call_1"), g.Message("tool", "noon", tool_call_id="call_2"),
                          g.Message("user", "Thanks")), tools=(WEATHER, TIME))
    assert sent["messages"][1:] == [
        {"role": "assistant", "content": [
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "18C"}]},
            {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "noon"}]},
            {"type": "text", "text": "Thanks"}]}]


def test_ollama_style_ids_repeated_per_turn_are_made_unique_and_results_matched_by_name():
    first = g.Message("assistant", "", tool_calls=(g.ToolCall("call_0", "get_time", "{}"),))
    second = g.Message("assistant", "", tool_calls=(g.ToolCall("call_0", "get_weather", '{"city": "Rome"}'),
                                                    g.ToolCall("call_1", "get_time", "{}")))
    sent = body(messages=(g.Message("user", "q"), first, g.Message("tool", "noon", name="get_time"),
                          second, g.Message("tool", "1pm", name="get_time"), g.Message("tool", "20C", name="get_weather")))
    uses = [b["id"] for m in sent["messages"] for b in m["content"] if b["type"] == "tool_use"]
    results = [b["tool_use_id"] for m in sent["messages"] for b in m["content"] if b["type"] == "tool_result"]
    assert len(set(uses)) == 3 and all(set(i) <= set("abcdefghijklmnopqrstuvwxyz_0123456789") for i in uses)
    assert results == [uses[0], uses[2], uses[1]]


def test_an_empty_assistant_turn_is_left_out():
    sent = body(messages=(g.Message("user", "a"), g.Message("assistant", ""), g.Message("user", "b")))
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]


def test_ids_with_characters_anthropic_refuses_are_rewritten_on_both_sides():
    call = g.ToolCall("fc.1:x", "get_time", "{}")
    sent = body(messages=(g.Message("user", "q"), g.Message("assistant", "", tool_calls=(call,)),
                          g.Message("tool", "noon", tool_call_id="fc.1:x")))
    assert sent["messages"][1]["content"][0]["id"] == "fc_1_x"
    assert sent["messages"][2]["content"][0]["tool_use_id"] == "fc_1_x"


def test_tool_call_arguments_that_are_not_an_object_are_refused():
    call = g.ToolCall("c", "get_time", '{"cut": ')
    with pytest.raises(Unsupported) as err:
        body(messages=(g.Message("user", "q"), g.Message("assistant", "", tool_calls=(call,))))
    assert err.value.param == "messages" and "get_time" in err.value.message


def test_tools_become_input_schemas():
    assert body(tools=(WEATHER, TIME))["tools"] == [
        {"name": "get_weather", "description": "Weather of a city", "input_schema": dict(WEATHER.parameters)},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}]


@pytest.mark.parametrize("choice, parallel, expected", [
    (g.ToolChoice(), True, {"type": "auto"}),
    (g.ToolChoice("required"), True, {"type": "any"}),
    (g.ToolChoice.named("get_time"), True, {"type": "tool", "name": "get_time"}),
    (g.ToolChoice("none"), True, {"type": "none"}),
    (g.ToolChoice(), False, {"type": "auto", "disable_parallel_tool_use": True}),
    (g.ToolChoice("required"), False, {"type": "any", "disable_parallel_tool_use": True}),
    (g.ToolChoice("none"), False, {"type": "none"}),
])
def test_tool_choice(choice, parallel, expected):
    assert body(tools=(WEATHER, TIME), tool_choice=choice, parallel_tool_calls=parallel)["tool_choice"] == expected


def test_allowed_tools_sends_only_those():
    sent = body(tools=(WEATHER, TIME), tool_choice=g.ToolChoice("required", allowed=("get_time",)))
    assert [t["name"] for t in sent["tools"]] == ["get_time"] and sent["tool_choice"] == {"type": "any"}


def test_no_tools_no_tool_fields():
    assert "tools" not in body() and "tool_choice" not in body()


@pytest.mark.parametrize("think, max_tokens, expected, expected_max", [
    (g.Think(budget_tokens=2000), None, {"type": "enabled", "budget_tokens": 2000}, 4096 + 2000),
    (g.Think(effort="high"), None, {"type": "enabled", "budget_tokens": 16384}, 4096 + 16384),
    (g.Think(), 8000, {"type": "enabled", "budget_tokens": 1024}, 8000),
    (g.Think(budget_tokens=5000), 3000, {"type": "enabled", "budget_tokens": 2999}, 3000),
    (g.Think(enabled=False), None, {"type": "disabled"}, 4096),
])
def test_think(think, max_tokens, expected, expected_max):
    sent = body(think=think, max_tokens=max_tokens)
    assert sent["thinking"] == expected and sent["max_tokens"] == expected_max


@pytest.mark.parametrize("param, fields", [
    ("response_format", {"response_format": g.ResponseFormat("json")}),
    ("logprobs", {"logprobs": True}),
    ("n", {"n": 2}),
    ("seed", {"sampling": g.Sampling(seed=7)}),
    ("presence_penalty", {"sampling": g.Sampling(presence_penalty=0.5)}),
    ("frequency_penalty", {"sampling": g.Sampling(frequency_penalty=0.5)}),
    ("repeat_penalty", {"sampling": g.Sampling(repeat_penalty=1.1)}),
    ("min_p", {"sampling": g.Sampling(min_p=0.1)}),
    ("temperature", {"sampling": g.Sampling(temperature=1.5)}),
    ("raw", {"messages": None, "prompt": "x", "raw": True}),
    ("tool_choice", {"tools": (TIME,), "tool_choice": g.ToolChoice.named("x", "custom")}),
])
def test_what_the_messages_api_cannot_carry_is_refused_by_name(param, fields):
    fields.setdefault("messages", HI)
    with pytest.raises(Unsupported) as err:
        protocol.refuse_unsupported(g.GenerationRequest(model="m", **fields), "claude")
    assert err.value.param == param and "claude" in err.value.message


def test_a_plain_request_is_not_refused():
    protocol.refuse_unsupported(g.GenerationRequest(model="m", messages=HI, sampling=g.Sampling(temperature=1.0),
                                                    tools=(TIME,), think=g.Think()), "claude")


# ---------------------------------------------------------------- the answer

def test_text_stream_to_text_deltas_and_finish_with_usage():
    events = read(*text_stream("Hel", "lo"))
    assert [e.text for e in events if isinstance(e, g.TextDelta)] == ["Hel", "lo"]
    finish = events[-1]
    assert isinstance(finish, g.Finish) and finish.reason == "stop"
    assert finish.usage == g.Usage(5, 3, 0)


def test_cached_tokens_count_in_the_prompt():
    usage = {"input_tokens": 4, "cache_read_input_tokens": 10, "cache_creation_input_tokens": 2, "output_tokens": 1}
    events = read(start(usage), *end(usage={"output_tokens": 9}))
    assert events[-1].usage == g.Usage(16, 9, 10)


@pytest.mark.parametrize("reason, expected", [("end_turn", "stop"), ("stop_sequence", "stop"),
                                              ("max_tokens", "length"), ("tool_use", "tool_calls"),
                                              ("refusal", "stop"), ("something_new", "stop")])
def test_stop_reasons(reason, expected):
    assert read(*text_stream("x", reason=reason))[-1].reason == expected


def test_the_matched_stop_sequence_is_kept():
    finish = read(*text_stream("x", reason="stop_sequence", sequence="END"))[-1]
    assert finish.reason == "stop"
    assert finish.stop_sequence == "END"


def test_thinking_then_text():
    events = read(start(), block(0, {"type": "thinking", "thinking": ""}),
                  delta(0, type="thinking_delta", thinking="Hmm."), delta(0, type="signature_delta", signature="s"),
                  stop(0), block(1, {"type": "text", "text": ""}), delta(1, type="text_delta", text="Yes"), stop(1),
                  *end())
    assert events[:2] == [g.ReasoningDelta("Hmm."), g.TextDelta("Yes")]


def test_tool_use_blocks_become_whole_calls_with_the_upstream_ids():
    events = read(start(), block(0, {"type": "text", "text": ""}), delta(0, type="text_delta", text="Let me see."),
                  stop(0), block(1, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
                  delta(1, type="input_json_delta", partial_json='{"city": '),
                  delta(1, type="input_json_delta", partial_json='"Paris"}'), stop(1),
                  block(2, {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}), stop(2),
                  *end("tool_use"))
    calls = [e for e in events if isinstance(e, g.ToolCallDelta)]
    assert calls == [g.ToolCallDelta(g.ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'), 0, 0),
                     g.ToolCallDelta(g.ToolCall("toolu_2", "get_time", "{}"), 0, 1)]
    assert events[-1].reason == "tool_calls"


def test_a_tool_call_cut_off_is_partial():
    events = read(start(), block(0, {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}),
                  delta(0, type="input_json_delta", partial_json='{"ci'),
                  {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 5}})
    assert events[0] == g.ToolCallDelta(g.ToolCall("toolu_1", "get_weather", '{"ci', partial=True), 0, 0)
    assert events[-1].reason == "length"


def test_a_whole_message():
    reader = protocol.StreamReader()
    events = reader.message({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "thinking", "thinking": "Hmm", "signature": "x"}, {"type": "text", "text": "Hi"},
                    {"type": "tool_use", "id": "toolu_9", "name": "get_time", "input": {"tz": "UTC"}}],
        "stop_reason": "tool_use", "stop_sequence": None, "usage": {"input_tokens": 7, "output_tokens": 4}})
    events += reader.end(g.Timings())
    assert events[:3] == [g.ReasoningDelta("Hmm"), g.TextDelta("Hi"),
                          g.ToolCallDelta(g.ToolCall("toolu_9", "get_time", json.dumps({"tz": "UTC"})), 0, 0)]
    assert events[-1].reason == "tool_calls" and events[-1].usage == g.Usage(7, 4, 0)


def test_pings_and_unknown_events_and_blocks_yield_nothing():
    events = read(start(), {"type": "ping"}, {"type": "future_event"},
                  block(0, {"type": "redacted_thinking", "data": "xx"}), stop(0), *text_stream("a")[1:])
    assert [type(e) for e in events] == [g.TextDelta, g.Finish]


@pytest.mark.parametrize("kind, status", [("overloaded_error", 529), ("rate_limit_error", 429),
                                          ("invalid_request_error", 400), ("api_error", 500), ("weird", 500)])
def test_error_events_carry_the_status_of_their_type(kind, status):
    reader = protocol.StreamReader()
    with pytest.raises(protocol.EventError) as err:
        reader.events({"type": "error", "error": {"type": kind, "message": "Overloaded"}})
    assert err.value.status == status and err.value.message == "Overloaded"


def test_models_of_an_anthropic_list():
    listed = protocol.models_of({"data": [
        {"type": "model", "id": "claude-x", "display_name": "Claude X", "created_at": "2025-02-19T00:00:00Z"},
        {"type": "model", "id": "bare"}], "has_more": False})
    assert listed == [("claude-x", "Claude X", 1739923200.0), ("bare", "bare", 0.0)]
