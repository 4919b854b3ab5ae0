"""End to end through the upstream backends, over real HTTP.

An upstream shim (gunicorn + gevent, the real SmolLM2) sits behind a FRONT shim whose only models are upstream ones:
`via-ollama` reaches it through the Ollama backend (official ollama client), `via-openai` through the
OpenAI-compatible backend (requests). The official openai and ollama clients drive the front through both. Broken
upstreams (a scripted server answering 500, garbage, or dying mid-stream, and a closed port) must give each client a
clear error in its own protocol's shape, and the front must go on serving.
"""
import json

import ollama
import openai
import pytest
import requests
from werkzeug.wrappers import Response

from harness.servers import free_port, running_shim
from tests.fake_upstream import FakeUpstream, dying, error_json

VIA = ("via-ollama", "via-openai")
QUESTION = [{"role": "user", "content": "Name three colors."}]
GREEDY = dict(temperature=0, seed=7)
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"]}}}
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]

FRONT_CONFIG = """
embedded_model = false

[backends.up_ollama]
type = "ollama"
url = "{upstream}"
read_timeout = 120.0

[backends.up_openai]
type = "openai"
url = "{upstream}/v1"
api_key = "front-to-upstream-key"
read_timeout = 120.0

[backends.broken_ollama]
type = "ollama"
url = "{broken}"
read_timeout = 20.0

[backends.broken_openai]
type = "openai"
url = "{broken}/v1"
read_timeout = 20.0

# Routed explicitly: a dynamic backend that is down makes every unknown name 503 (see test_down_front_*).
[backends.dead_ollama]
type = "ollama"
url = "http://127.0.0.1:{closed}"
connect_timeout = 2.0
models = ["ollama-unreachable"]

[backends.dead_openai]
type = "openai"
url = "http://127.0.0.1:{closed}/v1"
connect_timeout = 2.0
models = ["openai-unreachable"]

[[models]]
name = "via-ollama"
backend = "up_ollama"
target = "smollm2:135m"

[[models]]
name = "via-openai"
backend = "up_openai"
target = "smollm2:135m"
"""

KINDS = ("ollama", "openai")
MODES = ("500", "unreachable", "garbage", "midstream")
STATUS = {"500": 502, "unreachable": 503, "garbage": 502, "midstream": 502}


def broken_model(kind, mode):
    return f"{kind}-{mode}"


def backend_of(kind, mode):
    return f"{'dead' if mode == 'unreachable' else 'broken'}_{kind}"


def failing_models():
    return "".join(f'\n[[models]]\nname = "{broken_model(kind, mode)}"\nbackend = "{backend_of(kind, mode)}"\n'
                   f'target = "{mode}"\n' for kind in KINDS for mode in MODES)


def broken_answer(record):
    """The scripted broken upstream: both protocols on one port; what breaks is named by the model asked for."""
    openai_side = record.path.startswith("/v1/")
    if record.method == "GET":
        body = {"object": "list", "data": []} if openai_side else {"models": []}
        return Response(json.dumps(body), mimetype="application/json")
    mode = (record.json or {}).get("model")
    mimetype = "text/event-stream" if openai_side else "application/x-ndjson"
    if mode == "500":
        return error_json(500, {"message": "upstream exploded", "type": "server_error"} if openai_side
                          else "upstream exploded")
    if mode == "garbage":
        return Response("data: {this is not json\n\n" if openai_side else "{this is not json\n", mimetype=mimetype)
    if mode == "midstream":
        if openai_side:
            piece = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
            frame = b"data: " + json.dumps(piece).encode() + b"\n\n"
        else:
            piece = {"model": "m", "created_at": "2024-01-01T00:00:00Z",
                     "message": {"role": "assistant", "content": "Hel"}, "done": False}
            frame = json.dumps(piece).encode() + b"\n"
        return dying(record, [frame, frame], mimetype)
    return error_json(404, f"model '{mode}' not found")


@pytest.fixture(scope="module")
def upstream():
    """The upstream shim, serving the real SmolLM2 as smollm2:135m."""
    with running_shim() as url:
        # The first generation after start-up can take many seconds on a busy machine: pay for it here, once.
        requests.post(url + "/api/generate", timeout=180,
                      json={"model": "smollm2:135m", "prompt": "Hi", "stream": False, "options": {"num_predict": 1}})
        yield url


@pytest.fixture(scope="module")
def broken():
    with FakeUpstream(broken_answer) as server:
        yield server


@pytest.fixture(scope="module")
def front(upstream, broken):
    config = FRONT_CONFIG.format(upstream=upstream, broken=broken.url, closed=free_port()) + failing_models()
    with running_shim(config) as url:
        yield url


def assert_front_alive(oai, oll):
    """A normal request through each backend succeeds after a failure."""
    reply = oai.chat.completions.create(model="via-openai", messages=QUESTION, max_tokens=2, **GREEDY)
    assert reply.choices[0].message.content
    assert oll.chat(model="via-ollama", messages=QUESTION, options={"num_predict": 2}).message.content


# ---------------------------------------------------------------- model lists

def test_routed_names_are_listed(oai, oll):
    ids = {m.id for m in oai.models.list()}
    assert {"via-ollama", "via-openai"} <= ids
    assert {"via-ollama", "via-openai"} <= {m.model for m in oll.list().models}


@pytest.mark.parametrize("model", VIA)
def test_a_routed_name_is_retrieved_under_that_name(oai, model):
    assert oai.models.retrieve(model).id == model


# ---------------------------------------------------------------- the openai SDK through both backends

@pytest.mark.parametrize("model", VIA)
def test_openai_chat_streamed_equals_whole(oai, model):
    whole = oai.chat.completions.create(model=model, messages=QUESTION, max_tokens=16, **GREEDY)
    text = whole.choices[0].message.content
    assert text and whole.model == model and whole.choices[0].finish_reason in ("stop", "length")
    assert whole.usage.prompt_tokens > 5 and 0 < whole.usage.completion_tokens <= 16
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks = list(oai.chat.completions.create(model=model, messages=QUESTION, max_tokens=16, stream=True,
                                              stream_options={"include_usage": True}, **GREEDY))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2, "tokens must stream one by one"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


@pytest.mark.parametrize("model", VIA)
def test_openai_legacy_completion_streamed_equals_whole(oai, model):
    whole = oai.completions.create(model=model, prompt="The sky is", max_tokens=8, **GREEDY)
    text = whole.choices[0].text
    assert text and whole.usage.completion_tokens > 0
    chunks = list(oai.completions.create(model=model, prompt="The sky is", max_tokens=8, stream=True, **GREEDY))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text


@pytest.mark.parametrize("model", VIA)
def test_openai_length_finish_through_the_backend(oai, model):
    reply = oai.chat.completions.create(model=model, max_tokens=3, **GREEDY,
                                        messages=[{"role": "user", "content": "Tell me a long story."}])
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3


@pytest.mark.parametrize("model", VIA)
def test_openai_tool_choice_required_gives_a_tool_call(oai, model):
    # Grammar-constrained decoding is slow on a busy CPU: a generous timeout, and few such requests.
    reply = oai.with_options(timeout=240).chat.completions.create(
        model=model, messages=ASK_WEATHER, tools=[WEATHER], tool_choice="required", max_tokens=60, **GREEDY)
    assert reply.choices[0].finish_reason == "tool_calls"
    [call] = reply.choices[0].message.tool_calls
    assert call.id and call.type == "function" and call.function.name == "get_weather"
    assert "city" in json.loads(call.function.arguments)


# ---------------------------------------------------------------- the ollama client through both backends

@pytest.mark.parametrize("model", VIA)
def test_ollama_chat_streamed_equals_whole(oll, model):
    options = {"temperature": 0, "seed": 3, "num_predict": 16}
    whole = oll.chat(model=model, messages=QUESTION, options=options)
    assert whole.message.role == "assistant" and whole.message.content and whole.model == model
    assert whole.done and whole.done_reason in ("stop", "length")
    assert whole.prompt_eval_count > 5 and 0 < whole.eval_count <= 16
    assert whole.total_duration > 0 and whole.eval_duration > 0

    parts = list(oll.chat(model=model, messages=QUESTION, options=options, stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert len(parts) > 3 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert parts[-1].eval_count == whole.eval_count and parts[-1].prompt_eval_count == whole.prompt_eval_count


@pytest.mark.parametrize("model", VIA)
def test_ollama_generate_streamed_equals_whole(oll, model):
    options = {"temperature": 0, "num_predict": 12}
    whole = oll.generate(model=model, prompt="Why is the sea salty?", options=options)
    assert whole.response and whole.done and whole.eval_count > 0 and whole.prompt_eval_count > 0
    parts = list(oll.generate(model=model, prompt="Why is the sea salty?", options=options, stream=True))
    assert "".join(p.response for p in parts) == whole.response
    assert parts[-1].done and parts[-1].eval_count == whole.eval_count


@pytest.mark.parametrize("model", VIA)
def test_ollama_num_predict_gives_length(oll, model):
    reply = oll.chat(model=model, messages=[{"role": "user", "content": "Write an essay."}],
                     options={"num_predict": 4, "temperature": 0})
    assert reply.done_reason == "length" and reply.eval_count == 4


def test_ollama_protocol_forced_tool_choice_through_the_openai_backend_streams_a_tool_call(front):
    """tool_choice is shim's extension of /api/chat (the ollama client cannot send it): raw HTTP, streamed."""
    body = {"model": "via-openai", "messages": ASK_WEATHER, "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "options": {"temperature": 0, "num_predict": 60}}
    with requests.post(front + "/api/chat", json=body, stream=True, timeout=240) as reply:
        assert reply.status_code == 200
        parts = [ollama.ChatResponse(**json.loads(line)) for line in reply.iter_lines() if line]
    calls = [c for p in parts for c in p.message.tool_calls or ()]
    assert [c.function.name for c in calls] == ["get_weather"] and "city" in calls[0].function.arguments
    assert parts[-1].done and parts[-1].eval_count > 0


def test_a_model_missing_upstream_is_not_found_through_both_clients(front, oai, oll):
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="no-such-model-anywhere", messages=QUESTION, max_tokens=2)
    with pytest.raises(ollama.ResponseError) as err:
        oll.chat(model="no-such-model-anywhere", messages=QUESTION)
    assert err.value.status_code == 404


# ---------------------------------------------------------------- broken upstreams

def each_failure(test):
    """Run a test for every broken upstream kind and mode, whole and streamed."""
    cases = [pytest.param(kind, mode, id=f"{kind}-{mode}") for kind in KINDS for mode in MODES]
    test = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])(test)
    return pytest.mark.parametrize("kind, mode", cases)(test)


@each_failure
def test_openai_client_gets_a_clear_error(oai, oll, kind, mode, stream):
    model, backend = broken_model(kind, mode), backend_of(kind, mode)
    received = []
    with pytest.raises(openai.APIError) as caught:
        if stream:
            for chunk in oai.chat.completions.create(model=model, messages=QUESTION, max_tokens=8, stream=True):
                received.append(chunk)
        else:
            oai.chat.completions.create(model=model, messages=QUESTION, max_tokens=8)
    error = caught.value
    if isinstance(error, openai.APIStatusError):
        assert not stream or mode != "midstream", "after output the error must come in-band"
        assert error.status_code == STATUS[mode]
    else:
        assert stream, "a whole answer's error must be an HTTP status"
        assert type(error) is openai.APIError  # raised by the SDK for an in-band {"error": ...} frame
    assert error.body["code"] in ("upstream_error", "backend_unavailable") and error.body["type"] == "api_error"
    assert backend in error.body["message"], error.body
    if stream and mode == "midstream":
        assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == "HelHel"
        assert "broke off" in error.body["message"]
    assert_front_alive(oai, oll)


@each_failure
def test_ollama_client_gets_a_clear_error(oai, oll, kind, mode, stream):
    model, backend = broken_model(kind, mode), backend_of(kind, mode)
    received = []
    with pytest.raises(ollama.ResponseError) as caught:
        if stream:
            for part in oll.chat(model=model, messages=QUESTION, options={"num_predict": 8}, stream=True):
                received.append(part)
        else:
            oll.chat(model=model, messages=QUESTION, options={"num_predict": 8})
    error = caught.value
    if error.status_code == -1:  # the ollama client's mark of an in-band {"error": ...} line
        assert stream, "a whole answer's error must be an HTTP status"
    else:
        assert not stream or mode != "midstream", "after output the error must come in-band"
        assert error.status_code == STATUS[mode]
    assert backend in error.error, error.error
    if stream and mode == "midstream":
        assert "".join(p.message.content for p in received) == "HelHel" and not any(p.done for p in received)
        assert "broke off" in error.error
    assert_front_alive(oai, oll)


def test_raw_error_bodies_have_each_protocols_shape(front):
    oai_error = requests.post(front + "/v1/chat/completions", timeout=30,
                              json={"model": "openai-500", "messages": QUESTION}).json()
    assert set(oai_error) == {"error"} and set(oai_error["error"]) >= {"message", "type", "param", "code"}
    oll_error = requests.post(front + "/api/chat", timeout=30,
                              json={"model": "openai-500", "messages": QUESTION, "stream": False})
    assert oll_error.status_code == 502 and set(oll_error.json()) == {"error"}
    assert isinstance(oll_error.json()["error"], str) and "answered 500" in oll_error.json()["error"]


# ---------------------------------------------------------------- upstreams down or leaking secrets

SECRET_KEY = "sk-front-SECRET-0123456789abcdef"
URL_SECRET = "pw-SECRET-7777"

DOWN_CONFIG = """
embedded_model = false

[backends.down_ollama]
type = "ollama"
url = "http://user:{url_secret}@127.0.0.1:{closed}"
connect_timeout = 2.0

[backends.down_openai]
type = "openai"
url = "http://user:{url_secret}@127.0.0.1:{closed}/v1"
api_key = "{key}"
connect_timeout = 2.0

[backends.leaky_ollama]
type = "ollama"
url = "{leaky}"
api_key = "{key}"
models = ["leak-ollama-*"]

[backends.leaky_openai]
type = "openai"
url = "{leaky}/v1"
api_key = "{key}"
models = ["leak-openai-*"]
"""


def leaky_answer(record):
    """An upstream that echoes the credentials it was sent: before any output (401) or after some (in-stream)."""
    echoed = f"refused Authorization: {record.headers.get('authorization')}"
    model = (record.json or {}).get("model", "")
    if record.path.startswith("/v1/"):
        if model.endswith("early"):
            return error_json(401, {"message": echoed, "type": "invalid_request_error"})
        piece = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
        return Response(f"data: {json.dumps(piece)}\n\ndata: {json.dumps({'error': {'message': echoed}})}\n\n",
                        mimetype="text/event-stream")
    if model.endswith("early"):
        return error_json(401, echoed)
    piece = {"model": "m", "created_at": "2024-01-01T00:00:00Z", "message": {"role": "assistant", "content": "Hel"},
             "done": False}
    return Response(json.dumps(piece) + "\n" + json.dumps({"error": echoed}) + "\n", mimetype="application/x-ndjson")


@pytest.fixture(scope="module")
def down_front():
    """A front whose dynamic backends are down, with two upstreams that echo the credentials they get."""
    with FakeUpstream(leaky_answer) as leaky:
        config = DOWN_CONFIG.format(url_secret=URL_SECRET, closed=free_port(), key=SECRET_KEY, leaky=leaky.url)
        with running_shim(config) as url:
            yield url


def assert_no_secret(*texts):
    for text in texts:
        for secret in (SECRET_KEY, SECRET_KEY[3:15], URL_SECRET):
            assert secret not in text, text


def test_down_front_a_model_its_dynamic_backends_cannot_be_asked_about_is_503_in_both_protocols(down_front):
    oai = openai.OpenAI(base_url=down_front + "/v1", api_key="unused", max_retries=0, timeout=30)
    with pytest.raises(openai.APIStatusError) as caught:
        oai.chat.completions.create(model="llama3", messages=QUESTION, max_tokens=2)
    oai.close()
    error = caught.value
    assert error.status_code == 503 and error.body["code"] == "backend_unavailable"
    assert "down_ollama" in error.body["message"] and "down_openai" in error.body["message"]
    assert "127.0.0.1" not in error.body["message"]
    oll = ollama.Client(host=down_front, timeout=30)
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as caught:
            list(oll.chat(model="llama3", messages=QUESTION, stream=True)) if stream else oll.chat(
                model="llama3", messages=QUESTION)
        assert caught.value.status_code == 503
        assert "down_ollama" in caught.value.error and "down_openai" in caught.value.error
        assert "127.0.0.1" not in caught.value.error
    oll.close()
    assert_no_secret(str(error.body), down_front.log_text())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("when", ["early", "late"])
def test_down_front_credentials_echoed_by_an_upstream_reach_neither_client_nor_log(down_front, kind, when):
    model = f"leak-{kind}-{when}"
    oai = openai.OpenAI(base_url=down_front + "/v1", api_key="unused", max_retries=0, timeout=30)
    with pytest.raises(openai.APIError) as caught:
        for _ in oai.chat.completions.create(model=model, messages=QUESTION, max_tokens=8, stream=True):
            pass
    oai.close()
    assert "[redacted]" in caught.value.body["message"]
    oll = requests.post(down_front + "/api/chat", json={"model": model, "messages": QUESTION}, timeout=30)
    assert "[redacted]" in oll.text
    assert_no_secret(str(caught.value.body), oll.text, down_front.log_text())
