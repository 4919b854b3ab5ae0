"""Keys, CORS, request ids, the bounded queue, health, readiness and metrics, over the fake backend."""
import threading
import time

import pytest
from prometheus_client import REGISTRY

from shim.app import create_app
from shim.config import Settings
from shim import generation as g
from shim.errors import UpstreamError
from shim.router import Route, Router
from tests.fakes import FakeBackend

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


def make_client(fake=None, routes=(Route("fake-model", "fake", "fake-model"),), **settings):
    fake = fake or FakeBackend()
    router = Router({"fake": fake}, routes)
    return create_app(Settings(embedded_model=False, **settings), router=router).test_client()


@pytest.fixture
def keyed():
    return make_client(api_keys=("sk-right",))


def test_key_required_openai_shape(keyed):
    response = keyed.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_api_key"


def test_key_required_ollama_shape(keyed):
    response = keyed.post("/api/chat", json=CHAT, headers={"Authorization": "Bearer sk-wrong"})
    assert response.status_code == 401 and "API key" in response.get_json()["error"]


def test_right_key_passes(keyed):
    headers = {"Authorization": "Bearer sk-right"}
    assert keyed.post("/v1/chat/completions", json=CHAT, headers=headers).status_code == 200
    assert keyed.get("/api/tags", headers=headers).status_code == 200


@pytest.mark.parametrize("path", ["/", "/health", "/ready"])
def test_health_paths_stay_open(keyed, path):
    assert keyed.get(path).status_code == 200


def test_key_file(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# ops keys\nsk-from-file\n")
    client = make_client(api_key_file=str(keys))
    assert client.get("/v1/models", headers={"Authorization": "Bearer sk-from-file"}).status_code == 200
    assert client.get("/v1/models", headers={"Authorization": "Bearer sk-other"}).status_code == 401


def test_cors_preflight_and_headers():
    client = make_client(cors_origins=("https://app.example",))
    preflight = client.options("/v1/chat/completions", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    other = client.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_request_id_echoed_or_made():
    client = make_client()
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/health").headers["X-Request-ID"]
    assert len(made) == 16


def test_full_queue_gives_429_then_503():
    fake = FakeBackend()
    fake.hold = threading.Event()
    client = make_client(fake, max_queue=1)
    held = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    next(held.response)  # the first generation, still running, holds the model's only place
    busy = client.post("/v1/chat/completions", json=CHAT)
    assert busy.status_code == 429 and busy.headers["Retry-After"] == "1"
    assert busy.get_json()["error"]["code"] == "server_busy"
    ollama_busy = client.post("/api/chat", json=CHAT)
    assert ollama_busy.status_code == 503 and ollama_busy.get_json()["error"].startswith("server busy")
    fake.hold.set()
    held.close()
    fake.hold = None
    deadline = time.monotonic() + 5
    while client.post("/v1/chat/completions", json=CHAT).status_code == 429 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_ready_and_metrics():
    client = make_client()
    assert client.get("/ready").get_json() == {"status": "ready", "backends": {"fake": True}}
    client.post("/v1/chat/completions", json=CHAT)
    text = client.get("/metrics").get_data(as_text=True)
    assert 'shim_requests_total{model="fake-model",route="/v1/chat/completions",status="200"}' in text
    assert 'shim_completion_tokens_total{model="fake-model"}' in text
    assert "shim_time_to_first_token_seconds_bucket" in text


def test_streams_without_heartbeats():
    client = make_client(heartbeat_seconds=0)
    text = client.post("/v1/chat/completions", json={**CHAT, "stream": True}).get_data(as_text=True)
    assert text.endswith("data: [DONE]\n\n") and '"content":"Hello"' in text and ": ping" not in text


def test_silent_stream_gets_pings():
    fake = FakeBackend()
    fake.hold = threading.Event()
    client = make_client(fake, heartbeat_seconds=0.05)
    response = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    frames = [next(response.response) for _ in range(4)]
    fake.hold.set()
    assert b"Hello" in frames[0] and frames[1:] == [b": ping\n\n"] * 3
    response.close()


class FailsAtOnce(FakeBackend):
    """A backend whose generate() raises before it returns a generator."""

    def generate(self, request, cancel):
        raise UpstreamError("upstream refused")


class FailsFirst(FakeBackend):
    """A backend whose generation raises before its first event."""

    def generate(self, request, cancel):
        raise UpstreamError("upstream refused")
        yield


def in_flight(model):
    return REGISTRY.get_sample_value("shim_requests_in_flight", {"model": model}) or 0


@pytest.mark.parametrize("backend", [FailsAtOnce, FailsFirst])
@pytest.mark.parametrize("stream", [False, True])
def test_a_generation_that_fails_before_its_first_event_frees_its_place(backend, stream):
    client = make_client(backend(), max_queue=1)
    before = in_flight("fake-model")
    for _ in range(2):  # the second would be refused as busy if the first had kept its place
        response = client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
        assert response.status_code == 502 and response.get_json()["error"]["message"] == "upstream refused"
    assert in_flight("fake-model") == before
    assert client.application.extensions["shim"].admission.depth("fake-model") == 0


class Endless(FakeBackend):
    """A backend whose generation never ends by itself, and says when it was closed."""

    closed = 0

    def generate(self, request, cancel):
        yield g.Accepted(prompt_tokens=3)
        try:
            while True:
                yield g.TextDelta("x")
        finally:
            self.closed += 1


@pytest.mark.parametrize("heartbeat_seconds", [0, 10])
def test_a_stream_closed_midway_closes_the_generation_and_frees_its_place(heartbeat_seconds):
    fake = Endless()
    client = make_client(fake, max_queue=1, heartbeat_seconds=heartbeat_seconds)
    for _ in range(2):  # the second would be refused as busy if the first had kept its place
        response = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert response.status_code == 200 and b"x" in next(response.response)
        closed = fake.closed
        response.close()
        deadline = time.monotonic() + 5  # without gevent, the source runs on a thread that stops at its next item
        while fake.closed == closed and time.monotonic() < deadline:
            time.sleep(0.01)
    assert fake.closed == 2 and client.application.extensions["shim"].admission.depth("fake-model") == 0


class AnyName(FakeBackend):
    """A backend that serves whatever model name it is sent."""

    def generate(self, request, cancel):
        self.model = request.model
        return super().generate(request, cancel)


def test_many_spellings_under_one_pattern_keep_metrics_bounded():
    client = make_client(AnyName(), routes=[Route("fake-*", "fake")])
    ask = lambda model: client.post("/v1/chat/completions", json={**CHAT, "model": model})  # noqa: E731
    assert ask("fake-0").status_code == 200
    before = len(client.get("/metrics").get_data())
    for number in range(1, 300):
        assert ask(f"fake-{number}").status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert len(text) - before < 1000, "each new spelling must not add series"
    assert 'shim_completion_tokens_total{model="fake-*"}' in text and "fake-299" not in text
    assert list(client.application.extensions["shim"].admission._counts) == ["fake-*"]


def test_embeddings_are_counted_under_the_route():
    client = make_client(routes=[Route("fake-model", "fake", "fake-model"), Route("alias", "fake", "fake-model")])
    assert client.post("/v1/embeddings", json={"model": "alias", "input": "hi"}).status_code == 200
    text = client.get("/metrics").get_data(as_text=True)
    assert 'shim_requests_total{model="fake-model",route="/v1/embeddings",status="200"}' in text
    assert 'model="alias"' not in text


def test_spellings_of_one_model_share_its_queue():
    fake = FakeBackend()
    fake.hold = threading.Event()
    client = make_client(fake, max_queue=2, routes=[Route("fake-model", "fake", "fake-model"),
                                                    Route("alias", "fake", "fake-model")])
    held = [client.post("/v1/chat/completions", json={**CHAT, "model": name, "stream": True})
            for name in ("fake-model", "alias")]
    for response in held:
        next(response.response)  # both generations still running, in the model's two places
    busy = client.post("/v1/chat/completions", json={**CHAT, "model": "fake-model:latest"})
    assert busy.status_code == 429 and "'fake-model'" in busy.get_json()["error"]["message"]
    fake.hold.set()
    for response in held:
        response.close()


def test_observe_all_writes_what_one_observe_per_amount_writes():
    from prometheus_client import CollectorRegistry, Histogram

    from shim import metrics
    amounts = [0.0005, 0.001, 0.0011, 0.0025, 0.003, 0.003, 0.7, 1.0, 5.0]  # on and between bounds, and past the last
    one_by_one, batched = CollectorRegistry(), CollectorRegistry()
    for registry in (one_by_one, batched):
        Histogram("h", "h", ["model"], buckets=(0.001, 0.0025, 0.005, 1), registry=registry)
    for amount in amounts:
        one_by_one._names_to_collectors["h"].labels("m").observe(amount)
    metrics.observe_all(batched._names_to_collectors["h"].labels("m"), amounts)
    samples = [[(s.name, s.labels, s.value) for family in r.collect() for s in family.samples
                if not s.name.endswith("_created")] for r in (one_by_one, batched)]
    assert samples[0] == samples[1]


def test_every_interval_between_tokens_is_counted():
    def count():
        text = client.get("/metrics").get_data(as_text=True)
        line = next((line for line in text.splitlines()
                     if line.startswith('shim_inter_token_latency_seconds_count{model="fake-model"}')), " 0")
        return float(line.split()[-1])
    fake = FakeBackend()
    fake.say(*["t"] * 70)  # more intervals than one batch of writes holds
    client = make_client(fake, heartbeat_seconds=0)
    before = count()
    client.post("/v1/chat/completions", json={**CHAT, "stream": True}).get_data()
    assert count() - before == 69
