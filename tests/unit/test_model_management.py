"""Ollama's model management through shim: pull, push, create, copy and delete reach the owning Ollama instance,
for the names shim routes there, when the `management` setting lets the caller."""
import json

import pytest

from shim.app import create_app
from shim.config import Settings
from tests.fake_upstream import FakeUpstream
from tests.management import ADMIN, PROGRESS, ROUTED, answer


@pytest.fixture(scope="module")
def instance():
    with FakeUpstream(answer) as fake:
        yield fake


@pytest.fixture
def upstream(instance):
    """The module's fake Ollama instance, with no request recorded yet."""
    instance.requests.clear()
    return instance


def managed(upstream, **settings):
    """A test client over one Ollama instance `box` serving the ROUTED names."""
    settings = Settings.from_mapping({"embedded_model": False, "preload": False, "admin_keys": ["sk-admin"],
                                      "backends": {"box": {"type": "ollama", "url": upstream.url, "models": ROUTED}},
                                      **settings})
    return create_app(settings).test_client()


@pytest.fixture
def client(upstream):
    client = managed(upstream)
    client.environ_base["HTTP_AUTHORIZATION"] = ADMIN["Authorization"]
    return client


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
    client = create_app(Settings(management="open")).test_client()
    assert client.post("/api/pull", json={"model": "smollm2:135m", "stream": False}).get_json() == {
        "status": "success"}
    refused = client.delete("/api/delete", json={"model": "smollm2:135m"})
    assert refused.status_code == 400 and "configuration" in refused.get_json()["error"]


MANAGEMENT_CALLS = [
    ("POST", "/api/pull", {"model": "qwen3:4b"}),
    ("POST", "/api/push", {"model": "me/llama3:8b"}),
    ("POST", "/api/create", {"model": "mine", "from": "llama3:8b"}),
    ("POST", "/api/copy", {"source": "llama3:8b", "destination": "backup"}),
    ("DELETE", "/api/delete", {"model": "llama3:8b"}),
]


def management_requests(upstream):
    return [r for r in upstream.requests if r.path != "/api/tags"]


@pytest.mark.parametrize("settings, headers, says", [
    ({}, {}, "none is configured (settings 'management' and 'admin_keys')"),
    ({"admin_keys": ["sk-admin"]}, {"Authorization": "Bearer sk-wrong"}, "needs an admin key: send one of"),
    ({"admin_keys": ["sk-admin"]}, {}, "needs an admin key: send one of"),
    ({"management": "off", "admin_keys": ["sk-admin"]}, ADMIN, "turned off on this server (setting 'management'"),
])
@pytest.mark.parametrize("method, path, body", MANAGEMENT_CALLS)
def test_management_needs_the_setting_and_an_admin_key(upstream, settings, headers, says, method, path, body):
    client = managed(upstream, **{"admin_keys": [], **settings})
    response = client.open(path, method=method, json={**body, "stream": False}, headers=headers)
    assert response.status_code == 403 and says in response.get_json()["error"]
    assert management_requests(upstream) == []


@pytest.mark.parametrize("method, path, body", MANAGEMENT_CALLS)
def test_open_management_needs_no_key(upstream, method, path, body):
    response = managed(upstream, management="open").open(path, method=method, json={**body, "stream": False})
    assert response.status_code == 200 and management_requests(upstream)[-1].path == path


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/pull", {"model": "/etc/passwd"}),
    ("POST", "/api/push", {"model": "evil.example/me/llama3:8b"}),
    ("POST", "/api/create", {"model": "elsewhere"}),
    ("POST", "/api/copy", {"source": "gemma3:1b", "destination": "backup"}),
    ("DELETE", "/api/delete", {"model": "gemma3:1b"}),
])
def test_names_shim_does_not_route_are_not_managed(client, upstream, method, path, body):
    response = client.open(path, method=method, json={**body, "stream": False})
    assert response.status_code == 404 and "not found" in response.get_json()["error"]
    assert management_requests(upstream) == []


@pytest.mark.parametrize("path, body, field", [
    ("/api/copy", {"source": "llama3:8b", "destination": "evil.example/me/x"}, "destination"),
    ("/api/create", {"model": "mine", "from": "evil.example/me/x"}, "from"),
])
def test_a_second_name_must_be_routed_to_the_same_instance(client, upstream, path, body, field):
    response = client.post(path, json={**body, "stream": False})
    assert response.status_code == 403
    assert f"'{field}' names 'evil.example/me/x', which shim does not route to backend 'box'" in \
        response.get_json()["error"]
    assert management_requests(upstream) == []


def test_an_admin_key_is_also_an_api_key(upstream):
    client = managed(upstream, api_keys=["sk-user"])
    assert client.delete("/api/delete", json={"model": "llama3:8b"}, headers=ADMIN).status_code == 200
    user = {"Authorization": "Bearer sk-user"}
    assert client.get("/api/tags", headers=user).status_code == 200
    assert client.delete("/api/delete", json={"model": "llama3:8b"}, headers=user).status_code == 403


@pytest.mark.parametrize("method, path, body", MANAGEMENT_CALLS[1:])
def test_an_openai_compatible_upstream_says_it_cannot_manage(method, path, body):
    settings = Settings.from_mapping({"embedded_model": False, "preload": False, "management": "open",
                                      "backends": {"up": {"type": "openai", "url": "http://127.0.0.1:9",
                                                          "models": ROUTED}}})
    response = create_app(settings).test_client().open(path, method=method, json=body)
    error = response.get_json()["error"]
    assert response.status_code == 400 and "GGUF" not in error
    assert error == "model management is not available on backend 'up' (an OpenAI-compatible server)"
