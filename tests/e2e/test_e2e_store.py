"""Stored responses outlive workers and processes: real gunicorn shims sharing one SQLite file or one redis-server,
driven by the official openai client, over a scripted OpenAI-compatible upstream."""
import contextlib
import importlib.util
import subprocess
import sys
import textwrap
import uuid
from types import SimpleNamespace

import openai
import pytest
import requests

from harness.servers import free_port, running_shim
from shim import store as store_pkg
from tests.fake_upstream import FakeUpstream, openai_answer

pytestmark = pytest.mark.skipif(importlib.util.find_spec("shim.api.responses") is None,
                                reason="the /v1/responses endpoints are not on this branch")

CONFIG = """embedded_model = false

[backends.up]
type = "openai"
url = "{upstream}/v1"
models = ["echo"]
"""


def echo(record):
    """An upstream that answers with every user message it was sent, joined by ' | '."""
    said = [m["content"] if isinstance(m["content"], str) else "".join(p.get("text", "") for p in m["content"])
            for m in record.json["messages"] if m["role"] == "user"]
    chunk = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "echo"}
    return openai_answer(record, {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": " | ".join(said)}}]},
                         {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}})


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(echo) as server:
        yield server


@contextlib.contextmanager
def clients():
    """A maker of openai clients, each closed at the end (an idle keep-alive connection holds up a shim's stop)."""
    made = []

    def client(url):
        made.append(openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0))
        return made[-1]
    try:
        yield client
    finally:
        for each in made:
            each.close()


def fetch(url):
    """The status and JSON body of a GET, on a connection that does not outlive it (an idle one holds up a stop)."""
    answer = requests.get(url, headers={"Connection": "close"})
    return answer.status_code, answer.json()


def continue_on_another_shim(client, first_url, other_url):
    """Store a response through one shim; find, continue, list and delete it through the other."""
    created = client(first_url).responses.create(model="echo", input="first, with ünïcödé 🎉", store=True)
    assert created.store is True and created.output_text == "first, with ünïcödé 🎉"
    other = client(other_url)
    for _ in range(6):  # fresh connections: the requests spread over the other shim's workers
        assert other.responses.retrieve(created.id).output_text == created.output_text
        other = client(other_url)
    events = list(other.responses.create(model="echo", input="second", previous_response_id=created.id, stream=True))
    assert events[-1].type == "response.completed"  # a streamed response is stored as its stream ends
    follow = client(first_url).responses.retrieve(events[-1].response.id)
    assert follow.output_text == "first, with ünïcödé 🎉 | second"
    items = client(first_url).responses.input_items.list(follow.id)
    assert [item.content[0].text for item in items.data] == ["second"]
    client(other_url).responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        client(first_url).responses.retrieve(created.id)
    assert client(first_url).responses.retrieve(follow.id).output_text == follow.output_text


def test_two_shims_of_two_workers_share_responses_through_redis(upstream, redis_url):
    env = {"SHIM_RESPONSE_STORE": redis_url}
    config = CONFIG.format(upstream=upstream.url)
    with running_shim(config, env=env, workers=2) as a, running_shim(config, env=env, workers=2) as b, \
            clients() as client:
        continue_on_another_shim(client, a, b)
        continue_on_another_shim(client, b, a)


def test_a_two_worker_shim_and_another_shim_share_responses_through_one_sqlite_file(upstream, tmp_path):
    env = {"SHIM_DATA_DIR": str(tmp_path)}
    config = CONFIG.format(upstream=upstream.url)
    with running_shim(config, env=env, workers=2) as a, running_shim(config, env=env) as b, clients() as client:
        continue_on_another_shim(client, a, a)
        continue_on_another_shim(client, a, b)
    assert (tmp_path / "responses.sqlite3").exists()


def test_store_false_is_not_kept_and_unknown_ids_are_404_in_openais_shape(upstream, tmp_path):
    with running_shim(CONFIG.format(upstream=upstream.url), env={"SHIM_DATA_DIR": str(tmp_path)}) as url, \
            clients() as client:
        created = client(url).responses.create(model="echo", input="not kept", store=False)
        assert created.store is False
        status, body = fetch(f"{url}/v1/responses/{created.id}")
        assert status == 404
        assert set(body["error"]) == {"message", "type", "param", "code"} and created.id in body["error"]["message"]


def test_an_unreachable_redis_is_a_503_naming_it_without_its_password(upstream):
    port = free_port()
    env = {"SHIM_RESPONSE_STORE": f"redis://:hunter2-secret@127.0.0.1:{port}/0"}
    with running_shim(CONFIG.format(upstream=upstream.url), env=env) as url, clients() as client:
        created = client(url).responses.create(model="echo", input="hello")  # the answer still reaches the client
        assert created.output_text == "hello"
        status, body = fetch(f"{url}/v1/responses/{created.id}")
        assert status == 503
        error = body["error"]
        assert error["code"] == "store_unavailable" and f"redis://127.0.0.1:{port}/0" in error["message"]
        assert "hunter2" not in str(body) and "hunter2" not in url.log_text()


def test_a_shim_whose_data_dir_cannot_be_made_does_not_start(tmp_path):
    from harness.servers import running_shim
    (tmp_path / "a-file").write_text("")
    with pytest.raises(RuntimeError, match="cannot open the response store"):
        with running_shim("embedded_model = false\n", env={"SHIM_DATA_DIR": str(tmp_path / "a-file" / "x")}):
            pass


WRITER = textwrap.dedent("""
    import sys
    if sys.argv[1] == "gevent":
        from gevent import monkey
        monkey.patch_all()
    from types import SimpleNamespace
    from shim.store import open_store
    settings = SimpleNamespace(response_store=sys.argv[2], data_dir=sys.argv[3], response_ttl_seconds=600,
                               response_store_max_bytes=10 ** 8)
    store = open_store(settings)
    if sys.argv[1] == "gevent":
        import gevent
        gevent.joinall([gevent.spawn(store.put, f"{sys.argv[4]}-{n}", {"n": n}) for n in range(200)], raise_error=True)
    else:
        for n in range(200):
            store.put(f"{sys.argv[4]}-{n}", {"n": n})
    assert store.get("from-parent") == {"parent": True}, store.get("from-parent")
    store.close()
""")


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_two_processes_write_and_read_one_store_at_once(kind, tmp_path, request):
    target = "sqlite" if kind == "sqlite" else request.getfixturevalue("redis_url")
    settings = SimpleNamespace(response_store=target, data_dir=str(tmp_path), response_ttl_seconds=600,
                               response_store_max_bytes=10 ** 8)
    tag = uuid.uuid4().hex
    store = store_pkg.open_store(settings)
    store.put("from-parent", {"parent": True})
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, mode, target, str(tmp_path), f"{tag}-{mode}"],
                              stderr=subprocess.PIPE) for mode in ("plain", "gevent")]
    for proc in procs:
        assert proc.wait(60) == 0, proc.stderr.read().decode()
    assert all(store.get(f"{tag}-{mode}-{n}") == {"n": n} for mode in ("plain", "gevent") for n in range(200))
    store.delete("from-parent")
    store.close()
