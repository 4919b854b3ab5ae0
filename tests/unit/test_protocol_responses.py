"""Unit tests for shim.protocols.responses: plain dicts in, the contract's dataclasses and Responses events out."""
import json

import pytest

from shim import generation as g
from shim.errors import ContextLengthExceeded, InvalidRequest, ServerBusy, Unsupported, UpstreamError
from shim.protocols.responses import request as rq
from shim.protocols.responses import response as rs

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
PATCH = {"type": "custom", "name": "apply_patch", "description": "Edit files",
         "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"}}
META = rs.Meta("resp_1", "m", 1700000000)


def parse(**fields):
    return rq.parse_request({"model": "m", "input": "Hi", **fields})


def stream(events, custom=frozenset(), logprobs=False):
    renderer = rs.ResponseStream(META, custom, logprobs)
    out = list(renderer.begin())
    for event in events:
        out += renderer.chunks(event)
    out += renderer.end()
    return out, renderer


def types(events):
    return [e["type"] for e in events]


# ---------------------------------------------------------------- requests

def test_string_input_is_one_user_message_and_defaults():
    call = parse()
    r = call.request
    assert r.messages == (g.Message("user", "Hi"),)
    assert (r.max_tokens, r.tools, r.tool_choice, r.response_format, r.think, r.logprobs) == (
        None, (), g.ToolChoice(), None, None, False)
    assert (call.stream, call.store) == (False, True)
    assert call.input_items[0]["id"].startswith("msg_")
    assert call.input_items[0]["content"] == [{"type": "input_text", "text": "Hi"}]


def test_instructions_and_system_and_developer_items_merge_into_one_leading_system_message():
    items = [{"role": "user", "content": "q"}, {"role": "developer", "content": "d"},
             {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "s"}]}]
    r = parse(input=items, instructions="i").request
    assert r.messages == (g.Message("system", "i\n\nd\n\ns"), g.Message("user", "q"))


def test_calls_merge_into_the_assistant_turn_and_outputs_become_named_tool_messages():
    items = [{"role": "user", "content": "q"},
             {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hmm"}]},
             {"role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
             {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Oslo"}'},
             {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
             {"type": "web_search_call", "id": "ws_1", "status": "completed"},
             {"type": "function_call_output", "call_id": "c1", "output": "rainy"},
             {"type": "custom_tool_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "ok"}]}]
    messages = parse(input=items).request.messages
    assert [m.role for m in messages] == ["user", "assistant", "tool", "tool"]
    assert messages[1].content == "Let me look."
    assert messages[1].tool_calls == (g.ToolCall("c1", "get_weather", '{"city":"Oslo"}'),
                                      g.ToolCall("c2", "apply_patch", '{"input": "*** Begin Patch"}'))
    assert (messages[2].content, messages[2].tool_call_id, messages[2].name) == ("rainy", "c1", "get_weather")
    assert (messages[3].content, messages[3].name) == ("ok", "apply_patch")


def test_history_is_prepended_and_its_ids_kept_out_of_this_requests_input_items():
    history = ({"id": "msg_a", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"}]},
               {"id": "msg_b", "type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": "b", "annotations": []}]})
    call = rq.parse_request({"model": "m", "input": "c"}, history)
    assert [m.content for m in call.request.messages] == ["a", "b", "c"]
    assert len(call.input_items) == 1


def test_function_tools_flat_custom_tools_as_one_string_argument_hosted_tools_skipped():
    tools, custom = rq.parse_tools({"tools": [WEATHER, PATCH, {"type": "web_search"}]})
    assert [t.name for t in tools] == ["get_weather", "apply_patch"]
    assert tools[0].parameters == WEATHER["parameters"]
    assert tools[1].parameters["properties"] == {"input": {"type": "string"}}
    assert custom == {"apply_patch"}


def test_unknown_tool_type_is_refused_by_name():
    with pytest.raises(Unsupported) as err:
        parse(tools=[{"type": "gizmo", "name": "x"}])
    assert err.value.param == "tools[0].type"


@pytest.mark.parametrize("choice, expected", [
    ("none", g.ToolChoice("none")),
    ("required", g.ToolChoice("required")),
    ({"type": "function", "name": "get_weather"}, g.ToolChoice.named("get_weather")),
    ({"type": "custom", "name": "apply_patch"}, g.ToolChoice.named("apply_patch")),
    ({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"},
                                                             {"type": "web_search"}]},
     g.ToolChoice("required", allowed=("get_weather",))),
])
def test_tool_choice(choice, expected):
    assert parse(tools=[WEATHER, PATCH], tool_choice=choice).request.tool_choice == expected


@pytest.mark.parametrize("choice, param", [
    ({"type": "web_search_preview"}, "tool_choice"),
    ({"type": "function", "name": "nope"}, "tool_choice.name"),
    ("sometimes", "tool_choice"),
])
def test_tool_choice_refused_by_name(choice, param):
    with pytest.raises(InvalidRequest) as err:
        parse(tools=[WEATHER], tool_choice=choice)
    assert err.value.param == param


def test_text_format_json_schema_and_json_object():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = parse(text={"format": {"type": "json_schema", "name": "thing", "schema": schema, "strict": True}})
    assert fmt.request.response_format == g.ResponseFormat("json_schema", schema=schema, name="thing")
    assert parse(text={"format": {"type": "json_object"}}).request.response_format == g.ResponseFormat("json")
    assert parse(text={"format": {"type": "text"}, "verbosity": "low"}).request.response_format is None


def test_sampling_limits_reasoning_and_logprobs():
    r = parse(temperature=0.5, top_p=0.9, max_output_tokens=7, reasoning={"effort": "high"},
              include=["message.output_text.logprobs", "reasoning.encrypted_content"], top_logprobs=2).request
    assert (r.sampling.temperature, r.sampling.top_p, r.max_tokens) == (0.5, 0.9, 7)
    assert r.think == g.Think(True, "high")
    assert (r.logprobs, r.top_logprobs) == (True, 2)
    assert parse(reasoning={"effort": "none"}).request.think == g.Think(False, None)


@pytest.mark.parametrize("fields, param", [
    ({"background": True}, "background"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"truncation": "auto"}, "truncation"),
    ({"input": 3}, "input"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].type"),
    ({"temperature": 3}, "temperature"),
    ({"max_output_tokens": 0}, "max_output_tokens"),
    ({"reasoning": {"effort": "huge"}}, "reasoning.effort"),
    ({"metadata": {"k": 1}}, "metadata"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
])
def test_bad_or_unsupported_fields_are_refused_by_name(fields, param):
    with pytest.raises(InvalidRequest) as err:
        parse(**fields)
    assert err.value.param == param


def test_unknown_fields_are_ignored():
    assert parse(prompt_cache_key="k", service_tier="auto", some_future_field={"x": 1}).request.model == "m"


# ---------------------------------------------------------------- streams

def test_text_stream_is_complete_numbered_and_ends_completed_with_usage():
    events, renderer = stream([g.Accepted(), g.TextDelta("Hel"), g.TextDelta("lo"),
                               g.Finish("stop", usage=g.Usage(5, 2))])
    assert types(events) == ["response.created", "response.in_progress", "response.output_item.added",
                             "response.content_part.added", "response.output_text.delta",
                             "response.output_text.delta", "response.output_text.done", "response.content_part.done",
                             "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[6]["text"] == "Hello"
    final = events[-1]["response"]
    assert final["status"] == "completed" and final["output"][0]["content"][0]["text"] == "Hello"
    assert final["usage"] == {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 2,
                              "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 7}
    assert renderer.response is final


def test_reasoning_item_first_then_message_then_function_and_custom_calls():
    calls = [g.ToolCallDelta(g.ToolCall("c1", "get_weather", '{"city":"Oslo"}')),
             g.ToolCallDelta(g.ToolCall("c2", "apply_patch", '{"input":"*** Begin Patch"}'), position=1)]
    events, renderer = stream([g.ReasoningDelta("think"), g.TextDelta("ok"), *calls, g.Finish("tool_calls")],
                              custom=frozenset({"apply_patch"}))
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [i["type"] for i in done] == ["reasoning", "message", "function_call", "custom_tool_call"]
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [0, 1, 2, 3]
    assert done[0]["content"] == [{"type": "reasoning_text", "text": "think"}] and done[0]["summary"] == []
    assert (done[2]["call_id"], done[2]["arguments"]) == ("c1", '{"city":"Oslo"}')
    assert (done[3]["call_id"], done[3]["name"], done[3]["input"]) == ("c2", "apply_patch", "*** Begin Patch")
    assert "response.reasoning_text.delta" in types(events)
    assert "response.function_call_arguments.done" in types(events)
    custom_done = next(e for e in events if e["type"] == "response.custom_tool_call_input.done")
    assert custom_done["input"] == "*** Begin Patch"
    assert all(item["id"] for item in done) and renderer.response["output"] == done


def test_function_call_arguments_stream_as_delta_events():
    pieces = [g.ToolCallArgumentsDelta(t, "c1", "get_weather", 0, 0) for t in ("", '{"city":', '"Oslo"}')]
    events, renderer = stream([g.TextDelta("ok"), *pieces,
                               g.ToolCallDelta(g.ToolCall("c1", "get_weather", '{"city":"Oslo"}')),
                               g.Finish("tool_calls")])
    call_events = [e for e in events if e.get("output_index") == 1]
    assert types(call_events) == ["response.output_item.added", "response.function_call_arguments.delta",
                                  "response.function_call_arguments.delta", "response.function_call_arguments.done",
                                  "response.output_item.done"]
    assert call_events[0]["item"]["status"] == "in_progress" and call_events[0]["item"]["arguments"] == ""
    assert [e["delta"] for e in call_events[1:3]] == ['{"city":', '"Oslo"}']
    item = call_events[-1]["item"]
    assert call_events[-2]["arguments"] == item["arguments"] == '{"city":"Oslo"}'
    assert (item["id"], item["call_id"], item["name"], item["status"]) == (
        call_events[0]["item"]["id"], "c1", "get_weather", "completed")
    assert renderer.response["output"][1] == item
    numbers = [e["sequence_number"] for e in events]
    assert numbers == list(range(len(events)))


def test_streamed_call_cut_off_is_incomplete_and_a_custom_tools_pieces_wait_for_the_whole_call():
    events, _ = stream([g.ToolCallArgumentsDelta('{"ci', "c1", "f", 0, 0),
                        g.ToolCallDelta(g.ToolCall("c1", "f", '{"ci', partial=True)),
                        g.ToolCallArgumentsDelta('{"input":"x"}', "c2", "apply_patch", 0, 1),
                        g.ToolCallDelta(g.ToolCall("c2", "apply_patch", '{"input":"x"}'), position=1),
                        g.Finish("length")], custom=frozenset({"apply_patch"}))
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [(i["type"], i["status"]) for i in done] == [("function_call", "incomplete"),
                                                        ("custom_tool_call", "completed")]
    assert [e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"] == ["x"]


def test_length_ends_with_response_incomplete():
    events, _ = stream([g.TextDelta("a"), g.Finish("length")])
    assert types(events)[-1] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert types(events).count("response.completed") == 0


@pytest.mark.parametrize("err, code", [
    (ContextLengthExceeded("too long"), "context_length_exceeded"),
    (InvalidRequest("bad"), "invalid_prompt"),
    (ServerBusy("busy"), "server_is_overloaded"),
    (UpstreamError("broke"), "server_error"),
])
def test_errors_end_with_response_failed_and_a_code_codex_can_act_on(err, code):
    renderer = rs.ResponseStream(META)
    list(renderer.begin())
    renderer.chunks(g.TextDelta("a"))
    (failed,) = renderer.error(err)
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": code, "message": err.message}


def test_logprobs_only_when_included():
    lp = g.TokenLogprob("a", -0.5, (97,), (g.TokenLogprob("b", -1.0, (98,)),))
    with_lp, _ = stream([g.TextDelta("a", logprobs=(lp,)), g.Finish("stop")], logprobs=True)
    delta = next(e for e in with_lp if e["type"] == "response.output_text.delta")
    assert delta["logprobs"] == [{"token": "a", "logprob": -0.5, "bytes": [97],
                                  "top_logprobs": [{"token": "b", "logprob": -1.0, "bytes": [98]}]}]
    without, _ = stream([g.TextDelta("a", logprobs=(lp,)), g.Finish("stop")])
    assert next(e for e in without if e["type"] == "response.output_text.delta")["logprobs"] == []


def test_render_response_is_the_streams_final_response():
    events = [g.TextDelta("Hi"), g.Finish("stop", usage=g.Usage(1, 1))]
    whole = rs.render_response(events, META)
    assert whole["status"] == "completed" and whole["output"][0]["content"][0]["text"] == "Hi"
    assert json.loads(json.dumps(whole)) == whole


def test_error_param_named_as_the_responses_field():
    body = rs.render_error(Unsupported("'think' cannot be carried", param="think"))
    assert body["error"]["param"] == "reasoning.effort" and body["error"]["code"] == "unsupported"


def test_namespace_tools_are_flattened_and_their_calls_go_back_with_the_namespace():
    namespace = {"type": "namespace", "name": "mcp", "description": "An MCP server", "tools": [WEATHER]}
    call = parse(tools=[namespace], input=[
        {"role": "user", "content": "q"},
        {"type": "function_call", "call_id": "c0", "namespace": "mcp", "name": "get_weather", "arguments": "{}"}])
    assert [t.name for t in call.request.tools] == ["mcp__get_weather"]
    assert call.request.messages[1].tool_calls[0].name == "mcp__get_weather"
    events, _ = stream([g.ToolCallDelta(g.ToolCall("c1", "mcp__get_weather", "{}")), g.Finish("tool_calls")])
    assert events[-2]["item"]["name"] == "mcp__get_weather"  # no namespace declared: the name is left whole
    renderer = rs.ResponseStream(META, namespaces=call.namespaces)
    item = renderer.chunks(g.ToolCallDelta(g.ToolCall("c1", "mcp__get_weather", "{}")))[-1]["item"]
    assert (item["namespace"], item["name"]) == ("mcp", "get_weather")


def test_reasoning_items_become_the_reasoning_of_the_assistant_turn_after_them():
    items = [{"role": "user", "content": "q"},
             {"type": "reasoning", "id": "rs_1", "summary": [],
              "content": [{"type": "reasoning_text", "text": "They ask."}]},
             {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "c1", "output": "rainy"},
             {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "It rains."}]},
             {"role": "assistant", "content": "Take an umbrella."}]
    messages = parse(input=items).request.messages
    assert [(m.role, m.reasoning) for m in messages] == [("user", ""), ("assistant", "They ask."), ("tool", ""),
                                                         ("assistant", "It rains.")]


LP = g.TokenLogprob("a", -0.5, b"a", ())
WHOLE_ANSWERS = {
    "text and reasoning": [g.ReasoningDelta("th"), g.ReasoningDelta("ink"), g.TextDelta("He", logprobs=(LP,)),
                           g.TextDelta("llo", logprobs=(LP,)), g.TextDelta(""), g.ReasoningDelta("more"),
                           g.TextDelta("!"), g.Finish("stop", usage=g.Usage(3, 6))],
    "cut off": [g.TextDelta("a"), g.TextDelta("b"), g.Finish("length", usage=g.Usage(3, 2))],
    "nothing": [g.Finish("stop")],
    "tool calls, whole and in pieces": [
        g.TextDelta("Let me look."), g.ToolCallDelta(g.ToolCall("c1", "get_weather", '{"city": "Paris"}')),
        g.ToolCallArgumentsDelta('{"ci', "c2", "get_weather", position=1),
        g.ToolCallArgumentsDelta('ty": "Rome"}', "c2", "get_weather", position=1),
        g.ToolCallDelta(g.ToolCall("c2", "get_weather", '{"city": "Rome"}'), position=1),
        g.ToolCallDelta(g.ToolCall("c3", "shell", '{"input": "ls"}'), position=2),
        g.ReasoningDelta("done"), g.Finish("tool_calls", usage=g.Usage(5, 9))],
}


@pytest.mark.parametrize("name", WHOLE_ANSWERS)
def test_render_response_is_what_the_stream_ends_with(name):
    events = WHOLE_ANSWERS[name]
    options = {"logprobs": True, "custom_tools": frozenset({"shell"})}
    streamed = rs.ResponseStream(META, **options)
    for event in events:
        streamed.chunks(event)
    streamed.end()
    whole = rs.render_response(events, META, **options)
    ids = lambda response: [item.pop("id") for item in response["output"]]
    assert len(ids(whole)) == len(ids(streamed.response))
    assert whole == streamed.response


def test_render_response_of_many_deltas_joins_them():
    whole = rs.render_response(WHOLE_ANSWERS["text and reasoning"], META, logprobs=True)
    assert [part["text"] for item in whole["output"] for part in item["content"]] == ["think", "Hello", "more", "!"]
    assert len(whole["output"][1]["content"][0]["logprobs"]) == 2