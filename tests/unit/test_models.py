"""Model listing and description, context limits and who may unload: unit tests over fakes and pure helpers."""
import json
import struct

import jinja2.ext
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from shim import generation as g
from shim.app import create_app
from shim.backends import gguf, prompts, toolcalls
from shim.backends.llamacpp import LocalModel
from shim.config import ModelConfig, Settings
from shim.errors import ConfigError
from shim.protocols.tools import render_tool
from shim.router import Route, Router
from tests.fakes import FakeBackend, choice_of


class Listed:
    """A backend that lists fixed models."""

    def __init__(self, *infos):
        self.infos = infos

    def models(self):
        return list(self.infos)

    def has_model(self, name):
        return any(i.name == name for i in self.infos)


SMOL = g.ModelInfo("smollm2:135m", "local", digest="abc", size=98, loaded=True)


def embedded_router(*extra):
    return Router({"local": Listed(SMOL)}, [Route("smollm2:135m", "local", "smollm2:135m"),
                                            Route("smollm2", "local", "smollm2:135m"),
                                            Route("smollm2:latest", "local", "smollm2:135m"), *extra])


# ---------------------------------------------------------------- listing

def test_every_tag_a_model_answers_to_is_listed_with_one_digest():
    listed = {m.name: m for m in embedded_router().models()}
    # As Ollama lists each tag; the bare name is its :latest spelling, not a model of its own.
    assert list(listed) == ["smollm2:135m", "smollm2:latest"]
    assert listed["smollm2:latest"].digest == listed["smollm2:135m"].digest == "abc"
    assert listed["smollm2:latest"].size == 98


def test_a_bare_name_meaning_another_model_than_its_latest_tag_is_listed():
    other = g.ModelInfo("other", "local")
    router = Router({"local": Listed(SMOL, other)}, [Route("smollm2:135m", "local"), Route("x", "local", "other"),
                                                     Route("x:latest", "local", "smollm2:135m")])
    assert [m.name for m in router.models()] == ["smollm2:135m", "x", "x:latest"]


def test_loaded_models_are_listed_once_under_their_own_name():
    router = embedded_router(Route("gpt-3.5-turbo", "local", "smollm2:135m"))
    assert [m.name for m in router.loaded()] == ["smollm2:135m"]


def test_ps_lists_a_loaded_model_once(client):
    # The client fixture's router also names the model "alias".
    assert [m["name"] for m in client.get("/api/ps").get_json()["models"]] == ["fake-model"]


# ---------------------------------------------------------------- the template /api/show reports

def hf_render(template, **context):
    """A chat template rendered as Hugging Face's apply_chat_template renders it."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
    return env.from_string(template).render(add_generation_prompt=True, **context)


TOOLS = (g.Tool("get_weather", "Weather in a city", {"type": "object", "properties": {"city": {"type": "string"}}}),
         g.Tool("add", "Add two numbers", {"type": "object", "properties": {"a": {"type": "number"}}}))
CONVERSATIONS = [
    [{"role": "user", "content": "Weather in Paris?"}],
    [{"role": "system", "content": "Be brief.", "name": "ops"}, {"role": "user", "content": "Weather in Paris?"},
     {"role": "assistant", "content": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
     {"role": "tool", "content": "22C", "name": "get_weather"}, {"role": "tool", "content": "no name"}],
]


@pytest.mark.parametrize("messages", CONVERSATIONS)
@pytest.mark.parametrize("choice", [None, "auto", "required", "get_weather"])
def test_the_reported_template_renders_the_prompt_shim_builds(messages, choice):
    shown = toolcalls.template_with_tools(prompts.CHATML)
    built = hf_render(prompts.CHATML, messages=toolcalls.with_instructions(messages, TOOLS, choice_of(choice)))
    context = {"tool_choice": choice} if choice else {}
    assert hf_render(shown, messages=messages, tools=[render_tool(t) for t in TOOLS], **context) == built
    assert "tools" in shown and shown.endswith(prompts.CHATML)


def test_the_reported_template_without_tools_renders_as_the_models_own():
    shown = toolcalls.template_with_tools(prompts.CHATML)
    messages = CONVERSATIONS[1][:3]
    assert hf_render(shown, messages=messages) == hf_render(prompts.CHATML, messages=messages)


def test_a_template_that_knows_tools_is_reported_as_it_is():
    template = "{% if tools %}{{ tools | tojson }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}"
    assert toolcalls.template_with_tools(template) == template


def test_show_reports_the_served_window_over_the_trained_one():
    from shim.protocols import ollama as protocol
    info = g.ModelInfo("m", "local", family="llama", context_length=4096,
                       extra={"parameter_count": 134515008,
                              "model_info": {"llama.context_length": 8192, "shim.trained_context": 8192}})
    model_info = protocol.render_show(info)["model_info"]
    assert model_info["llama.context_length"] == 4096 and model_info["shim.trained_context"] == 8192
    assert model_info["general.parameter_count"] == 134515008


# ---------------------------------------------------------------- parameter count from the GGUF tensors

def _gguf_string(text):
    return struct.pack("<Q", len(text)) + text.encode()


def test_parameter_count_is_counted_from_the_tensor_shapes(tmp_path):
    path = tmp_path / "tiny.gguf"
    header = b"GGUF" + struct.pack("<IQQ", 3, 2, 1)
    header += _gguf_string("general.architecture") + struct.pack("<I", 8) + _gguf_string("llama")
    for name, dims in (("token_embd.weight", (64, 100)), ("output_norm.weight", (64,))):
        header += _gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
        header += struct.pack("<IQ", 0, 0)
    path.write_bytes(header)
    assert gguf.read_header(str(path)) == ({"general.architecture": "llama"}, 64 * 100 + 64)


def test_a_truncated_tensor_table_is_a_gguf_error(tmp_path):
    path = tmp_path / "cut.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, 0) + _gguf_string("token_embd.weight") + b"\x02\x00")
    with pytest.raises(gguf.GGUFError):
        gguf.read_header(str(path))


# ---------------------------------------------------------------- capabilities

CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}"
QWEN3 = "{% if tools %}...{% endif %}{% if enable_thinking is defined %}<think>\n\n</think>{% endif %}"
GPT_OSS = "{% if tools %}...{% endif %}{{ message.reasoning_content }}"  # reasoning, but no <think> to split off


@pytest.mark.parametrize("metadata, template, found", [
    ({"general.architecture": "llama"}, CHATML, ("completion",)),
    ({"general.architecture": "qwen3"}, QWEN3, ("completion", "tools", "thinking")),
    ({"general.architecture": "gpt-oss"}, GPT_OSS, ("completion", "tools")),
    ({"general.architecture": "qwen2", "tokenizer.ggml.fim_pre_token_id": 151659}, CHATML, ("completion", "insert")),
    ({"general.architecture": "llama", "tokenizer.ggml.prefix_token_id": 32007}, CHATML, ("completion", "insert")),
    ({"general.architecture": "bert", "bert.pooling_type": 2}, "", ("embedding",)),
])
def test_capabilities_are_derived_from_the_gguf(metadata, template, found):
    assert gguf.capabilities(metadata, template) == found


@pytest.mark.parametrize("derived, served", [
    (("completion",), ("completion", "tools")),  # shim prompts for tools on every generating model
    (("completion", "tools", "insert", "thinking"), ("completion", "tools", "thinking")),  # it refuses suffix
    (("embedding",), ("embedding",)),
])
def test_only_what_the_local_runtime_serves_is_reported(derived, served):
    from shim.backends.llamacpp import served as local_served
    assert local_served(derived) == served


def _tiny_gguf(path, metadata):
    """A GGUF with string/u32 metadata and no tensors."""
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, len(metadata))
    for key, value in metadata.items():
        header += _gguf_string(key) + (struct.pack("<I", 8) + _gguf_string(value) if isinstance(value, str)
                                       else struct.pack("<II", 4, value))
    path.write_bytes(header)
    return str(path)


def test_a_local_embedding_model_is_described_as_one_with_its_served_window(tmp_path):
    path = _tiny_gguf(tmp_path / "embed.gguf", {"general.architecture": "bert", "bert.pooling_type": 2,
                                                "bert.context_length": 512})
    info = LocalModel(ModelConfig(name="e", path=path, n_ctx=256), n_threads=1).info()
    assert (info.capabilities, info.context_length) == (("embedding",), 256)


def test_the_configured_capabilities_of_a_model_win_under_every_name_it_answers_to():
    from shim.backends import model_overrides
    settings = Settings.from_mapping({"embedded_model": False, "backends": {"vllm": {"type": "openai", "url": "x"}},
                                      "models": [{"name": "fast", "backend": "vllm", "target": "meta/llama",
                                                  "capabilities": ["completion"], "context_length": 32768}]})
    upstream = g.ModelInfo("meta/llama", "vllm", capabilities=("completion", "tools"), context_length=131072)
    router = Router({"vllm": Listed(upstream)}, [Route("fast", "vllm", "meta/llama")], dynamic=["vllm"],
                    overrides=model_overrides(settings.models))
    described = [(m.name, m.capabilities, m.context_length) for m in router.models()]
    assert described == [("fast", ("completion",), 32768), ("meta/llama", ("completion",), 32768)]
    assert router.describe("fast")[2] == router.describe("meta/llama")[2] == router.models()[1]


@pytest.mark.parametrize("entry, message", [
    ({"name": "a", "backend": "up", "capabilities": ["completion", "chat"]}, "capabilities must be a list of"),
    ({"name": "a", "backend": "up", "capabilities": "tools"}, "capabilities must be a list of"),
    ({"name": "a", "backend": "up", "context_length": 0}, "context_length must be a positive"),
    ({"name": "a", "backend": "up", "context_length": "8k"}, "context_length must be a positive"),
    ({"name": "a", "path": "/a.gguf", "context_length": 8192}, "a local model's context length is its n_ctx"),
])
def test_a_wrong_model_description_is_refused_at_start(entry, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_mapping({"embedded_model": False, "backends": {"up": {"type": "openai", "url": "x"}},
                               "models": [entry]})


@pytest.mark.parametrize("backend, message", [
    ({"capabilities": ["vision", "sight"]}, "capabilities must be a list of"),
    ({"context_length": -5}, "context_length must be a positive"),
    ({"unknown_fields": "keep"}, "unknown_fields 'keep' must be one of pass, refuse, drop"),
])
def test_a_wrong_backend_description_is_refused_at_start(backend, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_mapping({"embedded_model": False, "backends": {"up": {"type": "openai", "url": "x", **backend}}})


# ---------------------------------------------------------------- num_ctx limit

def local_model(n_ctx=4096, max_ctx=None, trained=8192):
    model = LocalModel(ModelConfig(name="m", path="/m.gguf", n_ctx=n_ctx, max_ctx=max_ctx), n_threads=1)
    model._header = ({"general.architecture": "llama", "llama.context_length": trained}, 0)
    return model


@pytest.mark.parametrize("max_ctx, asked, window", [
    (None, 1_000_000, 4096),   # by default no request grows the window past the configured n_ctx
    (None, 2048, 2048),        # a smaller window runs inside the loaded one
    (6000, 1_000_000, 6000),   # the operator's limit
    (100_000, 1_000_000, 8192),  # never past what the model was trained for
    (None, None, 4096),
])
def test_num_ctx_is_cut_to_max_ctx(max_ctx, asked, window):
    assert local_model(max_ctx=max_ctx).context_for(asked) == window


@pytest.mark.parametrize("setting, per_model, expected", [(0, None, 2048), (6000, None, 6000), (6000, 3000, 3000)])
def test_max_ctx_comes_from_the_model_then_the_setting_then_n_ctx(setting, per_model, expected):
    from shim.backends import local_models
    settings = Settings(embedded_model=False, max_ctx=setting,
                        models=(ModelConfig(name="a", path="/a.gguf", n_ctx=2048, max_ctx=per_model),))
    assert [m.max_ctx for m in local_models(settings)] == [expected]


@pytest.mark.parametrize("values", [{"max_ctx": -1}, {"models": [{"name": "a", "path": "/a.gguf", "max_ctx": 0}]}])
def test_a_negative_max_ctx_is_refused_at_start(values):
    with pytest.raises(ConfigError, match="max_ctx"):
        Settings.from_mapping({"embedded_model": False, **values})


# ---------------------------------------------------------------- who may change a shared model's lifetime

def app_client(fake, **settings):
    router = Router({"fake": fake}, [Route("fake-model", "fake", "fake-model")])
    return create_app(Settings(embedded_model=False, **settings), router=router).test_client()


def test_by_default_a_clients_keep_alive_does_not_reach_the_backend(fake):
    client = app_client(fake)
    for path, body in (("/api/chat", {"messages": [{"role": "user", "content": "Hi"}]}), ("/api/generate", {
            "prompt": "Hi"}), ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})):
        reply = client.post(path, json={"model": "fake-model", "stream": False, "keep_alive": 0, **body})
        assert reply.status_code == 200 and fake.history[-1].keep_alive is None


def test_by_default_a_client_may_not_unload_a_shared_model(fake):
    refused = app_client(fake).post("/api/generate", json={"model": "fake-model", "prompt": "", "keep_alive": 0})
    assert refused.status_code == 403 and "keep_alive" in refused.get_json()["error"]


def test_by_default_a_load_request_loads_with_the_servers_keep_alive():
    loads = []
    backend = FakeBackend()
    backend.load = lambda name, keep_alive=None: loads.append((name, keep_alive)) or "load"
    reply = app_client(backend).post("/api/chat", json={"model": "fake-model", "messages": [], "keep_alive": "1h"})
    assert reply.get_json()["done_reason"] == "load" and loads == [("fake-model", None)]


def test_client_keep_alive_lets_clients_set_it(fake):
    client = app_client(fake, client_keep_alive=True)
    client.post("/api/chat", json={"model": "fake-model", "stream": False, "keep_alive": "5m",
                                   "messages": [{"role": "user", "content": "Hi"}]})
    assert fake.history[-1].keep_alive == 300
    assert client.post("/api/generate", json={"model": "fake-model", "prompt": "", "keep_alive": 0}).status_code == 200
