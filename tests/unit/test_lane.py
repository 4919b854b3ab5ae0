"""The lane answers the generation endpoints' POSTs exactly as Flask answers them, without Flask's machinery."""
import json
import re

import pytest

from shim import metrics
from shim.app import create_app
from shim.config import Settings
from shim.errors import UpstreamError
from shim.router import Route, Router
from tests.fakes import FakeBackend

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
GENERATION_PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/messages", "/api/chat",
                    "/api/generate"]
EMBEDDING_PATHS = ["/v1/embeddings", "/api/embed", "/api/embeddings"]
LANE_PATHS = GENERATION_PATHS + EMBEDDING_PATHS
BODIES = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": {"model": "fake-model", "prompt": "hi"},
    "/v1/responses": {"model": "fake-model", "input": "hi", "store": False},
    "/v1/messages": {**CHAT, "max_tokens": 16},
    "/api/chat": {**CHAT, "stream": False},
    "/api/generate": {"model": "fake-model", "prompt": "hi", "stream": False},
    "/v1/embeddings": {"model": "fake-model", "input": ["hi", "there"]},
    "/api/embed": {"model": "fake-model", "input": "hi"},
    "/api/embeddings": {"model": "fake-model", "prompt": "hi"},
}
STREAMED = {"/api/chat": {**CHAT}, "/api/generate": {"model": "fake-model", "prompt": "hi"}}
KEYED = {"api_keys": ("k-123456",), "cors_origins": ("https://app.example",)}


def apps(fake, **settings):
    """Two apps over the same backend: one whose lane answers the generation endpoints, one where Flask does."""
    made = []
    for lane in (True, False):
        router = Router({"fake": fake}, [Route("fake-model", "fake", "fake-model")])
        app = create_app(Settings(embedded_model=False, max_body_bytes=4096, response_store="off", **settings),
                         router=router)
        if not lane:
            app.wsgi_app.routes = {}
        made.append(app.test_client())
    return made


def seen(response):
    """What a client sees of a response, less what differs by nature between two answers (ids, clocks)."""
    body = response.get_data()
    body = re.sub(rb"(chatcmpl|cmpl|resp|msg|rs|fc|toolu|req)([-_])[0-9a-f]{16,}", rb"\1\2ID", body)
    body = re.sub(rb'"(created|created_at|completed_at)":\s*\d+', rb'"\1":0', body)
    body = re.sub(rb'"created_at":"[^"]+"', rb'"created_at":"T"', body)
    body = re.sub(rb'"(total_duration|load_duration|prompt_eval_duration|eval_duration)":\d+', rb'"\1":0', body)
    headers = sorted((name.lower(), value) for name, value in response.headers.items()
                     if name.lower() not in ("date", "content-length"))
    return response.status_code, headers, body


def both(clients, path, **kwargs):
    """What a client sees of one request to each app."""
    kwargs.setdefault("headers", {})["X-Request-ID"] = "rid-1"
    return [seen(client.post(path, **kwargs)) for client in clients]


CASES = {
    "whole": lambda path: dict(json=BODIES[path]),
    "streamed": lambda path: dict(json=STREAMED.get(path, {**BODIES[path], "stream": True})),
    "not JSON": lambda path: dict(data=b"{nope", content_type="application/json"),
    "no body": lambda path: dict(data=b"", content_type="application/json"),
    "too large": lambda path: dict(data=b'{"x": "' + b"a" * 5000 + b'"}', content_type="application/json"),
    "not an object": lambda path: dict(json=[1, 2]),
    "unknown model": lambda path: dict(json={**BODIES[path], "model": "nope"}),
    "lone surrogate": lambda path: dict(data=json.dumps(BODIES[path])[:-1].encode() + b', "user": "\\ud800"}',
                                        content_type="application/json"),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("path", LANE_PATHS)
def test_the_lane_answers_as_flask_does(path, case):
    lane, flask = both(apps(FakeBackend()), path, **CASES[case](path))
    assert lane == flask
    assert lane[0] == 200 if case == "whole" else lane[0] != 500


@pytest.mark.parametrize("path", LANE_PATHS)
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Bearer k-123456"},
                                     {"x-api-key": "k-123456"}, {"Origin": "https://app.example"},
                                     {"Origin": "https://elsewhere.example", "Authorization": "Bearer k-123456"}],
                         ids=["no key", "wrong key", "bearer", "x-api-key", "allowed origin", "other origin"])
def test_keys_and_cors_are_the_same_through_the_lane(path, headers):
    lane, flask = both(apps(FakeBackend(), **KEYED), path, json=BODIES[path], headers=dict(headers))
    assert lane == flask


@pytest.mark.parametrize("path", GENERATION_PATHS)
@pytest.mark.parametrize("failure", ["before", "mid-stream", "bug"])
def test_failures_are_the_same_through_the_lane(path, failure):
    answers = []
    for client in apps(fake := FakeBackend()):
        if failure == "before":
            fake.fail_after((), UpstreamError("upstream said no", status=502))
        elif failure == "mid-stream":
            fake.fail_after(("Hel",), UpstreamError("upstream broke off", status=502))
        else:
            fake.fail_after((), RuntimeError("a bug"))
        body = STREAMED.get(path, {**BODIES[path], "stream": True}) if failure == "mid-stream" else BODIES[path]
        answers.append(seen(client.post(path, json=body, headers={"X-Request-ID": "rid-1"})))
    assert answers[0] == answers[1]
    assert answers[0][0] == (200 if failure == "mid-stream" else 502 if failure == "before" else 500)


def test_the_lane_serves_generation_posts_and_flask_the_rest(monkeypatch):
    client, _ = apps(FakeBackend())
    app, dispatched = client.application, []
    flask_dispatch = app.full_dispatch_request
    monkeypatch.setattr(app, "full_dispatch_request", lambda: dispatched.append(1) or flask_dispatch())
    assert client.post("/v1/chat/completions", json=CHAT).get_json()["object"] == "chat.completion"
    assert dispatched == []
    assert client.get("/v1/models").get_json()["object"] == "list" and dispatched == [1]
    wrong_method = client.get("/v1/chat/completions")
    assert wrong_method.status_code == 405 and set(wrong_method.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
    assert wrong_method.get_json()["error"]["type"] == "invalid_request_error" and dispatched == [1, 1]


def test_a_lane_answer_is_counted_with_its_route_status_and_model():
    client, _ = apps(FakeBackend())
    counted = metrics.child(metrics.REQUESTS, "/api/chat", "200", "fake-model")
    before = counted._value.get()
    assert client.post("/api/chat", json=BODIES["/api/chat"]).status_code == 200
    assert counted._value.get() == before + 1


def test_a_lane_answer_carries_a_request_id_of_its_own_or_the_clients():
    client, _ = apps(FakeBackend())
    made = client.post("/v1/messages", json=BODIES["/v1/messages"])
    assert re.fullmatch("[0-9a-f]{16}", made.headers["X-Request-ID"])
    assert made.headers["request-id"] == "req_" + made.headers["X-Request-ID"]
    given = client.post("/v1/messages", json=BODIES["/v1/messages"], headers={"X-Request-ID": "mine"})
    assert given.headers["X-Request-ID"] == "mine" and given.headers["request-id"] == "req_mine"


def test_a_streamed_lane_answer_is_written_as_it_comes():
    fake = FakeBackend()
    client, _ = apps(fake)
    fake.say("a", "b", "c")
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": True}, buffered=False)
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert "Content-Length" not in response.headers and response.headers["X-Accel-Buffering"] == "no"
    parts = list(response.response)
    assert len(parts) >= 2 and parts[-1].endswith(b"data: [DONE]\n\n")
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                   for part in parts for line in part.decode().split("\n\n")
                   if line.startswith("data: {") and json.loads(line[6:])["choices"])
    assert text == "abc"


def test_every_generation_and_embedding_endpoint_is_in_the_lane():
    client, _ = apps(FakeBackend())
    assert sorted(client.application.wsgi_app.routes) == sorted(LANE_PATHS)


def test_an_answer_from_a_view_becomes_a_flask_response():
    from shim.api.exchange import Answer
    app = create_app(Settings(embedded_model=False), router=Router({}, []))
    with app.test_request_context("/"):
        response = app.make_response(Answer(201, {"Content-Type": "text/plain", "X-A": "1"}, [b"made"]))
    assert (response.status_code, response.headers["X-A"], response.get_data()) == (201, "1", b"made")


def test_unknown_status_codes_still_have_a_status_line():
    from shim.api.exchange import Answer
    assert Answer(299, {}, []).status_line == "299 UNKNOWN"
    assert Answer(429, {}, []).status_line == "429 Too Many Requests"


def test_the_lane_leaves_no_exchange_behind():
    from shim.api import exchange
    client, _ = apps(FakeBackend())
    client.post("/v1/chat/completions", json=CHAT)
    client.get("/v1/models")
    with pytest.raises(LookupError):
        exchange.current()
