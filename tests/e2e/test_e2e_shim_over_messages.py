"""Shim in front of shim through the anthropic backend: the INNER shim serves the embedded SmolLM2 over its own
/v1/messages; the FRONT shim's only backend is `type = "anthropic"` pointing at it. The official openai and ollama
clients drive the front, whole and streamed, with a forced tool call: every client protocol reaches the Messages API
through one translation per side."""
import importlib.util
import json

import openai
import pytest
import requests

from harness.servers import running_shim

pytestmark = pytest.mark.skipif(importlib.util.find_spec("shim.api.anthropic") is None,
                                reason="the Messages API front (shim/api/anthropic.py) is not on this branch")

FRONT = """
embedded_model = false

[backends.inner]
type = "anthropic"
url = "{inner}"
read_timeout = 240.0
"""
MODEL = "smollm2:135m"
QUESTION = [{"role": "user", "content": "Name three colors."}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"]}}}


@pytest.fixture(scope="module")
def inner():
    with running_shim() as url:
        # The first generation after start-up can take many seconds on a busy machine: pay for it here, once.
        requests.post(url + "/api/generate", timeout=180,
                      json={"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}})
        yield url


@pytest.fixture(scope="module")
def front(inner):
    with running_shim(FRONT.format(inner=inner)) as url:
        yield url


def test_the_inner_models_are_listed_through_the_front(oai):
    assert MODEL in {m.id for m in oai.models.list()}


def test_openai_chat_streamed_equals_whole(oai):
    whole = oai.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12, temperature=0)
    text = whole.choices[0].message.content
    assert text and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.prompt_tokens > 5 and 0 < whole.usage.completion_tokens <= 12
    chunks = list(oai.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=12, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == text and len(pieces) > 2, "tokens must stream one by one"
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_openai_length_finish(oai):
    reply = oai.chat.completions.create(model=MODEL, max_tokens=3, temperature=0,
                                        messages=[{"role": "user", "content": "Tell me a long story."}])
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3


def test_openai_forced_tool_call(oai):
    reply = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                        tools=[WEATHER], tool_choice="required", max_tokens=60, temperature=0)
    assert reply.choices[0].finish_reason == "tool_calls"
    [call] = reply.choices[0].message.tool_calls
    assert call.id and call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)


def test_ollama_chat_streamed_equals_whole(oll):
    options = {"temperature": 0, "num_predict": 12}
    whole = oll.chat(model=MODEL, messages=QUESTION, options=options)
    assert whole.message.content and whole.done and whole.eval_count > 0 and whole.prompt_eval_count > 5
    parts = list(oll.chat(model=MODEL, messages=QUESTION, options=options, stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content and len(parts) > 3
    assert parts[-1].done and parts[-1].eval_count == whole.eval_count


def test_ollama_generate(oll):
    reply = oll.generate(model=MODEL, prompt="Why is the sea salty?", options={"temperature": 0, "num_predict": 6})
    assert reply.response and reply.done_reason == "length" and reply.eval_count == 6


def test_an_inner_refusal_reaches_the_client_as_a_clear_error(oai):
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="no-such-model", messages=QUESTION, max_tokens=2)
