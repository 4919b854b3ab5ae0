"""OpenAICompatBackend against fake OpenAI-compatible upstreams (real HTTP servers on loopback, tests/fake_http.py):
the exact requests it sends, how it reads SSE into events, how upstream failures (refused, dropped and reset
connections included) map to shim errors, failover, model lists and the reuse of kept-alive connections."""
import base64
import http.client
import json
import logging
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from shim import generation as g
from shim.backends import upstream
from shim.backends.openai_compat import OpenAICompatBackend
from shim.config import BackendConfig
from shim.errors import (BackendUnavailable, Cancelled, InvalidRequest, ModelNotFound, ServerBusy, ShimError,
                         Unsupported, UpstreamError)
from shim.protocols import openai as protocol
from shim.router import Router
from shim.streaming import HEARTBEAT, PAUSE, parse_sse
from tests.fake_http import GET, POST, FakeHTTP
from tests.fake_upstream import folded
from tests.fakes import choice_of
from tests.support import HI
from tests.support import TIME_TOOL as TIME
from tests.support import WEATHER_TOOL as WEATHER
from tests.support import (BEAT_FRONTS, assert_silence_beats_through_the_app, events_until_error, finishes,
                           heartbeats_between, read_whole, run, text_of)

KEY = "sk-test-SECRET-0123456789abcdef"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


class Upstreams(FakeHTTP):
    """Two fake upstreams, A and B, each serving the API under /v1 (started when first named)."""

    @property
    def a(self):
        return self.server("a").url + "/v1"

    @property
    def b(self):
        return self.server("b").url + "/v1"


@pytest.fixture
def rsps():
    with Upstreams() as mock:
        yield mock
    assert not mock.calls.unmatched, [c.request.url for c in mock.calls.unmatched]


def make_backend(mock, urls=None, api_key=KEY, headers=None, **settings):
    return OpenAICompatBackend(BackendConfig(name="up", type="openai", urls=tuple(urls or (mock.a,)),
                                             api_key=api_key, headers={"X-Org": "acme"} if headers is None else headers,
                                             **settings))


def chat(**fields):
    fields.setdefault("messages", HI)
    return g.GenerationRequest(model="m", **fields)


def chunk(content=None, index=0, finish=None, tool_calls=None, role=None, logprobs=None):
    delta = {}
    if role:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    choice = {"index": index, "delta": delta, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]}


def usage_chunk(prompt, completion):
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}


def sse_text(*objects, done=True):
    return "".join(f"data: {json.dumps(o)}\n\n" for o in objects) + ("data: [DONE]\n\n" if done else "")


def add_stream(mock, body, url=None, path="/chat/completions", status=200,
               content_type="text/event-stream; charset=utf-8", **modes):
    mock.add(POST, (url or mock.a) + path, body=body, status=status, content_type=content_type, **modes)


def answer_text(*pieces, reason="stop", usage=(5, None)):
    objects = [chunk(p, role="assistant" if i == 0 else None) for i, p in enumerate(pieces)]
    objects.append(chunk(finish=reason))
    objects.append(usage_chunk(usage[0], len(pieces) if usage[1] is None else usage[1]))
    return sse_text(*objects)


def add_answer(mock, *pieces, url=None, reason="stop", usage=(5, None), **modes):
    add_stream(mock, answer_text(*pieces, reason=reason, usage=usage), url=url, **modes)


def add_error(mock, status, message, url=None, path="/chat/completions"):
    mock.add(POST, (url or mock.a) + path, json={"error": {"message": message, "type": "x", "code": None}},
             status=status)


def sent(mock, i=-1):
    return json.loads(mock.calls[i].request.body)


# ---------------------------------------------------------------- the request sent upstream

def test_minimal_chat_body_streams_with_usage(rsps):
    add_answer(rsps, "ok")
    run(make_backend(rsps), chat())
    assert rsps.calls[0].request.url == rsps.a + "/chat/completions"
    assert sent(rsps, 0) == {"model": "m", "stream": True, "stream_options": {"include_usage": True},
                             "messages": [{"role": "user", "content": "hi"}]}


def test_sampling_limits_stop_and_n_are_pinned(rsps):
    add_answer(rsps, "ok")
    sampling = g.Sampling(temperature=0.2, top_p=0.9, top_k=40, min_p=0.05, typical_p=0.8, seed=7, repeat_penalty=1.1,
                          repeat_last_n=64, presence_penalty=0.5, frequency_penalty=-0.5,
                          logit_bias={50256: -100.0, 7: 2.5})
    run(make_backend(rsps), chat(sampling=sampling, max_tokens=32, stop=("\n\n", "END"), n=2))
    assert sent(rsps) == {
        "model": "m", "stream": True, "stream_options": {"include_usage": True},
        "temperature": 0.2, "top_p": 0.9, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5,
        "top_k": 40, "min_p": 0.05, "typical_p": 0.8, "repetition_penalty": 1.1, "max_tokens": 32,
        "logit_bias": {"50256": -100.0, "7": 2.5}, "stop": ["\n\n", "END"], "n": 2,
        "messages": [{"role": "user", "content": "hi"}],
    }


def test_zero_values_are_sent_not_dropped(rsps):
    add_answer(rsps, "ok")
    run(make_backend(rsps), chat(sampling=g.Sampling(temperature=0.0, seed=0, presence_penalty=0.0)))
    body = sent(rsps)
    assert body["temperature"] == 0.0 and body["seed"] == 0 and body["presence_penalty"] == 0.0
    assert "n" not in body and "stop" not in body and "logit_bias" not in body and "max_tokens" not in body


def test_images_become_data_url_parts(rsps):
    add_answer(rsps, "a cat")
    run(make_backend(rsps), chat(messages=(g.Message("user", "What is this?", images=(PNG, b"second")),)))
    assert sent(rsps)["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"second").decode()}},
    ]}]


def test_tool_calls_and_tool_results_in_the_conversation(rsps):
    add_answer(rsps, "18C in Paris")
    call = g.ToolCall("call_1", "get_weather", '{"city": "Paris"}')
    messages = (g.Message("system", "Be brief."), g.Message("user", "Weather in Paris?"),
                g.Message("assistant", "", tool_calls=(call,)),
                g.Message("tool", "18C", tool_call_id="call_1", name="get_weather"))
    run(make_backend(rsps), chat(messages=messages, tools=(WEATHER,)))
    assert sent(rsps)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "content": "18C", "tool_call_id": "call_1", "name": "get_weather"},
    ]


def test_assistant_text_with_tool_calls_keeps_its_text(rsps):
    add_answer(rsps, "ok")
    call = g.ToolCall("call_1", "get_time", "{}")
    run(make_backend(rsps), chat(messages=HI + (g.Message("assistant", "Let me look.", tool_calls=(call,)),)))
    assert sent(rsps)["messages"][1]["content"] == "Let me look."


@pytest.mark.parametrize("logprobs, top, expected", [
    (True, 3, {"logprobs": True, "top_logprobs": 3}),
    (True, 0, {"logprobs": True}),
    (False, 0, {}),
])
def test_logprobs(rsps, logprobs, top, expected):
    add_answer(rsps, "ok")
    run(make_backend(rsps), chat(logprobs=logprobs, top_logprobs=top))
    body = sent(rsps)
    assert {k: body[k] for k in ("logprobs", "top_logprobs") if k in body} == expected


@pytest.mark.parametrize("fmt, expected", [
    (g.ResponseFormat("json"), {"type": "json_object"}),
    (g.ResponseFormat("json_schema", {"type": "object", "properties": {"age": {"type": "integer"}}}, "person"),
     {"type": "json_schema", "json_schema": {"name": "person", "schema": {"type": "object", "properties": {
         "age": {"type": "integer"}}}}}),
    (g.ResponseFormat("json_schema", {"type": "object"}),
     {"type": "json_schema", "json_schema": {"name": "response", "schema": {"type": "object"}}}),
])
def test_response_format(rsps, fmt, expected):
    add_answer(rsps, "{}")
    run(make_backend(rsps), chat(response_format=fmt))
    assert sent(rsps)["response_format"] == expected


@pytest.mark.parametrize("choice, expected", [
    (None, "auto"), ("auto", "auto"), ("none", "none"), ("required", "required"),
    ("get_weather", {"type": "function", "function": {"name": "get_weather"}}),
])
def test_tools_and_tool_choice(rsps, choice, expected):
    add_answer(rsps, "ok")
    run(make_backend(rsps), chat(tools=(WEATHER, TIME), tool_choice=choice_of(choice)))
    body = sent(rsps)
    assert body["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                          "parameters": dict(WEATHER.parameters)}},
        {"type": "function", "function": {"name": "get_time", "description": "The time now",
                                          "parameters": {"type": "object", "properties": {}}}},
    ]
    assert body["tool_choice"] == expected
    assert "parallel_tool_calls" not in body


def test_parallel_tool_calls_false_is_sent(rsps):
    add_answer(rsps, "ok")
    run(make_backend(rsps), chat(tools=(WEATHER,), parallel_tool_calls=False))
    assert sent(rsps)["parallel_tool_calls"] is False


def test_no_tools_no_tool_fields(rsps):
    add_answer(rsps, "ok")
    run(make_backend(rsps), chat(tool_choice=choice_of("none")))
    assert not {"tools", "tool_choice", "parallel_tool_calls", "response_format"} & set(sent(rsps))


def test_raw_prompt_goes_to_legacy_completions(rsps):
    add_stream(rsps, sse_text({"choices": [{"index": 0, "text": " a time", "finish_reason": None}]},
                              {"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}),
               path="/completions")
    events = run(make_backend(rsps), g.GenerationRequest(model="m", prompt="Once upon", raw=True, suffix="The end.",
                                                     max_tokens=5, logprobs=True, sampling=g.Sampling(seed=1)))
    assert rsps.calls[0].request.url == rsps.a + "/completions"
    assert sent(rsps) == {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "seed": 1,
                          "max_tokens": 5, "prompt": "Once upon", "suffix": "The end.", "logprobs": 1}
    assert text_of(events) == " a time" and finishes(events)[0].reason == "length"


def test_raw_prompt_top_logprobs_is_the_legacy_integer(rsps):
    add_stream(rsps, sse_text({"choices": [{"index": 0, "text": "x", "finish_reason": "stop"}]}), path="/completions")
    run(make_backend(rsps), g.GenerationRequest(model="m", prompt="p", raw=True, logprobs=True, top_logprobs=4))
    assert sent(rsps)["logprobs"] == 4 and "messages" not in sent(rsps)


def test_templated_prompt_goes_to_chat_with_system_and_images(rsps):
    add_answer(rsps, "Arr")
    run(make_backend(rsps), g.GenerationRequest(model="m", prompt="Hi", system="You are a pirate.", images=(PNG,)))
    body = sent(rsps)
    assert rsps.calls[0].request.url == rsps.a + "/chat/completions" and "prompt" not in body
    assert body["messages"][0] == {"role": "system", "content": "You are a pirate."}
    assert body["messages"][1]["role"] == "user"
    assert body["messages"][1]["content"][0] == {"type": "text", "text": "Hi"}
    assert body["messages"][1]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("field, request_", [
    ("context", g.GenerationRequest(model="m", prompt="go on", context=(1, 2, 3))),
    ("think", g.GenerationRequest(model="m", prompt="go on", raw=True, think=g.Think(True))),
])
def test_fields_it_cannot_carry_are_refused_before_any_request(rsps, field, request_):
    with pytest.raises(Unsupported) as err:
        next(make_backend(rsps).generate(request_, g.Cancel()))
    assert err.value.param == field and err.value.status == 400
    assert len(rsps.calls) == 0


def test_authorization_and_extra_headers(rsps):
    add_answer(rsps, "ok")
    rsps.add(GET, rsps.a + "/models", json={"data": []})
    backend = make_backend(rsps)
    run(backend, chat())
    backend.models()
    for call in rsps.calls:
        headers = call.request.headers
        assert headers["Authorization"] == f"Bearer {KEY}"
        assert headers["X-Org"] == "acme" and headers["User-Agent"] == "shim"
    assert rsps.calls[0].request.headers["Content-Type"] == "application/json"


def test_no_api_key_no_authorization_header(rsps):
    add_answer(rsps, "ok")
    run(make_backend(rsps, api_key=None, headers={}), chat())
    assert "Authorization" not in rsps.calls[0].request.headers


def _fail_500(mock):
    add_error(mock, 500, "internal failure")


def _fail_400(mock):
    add_error(mock, 400, "bad temperature")


def _fail_429(mock):
    add_error(mock, 429, "slow down")


def _fail_unreachable(mock, url=None):
    """The upstream takes the request, then closes the connection without a word."""
    mock.add(POST, (url or mock.a) + "/chat/completions", drop=True)


def _fail_garbage_event(mock):
    add_stream(mock, "data: {not json\n\n")


def _fail_in_stream(mock):
    add_stream(mock, sse_text(chunk("a"), {"error": {"message": "overloaded"}}))


def _fail_html_error(mock):
    mock.add(POST, mock.a + "/chat/completions", body="<html>Bad Gateway</html>", status=502,
             content_type="text/html")


@pytest.mark.parametrize("setup", [_fail_500, _fail_400, _fail_429, _fail_unreachable, _fail_garbage_event,
                                   _fail_in_stream, _fail_html_error])
def test_api_key_never_appears_in_errors_or_logs(rsps, caplog, setup):
    caplog.set_level(logging.DEBUG)
    setup(rsps)
    with pytest.raises(ShimError) as err:
        run(make_backend(rsps), chat())
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"
    for text in (err.value.message, str(err.value), repr(err.value), caplog.text,
                 *(str(r.args) for r in caplog.records)):
        assert KEY not in text and KEY[3:] not in text


def test_api_key_echoed_by_the_upstream_is_not_passed_on(rsps):
    add_error(rsps, 401, f"Incorrect API key provided: {KEY}")
    with pytest.raises(UpstreamError) as err:
        run(make_backend(rsps), chat())
    assert "credentials" in err.value.message
    assert KEY not in err.value.message


HEADER_SECRET = "hdr-SECRET-9876543210"
URL_SECRET = "pw-SECRET-5555"
URL_WITH_CREDENTIALS = f"http://user:{URL_SECRET}@up-a.test/v1"
SECRETS = (KEY, KEY[3:], KEY[:12], HEADER_SECRET, URL_SECRET)


def with_credentials(url):
    """The URL with a user and password in it."""
    return url.replace("http://", f"http://user:{URL_SECRET}@")


def assert_no_secret(err, caplog):
    for text in (err.message, str(err), repr(err), caplog.text, *(str(r.args) for r in caplog.records)):
        for secret in SECRETS:
            assert secret not in text, text


def _echo_in_stream(mock, url=None):
    add_stream(mock, sse_text(chunk("a"), {"error": {"message": f"invalid header 'Authorization: Bearer {KEY}'"}}),
               url=url)


def _echo_in_garbage_event(mock, url=None):
    add_stream(mock, f"data: Authorization: Bearer {KEY}\n\n", url=url)


def _echo_past_the_cut(mock, url=None):
    mock.add(POST, (url or mock.a) + "/chat/completions", status=401, content_type="text/plain",
             body="x" * 170 + f" rejected {KEY}")


def _echo_other_header(mock, url=None):
    add_error(mock, 403, f"x-api-key {HEADER_SECRET} is not allowed here", url=url)


@pytest.mark.parametrize("setup", [_echo_in_stream, _echo_in_garbage_event, _echo_past_the_cut, _echo_other_header])
def test_secrets_echoed_by_the_upstream_never_reach_errors_or_logs(rsps, caplog, setup):
    caplog.set_level(logging.DEBUG)
    setup(rsps)
    with pytest.raises(ShimError) as err:
        run(make_backend(rsps, headers={"X-Api-Key": HEADER_SECRET}), chat())
    assert "[redacted]" in err.value.message
    assert_no_secret(err.value, caplog)


@pytest.mark.parametrize("setup", [_fail_500, _echo_in_stream, _fail_unreachable])
def test_credentials_in_the_url_are_never_logged_nor_shown(rsps, caplog, setup):
    caplog.set_level(logging.DEBUG)
    url = with_credentials(rsps.a)
    setup(rsps, url) if setup is not _fail_500 else rsps.add(
        POST, url + "/chat/completions", json={"error": {"message": f"no route to {url}/chat"}}, status=500)
    with pytest.raises(ShimError) as err:
        run(make_backend(rsps, urls=(with_credentials(rsps.a),)), chat())
    assert_no_secret(err.value, caplog)


def test_credentials_in_the_url_are_sent_as_basic_auth(rsps):
    add_answer(rsps, "Hi", url=with_credentials(rsps.a))
    assert text_of(run(make_backend(rsps, urls=(with_credentials(rsps.a),)), chat())) == "Hi"
    expected = "Basic " + base64.b64encode(f"user:{URL_SECRET}".encode()).decode()
    assert rsps.calls[0].request.headers["Authorization"] == expected


def test_scrubber_takes_out_every_kind_of_credential():
    scrub = upstream.Scrubber.for_backend(BackendConfig(
        name="up", type="openai", urls=(URL_WITH_CREDENTIALS,), api_key=KEY,
        headers={"X-Api-Key": HEADER_SECRET, "X-Org": "acme"}))
    text = scrub(f"key {KEY}; hdr {HEADER_SECRET}; url http://bob:hunter2@host:1/v1 and {URL_WITH_CREDENTIALS}; "
                 f"Authorization: Basic dXNlcjpwYXNz; api_key=abc123def; Bearer other-token-1; "
                 f"sk-proj-abcdefghijklmnop; {URL_SECRET}; org acme")
    for secret in (*SECRETS, "hunter2", "bob:", "dXNlcjpwYXNz", "abc123def", "other-token-1", "sk-proj"):
        assert secret not in text, text
    assert "http://[redacted]@host:1/v1" in text and "org acme" in text and "up-a.test/v1" in text


@pytest.mark.parametrize("body", ['["bad"]', '"boom"', "42", "null"], ids=["list", "string", "number", "null"])
def test_an_error_body_that_is_json_but_not_an_object_is_an_upstream_error(rsps, body):
    rsps.add(POST, rsps.a + "/chat/completions", body=body, status=500, content_type="application/json")
    with pytest.raises(UpstreamError) as err:
        run(make_backend(rsps), chat())
    assert err.value.status == 502 and err.value.code == "upstream_error"
    assert "500" in err.value.message and body.strip('"') in err.value.message


@pytest.mark.parametrize("body", [["bad"], "boom"], ids=["list", "string"])
def test_an_error_body_that_is_json_but_not_an_object_fails_over(rsps, body):
    rsps.add(POST, rsps.a + "/chat/completions", json=body, status=503)
    add_answer(rsps, "from B", url=rsps.b)
    assert text_of(run(make_backend(rsps, urls=(rsps.a, rsps.b)), chat())) == "from B"


# ---------------------------------------------------------------- SSE parsing

def sse_bytes(lines, end="\n"):
    return end.join(lines).encode()


def test_parse_sse_skips_comments_and_joins_multiline_data():
    lines = [": hello", "", "", "event: message", "id: 3", "retry: 10", "data: one", "", ":ping",
             "data: first", "data:second", "data:  third", "", "data", "", "datum: no", "data: tail"]
    assert list(parse_sse([sse_bytes(lines)])) == ["one", "first\nsecond\n third", "", "tail"]


def test_parse_sse_blank_lines_alone_yield_nothing():
    assert list(parse_sse([sse_bytes(["", "", ": c", ""])])) == []


def test_parse_sse_keeps_colons_in_the_value():
    assert list(parse_sse([sse_bytes(['data: {"a": "b:c"}', ""])])) == ['{"a": "b:c"}']


@pytest.mark.parametrize("end", ["\n", "\r", "\r\n"])
def test_parse_sse_reads_the_same_events_however_the_bytes_are_split_between_reads(end):
    lines = ["data: {\"t\": \"h\u00e9 \u2028 \U0001f389\"}", "", ": ping", "", "data: a", "data: b", "", "data: [DONE]", ""]
    raw = sse_bytes(lines, end)
    whole = list(parse_sse([raw]))
    assert whole == ['{"t": "h\u00e9 \u2028 \U0001f389"}', "a\nb", "[DONE]"]
    for cut in range(1, len(raw)):  # an empty piece is not a cut: it stands for a silence (see below)
        assert list(parse_sse([raw[:cut], raw[cut:]])) == whole, cut
    assert list(parse_sse([raw[i:i + 1] for i in range(len(raw))])) == whole


def test_parse_sse_passes_a_silence_on_as_heartbeat_and_a_wait_as_pause_between_the_events():
    raw = sse_bytes(["data: a", "", "data: b", ""])
    assert list(parse_sse([b"", raw[:5], None, raw[5:]])) == [HEARTBEAT, PAUSE, "a", "b"]



@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_stream_with_comments_fields_multiline_data_and_done(rsps, newline):
    first = json.dumps(chunk("Hel", role="assistant"))
    second = json.dumps(chunk("lo"), indent=1).split("\n")  # one event split over several data lines
    lines = [": keep-alive", "", "", "event: message", "id: 1", f"data: {first}", "", ":ping", ""]
    lines += [f"data: {part}" for part in second] + [""]
    lines += ['data:{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}', "", "data: [DONE]", "",
              f"data: {json.dumps(chunk('IGNORED'))}", ""]
    add_stream(rsps, newline.join(lines) + newline)
    events = run(make_backend(rsps), chat())
    assert isinstance(events[0], g.Accepted)
    assert text_of(events) == "Hello"
    assert [(f.reason, f.usage) for f in finishes(events)] == [("stop", g.Usage(0, 2))]


def test_missing_usage_counts_the_pieces(rsps):
    add_stream(rsps, sse_text(chunk("a"), chunk("b"), chunk("c"), chunk(finish="length")))
    events = run(make_backend(rsps), chat())
    assert finishes(events)[0].usage == g.Usage(0, 3) and finishes(events)[0].reason == "length"


def test_text_deltas_finish_and_usage(rsps):
    add_answer(rsps, "Hello", " there", "!", usage=(12, 3))
    events = run(make_backend(rsps), chat())
    assert [type(e) for e in events] == [g.Accepted, g.TextDelta, g.TextDelta, g.TextDelta, g.Finish]
    assert [e.text for e in events[1:4]] == ["Hello", " there", "!"]
    finish = events[-1]
    assert finish.reason == "stop" and finish.usage == g.Usage(12, 3) and finish.index == 0
    assert finish.timings.total_ns >= finish.timings.eval_ns >= 0 and finish.timings.prompt_eval_ns >= 0


def test_empty_content_and_role_only_chunks_yield_no_deltas(rsps):
    add_stream(rsps, sse_text(chunk(role="assistant", content=""), chunk("x"), chunk(content=None),
                              chunk(finish="stop")))
    events = run(make_backend(rsps), chat())
    assert [e.text for e in events if isinstance(e, g.TextDelta)] == ["x"]


def test_tool_call_fragments_are_assembled(rsps):
    add_stream(rsps, sse_text(
        chunk(role="assistant", tool_calls=[{"index": 0, "id": "call_abc", "type": "function",
                                             "function": {"name": "get_weather", "arguments": ""}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"city": '}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '"Paris"}'}}]),
        chunk(tool_calls=[{"index": 1, "id": "call_def", "type": "function",
                           "function": {"name": "get_time", "arguments": "{}"}}]),
        chunk(finish="tool_calls"),
        usage_chunk(20, 9)))
    events = run(make_backend(rsps), chat(tools=(WEATHER, TIME)))
    weather = g.ToolCall("call_abc", "get_weather", '{"city": "Paris"}')
    time_call = g.ToolCall("call_def", "get_time", "{}")
    assert events[1:] == [
        g.ToolCallArgumentsDelta("", "call_abc", "get_weather", 0, 0),
        g.ToolCallArgumentsDelta('{"city": ', "call_abc", "get_weather", 0, 0),
        g.ToolCallArgumentsDelta('"Paris"}', "call_abc", "get_weather", 0, 0),
        g.ToolCallDelta(weather, 0, 0),  # whole once the next call begins, not held to the end
        g.ToolCallArgumentsDelta("{}", "call_def", "get_time", 0, 1),
        g.ToolCallDelta(time_call, 0, 1),
        g.Finish("tool_calls", 0, g.Usage(20, 9), events[-1].timings),
    ]
    assert g.collect(events)[0].tool_calls == [weather, time_call]


def test_tool_call_arguments_are_passed_on_as_they_arrive():
    """Each upstream chunk's argument piece is an event of that chunk, before the stream has ended."""
    reader = protocol.UpstreamReader()
    assert reader.events(chunk(tool_calls=[{"index": 0, "id": "c1", "function": {"name": "get_weather"}}])) == [
        g.ToolCallArgumentsDelta("", "c1", "get_weather", 0, 0)]
    assert reader.events(chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"ci'}}])) == [
        g.ToolCallArgumentsDelta('{"ci', "c1", "get_weather", 0, 0)]
    assert reader.events(chunk(tool_calls=[{"index": 0, "function": {"arguments": ""}}])) == []
    assert reader.events(chunk("after")) == [g.ToolCallDelta(g.ToolCall("c1", "get_weather", '{"ci'), 0, 0),
                                             g.TextDelta("after")]
    assert [type(e) for e in reader.end(g.Timings())] == [g.Finish]


def test_a_call_whose_name_comes_late_is_passed_on_once_named():
    reader = protocol.UpstreamReader()
    assert reader.events(chunk(tool_calls=[{"index": 0, "function": {"arguments": "{"}}])) == []
    assert reader.events(chunk(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": "}"}}])) == [
        g.ToolCallArgumentsDelta("{}", "call_0_0", "f", 0, 0)]


def test_a_call_cut_off_by_length_is_partial(rsps):
    add_stream(rsps, sse_text(chunk(tool_calls=[{"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a'}}]),
                              chunk(finish="length")))
    events = run(make_backend(rsps), chat(tools=(TIME,)))
    assert events[-2] == g.ToolCallDelta(g.ToolCall("c", "f", '{"a', partial=True), 0, 0)


def test_tool_call_without_id_or_arguments_gets_defaults_and_stop_becomes_tool_calls(rsps):
    add_stream(rsps, sse_text(chunk(tool_calls=[{"index": 0, "function": {"name": "get_time"}}]),
                              chunk(finish="stop")))
    events = run(make_backend(rsps), chat(tools=(TIME,)))
    assert events[2] == g.ToolCallDelta(g.ToolCall("call_0_0", "get_time", "{}"), 0, 0)
    assert events[3].reason == "tool_calls"


def test_several_choices_are_kept_apart_and_usage_counted_once(rsps):
    add_stream(rsps, sse_text(chunk("a", index=0), chunk("b", index=1), chunk("c", index=0),
                              chunk(finish="stop", index=1), chunk(finish="length", index=0), usage_chunk(4, 3)))
    events = run(make_backend(rsps), chat(n=2))
    choices = g.collect(events)
    assert [(c.index, c.text, c.finish.reason) for c in choices] == [(0, "ac", "length"), (1, "b", "stop")]
    assert g.total_usage(choices) == g.Usage(4, 3)


def test_chat_logprobs_are_read(rsps):
    logprobs = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": [
        {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}, {"token": "Hey", "logprob": -2.5}]}]}
    add_stream(rsps, sse_text(chunk("Hi", logprobs=logprobs), chunk(finish="stop")))
    delta = run(make_backend(rsps), chat(logprobs=True, top_logprobs=2))[1]
    assert delta.logprobs == (g.TokenLogprob("Hi", -0.1, (72, 105), (
        g.TokenLogprob("Hi", -0.1, (72, 105)), g.TokenLogprob("Hey", -2.5, ()))),)


def test_legacy_logprobs_are_read(rsps):
    add_stream(rsps, sse_text({"choices": [{"index": 0, "text": "ab", "finish_reason": None, "logprobs": {
        "tokens": ["a", "b"], "token_logprobs": [-0.5, -1.0], "top_logprobs": [{"a": -0.5}, {"b": -1.0, "c": -2.0}],
        "text_offset": [0, 1]}}]}), path="/completions")
    delta = run(make_backend(rsps), g.GenerationRequest(model="m", prompt="p", raw=True, logprobs=True))[1]
    assert delta.text == "ab"
    assert delta.logprobs == (
        g.TokenLogprob("a", -0.5, (97,), (g.TokenLogprob("a", -0.5, (97,)),)),
        g.TokenLogprob("b", -1.0, (98,), (g.TokenLogprob("b", -1.0, (98,)), g.TokenLogprob("c", -2.0, (99,)))))


def test_cancel_stops_reading(rsps):
    add_answer(rsps, "a", "b", "c")
    cancel = g.Cancel()
    events = []
    for event in make_backend(rsps).generate(chat(), cancel):
        events.append(event)
        if isinstance(event, g.TextDelta):
            cancel.set()
    assert text_of(events) == "a" and not finishes(events)


def test_utf8_text_without_a_charset_is_read_as_utf8(rsps):
    add_stream(rsps, sse_text(chunk("café ✓ 日本"), chunk(finish="stop")).replace("\\u00e9", "é")
               .replace("\\u2713", "✓").replace("\\u65e5\\u672c", "日本").encode(), content_type="text/event-stream")
    assert text_of(run(make_backend(rsps), chat())) == "café ✓ 日本"


def test_unicode_line_separators_inside_json_do_not_split_events(rsps):
    text = "one\u2028two\u2029three\x85four"
    body = "data: " + json.dumps(chunk(text), ensure_ascii=False) + "\n\n" + sse_text(chunk(finish="stop"))
    add_stream(rsps, body.encode())
    assert text_of(run(make_backend(rsps), chat())) == text


# ---------------------------------------------------------------- errors

def test_upstream_500_is_an_upstream_error_before_anything_is_yielded(rsps):
    add_error(rsps, 500, "CUDA out of memory")
    with pytest.raises(UpstreamError) as err:
        next(make_backend(rsps).generate(chat(), g.Cancel()))
    assert err.value.status == 502 and err.value.code == "upstream_error"
    assert "500" in err.value.message and "CUDA out of memory" in err.value.message


@pytest.mark.parametrize("status", [400, 422])
def test_upstream_400_is_invalid_request_carrying_its_message(rsps, status):
    add_error(rsps, status, "'temperature' must be at most 2")
    with pytest.raises(InvalidRequest) as err:
        run(make_backend(rsps), chat())
    assert err.value.status == 400 and "'temperature' must be at most 2" in err.value.message
    assert len(rsps.calls) == 1


def test_upstream_413_keeps_its_status(rsps):
    add_error(rsps, 413, "too large")
    with pytest.raises(InvalidRequest) as err:
        run(make_backend(rsps), chat())
    assert err.value.status == 413


def test_upstream_429_is_server_busy_with_retry_after(rsps):
    add_error(rsps, 429, "rate limited")
    with pytest.raises(ServerBusy) as err:
        run(make_backend(rsps), chat())
    assert err.value.status == 429 and err.value.headers == {"Retry-After": "1"}
    assert "rate limited" in err.value.message


def test_upstream_401_says_the_credentials_were_refused(rsps):
    add_error(rsps, 401, "invalid key")
    with pytest.raises(UpstreamError) as err:
        run(make_backend(rsps), chat())
    assert "refused shim's credentials (401)" in err.value.message and err.value.status == 502


def test_upstream_404_model_not_found(rsps):
    add_error(rsps, 404, "model 'm' not found")
    with pytest.raises(ModelNotFound) as err:
        run(make_backend(rsps), chat())
    assert err.value.status == 404 and err.value.param == "model"


def test_upstream_404_in_openai_wording_is_model_not_found(rsps):
    rsps.add(POST, rsps.a + "/chat/completions", status=404, json={"error": {
        "message": "The model `m` does not exist or you do not have access to it.", "type": "invalid_request_error",
        "param": None, "code": "model_not_found"}})
    with pytest.raises(ModelNotFound):
        run(make_backend(rsps), chat())


@pytest.mark.parametrize("how", ["refused", "dropped"])
def test_unreachable_is_backend_unavailable(rsps, how):
    url = rsps.refused_url() + "/v1" if how == "refused" else rsps.a
    if how == "dropped":
        _fail_unreachable(rsps)
    with pytest.raises(BackendUnavailable) as err:
        next(make_backend(rsps, urls=(url,)).generate(chat(), g.Cancel()))
    assert len(rsps.calls) == (how == "dropped")
    assert err.value.status == 503 and "unreachable" in err.value.message


def test_error_body_that_is_not_json_is_quoted(rsps):
    _fail_html_error(rsps)
    with pytest.raises(UpstreamError) as err:
        run(make_backend(rsps), chat())
    assert "502" in err.value.message and "Bad Gateway" in err.value.message


def test_error_body_that_is_a_plain_string_error(rsps):
    rsps.add(POST, rsps.a + "/chat/completions", status=500, json={"error": "it broke"})
    with pytest.raises(UpstreamError) as err:
        run(make_backend(rsps), chat())
    assert "it broke" in err.value.message


def test_stream_event_that_is_not_json_is_an_upstream_error_after_the_text_so_far(rsps):
    add_stream(rsps, sse_text(chunk("Hel"), done=False) + "data: {not json\n\n")
    events = []
    with pytest.raises(UpstreamError) as err:
        for event in make_backend(rsps).generate(chat(), g.Cancel()):
            events.append(event)
    assert text_of(events) == "Hel"
    assert "not JSON" in err.value.message and err.value.status == 502


@pytest.mark.parametrize("event, message", [
    ({"error": {"message": "model overloaded", "type": "server_error"}}, "model overloaded"),
    ({"error": "engine died"}, "engine died"),
    ([1, 2], "not a JSON object"),
    ({"choices": "nope"}, ""),
])
def test_in_stream_error_or_unreadable_event_is_an_upstream_error(rsps, event, message):
    add_stream(rsps, sse_text(chunk("a"), event))
    with pytest.raises(UpstreamError) as err:
        run(make_backend(rsps), chat())
    assert message in err.value.message


@pytest.mark.parametrize("framing, end", [("chunked", "reset"), ("length", "reset"), ("close", "reset"),
                                         ("chunked", "close"), ("length", "close")])
def test_connection_broken_mid_stream_is_an_upstream_error(rsps, framing, end):
    add_stream(rsps, sse_text(chunk("partial"), done=False), framing=framing, end=end)
    events = []
    with pytest.raises(UpstreamError) as err:
        for event in make_backend(rsps).generate(chat(), g.Cancel()):
            events.append(event)
    assert text_of(events) == "partial" and "broke off the stream" in err.value.message


@pytest.mark.parametrize("body, content_type", [
    ("<html><body>Welcome to nginx</body></html>", "text/html"),
    ('{"id": "x", "object": "chat.completion", "choices": []}', "application/json"),
    (sse_text(chunk("trunc"), done=False), "text/event-stream; charset=utf-8"),
])
def test_a_body_that_is_not_a_complete_stream_is_an_upstream_error(rsps, body, content_type):
    add_stream(rsps, body, content_type=content_type)
    with pytest.raises(UpstreamError):
        run(make_backend(rsps), chat())


def test_the_answer_ends_at_done_even_if_the_upstream_keeps_the_connection_open(rsps):
    """The whole stream, [DONE] included, then the answer stays open (for 3 s, cut short when the test ends)."""
    add_stream(rsps, sse_text(chunk("Hi", role="assistant"), chunk(finish="stop"), usage_chunk(3, 1)),
               framing="chunked", hold=3)
    backend = make_backend(rsps, read_timeout=10.0)
    started = time.monotonic()
    events = run(backend, chat())
    assert time.monotonic() - started < 1.0
    assert text_of(events) == "Hi" and finishes(events)[0].reason == "stop"
    assert text_of(run(backend, chat())) == "Hi", "the pool must still serve after dropping the connection"
    assert [c.connection for c in rsps.calls] == [1, 2], "the connection held open is not reused"
    backend.close()


@pytest.mark.parametrize("hold, connections", [(0, [1, 1, 1]), (3, [1, 2, 3])], ids=["ends-at-once", "stalls"])
def test_a_kept_alive_connection_is_reused_only_if_the_answer_ends_promptly_after_done(rsps, hold, connections):
    """Each answer is chunked; its last chunk follows [DONE] after `hold` seconds."""
    add_stream(rsps, sse_text(chunk("Hi", role="assistant"), chunk(finish="stop")), framing="chunked", hold=hold)
    backend = make_backend(rsps, read_timeout=10.0)
    for _ in range(3):
        started = time.monotonic()
        assert text_of(run(backend, chat())) == "Hi"
        assert time.monotonic() - started < 1.0
    assert [c.connection for c in rsps.calls] == connections
    assert rsps.server("a").connections == connections[-1]
    backend.close()


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_sequential_generations_reuse_one_kept_alive_connection(rsps, framing):
    add_answer(rsps, "Hi", framing=framing)
    backend = make_backend(rsps)
    assert [text_of(run(backend, chat())) for _ in range(2)] == ["Hi", "Hi"]
    assert [c.connection for c in rsps.calls] == [1, 1] and rsps.server("a").connections == 1
    backend.close()


def test_an_upstream_that_closes_an_idle_kept_alive_connection_does_not_fail_the_next_request(rsps):
    """As uvicorn does after 5 s of idleness: the next request must go on a new connection, not fail."""
    add_answer(rsps, "Hi")
    backend = make_backend(rsps)
    assert text_of(run(backend, chat())) == "Hi"
    rsps.server("a").close_idle_connections()
    assert text_of(run(backend, chat())) == "Hi"
    assert [c.connection for c in rsps.calls] == [1, 2]
    backend.close()


def test_a_request_after_a_close_delimited_answer_opens_a_new_connection(rsps):
    add_answer(rsps, "Hi", framing="close")
    backend = make_backend(rsps)
    assert [text_of(run(backend, chat())) for _ in range(2)] == ["Hi", "Hi"]
    assert [c.connection for c in rsps.calls] == [1, 2]
    backend.close()


def _pieces(text, size):
    return [text[i:i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
@pytest.mark.parametrize("split", [None, 1, 7, 100], ids=["whole", "bytes", "7", "100"])
def test_every_body_framing_and_split_reads_the_same(rsps, framing, split):
    """Content-Length, chunked or close-delimited, in one write or pieces cut anywhere (mid-line, mid-UTF-8)."""
    text = answer_text("Hello", " wörld ✓", "!", usage=(12, 3)).encode()
    add_stream(rsps, [text] if split is None else _pieces(text, split), framing=framing)
    events = run(make_backend(rsps), chat())
    assert [type(e) for e in events] == [g.Accepted, g.TextDelta, g.TextDelta, g.TextDelta, g.Finish]
    assert text_of(events) == "Hello wörld ✓!" and events[-1].usage == g.Usage(12, 3)


@pytest.mark.parametrize("framing", ["chunked", "length", "close"])
def test_events_are_passed_on_as_they_arrive_not_when_the_answer_ends(rsps, framing):
    """The rest of the answer waits for the first event to come out of the backend (or for 0.5 s)."""
    gate = threading.Event()
    threading.Timer(0.5, gate.set).start()
    add_stream(rsps, [sse_text(chunk("first", role="assistant"), done=False), gate,
                      sse_text(chunk("second"), chunk(finish="stop"))], framing=framing)
    events = make_backend(rsps).generate(chat(), g.Cancel())
    assert isinstance(next(events), g.Accepted)
    assert next(events) == g.TextDelta("first") and not gate.is_set()
    gate.set()
    assert text_of(events) == "second"


def test_an_upstream_silent_before_answering_is_unavailable_after_the_read_timeout(rsps):
    add_answer(rsps, "late", stall=5)
    with pytest.raises(BackendUnavailable) as err:
        run(make_backend(rsps, read_timeout=0.1), chat())
    assert err.value.status == 503 and "unreachable" in err.value.message and len(rsps.calls) == 1


def test_an_upstream_silent_mid_stream_breaks_off_after_the_read_timeout(rsps):
    add_stream(rsps, [sse_text(chunk("first", role="assistant"), done=False), 5], framing="chunked")
    events = []
    with pytest.raises(UpstreamError) as err:
        for event in make_backend(rsps, read_timeout=0.1).generate(chat(), g.Cancel()):
            events.append(event)
    assert text_of(events) == "first" and "broke off the stream" in err.value.message


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_a_silent_stream_yields_heartbeats_at_the_interval_then_the_rest(rsps, framing):
    add_stream(rsps, [sse_text(chunk("first", role="assistant"), done=False), 0.35,
                      sse_text(chunk("second"), chunk(finish="stop"))], framing=framing)
    events = run(make_backend(rsps, read_timeout=5.0), chat(heartbeat_seconds=0.1))
    assert heartbeats_between(events)[:3] == [g.Accepted, g.TextDelta, 3]
    assert heartbeats_between(events)[3:] == [g.TextDelta, g.Finish] and text_of(events) == "firstsecond"


def test_a_stream_yields_no_heartbeat_without_an_interval(rsps):
    add_stream(rsps, [sse_text(chunk("first", role="assistant"), done=False), 0.25, sse_text(chunk(finish="stop"))],
               framing="chunked")
    assert HEARTBEAT not in run(make_backend(rsps), chat())


def test_the_read_timeout_counts_the_whole_silence_between_heartbeats(rsps):
    add_stream(rsps, [sse_text(chunk("first", role="assistant"), done=False), 5], framing="chunked")
    events, err, seconds = events_until_error(
        make_backend(rsps, read_timeout=0.45).generate(chat(heartbeat_seconds=0.1), g.Cancel()), UpstreamError)
    assert 0.45 <= seconds < 2 and "broke off the stream" in err.message
    assert heartbeats_between(events) == [g.Accepted, g.TextDelta, 4]


SILENT_THEN_DONE = [sse_text(chunk("ALPHA", role="assistant"), done=False), 0.35,
                    sse_text(chunk("OMEGA"), chunk(finish="stop"), usage_chunk(3, 2))]


@pytest.mark.parametrize("front", BEAT_FRONTS)
def test_a_silent_upstream_stream_gets_heartbeat_frames_without_a_feeder_greenlet(rsps, monkeypatch, front):
    add_stream(rsps, SILENT_THEN_DONE, framing="chunked")
    assert_silence_beats_through_the_app(make_backend(rsps), front, monkeypatch)


OPENING = {  # path, body, the stream's opening frame
    "messages": ("/v1/messages", {"max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]},
                 b"event: message_start"),
    "responses": ("/v1/responses", {"input": "hi", "store": False}, b"event: response.created"),
}


@pytest.mark.parametrize("front", OPENING)
def test_a_streams_opening_frames_leave_while_the_upstream_is_silent_before_its_first_token(rsps, front):
    from shim.app import create_app
    from shim.config import Settings
    from shim.router import Route
    path, body, opening = OPENING[front]
    add_stream(rsps, [0.6, answer_text("late")], framing="chunked")
    app = create_app(Settings(embedded_model=False, heartbeat_seconds=30),
                     router=Router({"up": make_backend(rsps)}, [Route("m", "up", "m")]))
    began = time.monotonic()
    response = app.test_client().post(path, json={**body, "model": "m", "stream": True}, buffered=False)
    frames = iter(response.response)
    first = next(frames)
    assert first.startswith(opening) and time.monotonic() - began < 0.5
    assert b"late" in b"".join(frames)
    response.close()


# ---------------------------------------------------------------- a whole answer, for a client that reads it whole

def add_whole(mock, body, path="/chat/completions", **modes):
    """A non-streaming answer: body as JSON unless it is already text."""
    body = body if isinstance(body, (str, bytes)) else json.dumps(body)
    mock.add(POST, mock.a + path, body=body, content_type="application/json", **modes)


def reasoning_chunk(text):
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"reasoning_content": text}, "finish_reason": None}]}


CHAT_LOGPROBS = [{"token": t, "logprob": -0.5, "bytes": list(t.encode()), "top_logprobs": [
    {"token": t, "logprob": -0.5, "bytes": list(t.encode())}, {"token": "x", "logprob": -3.0}]} for t in ("Hi", "!")]
LEGACY_LOGPROBS = [{"tokens": [t], "token_logprobs": [-0.25], "top_logprobs": [{t: -0.25, "z": -2.0}],
                    "text_offset": [i]} for i, t in enumerate(("a", "b"))]
WHOLE_CASES = {
    "text-usage": ([chunk("Hello", role="assistant"), chunk(" there"), chunk(finish="stop"), usage_chunk(12, 2)], {}),
    "tool-calls": ([chunk(role="assistant", tool_calls=[{"index": 0, "id": "call_abc", "type": "function",
                                                         "function": {"name": "get_weather", "arguments": ""}}]),
                    chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]),
                    chunk(tool_calls=[{"index": 1, "id": "call_def", "type": "function",
                                       "function": {"name": "get_time", "arguments": "{}"}}]),
                    chunk(finish="tool_calls"), usage_chunk(20, 9)], {"tools": (WEATHER, TIME)}),
    "reasoning": ([reasoning_chunk("Let me"), reasoning_chunk(" think."), chunk("Done."), chunk(finish="length"),
                   {**usage_chunk(8, 6), "usage": {"prompt_tokens": 8, "completion_tokens": 6, "total_tokens": 14,
                                                   "completion_tokens_details": {"reasoning_tokens": 3}}}], {}),
    "chat-logprobs": ([chunk("Hi", logprobs={"content": CHAT_LOGPROBS[:1]}),
                       chunk("!", logprobs={"content": CHAT_LOGPROBS[1:]}), chunk(finish="stop"), usage_chunk(3, 2)],
                      {"logprobs": True, "top_logprobs": 2}),
    "completion-legacy-logprobs": (
        [{"choices": [{"index": 0, "text": t, "finish_reason": None, "logprobs": lp}]}
         for t, lp in zip("ab", LEGACY_LOGPROBS)] + [{"choices": [{"index": 0, "text": "", "finish_reason": "length"}],
                                                      "usage": {"prompt_tokens": 1, "completion_tokens": 2}}],
        {"messages": None, "prompt": "p", "raw": True, "logprobs": True, "top_logprobs": 2}),
    "two-choices": ([chunk("a", index=0), chunk("b", index=1), chunk("c", index=0), chunk(finish="stop", index=1),
                     chunk(finish="length", index=0), usage_chunk(4, 3)], {"n": 2}),
}


@pytest.mark.parametrize("case", WHOLE_CASES)
def test_a_whole_answer_reads_as_its_stream_does_and_is_asked_for_without_streaming(rsps, case):
    chunks, fields = WHOLE_CASES[case]
    path = "/completions" if fields.get("raw") else "/chat/completions"
    add_stream(rsps, sse_text(*chunks), path=path)
    add_whole(rsps, folded(chunks), path=path)
    streamed = run(make_backend(rsps), chat(**fields))
    whole = run(make_backend(rsps), chat(stream=False, **fields))
    assert read_whole(whole) == read_whole(streamed)
    assert read_whole(whole)[0].text or read_whole(whole)[0].tool_calls, "the case has content to compare"
    assert sent(rsps, 0)["stream"] is True and sent(rsps, 0)["stream_options"] == {"include_usage": True}
    assert sent(rsps, 1)["stream"] is False and "stream_options" not in sent(rsps, 1)
    assert {k: v for k, v in sent(rsps, 1).items() if k != "stream"} == {
        k: v for k, v in sent(rsps, 0).items() if k not in ("stream", "stream_options")}


def test_a_whole_answers_time_is_all_generation(rsps):
    add_whole(rsps, folded([chunk("ok"), chunk(finish="stop"), usage_chunk(2, 1)]))
    timings = run(make_backend(rsps), chat(stream=False))[-1].timings
    assert timings.prompt_eval_ns == 0 and timings.eval_ns == timings.total_ns > 0


@pytest.mark.parametrize("body, message", [
    ({"error": {"message": "boom", "type": "server_error"}}, "boom"),
    ("<html>Bad gateway</html>", "not JSON"),
    ([{"choices": []}], "not a JSON object"),
    ({"choices": "abc"}, "not a JSON object"),
    ({"choices": [{"index": 0, "message": "hi", "finish_reason": "stop"}]}, ""),
    ({"choices": [{"index": 0, "message": {"tool_calls": [1]}, "finish_reason": "stop"}]}, ""),
], ids=["error-in-200", "not-json", "not-an-object", "choices-not-a-list", "message-not-an-object",
        "call-not-an-object"])
def test_a_whole_answer_that_is_an_error_or_unreadable_is_an_upstream_error(rsps, body, message):
    add_whole(rsps, body)
    with pytest.raises(UpstreamError) as err:
        run(make_backend(rsps), chat(stream=False))
    assert err.value.status == 502 and message in err.value.message


def test_a_client_that_leaves_while_the_upstream_works_on_a_whole_answer_closes_its_connection(rsps):
    add_whole(rsps, folded([chunk("late"), chunk(finish="stop")]), stall=5)
    cancel = g.Cancel()
    threading.Timer(0.1, cancel.set).start()
    with pytest.raises(Cancelled):
        run(make_backend(rsps, read_timeout=5), chat(stream=False), cancel)
    assert rsps.server("a").hung_up(timeout=2), "the upstream sees the connection close, and can stop"


def test_a_client_that_leaves_while_the_upstream_prefills_closes_the_stream_before_its_first_event(rsps):
    add_answer(rsps, "late", stall=5)
    cancel = g.Cancel()
    threading.Timer(0.1, cancel.set).start()
    with pytest.raises(Cancelled):
        run(make_backend(rsps, read_timeout=5), chat(), cancel)
    assert rsps.server("a").hung_up(timeout=2)


def test_a_whole_answer_is_still_bound_by_the_read_timeout(rsps):
    add_whole(rsps, folded([chunk("late"), chunk(finish="stop")]), stall=5)
    with pytest.raises(BackendUnavailable) as err:
        run(make_backend(rsps, read_timeout=0.3), chat(stream=False))
    assert "unreachable" in err.value.message


# ---------------------------------------------------------------- failover and endpoint selection

def test_failover_on_500_uses_the_second_endpoint_and_passes_over_the_first(rsps):
    add_error(rsps, 500, "down", url=rsps.a)
    add_answer(rsps, "from B", url=rsps.b)
    backend = make_backend(rsps, urls=(rsps.a, rsps.b))
    assert text_of(run(backend, chat())) == "from B"
    assert [c.request.url for c in rsps.calls] == [rsps.a + "/chat/completions", rsps.b + "/chat/completions"]
    assert not backend.pool.endpoints[0].healthy and backend.pool.endpoints[1].healthy
    assert text_of(run(backend, chat())) == "from B"
    assert rsps.calls[-1].request.url.startswith(rsps.b) and len(rsps.calls) == 3


@pytest.mark.parametrize("how", ["refused", "dropped"])
def test_failover_when_the_first_endpoint_is_unreachable(rsps, how):
    first = rsps.refused_url() + "/v1" if how == "refused" else rsps.a
    if how == "dropped":
        _fail_unreachable(rsps)
    add_answer(rsps, "from B", url=rsps.b)
    backend = make_backend(rsps, urls=(first, rsps.b))
    assert text_of(run(backend, chat())) == "from B"
    assert [c.request.url for c in rsps.calls] == [rsps.a + "/chat/completions"] * (how == "dropped") + [
        rsps.b + "/chat/completions"]
    assert not backend.pool.endpoints[0].healthy and backend.pool.endpoints[1].healthy


def test_failover_on_429(rsps):
    add_error(rsps, 429, "busy", url=rsps.a)
    add_answer(rsps, "from B", url=rsps.b)
    assert text_of(run(make_backend(rsps, urls=(rsps.a, rsps.b)), chat())) == "from B"


def test_client_errors_are_not_retried_elsewhere(rsps):
    add_error(rsps, 400, "bad", url=rsps.a)
    add_answer(rsps, "from B", url=rsps.b)
    with pytest.raises(InvalidRequest):
        run(make_backend(rsps, urls=(rsps.a, rsps.b)), chat())
    assert len(rsps.calls) == 1


def test_every_endpoint_failing_raises_the_last_error(rsps):
    add_error(rsps, 500, "A down", url=rsps.a)
    _fail_unreachable(rsps, rsps.b)
    with pytest.raises(BackendUnavailable):
        run(make_backend(rsps, urls=(rsps.a, rsps.b)), chat())
    assert len(rsps.calls) == 2


def test_endpoints_that_are_all_down_are_still_tried(rsps):
    backend = make_backend(rsps, urls=(rsps.a, rsps.b))
    for endpoint in backend.pool.endpoints:
        backend.pool.failed(endpoint, "earlier")
    add_answer(rsps, "back", url=rsps.a)
    add_answer(rsps, "back", url=rsps.b)
    assert text_of(run(backend, chat())) == "back"


def test_least_outstanding_endpoint_is_chosen(rsps):
    add_answer(rsps, "from A", url=rsps.a)
    add_answer(rsps, "from B", url=rsps.b)
    backend = make_backend(rsps, urls=(rsps.a, rsps.b))
    a, b = backend.pool.endpoints
    first = backend.generate(chat(), g.Cancel())
    assert isinstance(next(first), g.Accepted)
    assert (a.outstanding, b.outstanding) == (1, 0)
    second = backend.generate(chat(), g.Cancel())
    next(second)
    assert (a.outstanding, b.outstanding) == (1, 1)
    assert rsps.calls[-1].request.url.startswith(rsps.b)
    assert text_of(second) == "from B"
    assert b.outstanding == 0
    first.close()
    assert a.outstanding == 0
    run(backend, chat())
    assert rsps.calls[-1].request.url.startswith(rsps.a)


def test_endpoint_pool_orders_healthy_by_outstanding():
    pool = upstream.EndpointPool(["http://a/", "http://b", "http://c"])
    a, b, c = pool.endpoints
    assert a.url == "http://a"
    a.outstanding, b.outstanding = 2, 1
    pool.failed(c, "x")
    assert pool.ordered() == [b, a, c]
    pool.succeeded(c)
    assert pool.ordered() == [c, b, a]
    with pytest.raises(ValueError):
        upstream.EndpointPool([])


# ---------------------------------------------------------------- model lists

MODEL_LIST = {"object": "list", "data": [{"id": "llama-3-8b", "object": "model", "created": 1_700_000_000,
                                          "owned_by": "vllm"}, {"id": "qwen2.5", "object": "model"}]}


def test_models_are_fetched_and_cached(rsps):
    rsps.add(GET, rsps.a + "/models", json=MODEL_LIST)
    backend = make_backend(rsps)
    models = backend.models()
    assert [(m.name, m.backend, m.modified_at) for m in models] == [("llama-3-8b", "up", 1_700_000_000),
                                                                   ("qwen2.5", "up", 0)]
    assert backend.has_model("qwen2.5") and not backend.has_model("nope")
    assert backend.models() == models
    assert len(rsps.calls) == 1
    assert rsps.calls[0].request.headers["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("setup", [
    lambda m: m.add(GET, m.a + "/models", json={"error": {"message": "x"}}, status=500),
    lambda m: m.add(GET, m.a + "/models", drop=True),
    lambda m: m.add(GET, m.a + "/models", body="<html>", content_type="text/html"),
    lambda m: m.add(GET, m.a + "/models", json={"data": [{"name": "no id"}]}),
    lambda m: m.add(GET, m.a + "/models", json=["not", "an", "object"]),
], ids=["500", "unreachable", "not-json", "no-id", "not-object"])
def test_a_failing_model_list_lists_nothing(rsps, caplog, setup):
    setup(rsps)
    backend = make_backend(rsps)
    assert backend.models() == []
    assert not backend.has_model("anything") and not backend.check()
    assert "cannot list the models of up" in caplog.text
    assert KEY not in caplog.text


@pytest.mark.parametrize("entry, length", [
    ({"max_model_len": 32768, "context_length": 1}, 32768),  # vLLM
    ({"context_length": 131072}, 131072),  # OpenRouter, Together, shim itself
    ({"context_window": 8192}, 8192),  # Groq
    ({"max_context_length": 4096}, 4096),  # Mistral, LM Studio
    ({"meta": {"n_ctx": 2048, "n_ctx_train": 8192}}, 2048),  # llama.cpp forks that report the served window
    ({"meta": {"n_ctx_train": 8192}}, 8192),  # llama-server: only the trained window
    ({"max_model_len": 0, "context_length": "big", "context_window": True}, 0),
    ({}, 0),
])
def test_the_context_length_comes_from_the_model_lists_own_fields(rsps, entry, length):
    rsps.add(GET, rsps.a + "/models", json={"data": [{"id": "m", "object": "model", **entry}]})
    assert make_backend(rsps).models()[0].context_length == length


@pytest.mark.parametrize("listed, capabilities", [
    (None, ("completion", "tools")),
    (["completion", "tools", "vision"], ("completion", "tools", "vision")),
    (["embedding"], ("embedding",)),
    (["chat", "tool_use"], ("completion", "tools")),  # another vocabulary than Ollama's: the default
    ({"function_calling": True}, ("completion", "tools")),
])
def test_capabilities_are_completion_and_tools_unless_the_upstream_lists_its_own(rsps, listed, capabilities):
    entry = {"id": "m"} if listed is None else {"id": "m", "capabilities": listed}
    rsps.add(GET, rsps.a + "/models", json={"data": [entry]})
    assert make_backend(rsps).models()[0].capabilities == capabilities


def test_the_backends_configured_description_wins_over_the_upstreams(rsps):
    rsps.add(GET, rsps.a + "/models", json={"data": [{"id": "m", "max_model_len": 32768}]})
    backend = OpenAICompatBackend(BackendConfig(name="up", type="openai", urls=(rsps.a,), context_length=8192,
                                                capabilities=("completion",)))
    assert [(m.capabilities, m.context_length) for m in backend.models()] == [(("completion",), 8192)]


def test_model_list_fails_over(rsps):
    rsps.add(GET, rsps.a + "/models", drop=True)
    rsps.add(GET, rsps.b + "/models", json=MODEL_LIST)
    backend = make_backend(rsps, urls=(rsps.a, rsps.b))
    assert [m.name for m in backend.models()] == ["llama-3-8b", "qwen2.5"]
    assert backend.check()


def test_a_name_no_backend_lists_is_unavailable_while_a_backend_cannot_be_asked(rsps):
    down_url = rsps.refused_url() + "/v1"
    rsps.add(GET, rsps.b + "/models", json=MODEL_LIST)
    down, live = (OpenAICompatBackend(BackendConfig(name=name, type="openai", urls=(url,), api_key=KEY))
                  for name, url in (("down", down_url), ("live", rsps.b)))
    router = Router({"down": down, "live": live}, [], dynamic=["down", "live"])
    assert router.resolve("qwen2.5") == (live, "qwen2.5")
    with pytest.raises(BackendUnavailable) as err:
        router.resolve("llama3")
    assert err.value.status == 503 and err.value.param == "model"
    assert "down" in err.value.message and "llama3" in err.value.message
    assert "live" not in err.value.message and KEY not in err.value.message
    assert urlsplit(down_url).netloc not in err.value.message
    assert [m.name for m in router.models()] == ["llama-3-8b", "qwen2.5"]
    with pytest.raises(ModelNotFound):
        Router({"live": live}, [], dynamic=["live"]).resolve("llama3")


def test_model_list_cache_refreshes_after_ttl():
    calls = []
    cache = upstream.ModelListCache(lambda: calls.append(1) or [len(calls)], ttl=0)
    assert cache.get() == [1] and cache.get() == [2]
    cache = upstream.ModelListCache(lambda: calls.append(1) or [len(calls)], ttl=60)
    assert cache.get() == cache.get() == [3]


# ---------------------------------------------------------------- the pure helpers directly

def test_upstream_request_for_a_chat():
    path, body = protocol.upstream_request(chat(max_tokens=3, stop=("x",)))
    assert path == "/chat/completions"
    assert body == {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 3,
                    "stop": ["x"], "messages": [{"role": "user", "content": "hi"}]}


# ---------------------------------------------------------------- fields shim does not know

EXTRAS = {"chat_template_kwargs": {"enable_thinking": False}, "guided_json": {"type": "object"},
          "guided_decoding_backend": "xgrammar", "top_a": 0.2, "repetition_penalty_range": [1, {"x": None}]}


def test_fields_shim_does_not_know_reach_the_upstream_unchanged(rsps):
    add_stream(rsps, sse_text(chunk("ok", finish="stop")))
    run(make_backend(rsps), chat(extra_fields=EXTRAS, sampling=g.Sampling(top_k=5, repeat_penalty=1.1)))
    body = sent(rsps)
    assert {k: body[k] for k in EXTRAS} == EXTRAS
    assert (body["top_k"], body["repetition_penalty"], body["model"], body["stream"]) == (5, 1.1, "m", True)


def test_fields_shim_sets_win_over_unknown_ones_of_the_same_name():
    _, body = protocol.upstream_request(chat(extra_fields={"model": "other", "stream": False, "x": 1}))
    assert (body["model"], body["stream"], body["x"]) == ("m", True, 1)


def test_unknown_fields_reach_a_legacy_completion_too():
    path, body = protocol.upstream_request(g.GenerationRequest(model="m", prompt="a", raw=True,
                                                               extra_fields={"guided_regex": "[0-9]+"}))
    assert path == "/completions" and body["guided_regex"] == "[0-9]+"


def _backend_that(mock, unknown_fields):
    return OpenAICompatBackend(BackendConfig(name="strict", type="openai", urls=(mock.a,),
                                             unknown_fields=unknown_fields))


def test_a_backend_set_to_refuse_unknown_fields_names_the_field(rsps):
    with pytest.raises(InvalidRequest) as err:
        run(_backend_that(rsps, "refuse"), chat(extra_fields={"guided_json": {}}))
    assert err.value.param == "guided_json" and "unknown_fields" in err.value.message and not rsps.calls
    add_stream(rsps, sse_text(chunk("ok", finish="stop")))
    run(_backend_that(rsps, "refuse"), chat())  # a request without any is served


def test_a_backend_set_to_drop_unknown_fields_leaves_them_out(rsps):
    add_stream(rsps, sse_text(chunk("ok", finish="stop")))
    run(_backend_that(rsps, "drop"), chat(extra_fields=EXTRAS))
    assert not set(EXTRAS) & set(sent(rsps))


def test_upstream_request_ignores_backend_native_options():
    _, body = protocol.upstream_request(chat(backend_options={"mirostat": 2}, num_ctx=8192, keep_alive=30))
    assert not {"mirostat", "options", "num_ctx", "keep_alive"} & set(body)


def test_upstream_reader_holds_finishes_until_the_end():
    reader = protocol.UpstreamReader()
    assert reader.events(chunk("a", finish=None)) == [g.TextDelta("a")]
    assert reader.events(chunk(finish="stop")) == []
    assert reader.events(usage_chunk(3, 1)) == []
    timings = g.Timings(10, 0, 4, 6)
    assert reader.end(timings) == [g.Finish("stop", 0, g.Usage(3, 1), timings)]


def test_upstream_reader_keeps_the_upstream_cached_token_count():
    reader = protocol.UpstreamReader()
    reader.events(chunk("a", finish="stop"))
    reader.events({**usage_chunk(30, 2), "usage": {"prompt_tokens": 30, "completion_tokens": 2, "total_tokens": 32,
                                                   "prompt_tokens_details": {"cached_tokens": 24}}})
    assert reader.end(g.Timings())[0].usage == g.Usage(30, 2, 24)


def test_upstream_reader_keeps_the_upstream_reasoning_token_count():
    reader = protocol.UpstreamReader()
    reader.events(chunk("a", finish="stop"))
    reader.events({**usage_chunk(30, 9), "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39,
                                                   "completion_tokens_details": {"reasoning_tokens": 7}}})
    assert reader.end(g.Timings())[0].usage == g.Usage(30, 9, 0, 7)


def test_upstream_reader_with_nothing_read_still_finishes():
    assert protocol.UpstreamReader().end(g.Timings()) == [g.Finish("stop", 0, g.Usage(0, 0), g.Timings())]


def test_upstream_reader_refuses_errors_and_non_objects():
    with pytest.raises(ValueError, match="boom"):
        protocol.UpstreamReader().events({"error": {"message": "boom"}})
    with pytest.raises(ValueError):
        protocol.UpstreamReader().events("text")


def test_upstream_reader_keeps_the_stop_string_vllm_reports():
    reader = protocol.UpstreamReader()
    reader.events({**chunk("a", finish="stop"), "choices": [{**chunk("a", finish="stop")["choices"][0],
                                                             "stop_reason": "\nUser:"}]})
    reader.events({**chunk(index=1, finish="stop"), "choices": [{**chunk(index=1, finish="stop")["choices"][0],
                                                                 "stop_reason": 128009}]})
    first, second = reader.end(g.Timings())
    assert (first.stop_sequence, second.stop_sequence) == ("\nUser:", None)


def test_reasoning_effort_goes_upstream_and_reasoning_comes_back(rsps):
    reasoning = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": {"reasoning": "Let me think."}, "finish_reason": None}]}
    add_stream(rsps, sse_text(reasoning, chunk("Hi", finish="stop"), usage_chunk(5, 4)))
    events = run(make_backend(rsps), chat(think=g.Think(True, "high")))
    assert sent(rsps)["reasoning_effort"] == "high"
    assert g.collect(events)[0].thinking == "Let me think." and text_of(events) == "Hi"
    assert finishes(events)[0].usage.reasoning_tokens == 1


LONG_TEXT = "word " * 4000
"20 KB in one event: far longer than the read buffer."


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_long_events_arrive_whole(rsps, framing):
    add_stream(rsps, _pieces(sse_text(chunk(LONG_TEXT, role="assistant"), chunk("!"), chunk(finish="stop")), 3000),
               framing=framing)
    assert text_of(run(make_backend(rsps), chat())) == LONG_TEXT + "!"


# ---------------------------------------------------------------- the fake upstream itself

def _get(url, path):
    """Status and body of a GET through http.client on a new connection."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request("GET", parts.path + path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_the_fake_answers_a_url_registered_twice_in_turn_then_repeats_the_last_as_responses_does(rsps):
    rsps.add(GET, rsps.a + "/x", body="one")
    rsps.add(GET, rsps.a + "/x", body="two", status=201)
    rsps.add(GET, rsps.a + "/y", json={"y": 1})
    assert [_get(rsps.a, "/x") for _ in range(3)] == [(200, b"one"), (201, b"two"), (201, b"two")]
    assert _get(rsps.a, "/y?q=1") == (200, b'{"y": 1}')
    assert [c.request.path for c in rsps.calls] == ["/v1/x"] * 3 + ["/v1/y"]
    assert [c.connection for c in rsps.calls] == [1, 2, 3, 4]


def test_the_fake_resets_drops_and_refuses_for_real(rsps):
    rsps.add(GET, rsps.a + "/reset", body=["abc", "def"], end="reset")
    rsps.add(GET, rsps.a + "/drop", drop=True)
    parts = urlsplit(rsps.a)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/reset HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        with pytest.raises(ConnectionResetError):
            while data := sock.recv(65536):
                received += data
    assert received.endswith(b"Content-Length: 7\r\nConnection: close\r\n\r\nabcdef"), received
    with pytest.raises(http.client.RemoteDisconnected):
        _get(rsps.a, "/drop")
    with pytest.raises(ConnectionRefusedError):
        _get(rsps.refused_url(), "/")
    assert [c.request.path for c in rsps.calls] == ["/v1/reset", "/v1/drop"]
