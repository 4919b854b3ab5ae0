"""Against real gunicorn: a client that hangs up stops its generation; SIGTERM lets streams finish; metrics add up."""
import http.client
import json
import os
import re
import signal
import time

import pytest
import requests

from harness.servers import running_shim
from tests.support import CANCELLED, slow_ollama

MODEL = "smollm2:135m"
LONG = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]


@pytest.fixture(scope="module")
def server():
    with running_shim(env={"SHIM_LOG_LEVEL": "info"}) as url:
        yield url


def wait_for_cancel(url, previous=0, timeout=10):
    """The token count of the next 'generation cancelled' line in the server's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = CANCELLED.findall(url.log_text())
        if len(found) > previous:
            return int(found[previous])
        time.sleep(0.05)
    raise AssertionError("the server never logged a cancelled generation:\n" + url.log_text()[-2000:])


def read_sse_tokens(response, count):
    """Read `count` content chunks of an SSE response."""
    seen = 0
    for line in response.iter_lines():
        if line.startswith(b"data: {"):
            if json.loads(line[6:])["choices"][0]["delta"].get("content"):
                seen += 1
        if seen == count:
            return seen
    raise AssertionError("stream ended early")


def read_then_hang_up(entry, generating_server, model=MODEL):
    """Stream a long answer from `entry`, hang up after 10 tokens; (tokens read, tokens the model generated)."""
    before = len(CANCELLED.findall(generating_server.log_text()))
    body = {"model": model, "messages": LONG, "max_tokens": 1500, "temperature": 0, "stream": True}
    response = requests.post(entry + "/v1/chat/completions", json=body, stream=True, timeout=30)
    received = read_sse_tokens(response, 10)
    response.close()
    return received, wait_for_cancel(generating_server, before)


def test_stream_disconnect_stops_generation_within_a_few_tokens(server):
    received, generated = read_then_hang_up(server, server)
    print(f"\nstreaming: client read {received} tokens, server generated {generated} "
          f"({generated - received} after the disconnect)")
    assert received <= generated <= received + 5


def test_ndjson_disconnect_stops_generation(server):
    before = len(CANCELLED.findall(server.log_text()))
    body = {"model": MODEL, "prompt": "Write a very long story.", "options": {"num_predict": 1500}}
    response = requests.post(server + "/api/generate", json=body, stream=True, timeout=30)
    lines = response.iter_lines()
    received = sum(1 for _, _ in zip(range(10), lines))
    response.close()
    generated = wait_for_cancel(server, before)
    print(f"\nndjson: client read {received} tokens, server generated {generated}")
    assert received <= generated <= received + 5


def test_non_streaming_disconnect_stops_generation(server):
    before = len(CANCELLED.findall(server.log_text()))
    body = {"model": MODEL, "messages": LONG, "max_tokens": 3000, "temperature": 0}
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        requests.post(server + "/v1/chat/completions", json=body, timeout=(5, 1.0))
    waited = time.monotonic() - started
    generated = wait_for_cancel(server, before)
    print(f"\nnon-streaming: client left after {waited:.2f}s, server stopped after {generated} tokens")
    assert generated < 400, "the generation must stop soon after the client left, not run to max_tokens"
    quick = requests.post(server + "/v1/chat/completions", timeout=10,
                          json={"model": MODEL, "messages": LONG, "max_tokens": 2})
    assert quick.ok


def test_sigterm_lets_a_running_stream_finish():
    # One llama.cpp thread: two spinning on cores other test servers share (pytest -n 2) decoded a token every few
    # seconds, and the 120 tokens outlasted the 30 s the worker is given to finish.
    with running_shim(env={"SHIM_N_THREADS": "1"}) as url:
        body = {"model": MODEL, "messages": LONG, "max_tokens": 120, "temperature": 0, "stream": True}
        response = requests.post(url + "/v1/chat/completions", json=body, stream=True, timeout=60)
        lines = response.iter_lines()
        first = next(line for line in lines if line.startswith(b"data: {"))
        assert json.loads(first[6:])["choices"][0]["delta"]["role"] == "assistant"
        url.proc.send_signal(signal.SIGTERM)
        rest = [line for line in lines if line]
        finishes = [json.loads(line[6:])["choices"][0]["finish_reason"] for line in rest
                    if line.startswith(b"data: {")]
        assert rest[-1] == b"data: [DONE]" and finishes[-1] == "length"
        assert url.proc.wait(30) == 0
        with pytest.raises(requests.ConnectionError):
            requests.get(url + "/health", timeout=2)


def test_a_silent_ollama_stream_beats_under_the_gevent_worker_and_finishes_after_sigterm():
    """The Ollama backend's heartbeats come from the silences its transport reads (lines of their own in the NDJSON the
    official client reads); its reads must wait on gevent's hub as any request's do, and a stream in a silence must
    finish when the worker is told to stop."""
    upstream = slow_ollama(1.5)
    config = f'[backends.oll]\ntype = "ollama"\nurl = "http://127.0.0.1:{upstream.server_port}"\nmodels = ["slow"]\n'
    try:
        with running_shim(config, env={"SHIM_EMBEDDED_MODEL": "false", "SHIM_HEARTBEAT_SECONDS": "0.2"}) as url:
            response = requests.post(url + "/v1/chat/completions", stream=True, timeout=30, json={
                "model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": True})
            lines = response.iter_lines()
            assert b"ALPHA" in next(line for line in lines if line.startswith(b"data: {"))
            url.proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line]
            assert rest.count(b": ping") >= 4 and rest.index(b": ping") < len(rest) - 3
            assert b"OMEGA" in b"".join(rest) and rest[-1] == b"data: [DONE]"
            assert url.proc.wait(10) == 0, "the client's connection, idle after the stream, does not hold the stop"
            assert "Traceback" not in url.log_text(), url.log_text()
    finally:
        upstream.shutdown()


def test_idle_keep_alive_connections_do_not_hold_a_stopping_worker():
    """nginx keeps connections open to each worker: a stop or restart took the whole graceful timeout (30 s)."""
    with running_shim(env={"SHIM_EMBEDDED_MODEL": "false", "SHIM_LOG_LEVEL": "info"}) as url:
        idle = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
        idle.request("GET", "/health")
        answer = idle.getresponse()
        assert answer.status == 200 and answer.getheader("Connection") != "close"
        answer.read()
        began = time.monotonic()
        url.proc.send_signal(signal.SIGTERM)
        assert url.proc.wait(10) == 0 and time.monotonic() - began < 5
        assert idle.sock.recv(1) == b"", "the server closed the idle connection"
        assert "graceful timeout" not in url.log_text().lower(), url.log_text()


def test_metrics_add_up_across_workers():
    with running_shim(workers=2) as url:
        for _ in range(6):
            requests.post(url + "/v1/chat/completions", timeout=30,
                          json={"model": MODEL, "messages": LONG, "max_tokens": 2}).raise_for_status()
        text = requests.get(url + "/metrics", timeout=10).text
        counted = re.search(r'shim_requests_total\{model="smollm2:135m",route="/v1/chat/completions",'
                            r'status="200"\} (\S+)', text)
        assert counted and float(counted.group(1)) == 6.0
        tokens = re.search(r'shim_completion_tokens_total\{model="smollm2:135m"\} (\S+)', text)
        assert float(tokens.group(1)) == 12.0
        assert "shim_requests_in_flight" in text and "shim_open_streams" in text


def worker_pids(master):
    """The process ids of a gunicorn master's workers."""
    with open(f"/proc/{master}/task/{master}/children") as fh:
        return [int(pid) for pid in fh.read().split()]


def test_a_worker_that_stops_leaves_the_shared_metrics_to_the_others():
    """gunicorn ends a worker with sys.exit, which unwound through serve() and removed the directory of the figures
    every worker shares: the next worker failed its first count with a 500, the rest were lost from /metrics."""
    with running_shim(workers=2, env={"SHIM_EMBEDDED_MODEL": "false"}) as url:
        gone = worker_pids(url.proc.pid)[0]
        os.kill(gone, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while (gone in worker_pids(url.proc.pid) or len(worker_pids(url.proc.pid)) < 2) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)  # the replacement loads its app
        statuses = [requests.get(url + "/v1/models", timeout=10, headers={"Connection": "close"}).status_code
                    for _ in range(8)]
        text = requests.get(url + "/metrics", timeout=10).text
        assert statuses == [200] * 8, url.log_text()
        counted = re.search(r'shim_requests_total\{model="[^"]*",route="/v1/models",status="200"\} (\S+)', text)
        assert counted and float(counted.group(1)) == 8.0, text


@pytest.fixture(scope="module")
def front(server):
    """A shim whose models live on `server`: through its Ollama API and through its OpenAI API."""
    config = (f'embedded_model = false\n[backends.up-ollama]\ntype = "ollama"\nurl = "{server}"\nmodels = []\n'
              f'[backends.up-openai]\ntype = "openai"\nurl = "{server}/v1"\nmodels = []\n'
              f'[[models]]\nname = "via-ollama"\nbackend = "up-ollama"\ntarget = "{MODEL}"\n'
              f'[[models]]\nname = "via-openai"\nbackend = "up-openai"\ntarget = "{MODEL}"\n')
    with running_shim(config) as url:
        yield url


@pytest.mark.parametrize("model", ["via-ollama", "via-openai"])
def test_upstream_stream_disconnect_stops_the_upstream_generation(server, front, model):
    received, generated = read_then_hang_up(front, server, model)
    print(f"\n{model}: client read {received} tokens, the upstream generated {generated}")
    assert received <= generated <= received + 8, "two hops, each stops within a few tokens"


@pytest.mark.parametrize("model", ["via-ollama", "via-openai"])
def test_upstream_non_streaming_disconnect_stops_the_upstream_generation(server, front, model):
    before = len(CANCELLED.findall(server.log_text()))
    body = {"model": model, "messages": LONG, "max_tokens": 3000, "temperature": 0}
    with pytest.raises(requests.ReadTimeout):
        requests.post(front + "/v1/chat/completions", json=body, timeout=(5, 1.0))
    generated = wait_for_cancel(server, before)
    print(f"\n{model}, non-streaming: the upstream stopped after {generated} tokens")
    assert generated < 400


def test_max_tokens_beyond_the_context_is_a_400_with_the_numbers(server):
    response = requests.post(server + "/v1/chat/completions", timeout=10,
                             json={"model": MODEL, "messages": LONG, "max_tokens": 5000})
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "context_length_exceeded"
    assert "4096" in error["message"] and "5000" in error["message"]


def test_keys_with_the_official_clients_and_request_ids_in_the_access_log(monkeypatch):
    import ollama
    import openai
    with running_shim(env={"SHIM_API_KEYS": "sk-one,sk-two"}) as url:
        monkeypatch.setenv("OLLAMA_API_KEY", "sk-two")
        assert MODEL in [m.model for m in ollama.Client(host=url).list().models]
        monkeypatch.setenv("OLLAMA_API_KEY", "sk-wrong")
        with pytest.raises(ollama.ResponseError) as refused:
            ollama.Client(host=url).list()
        assert refused.value.status_code == 401
        assert openai.OpenAI(base_url=url + "/v1", api_key="sk-one").models.list().data
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="sk-wrong", max_retries=0).models.list()
        assert requests.get(url + "/health", timeout=5).ok
        answered = requests.get(url + "/api/version", headers={"X-Request-ID": "req-abc123",
                                                              "Authorization": "Bearer sk-one"}, timeout=5)
        assert answered.headers["X-Request-ID"] == "req-abc123"
        time.sleep(0.5)
        assert re.search(r'"GET /api/version HTTP/1.1" 200 .* id=req-abc123', url.log_text())
