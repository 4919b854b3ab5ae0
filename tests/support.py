"""What several test modules share: seed model names, requests and helpers over events, small fake servers."""
import dataclasses
import json
import re
import threading
import time

import pytest
from werkzeug.serving import make_server

from harness.servers import free_port
from shim import generation as g
from shim.streaming import HEARTBEAT, PAUSE

MODEL = "smollm2:135m"
"The embedded model's own name."

SEED_MODEL_NAMES = ("qwen2.5-1.5B-Int4-ax650", "qwen2.5-0.5B-p256-ax630c", "gpt-3.5-turbo", "your-model-id",
                    "meta/llama-3.1-8b-instruct", "Meta-Llama-3-8B-Instruct")
"The model names the seed API documents use; the test server answers to each with the embedded model."

SEED_CONFIG = "".join(f'[[models]]\nname = "{name}"\ntarget = "smollm2:135m"\n\n' for name in SEED_MODEL_NAMES)

HI = (g.Message("user", "hi"),)
WEATHER_TOOL = g.Tool("get_weather", "Weather of a city",
                      {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
TIME_TOOL = g.Tool("get_time", "The time now", {"type": "object", "properties": {}})

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "unit"],
                   "properties": {"city": {"type": "string", "maxLength": 30},
                                  "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}}}
"A strict function tool as an OpenAI client sends it."
PARIS_WEATHER = [{"role": "user", "content": "What is the weather like in Paris?"}]
CANCELLED = re.compile(r"generation cancelled: model=\S+ choice=0 generated=(\d+) tokens")
"The log line of a generation stopped because its client went away."
HOSTILE_CASES = {"count": 0}
"How many malformed or adversarial requests the hostile-input tests sent (reported at the end of the run)."


def run(backend, request, cancel=None):
    """Every event a backend yields for a request."""
    return list(backend.generate(request, cancel or g.Cancel()))


def text_of(events):
    """The text the events carry."""
    return "".join(e.text for e in events if isinstance(e, g.TextDelta))


def finishes(events):
    """The Finish events among the events."""
    return [e for e in events if isinstance(e, g.Finish)]


def events_until_error(events, error_type):
    """(the events yielded, the error_type error that ended them, the seconds they took); fails if none ended them."""
    yielded, began = [], time.monotonic()
    with pytest.raises(error_type) as caught:
        for event in events:
            yielded.append(event)
    return yielded, caught.value, time.monotonic() - began


def heartbeats_between(events):
    """The event types with the runs of HEARTBEATs between them counted: [Accepted, TextDelta, 2, TextDelta, ...]."""
    shown = []
    for event in (e for e in events if e is not PAUSE):
        if event is HEARTBEAT:
            shown[-1:] = [shown[-1] + 1] if shown and isinstance(shown[-1], int) else [*shown[-1:], 1]
        else:
            shown.append(type(event))
    return shown


BEAT_FRONTS = {  # path, body, the heartbeat frame expected (None: its framing has none)
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, b": ping\n\n"),
    "messages": ("/v1/messages", {"max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]},
                 b'event: ping\ndata: {"type":"ping"}\n\n'),
    "ollama": ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]}, None),
}


def assert_silence_beats_through_the_app(backend, front, monkeypatch):
    """A stream from a backend whose upstream falls silent between ALPHA and OMEGA gets the front's heartbeat frames
    from the backend's own events, without the feeder greenlet."""
    from shim.api import common
    from shim.app import create_app
    from shim.config import Settings
    from shim.router import Route, Router
    path, body, ping = BEAT_FRONTS[front]
    monkeypatch.setattr(common, "with_heartbeats", lambda *a: pytest.fail("the events carry their own heartbeats"))
    app = create_app(Settings(embedded_model=False, heartbeat_seconds=0.1),
                     router=Router({"up": backend}, [Route("m", "up", "m")]))
    response = app.test_client().post(path, json={**body, "model": "m", "stream": True})
    text = response.get_data()
    assert response.status_code == 200 and text.index(b"ALPHA") < text.index(b"OMEGA")
    if ping:
        assert text.count(ping) >= 3 and text.index(b"ALPHA") < text.rindex(ping) < text.index(b"OMEGA")
    assert b"\n\n\n" not in text and not text.startswith(b"\n")


def read_whole(events):
    """The choices a client reading the answer whole gets from events, timings aside (a whole answer has no first
    token to time)."""
    return [dataclasses.replace(c, finish=c.finish and dataclasses.replace(c.finish, timings=None))
            for c in g.collect(events)]


def events_of(data):
    """The (event name, payload) pairs of a named SSE body."""
    pairs = []
    for block in data.decode().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if not line.startswith(":"))
        if lines:
            pairs.append((lines["event"], json.loads(lines["data"])))
    return pairs


def slow_ollama(silence):
    """An Ollama that streams a chat's first part at once, stays silent for `silence` s, then sends the rest."""
    from flask import Flask, Response

    app = Flask("slow-ollama")

    @app.post("/api/chat")
    def chat():
        def part(text, **done):
            return json.dumps({"model": "slow", "created_at": "2024-05-01T12:00:00Z",
                               "message": {"role": "assistant", "content": text}, "done": bool(done), **done}) + "\n"

        def body():
            yield part("ALPHA")
            time.sleep(silence)
            yield part("OMEGA") + part("", done_reason="stop", prompt_eval_count=3, eval_count=2)
        return Response(body(), mimetype="application/x-ndjson")

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def slow_upstream(silence):
    """An OpenAI-compatible server that opens its stream at once, stays silent for `silence` s, then answers."""
    from flask import Flask, Response

    app = Flask("slow")

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "slow", "object": "model", "created": 0, "owned_by": "test"}]}

    @app.post("/v1/chat/completions")
    def chat():
        def body():
            yield ": opening\n\n"
            time.sleep(silence)
            chunk = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "late answer"},
                                  "finish_reason": "stop"}]}
            yield f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n"
        return Response(body(), mimetype="text/event-stream")

    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
