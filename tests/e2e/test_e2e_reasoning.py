"""Reasoning end to end: a real gunicorn shim in front of a fake reasoning upstream of each backend type (OpenAI-
compatible, Ollama, Anthropic), driven by the official openai and ollama clients, whole and streamed: the upstream's
reasoning reaches each client under the names it reads, the client's effort reaches the upstream as it takes it, and
an earlier turn's reasoning goes back upstream."""
import json

import ollama
import openai
import pytest
from werkzeug.wrappers import Response

from harness.servers import running_shim
from tests import fake_anthropic
from tests.fake_upstream import FakeUpstream, ollama_answer, openai_answer

THINKING = fake_anthropic.THINKING
ANSWER = "Hello!"
CONFIG = """
embedded_model = false

[backends.oai]
type = "openai"
url = "{url}/v1"

[backends.oll]
type = "ollama"
url = "{url}"

[backends.claude]
type = "anthropic"
url = "{url}"
api_key = "sk-ant-unused-0123456789"

[[models]]
name = "via-openai"
backend = "oai"
target = "thinker"

[[models]]
name = "via-ollama"
backend = "oll"
target = "thinker"

[[models]]
name = "via-anthropic"
backend = "claude"
target = "claude-fake"
"""
MODELS = ("via-openai", "via-ollama", "via-anthropic")
HI = [{"role": "user", "content": "Hi"}]


def openai_chunk(**delta):
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "thinker",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}


def fake(record):
    """One port, three upstreams: vLLM-style reasoning (both names), Ollama thinking, Anthropic thinking blocks."""
    if record.path == "/v1/chat/completions":
        first, rest = THINKING.split(" ", 1)
        return openai_answer(record, openai_chunk(role="assistant", reasoning_content=first),
                             openai_chunk(reasoning=" " + rest), openai_chunk(content=ANSWER),
                             {**openai_chunk(), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                             {**openai_chunk(), "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5,
                                                                         "total_tokens": 8}})
    if record.path == "/api/chat":
        part = {"model": "thinker", "created_at": "2025-01-01T00:00:00Z", "done": False}
        return ollama_answer(record, *({**part, "message": {"role": "assistant", "content": "", "thinking": piece}}
                                       for piece in (THINKING[:8], THINKING[8:])),
                             {**part, "message": {"role": "assistant", "content": ANSWER}},
                             {**part, "message": {"role": "assistant", "content": ""}, "done": True,
                              "done_reason": "stop", "prompt_eval_count": 3, "eval_count": 5})
    if record.path.startswith("/v1/"):
        return fake_anthropic.app(record)
    return Response(json.dumps({"models": []}), mimetype="application/json")


def answer_of(model):
    return "You said: Hi" if model == "via-anthropic" else ANSWER


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream(fake) as server:
        yield server


@pytest.fixture(scope="module")
def front(upstream):
    with running_shim(CONFIG.format(url=upstream.url)) as url:
        yield url


def last_sent(upstream):
    return upstream.requests[-1].json


def effort_sent(model, body):
    """What the upstream was asked for, as it spells it."""
    return {"via-openai": body.get("reasoning_effort"), "via-ollama": body.get("think"),
            "via-anthropic": (body.get("thinking") or {}).get("type")}[model]


@pytest.mark.parametrize("model", MODELS)
def test_openai_client_reads_reasoning_under_both_names(oai, upstream, model):
    reply = oai.chat.completions.create(model=model, messages=HI, reasoning_effort="high")
    message = reply.choices[0].message
    assert message.content == answer_of(model)
    assert message.model_extra["reasoning_content"] == message.model_extra["reasoning"] == THINKING
    assert effort_sent(model, last_sent(upstream)) == {"via-anthropic": "enabled"}.get(model, "high")
    # Anthropic counts no reasoning tokens apart; nor do this vLLM-like upstream and Ollama, whose streamed pieces
    # shim counts (a token each) but whose whole answer (asked for here, as the client's was) has none to count.
    details = reply.usage.completion_tokens_details
    assert (details.reasoning_tokens if details else 0) == 0


@pytest.mark.parametrize("model", MODELS)
def test_openai_client_streams_reasoning_before_the_answer(oai, model):
    stream = oai.chat.completions.create(model=model, messages=HI, reasoning_effort="low", stream=True,
                                         stream_options={"include_usage": True})
    reasoning, names, content = "", set(), ""
    for chunk in stream:
        for choice in chunk.choices:
            extra = choice.delta.model_extra or {}
            names |= {name for name in ("reasoning_content", "reasoning") if extra.get(name)}
            reasoning += extra.get("reasoning_content") or ""
            assert not (content and extra.get("reasoning")), "reasoning after the answer began"
            content += choice.delta.content or ""
    assert (reasoning, content, names) == (THINKING, answer_of(model), {"reasoning_content", "reasoning"})


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", MODELS)
def test_ollama_client_reads_thinking(oll, upstream, model, stream):
    reply = oll.chat(model=model, messages=HI, think=True, stream=stream)
    parts = list(reply) if stream else [reply]
    assert "".join(p.message.thinking or "" for p in parts) == THINKING
    assert "".join(p.message.content or "" for p in parts) == answer_of(model)
    # think true names no level: an OpenAI-compatible upstream is left to its model's default (it thinks)
    assert effort_sent(model, last_sent(upstream)) == {"via-anthropic": "enabled", "via-openai": None}.get(model, True)


def test_think_false_reaches_each_upstream_as_it_takes_it(oll, upstream):
    for model, expected in (("via-openai", "none"), ("via-ollama", False), ("via-anthropic", "disabled")):
        oll.chat(model=model, messages=HI, think=False)
        assert effort_sent(model, last_sent(upstream)) == expected


HISTORY_FIELD = {"via-openai": "reasoning_content", "via-ollama": "thinking"}


@pytest.mark.parametrize("model", ["via-openai", "via-ollama"])
def test_earlier_reasoning_from_the_openai_client_goes_back_upstream(oai, upstream, model):
    messages = HI + [{"role": "assistant", "content": ANSWER, "reasoning_content": "They greet me."},
                     {"role": "user", "content": "Again"}]
    oai.chat.completions.create(model=model, messages=messages)
    assert last_sent(upstream)["messages"][1][HISTORY_FIELD[model]] == "They greet me."


@pytest.mark.parametrize("model", ["via-openai", "via-ollama"])
def test_earlier_thinking_from_the_ollama_client_goes_back_upstream(oll, upstream, model):
    messages = HI + [{"role": "assistant", "content": ANSWER, "thinking": "They greet me."},
                     {"role": "user", "content": "Again"}]
    oll.chat(model=model, messages=messages)
    assert last_sent(upstream)["messages"][1][HISTORY_FIELD[model]] == "They greet me."


def test_earlier_reasoning_is_not_sent_to_anthropic_which_wants_it_signed(oai, upstream):
    messages = HI + [{"role": "assistant", "content": ANSWER, "reasoning_content": "They greet me."},
                     {"role": "user", "content": "Again"}]
    reply = oai.chat.completions.create(model="via-anthropic", messages=messages)
    assert reply.choices[0].message.content == "You said: Again"
    assert "thinking" not in json.dumps(last_sent(upstream)["messages"])


# ---------------------------------------------------------------- the local runtime, with a thinking template

THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}"
    "{% endif %}")
LOCAL_CONFIG = """
embedded_model = false

[[models]]
name = "thinker"
path = "{path}"
n_ctx = 512
chat_template = '''{template}'''
"""


@pytest.fixture(scope="module")
def local():
    """SmolLM2 (which cannot think) under a template that opens a <think> block, as DeepSeek-R1's does."""
    from shim.backends.llamacpp import embedded_model_path
    with running_shim(LOCAL_CONFIG.format(path=embedded_model_path(), template=THINKING_TEMPLATE)) as url:
        yield url


def test_local_thinking_model_splits_its_think_block_off(local):
    with openai.OpenAI(base_url=local + "/v1", api_key="unused", max_retries=0, timeout=120) as client:
        reply = client.chat.completions.create(model="thinker", messages=HI, reasoning_effort="low", max_tokens=8,
                                               temperature=0, seed=1)
    message = reply.choices[0].message
    assert message.model_extra["reasoning_content"] and message.content in (None, "")
    assert reply.usage.completion_tokens_details.reasoning_tokens == reply.usage.completion_tokens == 8


def test_local_thinking_model_think_false_closes_the_block_in_the_prompt(local):
    client = ollama.Client(host=local, timeout=120)
    try:
        reply = client.chat(model="thinker", messages=HI, think=False, options={"num_predict": 8, "temperature": 0})
        assert reply.message.content and not reply.message.thinking
        assert "thinking" in client.show("thinker").capabilities
    finally:
        client.close()
