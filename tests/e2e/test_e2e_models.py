"""End to end: model lists, /api/show, the num_ctx limit and keep_alive, with the official clients against real
gunicorn and the real SmolLM2."""
import threading

import ollama
import pytest
import requests

MODEL = "smollm2:135m"
SPELLINGS = ("smollm2:135m", "smollm2:latest", "smollm2")
STORY = [{"role": "user", "content": "Tell me a story about a dragon."}]
GREEDY = {"temperature": 0, "seed": 1, "num_predict": 24}


def _loaded(oll):
    return {m.model: m.context_length for m in oll.ps().models}


# ---------------------------------------------------------------- lists

def test_ollama_lists_every_tag_the_model_answers_to_with_one_digest(oll):
    listed = {m.model: m for m in oll.list().models}
    assert {"smollm2:135m", "smollm2:latest"} <= set(listed) and "smollm2" not in listed
    tagged, latest = listed["smollm2:135m"], listed["smollm2:latest"]
    assert (latest.digest, latest.size, latest.details) == (tagged.digest, tagged.size, tagged.details)
    # llm-ollama adds the bare name of each :latest tag, so `smollm2` (the README's name) is found too.
    bare = {name.removesuffix(":latest") for name in listed if name.endswith(":latest")}
    assert "smollm2" in bare


def test_openai_lists_the_same_names_and_retrieves_every_spelling(oai, oll):
    ids = [m.id for m in oai.models.list()]
    assert ids == [m.model for m in oll.list().models] and {"smollm2:135m", "smollm2:latest"} <= set(ids)
    for name in SPELLINGS:
        assert oai.models.retrieve(name).id in ("smollm2:135m", name)


def test_ps_shows_the_loaded_model_once(oll):
    oll.generate(model="gpt-3.5-turbo", prompt="Hi", options={"num_predict": 1})
    assert [m.model for m in oll.ps().models] == [MODEL]


# ---------------------------------------------------------------- /api/show

def test_show_describes_what_shim_serves(oll):
    import llama_cpp

    from shim.backends.llamacpp import embedded_model_path
    for name in SPELLINGS:
        shown = oll.show(name)
        # Tools are a capability, and the template shows how they are prompted (LiteLLM looks for "tools" in it).
        assert "tools" in shown.capabilities and "tools" in shown.template and "<|im_start|>" in shown.template
        info = shown.modelinfo
        assert info["llama.context_length"] == _loaded(oll)[MODEL] == 4096
        assert info["shim.trained_context"] == 8192 and info["shim.max_ctx"] == 4096
        assert isinstance(info["general.parameter_count"], int)
    model = llama_cpp.llama_model_load_from_file(embedded_model_path().encode(), llama_cpp.llama_model_default_params())
    try:
        assert info["general.parameter_count"] == llama_cpp.llama_model_n_params(model)
    finally:
        llama_cpp.llama_model_free(model)


# ---------------------------------------------------------------- one client cannot grow or unload the shared model

def test_a_hostile_request_leaves_a_normal_stream_and_the_shared_model_alone(oll, oai, shim_url):
    alone = oll.chat(model=MODEL, messages=STORY, options=GREEDY).message.content
    streamed, started = [], threading.Event()

    def normal():
        with ollama.Client(host=shim_url, timeout=120) as own:
            for part in own.chat(model=MODEL, messages=STORY, options=GREEDY, stream=True):
                streamed.append(part)
                started.set()

    worker = threading.Thread(target=normal)
    worker.start()
    assert started.wait(30)
    hostile = {"num_ctx": 1_000_000, "num_predict": 4}
    assert oll.chat(model=MODEL, messages=STORY, options=hostile, keep_alive=0).done
    assert oll.generate(model=MODEL, prompt="Hi", options=hostile, keep_alive="1s").done
    oai.chat.completions.create(model=MODEL, messages=STORY, max_tokens=4,
                                extra_body={"options": {"num_ctx": 1_000_000}, "keep_alive": 0})
    with pytest.raises(ollama.ResponseError) as refused:
        oll.generate(model=MODEL, prompt="", keep_alive=0)
    assert refused.value.status_code == 403 and "keep_alive" in refused.value.error
    worker.join(120)
    assert streamed[-1].done and "".join(p.message.content for p in streamed) == alone
    assert _loaded(oll) == {MODEL: 4096}, "the model stays loaded, its window not grown"


def test_with_client_keep_alive_clients_unload_and_load(shim_url_with):
    url = shim_url_with("client_keep_alive = true\n")
    with ollama.Client(host=url, timeout=120) as oll:
        before = oll.chat(model=MODEL, messages=STORY, options=GREEDY).message.content
        assert MODEL in _loaded(oll)
        unloaded = oll.generate(model=MODEL, prompt="", keep_alive=0)
        assert unloaded.done and unloaded.done_reason == "unload" and unloaded.response == ""
        assert MODEL not in _loaded(oll)
        loaded = oll.generate(model=MODEL, prompt="")
        assert loaded.done and loaded.done_reason == "load" and MODEL in _loaded(oll)
        unloaded = oll.chat(model=MODEL, messages=[], keep_alive=0)
        assert unloaded.done_reason == "unload" and MODEL not in _loaded(oll)
        assert oll.chat(model=MODEL, messages=[]).done_reason == "load" and MODEL in _loaded(oll)
        assert oll.chat(model=MODEL, messages=STORY, options=GREEDY).message.content == before


def test_max_ctx_lets_a_request_grow_the_window_up_to_it(shim_url_with):
    url = shim_url_with("max_ctx = 6144\n")
    with ollama.Client(host=url, timeout=120) as oll:
        assert oll.generate(model=MODEL, prompt="Hi", options={"num_ctx": 1_000_000, "num_predict": 2}).done
        assert _loaded(oll) == {MODEL: 6144}
        assert oll.show(MODEL).modelinfo["llama.context_length"] == 6144
    assert requests.get(url + "/api/ps", timeout=10).json()["models"][0]["context_length"] == 6144
