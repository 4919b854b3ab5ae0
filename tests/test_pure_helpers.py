"""Unit tests for the pure helpers: stop scanning, tool-call text, settings and model routing."""
import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shim import generation as g
from shim.backends import toolcalls as tc
from shim.backends.stops import StopScanner
from shim.config import BackendConfig, ModelConfig, Settings
from shim.errors import ConfigError, ModelNotFound, UpstreamError
from shim.router import Route, Router

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


# ---------------------------------------------------------------- toolcalls.forced_schema / with_instructions

def call_schema(name, arguments):
    return {"type": "object", "properties": {"name": {"const": name}, "arguments": arguments},
            "required": ["name", "arguments"]}


def test_forced_schema_named_function():
    assert tc.forced_schema(TOOLS, "get_weather") == call_schema("get_weather", dict(WEATHER.parameters))


def test_forced_schema_required_offers_every_tool():
    assert tc.forced_schema(TOOLS, "required") == {"anyOf": [call_schema("get_weather", dict(WEATHER.parameters)),
                                                             call_schema("noop", {"type": "object"})]}


def test_forced_schema_adds_object_type_without_touching_the_tool():
    tool = g.Tool("t", parameters={"properties": {"a": {"type": "integer"}}})
    schema = tc.forced_schema([tool], "t")
    assert schema["properties"]["arguments"] == {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert "type" not in tool.parameters


def test_with_instructions_prepends_system_note():
    out = tc.with_instructions([{"role": "user", "content": "Hi"}], TOOLS, "auto")
    assert [m["role"] for m in out] == ["system", "user"]
    assert '"name": "get_weather"' in out[0]["content"] and '"name": "noop"' in out[0]["content"]
    assert "otherwise answer in plain text" in out[0]["content"]


def test_with_instructions_appends_to_existing_system_message():
    out = tc.with_instructions([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                               TOOLS, "required")
    assert len(out) == 2 and out[0]["content"].startswith("Be brief.\n\nYou can call these tools:")
    assert "plain text" not in out[0]["content"]


def test_with_instructions_turns_tool_results_into_user_turns():
    out = tc.with_instructions([{"role": "tool", "content": "18C", "name": "get_weather"},
                                {"role": "tool", "content": "ok"}], TOOLS, None)
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


def test_router_close_closes_backends_that_can_close():
    backend = FakeBackend()
    Router({"a": backend, "b": object()}, []).close()
    assert backend.closed


@pytest.mark.parametrize("configured, workers, cores, expected", [(None, 1, 2, 2), (None, 2, 2, 1), (None, 4, 2, 1),
                                                                  (3, 2, 2, 3)])
def test_threads_per_worker_shares_the_cores(monkeypatch, configured, workers, cores, expected):
    from shim.backends import threads_per_worker
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert threads_per_worker(Settings(n_threads=configured, workers=workers)) == expected


@pytest.mark.parametrize("tools, choice, mode", [
    ((), "required", (False, False)), (("t",), "none", (False, False)), (("t",), None, (True, False)),
    (("t",), "auto", (True, False)), (("t",), "required", (True, True)), (("t",), "get_weather", (True, True))])
def test_call_mode_says_whether_tools_count_and_a_call_is_forced(tools, choice, mode):
    request = g.GenerationRequest(model="m", prompt="p", tools=tools, tool_choice=choice)
    assert tc.call_mode(request) == mode


def test_configuration_doc_lists_every_setting_with_its_environment_name():
    import pathlib
    import re
    from shim.config import env_settings
    doc = (pathlib.Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| `(SHIM_\w+)`", doc, re.M))
    expected = {name: key for key, (name, _kind) in env_settings().items()}
    assert rows == expected


def test_every_scalar_setting_reads_from_the_environment():
    import dataclasses
    from shim.config import env_settings
    scalar = {f.name for f in dataclasses.fields(Settings)} - {"models", "backends"}
    assert {name for name, _kind in env_settings().values()} == scalar
