"""Native pass-through: an openai backend with `responses = true` gets Responses requests as they are."""
import json
import time

import pytest
from werkzeug.wrappers import Response

from shim.app import create_app
from shim.config import BackendConfig, ModelConfig, Settings
from shim.errors import ConfigError
from tests.fake_upstream import FakeUpstream, error_json
from tests.support import events_of

CREATED = {"type": "response.created", "sequence_number": 0,
           "response": {"id": "resp_up", "object": "response", "model": "up-model", "status": "in_progress",
                        "output": []}}
DELTA = {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_up", "output_index": 0,
         "content_index": 0, "delta": "native", "logprobs": []}
COMPLETED = {"type": "response.completed", "sequence_number": 2,
             "response": {**CREATED["response"], "status": "completed"}}


def named_sse(*events):
    body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)
    return Response(body, mimetype="text/event-stream")


def serve(upstream, **settings):
    backend = BackendConfig(name="native", type="openai", urls=(upstream.url + "/v1",), models=("up-model",),
                            responses=True)
    settings = Settings(embedded_model=False, backends=(backend,),
                        models=(ModelConfig(name="mine", backend="native", target="up-model"),), **settings)
    return create_app(settings).test_client()


def test_a_stream_is_relayed_event_by_event_with_the_clients_model_name():
    with FakeUpstream(lambda r: named_sse(CREATED, DELTA, COMPLETED)) as upstream:
        body = {"model": "mine", "input": "Hi", "stream": True, "previous_response_id": "resp_0", "store": True,
                "tools": [{"type": "web_search"}]}
        events = events_of(serve(upstream).post("/v1/responses", json=body).data)
    sent = upstream.requests[-1]
    assert sent.path == "/v1/responses"
    assert sent.json == {**body, "model": "up-model"}  # everything else as the client sent it
    assert [p for _, p in events][1] == DELTA
    assert [name for name, _ in events] == ["response.created", "response.output_text.delta", "response.completed"]
    assert events[-1][1]["response"]["model"] == "mine"


def test_a_silent_relayed_stream_beats_without_a_feeder_greenlet(monkeypatch):
    from shim.api import common

    def slow(record):
        def body():
            yield named_sse(CREATED).get_data()
            time.sleep(0.35)
            yield named_sse(DELTA, COMPLETED).get_data()
        return Response(body(), mimetype="text/event-stream")
    monkeypatch.setattr(common, "with_heartbeats", lambda *a: pytest.fail("the relay carries its own heartbeats"))
    with FakeUpstream(slow) as upstream:
        text = serve(upstream, heartbeat_seconds=0.1).post(
            "/v1/responses", json={"model": "mine", "input": "Hi", "stream": True}).data
    assert text.count(b": ping\n\n") >= 3
    assert text.index(b"response.created") < text.index(b": ping") < text.rindex(b": ping") < text.index(b"native")
    assert [name for name, _ in events_of(text)] == ["response.created", "response.output_text.delta",
                                                     "response.completed"]


def test_a_whole_response_is_relayed():
    whole = {**COMPLETED["response"], "output": [{"type": "message", "id": "m", "content": []}]}
    with FakeUpstream(lambda r: Response(json.dumps(whole), mimetype="application/json")) as upstream:
        answer = serve(upstream).post("/v1/responses", json={"model": "mine", "input": "Hi"})
    assert answer.status_code == 200 and answer.json == {**whole, "model": "mine"}


def test_a_stream_the_upstream_leaves_unfinished_ends_with_response_failed():
    with FakeUpstream(lambda r: named_sse(CREATED, DELTA)) as upstream:
        events = events_of(serve(upstream).post("/v1/responses", json={"model": "mine", "input": "Hi",
                                                                        "stream": True}).data)
    assert events[-1][0] == "response.failed"
    assert events[-1][1]["sequence_number"] == 2
    assert events[-1][1]["response"]["error"]["code"] == "server_error"


def test_an_upstream_refusal_before_the_stream_is_an_openai_error():
    refusal = error_json(400, {"message": "bad input", "type": "invalid_request_error"})
    with FakeUpstream(lambda r: refusal) as upstream:
        answer = serve(upstream).post("/v1/responses", json={"model": "mine", "input": "Hi", "stream": True})
    assert answer.status_code == 400 and "bad input" in answer.json["error"]["message"]


def test_responses_pass_through_needs_an_openai_backend():
    with pytest.raises(ConfigError):
        Settings(backends=(BackendConfig(name="o", type="ollama", url="http://x", responses=True),)).validate()
