"""End to end: a tool call an OpenAI-compatible upstream streams in pieces reaches each client in its own manner.

A scripted upstream sends a call's arguments in many small pieces, a pause between them, and then holds the rest of
its answer until the test lets it go: the openai client (stream=True) must already have seen argument deltas by
then, while the ollama client gets the one whole call, as Ollama sends calls.
"""
import json
import threading
import time

import ollama
import openai
import pytest
from werkzeug.wrappers import Response

from harness.servers import running_shim
from tests.fake_upstream import FakeUpstream

CONFIG = """
embedded_model = false

[backends.up]
type = "openai"
url = "{upstream}/v1"
models = ["m"]
"""
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ARGUMENTS = '{"city": "Paris", "unit": "celsius"}'
PIECES = [ARGUMENTS[i:i + 3] for i in range(0, len(ARGUMENTS), 3)]
HELD_FOR = 10.0
"Seconds the upstream waits for the test before ending its answer anyway (a failing test must not hang)."


def frame(delta=None, finish=None):
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return b"data: " + json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                   "choices": [choice]}).encode() + b"\n\n"


class Upstream:
    """Streams one call in pieces, then waits for `release` before it finishes."""

    def __init__(self):
        self.release = threading.Event()
        self.released_in_time = None

    def __call__(self, record):
        if record.method == "GET":
            return Response(json.dumps({"object": "list", "data": [{"id": "m"}]}), mimetype="application/json")
        self.release.clear()
        return Response(self._body(), mimetype="text/event-stream")

    def _body(self):
        yield frame({"role": "assistant", "tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]})
        for piece in PIECES:
            time.sleep(0.02)
            yield frame({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        self.released_in_time = self.release.wait(HELD_FOR)
        yield frame(finish="tool_calls")
        yield b"data: [DONE]\n\n"


@pytest.fixture(scope="module")
def upstream():
    script = Upstream()
    with FakeUpstream(script) as server:
        server.script = script
        yield server


@pytest.fixture(scope="module")
def front(upstream):
    with running_shim(CONFIG.format(upstream=upstream.url)) as url:
        yield url


def test_openai_client_sees_argument_deltas_before_the_upstream_has_finished(front, upstream):
    client = openai.OpenAI(base_url=front + "/v1", api_key="unused", max_retries=0, timeout=30)
    stream = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Weather in Paris?"}],
                                            tools=[WEATHER], stream=True)
    arguments, released_after, first = [], None, None
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or ()) if chunk.choices else ():
            first = first or call
            arguments.append(call.function.arguments or "")
            if "".join(arguments) == ARGUMENTS and released_after is None:
                released_after = len(arguments)
                upstream.script.release.set()  # only now may the upstream end its answer
        finish = chunk.choices[0].finish_reason if chunk.choices else None
    assert upstream.script.released_in_time is True, "the arguments were held until the upstream finished"
    assert (first.id, first.function.name) == ("call_1", "get_weather")
    assert "".join(arguments) == ARGUMENTS and released_after >= len(PIECES)
    assert finish == "tool_calls"


def test_ollama_client_gets_one_whole_call(front, upstream):
    client = ollama.Client(host=front, timeout=30)
    threading.Timer(1.0, upstream.script.release.set).start()  # after the request came in and cleared it
    parts = list(client.chat(model="m", messages=[{"role": "user", "content": "Weather in Paris?"}],
                             tools=[WEATHER], stream=True))
    calls = [c for p in parts for c in p.message.tool_calls or ()]
    assert len(calls) == 1
    assert (calls[0].function.name, calls[0].function.arguments) == ("get_weather", json.loads(ARGUMENTS))
    assert parts[-1].done and parts[-1].done_reason == "stop"
