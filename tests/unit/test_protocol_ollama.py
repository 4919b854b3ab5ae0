"""Unit tests for shim.protocols.ollama: plain dicts in, dataclasses and dicts out."""
import dataclasses
import json
import re

import pytest

from shim import generation as g
from shim.errors import InvalidRequest, ModelNotFound, Unsupported
from shim.protocols import ollama as ol
from shim.protocols import options as opts

NOW = "2024-05-01T12:00:00.5Z"
USER = {"role": "user", "content": "Hi"}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
FINISH = g.Finish("length", usage=g.Usage(5, 7), timings=g.Timings(total_ns=100, load_ns=10, prompt_eval_ns=20,
                                                                     eval_ns=70), context=(1, 2, 3))
METRICS = {"total_duration": 100, "load_duration": 10, "prompt_eval_count": 5, "prompt_eval_duration": 20,
           "eval_count": 7, "eval_duration": 70}


def generate(**fields):
    return ol.parse_generate({"model": "m", "prompt": "Why?", **fields})


def chat(**fields):
    return ol.parse_chat({"model": "m", "messages": [USER], **fields})


# ---------------------------------------------------------------- parse_generate

def test_parse_generate_defaults():
    call = generate()
    r = call.request
    assert (r.model, r.prompt, r.messages, r.raw, r.system, r.suffix, r.context) == ("m", "Why?", None, False, None,
                                                                                     None, ())
    assert (r.max_tokens, r.response_format, r.keep_alive, r.think) == (None, None, None, None)
    assert (call.stream, call.load_only) == (True, False)


def test_parse_generate_fields():
    call = generate(system="Be brief", suffix="end", context=[4, 5], stream=False, think=True, logprobs=True,
                    top_logprobs=2)
    r = call.request
    assert (r.system, r.suffix, r.context, r.think, r.logprobs, r.top_logprobs) == ("Be brief", "end", (4, 5), g.Think(True),
                                                                                    True, 2)
    assert call.stream is False


def test_parse_generate_top_logprobs_implies_logprobs():
    r = generate(top_logprobs=3).request
    assert (r.logprobs, r.top_logprobs) == (True, 3)


def test_parse_generate_raw_without_system():
    r = generate(raw=True).request
    assert r.raw is True and r.prompt == "Why?"


@pytest.mark.parametrize("fields", [{"prompt": ""}, {"prompt": None}, {"keep_alive": 0, "prompt": ""}])
def test_parse_generate_empty_prompt_is_load_only(fields):
    assert generate(**fields).load_only is True


def test_parse_generate_options_typed():
    r = generate(options={"temperature": 0.7, "top_p": 0.9, "top_k": 40, "seed": 3, "num_predict": 64,
                          "num_ctx": 2048, "stop": ["\n"], "repeat_penalty": 1.1, "repeat_last_n": -1,
                          "min_p": 0.05, "typical_p": 1.0}).request
    s = r.sampling
    assert (s.temperature, s.top_p, s.top_k, s.seed, s.repeat_penalty, s.repeat_last_n, s.min_p, s.typical_p) == (
        0.7, 0.9, 40, 3, 1.1, -1, 0.05, 1.0)
    assert (r.max_tokens, r.num_ctx, r.stop) == (64, 2048, ("\n",))


def test_parse_generate_unknown_options_ignored_but_passed_through():
    r = generate(options={"mirostat": "whatever", "tfs_z": [1], "temperature": 0.1}).request
    assert r.sampling.temperature == 0.1
    assert r.backend_options == {"mirostat": "whatever", "tfs_z": [1], "temperature": 0.1}


@pytest.mark.parametrize("num_predict, expected", [(-1, None), (-2, None), (0, 0), (10, 10)])
def test_parse_generate_num_predict_negative_means_unbounded(num_predict, expected):
    assert generate(options={"num_predict": num_predict}).request.max_tokens == expected


def test_parse_generate_negative_seed_means_random():
    assert generate(options={"seed": -1}).request.sampling.seed is None


@pytest.mark.parametrize("fmt, expected", [
    (None, None),
    ("", None),
    ("json", g.ResponseFormat("json")),
    ({"type": "object", "properties": {"a": {"type": "integer"}}},
     g.ResponseFormat("json_schema", schema={"type": "object", "properties": {"a": {"type": "integer"}}})),
])
def test_parse_generate_format(fmt, expected):
    assert generate(format=fmt).request.response_format == expected


@pytest.mark.parametrize("keep_alive, seconds", [
    ("5m", 300.0), ("1h30m", 5400.0), ("90s", 90.0), ("500ms", 0.5), ("1.5h", 5400.0), ("-1", -1.0), ("0", 0.0),
    (10, 10.0), (0, 0.0), (-1, -1.0), (2.5, 2.5),
])
def test_parse_generate_keep_alive(keep_alive, seconds):
    assert generate(keep_alive=keep_alive).request.keep_alive == seconds


@pytest.mark.parametrize("think", [True, False, "low", "medium", "high", "max"])
def test_parse_generate_think(think):
    assert opts.think_value(generate(think=think).request.think) == think


@pytest.mark.parametrize("think, typed", [(True, g.Think(True)), (False, g.Think(False)), ("low", g.Think(True, "low"))])
def test_parse_chat_think_is_typed(think, typed):
    assert chat(think=think).request.think == typed


def test_parse_generate_images_base64_are_decoded():
    r = generate(images=["aGk="]).request
    images = getattr(r, "images", None) or tuple(i for m in r.messages or () for i in m.images)
    assert images == (b"hi",)


@pytest.mark.parametrize("fields, param", [
    ({"model": None}, "model"),
    ({"model": ""}, "model"),
    ({"prompt": 5}, "prompt"),
    ({"raw": "yes"}, "raw"),
    ({"raw": True, "system": "s"}, "raw"),
    ({"raw": True, "context": [1]}, "raw"),
    ({"context": ["a"]}, "context"),
    ({"context": [True]}, "context"),
    ({"context": "1,2"}, "context"),
    ({"images": ["!!not base64!!"]}, "images"),
    ({"images": "aGk="}, "images"),
    ({"images": [1]}, "images"),
    ({"system": 1}, "system"),
    ({"stream": "no"}, "stream"),
    ({"format": "yaml"}, "format"),
    ({"format": 3}, "format"),
    ({"format": ["json"]}, "format"),
    ({"keep_alive": "soon"}, "keep_alive"),
    ({"keep_alive": "5 m"}, "keep_alive"),
    ({"keep_alive": True}, "keep_alive"),
    ({"think": "extreme"}, "think"),
    ({"think": 1}, "think"),
    ({"top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": -1}, "top_logprobs"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"truncate": "no"}, "truncate"),
    ({"shift": 0}, "shift"),
    ({"options": []}, "options"),
    ({"options": {"temperature": "hot"}}, "options.temperature"),
    ({"options": {"temperature": -1}}, "options.temperature"),
    ({"options": {"num_predict": 1.5}}, "options.num_predict"),
    ({"options": {"top_p": 2}}, "options.top_p"),
    ({"options": {"top_k": "40"}}, "options.top_k"),
    ({"options": {"num_ctx": 0}}, "options.num_ctx"),
    ({"options": {"repeat_last_n": -2}}, "options.repeat_last_n"),
    ({"options": {"stop": [1]}}, "options.stop"),
    ({"options": {"use_mmap": "yes"}}, "options.use_mmap"),
    ({"options": {"seed": True}}, "options.seed"),
])
def test_parse_generate_invalid_field_names_param(fields, param):
    with pytest.raises(InvalidRequest) as info:
        generate(**fields)
    assert info.value.param == param


def test_parse_generate_template_refused():
    with pytest.raises(Unsupported) as info:
        generate(template="{{ .Prompt }}")
    assert info.value.param == "template"


# ---------------------------------------------------------------- parse_chat

def test_parse_chat_messages_and_defaults():
    call = chat(messages=[{"role": "system", "content": "s"}, {"role": "USER", "content": "u"},
                          {"role": "assistant"}])
    r = call.request
    assert r.messages == (g.Message("system", "s"), g.Message("user", "u"), g.Message("assistant", ""))
    assert (r.prompt, r.tools, r.tool_choice) == (None, (), g.ToolChoice())
    assert (call.stream, call.load_only) == (True, False)


@pytest.mark.parametrize("messages", [[], None])
def test_parse_chat_empty_messages_is_load_only(messages):
    call = chat(messages=messages)
    assert call.load_only is True and call.request.messages == ()


def test_parse_chat_message_images_base64():
    message = chat(messages=[{"role": "user", "content": "what?", "images": ["aGk=", "eW8="]}]).request.messages[0]
    assert message.images == (b"hi", b"yo")


def test_parse_chat_tool_calls_arguments_as_object():
    assistant = {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"id": "call_x", "function": {"name": "noop"}}]}
    calls = chat(messages=[USER, assistant]).request.messages[1].tool_calls
    assert [(c.id, c.name) for c in calls] == [("call_0", "get_weather"), ("call_x", "noop")]
    assert [json.loads(c.arguments) for c in calls] == [{"city": "Paris"}, {}]


def test_parse_chat_tool_message_tool_name():
    message = chat(messages=[{"role": "tool", "content": "18C", "tool_name": "get_weather",
                              "tool_call_id": "call_0"}]).request.messages[0]
    assert (message.role, message.name, message.tool_call_id) == ("tool", "get_weather", "call_0")


def test_truncate_is_on_unless_the_client_turns_it_off_and_other_protocols_never_truncate():
    assert chat().request.truncate is True and generate().request.truncate is True
    assert chat(truncate=False).request.truncate is False and generate(truncate=False).request.truncate is False
    from shim.protocols import openai as oa
    assert oa.parse_chat({"model": "m", "messages": [USER]}).request.truncate is False


def test_parse_chat_tools_set_tool_choice_auto():
    r = chat(tools=[WEATHER]).request
    assert [t.name for t in r.tools] == ["get_weather"] and r.tool_choice == g.ToolChoice("auto")
    assert r.tools[0].parameters == {"type": "object"}


def test_parse_chat_options_and_format():
    r = chat(options={"temperature": 0, "num_predict": -1}, format="json", keep_alive="10m", stream=False).request
    assert (r.sampling.temperature, r.max_tokens, r.response_format, r.keep_alive) == (
        0, None, g.ResponseFormat("json"), 600.0)


@pytest.mark.parametrize("fields, param", [
    ({"model": None}, "model"),
    ({"messages": "Hi"}, "messages"),
    ({"messages": [{"content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "developer", "content": "x"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x", "images": ["!!"]}]}, "messages[0].images"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]}]},
     "messages[0].tool_calls[0].function.arguments"),
    ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]}]},
     "messages[0].tool_calls[0].function.name"),
    ({"messages": [{"role": "tool", "content": "x", "tool_name": 1}]}, "messages[0].tool_name"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"function": {"name": 1}}]}, "tools[0].function.name"),
    ({"options": {"temperature": "hot"}}, "options.temperature"),
    ({"format": "xml"}, "format"),
    ({"keep_alive": []}, "keep_alive"),
])
def test_parse_chat_invalid_field_names_param(fields, param):
    with pytest.raises(InvalidRequest) as info:
        chat(**fields)
    assert info.value.param == param


def test_parse_chat_non_object_message_names_param():
    with pytest.raises(InvalidRequest) as info:
        chat(messages=["Hi"])
    assert info.value.param == "messages[0]"


# ---------------------------------------------------------------- parse_embed / parse_model_name

def test_parse_embed():
    model, inputs, truncate, dimensions, options = ol.parse_embed({"model": "e", "input": "x", "truncate": False,
                                                                  "dimensions": 8, "options": {"num_ctx": 512}})
    assert (model, inputs, truncate, dimensions, options.num_ctx) == ("e", ["x"], False, 8, 512)


def test_parse_embed_invalid_input():
    with pytest.raises(InvalidRequest, match="invalid input type") as info:
        ol.parse_embed({"model": "e", "input": ["a", 1]})
    assert info.value.param == "input"


@pytest.mark.parametrize("body, name", [({"model": "a"}, "a"), ({"name": "b"}, "b"), ({"model": "", "name": "c"}, "c")])
def test_parse_model_name(body, name):
    assert ol.parse_model_name(body) == name


def test_parse_model_name_required():
    with pytest.raises(InvalidRequest, match="model is required"):
        ol.parse_model_name({})


# ---------------------------------------------------------------- timestamp

@pytest.mark.parametrize("seconds, text", [
    (0, "1970-01-01T00:00:00Z"),
    (1.25, "1970-01-01T00:00:01.25Z"),
    (1700000000, "2023-11-14T22:13:20Z"),
    (1700000010.5, "2023-11-14T22:13:30.5Z"),
])
def test_timestamp_rfc3339_utc_trims_zeros(seconds, text):
    assert ol.timestamp(seconds) == text


def test_timestamp_now_is_rfc3339_ending_in_z():
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z", ol.timestamp())


# ---------------------------------------------------------------- GenerateStream

def gen_stream(raw=False):
    return ol.GenerateStream("m", raw=raw, now=lambda: NOW)


def test_generate_stream_non_final_chunk():
    s = gen_stream()
    assert s.chunks(g.Accepted()) == []
    assert s.chunks(g.TextDelta("Hel")) == [{"model": "m", "created_at": NOW, "response": "Hel", "done": False}]


def test_generate_stream_chunk_logprobs():
    lp = g.TokenLogprob("a", -0.5, (97,), top=(g.TokenLogprob("b", -1.0),))
    chunk = gen_stream().chunks(g.TextDelta("a", logprobs=(lp, g.TokenLogprob("c", -0.1))))[0]
    assert chunk["logprobs"] == [
        {"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": [{"token": "b", "logprob": -1.0, "bytes": []}]},
        {"token": "c", "logprob": -0.1, "bytes": []}]


def test_generate_stream_final_chunk_with_context():
    [chunk] = gen_stream().chunks(FINISH)
    assert chunk == {"model": "m", "created_at": NOW, "response": "", "done": True, "done_reason": "length",
                     "context": [1, 2, 3], **METRICS}


def test_generate_stream_final_chunk_raw_has_no_context():
    [chunk] = gen_stream(raw=True).chunks(FINISH)
    assert "context" not in chunk and chunk["done"] is True


def test_generate_stream_tool_calls_reason_reported_as_stop():
    assert gen_stream().final(g.Finish("tool_calls"))["done_reason"] == "stop"


def test_generate_stream_whole_answer():
    choice = g.Choice(0, text="Because.", logprobs=[g.TokenLogprob("Because", -0.2)], finish=FINISH)
    out = gen_stream().whole(choice)
    assert (out["response"], out["done"], out["done_reason"], out["eval_count"]) == ("Because.", True, "length", 7)
    assert out["logprobs"] == [{"token": "Because", "logprob": -0.2, "bytes": []}]


@pytest.mark.parametrize("reason", ["load", "unload"])
def test_generate_stream_load_reply(reason):
    assert gen_stream().load_reply(reason) == {"model": "m", "created_at": NOW, "response": "", "done": True,
                                               "done_reason": reason}


# ---------------------------------------------------------------- ChatStream

def chat_stream():
    return ol.ChatStream("m", now=lambda: NOW)


def test_chat_stream_non_final_chunk():
    assert chat_stream().chunks(g.TextDelta("Hi")) == [
        {"model": "m", "created_at": NOW, "message": {"role": "assistant", "content": "Hi"}, "done": False}]


def test_chat_stream_tool_call_in_non_final_chunk_with_empty_content():
    call = g.ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    [chunk] = chat_stream().chunks(g.ToolCallDelta(call, position=1))
    assert chunk["done"] is False
    assert chunk["message"] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "function": {"index": 1, "name": "get_weather", "arguments": {"city": "Paris"}}}]}


def test_chat_and_generate_streams_send_whole_calls_only_not_their_argument_pieces():
    s = chat_stream()
    assert s.chunks(g.ToolCallArgumentsDelta('{"city": ', "call_1", "get_weather", 0, 0)) == []
    [chunk] = s.chunks(g.ToolCallDelta(g.ToolCall("call_1", "get_weather", '{"city": "Paris"}')))
    assert chunk["message"]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert ol.GenerateStream("m", now=lambda: NOW).chunks(g.ToolCallArgumentsDelta("{", "c", "f")) == []


def test_chat_stream_tool_call_with_invalid_arguments_renders_empty_object():
    [chunk] = chat_stream().chunks(g.ToolCallDelta(g.ToolCall("c", "f", "not json")))
    assert chunk["message"]["tool_calls"][0]["function"]["arguments"] == {}


def test_chat_stream_leaves_out_a_call_cut_off_mid_way():
    cut = g.ToolCall("c", "get_weather", '{"city": "Par', partial=True)
    assert chat_stream().chunks(g.ToolCallDelta(cut)) == []
    out = chat_stream().whole(g.Choice(0, tool_calls=[cut], finish=g.Finish("length")))
    assert out["message"] == {"role": "assistant", "content": ""} and out["done_reason"] == "length"


def test_chat_stream_reasoning_delta_is_thinking():
    assert chat_stream().chunks(g.ReasoningDelta("Hmm.")) == [
        {"model": "m", "created_at": NOW, "message": {"role": "assistant", "content": "", "thinking": "Hmm."},
         "done": False}]
    assert chat_stream().whole(g.collect([g.ReasoningDelta("Hmm."), g.TextDelta("Hi"), FINISH])[0])["message"] == {
        "role": "assistant", "content": "Hi", "thinking": "Hmm."}


def test_generate_stream_reasoning_delta_is_thinking():
    assert gen_stream().chunks(g.ReasoningDelta("Hmm.")) == [
        {"model": "m", "created_at": NOW, "response": "", "done": False, "thinking": "Hmm."}]
    assert gen_stream().whole(g.collect([g.ReasoningDelta("Hmm."), g.TextDelta("Hi"), FINISH])[0])["thinking"] == "Hmm."


def test_upstream_call_sends_the_tools_a_choice_offers():
    tools = (g.Tool("none"), g.Tool("other"))
    for choice, sent in ((g.ToolChoice.named("none"), ["none"]), (g.ToolChoice("none"), None),
                         (g.ToolChoice("auto", allowed=("other",)), ["other"])):
        request = g.GenerationRequest(model="m", messages=(g.Message("user", "Hi"),), tools=tools, tool_choice=choice)
        wire = ol.upstream_call(request)[1].get("tools")
        assert (wire and [t["function"]["name"] for t in wire]) == sent


@pytest.mark.parametrize("think", [g.Think(True), g.Think(False), g.Think(True, "high")])
def test_upstream_call_think_as_ollama_spells_it(think):
    request = g.GenerationRequest(model="m", prompt="p", think=think)
    assert ol.upstream_call(request)[1]["think"] == {g.Think(True): True, g.Think(False): False}.get(think, "high")


def test_upstream_reader_thinking_is_a_reasoning_delta():
    events = ol.UpstreamReader().events({"message": {"role": "assistant", "content": "Hi", "thinking": "Hmm."}})
    assert events == [g.ReasoningDelta("Hmm."), g.TextDelta("Hi")]


def test_chat_stream_final_chunk_has_metrics_and_no_context():
    [chunk] = chat_stream().chunks(FINISH)
    assert chunk == {"model": "m", "created_at": NOW, "message": {"role": "assistant", "content": ""}, "done": True,
                     "done_reason": "length", **METRICS}


def test_chat_stream_tool_calls_finish_is_stop():
    [chunk] = chat_stream().chunks(g.Finish("tool_calls"))
    assert chunk["done_reason"] == "stop"


def test_chat_stream_whole_answer_with_tool_calls():
    calls = [g.ToolCall("c0", "a", "{}"), g.ToolCall("c1", "b", '{"x": 1}')]
    out = chat_stream().whole(g.Choice(0, text="", tool_calls=calls, finish=g.Finish("tool_calls")))
    assert out["message"]["tool_calls"] == [{"id": "c0", "function": {"index": 0, "name": "a", "arguments": {}}},
                                            {"id": "c1", "function": {"index": 1, "name": "b", "arguments": {"x": 1}}}]
    assert out["done_reason"] == "stop"


def test_chat_stream_load_reply():
    assert chat_stream().load_reply("unload") == {"model": "m", "created_at": NOW,
                                                  "message": {"role": "assistant", "content": ""}, "done": True,
                                                  "done_reason": "unload"}


# ---------------------------------------------------------------- tags, ps, show, error

INFO = g.ModelInfo(name="smollm2:135m", backend="local", family="llama", parameter_size="135M", quantization="Q8_0",
                   size=1000, digest="abc", context_length=8192, modified_at=0.0, capabilities=("completion", "tools"),
                   template="{{ x }}", loaded=True, expires_at=1.5)
DETAILS = {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"], "parameter_size": "135M",
           "quantization_level": "Q8_0"}


def test_render_tags():
    assert ol.render_tags([INFO]) == {"models": [{"name": "smollm2:135m", "model": "smollm2:135m",
                                                  "modified_at": "1970-01-01T00:00:00Z", "size": 1000,
                                                  "digest": "abc", "capabilities": ["completion", "tools"],
                                                  "details": {**DETAILS, "context_length": 8192}}]}


def test_render_tags_empty_and_familyless():
    assert ol.render_tags([]) == {"models": []}
    listed = ol.render_tags([g.ModelInfo("x", "local")])["models"][0]
    # An unknown context length is left out rather than reported as 0.
    assert listed["details"]["families"] is None and "context_length" not in listed["details"]
    assert listed["capabilities"] == ["completion"]


def test_tags_show_and_models_agree_on_capabilities_and_context_length():
    from shim.protocols import openai as oa
    tagged, shown, model = ol.render_tags([INFO])["models"][0], ol.render_show(INFO), oa.render_model(INFO)
    assert tagged["capabilities"] == shown["capabilities"] == model["capabilities"] == ["completion", "tools"]
    assert (tagged["details"]["context_length"] == shown["model_info"]["llama.context_length"]
            == model["context_length"] == model["max_model_len"] == 8192)


def test_show_leaves_an_unknown_context_length_out():
    shown = ol.render_show(g.ModelInfo("up", "vllm", format=""))
    assert not any(k.endswith(".context_length") for k in shown["model_info"])


def test_an_upstream_show_answer_says_what_shim_says_of_the_model():
    upstream = {"template": "{{ .Prompt }}", "capabilities": ["completion"],
                "model_info": {"general.architecture": "qwen3", "qwen3.context_length": 40960, "qwen3.block_count": 28}}
    info = g.ModelInfo("q", "ollama", family="qwen3", context_length=8192, capabilities=("completion", "tools"))
    shown = ol.render_upstream_show(upstream, info)
    assert shown["capabilities"] == ["completion", "tools"] and shown["template"] == "{{ .Prompt }}"
    assert shown["model_info"] == {"general.architecture": "qwen3", "qwen3.context_length": 8192,
                                   "qwen3.block_count": 28}
    assert ol.render_upstream_show(upstream, dataclasses.replace(info, context_length=0))["model_info"] == \
        upstream["model_info"]


@pytest.mark.parametrize("shown, described", [
    ({"capabilities": ["completion", "tools", "thinking"],
      "model_info": {"general.architecture": "qwen3", "qwen3.context_length": 40960}},
     {"capabilities": ("completion", "tools", "thinking"), "context_length": 40960}),
    ({"model_info": {"general.architecture": "llama", "llama.context_length": 0}}, {}),
    ({"capabilities": "tools", "model_info": None}, {}),
    ({"model_info": {"general.architecture": "bert", "bert.context_length": True}}, {}),
    ({}, {}),
])
def test_described_by_show(shown, described):
    assert ol.described_by_show(shown) == described


def test_render_ps_lists_only_loaded_models_longest_staying_first():
    unloaded = g.ModelInfo("other", "local")
    forever = g.ModelInfo("pinned", "local", loaded=True)
    models = ol.render_ps([INFO, unloaded, forever])["models"]
    assert [m["name"] for m in models] == ["pinned", "smollm2:135m"]
    assert models[1] == {"name": "smollm2:135m", "model": "smollm2:135m", "size": 1000, "digest": "abc",
                         "details": DETAILS, "expires_at": "1970-01-01T00:00:01.5Z", "size_vram": 0,
                         "context_length": 8192}
    assert models[0]["expires_at"] == "2318-01-01T00:00:00Z"


def test_render_show():
    info = g.ModelInfo(**{**INFO.__dict__, "extra": {"parameter_count": 135000000, "parameters": "stop <|im_end|>",
                                                     "model_info": {"llama.block_count": 30}}})
    out = ol.render_show(info)
    assert out["model_info"] == {"general.architecture": "llama", "general.parameter_count": 135000000,
                                 "llama.context_length": 8192, "llama.block_count": 30}
    assert (out["template"], out["parameters"], out["capabilities"], out["details"]) == (
        "{{ x }}", "stop <|im_end|>", ["completion", "tools"], DETAILS)
    assert out["modified_at"] == "1970-01-01T00:00:00Z"
    assert "FROM smollm2:135m" in out["modelfile"]


def test_render_show_always_includes_model_info():
    out = ol.render_show(g.ModelInfo("bare", "local"))
    assert isinstance(out["model_info"], dict) and "general.architecture" in out["model_info"]


def test_render_error():
    assert ol.render_error(ModelNotFound("x")) == {"error": "model 'x' not found"}
    assert ol.render_error(InvalidRequest("model is required", param="model")) == {"error": "model is required"}


# ---------------------------------------------------------------- limits

def test_options_stop_takes_up_to_sixteen_sequences_of_up_to_256_characters():
    stops = [f"s{i}" for i in range(15)] + ["x" * 256]
    assert generate(options={"stop": stops}).request.stop == tuple(stops)
    for bad in ([f"s{i}" for i in range(17)], ["x" * 257], "x" * 257):
        with pytest.raises(InvalidRequest) as info:
            chat(options={"stop": bad})
        assert info.value.param == "options.stop" and re.search(r"at most (16|256)", info.value.message)


# ---------------------------------------------------------------- reasoning in history

def test_parse_chat_keeps_an_earlier_turns_thinking():
    messages = [{"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello", "thinking": "They greet me."}]
    assert chat(messages=messages).request.messages[1] == g.Message("assistant", "Hello", reasoning="They greet me.")


def test_parse_chat_thinking_that_is_not_text_is_refused_by_name():
    with pytest.raises(InvalidRequest) as err:
        chat(messages=[{"role": "assistant", "content": "x", "thinking": ["no"]}])
    assert err.value.param == "messages[0].thinking"


def test_upstream_call_sends_earlier_thinking_back():
    messages = (g.Message("user", "Hi"), g.Message("assistant", "Hello", reasoning="They greet me."))
    wire = ol.upstream_call(g.GenerationRequest(model="m", messages=messages))[1]["messages"]
    assert wire == [{"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello", "thinking": "They greet me."}]


def test_upstream_reader_counts_thinking_parts_as_reasoning_tokens():
    reader = ol.UpstreamReader()
    for piece in ("a", "b"):
        reader.events({"message": {"role": "assistant", "content": "", "thinking": piece}})
    [finish] = reader.events({"message": {"role": "assistant", "content": ""}, "done": True, "eval_count": 5})
    assert finish.usage == g.Usage(0, 5, 0, 2)
