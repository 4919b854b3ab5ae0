"""Ollama's model management through shim: pull, push, create, copy and delete reach the owning Ollama instance."""
import json

import ollama
import pytest
from werkzeug.wrappers import Response

from shim.app import create_app
from shim.config import Settings
from tests.fake_upstream import FakeUpstream, error_json, ndjson

PROGRESS = [{"status": "pulling manifest"}, {"status": "pulling abc", "digest": "sha256:abc", "total": 10,
                                             "completed": 5}, {"status": "success"}]


def answer(record):
    if record.path == "/api/tags":
        return ndjson({"models": [{"model": "llama3:8b", "name": "llama3:8b", "size": 1}]})
    if record.path in ("/api/pull", "/api/push", "/api/create"):
        return ndjson(*PROGRESS) if record.json.get("stream") else ndjson(PROGRESS[-1])
    if record.path in ("/api/copy", "/api/delete"):
        if (record.json.get("model") or record.json.get("source")) == "missing:latest":
            return error_json(404, "model 'missing:latest' not found")
        return Response(status=200)
    return error_json(404, "no")


@pytest.fixture
def upstream():
    with FakeUpstream(answer) as fake:
        yield fake


@pytest.fixture
def client(upstream):
    settings = Settings.from_mapping({"embedded_model": False, "preload": False,
                                      "backends": {"box": {"type": "ollama", "url": upstream.url}}})
    return create_app(settings).test_client()


def test_pull_streams_the_instance_progress(client, upstream):
    lines = client.post("/api/pull", json={"model": "qwen3:4b"}).get_data(as_text=True).split("\n")
    assert lines[-1] == "" and [json.loads(line) for line in lines[:-1]] == PROGRESS
    assert upstream.requests[-1].path == "/api/pull" and upstream.requests[-1].json["model"] == "qwen3:4b"


def test_pull_not_streaming_gives_the_last_status(client):
    assert client.post("/api/pull", json={"model": "qwen3:4b", "stream": False}).get_json() == {"status": "success"}


@pytest.mark.parametrize("path, body, sent", [
    ("/api/push", {"model": "me/llama3:8b"}, {"model": "me/llama3:8b"}),
    ("/api/create", {"model": "mine", "from": "llama3:8b", "system": "Be brief."},
     {"model": "mine", "from": "llama3:8b", "system": "Be brief."}),
])
def test_push_and_create_reach_the_instance(client, upstream, path, body, sent):
    response = client.post(path, json={**body, "stream": False})
    assert response.get_json() == {"status": "success"}
    assert {k: upstream.requests[-1].json.get(k) for k in sent} == sent


def test_copy_and_delete_answer_with_an_empty_200(client, upstream):
    copied = client.post("/api/copy", json={"source": "llama3:8b", "destination": "backup"})
    assert copied.status_code == 200 and copied.get_data() == b""
    assert upstream.requests[-1].json == {"source": "llama3:8b", "destination": "backup"}
    deleted = client.delete("/api/delete", json={"model": "backup"})
    assert deleted.status_code == 200 and upstream.requests[-1].path == "/api/delete"


def test_delete_of_a_missing_model_is_a_404(client):
    response = client.delete("/api/delete", json={"model": "missing:latest"})
    assert response.status_code == 404 and "not found" in response.get_json()["error"]


def test_local_models_are_managed_in_the_configuration():
    client = create_app(Settings()).test_client()
    assert client.post("/api/pull", json={"model": "smollm2:135m", "stream": False}).get_json() == {
        "status": "success"}
    refused = client.delete("/api/delete", json={"model": "smollm2:135m"})
    assert refused.status_code == 400 and "configuration" in refused.get_json()["error"]


def test_the_official_client_pulls_through_shim(upstream, shim_url_with):
    url = shim_url_with(f'embedded_model = false\n[backends.box]\ntype = "ollama"\nurl = "{upstream.url}"\n')
    client = ollama.Client(host=url)
    try:
        statuses = [p.status for p in client.pull("qwen3:4b", stream=True)]
        assert statuses == ["pulling manifest", "pulling abc", "success"]
        assert client.copy("llama3:8b", "backup").status == "success"
    finally:
        client._client.close()  # an idle keep-alive connection would hold the server's graceful stop
