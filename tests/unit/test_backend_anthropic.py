"""AnthropicBackend against a fake Anthropic-compatible upstream over real HTTP (tests/fake_anthropic.py): the
requests it sends, how it reads named SSE into events, errors (scrubbed), cancellation, failover and model lists."""
import json
import logging
import threading

import pytest
from werkzeug.wrappers import Response

from harness.servers import free_port
from shim import generation as g
from shim.backends import build_router
from shim.backends.anthropic_upstream import AnthropicBackend
from shim.config import BackendConfig, Settings
from shim.errors import (BackendUnavailable, Cancelled, ConfigError, ContextLengthExceeded, ModelNotFound, ServerBusy,
                         ShimError, Unsupported, UpstreamError)
from shim.streaming import HEARTBEAT, PAUSE
from tests import fake_anthropic
from tests.fake_http import FakeHTTP
from tests.fake_upstream import FakeUpstream
from tests.support import WEATHER_TOOL as WEATHER
from tests.support import read_whole, run, text_of

KEY = "sk-ant-SECRET-0123456789abcdef"


@pytest.fixture
def fake():
    with FakeUpstream(fake_anthropic.app) as server:
        yield server


def make_backend(*urls, **fields):
    fields.setdefault("api_key", KEY)
    return AnthropicBackend(BackendConfig(name="claude", type="anthropic", urls=urls, **fields))


def chat(text="hi", model="claude-fake", **fields):
    return g.GenerationRequest(model=model, messages=(g.Message("user", text),), **fields)


def test_text_streams_with_headers_and_usage(fake):
    events = run(make_backend(fake.url, headers={"X-Team": "r"}), chat("Name three colors."))
    assert isinstance(events[0], g.Accepted)
    deltas = [e for e in events if isinstance(e, g.TextDelta)]
    assert text_of(events) == "You said: Name three colors." and len(deltas) == 5
    finish = events[-1]
    assert finish.reason == "stop" and finish.usage.completion_tokens == 5
    assert finish.usage.cached_tokens == 2 and finish.usage.prompt_tokens == 6, "input_tokens (4) + cached (2)"
    sent = fake.requests[-1]
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01" and sent.headers["x-team"] == "r"
    assert "authorization" not in sent.headers
    assert sent.json == {"model": "claude-fake", "max_tokens": 4096, "stream": True,
                         "messages": [{"role": "user", "content": [{"type": "text", "text": "Name three colors."}]}]}


def test_version_and_default_max_tokens_are_settings(fake):
    run(make_backend(fake.url, api_key=None, anthropic_version="2099-01-01", max_tokens_default=3), chat("a b c d e"))
    sent = fake.requests[-1]
    assert sent.headers["anthropic-version"] == "2099-01-01" and "x-api-key" not in sent.headers
    assert sent.json["max_tokens"] == 3


def test_max_tokens_gives_length(fake):
    events = run(make_backend(fake.url), chat("one two three four", max_tokens=2))
    assert text_of(events) == "You said:" and events[-1].reason == "length"


def test_tool_call_round_trip(fake):
    backend = make_backend(fake.url)
    events = run(backend, chat("What is the weather in Paris?", tools=(WEATHER,)))
    calls = [e.call for e in events if isinstance(e, g.ToolCallDelta)]
    assert calls == [g.ToolCall("toolu_fake1", "get_weather", '{"city": "Paris"}')]
    assert events[-1].reason == "tool_calls"
    history = (g.Message("user", "What is the weather in Paris?"), g.Message("assistant", "", tool_calls=tuple(calls)),
               g.Message("tool", "18C and sunny", tool_call_id="toolu_fake1"))
    events = run(backend, g.GenerationRequest(model="claude-fake", messages=history, tools=(WEATHER,)))
    assert text_of(events) == "The tool said: 18C and sunny" and events[-1].reason == "stop"
    assert fake.requests[-1].json["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_fake1", "name": "get_weather", "input": {"city": "Paris"}}]


def test_forced_tool_choice_and_no_parallel_calls_are_sent(fake):
    events = run(make_backend(fake.url), chat("hello", tools=(WEATHER,), tool_choice=g.ToolChoice("required"),
                                               parallel_tool_calls=False))
    assert [e.call.name for e in events if isinstance(e, g.ToolCallDelta)] == ["get_weather"]
    assert fake.requests[-1].json["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_stop_sequence_cuts_and_is_reported(fake):
    events = run(make_backend(fake.url), chat("see you in Paris tomorrow", stop=("Paris",)))
    assert text_of(events) == "You said: see you in " and events[-1].reason == "stop"
    assert fake.requests[-1].json["stop_sequences"] == ["Paris"]
    assert events[-1].stop_sequence == "Paris"


def test_a_whole_message_from_an_upstream_that_does_not_stream():
    def app(record):
        body = {**record.json, "stream": False}
        return Response(json.dumps(fake_anthropic.message(body, *fake_anthropic.answer(body))),
                        mimetype="application/json")
    with FakeUpstream(app) as server:
        events = run(make_backend(server.url), chat("hi there"))
    assert text_of(events) == "You said: hi there" and events[-1].reason == "stop"


@pytest.mark.parametrize("fields", [
    {"text": "Name three colors."},
    {"text": "one two three four", "max_tokens": 2},
    {"text": "see you in Paris tomorrow", "stop": ("Paris",)},
    {"text": "What is the weather in Paris?", "tools": (WEATHER,)},
    {"text": "hello", "tools": (WEATHER,), "tool_choice": g.ToolChoice("required")},
    {"text": "Think first.", "think": g.Think(budget_tokens=2000)},
], ids=["text", "max-tokens", "stop-sequence", "tool-use", "forced-tool", "thinking"])
def test_a_whole_message_reads_as_its_stream_does_and_is_asked_for_without_streaming(fake, fields):
    backend = make_backend(fake.url)
    streamed = run(backend, chat(**fields))
    whole = run(backend, chat(stream=False, **fields))
    assert read_whole(whole) == read_whole(streamed)
    assert whole[-1].usage.completion_tokens > 0 and whole[-1].usage.cached_tokens == 2
    assert [r.json["stream"] for r in fake.requests] == [True, False]
    assert fake.requests[0].json == {**fake.requests[1].json, "stream": True}
    if fields.get("think"):
        assert read_whole(whole)[0].thinking == fake_anthropic.THINKING


def test_a_whole_messages_time_is_all_generation(fake):
    timings = run(make_backend(fake.url), chat(stream=False))[-1].timings
    assert timings.prompt_eval_ns == 0 and timings.eval_ns == timings.total_ns > 0


def _body(body):
    return lambda record: Response(body if isinstance(body, str) else json.dumps(body), mimetype="application/json")


@pytest.mark.parametrize("body, error, message", [
    ({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, ServerBusy, "Overloaded"),
    ({"type": "error", "error": {"type": "api_error", "message": "Internal"}}, UpstreamError, "Internal"),
    ("<html>Bad gateway</html>", UpstreamError, "not JSON"),
    ([{"type": "message"}], UpstreamError, "not a JSON object"),
    ({"type": "message", "content": "hi", "stop_reason": "end_turn"}, UpstreamError, "unreadable"),
    ({"type": "message", "content": [1], "stop_reason": "end_turn"}, UpstreamError, "unreadable"),
    ({"type": "message", "stop_reason": "end_turn"}, UpstreamError, "unreadable"),
], ids=["overloaded-in-200", "api-error-in-200", "not-json", "not-an-object", "content-not-a-list",
        "block-not-an-object", "no-content"])
def test_a_whole_message_that_is_an_error_or_unreadable_is_an_upstream_error(body, error, message):
    with FakeUpstream(_body(body)) as server, pytest.raises(error) as err:
        run(make_backend(server.url), chat(stream=False))
    assert 400 <= err.value.status < 500 or err.value.status in (502, 503)
    assert message in err.value.message


def test_a_client_that_leaves_while_the_upstream_works_on_a_whole_message_closes_its_connection():
    with FakeHTTP() as upstream:
        server = upstream.server()
        upstream.add("POST", server.url + "/v1/messages", json={"type": "message", "content": []}, stall=5)
        cancel = g.Cancel()
        threading.Timer(0.1, cancel.set).start()
        with pytest.raises(Cancelled):
            run(make_backend(server.url, read_timeout=5), chat(stream=False), cancel)
        assert server.hung_up(timeout=2), "the upstream sees the connection close, and can stop"


def test_a_client_that_leaves_while_the_upstream_prefills_closes_the_stream_before_its_first_event():
    with FakeHTTP() as upstream:
        server = upstream.server()
        upstream.add("POST", server.url + "/v1/messages", body="event: ping\ndata: {}\n\n",
                     content_type="text/event-stream", stall=5)
        cancel = g.Cancel()
        threading.Timer(0.1, cancel.set).start()
        with pytest.raises(Cancelled):
            run(make_backend(server.url, read_timeout=5), chat(), cancel)
        assert server.hung_up(timeout=2)


def test_a_whole_message_is_still_bound_by_the_read_timeout():
    with FakeHTTP() as upstream:
        server = upstream.server()
        upstream.add("POST", server.url + "/v1/messages", json={"type": "message", "content": []}, stall=5)
        with pytest.raises(BackendUnavailable):
            run(make_backend(server.url, read_timeout=0.3), chat(stream=False))


def named_sse(*events):
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_a_silent_stream_yields_heartbeats_at_the_interval_then_the_rest(framing):
    start = fake_anthropic.stream_events({"model": "claude-fake", "messages": []}, [], None, None)[0]
    text = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}
    end = [{"type": "content_block_stop", "index": 0},
           {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}},
           {"type": "message_stop"}]
    with FakeHTTP() as upstream:
        server = upstream.server()
        upstream.add("POST", server.url + "/v1/messages", body=[named_sse(start, text, delta), 0.35,
                                                                named_sse(delta, *end)],
                     content_type="text/event-stream", framing=framing)
        events = run(make_backend(server.url, read_timeout=5), chat(heartbeat_seconds=0.1))
    events = [e for e in events if e is not PAUSE]
    beats = [i for i, e in enumerate(events) if e is HEARTBEAT]
    assert len(beats) == 3 and beats == list(range(beats[0], beats[0] + 3))
    assert text_of(events[:beats[0]]) == "Hi" and text_of(events[beats[-1]:]) == "Hi"
    assert events[-1].reason == "stop"


@pytest.mark.parametrize("param, request_", [
    ("response_format", chat(response_format=g.ResponseFormat("json_schema", {"type": "object"}))),
    ("seed", chat(sampling=g.Sampling(seed=1))),
    ("logit_bias", chat(sampling=g.Sampling(logit_bias={1: 1.0}))),
    ("suffix", g.GenerationRequest(model="m", prompt="x", suffix="y")),
    ("n", chat(n=2)),
])
def test_what_cannot_be_carried_is_refused_before_any_request(fake, param, request_):
    with pytest.raises(Unsupported) as err:
        run(make_backend(fake.url), request_)
    assert err.value.param == param and not fake.requests


def test_embeddings_are_refused(fake):
    with pytest.raises(Unsupported):
        make_backend(fake.url).embed("claude-fake", ["x"])


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("model, error, status", [
    ("overloaded", ServerBusy, 429), ("too-long", ContextLengthExceeded, 400), ("missing", ModelNotFound, 404)])
def test_upstream_errors_map_to_shim_errors(fake, model, error, status):
    with pytest.raises(error) as err:
        run(make_backend(fake.url), chat(model=model))
    assert err.value.status == status


def test_too_long_keeps_the_upstream_wording(fake):
    with pytest.raises(ContextLengthExceeded) as err:
        run(make_backend(fake.url), chat(model="too-long"))
    assert "prompt is too long: 300000 tokens > 200000 maximum" in err.value.message


def test_an_error_event_mid_stream_is_raised_after_the_text_so_far(fake):
    events = []
    with pytest.raises(ServerBusy) as err:
        for event in make_backend(fake.url).generate(chat("one two three", model="midstream"), g.Cancel()):
            events.append(event)
    assert text_of(events) == "You" and "Overloaded" in err.value.message


def _echoing(status, kind, where):
    def app(record):
        text = f"invalid x-api-key: {record.headers.get('x-api-key')}"
        if where == "body":
            return Response(json.dumps({"type": "error", "error": {"type": kind, "message": text}}), status=status,
                            mimetype="application/json")
        events = [{"type": "message_start", "message": fake_anthropic.message({"model": "m", "messages": []}, [],
                                                                               None, None)},
                  {"type": "error", "error": {"type": kind, "message": text}}]
        return Response("".join(fake_anthropic.frame(e) for e in events), mimetype="text/event-stream")
    return app


@pytest.mark.parametrize("status, kind, where", [(401, "authentication_error", "body"),
                                                 (403, "permission_error", "body"),
                                                 (500, "api_error", "body"), (200, "api_error", "stream"),
                                                 (200, "invalid_request_error", "stream")])
def test_credentials_echoed_by_the_upstream_are_scrubbed(caplog, status, kind, where):
    caplog.set_level(logging.DEBUG)
    with FakeUpstream(_echoing(status, kind, where)) as server, pytest.raises(ShimError) as err:
        run(make_backend(server.url), chat())
    assert "[redacted]" in err.value.message
    for text in (err.value.message, caplog.text):
        assert KEY not in text and KEY[7:] not in text
    if status in (401, 403):
        assert isinstance(err.value, UpstreamError) and "credentials" in err.value.message


def test_unreachable_is_backend_unavailable():
    with pytest.raises(BackendUnavailable):
        run(make_backend(f"http://127.0.0.1:{free_port()}", connect_timeout=2.0), chat())


def test_an_unreadable_stream_is_an_upstream_error():
    with FakeUpstream(lambda r: Response("event: x\ndata: {nope\n\n", mimetype="text/event-stream")) as server:
        with pytest.raises(UpstreamError) as err:
            run(make_backend(server.url), chat())
    assert "not JSON" in err.value.message


def test_a_stream_that_ends_without_finishing_is_an_upstream_error():
    events = fake_anthropic.stream_events({"model": "m", "messages": [{"role": "user", "content": "a"}],
                                           "max_tokens": 9}, [{"type": "text", "text": "cut"}], "end_turn", None)
    body = "".join(fake_anthropic.frame(e) for e in events[:-2])
    with FakeUpstream(lambda r: Response(body, mimetype="text/event-stream")) as server:
        with pytest.raises(UpstreamError) as err:
            run(make_backend(server.url), chat())
    assert "without finishing" in err.value.message


# ---------------------------------------------------------------- cancellation and failover

def test_a_cancelled_generation_closes_the_upstream_stream(fake):
    cancel, seen = g.Cancel(), 0
    for event in make_backend(fake.url).generate(chat(model="slow"), cancel):
        if isinstance(event, g.TextDelta):
            seen += 1
            if seen == 3:
                cancel.set()
    assert fake_anthropic.SLOW.closed.wait(5), "the upstream must see the connection go"
    assert fake_anthropic.SLOW.sent < 100


def test_closing_the_generator_closes_the_upstream_stream(fake):
    stream = make_backend(fake.url).generate(chat(model="slow"), g.Cancel())
    for event in stream:
        if isinstance(event, g.TextDelta):
            break
    stream.close()
    assert fake_anthropic.SLOW.closed.wait(5) and fake_anthropic.SLOW.sent < 100


def test_failover_on_overloaded_to_the_next_endpoint(fake):
    busy = lambda record: fake_anthropic.app(record) if record.method == "GET" else Response(  # noqa: E731
        json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}), status=529)
    with FakeUpstream(busy) as first:
        backend = make_backend(first.url, fake.url)
        assert text_of(run(backend, chat("hi"))) == "You said: hi"
        assert len(first.requests) == 1 and len(fake.requests) == 1
        run(backend, chat("again"))
        assert len(first.requests) == 1, "the overloaded endpoint is passed over for a while"


def test_client_errors_are_not_retried_elsewhere(fake):
    with FakeUpstream(fake_anthropic.app) as second:
        with pytest.raises(ContextLengthExceeded):
            run(make_backend(fake.url, second.url), chat(model="too-long"))
        assert len(fake.requests) + len(second.requests) == 1


# ---------------------------------------------------------------- models and configuration

def test_models_are_listed_in_anthropic_shape_with_the_headers(fake):
    backend = make_backend(fake.url)
    [info] = backend.models()
    assert info.name == "claude-fake" and info.backend == "claude" and info.extra["display_name"] == "Claude Fake"
    assert info.modified_at == 1739923200.0
    sent = fake.requests[-1]
    assert sent.path == "/v1/models" and sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    backend.models()
    assert len(fake.requests) == 1, "the list is cached"
    assert backend.has_model("claude-fake") and backend.check()


def test_models_are_described_with_the_documented_default_unless_configured(fake):
    [info] = make_backend(fake.url).models()
    assert (info.capabilities, info.context_length) == (("completion", "tools"), 200_000)
    [info] = make_backend(fake.url, context_length=1_000_000, capabilities=("completion", "tools", "vision")).models()
    assert (info.capabilities, info.context_length) == (("completion", "tools", "vision"), 1_000_000)


def test_a_failing_model_list_is_remembered():
    backend = make_backend(f"http://127.0.0.1:{free_port()}", connect_timeout=2.0)
    assert backend.models() == [] and isinstance(backend.list_error, BackendUnavailable)


def test_the_anthropic_type_is_configured_and_built():
    settings = Settings.from_mapping({"embedded_model": False, "backends": {"claude": {
        "type": "anthropic", "url": "http://127.0.0.1:1", "api_key": KEY, "anthropic_version": "2023-06-01",
        "max_tokens_default": 1024, "models": ["claude-*"]}}})
    router = build_router(settings)
    assert isinstance(router.backends["claude"], AnthropicBackend)


@pytest.mark.parametrize("fields, message", [({"type": "claude"}, "expected one of anthropic, ollama, openai"),
                                             ({"type": "anthropic", "max_tokens_default": 0}, "max_tokens_default")])
def test_bad_backend_settings_are_refused(fields, message):
    with pytest.raises(ConfigError) as err:
        Settings.from_mapping({"backends": {"x": {"url": "http://127.0.0.1:1", **fields}}})
    assert message in str(err.value)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_tool_inputs_long_integers_reach_the_arguments_exactly(stream):
    """orjson, which reads the upstream's JSON, reads integers past 64 bits as floats: 123456789012345678901234
    would become 1.2345678901234568e+23 in the call's arguments."""
    arguments = {"id": 123456789012345678901234, "small": 7, "ratio": 0.5}

    def app(record):
        body = {**record.json, "stream": False}
        message = fake_anthropic.message(body, *fake_anthropic.answer(body))
        message["content"] = [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": arguments}]
        message["stop_reason"] = "tool_use"
        return Response(json.dumps(message), mimetype="application/json")
    with FakeUpstream(app) as server:
        events = run(make_backend(server.url), chat("weather?", tools=(WEATHER,), stream=stream))
    calls = [e.call for e in events if isinstance(e, g.ToolCallDelta)]
    assert calls == [g.ToolCall("toolu_1", "get_weather", json.dumps(arguments))]
    assert "123456789012345678901234" in calls[0].arguments
