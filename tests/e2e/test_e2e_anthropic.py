"""End to end with real Anthropic clients: the official `anthropic` SDK and Claude Code, over real HTTP.

The SDK drives a FRONT shim (gunicorn + gevent, an API key) that serves the embedded SmolLM2 itself and reaches an
UPSTREAM shim through each upstream backend type (`via-ollama`, `via-openai`, and `via-anthropic`, which has shim's
own Messages API as its upstream). Claude Code (`claude -p`), whose prompt is far beyond SmolLM2's window, talks to
a shim in front of a fake OpenAI-compatible upstream, and to the embedded model, whose refusal must reach it as a
clear error.
"""
import json
import os
import subprocess
import time

import anthropic
import pytest
import requests

from harness.servers import npm_cli, running_shim
from tests import fake_upstream
from tests.fake_upstream import FakeUpstream

KEY = "anthropic-e2e-key"
MODELS = ("smollm2:135m", "via-ollama", "via-openai", "via-anthropic")
QUESTION = [{"role": "user", "content": "Name three colors."}]
WEATHER = {"name": "get_weather", "description": "Get the current weather of a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                            "required": ["city"]}}
FORCED = {"type": "tool", "name": "get_weather"}
GREEDY = {"extra_body": {"temperature": 0}}
"Newer SDKs have no temperature argument (newer Claude models take none); the API field is still there."
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]

FRONT_CONFIG = """
[backends.up_ollama]
type = "ollama"
url = "{upstream}"
read_timeout = 120.0

[backends.up_openai]
type = "openai"
url = "{upstream}/v1"
read_timeout = 120.0

[backends.up_anthropic]
type = "anthropic"
url = "{upstream}"
read_timeout = 120.0

[[models]]
name = "via-anthropic"
backend = "up_anthropic"
target = "smollm2:135m"

[[models]]
name = "gone-anthropic"
backend = "up_anthropic"
target = "missing:7b"

[[models]]
name = "via-ollama"
backend = "up_ollama"
target = "smollm2:135m"

[[models]]
name = "via-openai"
backend = "up_openai"
target = "smollm2:135m"

[[models]]
name = "gone-ollama"
backend = "up_ollama"
target = "missing:7b"

[[models]]
name = "gone-openai"
backend = "up_openai"
target = "missing:7b"
"""


@pytest.fixture(scope="module")
def upstream():
    """The upstream shim, serving the real SmolLM2 as smollm2:135m."""
    with running_shim() as url:
        yield url


@pytest.fixture(scope="module")
def front(upstream):
    with running_shim(FRONT_CONFIG.format(upstream=upstream), env={"SHIM_API_KEYS": KEY}) as url:
        for name in ("smollm2:135m", "via-openai", "via-anthropic"):  # a model's first generation is slow: paid here
            requests.post(url + "/v1/messages", timeout=180, headers={"x-api-key": KEY}, json={
                "model": name, "max_tokens": 1, "messages": QUESTION})
        yield url


@pytest.fixture(scope="module")
def client(front):
    client = anthropic.Anthropic(base_url=front, api_key=KEY, max_retries=0, timeout=120)
    yield client
    client.close()  # an idle keep-alive connection would hold up the front's graceful shutdown


# ---------------------------------------------------------------- the anthropic SDK

@pytest.mark.parametrize("model", MODELS)
def test_create(client, model):
    reply = client.messages.create(model=model, max_tokens=8, messages=QUESTION, **GREEDY)
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    assert [b.type for b in reply.content] == ["text"] and reply.content[0].text
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0) > 0
    assert 1 <= reply.usage.output_tokens <= 8


@pytest.mark.parametrize("model", MODELS)
def test_stream_text_and_final_message_agree(client, model):
    with client.messages.stream(model=model, max_tokens=12, messages=QUESTION, **GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens") and final.usage.output_tokens >= 1
    whole = client.messages.create(model=model, max_tokens=12, messages=QUESTION, **GREEDY)
    assert whole.content[0].text == text


def test_count_tokens_is_the_prompt_the_embedded_model_sees(client):
    counted = client.messages.count_tokens(model="smollm2:135m", messages=QUESTION, system="Be brief.")
    reply = client.messages.create(model="smollm2:135m", max_tokens=1, messages=QUESTION, system="Be brief.")
    assert counted.input_tokens == reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0) > 5


@pytest.mark.parametrize("model", MODELS[1:])
def test_count_tokens_through_upstreams_is_an_estimate(client, model):
    assert client.messages.count_tokens(model=model, messages=QUESTION).input_tokens >= 1


@pytest.mark.parametrize("model", MODELS)
def test_forced_tool_use_round_trip(client, model):
    reply = client.messages.create(model=model, max_tokens=60, messages=ASK_WEATHER, tools=[WEATHER],
                                   tool_choice=FORCED, **GREEDY)
    assert reply.stop_reason == "tool_use", reply
    calls = [b for b in reply.content if b.type == "tool_use"]
    assert calls and calls[0].name == "get_weather" and isinstance(calls[0].input, dict)
    assert isinstance(calls[0].input.get("city"), str)
    history = ASK_WEATHER + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": calls[0].id, "content": "Sunny, 21 C"}]}]
    answer = client.messages.create(model=model, max_tokens=16, messages=history, tools=[WEATHER],
                                    tool_choice={"type": "none"}, **GREEDY)
    assert answer.stop_reason in ("end_turn", "max_tokens")
    assert all(b.type == "text" for b in answer.content)


@pytest.mark.parametrize("model", MODELS)
def test_forced_tool_use_streamed(client, model):
    with client.messages.stream(model=model, max_tokens=60, messages=ASK_WEATHER, tools=[WEATHER],
                                tool_choice=FORCED, **GREEDY) as stream:
        final = stream.get_final_message()
    calls = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and calls[0].name == "get_weather"
    assert isinstance(calls[0].input.get("city"), str)


@pytest.mark.parametrize("model", MODELS)
def test_stop_sequence_cuts_the_answer(client, model):
    free = client.messages.create(model=model, max_tokens=12, messages=QUESTION, **GREEDY).content[0].text
    word = next(w for w in free.split()[1:] if len(w) > 2)  # a word the answer reaches after its start
    cut = client.messages.create(model=model, max_tokens=12, messages=QUESTION, **GREEDY, stop_sequences=[word])
    assert word not in "".join(b.text for b in cut.content)
    assert cut.stop_reason in ("stop_sequence", "end_turn")


def test_stop_sequence_is_reported(client):
    free = client.messages.create(model="smollm2:135m", max_tokens=12, messages=QUESTION, **GREEDY)
    word = next(w for w in free.content[0].text.split()[1:] if len(w) > 2)
    cut = client.messages.create(model="smollm2:135m", max_tokens=12, messages=QUESTION, **GREEDY,
                                 stop_sequences=[word])
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", word)


def test_a_wrong_key_is_an_authentication_error(front):
    with anthropic.Anthropic(base_url=front, api_key="wrong", max_retries=0) as wrong:
        with pytest.raises(anthropic.AuthenticationError) as caught:
            wrong.messages.create(model="smollm2:135m", max_tokens=4, messages=QUESTION)
    assert caught.value.status_code == 401 and caught.value.body["error"]["type"] == "authentication_error"


@pytest.mark.parametrize("model", ["no-such-model", "gone-ollama", "gone-openai", "gone-anthropic"])
def test_an_unknown_model_is_not_found(client, model):
    """Unknown to shim, or routed to an upstream that does not have it."""
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model=model, max_tokens=4, messages=QUESTION)
    assert caught.value.body["error"]["type"] == "not_found_error"


def test_a_prompt_beyond_the_window_is_a_clear_400(client):
    long = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="smollm2:135m", max_tokens=8, messages=long)
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert caught.value.body["error"]["message"].startswith("prompt is too long: ")


def test_models_list_in_anthropics_shape(client):
    ids = [m.id for m in client.models.list()]
    assert set(MODELS) <= set(ids)
    assert client.models.retrieve("via-openai").id == "via-openai"


# ---------------------------------------------------------------- Claude Code

CLAUDE_ANSWER = "The upstream says PINEAPPLE-42."
CLAUDE_CONFIG = """
embedded_model = {embedded}

[backends.fake]
type = "openai"
url = "{url}/v1"
models = ["upstream-model"]

# Claude Code asks for claude-* models for its background work: the setup docs/compatibility.md describes.
[[models]]
name = "claude-*"
backend = "fake"
target = "upstream-model"
"""


@pytest.fixture(scope="session")
def claude_cli():
    """The `claude` command of @anthropic-ai/claude-code, installed once into a cache directory with npm."""
    return npm_cli("@anthropic-ai/claude-code", "claude")


def openai_answer(record):
    """The fake upstream: every chat completion streams CLAUDE_ANSWER."""
    model = (record.json or {}).get("model", "m")

    def chunk(delta, finish=None):
        return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    usage = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [],
             "usage": {"prompt_tokens": 20000, "completion_tokens": 7, "total_tokens": 20007}}
    return fake_upstream.openai_answer(record, chunk({"role": "assistant", "content": CLAUDE_ANSWER}), chunk({}, "stop"),
                                      usage)


def run_claude(claude_cli, url, model, tmp_path):
    """`claude -p` pointed at shim with a throw-away HOME; returns the finished process."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": KEY,
           "ANTHROPIC_MODEL": model, "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
    return subprocess.run([claude_cli, "-p", "Say hello."], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)


def test_claude_code_prints_the_upstreams_answer(claude_cli, tmp_path):
    with FakeUpstream(openai_answer) as fake, \
            running_shim(CLAUDE_CONFIG.format(url=fake.url, embedded="false"), env={"SHIM_API_KEYS": KEY}) as url:
        started = time.monotonic()
        done = run_claude(claude_cli, url, "upstream-model", tmp_path)
        took = time.monotonic() - started
        asked = [r.json for r in fake.requests if r.method == "POST"]
    assert done.returncode == 0, done.stdout + done.stderr
    assert CLAUDE_ANSWER in done.stdout
    # What reached the upstream is Claude Code's real request: its long prompt and its tools, streamed.
    assert asked and asked[0]["stream"] is True and len(json.dumps(asked[0])) > 20000 and asked[0]["tools"]
    assert took < 120


def test_claude_code_is_told_clearly_that_its_prompt_is_too_long_for_the_embedded_model(claude_cli, tmp_path):
    with running_shim(CLAUDE_CONFIG.format(url="http://127.0.0.1:9", embedded="true"),
                      env={"SHIM_API_KEYS": KEY}) as url:
        done = run_claude(claude_cli, url, "smollm2:135m", tmp_path)
    assert done.returncode != 0
    assert "Prompt is too long" in done.stdout + done.stderr, done.stdout + done.stderr
    assert "4096" in done.stdout + done.stderr  # the model's window, from shim's message
