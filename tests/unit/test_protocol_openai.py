"""Unit tests for shim.protocols.openai: plain dicts in, dataclasses and dicts out."""
import base64

import pytest

from shim import generation as g
from shim.errors import InvalidRequest, ModelNotFound, Unsupported
from shim.protocols import openai as oa
from shim.protocols import options as opts

USER = {"role": "user", "content": "Hi"}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
PNG = base64.b64encode(b"\x89PNG fake").decode()


def chat(**fields):
    return oa.parse_chat({"model": "m", "messages": [USER], **fields})


def completion(**fields):
    return oa.parse_completion({"model": "m", "prompt": "Once", **fields})


def finish(reason="stop", index=0, prompt=0, completion_tokens=0):
    return g.Finish(reason, index=index, usage=g.Usage(prompt, completion_tokens))


# ---------------------------------------------------------------- parse_chat: fields

def test_parse_chat_minimal_defaults():
    call = chat()
    r = call.request
    assert (r.model, r.prompt, r.n, r.max_tokens, r.stop) == ("m", None, 1, None, ())
    assert r.messages == (g.Message("user", "Hi"),)
    assert (r.tools, r.tool_choice, r.response_format, r.logprobs, r.top_logprobs) == ((), g.ToolChoice(), None, False, 0)
    assert (call.stream, call.include_usage) == (False, False)


def test_parse_chat_roles_developer_becomes_system():
    messages = [{"role": "system", "content": "s"}, {"role": "developer", "content": "d"}, USER,
                {"role": "assistant", "content": "a"}, {"role": "tool", "content": "t", "tool_call_id": "c1",
                                                        "name": "get_weather"}]
    r = chat(messages=messages).request
    assert [m.role for m in r.messages] == ["system", "system", "user", "assistant", "tool"]
    assert [m.content for m in r.messages] == ["s", "d", "Hi", "a", "t"]
    assert (r.messages[4].tool_call_id, r.messages[4].name) == ("c1", "get_weather")


def test_parse_chat_content_parts_text_and_data_url_image():
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
             {"type": "text", "text": "here"}]
    message = chat(messages=[{"role": "user", "content": parts}]).request.messages[0]
    assert message.content == "look\nhere"
    assert message.images == (b"\x89PNG fake",)


def test_parse_chat_image_url_as_bare_string():
    parts = [{"type": "image_url", "image_url": f"data:image/jpeg;base64,{PNG}"}]
    assert chat(messages=[{"role": "user", "content": parts}]).request.messages[0].images == (b"\x89PNG fake",)


def test_parse_chat_assistant_tool_calls_and_null_content():
    assistant = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    message = chat(messages=[USER, assistant]).request.messages[1]
    assert message.content == ""
    assert message.tool_calls == (g.ToolCall("call_1", "get_weather", '{"city": "Paris"}'),)


def test_parse_chat_tool_call_arguments_default_to_empty_object():
    assistant = {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f"}}]}
    assert chat(messages=[assistant]).request.messages[0].tool_calls[0].arguments == "{}"


@pytest.mark.parametrize("fields, expected", [
    ({}, None),
    ({"max_tokens": 10}, 10),
    ({"max_completion_tokens": 20}, 20),
    ({"max_tokens": 10, "max_completion_tokens": 20}, 20),
    ({"max_completion_tokens": 20, "max_tokens": 10}, 20),
    ({"max_tokens": 12.0}, 12),
])
def test_parse_chat_max_completion_tokens_takes_precedence(fields, expected):
    assert chat(**fields).request.max_tokens == expected


def test_parse_chat_sampling_fields():
    s = chat(temperature=0, top_p=0.5, seed=42, presence_penalty=-2, frequency_penalty=2, top_k=5,
             min_p=0.1).request.sampling
    assert (s.temperature, s.top_p, s.seed, s.presence_penalty, s.frequency_penalty, s.top_k, s.min_p) == (
        0, 0.5, 42, -2, 2, 5, 0.1)


@pytest.mark.parametrize("stop, expected", [
    ("END", ("END",)),
    (["a", "b", "c", "d"], ("a", "b", "c", "d")),
    (["a", ""], ("a",)),
    ("", ()),
    (None, ()),
])
def test_parse_chat_stop_string_or_list(stop, expected):
    assert chat(stop=stop).request.stop == expected


def test_parse_chat_n():
    assert chat(n=3).request.n == 3


def test_parse_chat_logit_bias_keys_become_token_ids():
    assert chat(logit_bias={"50256": -100, "7": 5.5}).request.sampling.logit_bias == {50256: -100.0, 7: 5.5}


def test_parse_chat_logprobs_with_top_logprobs():
    r = chat(logprobs=True, top_logprobs=5).request
    assert (r.logprobs, r.top_logprobs) == (True, 5)


def test_parse_chat_top_logprobs_zero_without_logprobs_is_allowed():
    r = chat(top_logprobs=0).request
    assert (r.logprobs, r.top_logprobs) == (False, 0)


@pytest.mark.parametrize("fmt, expected", [
    ({"type": "text"}, None),
    ({"type": "json_object"}, g.ResponseFormat("json")),
    ({"type": "json_schema", "json_schema": {"name": "point", "schema": {"type": "object", "required": ["x"]}}},
     g.ResponseFormat("json_schema", schema={"type": "object", "required": ["x"]}, name="point")),
    ({"type": "json_schema", "json_schema": {}}, g.ResponseFormat("json_schema", schema={"type": "object"})),
])
def test_parse_chat_response_format(fmt, expected):
    assert chat(response_format=fmt).request.response_format == expected


def test_parse_chat_tools_parsed_and_tool_choice_defaults_to_auto():
    r = chat(tools=[WEATHER, {"type": "function", "function": {"name": "noop"}}]).request
    assert [t.name for t in r.tools] == ["get_weather", "noop"]
    assert r.tools[0].description == "Weather in a city"
    assert r.tools[0].parameters["properties"] == {"city": {"type": "string"}}
    assert r.tools[1].parameters == {"type": "object", "properties": {}}
    assert r.tool_choice == g.ToolChoice("auto")
    assert r.parallel_tool_calls is True


@pytest.mark.parametrize("choice, expected", [
    ("none", g.ToolChoice("none")),
    ("auto", g.ToolChoice("auto")),
    ("required", g.ToolChoice("required")),
    ({"type": "function", "function": {"name": "get_weather"}}, g.ToolChoice("named", "get_weather")),
])
def test_parse_chat_tool_choice(choice, expected):
    assert chat(tools=[WEATHER], tool_choice=choice).request.tool_choice == expected


def test_parse_chat_tool_choice_names_a_function_called_like_a_mode():
    tools = [{"type": "function", "function": {"name": "none"}}, {"type": "function", "function": {"name": "auto"}}]
    for name in ("none", "auto"):
        r = chat(tools=tools, tool_choice={"type": "function", "function": {"name": name}}).request
        assert r.tool_choice == g.ToolChoice.named(name) and r.tool_choice.forced
        # and it goes upstream as the named function, not as the mode
        _, body = oa.upstream_request(r)
        assert body["tool_choice"] == {"type": "function", "function": {"name": name}}


def test_parse_chat_allowed_tools():
    noop = {"type": "function", "function": {"name": "noop"}}
    allowed = {"type": "allowed_tools", "allowed_tools": {
        "mode": "required", "tools": [{"type": "function", "function": {"name": "noop"}}]}}
    r = chat(tools=[WEATHER, noop], tool_choice=allowed).request
    assert r.tool_choice == g.ToolChoice("required", allowed=("noop",))
    assert oa.upstream_request(r)[1]["tool_choice"] == allowed


@pytest.mark.parametrize("choice, wire", [
    (g.ToolChoice(), "auto"), (g.ToolChoice("none"), "none"), (g.ToolChoice("required"), "required"),
    (g.ToolChoice.named("f"), {"type": "function", "function": {"name": "f"}}),
    (g.ToolChoice.named("grep", kind="custom"), {"type": "custom", "custom": {"name": "grep"}}),
    (g.ToolChoice("auto", allowed=("f",)), {"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "f"}}]}}),
])
def test_render_tool_choice(choice, wire):
    assert oa.render_tool_choice(choice) == wire


def test_parse_chat_parallel_tool_calls_false():
    assert chat(tools=[WEATHER], parallel_tool_calls=False).request.parallel_tool_calls is False


@pytest.mark.parametrize("fields, stream, include_usage", [
    ({}, False, False),
    ({"stream": True}, True, False),
    ({"stream": True, "stream_options": {"include_usage": True}}, True, True),
    ({"stream": True, "stream_options": {}}, True, False),
    ({"stream": False, "stream_options": None}, False, False),
])
def test_parse_chat_stream_flags(fields, stream, include_usage):
    call = chat(**fields)
    assert (call.stream, call.include_usage) == (stream, include_usage)


def test_parse_chat_ignores_unknown_and_platform_fields():
    r = chat(frobnicate=True, metadata={"k": "v"}, store=True, service_tier="auto", user="u1",
             prompt_cache_key="k").request
    assert r.model == "m" and r.messages == (g.Message("user", "Hi"),)


def test_parse_chat_options_merge_under_top_level_fields():
    r = chat(temperature=0.2, options={"temperature": 0.9, "top_k": 7, "num_ctx": 2048}).request
    assert (r.sampling.temperature, r.sampling.top_k, r.num_ctx) == (0.2, 7, 2048)
    assert r.backend_options == {"temperature": 0.9, "top_k": 7, "num_ctx": 2048}


def test_parse_chat_keeps_the_options_sampling_when_no_top_level_field_sets_any():
    r = chat(options={"temperature": 0.9, "seed": 3}).request
    assert r.sampling == g.Sampling(temperature=0.9, seed=3)
    assert chat().request.sampling == g.Sampling()


@pytest.mark.parametrize("field", ["temperature", "top_p", "top_k", "min_p", "seed", "repetition_penalty",
                                   "presence_penalty", "frequency_penalty", "logit_bias"])
def test_parse_chat_checks_each_sampling_field_alone(field):
    with pytest.raises(InvalidRequest) as err:
        chat(**{field: "x"})
    assert err.value.param == field


@pytest.mark.parametrize("effort, think", [("none", False), ("minimal", "low"), ("high", "high"), ("xhigh", "max")])
def test_parse_chat_reasoning_effort_maps_to_think(effort, think):
    assert opts.think_value(chat(reasoning_effort=effort).request.think) == think


def test_parse_chat_keep_alive_duration():
    assert chat(keep_alive="5m").request.keep_alive == 300.0


# ---------------------------------------------------------------- parse_chat: refusals and errors

@pytest.mark.parametrize("fields, param", [
    ({"audio": {"voice": "alloy"}}, "audio"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"web_search_options": {}}, "web_search_options"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"function_call": "auto"}, "function_call"),
    ({"modalities": ["text", "audio"]}, "modalities"),
])
def test_parse_chat_refuses_unsupported_fields(fields, param):
    with pytest.raises(Unsupported) as info:
        chat(**fields)
    assert info.value.param == param
    assert info.value.code == "unsupported"


def test_parse_chat_accepts_text_only_modalities():
    assert chat(modalities=["text"]).request.model == "m"


def test_parse_chat_refused_function_call_named_when_functions_is_null():
    with pytest.raises(Unsupported) as info:
        chat(functions=None, function_call="auto")
    assert info.value.param == "function_call"


@pytest.mark.parametrize("fields, param", [
    ({"model": 5}, "model"),
    ({"model": ""}, "model"),
    ({"model": None}, "model"),
    ({"messages": []}, "messages"),
    ({"messages": "Hi"}, "messages"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_completion_tokens": 1.5}, "max_completion_tokens"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 1.5}, "top_p"),
    ({"seed": "x"}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": [1]}, "stop"),
    ({"stop": 5}, "stop"),
    ({"n": 0}, "n"),
    ({"n": "2"}, "n"),
    ({"presence_penalty": 2.5}, "presence_penalty"),
    ({"frequency_penalty": -2.1}, "frequency_penalty"),
    ({"logit_bias": {"abc": 1}}, "logit_bias"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"logit_bias": {"5": True}}, "logit_bias"),
    ({"logit_bias": {"5": "1"}}, "logit_bias"),
    ({"logit_bias": [1]}, "logit_bias"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": False, "top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"response_format": "json"}, "response_format"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": "x"}}},
     "response_format.json_schema.schema"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": 5}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function"}}, "tool_choice"),
    ({"tools": "x"}, "tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools"}}, "tool_choice.allowed_tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "never", "tools": []}}},
     "tool_choice.allowed_tools.mode"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}}},
     "tool_choice.allowed_tools.tools"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "allowed_tools": {
        "mode": "auto", "tools": [{"type": "function", "function": {"name": "nope"}}]}}},
     "tool_choice.allowed_tools.tools[0]"),
    ({"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [5]}}},
     "tool_choice.allowed_tools.tools[0]"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools[0].type"),
    ({"tools": [{"function": {"description": "no name"}}]}, "tools[0].function.name"),
    ({"tools": [{"function": {"name": "f", "parameters": "x"}}]}, "tools[0].function.parameters"),
    ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": True, "stream_options": "x"}, "stream_options"),
    ({"stream": True, "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
    ({"user": 5}, "user"),
    ({"options": []}, "options"),
    ({"options": {"temperature": "hot"}}, "options.temperature"),
    ({"keep_alive": "soon"}, "keep_alive"),
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
])
def test_parse_chat_invalid_field_names_param(fields, param):
    with pytest.raises(InvalidRequest) as info:
        chat(**fields)
    assert info.value.param == param
    assert info.value.status == 400


@pytest.mark.parametrize("message, param", [
    ({"content": "x"}, "messages[0].role"),
    ({"role": "robot", "content": "x"}, "messages[0].role"),
    ({"role": 1, "content": "x"}, "messages[0].role"),
    ({"role": "user", "content": None}, "messages[0].content"),
    ({"role": "user"}, "messages[0].content"),
    ({"role": "user", "content": 5}, "messages[0].content"),
    ({"role": "user", "content": [{"type": "text"}]}, "messages[0].content[0].text"),
    ({"role": "user", "content": [{"text": "x"}]}, "messages[0].content[0].type"),
    ({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}, "messages[0].content[0].type"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/cat.png"}}]},
     "messages[0].content[0].image_url"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,!!"}}]},
     "messages[0].content[0].image_url"),
    ({"role": "user", "content": [{"type": "image_url"}]}, "messages[0].content[0].image_url"),
    ({"role": "assistant", "tool_calls": "x"}, "messages[0].tool_calls"),
    ({"role": "assistant", "tool_calls": [{"id": "c"}]}, "messages[0].tool_calls[0].function"),
    ({"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}, "messages[0].tool_calls[0].function.name"),
    ({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
     "messages[0].tool_calls[0].function.arguments"),
    ({"role": "assistant", "tool_calls": [{"id": 3, "function": {"name": "f"}}]}, "messages[0].tool_calls[0].id"),
    ({"role": "tool", "content": "x", "tool_call_id": 5}, "messages[0].tool_call_id"),
    ({"role": "user", "content": "x", "name": 5}, "messages[0].name"),
])
def test_parse_chat_invalid_message_names_param(message, param):
    with pytest.raises(InvalidRequest) as info:
        chat(messages=[message])
    assert info.value.param == param


def test_parse_chat_non_object_message_names_param():
    with pytest.raises(InvalidRequest) as info:
        chat(messages=["Hi"])
    assert info.value.param == "messages[0]"


def test_parse_chat_json_schema_name_wrong_type_names_full_path():
    with pytest.raises(InvalidRequest) as info:
        chat(response_format={"type": "json_schema", "json_schema": {"name": 5, "schema": {}}})
    assert info.value.param == "response_format.json_schema.name"


def test_parse_chat_body_must_be_object():
    with pytest.raises(InvalidRequest):
        oa.parse_chat(["not", "an", "object"])


# ---------------------------------------------------------------- parse_completion

def test_parse_completion_defaults():
    call = completion()
    r = call.request
    assert (r.prompt, r.messages, r.raw, r.max_tokens, r.logprobs, r.top_logprobs) == ("Once", None, True, 16, False, 0)
    assert (call.echo, call.stream, call.include_usage) == (False, False, False)


def test_parse_completion_fields():
    call = completion(prompt=["Once"], max_tokens=5, suffix="end", echo=False, logprobs=3, stop=["\n"], n=2,
                      temperature=1.5, stream=True, stream_options={"include_usage": True})
    r = call.request
    assert (r.prompt, r.max_tokens, r.suffix, r.logprobs, r.top_logprobs, r.stop, r.n) == (
        "Once", 5, "end", True, 3, ("\n",), 2)
    assert r.sampling.temperature == 1.5
    assert (call.echo, call.stream, call.include_usage) == (False, True, True)
    assert completion(echo=True).echo is True


def test_parse_completion_echo_with_logprobs_is_refused():
    with pytest.raises(Unsupported) as refused:
        completion(echo=True, logprobs=1)
    assert refused.value.param == "echo"


def test_parse_completion_logprobs_zero_means_sampled_token_only():
    r = completion(logprobs=0).request
    assert (r.logprobs, r.top_logprobs) == (True, 0)


def test_parse_completion_best_of_equal_to_n_is_accepted():
    assert completion(best_of=2, n=2).request.n == 2


@pytest.mark.parametrize("fields, param", [
    ({"prompt": None}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": ["a", "b"]}, "prompt"),
    ({"prompt": [1, 2, 3]}, "prompt"),
    ({"model": None}, "model"),
    ({"best_of": 3}, "best_of"),
    ({"logprobs": 6}, "logprobs"),
    ({"logprobs": True}, "logprobs"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"suffix": 1}, "suffix"),
    ({"echo": "yes"}, "echo"),
    ({"stop": ["1", "2", "3", "4", "5"]}, "stop"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_parse_completion_invalid_field_names_param(fields, param):
    with pytest.raises(InvalidRequest) as info:
        completion(**fields)
    assert info.value.param == param


# ---------------------------------------------------------------- parse_embeddings

@pytest.mark.parametrize("body, expected", [
    ({"model": "e", "input": "hello"}, ("e", ["hello"], None, "float")),
    ({"model": "e", "input": ["a", "b"], "dimensions": 64, "encoding_format": "base64"},
     ("e", ["a", "b"], 64, "base64")),
])
def test_parse_embeddings(body, expected):
    assert oa.parse_embeddings(body) == expected


@pytest.mark.parametrize("body, param", [
    ({"model": "e"}, "input"),
    ({"model": "e", "input": []}, "input"),
    ({"model": "e", "input": [1, 2]}, "input"),
    ({"input": "x"}, "model"),
    ({"model": "e", "input": "x", "dimensions": 0}, "dimensions"),
    ({"model": "e", "input": "x", "encoding_format": "hex"}, "encoding_format"),
])
def test_parse_embeddings_invalid_names_param(body, param):
    with pytest.raises(InvalidRequest) as info:
        oa.parse_embeddings(body)
    assert info.value.param == param


# ---------------------------------------------------------------- render_chat

def test_render_chat_text_choice():
    choice = g.Choice(0, text="Hello", finish=finish("length", prompt=4, completion_tokens=2))
    out = oa.render_chat([choice], id="chatcmpl-1", created=123, model="m")
    assert {k: out[k] for k in ("id", "object", "created", "model", "system_fingerprint")} == {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 123, "model": "m", "system_fingerprint": "fp_shim"}
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello", "refusal": None},
                               "logprobs": None, "finish_reason": "length"}]
    assert out["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6,
                           "prompt_tokens_details": {"cached_tokens": 0}}


def test_render_chat_tool_calls_have_null_content():
    call = g.ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    out = oa.render_chat([g.Choice(0, tool_calls=[call], finish=finish("tool_calls"))], id="x", created=1, model="m")
    choice = out["choices"][0]
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert choice["finish_reason"] == "tool_calls"


def test_render_chat_usage_counts_prompt_once_over_choices():
    choices = [g.Choice(0, "a", finish=finish(index=0, prompt=10, completion_tokens=3)),
               g.Choice(1, "b", finish=finish(index=1, prompt=10, completion_tokens=5))]
    out = oa.render_chat(choices, id="x", created=1, model="m")
    assert [c["index"] for c in out["choices"]] == [0, 1]
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18,
                           "prompt_tokens_details": {"cached_tokens": 0}}


def test_usage_says_how_many_prompt_tokens_came_from_the_cache():
    cached = g.Finish("stop", 0, g.Usage(40, 3, cached_tokens=32), g.Timings())
    out = oa.render_chat([g.Choice(0, "a", finish=cached)], id="x", created=1, model="m")
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 32}
    s = stream(include_usage=True)
    s.chunks(cached)
    assert s.end()[0]["usage"]["prompt_tokens_details"] == {"cached_tokens": 32}


def test_render_chat_logprobs_shape():
    lp = g.TokenLogprob("Hi", -0.5, (72, 105), top=(g.TokenLogprob("Hi", -0.5, (72, 105)), g.TokenLogprob("Yo", -2.0)))
    out = oa.render_chat([g.Choice(0, "Hi", logprobs=[lp], finish=finish())], id="x", created=1, model="m")
    assert out["choices"][0]["logprobs"] == {"content": [{
        "token": "Hi", "logprob": -0.5, "bytes": [72, 105],
        "top_logprobs": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105]}, {"token": "Yo", "logprob": -2.0, "bytes": []}]}],
        "refusal": None}


def test_render_text_completion_with_echo_prefix():
    out = oa.render_text_completion([g.Choice(0, " upon", finish=finish())], id="cmpl-1", created=1, model="m",
                                    prefix="Once")
    assert out["object"] == "text_completion"
    assert out["choices"] == [{"index": 0, "text": "Once upon", "logprobs": None, "finish_reason": "stop"}]


# ---------------------------------------------------------------- ChatStream

def stream(include_usage=False):
    return oa.ChatStream(id="chatcmpl-1", created=7, model="m", include_usage=include_usage)


def deltas(chunks):
    return [c["choices"][0]["delta"] for c in chunks]


def test_chat_stream_accepted_yields_nothing():
    assert stream().chunks(g.Accepted(prompt_tokens=3)) == []


def test_chat_stream_role_only_in_first_delta_per_choice():
    s = stream()
    events = [g.TextDelta("a", 0), g.TextDelta("x", 1), g.TextDelta("b", 0), g.TextDelta("y", 1)]
    chunks = [c for e in events for c in s.chunks(e)]
    assert deltas(chunks) == [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "x"},
                              {"content": "b"}, {"content": "y"}]
    assert [c["choices"][0]["index"] for c in chunks] == [0, 1, 0, 1]


def test_chat_stream_chunk_envelope():
    chunk = stream().chunks(g.TextDelta("a"))[0]
    assert {k: chunk[k] for k in ("id", "object", "created", "model", "system_fingerprint")} == {
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m", "system_fingerprint": "fp_shim"}
    assert chunk["choices"][0]["finish_reason"] is None
    assert "usage" not in chunk


def test_chat_stream_finish_chunk():
    s = stream()
    s.chunks(g.TextDelta("a"))
    [chunk] = s.chunks(finish("length"))
    assert chunk["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]


def test_chat_stream_tool_call_delta_first_in_choice():
    call = g.ToolCall("call_1", "f", "{}")
    s = stream()
    first = deltas(s.chunks(g.ToolCallDelta(call, 0, position=0)))[0]
    second = deltas(s.chunks(g.ToolCallDelta(call, 0, position=1)))[0]
    rendered = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    assert first == {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **rendered}]}
    assert second == {"tool_calls": [{"index": 1, **rendered}]}


def test_chat_stream_tool_call_arguments_stream_as_openai_sends_them():
    s = stream()
    pieces = [g.ToolCallArgumentsDelta(t, "call_1", "f", 0, 1) for t in ("", '{"a"', ": 1}")]
    out = [d for p in pieces for d in deltas(s.chunks(p))]
    assert out == [
        {"role": "assistant", "content": None,
         "tool_calls": [{"index": 1, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": '{"a"'}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": ": 1}"}}]}]
    assert s.chunks(g.ToolCallDelta(g.ToolCall("call_1", "f", '{"a": 1}'), 0, 1)) == []  # all of it was sent


def test_chat_stream_whole_call_after_its_pieces_sends_what_they_left_out():
    s = stream()
    s.chunks(g.ToolCallArgumentsDelta("", "c", "f", 0, 0))
    assert deltas(s.chunks(g.ToolCallDelta(g.ToolCall("c", "f", "{}"), 0, 0))) == [
        {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}]


def test_chat_stream_tool_call_after_text_has_no_content_key():
    s = stream()
    s.chunks(g.TextDelta("thinking..."))
    delta = deltas(s.chunks(g.ToolCallDelta(g.ToolCall("c", "f", "{}"))))[0]
    assert "content" not in delta and "role" not in delta


def test_chat_stream_text_logprobs():
    chunk = stream().chunks(g.TextDelta("a", logprobs=(g.TokenLogprob("a", -0.1, (97,)),)))[0]
    assert chunk["choices"][0]["logprobs"]["content"][0] == {"token": "a", "logprob": -0.1, "bytes": [97],
                                                             "top_logprobs": []}


def test_chat_stream_include_usage_final_chunk():
    s = stream(include_usage=True)
    chunks = s.chunks(g.TextDelta("a", 0)) + s.chunks(finish(index=0, prompt=9, completion_tokens=2))
    chunks += s.chunks(g.TextDelta("b", 1)) + s.chunks(finish(index=1, prompt=9, completion_tokens=4))
    assert all(c["usage"] is None for c in chunks)
    [last] = s.end()
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15,
                           "prompt_tokens_details": {"cached_tokens": 0}}
    assert (last["id"], last["object"]) == ("chatcmpl-1", "chat.completion.chunk")


def test_chat_stream_reasoning_delta_is_under_both_names():
    s = stream()
    first = deltas(s.chunks(g.ReasoningDelta("Hmm.")))[0]
    assert first == {"role": "assistant", "content": "", "reasoning_content": "Hmm.", "reasoning": "Hmm."}
    assert deltas(s.chunks(g.TextDelta("Hi")))[0] == {"content": "Hi"}


def test_render_chat_reasoning_under_both_names_and_reasoning_tokens():
    choices = g.collect([g.ReasoningDelta("Hmm."), g.TextDelta("Hi"), g.Finish("stop", usage=g.Usage(3, 5, 0, 2))])
    body = oa.render_chat(choices, id="c", created=1, model="m")
    message = body["choices"][0]["message"]
    assert (message["content"], message["reasoning_content"], message["reasoning"]) == ("Hi", "Hmm.", "Hmm.")
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 2}
    assert "completion_tokens_details" not in oa.render_usage(g.Usage(3, 5))


def test_chat_stream_end_without_include_usage_is_empty():
    s = stream()
    s.chunks(finish())
    assert s.end() == []


# ---------------------------------------------------------------- CompletionStream

def test_completion_stream_text_and_finish_chunks():
    s = oa.CompletionStream(id="cmpl-1", created=7, model="m")
    chunks = [c for e in (g.Accepted(), g.TextDelta("Hi"), finish("length")) for c in s.chunks(e)]
    assert [c["object"] for c in chunks] == ["text_completion", "text_completion"]
    assert [c["choices"][0] for c in chunks] == [
        {"index": 0, "text": "Hi", "logprobs": None, "finish_reason": None},
        {"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}]
    assert s.end() == []


def test_completion_stream_ignores_tool_call_deltas():
    s = oa.CompletionStream(id="cmpl-1", created=7, model="m")
    assert s.chunks(g.ToolCallDelta(g.ToolCall("c", "f", "{}"))) == []


def test_completion_stream_legacy_logprobs():
    s = oa.CompletionStream(id="cmpl-1", created=7, model="m")
    lps = (g.TokenLogprob("Hi", -0.1, top=(g.TokenLogprob("Hi", -0.1),)), g.TokenLogprob("!", -0.2))
    chunk = s.chunks(g.TextDelta("Hi!", logprobs=lps))[0]
    assert chunk["choices"][0]["logprobs"] == {"tokens": ["Hi", "!"], "token_logprobs": [-0.1, -0.2],
                                               "top_logprobs": [{"Hi": -0.1}, {}], "text_offset": [0, 2]}


def test_completion_stream_include_usage():
    s = oa.CompletionStream(id="cmpl-1", created=7, model="m", include_usage=True)
    chunk = s.chunks(g.TextDelta("a"))[0]
    s.chunks(finish(prompt=3, completion_tokens=1))
    [last] = s.end()
    assert chunk["usage"] is None
    assert last["choices"] == [] and last["object"] == "text_completion"
    assert last["usage"] == {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4,
                           "prompt_tokens_details": {"cached_tokens": 0}}


# ---------------------------------------------------------------- errors and envelope

def test_render_error_invalid_request():
    err = InvalidRequest("'temperature' must be a number", param="temperature")
    assert oa.render_error(err) == {"error": {"message": "'temperature' must be a number",
                                              "type": "invalid_request_error", "param": "temperature", "code": None}}


def test_render_error_model_not_found():
    assert oa.render_error(ModelNotFound("x")) == {"error": {"message": "model 'x' not found",
                                                             "type": "invalid_request_error", "param": "model",
                                                             "code": "model_not_found"}}


def test_render_envelope_success_and_error():
    assert oa.render_envelope({"a": 1}) == {"success": True, "code": "200", "message": "successful", "data": {"a": 1}}
    assert oa.render_envelope(err=ModelNotFound("x")) == {"success": False, "code": "404",
                                                          "message": "model 'x' not found", "data": None}


def test_parse_chat_names_tool_results_after_their_call():
    call = {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    messages = [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_9", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_unknown", "content": "?"}]
    parsed = oa.parse_chat({"model": "m", "messages": messages}).request.messages
    assert (parsed[2].name, parsed[3].name) == ("get_weather", None)


def test_stop_limits_hold_for_the_openai_stop_and_the_native_options_stop():
    with pytest.raises(InvalidRequest) as info:
        chat(stop=["x" * 257])
    assert info.value.param == "stop" and "256" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        chat(options={"stop": [str(i) for i in range(600)]})
    assert info.value.param == "options.stop" and "at most 16" in info.value.message
    assert chat(options={"stop": ["a"] * 16}).request.stop == ("a",) * 16


# ---------------------------------------------------------------- reasoning

@pytest.mark.parametrize("name", ["reasoning_content", "reasoning"])
def test_parse_chat_keeps_an_earlier_turns_reasoning_under_either_name(name):
    messages = [USER, {"role": "assistant", "content": "Hello", name: "They greet me."}, USER]
    r = oa.parse_chat({"model": "m", "messages": messages}).request
    assert r.messages[1] == g.Message("assistant", "Hello", reasoning="They greet me.")


def test_parse_chat_reasoning_that_is_not_text_is_refused_by_name():
    messages = [USER, {"role": "assistant", "content": "Hello", "reasoning_content": 3}, USER]
    with pytest.raises(InvalidRequest) as err:
        oa.parse_chat({"model": "m", "messages": messages})
    assert err.value.param == "messages[1].reasoning_content"


@pytest.mark.parametrize("think, effort", [(g.Think(False), "none"), (g.Think(True, "low"), "low"),
                                           (g.Think(True, "high"), "high"), (g.Think(True, "max"), "xhigh")])
def test_upstream_request_passes_reasoning_effort(think, effort):
    request = g.GenerationRequest(model="m", messages=(g.Message("user", "Hi"),), think=think)
    assert oa.upstream_request(request)[1]["reasoning_effort"] == effort


@pytest.mark.parametrize("think", [None, g.Think(True)])
def test_upstream_request_leaves_reasoning_effort_to_the_model(think):
    request = g.GenerationRequest(model="m", messages=(g.Message("user", "Hi"),), think=think)
    assert "reasoning_effort" not in oa.upstream_request(request)[1]


def test_upstream_request_sends_earlier_reasoning_back_as_reasoning_content():
    messages = (g.Message("user", "Hi"), g.Message("assistant", "Hello", reasoning="They greet me."),
                g.Message("user", "Again"))
    wire = oa.upstream_request(g.GenerationRequest(model="m", messages=messages))[1]["messages"]
    assert wire[1] == {"role": "assistant", "content": "Hello", "reasoning_content": "They greet me."}
    assert "reasoning_content" not in wire[0] and "reasoning_content" not in wire[2]


def upstream_chunk(**delta):
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


@pytest.mark.parametrize("name", ["reasoning_content", "reasoning"])
def test_upstream_reader_reads_reasoning_under_either_name(name):
    reader = oa.UpstreamReader()
    assert reader.events(upstream_chunk(**{name: "Hmm", "content": ""})) == [g.ReasoningDelta("Hmm")]
    assert reader.events(upstream_chunk(content="Hi")) == [g.TextDelta("Hi")]


def test_upstream_reader_reads_reasoning_sent_under_both_names_once():
    reader = oa.UpstreamReader()
    assert reader.events(upstream_chunk(reasoning_content="Hmm", reasoning="Hmm")) == [g.ReasoningDelta("Hmm")]


def test_upstream_reader_counts_reasoning_chunks_when_the_upstream_does_not():
    reader = oa.UpstreamReader()
    for piece in ("a", "b", "c"):
        reader.events(upstream_chunk(reasoning=piece))
    reader.events(upstream_chunk(content="Hi"))
    reader.events({"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 4}})
    assert reader.end(g.Timings())[-1].usage == g.Usage(4, 4, 0, 3)


# ---------------------------------------------------------------- fields shim does not know

VLLM_EXTRAS = {"chat_template_kwargs": {"enable_thinking": False}, "guided_json": {"type": "object"},
               "guided_choice": ["a", "b"], "skip_special_tokens": False}


def test_fields_shim_does_not_know_are_carried_as_they_are():
    request = chat(top_k=20, repetition_penalty=1.05, temperature=0.2, **VLLM_EXTRAS).request
    assert request.extra_fields == VLLM_EXTRAS
    assert (request.sampling.top_k, request.sampling.repeat_penalty) == (20, 1.05)
    assert completion(guided_regex="[0-9]+", echo=False).request.extra_fields == {"guided_regex": "[0-9]+"}
    assert chat().request.extra_fields == {} and completion().request.extra_fields == {}


class Reads(dict):
    """A request body that remembers every field the parser looked at."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


@pytest.mark.parametrize("parse, body, known", [
    (oa.parse_chat, {"model": "m", "messages": [USER], "tools": [WEATHER], "tool_choice": "auto", "stream": True,
                     "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2,
                     "response_format": {"type": "json_object"}, "options": {"num_ctx": 512}, "think": False},
     oa.CHAT_FIELDS),
    (oa.parse_completion, {"model": "m", "prompt": "a", "suffix": "b", "echo": True, "best_of": 1, "logprobs": 1,
                           "stream": False}, oa.COMPLETION_FIELDS),
])
def test_every_field_the_parser_reads_is_known_so_none_is_sent_upstream_twice(parse, body, known):
    tracked = Reads(body)
    try:
        parse(tracked)
    except Unsupported:
        pass  # echo with logprobs: what matters is what was read on the way
    assert tracked.read - known == set()
