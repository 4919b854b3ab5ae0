"""End to end, field by field: the official openai and ollama clients against real gunicorn and the real SmolLM2.

Every test checks what the model wrote, not only the status: greedy (temperature 0) answers are compared with each
other, JSON answers are parsed and validated, tool calls are checked against their schemas.
"""
import json
import math

import jsonschema
import ollama
import openai
import pytest
import requests

from tests.support import PARIS_WEATHER, WEATHER

MODEL = "smollm2:135m"
GREEDY = dict(temperature=0)
COLORS = [{"role": "user", "content": "Name three colors."}]
COLORS_TEXT = "1. Red\n2. Blue\n3. Green"
"What the greedy model answers to COLORS (seen through every client and path below)."
HELLO = "Repeat the word hello ten times."
FRANCE = "What is the capital of France?"
# A 1x1 PNG: a real image, so the refusal is about the model, not about the data.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

CLOCK = {"type": "function", "function": {
    "name": "get_time", "description": "Get the current time in a timezone",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["timezone"],
                   "properties": {"timezone": {"type": "string", "maxLength": 30}}}}}

# A few-shot history in which the assistant answered a weather question with a call; the model follows it.
CITY_WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
OLLAMA_FEW_SHOT = [
    {"role": "user", "content": "What is the weather in London?"},
    {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather",
                                                                      "arguments": {"city": "London"}}}]},
    {"role": "tool", "content": '{"temperature": 12, "sky": "cloudy"}', "tool_name": "get_weather"},
    {"role": "assistant", "content": "It is 12 degrees and cloudy in London."},
    {"role": "user", "content": "What is the weather in Paris?"},
]
OPENAI_FEW_SHOT = [
    OLLAMA_FEW_SHOT[0],
    {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "London"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 12, "sky": "cloudy"}'},
    OLLAMA_FEW_SHOT[3],
    OLLAMA_FEW_SHOT[4],
]


# The clients are closed after the module: an idle keep-alive connection holds gunicorn's graceful shutdown.
def ask(oai, messages, **kwargs):
    """One non-streaming chat completion; a string is a single user message."""
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    return oai.chat.completions.create(model=MODEL, messages=messages, **{**GREEDY, **kwargs})


def text_of(oai, messages, **kwargs):
    return ask(oai, messages, **kwargs).choices[0].message.content


def norm(vector):
    return math.sqrt(sum(x * x for x in vector))


def assert_logprob_entries(entries, top, text):
    """OpenAI chat logprobs: values <= 0, greedy pick first of its alternatives, sorted, tokens spell the text."""
    assert entries, "logprobs asked for, none given"
    for entry in entries:
        assert entry.logprob <= 0
        assert bytes(entry.bytes) == entry.token.encode()
        assert len(entry.top_logprobs) == top
        values = [t.logprob for t in entry.top_logprobs]
        assert all(v <= 0 for v in values) and values == sorted(values, reverse=True)
        assert entry.top_logprobs[0].token == entry.token, "greedy picks the most likely token"
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
    assert "".join(e.token for e in entries) == text


# ================================================================ OpenAI /v1/chat/completions

def test_openai_n2_gives_two_indexed_choices(oai):
    single = ask(oai, COLORS, max_tokens=16)
    assert single.choices[0].message.content == COLORS_TEXT
    both = ask(oai, COLORS, max_tokens=16, n=2)
    assert [c.index for c in both.choices] == [0, 1]
    assert [c.message.content for c in both.choices] == [COLORS_TEXT, COLORS_TEXT]
    assert [c.finish_reason for c in both.choices] == ["stop", "stop"]
    assert both.usage.completion_tokens == 2 * single.usage.completion_tokens
    assert both.usage.prompt_tokens == single.usage.prompt_tokens


def test_openai_n2_streams_both_choices_with_usage(oai):
    single = ask(oai, COLORS, max_tokens=16)
    chunks = list(oai.chat.completions.create(model=MODEL, messages=COLORS, max_tokens=16, n=2, stream=True,
                                              stream_options={"include_usage": True}, **GREEDY))
    texts, finishes, roles = {}, {}, {}
    for chunk in chunks[:-1]:
        assert chunk.usage is None
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.delta.role:
                roles.setdefault(choice.index, []).append(choice.delta.role)
            if choice.finish_reason:
                finishes.setdefault(choice.index, []).append(choice.finish_reason)
    assert texts == {0: COLORS_TEXT, 1: COLORS_TEXT}
    assert finishes == {0: ["stop"], 1: ["stop"]}
    assert roles == {0: ["assistant"], 1: ["assistant"]}
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == 2 * single.usage.completion_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_openai_stop_list_cuts_at_the_first_stop(oai):
    reply = ask(oai, COLORS, max_tokens=16, stop=["Green", "Blue"])
    assert reply.choices[0].message.content == COLORS_TEXT[: COLORS_TEXT.index("Blue")]
    assert reply.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty"])
def test_openai_penalties_break_a_repetitive_greedy_answer(oai, penalty):
    plain = text_of(oai, HELLO, max_tokens=30)
    assert plain.lower().count("hello") >= 10
    penalised = text_of(oai, HELLO, max_tokens=30, **{penalty: 2.0})
    assert penalised != plain
    assert penalised.lower().count("hello") < 5


def test_openai_logit_bias_bans_the_first_greedy_token(oai, oll):
    greedy = ask(oai, FRANCE, max_tokens=8, logprobs=True)
    first = greedy.choices[0].logprobs.content[0].token
    # The token id, through the API: Ollama's generate context ends with the ids of what it generated, and its
    # prompt is the same chat template around the same single user message.
    probe = oll.generate(model=MODEL, prompt=FRANCE, options={"temperature": 0, "num_predict": 1})
    assert probe.response == first
    token_id = probe.context[-1]
    biased = ask(oai, FRANCE, max_tokens=8, logprobs=True, logit_bias={str(token_id): -100})
    assert biased.choices[0].logprobs.content[0].token != first
    assert biased.choices[0].message.content != greedy.choices[0].message.content
    assert biased.choices[0].message.content


def test_openai_seed_makes_sampling_reproducible(oai):
    prompt = "Write a short poem about the moon."
    first = text_of(oai, prompt, temperature=1, seed=42, max_tokens=30)
    again = text_of(oai, prompt, temperature=1, seed=42, max_tokens=30)
    other = text_of(oai, prompt, temperature=1, seed=43, max_tokens=30)
    assert first and first == again
    assert other != first


def test_openai_user_and_unknown_fields_are_ignored(oai):
    assert text_of(oai, COLORS, max_tokens=16, user="user-1234") == COLORS_TEXT
    assert text_of(oai, COLORS, max_tokens=16, extra_body={"some_unknown_field": 1}) == COLORS_TEXT


def test_openai_logprobs_whole(oai):
    reply = ask(oai, COLORS, max_tokens=16, logprobs=True, top_logprobs=3)
    choice = reply.choices[0]
    assert choice.message.content == COLORS_TEXT
    assert_logprob_entries(choice.logprobs.content, 3, choice.message.content)
    assert len(choice.logprobs.content) == reply.usage.completion_tokens


def test_openai_logprobs_streamed(oai):
    chunks = list(oai.chat.completions.create(model=MODEL, messages=COLORS, max_tokens=16, logprobs=True,
                                              top_logprobs=2, stream=True, **GREEDY))
    entries, text = [], ""
    for chunk in chunks:
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        if choice.logprobs:
            entries.extend(choice.logprobs.content)
    assert text == COLORS_TEXT
    assert_logprob_entries(entries, 2, text)


def test_openai_response_format_json_object(oai):
    reply = ask(oai, "Give me a JSON object describing a cat with keys name and age.", max_tokens=120,
                response_format={"type": "json_object"})
    value = json.loads(reply.choices[0].message.content)
    assert isinstance(value, dict) and value
    assert reply.choices[0].finish_reason == "stop"


JSON_SCHEMAS = {
    "enum": {"type": "object", "additionalProperties": False, "required": ["color"],
             "properties": {"color": {"type": "string", "enum": ["red", "green", "blue"]}}},
    "integer_boolean": {"type": "object", "additionalProperties": False, "required": ["age", "adult"],
                        "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 150},
                                       "adult": {"type": "boolean"}}},
    "bounded_string": {"type": "object", "additionalProperties": False, "required": ["city", "population"],
                       "properties": {"city": {"type": "string", "maxLength": 20},
                                      "population": {"type": "integer"}}},
    "array": {"type": "object", "additionalProperties": False, "required": ["tags"],
              "properties": {"tags": {"type": "array", "maxItems": 3,
                                      "items": {"type": "string", "maxLength": 10}}}},
}


@pytest.mark.parametrize("name", JSON_SCHEMAS)
def test_openai_response_format_json_schema(oai, name):
    schema = JSON_SCHEMAS[name]
    reply = ask(oai, "Describe a person.", max_tokens=80,
                response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}})
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].message.content), schema)


def _check_call(call, tool):
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == tool["function"]["name"]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


@pytest.mark.parametrize("choice, tool", [("required", WEATHER),
                                          ({"type": "function", "function": {"name": "get_time"}}, CLOCK)])
def test_openai_forced_tool_call(oai, choice, tool):
    reply = ask(oai, PARIS_WEATHER, max_tokens=60, tools=[WEATHER, CLOCK], tool_choice=choice)
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert message.content is None and len(message.tool_calls) == 1
    _check_call(message.tool_calls[0], tool)
    if tool is WEATHER:
        assert json.loads(message.tool_calls[0].function.arguments)["city"] == "Paris"


def test_openai_parallel_tool_calls_false_gives_one_call(oai):
    reply = ask(oai, PARIS_WEATHER, max_tokens=60, tools=[WEATHER, CLOCK], tool_choice="required",
                parallel_tool_calls=False)
    assert reply.choices[0].finish_reason == "tool_calls"
    assert len(reply.choices[0].message.tool_calls) == 1
    _check_call(reply.choices[0].message.tool_calls[0], WEATHER)


def test_openai_tool_choice_auto_follows_a_few_shot_history_and_none_forbids_calls(oai):
    auto = ask(oai, OPENAI_FEW_SHOT, max_tokens=40, tools=[CITY_WEATHER], tool_choice="auto")
    assert auto.choices[0].finish_reason == "tool_calls"
    call = auto.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}

    none = ask(oai, OPENAI_FEW_SHOT, max_tokens=40, tools=[CITY_WEATHER], tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].finish_reason == "stop"
    assert isinstance(none.choices[0].message.content, str) and none.choices[0].message.content
    plain = ask(oai, PARIS_WEATHER, max_tokens=30, tools=[WEATHER, CLOCK], tool_choice="none")
    assert plain.choices[0].message.tool_calls is None
    assert "Paris" in plain.choices[0].message.content


def _reassembled(chunks):
    """(content, calls by index, finish reasons) of a streamed chat completion."""
    calls, finishes, content = {}, [], ""
    for chunk in chunks:
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for part in choice.delta.tool_calls or []:
            call = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
            call["id"] += part.id or ""
            call["name"] += part.function.name or ""
            call["arguments"] += part.function.arguments or ""
        if choice.finish_reason:
            finishes.append(choice.finish_reason)
    return content, calls, finishes


def test_openai_streamed_tool_calls_reassemble(oai):
    for messages, kwargs in ((PARIS_WEATHER, dict(tools=[WEATHER, CLOCK], tool_choice="required")),
                             (OPENAI_FEW_SHOT, dict(tools=[CITY_WEATHER]))):
        content, calls, finishes = _reassembled(oai.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=60, stream=True, **kwargs, **GREEDY))
        assert finishes == ["tool_calls"] and content == ""
        assert list(calls) == [0] and calls[0]["id"].startswith("call_")
        assert calls[0]["name"] == "get_weather"
        arguments = json.loads(calls[0]["arguments"])
        jsonschema.validate(arguments, kwargs["tools"][0]["function"]["parameters"])
        assert arguments["city"] == "Paris"


# max_tokens that cut the forced call inside its name, and inside its arguments.
CUT_IN_NAME, CUT_IN_ARGUMENTS = 4, 16


@pytest.mark.parametrize("max_tokens", [CUT_IN_NAME, CUT_IN_ARGUMENTS])
def test_openai_tool_call_cut_off_by_max_tokens_is_a_partial_call_never_content(oai, max_tokens):
    kwargs = dict(max_tokens=max_tokens, tools=[WEATHER, CLOCK],
                  tool_choice={"type": "function", "function": {"name": "get_weather"}})
    whole = ask(oai, PARIS_WEATHER, **kwargs).choices[0]
    calls = [(c.function.name, c.function.arguments) for c in whole.message.tool_calls or ()]
    assert whole.finish_reason == "length" and not whole.message.content
    content, streamed, finishes = _reassembled(oai.chat.completions.create(
        model=MODEL, messages=PARIS_WEATHER, stream=True, **kwargs, **GREEDY))
    assert finishes == ["length"] and content == ""
    assert [(c["name"], c["arguments"]) for c in streamed.values()] == calls
    if max_tokens == CUT_IN_NAME:
        assert calls == []
    else:
        [(name, arguments)] = calls
        assert name == "get_weather" and arguments.startswith("{")
        with pytest.raises(ValueError):
            json.loads(arguments)


@pytest.mark.parametrize("max_tokens", [CUT_IN_NAME, CUT_IN_ARGUMENTS])
def test_ollama_tool_call_cut_off_by_num_predict_is_left_out_never_content(shim_url, max_tokens):
    """tool_choice is shim's extension of /api/chat (the ollama client cannot send it): raw HTTP."""
    body = {"model": MODEL, "messages": PARIS_WEATHER, "tools": [WEATHER], "tool_choice": "required",
            "options": {"temperature": 0, "num_predict": max_tokens}}
    for stream in (False, True):
        with requests.post(shim_url + "/api/chat", json={**body, "stream": stream}, stream=True, timeout=120) as reply:
            assert reply.status_code == 200
            parts = [ollama.ChatResponse(**json.loads(line)) for line in reply.iter_lines() if line]
        assert "".join(p.message.content or "" for p in parts) == ""
        assert not [c for p in parts for c in p.message.tool_calls or ()]
        assert parts[-1].done and parts[-1].done_reason == "length" and parts[-1].eval_count == max_tokens


def test_openai_strict_function_arguments_match_the_schema(oai):
    strict = {"type": "function", "function": {**WEATHER["function"], "strict": True}}
    messages = PARIS_WEATHER + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"city": "Paris", "temperature": 18, "sky": "sunny"}'},
    ]
    reply = ask(oai, messages, max_tokens=60, tools=[strict])
    message = reply.choices[0].message
    assert message.tool_calls or message.content
    for call in message.tool_calls or []:
        _check_call(call, strict)


def test_openai_tool_result_turn_gives_a_text_answer(oai):
    messages = PARIS_WEATHER + [
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"city": "Paris", "temperature": 18, "sky": "sunny"}'},
    ]
    reply = ask(oai, messages, max_tokens=40)
    message = reply.choices[0].message
    assert message.tool_calls is None and reply.choices[0].finish_reason in ("stop", "length")
    assert "Paris" in message.content and "sunny" in message.content


def test_openai_content_as_text_parts(oai):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Name three colors."}]}]
    assert text_of(oai, parts, max_tokens=16) == COLORS_TEXT


def test_openai_image_part_is_refused_by_name(oai):
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG_B64}}]}]
    with pytest.raises(openai.BadRequestError) as refused:
        ask(oai, messages, max_tokens=8)
    assert refused.value.status_code == 400
    assert "images" in refused.value.body["message"] and refused.value.body["param"] == "images"
    messages[0]["content"][1]["image_url"]["url"] = "https://example.com/cat.png"
    with pytest.raises(openai.BadRequestError) as by_url:
        ask(oai, messages, max_tokens=8)
    assert "image" in by_url.value.body["message"] and "image" in by_url.value.body["param"]


def test_openai_wrong_type_names_the_field(oai):
    with pytest.raises(openai.BadRequestError) as bad:
        ask(oai, COLORS, max_tokens="ten")
    assert bad.value.status_code == 400 and bad.value.body["param"] == "max_tokens"
    assert "integer" in bad.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad_content:
        ask(oai, [{"role": "user", "content": 42}])
    assert bad_content.value.body["param"] == "messages[0].content"
    with pytest.raises(openai.BadRequestError) as bad_user:
        ask(oai, COLORS, max_tokens=4, extra_body={"user": 7})
    assert bad_user.value.body["param"] == "user"


def test_openai_stream_options_include_usage_counts_the_streamed_tokens(oai):
    chunks = list(oai.chat.completions.create(model=MODEL, messages=COLORS, max_tokens=16, stream=True,
                                              stream_options={"include_usage": True}, logprobs=True, **GREEDY))
    tokens = sum(len(c.choices[0].logprobs.content) for c in chunks if c.choices and c.choices[0].logprobs)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == COLORS_TEXT
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == tokens


# ================================================================ OpenAI /v1/completions, /v1/embeddings, envelope

PARIS_PROMPT = "The capital of France is"


def test_openai_completions_text_and_stream(oai):
    whole = oai.completions.create(model=MODEL, prompt=PARIS_PROMPT, max_tokens=8, **GREEDY)
    choice = whole.choices[0]
    assert whole.object == "text_completion" and choice.text.startswith(" Paris")
    assert choice.finish_reason == "length" and whole.usage.completion_tokens == 8
    chunks = list(oai.completions.create(model=MODEL, prompt=PARIS_PROMPT, max_tokens=8, stream=True, **GREEDY))
    assert "".join(c.choices[0].text for c in chunks) == choice.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["length"]
    assert len(chunks) > 3


def test_openai_completions_echo(oai):
    plain = oai.completions.create(model=MODEL, prompt=PARIS_PROMPT, max_tokens=8, **GREEDY).choices[0].text
    echoed = oai.completions.create(model=MODEL, prompt=PARIS_PROMPT, max_tokens=8, echo=True, **GREEDY)
    assert echoed.choices[0].text == PARIS_PROMPT + plain


def test_openai_completions_echo_streamed(oai):
    plain = oai.completions.create(model=MODEL, prompt=PARIS_PROMPT, max_tokens=8, **GREEDY).choices[0].text
    chunks = list(oai.completions.create(model=MODEL, prompt=PARIS_PROMPT, max_tokens=8, echo=True, stream=True,
                                         **GREEDY))
    assert "".join(c.choices[0].text for c in chunks) == PARIS_PROMPT + plain


def test_openai_completions_logprobs(oai):
    reply = oai.completions.create(model=MODEL, prompt=PARIS_PROMPT, max_tokens=6, logprobs=2, **GREEDY)
    choice = reply.choices[0]
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text and len(lp.tokens) == 6
    assert lp.tokens[0] == " Paris"
    for token, value, top, offset in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, lp.text_offset):
        assert value <= 0 and len(top) == 2 and all(v <= 0 for v in top.values())
        assert max(top, key=top.get) == token and top[token] == pytest.approx(value)
        assert choice.text[offset:].startswith(token)


def test_openai_completions_logprobs_streamed(oai):
    whole = oai.completions.create(model=MODEL, prompt=PARIS_PROMPT, max_tokens=6, logprobs=2, **GREEDY)
    chunks = list(oai.completions.create(model=MODEL, prompt=PARIS_PROMPT, max_tokens=6, logprobs=2, stream=True,
                                         **GREEDY))
    parts = [c.choices[0].logprobs for c in chunks if c.choices[0].logprobs]
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert [t for p in parts for t in p.tokens] == whole.choices[0].logprobs.tokens
    assert [o for p in parts for o in p.text_offset] == whole.choices[0].logprobs.text_offset


def test_openai_completions_echo_with_logprobs_is_refused(oai):
    # Prompt-token log probabilities are not computed, so echo cannot come with logprobs that cover the text.
    with pytest.raises(openai.BadRequestError) as refused:
        oai.completions.create(model=MODEL, prompt=PARIS_PROMPT, max_tokens=4, logprobs=1, echo=True, **GREEDY)
    assert refused.value.body["param"] == "echo" and "logprobs" in refused.value.body["message"]


def test_openai_embeddings(oai):
    inputs = ["hello world", "the sky is blue"]
    default = oai.embeddings.create(model=MODEL, input=inputs)  # the SDK asks for base64 and decodes it
    assert [d.index for d in default.data] == [0, 1] and default.usage.prompt_tokens > 0
    vectors = [d.embedding for d in default.data]
    assert all(isinstance(x, float) for x in vectors[0]) and len(vectors[0]) == 576
    assert [norm(v) for v in vectors] == [pytest.approx(1, abs=1e-5)] * 2
    assert vectors[0] != vectors[1]
    floats = oai.embeddings.create(model=MODEL, input=inputs[0], encoding_format="float").data[0].embedding
    assert floats == pytest.approx(vectors[0], abs=1e-6)
    short = oai.embeddings.create(model=MODEL, input=inputs[0], dimensions=16).data[0].embedding
    assert len(short) == 16 and norm(short) == pytest.approx(1, abs=1e-5)
    head = floats[:16]
    assert short == pytest.approx([x / norm(head) for x in head], abs=1e-5)


def test_openai_envelope_endpoint(shim_url):
    body = {"model": MODEL, "messages": COLORS, "max_tokens": 16, "temperature": 0}
    reply = requests.post(shim_url + "/api/v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 200
    envelope = reply.json()
    assert {k: envelope[k] for k in ("success", "code", "message")} == \
        {"success": True, "code": "200", "message": "successful"}
    assert envelope["data"]["object"] == "chat.completion"
    assert envelope["data"]["choices"][0]["message"]["content"] == COLORS_TEXT
    bad = requests.post(shim_url + "/api/v1/chat/completions", json={**body, "max_tokens": "x"}, timeout=60)
    assert bad.status_code == 400
    assert bad.json() == {"success": False, "code": "400", "message": "'max_tokens' must be an integer, got a string",
                          "data": None}


# ================================================================ Ollama: format and options

PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "pet"],
          "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
                         "pet": {"type": "boolean"}}}


def test_ollama_format_json(oll):
    options = {"temperature": 0, "num_predict": 100}
    prompt = "Give me a JSON object describing a cat with keys name and age."
    generated = oll.generate(model=MODEL, prompt=prompt, format="json", options=options)
    assert generated.done_reason == "stop" and isinstance(json.loads(generated.response), dict)
    chatted = oll.chat(model=MODEL, messages=[{"role": "user", "content": prompt}], format="json", options=options)
    assert chatted.done_reason == "stop" and isinstance(json.loads(chatted.message.content), dict)


def test_ollama_format_schema(oll):
    options = {"temperature": 0, "num_predict": 100}
    generated = oll.generate(model=MODEL, prompt="Describe a person.", format=PERSON, options=options)
    jsonschema.validate(json.loads(generated.response), PERSON)
    parts = list(oll.chat(model=MODEL, messages=[{"role": "user", "content": "Describe a person."}], format=PERSON,
                          options=options, stream=True))
    jsonschema.validate(json.loads("".join(p.message.content for p in parts)), PERSON)
    assert parts[-1].done_reason == "stop"


SEA = "Write a sentence about the sea."


def _generate(oll, prompt=HELLO, **options):
    return oll.generate(model=MODEL, prompt=prompt, options={"temperature": 0, "num_predict": 30, **options}).response


@pytest.fixture(scope="module")
def hello_greedy(oll):
    """The greedy answer to HELLO: the same word, over and over."""
    plain = _generate(oll)
    assert plain.lower().count("hello") >= 10
    return plain


@pytest.fixture(scope="module")
def sea(oll):
    """The greedy answer to SEA, and the seeded samples (seeds 1 and 5) it is compared with."""
    return {"greedy": _generate(oll, SEA), 1: _generate(oll, SEA, temperature=1, seed=1),
            5: _generate(oll, SEA, temperature=1, seed=5)}


def test_ollama_num_predict_and_stop(oll):
    short = oll.chat(model=MODEL, messages=COLORS, options={"temperature": 0, "num_predict": 3})
    assert short.eval_count == 3 and short.done_reason == "length" and COLORS_TEXT.startswith(short.message.content)
    cut = oll.chat(model=MODEL, messages=COLORS, options={"temperature": 0, "num_predict": 16, "stop": ["Blue"]})
    assert cut.message.content == COLORS_TEXT[: COLORS_TEXT.index("Blue")] and cut.done_reason == "stop"


def test_ollama_seed_makes_sampling_reproducible(oll, sea):
    assert sea[1] and sea[1] == _generate(oll, SEA, temperature=1, seed=1)
    assert sea[1] != _generate(oll, SEA, temperature=1, seed=2)


@pytest.mark.parametrize("option", [{"top_k": 1}, {"top_p": 0.0}, {"min_p": 1.0}])
def test_ollama_truncating_samplers_make_sampling_greedy(oll, sea, option):
    assert sea[5] != sea["greedy"], "the seed must give a non-greedy answer, or this test proves nothing"
    assert _generate(oll, SEA, temperature=1, seed=5, **option) == sea["greedy"]


def test_ollama_typical_p_changes_sampling(oll, sea):
    typical = _generate(oll, SEA, temperature=1, seed=1, typical_p=0.5)
    assert typical and typical != sea[1]
    assert typical == _generate(oll, SEA, temperature=1, seed=1, typical_p=0.5)


@pytest.mark.parametrize("option", [{"repeat_penalty": 1.5}, {"presence_penalty": 1.5},
                                    {"frequency_penalty": 1.5}])
def test_ollama_penalties_break_a_repetitive_greedy_answer(oll, hello_greedy, option):
    penalised = _generate(oll, **option)
    assert penalised != hello_greedy and penalised.lower().count("hello") < 5


def test_ollama_repeat_last_n_zero_disables_the_penalty(oll, hello_greedy):
    assert _generate(oll, repeat_penalty=1.5, repeat_last_n=0) == hello_greedy


def test_ollama_num_ctx_and_unknown_options_are_accepted(oll, hello_greedy):
    assert _generate(oll, num_ctx=2048) == hello_greedy
    assert _generate(oll, some_unknown_option=3) == hello_greedy


@pytest.mark.parametrize("option, value", [("num_predict", "many"), ("top_k", "x"), ("repeat_penalty", "high"),
                                           ("stop", 5)])
def test_ollama_wrongly_typed_option_is_named(oll, option, value):
    with pytest.raises(ollama.ResponseError) as bad:
        oll.chat(model=MODEL, messages=COLORS, options={option: value})
    assert bad.value.status_code == 400 and f"options.{option}" in bad.value.error


# ================================================================ Ollama: context, load/unload, refusals

def test_ollama_context_continues_the_conversation(oll):
    options = {"temperature": 0, "num_predict": 40}
    first = oll.generate(model=MODEL, prompt="The password is banana.", options=options)
    question = "What is the password?"
    second = oll.generate(model=MODEL, prompt=question, context=first.context, options=options)
    fresh = oll.generate(model=MODEL, prompt=question, options=options)
    assert second.prompt_eval_count > first.prompt_eval_count + first.eval_count
    assert second.context[: len(first.context)] == first.context
    # What a 135M model recalls hangs on the last bits of its arithmetic (which kernels evaluated which prompt
    # chunk), so the answer is checked for what the context changed, not for a word.
    assert "banana" not in fresh.response and second.response != fresh.response


def _refusal(call):
    with pytest.raises(ollama.ResponseError) as refused:
        call()
    assert refused.value.status_code == 400
    return refused.value.error


def test_ollama_refuses_what_the_model_cannot_do(oll):
    options = {"num_predict": 4}
    assert "suffix" in _refusal(lambda: oll.generate(model=MODEL, prompt="def f(", suffix="return x",
                                                     options=options))
    assert "thinking" in _refusal(lambda: oll.generate(model=MODEL, prompt="Hi", think=True, options=options))
    assert "thinking" in _refusal(lambda: oll.chat(model=MODEL, messages=COLORS, think=True, options=options))
    assert "images" in _refusal(lambda: oll.generate(model=MODEL, prompt="What is this?", images=[PNG_B64],
                                                     options=options))
    with_image = [{"role": "user", "content": "What is this?", "images": [PNG_B64]}]
    assert "images" in _refusal(lambda: oll.chat(model=MODEL, messages=with_image, options=options))
    assert "'template'" in _refusal(lambda: oll.generate(model=MODEL, prompt="Hi", template="{{ .Prompt }}",
                                                         options=options))
    # think=False asks for nothing the model lacks
    assert oll.chat(model=MODEL, messages=COLORS, think=False,
                    options={"temperature": 0, "num_predict": 16}).message.content == COLORS_TEXT


# ================================================================ Ollama: tools, logprobs, embeddings

def test_ollama_chat_tool_call_from_a_few_shot_history(oll):
    options = {"temperature": 0, "num_predict": 60}
    reply = oll.chat(model=MODEL, messages=OLLAMA_FEW_SHOT, tools=[CITY_WEATHER], options=options)
    calls = reply.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert isinstance(calls[0].function.arguments, dict) and calls[0].function.arguments == {"city": "Paris"}
    assert reply.message.content == "" and reply.done_reason == "stop"

    parts = list(oll.chat(model=MODEL, messages=OLLAMA_FEW_SHOT, tools=[CITY_WEATHER], options=options,
                          stream=True))
    streamed = [c for p in parts for c in (p.message.tool_calls or [])]
    assert [(c.function.name, c.function.arguments) for c in streamed] == [("get_weather", {"city": "Paris"})]
    assert "".join(p.message.content for p in parts) == ""
    assert parts[-1].done and parts[-1].done_reason == "stop"


def _check_ollama_logprobs(entries, text, top):
    assert entries and "".join(e.token for e in entries) == text
    for entry in entries:
        assert entry.logprob <= 0
        if top:
            values = [t.logprob for t in entry.top_logprobs]
            assert len(values) == top and values == sorted(values, reverse=True) and all(v <= 0 for v in values)
            assert entry.top_logprobs[0].token == entry.token
        else:
            assert entry.top_logprobs is None


def test_ollama_logprobs(oll, shim_url):
    options = {"temperature": 0, "num_predict": 16}
    generated = oll.generate(model=MODEL, prompt="Name three colors.", logprobs=True, top_logprobs=2,
                             options=options)
    assert generated.response == COLORS_TEXT
    _check_ollama_logprobs(generated.logprobs, generated.response, 2)
    chatted = oll.chat(model=MODEL, messages=COLORS, logprobs=True, top_logprobs=2, options=options)
    _check_ollama_logprobs(chatted.logprobs, chatted.message.content, 2)
    parts = list(oll.chat(model=MODEL, messages=COLORS, logprobs=True, options=options, stream=True))
    _check_ollama_logprobs([e for p in parts for e in p.logprobs or []], COLORS_TEXT, 0)
    # Ollama's wire shape: token, logprob, bytes, and top_logprobs of the same three.
    raw = requests.post(shim_url + "/api/generate", json={"model": MODEL, "prompt": "Name three colors.",
                                                         "stream": False, "logprobs": True, "top_logprobs": 1,
                                                         "options": options}, timeout=60).json()
    first = raw["logprobs"][0]
    assert set(first) == {"token", "logprob", "bytes", "top_logprobs"}
    assert bytes(first["bytes"]) == first["token"].encode()
    assert set(first["top_logprobs"][0]) == {"token", "logprob", "bytes"}


def test_ollama_embed_and_legacy_embeddings(oll):
    both = oll.embed(model=MODEL, input=["hello world", "the sky is blue"])
    assert len(both.embeddings) == 2 and len(both.embeddings[0]) == 576
    assert [norm(v) for v in both.embeddings] == [pytest.approx(1)] * 2
    assert both.embeddings[0] != both.embeddings[1] and both.prompt_eval_count > 0
    short = oll.embed(model=MODEL, input="hello world", dimensions=16).embeddings[0]
    head = both.embeddings[0][:16]
    assert len(short) == 16 and short == pytest.approx([x / norm(head) for x in head])
    legacy = oll.embeddings(model=MODEL, prompt="hello world").embedding
    assert len(legacy) == 576 and norm(legacy) != pytest.approx(1), "the legacy endpoint gives the raw vector"
    assert [x / norm(legacy) for x in legacy] == pytest.approx(both.embeddings[0])


def test_an_empty_input_to_embed_is_a_400_naming_input_and_the_worker_lives_on(oai, oll, shim_url):
    # llama.cpp cannot decode zero tokens: it raised, answered 500, and could corrupt the worker's heap.
    with pytest.raises(ollama.ResponseError) as refused:
        oll.embed(model=MODEL, input=["hello", ""])
    assert refused.value.status_code == 400 and "empty" in refused.value.error
    with pytest.raises(openai.BadRequestError) as bad:
        oai.embeddings.create(model=MODEL, input="", encoding_format="float")
    assert bad.value.body["param"] == "input"
    assert len(oll.embed(model=MODEL, input="still here").embeddings[0]) == 576
