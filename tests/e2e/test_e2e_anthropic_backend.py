"""End to end through the anthropic backend: a real gunicorn shim whose `claude` backend is a fake Anthropic-compatible
upstream (tests/fake_anthropic.py), driven by the official openai and ollama clients, whole and streamed, with tools,
stop sequences, and the upstream's errors reaching each client in its own protocol's shape."""
import json

import ollama
import openai
import pytest
import requests

from harness.servers import running_shim
from tests import fake_anthropic
from tests.fake_upstream import FakeUpstream

KEY = "sk-ant-front-SECRET-0123456789"
CONFIG = """
embedded_model = false

[backends.claude]
type = "anthropic"
url = "{upstream}"
api_key = "{key}"
max_tokens_default = 64
"""
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(fake_anthropic.app) as server:
        yield server


@pytest.fixture(scope="module")
def front(upstream):
    # A backend without a models list routes what the upstream lists; the scripted failure names are routed too.
    config = CONFIG.format(upstream=upstream.url, key=KEY) + "".join(
        f'\n[[models]]\nname = "{name}"\nbackend = "claude"\n' for name in ("overloaded", "too-long", "midstream"))
    with running_shim(config) as url:
        yield url


def test_the_upstream_models_are_listed(oai, oll):
    assert "claude-fake" in {m.id for m in oai.models.list()}
    assert "claude-fake" in {m.model for m in oll.list().models}


def test_openai_chat_streamed_equals_whole(oai, upstream):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name three colors."}]
    whole = oai.chat.completions.create(model="claude-fake", messages=messages)
    assert whole.choices[0].message.content == "You said: Name three colors."
    assert whole.choices[0].finish_reason == "stop" and whole.usage.completion_tokens == 5
    sent = upstream.requests[-1]
    assert sent.json["system"] == "Be brief." and sent.json["max_tokens"] == 64
    assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"] == "2023-06-01"
    chunks = list(oai.chat.completions.create(model="claude-fake", messages=messages, stream=True,
                                              stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == "You said: Name three colors." and len(pieces) == 5
    assert chunks[-1].usage.completion_tokens == 5 and chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_openai_max_tokens_and_stop(oai):
    reply = oai.chat.completions.create(model="claude-fake", max_tokens=2,
                                        messages=[{"role": "user", "content": "one two three"}])
    assert reply.choices[0].message.content == "You said:" and reply.choices[0].finish_reason == "length"
    reply = oai.chat.completions.create(model="claude-fake", stop=["Paris"],
                                        messages=[{"role": "user", "content": "meet in Paris at noon"}])
    assert reply.choices[0].message.content == "You said: meet in " and reply.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("stream", [False, True])
def test_openai_tool_call_round_trip(oai, upstream, stream):
    reply = oai.chat.completions.create(model="claude-fake", messages=ASK, tools=[WEATHER], stream=stream)
    if stream:
        chunks = list(reply)
        calls = [c for ch in chunks for c in ch.choices[0].delta.tool_calls or ()]
        finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices[0].finish_reason]
        call = {"id": calls[0].id, "type": "function",
                "function": {"name": calls[0].function.name, "arguments": calls[0].function.arguments}}
    else:
        calls = reply.choices[0].message.tool_calls
        finish = [reply.choices[0].finish_reason]
        call = calls[0].model_dump(exclude_none=True)
    assert len(calls) == 1 and finish == ["tool_calls"]
    assert call["id"] == "toolu_fake1" and json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    history = ASK + [{"role": "assistant", "content": None, "tool_calls": [call]},
                     {"role": "tool", "tool_call_id": call["id"], "content": "18C and sunny"}]
    answer = oai.chat.completions.create(model="claude-fake", messages=history, tools=[WEATHER])
    assert answer.choices[0].message.content == "The tool said: 18C and sunny"
    assert upstream.requests[-1].json["messages"][-1] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_fake1", "content": [{"type": "text", "text": "18C and sunny"}]}]}


def test_openai_named_tool_choice(oai, upstream):
    reply = oai.chat.completions.create(model="claude-fake", messages=[{"role": "user", "content": "hi"}],
                                        tools=[WEATHER], parallel_tool_calls=False,
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    assert reply.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert upstream.requests[-1].json["tool_choice"] == {"type": "tool", "name": "get_weather",
                                                         "disable_parallel_tool_use": True}


@pytest.mark.parametrize("fields, param", [({"seed": 7}, "seed"), ({"logprobs": True}, "logprobs"),
                                           ({"response_format": {"type": "json_object"}}, "response_format")])
def test_openai_fields_the_backend_cannot_carry_are_a_400_naming_them(oai, fields, param):
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="claude-fake", messages=ASK, **fields)
    assert err.value.body["param"] == param


def test_openai_upstream_errors(oai):
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="overloaded", messages=ASK)
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="too-long", messages=ASK)
    assert err.value.body["code"] == "context_length_exceeded" and "prompt is too long" in err.value.body["message"]
    with pytest.raises(openai.APIError) as err:
        list(oai.chat.completions.create(model="midstream", messages=ASK, stream=True))
    assert "Overloaded" in str(err.value)


def test_ollama_chat_streamed_equals_whole(oll):
    whole = oll.chat(model="claude-fake", messages=[{"role": "user", "content": "Name three colors."}])
    assert whole.message.content == "You said: Name three colors." and whole.done_reason == "stop"
    assert whole.eval_count == 5 and whole.prompt_eval_count > 0
    parts = list(oll.chat(model="claude-fake", messages=[{"role": "user", "content": "Name three colors."}],
                          stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content and len(parts) > 3
    assert parts[-1].done and parts[-1].eval_count == 5


def test_ollama_generate_and_num_predict(oll, upstream):
    reply = oll.generate(model="claude-fake", prompt="Why is the sea salty?", system="Be brief.",
                         options={"num_predict": 3, "temperature": 0.5})
    assert reply.response == "You said: Why" and reply.done_reason == "length"
    sent = upstream.requests[-1].json
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 3 and sent["temperature"] == 0.5


def test_ollama_tool_call_round_trip(oll, upstream):
    tools = [WEATHER]
    reply = oll.chat(model="claude-fake", messages=ASK, tools=tools)
    [call] = reply.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    history = ASK + [reply.message, {"role": "tool", "content": "18C", "tool_name": "get_weather"}]
    parts = list(oll.chat(model="claude-fake", messages=history, tools=tools, stream=True))
    assert "".join(p.message.content for p in parts) == "The tool said: 18C"
    sent = upstream.requests[-1].json["messages"]
    assert sent[1]["content"][0]["type"] == "tool_use"
    assert sent[2]["content"][0]["tool_use_id"] == sent[1]["content"][0]["id"]


def test_ollama_seed_is_a_400_naming_it(oll):
    with pytest.raises(ollama.ResponseError) as err:
        oll.chat(model="claude-fake", messages=ASK, options={"seed": 7})
    assert err.value.status_code == 400 and "seed" in err.value.error


def test_raw_errors_in_each_shape_and_no_key_anywhere(front):
    reply = requests.post(front + "/api/chat", json={"model": "too-long", "messages": ASK, "stream": False}, timeout=30)
    assert reply.status_code == 400 and isinstance(reply.json()["error"], str)
    reply = requests.post(front + "/v1/chat/completions", json={"model": "overloaded", "messages": ASK}, timeout=30)
    assert reply.status_code == 429 and reply.json()["error"]["code"] == "server_busy"
    assert KEY not in front.log_text()


def test_ollama_load_and_unbounded_num_predict(oll, upstream):
    assert oll.chat(model="claude-fake", messages=[]).done_reason == "load"
    reply = oll.chat(model="claude-fake", messages=[{"role": "user", "content": "hi"}], options={"num_predict": -1})
    assert reply.message.content == "You said: hi" and upstream.requests[-1].json["max_tokens"] == 64
