"""End to end: what shim says of its models (capabilities, context length) through /api/show, /api/tags, /v1/models
and /v1/models/{name} with the official clients: the local SmolLM2, another shim behind the Ollama and OpenAI backends,
a scripted vLLM-like upstream with a configured description winning over its own; and request fields shim does not
know reaching that upstream unchanged (the openai client's extra_body), or refused where the backend is set to."""
import json

import ollama
import openai
import pytest
import requests
from werkzeug.wrappers import Response

from harness.servers import running_shim
from tests.fake_upstream import FakeUpstream, openai_answer

MODELS = {"object": "list", "data": [{"id": "meta/llama", "object": "model", "created": 1, "owned_by": "vllm",
                                      "max_model_len": 32768},
                                     {"id": "embedder", "object": "model", "created": 1, "owned_by": "vllm",
                                      "max_model_len": 512}]}
ANSWER = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "meta/llama",
          "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}
EXTRA_BODY = {"chat_template_kwargs": {"enable_thinking": False}, "guided_json": {"type": "object"},
              "top_k": 5, "repetition_penalty": 1.1, "skip_special_tokens": False}
HI = [{"role": "user", "content": "Hi"}]

CONFIG = """
embedded_model = false

[backends.vllm]
type = "openai"
url = "{url}/v1"

[backends.strict]
type = "openai"
url = "{url}/v1"
unknown_fields = "refuse"
models = ["strict/*"]

[[models]]
name = "embedder"
backend = "vllm"
capabilities = ["embedding"]
context_length = 1024
"""


OVER_SHIM = """
embedded_model = false

[backends.up_ollama]
type = "ollama"
url = "{url}"

[backends.up_openai]
type = "openai"
url = "{url}/v1"

[[models]]
name = "via-ollama"
backend = "up_ollama"
target = "smollm2:135m"

[[models]]
name = "via-openai"
backend = "up_openai"
target = "smollm2:135m"
"""


def vllm(record):
    if record.method == "GET":
        return Response(json.dumps(MODELS), mimetype="application/json")
    return openai_answer(record, ANSWER)


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(vllm) as server:
        yield server


@pytest.fixture(scope="module")
def front(upstream):
    with running_shim(CONFIG.format(url=upstream.url)) as url:
        yield url


@pytest.fixture(scope="module")
def over_shim(shim_url):
    """A front whose models are the real SmolLM2 of another shim, through the Ollama and the OpenAI backends."""
    with running_shim(OVER_SHIM.format(url=shim_url)) as url:
        yield url


def described(url, name):
    """(capabilities, context length) as /api/show, /api/tags, /v1/models and /v1/models/{name} give them."""
    with ollama.Client(host=url, timeout=120) as oll, \
            openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120) as oai:
        shown = oll.show(name)
        arch = shown.modelinfo.get("general.architecture") or "general"
        listed = next(m for m in oai.models.list() if m.id == name)
        retrieved = oai.models.retrieve(name)
    tagged = next(m for m in requests.get(url + "/api/tags", timeout=10).json()["models"] if m["name"] == name)
    return {(tuple(shown.capabilities), shown.modelinfo[f"{arch}.context_length"]),
            (tuple(tagged["capabilities"]), tagged["details"]["context_length"]),
            (tuple(listed.capabilities), listed.context_length),
            (tuple(retrieved.capabilities), retrieved.max_model_len)}


def test_the_local_model_is_described_alike_by_every_endpoint(shim_url):
    assert described(shim_url, "smollm2:135m") == {(("completion", "tools"), 4096)}


@pytest.mark.parametrize("model", ["via-ollama", "via-openai"])
def test_an_upstream_shims_model_is_described_as_that_shim_describes_it(over_shim, model):
    assert described(over_shim, model) == {(("completion", "tools"), 4096)}


def test_an_upstream_models_window_comes_from_its_max_model_len_and_every_endpoint_agrees(front):
    assert described(front, "meta/llama") == {(("completion", "tools"), 32768)}


def test_the_configured_description_wins_everywhere(front):
    assert described(front, "embedder") == {(("embedding",), 1024)}


def test_fields_shim_does_not_know_reach_the_upstream_unchanged(oai, upstream):
    upstream.requests.clear()
    answer = oai.chat.completions.create(model="meta/llama", messages=HI, extra_body=EXTRA_BODY)
    assert answer.choices[0].message.content == "ok"
    sent = next(r.json for r in upstream.requests if r.path == "/v1/chat/completions")
    assert {k: sent[k] for k in EXTRA_BODY} == EXTRA_BODY


def test_a_backend_set_to_refuse_them_names_the_field_in_a_400(oai, upstream):
    upstream.requests.clear()
    with pytest.raises(openai.BadRequestError) as err:
        oai.chat.completions.create(model="strict/llama", messages=HI, extra_body={"guided_json": {}})
    assert err.value.body["param"] == "guided_json" and "unknown_fields" in err.value.body["message"]
    assert not any(r.method == "POST" for r in upstream.requests)
    assert oai.chat.completions.create(model="strict/llama", messages=HI).choices[0].message.content == "ok"
