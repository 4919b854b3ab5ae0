"""Against real gunicorn and the real model: hostile stop lists and embedding floods get a 4xx naming the limit, and
the normal request beside them is unharmed."""
import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import ollama
import openai
import pytest
import requests

from harness.servers import running_shim

MODEL = "smollm2:135m"
HI = [{"role": "user", "content": "Name three colours."}]
CANCELLED = re.compile(r"embedding cancelled: model=\S+ embedded=(\d+) of (\d+) inputs")
POOL = 2
EMBED_QUEUE = 6


@pytest.fixture(scope="module")
def server():
    env = {"SHIM_LOG_LEVEL": "info", "SHIM_THREAD_POOL_SIZE": str(POOL), "SHIM_MAX_QUEUE": str(EMBED_QUEUE),
           "SHIM_MAX_EMBED_INPUTS": "400", "SHIM_MAX_EMBED_BYTES": "65536"}
    with running_shim(env=env) as url:
        yield url


def sentences(count, start=0):
    return [f"Sentence number {i} is about the weather in a small town." for i in range(start, start + count)]


def stream_chat(url, max_tokens=24):
    """(time to the first token, the whole text) of a streamed Ollama chat."""
    started = time.monotonic()
    first, text = None, ""
    for part in ollama.Client(url).chat(MODEL, HI, stream=True, options={"temperature": 0, "num_predict": max_tokens}):
        if part.message.content and first is None:
            first = time.monotonic() - started
        text += part.message.content
    return first, text


def beside(normal, hostile):
    """Run normal() in a thread while hostile() runs here; (normal's result, hostile's error)."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(normal)
        try:
            hostile()
            error = None
        except Exception as err:  # noqa: BLE001 - the test looks at it
            error = err
        return future.result(timeout=120), error


# ---------------------------------------------------------------- stop lists

def test_a_flood_of_stop_strings_is_refused_and_the_stream_beside_it_is_unharmed(server):
    _, alone = stream_chat(server)
    flood = [f"never {i}" for i in range(100_000)]
    (ttft, text), error = beside(lambda: stream_chat(server),
                                 lambda: ollama.Client(server).chat(MODEL, HI, options={"stop": flood}))
    assert text == alone
    assert isinstance(error, ollama.ResponseError) and error.status_code == 400
    assert "options.stop" in error.error and "at most 16" in error.error


@pytest.mark.parametrize("fields, param", [
    ({"extra_body": {"options": {"stop": [f"s{i}" for i in range(17)]}}}, "options.stop"),
    ({"stop": ["x" * 257]}, "stop"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
])
def test_openai_stop_limits_name_the_field(server, fields, param):
    client = openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=HI, max_tokens=2, **fields)
    assert info.value.param == param


# ---------------------------------------------------------------- embeddings

def test_embeddings_over_the_caps_get_400_naming_input_and_the_request_beside_them_is_unharmed(server):
    oai = openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0)
    alone = oai.embeddings.create(model=MODEL, input=sentences(1)).data

    def normal():
        return oai.embeddings.create(model=MODEL, input=sentences(1)).data
    for hostile_input, limit in ((sentences(401), "400 inputs"), (["x" * 40_000, "y" * 30_000], "65536")):
        result, error = beside(normal, lambda: oai.embeddings.create(model=MODEL, input=hostile_input))
        assert [d.embedding for d in result] == [d.embedding for d in alone]
        assert isinstance(error, openai.BadRequestError) and error.param == "input" and limit in error.message
        with pytest.raises(ollama.ResponseError) as info:
            ollama.Client(server).embed(MODEL, hostile_input)
        assert info.value.status_code == 400 and "'input'" in info.value.error and limit in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(server).embeddings(MODEL, "z" * 70_000)
    assert info.value.status_code == 400 and "'prompt'" in info.value.error and "65536" in info.value.error


def post_embed(url, count, start=0, timeout=120):
    return requests.post(url + "/api/embed", json={"model": MODEL, "input": sentences(count, start)}, timeout=timeout)


def inputs_lasting(url, seconds):
    """How many inputs one embeddings request needs to keep the model busy for about `seconds` on this machine."""
    started = time.monotonic()
    assert post_embed(url, 4).ok
    return max(2, min(400, int(seconds / ((time.monotonic() - started) / 4))))


def test_a_chat_stays_responsive_while_embeddings_queue_up(server):
    stream_chat(server, max_tokens=1)
    baseline, _ = stream_chat(server, max_tokens=4)
    size = inputs_lasting(server, 2.0)
    with ThreadPoolExecutor(EMBED_QUEUE) as pool:
        floods = [pool.submit(post_embed, server, size, 1000 * i) for i in range(EMBED_QUEUE)]
        time.sleep(1.0)  # every embeddings request is in, more of them than the worker has pool threads
        assert not all(f.done() for f in floods)
        loaded, _ = stream_chat(server, max_tokens=4)
        finished_before_chat = sum(f.done() for f in floods)
        statuses = [f.result().status_code for f in floods]
    print(f"\ntime to first token: {baseline:.2f}s alone, {loaded:.2f}s beside {EMBED_QUEUE} embeddings requests "
          f"({finished_before_chat} of them done by then)")
    assert statuses == [200] * EMBED_QUEUE
    assert finished_before_chat < EMBED_QUEUE, "the chat must not wait for the embeddings queue to drain"
    assert loaded < baseline * 3 + 3, "the chat waited for embeddings queued before it"


def test_past_the_queue_an_embeddings_request_is_told_the_server_is_busy_and_chats_still_run(server):
    with ThreadPoolExecutor(EMBED_QUEUE + 1) as pool:
        size = inputs_lasting(server, 0.5)
        floods = [pool.submit(post_embed, server, size, 1000 * i) for i in range(EMBED_QUEUE + 1)]
        time.sleep(1.0)
        _, text = stream_chat(server, max_tokens=4)
        answers = [f.result() for f in floods]
    busy = [a for a in answers if a.status_code != 200]
    assert len(busy) == 1 and busy[0].status_code == 503 and "server busy" in busy[0].json()["error"]
    assert text, "chats are admitted apart from embeddings"


def wait_for_cancel(url, previous, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = CANCELLED.findall(url.log_text())
        if len(found) > previous:
            return tuple(map(int, found[previous]))
        time.sleep(0.1)
    raise AssertionError("the server never logged a cancelled embedding:\n" + url.log_text()[-2000:])


def test_a_client_that_hangs_up_stops_its_embeddings(server):
    before = len(CANCELLED.findall(server.log_text()))
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout):
        post_embed(server, 400, timeout=(5, 1.0))
    done, total = wait_for_cancel(server, before)
    print(f"\nembeddings: client left after {time.monotonic() - started:.2f}s, server stopped after {done} of "
          f"{total} inputs")
    assert total == 400 and done < 300
    quick = post_embed(server, 1, timeout=10)
    assert quick.ok and len(quick.json()["embeddings"]) == 1


def test_a_client_that_hangs_up_while_waiting_its_turn_never_runs(server):
    before = len(CANCELLED.findall(server.log_text()))
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(post_embed, server, 400, timeout=(5, 4.0))  # holds the turn, then hangs up too
        time.sleep(0.5)
        with pytest.raises(requests.ReadTimeout):
            post_embed(server, 50, 1000, timeout=(5, 0.5))
        with pytest.raises(requests.ReadTimeout):
            running.result()
    wait_for_cancel(server, before + 1)
    cancelled = [tuple(map(int, found)) for found in CANCELLED.findall(server.log_text())[before:]]
    assert cancelled[0] == (0, 50) and cancelled[1][1] == 400 and cancelled[1][0] < 400


class SilentUpstream:
    """An upstream that reads each request and never answers: records what it was asked and when each asker left."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.asked, self.left = [], []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn):
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        while len(body) < length:
            body += conn.recv(65536)
        self.asked.append((head.split(b" ")[1].decode(), json.loads(body), time.monotonic()))
        while conn.recv(65536):  # until the asker closes the connection
            pass
        self.left.append(time.monotonic())
        conn.close()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("kind", ["openai", "anthropic", "ollama"])
def test_a_client_that_hangs_up_while_the_upstream_works_closes_the_upstream_connection(kind, stream):
    """Every upstream backend type, whole or streamed (before the first byte of its answer)."""
    silent = SilentUpstream()
    url = silent.url + ("/v1" if kind == "openai" else "")
    config = f'embedded_model = false\n[backends.up]\ntype = "{kind}"\nurl = "{url}"\nmodels = ["slow"]\n'
    with running_shim(config) as front:
        with pytest.raises(requests.ReadTimeout):
            requests.post(front + "/v1/chat/completions", timeout=(5, 0.5),
                          json={"model": "slow", "messages": HI, "stream": stream})
        deadline = time.monotonic() + 10
        while not silent.left and time.monotonic() < deadline:
            time.sleep(0.05)
    assert len(silent.asked) == 1 and silent.asked[0][1]["stream"] is stream
    # The client left 0.5 s after asking; shim looks for it every 0.25 s and then closes the upstream connection.
    assert silent.left and silent.left[0] - silent.asked[0][2] < 2.0
