"""OllamaBackend against a scripted Ollama on a loopback port: the exact requests the official client sends for each
translated field, how NDJSON parts become events, forced tool calls, error mapping, failover and model lists."""
import base64
import dataclasses
import json
import logging
import threading

import httpx
import ollama
import pytest
from werkzeug.wrappers import Response

from harness.servers import free_port
from shim import generation as g
from shim.backends import toolcalls
from shim.backends.httpx_transport import CANCEL, LeanClient
from shim.backends.ollama_upstream import OllamaBackend, _client
from shim.backends.toolcalls import forced_schema
from shim.config import BackendConfig
from shim.errors import BackendUnavailable, Cancelled, ModelNotFound, ShimError, Unsupported, UpstreamError
from shim.protocols import ollama as protocol
from shim.protocols.options import parse_think
from shim.streaming import HEARTBEAT, PAUSE, ndjson_line
from tests.fake_http import FakeHTTP
from tests.fake_upstream import FakeUpstream, dying, error_json, ndjson, ollama_answer
from tests.fakes import choice_of
from tests.support import HI
from tests.support import TIME_TOOL as TIME
from tests.support import WEATHER_TOOL as WEATHER
from tests.support import (BEAT_FRONTS, assert_silence_beats_through_the_app, events_until_error, finishes,
                           heartbeats_between, read_whole, run, text_of)

KEY = "ollama-SECRET-key-0123456789"
STAMP = "2024-05-01T12:00:00.000000Z"


@pytest.fixture(scope="module")
def servers():
    with FakeUpstream() as first, FakeUpstream() as second:
        yield first, second


@pytest.fixture
def up(servers):
    """The first fake Ollama, with a fresh record; answers a short chat (or generate) unless told otherwise."""
    for server in servers:
        server.requests.clear()
        server.handler = default_answer
    return servers[0]


@pytest.fixture
def up2(servers, up):
    return servers[1]


def default_answer(record):
    if record.path == "/api/generate":
        return ndjson(gen_part("Hi"), gen_done())
    return ndjson(chat_part("Hi"), chat_done())


def chat_part(content="", **fields):
    return {"model": "m", "created_at": STAMP, "message": {"role": "assistant", "content": content, **fields},
            "done": False}


def chat_done(reason="stop", **fields):
    return {"model": "m", "created_at": STAMP, "message": {"role": "assistant", "content": ""}, "done": True,
            "done_reason": reason, "total_duration": 5_000, "load_duration": 1_000, "prompt_eval_count": 7,
            "prompt_eval_duration": 1_500, "eval_count": 3, "eval_duration": 2_000, **fields}


def gen_part(response):
    return {"model": "m", "created_at": STAMP, "response": response, "done": False}


def gen_done(**fields):
    return {"model": "m", "created_at": STAMP, "response": "", "done": True, "done_reason": "stop",
            "context": [1, 2, 3], "prompt_eval_count": 4, "eval_count": 1, **fields}


def make_backend(*servers, urls=None, read_timeout=10.0):
    urls = urls or tuple(s.url for s in servers)
    return OllamaBackend(BackendConfig(name="oll", type="ollama", urls=urls, api_key=KEY,
                                       headers={"X-Org": "acme"}, connect_timeout=2.0, read_timeout=read_timeout))


def chat(**fields):
    fields.setdefault("messages", HI)
    return g.GenerationRequest(model="m", **fields)


def calls_of(events):
    return [e for e in events if isinstance(e, g.ToolCallDelta)]


# ---------------------------------------------------------------- the request sent upstream

def test_minimal_chat(up):
    events = run(make_backend(up), chat())
    assert [(r.method, r.path) for r in up.requests] == [("POST", "/api/chat")]
    body = up.requests[0].json
    assert body.pop("tools", None) in (None, [])
    assert body == {"model": "m", "stream": True, "options": {}, "messages": [{"role": "user", "content": "hi"}]}
    assert text_of(events) == "Hi"


def test_options_from_sampling_over_the_clients_own_options(up):
    sampling = g.Sampling(temperature=0.0, top_p=0.9, top_k=20, min_p=0.05, typical_p=0.7, seed=3, repeat_penalty=1.1,
                          repeat_last_n=32, presence_penalty=0.5, frequency_penalty=0.25)
    run(make_backend(up), chat(sampling=sampling, max_tokens=12, stop=("\n\n", "END"), num_ctx=2048,
                               backend_options={"mirostat": 1, "num_gpu": 0, "temperature": 0.9}))
    assert up.requests[0].json["options"] == {
        "mirostat": 1, "num_gpu": 0, "temperature": 0.0, "top_p": 0.9, "top_k": 20, "min_p": 0.05,
        "typical_p": 0.7, "seed": 3, "repeat_penalty": 1.1, "repeat_last_n": 32, "presence_penalty": 0.5,
        "frequency_penalty": 0.25, "num_predict": 12, "stop": ["\n\n", "END"], "num_ctx": 2048}


def test_raw_options_alone_pass_through(up):
    run(make_backend(up), chat(backend_options={"num_predict": 5, "stop": ["x"], "temperature": 0.3}))
    assert up.requests[0].json["options"] == {"num_predict": 5, "stop": ["x"], "temperature": 0.3}


@pytest.mark.parametrize("fmt, expected", [
    (g.ResponseFormat("json"), "json"),
    (g.ResponseFormat("json_schema", {"type": "object", "properties": {"age": {"type": "integer"}}}, "p"),
     {"type": "object", "properties": {"age": {"type": "integer"}}}),
])
def test_format(up, fmt, expected):
    run(make_backend(up), chat(response_format=fmt))
    assert up.requests[0].json["format"] == expected


@pytest.mark.parametrize("think", [True, False, "high"])
def test_think(up, think):
    run(make_backend(up), chat(think=parse_think({"think": think})))
    assert up.requests[0].json["think"] == think


@pytest.mark.parametrize("keep_alive", [0, 300.0, -1])
def test_keep_alive(up, keep_alive):
    run(make_backend(up), chat(keep_alive=keep_alive))
    assert up.requests[0].json["keep_alive"] == keep_alive


def test_unset_fields_are_not_sent(up):
    run(make_backend(up), chat())
    assert not {"format", "think", "keep_alive", "logprobs", "top_logprobs"} & set(up.requests[0].json)


def test_logprobs(up):
    run(make_backend(up), chat(logprobs=True, top_logprobs=2))
    body = up.requests[0].json
    assert body["logprobs"] is True and body["top_logprobs"] == 2


def test_tools_images_tool_calls_and_tool_results(up):
    call = g.ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    messages = (g.Message("system", "Be brief."), g.Message("user", "Weather here?", images=(b"\x89PNG", b"jpg")),
                g.Message("assistant", "", tool_calls=(call,)),
                g.Message("tool", "18C", tool_call_id="call_1", name="get_weather"))
    run(make_backend(up), chat(messages=messages, tools=(WEATHER, TIME)))
    body = up.requests[0].json
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather here?",
         "images": [base64.b64encode(b"\x89PNG").decode(), base64.b64encode(b"jpg").decode()]},
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18C", "tool_name": "get_weather", "tool_call_id": "call_1"},
    ]
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                          "parameters": dict(WEATHER.parameters)}},
        {"type": "function", "function": {"name": "get_time", "description": "The time now",
                                          "parameters": {"type": "object", "properties": {}}}}]


def contains(whole, part):
    """Whether whole holds everything part does: its keys with such values, its lists item by item."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(k in whole and contains(whole[k], v) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and len(whole) == len(part) and all(map(contains, whole, part))
    return whole == part


NESTED = g.Tool("book", "Book a trip", {
    "type": "object", "required": ["trip"], "additionalProperties": False,
    "properties": {"trip": {"type": "object", "description": "Where and when",
                            "properties": {"city": {"type": "string"}, "nights": {"type": "integer", "minimum": 1}},
                            "required": ["city"]}}})


@pytest.mark.parametrize("request_", [
    chat(messages=(g.Message("system", "Be brief."), g.Message("user", "Trip?", images=(b"\x89PNG",)),
                   g.Message("assistant", "", tool_calls=(g.ToolCall("c1", "book", '{"trip": {"city": "Oslo"}}'),),
                             reasoning="Book it."),
                   g.Message("tool", "booked", tool_call_id="c1", name="book")),
         tools=(NESTED, WEATHER), think=parse_think({"think": "high"}), logprobs=True, top_logprobs=3,
         keep_alive=300.0, max_tokens=9, stop=("END",), sampling=g.Sampling(seed=4, temperature=0.5),
         response_format=g.ResponseFormat("json_schema", {"type": "object"})),
    g.GenerationRequest(model="m", prompt="Hello", system="Be kind.", suffix="Bye", context=(5, 6), images=(b"i",),
                        raw=True, response_format=g.ResponseFormat("json")),
], ids=["chat", "generate"])
def test_what_is_sent_holds_all_the_official_client_sends_for_the_same_fields(up, request_):
    backend = make_backend(up)
    run(backend, request_)
    sent = up.requests[0]
    fields = {k: v for k, v in sent.json.items() if k != "stream"}  # both stream
    official = ollama.Client(host=up.url)
    list(getattr(official, sent.path.rsplit("/", 1)[1])(**fields, stream=True))
    assert up.requests[1].path == sent.path and contains(sent.json, up.requests[1].json)
    if sent.path == "/api/chat":  # what the official types drop, Ollama reads
        assert sent.json["messages"][3]["tool_call_id"] == "c1" and "tool_call_id" not in up.requests[1].json["messages"][3]
        assert sent.json["tools"][0]["function"]["parameters"] == dict(NESTED.parameters)
        assert up.requests[1].json["tools"][0]["function"]["parameters"]["properties"]["trip"] == {
            "type": "object", "description": "Where and when"}


def test_tool_call_arguments_that_are_not_an_object_become_empty(up):
    calls = (g.ToolCall("a", "get_time", "not json"), g.ToolCall("b", "get_time", "[1]"))
    run(make_backend(up), chat(messages=HI + (g.Message("assistant", "", tool_calls=calls),), tools=(TIME,)))
    assert [c["function"]["arguments"] for c in up.requests[0].json["messages"][1]["tool_calls"]] == [{}, {}]


@pytest.mark.parametrize("choice", [None, "auto"])
def test_auto_tool_choice_sends_the_tools(up, choice):
    run(make_backend(up), chat(tools=(WEATHER,), tool_choice=choice_of(choice)))
    body = up.requests[0].json
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"] and "format" not in body


def test_tool_choice_none_sends_no_tools(up):
    run(make_backend(up), chat(tools=(WEATHER,), tool_choice=choice_of("none")))
    body = up.requests[0].json
    assert not body.get("tools") and "format" not in body


def test_generate_with_system_suffix_context_and_images(up):
    events = run(make_backend(up), g.GenerationRequest(model="m", prompt="Hello", system="Be kind.", suffix="Bye",
                                                       context=(5, 6), images=(b"img",), max_tokens=4))
    assert up.requests[0].path == "/api/generate"
    assert up.requests[0].json == {"model": "m", "stream": True, "options": {"num_predict": 4}, "prompt": "Hello",
                                   "suffix": "Bye", "system": "Be kind.", "context": [5, 6],
                                   "images": [base64.b64encode(b"img").decode()]}
    assert text_of(events) == "Hi"
    assert finishes(events)[0].context == (1, 2, 3) and finishes(events)[0].usage == g.Usage(4, 1)


def test_generate_raw(up):
    run(make_backend(up), g.GenerationRequest(model="m", prompt="<|im_start|>user\nHi", raw=True))
    assert up.requests[0].json == {"model": "m", "stream": True, "options": {}, "prompt": "<|im_start|>user\nHi",
                                   "raw": True}


def test_n_choices_are_n_requests_with_consecutive_seeds(up):
    events = run(make_backend(up), chat(n=2, sampling=g.Sampling(seed=10)))
    assert [r.json["options"]["seed"] for r in up.requests] == [10, 11]
    choices = g.collect(events)
    assert [(c.index, c.text, c.finish.reason) for c in choices] == [(0, "Hi", "stop"), (1, "Hi", "stop")]
    assert g.total_usage(choices) == g.Usage(7, 6)


def test_authorization_and_extra_headers(up):
    backend = make_backend(up)
    run(backend, chat())
    up.handler = lambda r: Response(json.dumps({"models": []}), mimetype="application/json")
    backend.models()
    for record in up.requests:
        assert record.headers["authorization"] == f"Bearer {KEY}" and record.headers["x-org"] == "acme"
        assert record.headers["user-agent"].startswith("ollama-python/")


def test_logit_bias_is_refused_before_any_request(up):
    with pytest.raises(Unsupported) as err:
        next(make_backend(up).generate(chat(sampling=g.Sampling(logit_bias={1: 2.0})), g.Cancel()))
    assert err.value.param == "logit_bias" and err.value.status == 400
    assert up.requests == []


# ---------------------------------------------------------------- NDJSON parts to events

def test_text_thinking_and_final_counts(up):
    up.handler = lambda r: ndjson(chat_part("", thinking="Hmm. "), chat_part("Hello"), chat_part(" you"),
                                  chat_done("length"))
    events = run(make_backend(up), chat())
    assert events[0] == g.Accepted()
    assert events[1:4] == [g.ReasoningDelta("Hmm. "), g.TextDelta("Hello"), g.TextDelta(" you")]
    assert events[4:] == [g.Finish("length", 0, g.Usage(7, 3, 0, 1), g.Timings(5_000, 1_000, 1_500, 2_000))]


def test_logprobs_are_read(up):
    logprobs = [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105],
                 "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                                  {"token": "Yo", "logprob": -3.0, "bytes": [89, 111]}]}]
    up.handler = lambda r: ndjson({**chat_part("Hi"), "logprobs": logprobs}, chat_done())
    delta = run(make_backend(up), chat(logprobs=True, top_logprobs=2))[1]
    [read] = delta.logprobs
    assert (read.token, read.logprob) == ("Hi", -0.25)
    assert [(t.token, t.logprob) for t in read.top] == [("Hi", -0.25), ("Yo", -3.0)]


def test_logprob_bytes_survive(up):
    logprobs = [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": []}]
    up.handler = lambda r: ndjson({**chat_part("Hi"), "logprobs": logprobs}, chat_done())
    delta = run(make_backend(up), chat(logprobs=True))[1]
    assert delta.logprobs[0].bytes == (72, 105)


def test_tool_calls_become_tool_call_deltas_with_json_arguments(up):
    calls = [{"function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}},
             {"function": {"name": "get_time", "arguments": {}}}]
    up.handler = lambda r: ndjson(chat_part("", tool_calls=calls), chat_done("stop"))
    events = run(make_backend(up), chat(tools=(WEATHER, TIME)))
    deltas = calls_of(events)
    assert [(d.call.name, json.loads(d.call.arguments), d.index, d.position) for d in deltas] == [
        ("get_weather", {"city": "Paris", "days": 2}, 0, 0), ("get_time", {}, 0, 1)]
    assert deltas[0].call.arguments == '{"city": "Paris", "days": 2}'
    assert all(d.call.id.startswith("call_") for d in deltas) and deltas[0].call.id != deltas[1].call.id
    assert finishes(events)[0].reason == "tool_calls"


@pytest.mark.parametrize("reason", ["stop", "length", "load"])
def test_done_reason_passes_through(up, reason):
    up.handler = lambda r: ndjson(chat_part("x"), chat_done(reason))
    assert finishes(run(make_backend(up), chat()))[0].reason == reason


def test_a_done_part_without_counts_gives_zeros(up):
    up.handler = lambda r: ndjson({"model": "m", "created_at": STAMP, "message": {"role": "assistant", "content": "x"},
                                   "done": True})
    events = run(make_backend(up), chat())
    assert text_of(events) == "x"
    assert finishes(events) == [g.Finish("stop", 0, g.Usage(0, 0), g.Timings())]


def test_cancel_stops_reading(up):
    up.handler = lambda r: ndjson(chat_part("a"), chat_part("b"), chat_part("c"), chat_done())
    cancel = g.Cancel()
    events = []
    for event in make_backend(up).generate(chat(), cancel):
        events.append(event)
        if isinstance(event, g.TextDelta):
            cancel.set()
    assert text_of(events) == "a" and not finishes(events)


def test_a_shim_framed_stream_with_unicode_line_separators_reads_whole(up):
    text = "one\u2028two\u2029three\x85four"
    body = ndjson_line(chat_part(text)) + ndjson_line(chat_done())
    up.handler = lambda r: Response(body, mimetype="application/x-ndjson")
    assert text_of(run(make_backend(up), chat())) == text


def test_the_official_client_is_built_as_ollama_builds_it_but_over_lean_client():
    """The hook replaces only the httpx class: nothing else ollama.Client sets up may be skipped (an upgrade)."""
    timeout, auth = httpx.Timeout(3.0, connect=1.0), httpx.BasicAuth("u", "p")
    ours = _client("http://u:p@h:1", timeout, {"X-Org": "acme"})
    theirs = ollama.Client(host="http://h:1", timeout=timeout, headers={"X-Org": "acme"}, auth=auth,
                           transport=ours._client._transport, follow_redirects=False)
    assert isinstance(ours, ollama.Client) and set(vars(ours)) == set(vars(theirs))
    assert type(ours._client) is LeanClient and type(theirs._client) is httpx.Client
    settings = [(c.base_url, c.headers.raw, c.timeout, c.follow_redirects, c.auth._auth_header, c.trust_env)
                for c in (ours._client, theirs._client)]
    assert settings[0] == settings[1]


def test_a_redirect_is_not_followed_and_the_error_says_where_it_points(up, up2):
    """As the other upstream backends: the configured URL should be where the upstream is."""
    up.handler = lambda r: Response(status=307, headers={"Location": f"{up2.url}{r.path}"})
    with pytest.raises(UpstreamError, match=f"307: a redirect to {up2.url}/api/chat; set the backend's url to it"):
        run(make_backend(up), chat())
    assert up2.requests == []


def test_no_log_line_per_request(up, caplog):
    """httpx logs each request at INFO, shim's default level; no other backend writes a line per call."""
    caplog.set_level(logging.INFO)
    run(make_backend(up), chat())
    assert [r.getMessage() for r in caplog.records if r.name.startswith("httpx")] == []


def test_a_second_request_for_a_path_parses_no_url(up, monkeypatch):
    """The official client is built over LeanClient (the hook must survive an ollama upgrade): URLs are kept."""
    backend = make_backend(up)
    run(backend, chat())
    parsed = []
    real = httpx._urlparse.urlparse
    monkeypatch.setattr(httpx._urlparse, "urlparse", lambda *a, **k: parsed.append(a) or real(*a, **k))
    assert text_of(run(backend, chat())) == "Hi"
    assert parsed == [] and [r.path for r in up.requests] == ["/api/chat"] * 2


def test_cookies_an_upstream_sets_are_not_sent_back(up):
    """As shim's own client, used by the other upstream backends: no cookie jar."""
    up.handler = lambda r: with_cookie(default_answer(r))
    backend = make_backend(up)
    run(backend, chat())
    run(backend, chat())
    assert [r.headers.get("cookie") for r in up.requests] == [None, None]


def test_an_answer_header_outside_ascii_is_read(up):
    """HTTP headers are bytes (shim's client reads them as latin-1): httpx is given them as bytes, not re-encoded."""
    def answer(record):
        response = default_answer(record)
        response.headers["X-Served-By"] = "caf\u00e9"
        return response
    up.handler = answer
    assert text_of(run(make_backend(up), chat())) == "Hi"


def with_cookie(response):
    response.set_cookie("session", "abc")
    return response


def test_an_ollama_framed_stream_with_unicode_line_separators_reads_whole(up):
    """Ollama (Go's encoding/json) leaves U+0085 unescaped inside JSON strings, and another server might U+2028."""
    text = "one\u2028two\u2029three\x85four"
    body = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in (chat_part(text), chat_done()))
    up.handler = lambda r: Response(body.encode(), mimetype="application/x-ndjson")
    assert text_of(run(make_backend(up), chat())) == text

# ---------------------------------------------------------------- a whole answer, for a client that reads it whole

LOGPROBS = [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105],
             "top_logprobs": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105]}]}]
WHOLE_CASES = {
    "text-counts-durations": ([chat_part("Hello"), chat_part(" you"), chat_done("length")], {}),
    "thinking": ([chat_part("", thinking="Hmm."), chat_part("", thinking=" Yes."), chat_part("Ok"), chat_done()], {}),
    "tool-calls": ([chat_part("", tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                                              {"function": {"name": "get_time", "arguments": {}}}]), chat_done()],
                   {"tools": (WEATHER, TIME)}),
    "logprobs": ([{**chat_part("Hi"), "logprobs": LOGPROBS}, chat_done()], {"logprobs": True, "top_logprobs": 1}),
    "forced-tool": ([chat_part('{"name": "get_time", '), chat_part('"arguments": {}}'), chat_done()],
                    {"tools": (WEATHER, TIME), "tool_choice": choice_of("get_time")}),
    "generate-context": ([gen_part("Hi"), gen_part(" there"), gen_done(total_duration=9_000, eval_duration=4_000)],
                         {"messages": None, "prompt": "p"}),
    "two-choices": ([chat_part("a"), chat_part("b"), chat_done()], {"n": 2}),
}


@pytest.mark.parametrize("case", WHOLE_CASES)
def test_a_whole_answer_reads_as_its_stream_does_and_is_asked_for_without_streaming(up, case, monkeypatch):
    parts, fields = WHOLE_CASES[case]
    monkeypatch.setattr(toolcalls, "new_call_id", lambda: "call_x")  # the same ids both ways
    up.handler = lambda r: ollama_answer(r, *parts)
    streamed = run(make_backend(up), chat(**fields))
    whole = run(make_backend(up), chat(stream=False, **fields))
    # A whole answer's thinking is not split into tokens: how many it took is not known (Ollama does not say).
    expected = [dataclasses.replace(c, finish=dataclasses.replace(c.finish, usage=dataclasses.replace(
        c.finish.usage, reasoning_tokens=0))) for c in read_whole(streamed)]
    assert read_whole(whole) == expected
    assert [f.timings for f in finishes(whole)] == [f.timings for f in finishes(streamed)], "Ollama's own durations"
    assert read_whole(whole)[0].text or read_whole(whole)[0].tool_calls, "the case has content to compare"
    sent = [r.json for r in up.requests]
    half = len(sent) // 2
    assert [b["stream"] for b in sent] == [True] * half + [False] * half
    assert [{**b, "stream": False} for b in sent[:half]] == sent[half:]


def test_a_whole_answers_thinking_counts_no_reasoning_tokens_it_cannot_know(up):
    up.handler = lambda r: ollama_answer(r, chat_part("", thinking="Hmm."), chat_part("Ok"), chat_done())
    assert finishes(run(make_backend(up), chat()))[0].usage.reasoning_tokens == 1
    assert finishes(run(make_backend(up), chat(stream=False)))[0].usage.reasoning_tokens == 0


@pytest.mark.parametrize("body, status, message", [
    ({"error": "llama runner process has terminated"}, 500, "llama runner process has terminated"),
    ({"error": "boom"}, 200, "boom"),
    ("<html>Bad gateway</html>", 200, "cannot read"),
    ([{"done": True}], 200, "cannot read"),
    ({"model": "m", "message": "hi", "done": True}, 200, "cannot read"),
    ({"model": "m", "message": {"role": "assistant", "content": "cut"}, "done": False}, 200, "before it was done"),
    ({"model": "m", "message": {"role": "assistant", "content": 5}, "done": True}, 200, "text is not a string"),
    ({"model": "m", "message": {"role": "assistant", "content": "", "thinking": ["a"]}, "done": True}, 200,
     "thinking is not a string"),
    (chat_done(eval_count="3"), 200, "eval_count is not a whole number"),
    (chat_done(total_duration=1.5), 200, "total_duration is not a whole number"),
    (chat_done(done_reason=7), 200, "done_reason is not a string"),
    (chat_done(context=["a"]), 200, "context is not a list of whole numbers"),
    (chat_done(message={"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f",
                                                                                         "arguments": "{}"}}]}),
     200, "arguments not a JSON object"),
    (chat_done(message={"role": "assistant", "content": "", "tool_calls": ["f"]}), 200, "cannot read"),
    (chat_done(logprobs=[{"token": 1, "logprob": -0.5}]), 200, "logprob not a number"),
    (chat_done(logprobs=[{"token": "a", "logprob": "-0.5"}]), 200, "logprob not a number"),
], ids=["error-500", "error-in-200", "not-json", "not-an-object", "message-not-an-object", "not-done", "text-a-number",
        "thinking-a-list", "count-a-string", "duration-a-float", "reason-a-number", "context-of-strings",
        "arguments-a-string", "call-a-string", "logprob-token-a-number", "logprob-a-string"])
def test_a_whole_answer_that_is_an_error_or_unreadable_is_an_upstream_error(up, body, status, message):
    text = body if isinstance(body, str) else json.dumps(body)
    up.handler = lambda r: Response(text, status=status, mimetype="application/json")
    with pytest.raises(UpstreamError) as err:
        run(make_backend(up), chat(stream=False))
    assert err.value.status == 502 and message in err.value.message


def test_a_whole_answer_broken_off_is_an_upstream_error_not_an_unreachable_upstream(up):
    up.handler = lambda r: dying(r, [b'{"model": "m", "message": {"role": "assis'], "application/json")
    with pytest.raises(UpstreamError) as err:
        run(make_backend(up), chat(stream=False))
    assert err.value.status == 502 and "broke off its answer" in err.value.message


@pytest.fixture
def stalling():
    """A fake Ollama that answers /api/chat only after 5 s (a long prefill), and sees a client hang up."""
    with FakeHTTP() as upstream:
        server = upstream.server()
        upstream.add("POST", server.url + "/api/chat", body=json.dumps(chat_done()), content_type="application/json",
                     stall=5)
        yield server


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_client_that_leaves_while_ollama_works_closes_the_upstream_connection(stalling, stream):
    cancel = g.Cancel()
    threading.Timer(0.1, cancel.set).start()
    with pytest.raises(Cancelled):
        run(make_backend(stalling), chat(stream=stream), cancel)
    assert stalling.hung_up(timeout=2), "Ollama sees its client go, and stops generating"


def test_a_whole_answer_is_still_bound_by_the_read_timeout(stalling):
    with pytest.raises(BackendUnavailable):
        run(make_backend(stalling, read_timeout=0.3), chat(stream=False))


def test_calls_outside_a_generation_wait_without_a_cancel_flag(stalling):
    """The flag is the generation's own: it does not leak into the next call of the same thread."""
    cancel = g.Cancel()
    threading.Timer(0.1, cancel.set).start()
    with pytest.raises(Cancelled):
        run(make_backend(stalling), chat(stream=False), cancel)
    assert CANCEL.get() is None


# ---------------------------------------------------------------- silences: heartbeats without a feeder greenlet

@pytest.fixture
def paced():
    """A fake Ollama whose /api/chat answer is given as pieces and pauses (see tests.fake_http.Answer)."""
    with FakeHTTP() as upstream:
        server = upstream.server()

        def answer(pieces, **modes):
            upstream.add("POST", server.url + "/api/chat", body=pieces, content_type="application/x-ndjson", **modes)
        server.answer = answer
        yield server


def line(part):
    return json.dumps(part) + "\n"


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_a_silent_stream_yields_heartbeats_at_the_interval_then_the_rest(paced, framing):
    paced.answer([line(chat_part("first")), 0.35, line(chat_part("second")) + line(chat_done())], framing=framing)
    events = run(make_backend(paced, read_timeout=5.0), chat(heartbeat_seconds=0.1))
    assert heartbeats_between(events) == [g.Accepted, g.TextDelta, 3, g.TextDelta, g.Finish]
    assert text_of(events) == "firstsecond" and PAUSE in events


def test_a_stream_yields_no_heartbeat_and_no_pause_without_an_interval(paced):
    paced.answer([line(chat_part("first")), 0.25, line(chat_done())], framing="chunked")
    events = run(make_backend(paced), chat())
    assert HEARTBEAT not in events and PAUSE not in events and text_of(events) == "first"


def test_a_silence_before_the_first_part_is_waited_out_before_anything_is_yielded(paced):
    """The first part is read before Accepted (a failure there can fail over, and gets its own status): no beat."""
    paced.answer([0.35, line(chat_part("first")) + line(chat_done())], framing="chunked")
    events = run(make_backend(paced, read_timeout=5.0), chat(heartbeat_seconds=0.1))
    assert heartbeats_between(events) == [g.Accepted, g.TextDelta, g.Finish]


def test_the_read_timeout_counts_the_whole_silence_between_heartbeats(paced):
    paced.answer([line(chat_part("first")), 5, line(chat_done())], framing="chunked")
    events, err, seconds = events_until_error(
        make_backend(paced, read_timeout=0.45).generate(chat(heartbeat_seconds=0.1), g.Cancel()), UpstreamError)
    assert 0.45 <= seconds < 2 and "broke off" in err.message
    assert heartbeats_between(events) == [g.Accepted, g.TextDelta, 4]


def test_each_choice_beats_through_its_own_silence(paced):
    for text in ("one", "two"):
        paced.answer([line(chat_part(text)), 0.25, line(chat_done())], framing="chunked")
    events = run(make_backend(paced, read_timeout=5.0), chat(n=2, heartbeat_seconds=0.1))
    assert heartbeats_between(events) == [g.Accepted, g.TextDelta, 2, g.Finish, g.TextDelta, 2, g.Finish]
    assert [e.index for e in events if isinstance(e, g.TextDelta)] == [0, 1]


def test_a_client_gone_during_a_silence_closes_the_upstream_connection(paced):
    gate = threading.Event()
    paced.answer([line(chat_part("first")), gate, line(chat_done())], framing="chunked")
    paced.answer([line(chat_part("again")), line(chat_done())])
    backend = make_backend(paced, read_timeout=5.0)
    events = backend.generate(chat(heartbeat_seconds=0.05), g.Cancel())
    assert [type(next(events)) for _ in range(2)] == [g.Accepted, g.TextDelta]
    assert next(e for e in events if e is not PAUSE) is HEARTBEAT
    events.close()
    gate.set()
    assert text_of(run(backend, chat())) == "again"
    assert paced.connections == 2, "the half-read connection was not reused"


SILENT_THEN_DONE = [line(chat_part("ALPHA")), 0.35, line(chat_part("OMEGA")) + line(chat_done())]


@pytest.mark.parametrize("front", BEAT_FRONTS)
def test_a_silent_upstream_stream_gets_heartbeat_frames_without_a_feeder_greenlet(paced, monkeypatch, front):
    paced.answer(SILENT_THEN_DONE, framing="chunked")
    assert_silence_beats_through_the_app(make_backend(paced), front, monkeypatch)


# ---------------------------------------------------------------- forced tool calls

@pytest.mark.parametrize("choice, tools", [("required", (WEATHER,)), ("get_weather", (WEATHER, TIME)),
                                           ("required", (WEATHER, TIME))])
def test_forced_tool_choice_becomes_a_format_schema_and_the_answer_a_tool_call(up, choice, tools):
    up.handler = lambda r: ndjson(chat_part('{"name": "get_weather", '), chat_part('"arguments": {"city": "Paris"}}'),
                                  chat_done("stop"))
    events = run(make_backend(up), chat(tools=tools, tool_choice=choice_of(choice)))
    body = up.requests[0].json
    assert body["format"] == forced_schema(tools, choice_of(choice))
    assert not body.get("tools")
    assert text_of(events) == ""
    [delta] = calls_of(events)
    assert delta.call.name == "get_weather" and json.loads(delta.call.arguments) == {"city": "Paris"}
    assert delta.call.id.startswith("call_") and (delta.index, delta.position) == (0, 0)
    assert finishes(events) == [g.Finish("tool_calls", 0, g.Usage(7, 3), g.Timings(5_000, 1_000, 1_500, 2_000))]


def test_forced_schema_shapes():
    assert forced_schema((WEATHER,), choice_of("required")) == {
        "type": "object", "required": ["name", "arguments"],
        "properties": {"name": {"const": "get_weather"}, "arguments": dict(WEATHER.parameters)}}
    both = forced_schema((WEATHER, TIME), choice_of("required"))
    assert [o["properties"]["name"]["const"] for o in both["anyOf"]] == ["get_weather", "get_time"]
    assert forced_schema((WEATHER, TIME), choice_of("get_time"))["properties"]["name"] == {"const": "get_time"}


def test_forced_tool_choice_answer_that_is_not_a_call_is_an_upstream_error(up):
    up.handler = lambda r: ndjson(chat_part("I would rather not."), chat_done())
    with pytest.raises(UpstreamError, match="forced tool call is not valid JSON"):
        run(make_backend(up), chat(tools=(WEATHER,), tool_choice=choice_of("required")))


def test_forced_tool_call_cut_off_by_num_predict_is_a_partial_call_with_reason_length(up):
    up.handler = lambda r: ndjson(chat_part('{"name": "get_weather", '), chat_part('"arguments": {"city": "Pa'),
                                  chat_done("length"))
    events = run(make_backend(up), chat(tools=(WEATHER,), tool_choice=choice_of("required"), max_tokens=12))
    assert text_of(events) == ""
    [delta] = calls_of(events)
    assert (delta.call.name, delta.call.arguments, delta.call.partial) == ("get_weather", '{"city": "Pa', True)
    assert [f.reason for f in finishes(events)] == ["length"]


def test_forced_tool_call_cut_off_inside_its_name_is_nothing(up):
    up.handler = lambda r: ndjson(chat_part('{"name": "get_w'), chat_done("length"))
    events = run(make_backend(up), chat(tools=(WEATHER,), tool_choice=choice_of("required"), max_tokens=4))
    assert text_of(events) == "" and calls_of(events) == []
    assert [f.reason for f in finishes(events)] == ["length"]


def test_parallel_tool_calls_false_keeps_only_the_first_call(up):
    calls = [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
             {"function": {"name": "get_time", "arguments": {}}}]
    up.handler = lambda r: ndjson(chat_part("", tool_calls=calls), chat_done())
    events = run(make_backend(up), chat(tools=(WEATHER, TIME), parallel_tool_calls=False))
    assert [d.call.name for d in calls_of(events)] == ["get_weather"]
    assert len(calls_of(run(make_backend(up), chat(tools=(WEATHER, TIME))))) == 2


def test_forced_tool_choice_for_every_choice(up):
    up.handler = lambda r: ndjson(chat_part('{"name": "get_time", "arguments": {}}'), chat_done())
    events = run(make_backend(up), chat(tools=(TIME,), tool_choice=choice_of("get_time"), n=2))
    assert [(d.index, d.call.name) for d in calls_of(events)] == [(0, "get_time"), (1, "get_time")]
    assert [f.reason for f in finishes(events)] == ["tool_calls", "tool_calls"]


# ---------------------------------------------------------------- errors

def first_error(backend, request):
    """The error the generation raises, and the events it yielded before it."""
    events = []
    with pytest.raises(ShimError) as err:
        for event in backend.generate(request, g.Cancel()):
            events.append(event)
    return err.value, events


def test_404_model_not_found(up):
    up.handler = lambda r: error_json(404, 'model "m" not found, try pulling it first')
    err, _ = first_error(make_backend(up), chat())
    assert isinstance(err, ModelNotFound) and err.status == 404


def test_404_without_not_found_is_an_upstream_error(up):
    up.handler = lambda r: Response("404 page not here", status=404)
    err, _ = first_error(make_backend(up), chat())
    assert isinstance(err, UpstreamError) and "404" in err.message


def test_500_is_an_upstream_error(up):
    up.handler = lambda r: error_json(500, "llama runner process has terminated")
    err, events = first_error(make_backend(up), chat())
    assert isinstance(err, UpstreamError) and err.status == 502
    assert "500" in err.message and "llama runner process has terminated" in err.message
    assert text_of(events) == ""


@pytest.mark.parametrize("handler", [lambda r: error_json(500, "boom"),
                                     lambda r: error_json(404, 'model "m" not found')], ids=["500", "404"])
def test_errors_before_any_output_come_before_accepted(up, handler):
    up.handler = handler
    with pytest.raises(ShimError):
        next(make_backend(up).generate(chat(), g.Cancel()))


def test_unreachable_is_backend_unavailable():
    err, _ = first_error(make_backend(urls=(f"http://127.0.0.1:{free_port()}",)), chat())
    assert isinstance(err, BackendUnavailable) and err.status == 503 and "unreachable" in err.message


@pytest.mark.parametrize("parts", [[{"error": "out of memory"}], [chat_part("Hel"), {"error": "out of memory"}]],
                         ids=["first", "after-text"])
def test_in_stream_error_is_an_upstream_error(up, parts):
    up.handler = lambda r: ndjson(*parts)
    err, events = first_error(make_backend(up), chat())
    assert isinstance(err, UpstreamError) and "out of memory" in err.message
    assert text_of(events) == ("Hel" if len(parts) == 2 else "")


def test_a_part_of_the_wrong_shape_after_text_is_an_upstream_error_naming_it(up):
    up.handler = lambda r: ndjson(chat_part("Hel"), chat_part(["lo"]))
    err, events = first_error(make_backend(up), chat())
    assert isinstance(err, UpstreamError) and "text is not a string" in err.message and text_of(events) == "Hel"


def test_garbage_after_text_is_an_upstream_error(up):
    up.handler = lambda r: Response(json.dumps(chat_part("Hel")) + "\n{not json\n", mimetype="application/x-ndjson")
    err, events = first_error(make_backend(up), chat())
    assert isinstance(err, UpstreamError) and text_of(events) == "Hel"


@pytest.mark.parametrize("body", ["{not json\n", "<html>It works</html>\n"])
def test_garbage_first_line_is_an_upstream_error(up, body):
    up.handler = lambda r: Response(body, mimetype="application/x-ndjson")
    with pytest.raises(UpstreamError):
        run(make_backend(up), chat())


def test_connection_dying_mid_stream_is_an_upstream_error(up):
    line = json.dumps(chat_part("part")).encode() + b"\n"
    up.handler = lambda r: dying(r, [line, line], "application/x-ndjson")
    err, events = first_error(make_backend(up), chat())
    assert isinstance(err, UpstreamError) and "broke off the stream" in err.message
    assert text_of(events) == "partpart"


def test_stream_ending_without_done_is_an_upstream_error(up):
    up.handler = lambda r: ndjson(chat_part("trunc"))
    with pytest.raises(UpstreamError):
        run(make_backend(up), chat())


def test_errors_and_logs_never_carry_the_key(up, caplog):
    caplog.set_level(logging.DEBUG)
    for handler in (lambda r: error_json(500, "x"), lambda r: error_json(400, "bad"), lambda r: ndjson({"error": "e"})):
        up.handler = handler
        err, _ = first_error(make_backend(up), chat())
        assert KEY not in err.message
    err, _ = first_error(make_backend(urls=(f"http://127.0.0.1:{free_port()}",)), chat())
    assert KEY not in err.message and KEY not in caplog.text


URL_SECRET = "pw-SECRET-4444"


def with_credentials(server):
    return server.url.replace("http://", f"http://user:{URL_SECRET}@")


def assert_no_secret(err, caplog):
    for text in (err.message, str(err), repr(err), caplog.text, *(str(r.args) for r in caplog.records)):
        assert KEY not in text and KEY[:12] not in text and URL_SECRET not in text, text


@pytest.mark.parametrize("handler", [
    lambda r: error_json(401, f"unauthorized: Authorization: Bearer {KEY}"),
    lambda r: error_json(500, f"upstream {r.headers['authorization']} failed"),
    lambda r: ndjson({"error": f"token {KEY} expired"}),
    lambda r: ndjson(chat_part("Hel"), {"error": f"header {r.headers['authorization']} rejected"}),
], ids=["401", "500", "in-stream-first", "in-stream-after-text"])
def test_secrets_echoed_by_the_upstream_never_reach_errors_or_logs(up, caplog, handler):
    caplog.set_level(logging.DEBUG)
    up.handler = handler
    err, _ = first_error(make_backend(up), chat())
    assert "[redacted]" in err.message
    assert_no_secret(err, caplog)


def test_credentials_in_the_url_are_never_logged_nor_shown(up, caplog):
    caplog.set_level(logging.DEBUG)
    up.handler = lambda r: error_json(500, "down")
    err, _ = first_error(make_backend(urls=(with_credentials(up),)), chat())
    assert "answered 500" in err.message
    assert_no_secret(err, caplog)
    assert up.url in caplog.text, "the endpoint is still named, without its credentials"


def test_credentials_in_the_url_are_sent_as_basic_auth(up):
    backend = make_backend(urls=(with_credentials(up),))
    assert text_of(run(backend, chat())) == "Hi"
    expected = "Basic " + base64.b64encode(f"user:{URL_SECRET}".encode()).decode()
    assert up.requests[0].headers["authorization"] == expected


def test_a_failing_model_list_is_remembered_until_one_succeeds(up):
    up.handler = lambda r: error_json(500, "x")
    backend = make_backend(up)
    assert not backend.has_model("m") and isinstance(backend.list_error, UpstreamError)
    backend._models.ttl = 0
    up.handler = lambda r: Response(json.dumps(TAGS), mimetype="application/json")
    assert backend.has_model("tiny:latest") and backend.list_error is None


# ---------------------------------------------------------------- failover

def test_failover_on_500(up, up2):
    up.handler = lambda r: error_json(500, "down")
    up2.handler = lambda r: ndjson(chat_part("from two"), chat_done())
    backend = make_backend(up, up2)
    assert text_of(run(backend, chat())) == "from two"
    assert len(up.requests) == 1 and len(up2.requests) == 1
    assert not backend.pool.endpoints[0].healthy
    run(backend, chat())
    assert len(up.requests) == 1 and len(up2.requests) == 2


def test_failover_when_unreachable(up):
    backend = make_backend(urls=(f"http://127.0.0.1:{free_port()}", up.url))
    assert text_of(run(backend, chat())) == "Hi"
    assert backend.pool.endpoints[1].healthy and not backend.pool.endpoints[0].healthy


def test_no_failover_on_a_missing_model(up, up2):
    up.handler = lambda r: error_json(404, 'model "m" not found')
    err, _ = first_error(make_backend(up, up2), chat())
    assert isinstance(err, ModelNotFound) and up2.requests == []


def test_least_outstanding_endpoint_is_chosen(up, up2):
    backend = make_backend(up, up2)
    first = backend.generate(chat(), g.Cancel())
    next(first), next(first)  # Accepted, then the first text: a request is in flight at the first endpoint
    assert [e.outstanding for e in backend.pool.endpoints] == [1, 0]
    assert text_of(run(backend, chat())) == "Hi"
    assert len(up2.requests) == 1 and len(up.requests) == 1
    first.close()
    assert [e.outstanding for e in backend.pool.endpoints] == [0, 0]


# ---------------------------------------------------------------- model lists

TAGS = {"models": [{"name": "llama3:8b", "model": "llama3:8b", "modified_at": "2024-05-01T12:00:00Z",
                    "size": 4_661_224_676, "digest": "365c0bd3c000",
                    "details": {"format": "gguf", "family": "llama", "parameter_size": "8.0B",
                                "quantization_level": "Q4_0"}},
                   {"name": "tiny:latest", "model": "tiny:latest", "size": 10}]}


SHOWN = {"llama3:8b": {"capabilities": ["completion", "tools"], "modified_at": "2024-05-01T12:00:00Z",
                       "model_info": {"general.architecture": "llama", "llama.context_length": 8192}},
         "tiny:latest": {"capabilities": ["embedding"], "modified_at": "2024-05-01T12:00:00Z",
                         "model_info": {"general.architecture": "bert", "bert.context_length": 512}}}


def tags_and_show(record):
    if record.path == "/api/show":
        return Response(json.dumps(SHOWN[record.json["model"]]), mimetype="application/json")
    return Response(json.dumps(TAGS), mimetype="application/json")


def test_models_are_listed_and_cached(up):
    up.handler = tags_and_show
    backend = make_backend(up)
    models = backend.models()
    assert [(m.name, m.backend, m.family, m.parameter_size, m.quantization, m.size, m.digest) for m in models] == [
        ("llama3:8b", "oll", "llama", "8.0B", "Q4_0", 4_661_224_676, "365c0bd3c000"),
        ("tiny:latest", "oll", "", "", "", 10, "")]
    assert models[0].modified_at == 1_714_564_800.0
    assert backend.has_model("tiny:latest") and not backend.has_model("tiny")
    assert backend.models() == models and [r.path for r in up.requests] == ["/api/tags", "/api/show", "/api/show"]
    assert backend.check()


def test_capabilities_and_context_length_come_from_the_upstreams_show_asked_once_per_model(up):
    up.handler = tags_and_show
    backend = make_backend(up)
    models = backend.models()
    assert [(m.capabilities, m.context_length) for m in models] == [(("completion", "tools"), 8192),
                                                                    (("embedding",), 512)]
    backend._models.ttl = 0  # a fresh list every time: /api/show is still not asked again
    assert backend.models() == models and backend.check()
    assert [r.path for r in up.requests].count("/api/show") == 2


def test_a_model_the_upstream_cannot_show_is_listed_plainly_and_asked_again(up, caplog):
    up.handler = lambda r: error_json(500, "boom") if r.path == "/api/show" else tags_and_show(r)
    backend = make_backend(up)
    assert [(m.capabilities, m.context_length) for m in backend.models()] == [(("completion",), 0)] * 2
    assert "cannot describe model llama3:8b of oll" in caplog.text
    up.handler = tags_and_show
    backend._models.ttl = 0
    assert backend.models()[0].context_length == 8192


def test_the_configured_capabilities_and_context_length_win_for_every_model(up):
    up.handler = tags_and_show
    backend = OllamaBackend(BackendConfig(name="oll", type="ollama", urls=(up.url,), capabilities=("completion",),
                                          context_length=2048))
    assert [(m.capabilities, m.context_length) for m in backend.models()] == [(("completion",), 2048)] * 2


def test_show_keeps_ollamas_spelling_of_model_info(up):
    up.handler = tags_and_show
    shown = make_backend(up).show("llama3:8b")
    assert shown["model_info"] == SHOWN["llama3:8b"]["model_info"] and "modelinfo" not in shown


@pytest.mark.parametrize("handler", [lambda r: error_json(500, "x"), None], ids=["500", "unreachable"])
def test_a_failing_model_list_lists_nothing(up, caplog, handler):
    if handler:
        up.handler = handler
        backend = make_backend(up)
    else:
        backend = make_backend(urls=(f"http://127.0.0.1:{free_port()}",))
    assert backend.models() == [] and not backend.check()
    assert "cannot list the models of oll" in caplog.text


# ---------------------------------------------------------------- the pure helpers directly

def test_upstream_call_for_a_chat_leaves_out_tools_when_told_none():
    path, body = protocol.upstream_call(chat(tools=(WEATHER,), tool_choice=choice_of("none")))
    assert path == "/api/chat" and "tools" not in body


def test_upstream_reader_generate_and_chat_parts():
    reader = protocol.UpstreamReader(1, lambda: "call_x")
    assert reader.events(gen_part("a")) == [g.TextDelta("a", 1)]
    assert reader.events({"response": "", "done": False}) == []
    [finish] = reader.events(gen_done())
    assert (finish.index, finish.context, finish.usage) == (1, (1, 2, 3), g.Usage(4, 1))
    chat_reader = protocol.UpstreamReader(0, lambda: "call_x")
    [delta] = chat_reader.events(chat_part("", tool_calls=[{"function": {"name": "f", "arguments": {"a": 1}}}]))
    assert delta == g.ToolCallDelta(g.ToolCall("call_x", "f", '{"a": 1}'), 0, 0)
    with pytest.raises(ValueError, match="boom"):
        chat_reader.events({"error": "boom"})
