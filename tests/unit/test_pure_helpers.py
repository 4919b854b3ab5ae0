"""Unit tests for the pure helpers: stop scanning, tool-call text, settings and model routing."""
import itertools
import json
import re
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shim import generation as g
from shim.backends import toolcalls as tc
from shim.backends.output import ChoiceOutput
from shim.backends.stops import StopScanner
from shim.config import BackendConfig, ModelConfig, Settings
from shim.errors import ConfigError, InvalidRequest, ModelNotFound, UpstreamError
from shim.protocols import fields
from shim.router import Route, Router
from tests.fakes import choice_of

WEATHER = g.Tool("get_weather", "Weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}})
NOOP = g.Tool("noop")
TOOLS = (WEATHER, NOOP)


def feed_all(scanner, pieces):
    return [scanner.feed(p) for p in pieces]


# ---------------------------------------------------------------- StopScanner

def test_stop_scanner_without_stops_passes_everything():
    s = StopScanner([])
    assert feed_all(s, ["a", "b"]) == ["a", "b"] and s.flush() == "" and not s.stopped


def test_stop_scanner_ignores_empty_stop_strings():
    assert StopScanner(["", "x"]).stops == ("x",)


def test_stop_scanner_stop_inside_one_piece_is_cut():
    s = StopScanner(["END"])
    assert s.feed("done END more") == "done " and s.stopped


def test_stop_scanner_stop_split_across_pieces():
    s = StopScanner(["world"])
    assert feed_all(s, ["Hello wo", "r", "ld!"]) == ["Hello ", "", ""]
    assert s.stopped and s.flush() == ""


def test_stop_scanner_holds_back_partial_prefix_then_releases_it():
    s = StopScanner(["world"])
    assert feed_all(s, ["say w", "o", "w!"]) == ["say ", "", "wow!"]
    assert not s.stopped


def test_stop_scanner_flush_returns_held_text():
    s = StopScanner(["</s>"])
    assert s.feed("bye </") == "bye "
    assert s.flush() == "</" and s.flush() == ""
    assert not s.stopped


def test_stop_scanner_holds_longest_partial_over_all_stops():
    s = StopScanner(["abcd", "cx"])
    assert s.feed("zabc") == "z"
    assert s.feed("x") == "ab" and s.stopped


def test_stop_scanner_earliest_stop_wins():
    s = StopScanner(["END", "\n\n"])
    assert s.feed("a\n\nbEND") == "a" and s.stopped


def test_stop_scanner_names_the_stop_that_matched():
    s = StopScanner(["END", "\n\n"])
    assert s.matched is None
    feed_all(s, ["a\n", "\nb"])
    assert s.stopped and s.matched == "\n\n"


def _cut_by_search(stops, pieces):
    """What a scanner must emit: at each piece, the earliest stop found anywhere in the text so far wins."""
    text = ""
    for piece in pieces:
        text += piece
        hits = [(i, s) for i, s in ((text.find(s), s) for s in stops) if i >= 0]
        if hits:
            return text[: min(hits)[0]], True
    return text, False


@settings(max_examples=400, deadline=None)
@given(stops=st.lists(st.text("abc", min_size=1, max_size=4), max_size=5),
       pieces=st.lists(st.text("abcd", max_size=5), max_size=8))
def test_stop_scanner_matches_a_search_of_the_whole_text(stops, pieces):
    s, emitted = StopScanner(stops), ""
    for piece in pieces:
        emitted += "" if s.stopped else s.feed(piece)
    expected, stopped = _cut_by_search([x for x in stops if x], pieces)
    assert s.stopped == stopped
    assert emitted + ("" if stopped else s.flush()) == expected
    if stopped:
        assert s.matched in stops and "".join(pieces)[len(expected):].startswith(s.matched)


def _ops_to_scan(stops, pieces):
    """Bytecodes run inside stops.py while the pieces are fed: work counted, not timed."""
    import sys

    from shim.backends import stops as module
    scanner, count = StopScanner(stops), [0]

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != module.__file__:
            return None
        frame.f_trace_opcodes = True
        if event == "opcode":
            count[0] += 1
        return tracer
    sys.settrace(tracer)
    try:
        feed_all(scanner, pieces)
    finally:
        sys.settrace(None)
    return count[0]


def test_stop_scanner_work_per_piece_does_not_grow_with_the_number_of_stops():
    pieces = ["The", " quick", " brown", " fox", " jumps"] * 20
    few = _ops_to_scan(["<|im_end|>"], pieces)
    many = _ops_to_scan(["<|im_end|>"] + [f"stop number {i}" for i in range(2000)], pieces)
    assert many <= few * 1.5, (few, many)


# ---------------------------------------------------------------- toolcalls.parse_calls

def args(call):
    return json.loads(call.arguments)


@pytest.mark.parametrize("text", [
    '{"name": "get_weather", "arguments": {"city": "Paris"}}',
    '  {"name": "get_weather", "arguments": {"city": "Paris"}}\n',
    '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
    '{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}',
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}',
])
def test_parse_calls_single_call_spellings(text):
    [call] = tc.parse_calls(text, TOOLS)
    assert (call.name, args(call)) == ("get_weather", {"city": "Paris"})
    assert re.fullmatch(r"call_[a-z0-9]{24}", call.id)


@pytest.mark.parametrize("text", [
    '[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "noop", "arguments": {}}]',
    '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>\n'
    '<tool_call>{"name": "noop", "arguments": {}}</tool_call>',
])
def test_parse_calls_several_calls(text):
    calls = tc.parse_calls(text, TOOLS)
    assert [(c.name, args(c)) for c in calls] == [("get_weather", {"city": "Paris"}), ("noop", {})]
    assert calls[0].id != calls[1].id


def test_parse_calls_missing_arguments_means_empty_object():
    assert args(tc.parse_calls('{"name": "noop"}', TOOLS)[0]) == {}


@pytest.mark.parametrize("text", [
    "The weather is fine.",
    "",
    "[]",
    '{"name": "launch_rockets", "arguments": {}}',
    '[{"name": "noop", "arguments": {}}, {"name": "unknown", "arguments": {}}]',
    '{"name": "noop", "arguments": [1]}',
    '{"name": "noop", "arguments": "not json"}',
    '{"city": "Paris"}',
    '{"name": "get_weather", "arguments": {"city": ',
])
def test_parse_calls_returns_none_when_not_only_calls(text):
    assert tc.parse_calls(text, TOOLS) is None


# ---------------------------------------------------------------- toolcalls.CallCatcher

def test_call_catcher_passes_prose_through_at_once():
    c = tc.CallCatcher(TOOLS, forced=False)
    assert [c.feed("Hello"), c.feed(" {there}")] == ["Hello", " {there}"]
    assert c.finish() == ("", [])


def test_call_catcher_holds_leading_whitespace_until_it_decides():
    c = tc.CallCatcher(TOOLS, forced=False)
    assert [c.feed("  "), c.feed("\nHi")] == ["", "  \nHi"]


def test_call_catcher_holds_json_and_returns_calls():
    c = tc.CallCatcher(TOOLS, forced=False)
    pieces = ['{"name": "get_', 'weather", "arguments": ', '{"city": "Paris"}}']
    assert [c.feed(p) for p in pieces] == ["", "", ""]
    text, calls = c.finish()
    assert text == "" and [(x.name, args(x)) for x in calls] == [("get_weather", {"city": "Paris"})]


def test_call_catcher_held_json_that_is_no_call_comes_back_as_text():
    c = tc.CallCatcher(TOOLS, forced=False)
    c.feed('{"answer": 42}')
    assert c.finish() == ('{"answer": 42}', [])


def test_call_catcher_forced_holds_even_prose():
    c = tc.CallCatcher(TOOLS, forced=True)
    assert c.feed("Sorry") == ""
    assert c.finish() == ("Sorry", [])


def test_call_catcher_tagged_call():
    c = tc.CallCatcher(TOOLS, forced=False)
    c.feed('<tool_call>{"name": "noop", "arguments": {}}</tool_call>')
    assert [x.name for x in c.finish()[1]] == ["noop"]


# ---------------------------------------------------------------- a call cut off (max_tokens, a stop sequence)

@pytest.mark.parametrize("text, expected", [
    ('{"name": "get_weather", "arguments": {"city": "Par', [("get_weather", '{"city": "Par')]),
    ('  {"name": "get_weather", "arguments": {"city": "Paris"}', [("get_weather", '{"city": "Paris"}')]),
    ('{"name": "get_weather", "argu', [("get_weather", "")]),
    ('{"name": "get_weather"', [("get_weather", "")]),
    ('{"name": "get_wea', []),
    ('{"na', []),
    ("{", []),
    ('[{"name": "noop", "arguments": {}}, {"name": "get_weather", "arguments": {"ci',
     [("noop", "{}"), ("get_weather", '{"ci')]),
    ('<tool_call>{"name": "noop", "arguments": {}}</tool_call>\n<tool_call>{"name": "get_weather", "arguments": {',
     [("noop", "{}"), ("get_weather", "{")]),
    ("<tool_c", []),
])
def test_partial_calls_keep_whole_calls_and_the_cut_one_as_far_as_it_got(text, expected):
    calls = tc.partial_calls(text, TOOLS)
    assert [(c.name, c.arguments) for c in calls] == expected
    assert all(re.fullmatch(r"call_[a-z0-9]{24}", c.id) for c in calls)


@pytest.mark.parametrize("text", ["The weather is", "", "[1, 2", "<b>bold", '"quoted'])
def test_partial_calls_of_text_that_opens_no_envelope_is_none(text):
    assert tc.partial_calls(text, TOOLS) is None


def choice_output(tools=TOOLS, choice="required", **fields):
    events = []
    request = g.GenerationRequest(model="m", messages=(g.Message("user", "Hi"),), tools=tools,
                                  tool_choice=choice_of(choice), **fields)
    return ChoiceOutput(events.append, 0, request), events


def feed_output(output, pieces):
    for piece in pieces:
        output.add(piece.encode(), None)


CUT_CALL = ['{"name": "get_', 'weather", "arguments": ', '{"city": "Par']


@pytest.mark.parametrize("choice", ["required", "get_weather", "auto"])
def test_a_call_cut_off_by_max_tokens_is_a_partial_call_never_text(choice):
    output, events = choice_output(choice=choice)
    feed_output(output, CUT_CALL)
    assert output.close("length") == "length"
    assert [e.text for e in events if isinstance(e, g.TextDelta)] in ([], [""])
    [delta] = [e for e in events if isinstance(e, g.ToolCallDelta)]
    assert (delta.call.name, delta.call.arguments, delta.position) == ("get_weather", '{"city": "Par', 0)


def test_a_call_cut_off_inside_its_name_gives_neither_call_nor_text():
    output, events = choice_output()
    feed_output(output, ['{"name": "get_'])
    assert output.close("length") == "length"
    assert not [e for e in events if isinstance(e, g.ToolCallDelta) or e.text]


def test_a_call_cut_off_by_a_stop_sequence_is_not_text():
    output, events = choice_output(stop=("Par",))
    feed_output(output, CUT_CALL)
    assert output.close("stop") == "stop"
    assert not [e for e in events if isinstance(e, g.TextDelta) and e.text]
    assert [e.call.arguments for e in events if isinstance(e, g.ToolCallDelta)] == ['{"city": "']


def test_a_call_completed_on_the_last_token_is_whole():
    output, events = choice_output(choice="auto")
    feed_output(output, ['{"name": "noop", "arguments": {}}'])
    assert output.close("length") == "tool_calls"
    assert [e.call.name for e in events if isinstance(e, g.ToolCallDelta)] == ["noop"]


def test_prose_cut_off_with_tools_on_stays_text():
    output, events = choice_output(choice="auto")
    feed_output(output, ["It is sunny ", '{"name": "noop"'])
    assert output.close("length") == "length"
    assert "".join(e.text for e in events if isinstance(e, g.TextDelta)) == 'It is sunny {"name": "noop"'
    assert not [e for e in events if isinstance(e, g.ToolCallDelta)]


# ---------------------------------------------------------------- toolcalls.forced_schema / with_instructions

def call_schema(name, arguments):
    return {"type": "object", "properties": {"name": {"const": name}, "arguments": arguments},
            "required": ["name", "arguments"]}


def test_forced_schema_named_function():
    assert tc.forced_schema(TOOLS, choice_of("get_weather")) == call_schema("get_weather", dict(WEATHER.parameters))


def test_forced_schema_required_offers_every_tool():
    assert tc.forced_schema(TOOLS, choice_of("required")) == {"anyOf": [call_schema("get_weather", dict(WEATHER.parameters)),
                                                             call_schema("noop", {"type": "object"})]}


def test_forced_schema_adds_object_type_without_touching_the_tool():
    tool = g.Tool("t", parameters={"properties": {"a": {"type": "integer"}}})
    schema = tc.forced_schema([tool], choice_of("t"))
    assert schema["properties"]["arguments"] == {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert "type" not in tool.parameters


def test_with_instructions_prepends_system_note():
    out = tc.with_instructions([{"role": "user", "content": "Hi"}], TOOLS, choice_of("auto"))
    assert [m["role"] for m in out] == ["system", "user"]
    assert '"name": "get_weather"' in out[0]["content"] and '"name": "noop"' in out[0]["content"]
    assert "otherwise answer in plain text" in out[0]["content"]


def test_with_instructions_appends_to_existing_system_message():
    out = tc.with_instructions([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                               TOOLS, choice_of("required"))
    assert len(out) == 2 and out[0]["content"].startswith("Be brief.\n\nYou can call these tools:")
    assert "plain text" not in out[0]["content"]


def test_with_instructions_turns_tool_results_into_user_turns():
    out = tc.with_instructions([{"role": "tool", "content": "18C", "name": "get_weather"},
                                {"role": "tool", "content": "ok"}], TOOLS, choice_of(None))
    assert out[1:] == [{"role": "user", "content": "Result of get_weather: 18C"},
                       {"role": "user", "content": "Result of the tool: ok"}]


def test_calls_as_text_single_and_many():
    one = [g.ToolCall("c", "noop", "{}")]
    assert json.loads(tc.calls_as_text(one)) == {"name": "noop", "arguments": {}}
    assert json.loads(tc.calls_as_text(one * 2)) == [{"name": "noop", "arguments": {}}] * 2


# ---------------------------------------------------------------- Settings.load

TOML = """
host = "0.0.0.0"
port = 9000
embedded_model = false

[[models]]
name = "tiny"
path = "/models/tiny.gguf"
aliases = ["tiny:latest"]
n_ctx = 2048

[[models]]
name = "llama3"
backend = "up"

[backends.up]
type = "ollama"
url = "http://localhost:11434"
models = ["llama*"]
"""


@pytest.fixture
def toml_file(tmp_path):
    path = tmp_path / "shim.toml"
    path.write_text(TOML)
    return path


def test_settings_load_defaults_from_empty_environ():
    s = Settings.load(environ={})
    assert (s.host, s.port, s.embedded_model, s.models, s.backends, s.keep_alive) == (
        "127.0.0.1", 8000, True, (), (), -1)


def test_settings_load_environ_values_are_typed():
    s = Settings.load(environ={"SHIM_PORT": "9001", "SHIM_EMBEDDED_MODEL": "off", "SHIM_KEEP_ALIVE": "300",
                               "SHIM_N_THREADS": "4", "SHIM_LOG_LEVEL": "debug", "SHIM_HOST": "", "OTHER": "x"})
    assert (s.port, s.embedded_model, s.keep_alive, s.n_threads, s.log_level, s.host) == (
        9001, False, 300.0, 4, "debug", "127.0.0.1")


@pytest.mark.parametrize("raw, value", [("1", True), ("yes", True), ("TRUE", True), ("0", False), ("no", False)])
def test_settings_load_environ_booleans(raw, value):
    assert Settings.load(environ={"SHIM_EMBEDDED_MODEL": raw}).embedded_model is value


@pytest.mark.parametrize("environ", [{"SHIM_PORT": "eighty"}, {"SHIM_EMBEDDED_MODEL": "maybe"},
                                     {"SHIM_KEEP_ALIVE": "forever"}, {"SHIM_PORT": "70000"}])
def test_settings_load_bad_environ_raises_config_error(environ):
    with pytest.raises(ConfigError):
        Settings.load(environ=environ)


def test_settings_load_toml_file(toml_file):
    s = Settings.load(environ={}, path=str(toml_file))
    assert (s.host, s.port, s.embedded_model) == ("0.0.0.0", 9000, False)
    assert s.models == (ModelConfig("tiny", path="/models/tiny.gguf", aliases=("tiny:latest",), n_ctx=2048),
                        ModelConfig("llama3", backend="up"))
    assert s.backends == (BackendConfig("up", "ollama", url="http://localhost:11434",
                                        urls=("http://localhost:11434",), models=("llama*",)),)


def test_settings_load_environ_overrides_toml_named_by_shim_config(toml_file):
    s = Settings.load(environ={"SHIM_CONFIG": str(toml_file), "SHIM_PORT": "9100"})
    assert (s.port, s.host) == (9100, "0.0.0.0")


@pytest.mark.parametrize("text", [
    'colour = "blue"',
    '[[models]]\nname = "x"',
    '[[models]]\nname = "x"\nbackend = "nowhere"',
    '[[models]]\nname = "x"\npath = "/x.gguf"\nflavour = "sweet"',
    '[backends.up]\ntype = "grpc"\nurl = "http://x"',
    'port = 0',
    'port = = 1',
])
def test_settings_load_invalid_toml_raises_config_error(tmp_path, text):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        Settings.load(environ={}, path=str(path))


def test_settings_load_missing_file_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        Settings.load(environ={}, path=str(tmp_path / "absent.toml"))


def test_settings_management_is_off_admin_or_open():
    assert Settings().management == "admin" and Settings().admin_keys == ()
    assert Settings.load(environ={"SHIM_MANAGEMENT": "open", "SHIM_ADMIN_KEYS": "a, b"}).admin_keys == ("a", "b")
    with pytest.raises(ConfigError, match="management 'yes' must be off, admin or open"):
        Settings(management="yes").validate()


def test_settings_load_wrongly_typed_toml_value_raises_config_error(tmp_path):
    path = tmp_path / "typed.toml"
    path.write_text('port = "8080"')
    with pytest.raises(ConfigError):
        Settings.load(environ={}, path=str(path))


@pytest.mark.parametrize("name", ["max_embed_inputs", "max_embed_bytes"])
def test_settings_refuse_an_embeddings_limit_below_one(name):
    assert getattr(Settings.load(environ={f"SHIM_{name.upper()}": "1"}), name) == 1
    with pytest.raises(ConfigError, match=name):
        Settings.load(environ={f"SHIM_{name.upper()}": "0"})


# ---------------------------------------------------------------- Router

class FakeBackend:
    def __init__(self, names=(), fail=False):
        self.names, self.fail, self.closed = names, fail, False

    def models(self):
        if self.fail:
            raise UpstreamError("upstream is down")
        return [g.ModelInfo(n, "fake") for n in self.names]

    def close(self):
        self.closed = True


LOCAL, UP = FakeBackend(["smollm2:135m"]), FakeBackend(["gpt-4o"])
ROUTER = Router({"local": LOCAL, "up": UP}, [
    Route("smollm2:135m", "local", "smollm2:135m"),
    Route("smollm2", "local", "smollm2:135m"),
    Route("qwen:latest", "up"),
    Route("gpt-*", "up"),
    Route("claude-*", "up", "claude-fixed"),
    Route("gpt-special", "local", "special"),
])


@pytest.mark.parametrize("name, backend, target", [
    ("smollm2:135m", LOCAL, "smollm2:135m"),
    ("smollm2", LOCAL, "smollm2:135m"),
    ("smollm2:latest", LOCAL, "smollm2:135m"),
    ("qwen", UP, "qwen:latest"),
    ("qwen:latest", UP, "qwen:latest"),
    ("gpt-4o", UP, "gpt-4o"),
    ("gpt-4o:latest", UP, "gpt-4o:latest"),
    ("claude-3", UP, "claude-fixed"),
    ("gpt-special", LOCAL, "special"),
])
def test_router_resolve(name, backend, target):
    assert ROUTER.resolve(name) == (backend, target)


@pytest.mark.parametrize("name, key", [
    ("smollm2:135m", "smollm2:135m"),
    ("smollm2", "smollm2:135m"),
    ("smollm2:latest", "smollm2:135m"),
    ("qwen", "qwen:latest"),
    ("gpt-4o", "gpt-*"),
    ("gpt-anything-at-all:latest", "gpt-*"),
    ("claude-3", "claude-fixed"),
])
def test_router_route_keys_by_the_route_not_the_spelling(name, key):
    assert ROUTER.route(name).key == key


class UpstreamLike(FakeBackend):
    def has_model(self, name):
        return name in self.names


def test_router_route_keys_a_listed_model_of_a_dynamic_backend_by_its_listed_name():
    router = Router({"up": UpstreamLike(["llama3:latest"])}, [], dynamic=["up"])
    assert router.route("llama3").key == "llama3:latest"


@pytest.mark.parametrize("name", ["llama3", "smollm2:1.7b", "GPT-4o", ""])
def test_router_resolve_unknown_raises_model_not_found(name):
    with pytest.raises(ModelNotFound) as info:
        ROUTER.resolve(name)
    assert (info.value.name, info.value.param, info.value.status) == (name, "model", 404)


def test_router_models_lists_each_routable_name_once():
    # Listed: named routes whose target the backend has, then backend models a pattern routes; not unlisted names.
    assert [m.name for m in ROUTER.models()] == ["smollm2:135m", "smollm2", "gpt-4o"]


def test_router_models_skips_failing_backend():
    router = Router({"local": FakeBackend(["a"]), "up": FakeBackend(fail=True)},
                    [Route("a", "local"), Route("*", "up")])
    assert [m.name for m in router.models()] == ["a"]


def test_router_close_closes_every_backend():
    backend = FakeBackend()
    Router({"a": backend, "b": g.Backend()}, []).close()
    assert backend.closed


def test_backend_base_refuses_what_a_backend_does_not_declare_by_name():
    from shim.errors import Unsupported
    backend = g.Backend()
    backend.name, backend.description = "up", "an example server"
    with pytest.raises(Unsupported, match="'m' does not support embeddings") as refused:
        backend.embed("m", ["x"])
    assert refused.value.param == "model"
    with pytest.raises(Unsupported, match="not available on backend 'up' \\(an example server\\)"):
        backend.manage("pull", model="m")
    assert (backend.check(), backend.show("m"), backend.load("m"), backend.can_manage) == (True, None, "load", False)
    with pytest.raises(NotImplementedError):
        backend.models()


def test_every_registered_backend_type_is_a_backend_and_config_accepts_exactly_those():
    from shim.backend_types import BACKEND_TYPES, backend_class
    for type_name in BACKEND_TYPES:
        assert issubclass(backend_class(type_name), g.Backend)
        Settings.from_mapping({"backends": {"up": {"type": type_name, "url": "http://x"}}})
    with pytest.raises(ConfigError, match="expected one of"):
        Settings.from_mapping({"backends": {"up": {"type": "grpc", "url": "http://x"}}})


@pytest.mark.parametrize("configured, workers, cores, expected", [(None, 1, 2, 2), (None, 2, 2, 1), (None, 4, 2, 1),
                                                                  (3, 2, 2, 3)])
def test_threads_per_worker_shares_the_cores(monkeypatch, configured, workers, cores, expected):
    from shim.backends import threads_per_worker
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert threads_per_worker(Settings(n_threads=configured, workers=workers)) == expected


@pytest.mark.parametrize("tools, choice, mode", [
    ((), "required", (False, False)), ((WEATHER,), "none", (False, False)), ((WEATHER,), None, (True, False)),
    ((WEATHER,), "auto", (True, False)), ((WEATHER,), "required", (True, True)), ((WEATHER,), "get_weather", (True, True))])
def test_call_mode_says_whether_tools_count_and_a_call_is_forced(tools, choice, mode):
    request = g.GenerationRequest(model="m", prompt="p", tools=tools, tool_choice=choice_of(choice))
    assert tc.call_mode(request) == mode


def test_a_function_named_like_a_mode_is_a_named_choice():
    from shim.protocols import openai as oa
    tools = [{"type": "function", "function": {"name": name}} for name in ("none", "auto", "required")]
    for name in ("none", "auto", "required"):
        request = oa.parse_chat({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "tools": tools,
                                 "tool_choice": {"type": "function", "function": {"name": name}}}).request
        assert tc.call_mode(request) == (True, True)
        assert tc.forced_schema(request.tools, request.tool_choice)["properties"]["name"] == {"const": name}


def test_tool_choice_offers_the_tools_it_allows():
    tools = (WEATHER, NOOP, g.Tool("other"))
    assert g.ToolChoice().offered(tools) == tools and g.ToolChoice("required").offered(tools) == tools
    assert g.ToolChoice("none").offered(tools) == ()
    assert g.ToolChoice.named("noop").offered(tools) == (NOOP,)
    assert g.ToolChoice("auto", allowed=("other", "get_weather")).offered(tools) == (WEATHER, tools[2])
    assert g.ToolChoice("required").forced and g.ToolChoice.named("x").forced
    assert not g.ToolChoice("auto").forced and not g.ToolChoice("none").forced


def test_required_among_allowed_tools_forces_one_of_them_only():
    request = g.GenerationRequest(model="m", prompt="p", tools=TOOLS,
                                  tool_choice=g.ToolChoice("required", allowed=("noop",)))
    assert tc.call_mode(request) == (True, True)
    assert tc.forced_schema(request.tools, request.tool_choice)["properties"]["name"] == {"const": "noop"}


def test_collect_gathers_reasoning_apart_from_text_and_usage_adds_reasoning_tokens():
    events = [g.Accepted(), g.ReasoningDelta("Hmm. "), g.ReasoningDelta("Yes."), g.TextDelta("Hi"),
              g.Finish("stop", usage=g.Usage(5, 4, 2, 3)), g.ReasoningDelta("x", 1), g.Finish("stop", 1,
                                                                                             g.Usage(5, 2, 2, 1))]
    choices = g.collect(events)
    assert [(c.text, c.thinking) for c in choices] == [("Hi", "Hmm. Yes."), ("", "x")]
    assert g.total_usage(choices) == g.Usage(5, 6, 2, 4)


def test_configuration_doc_lists_every_setting_with_its_environment_name():
    import pathlib
    import re

    from shim.config import env_settings
    doc = (pathlib.Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| `(SHIM_\w+)`", doc, re.M))
    expected = {name: key for key, (name, _kind) in env_settings().items()}
    assert rows == expected


def test_every_scalar_setting_reads_from_the_environment():
    import dataclasses

    from shim.config import env_settings
    scalar = {f.name for f in dataclasses.fields(Settings)} - {"models", "backends"}
    assert {name for name, _kind in env_settings().values()} == scalar


def test_framing_objects_write_each_wire_format():
    from shim.streaming import NDJSON, SSE, NamedSSE
    chunk = {"type": "message_start", "text": "a\u2028b"}
    assert SSE().frame(chunk) == b'data: {"type":"message_start","text":"a\\u2028b"}\n\n'
    assert NamedSSE().frame(chunk) == b"event: message_start\n" + SSE().frame(chunk)
    assert NDJSON().frame(chunk) == b'{"type":"message_start","text":"a\\u2028b"}\n'
    assert (SSE().heartbeat(), SSE().close()) == (b": ping\n\n", b"data: [DONE]\n\n")
    assert (NamedSSE().close(), NDJSON().heartbeat(), NDJSON().close()) == (b"", b"", b"")
    assert NamedSSE(ping={"type": "ping"}).heartbeat() == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_framing_json_is_what_json_dumps_writes_for_every_kind_of_value():
    from shim.streaming import dumps
    value = {"s": "héllo \"q\" \\ \n 世界 🎉", "i": -3, "big": 10 ** 30, "f": 0.1, "e": 1e300, "nan": float("nan"),
             "t": True, "n": None, "list": [1, [], {}, (2, 3)], 7: "int key", "nested": {"a": [{"b": None}]}}
    assert dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert dumps("top") == '"top"' and dumps(None) == "null"
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps({"x": object()})


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2 ** 63, max_value=2 ** 64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_frames_written_by_orjson_are_what_dumps_writes(value):
    from shim.streaming import dumpb, dumps
    try:
        expected = dumps(value).encode()
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 for it either way
        with pytest.raises(UnicodeEncodeError):
            dumpb(value)
        return
    written = dumpb(value)
    # Floats may be spelled otherwise (orjson writes 0.00001 where json writes 1e-05): the same number either way.
    assert json.loads(written) == json.loads(expected)
    if not _holds_float(value):
        assert written == expected


def _holds_float(value):
    if isinstance(value, float):
        return True
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_holds_float(item) for item in items)


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_json_read_by_orjson_is_what_json_loads_reads(value):
    from shim.streaming import loads
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        return  # orjson reads only what is valid UTF-8; upstreams' answers are bytes
    assert loads(text) == json.loads(text) and loads(text.encode()) == json.loads(text)


def test_what_orjson_does_not_write_or_read_as_json_does_is_left_to_json():
    from shim.streaming import dumpb, loads
    odd = {"big": 10 ** 30, 7: "int key", "line": "a\u2028b\u2029c\u0085d", "s": "\ud800"[:0] + "é"}
    assert dumpb(odd) == json.dumps(odd, ensure_ascii=False, separators=(",", ":")).replace(
        "\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\u0085", "\\u0085").encode()
    with pytest.raises(UnicodeEncodeError):
        dumpb({"lone": "\ud800"})
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumpb({"x": object()})
    # NaN and the infinities have no JSON spelling: orjson writes null where json wrote NaN, which strict readers
    # (JavaScript's JSON.parse, in the agent CLIs) refuse.
    assert dumpb({"x": float("nan"), "y": float("-inf")}) == b'{"x":null,"y":null}'
    assert loads('{"a": NaN, "b": -Infinity}')["b"] == float("-inf")
    with pytest.raises(ValueError):
        loads(b"{not json")


def test_with_heartbeats_hands_over_whatever_is_queued_at_once_and_beats_when_nothing_comes():
    from shim.streaming import HEARTBEAT
    from shim.threads import with_heartbeats
    go, produced, release = threading.Event(), threading.Event(), threading.Event()

    def items():
        yield "a"
        go.wait(5)
        yield from "bc"
        produced.set()  # b and c are queued: the source is asked for its next item
        release.wait(5)
        yield "d"
    batches = with_heartbeats(items(), 0.05)
    assert next(batches) == ["a"]
    go.set()
    assert produced.wait(5)
    assert next(batches) == ["b", "c"], "items already queued must go out together, as one write"
    assert next(batches) == [HEARTBEAT]
    release.set()
    assert [b for b in batches if b != [HEARTBEAT]] == [["d"]]


def test_a_beating_channel_gives_heartbeats_while_its_thread_is_silent_and_its_error_at_the_end():
    from shim.streaming import HEARTBEAT, PAUSE
    from shim.threads import Channel, Courier, start_thread
    channel, courier = Channel(), Courier()

    def produce():
        channel.put("a")
        time.sleep(0.35)
        courier.put(channel, "b")
        courier.fail(channel, ValueError("late"))
        courier.flush()
    start_thread(produce)
    items = (item for item in channel.beating(0.1) if item is not PAUSE)
    assert next(items) == "a" and [next(items) for _ in range(3)] == [HEARTBEAT] * 3
    rest = []
    with pytest.raises(ValueError, match="late"):
        rest.extend(itertools.islice(items, 20))  # (at most: a producer that died would be beaten for ever)
    assert rest[-1] == "b" and set(rest[:-1]) <= {HEARTBEAT}


@pytest.mark.parametrize("reason", ["length", "stop"])
def test_a_character_cut_off_at_the_end_is_left_out_not_replaced(reason):
    # An answer cut by max_tokens inside a multi-byte character ended in U+FFFD (the decoder's final flush).
    output, events = choice_output(tools=(), choice=None)
    output.add("Hi ".encode(), None)
    output.add("😎".encode()[:2], None)
    output.close(reason)
    assert "".join(e.text for e in events if isinstance(e, g.TextDelta)) == "Hi "


def test_empty_options_parse_as_the_defaults_and_set_ones_still_apply():
    from shim.protocols import options as opts
    assert opts.parse_options({}) == opts.Options()
    parsed = opts.parse_options({"temperature": 0.5, "num_predict": 7, "stop": ["x"]})
    assert (parsed.sampling.temperature, parsed.max_tokens, parsed.stop) == (0.5, 7, ("x",))
    with pytest.raises(InvalidRequest):
        opts.parse_options([])


def test_merge_sampling_keeps_base_values_the_override_leaves_unset():
    from shim.protocols import options as opts
    base = g.Sampling(temperature=0.3, top_k=5)
    assert opts.merge_sampling(base, g.Sampling()) == base
    assert opts.merge_sampling(base, g.Sampling(top_k=9)) == g.Sampling(temperature=0.3, top_k=9)


@pytest.mark.parametrize("body, kwargs, message", [
    ({}, dict(required=True, within="messages[2]"), "'messages[2].role' is required"),
    ({"role": 1}, dict(within="messages[2]"), "'messages[2].role' must be a string, got an integer"),
    ({"role": 1}, dict(param="r", within="messages[2]"), "'r' must be a string, got an integer"),
    ({"role": 1}, {}, "'role' must be a string, got an integer"),
])
def test_fields_get_names_the_field_within_its_parent(body, kwargs, message):
    with pytest.raises(InvalidRequest) as err:
        fields.get(body, "role", str, **kwargs)
    assert (err.value.message, err.value.param) == (message, message.split("'")[1])


def test_a_generation_request_replaced_is_what_dataclasses_replace_makes():
    import dataclasses
    request = g.GenerationRequest(model="a", messages=(g.Message("user", "hi"),), stop=("x",), max_tokens=3,
                                  sampling=g.Sampling(temperature=0.5), extra_fields={"k": 1}, stream=False)
    changes = {"model": "b", "keep_alive": 60.0, "heartbeat_seconds": 5.0}
    copy = request.replaced(**changes)
    assert copy == dataclasses.replace(request, **changes) and type(copy) is g.GenerationRequest
    assert (request.model, request.heartbeat_seconds) == ("a", None)
    with pytest.raises(TypeError, match="no field modle"):
        request.replaced(modle="b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        copy.model = "c"


def test_a_named_event_is_framed_alike_the_first_time_its_name_is_seen_and_after_even_past_the_names_kept(monkeypatch):
    from shim import streaming
    monkeypatch.setattr(streaming, "_EVENT_HEADS", {})
    monkeypatch.setattr(streaming, "_EVENT_HEADS_KEPT", 2)
    events = [{"type": f"kind.{n % 3}", "delta": "\u00e9\u2028", "n": n} for n in range(6)]
    frames = [streaming.sse_named_frame(e) for e in events]
    assert frames == [b"event: " + e["type"].encode() + b"\ndata: " + streaming.dumpb(e) + b"\n\n" for e in events]
    assert sorted(streaming._EVENT_HEADS) == ["kind.0", "kind.1"]


@pytest.mark.parametrize("ascii_only, separators", [(False, (",", ":")), (True, (", ", ": "))])
@pytest.mark.parametrize("value", [
    {"model": "m", "messages": [{"role": "user", "content": "h\u00e9 \u2028 \U0001f600 \"q\" \\ \n"}]},
    {"a": [1, 2.5, -0.0, 1e-05, 1e300, 12345678901234567890123, None, True, False, {}, []]},
    "just a string", 3, None, [], {"nested": {"deeper": [{"x": 1}]}},
])
def test_strict_dumper_writes_as_json_dumps_writes(ascii_only, separators, value):
    from shim.streaming import strict_dumper
    expected = json.dumps(value, ensure_ascii=ascii_only, separators=separators, allow_nan=False)
    assert strict_dumper(ascii_only, separators)(value) == expected


@pytest.mark.parametrize("value", [float("nan"), {"t": float("inf")}, [float("-inf")]])
def test_strict_dumper_refuses_nan_and_infinities_as_json_dumps_does(value):
    from shim.streaming import strict_dumper
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        strict_dumper(False, (",", ":"))(value)
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        json.dumps(value, allow_nan=False)
