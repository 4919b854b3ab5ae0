"""End to end with the real SmolLM2: a prompt too long for the window, in each protocol's manner.

An Ollama client's conversation is truncated as Ollama truncates it (its system message and newest turns kept), and
`truncate: false` refuses it with a 400 in Ollama's shape; an OpenAI client still gets 400 context_length_exceeded.
"""
import ollama
import openai
import pytest
import requests

from harness.servers import running_shim
from shim import generation as g
from shim.backends import prompts
from shim.backends.llamacpp import embedded_model_path
from shim.backends.tokenizer import Vocabulary

MODEL = "smollm2:135m"
WINDOW = 256
GREEDY = {"temperature": 0, "seed": 1, "num_predict": 8, "num_ctx": WINDOW}
SYSTEM = {"role": "system", "content": "You are a pirate. Always answer like a pirate."}
QUESTION = {"role": "user", "content": "What is the capital of France?"}
HISTORY = [m for i in range(20) for m in (
    {"role": "user", "content": f"Tell me fact number {i} about the sea, in one sentence please."},
    {"role": "assistant", "content": f"Fact {i}: the sea is deep, salty and full of fish of many colours."})]
LONG = [SYSTEM, *HISTORY, QUESTION]


@pytest.fixture(scope="module")
def shim():
    with running_shim() as url:
        yield url


@pytest.fixture(scope="module")
def oll(shim):
    return ollama.Client(host=shim, timeout=120)


def kept_history():
    """The history messages the Ollama-style truncation keeps, worked out with the model's own tokenizer."""
    vocab = Vocabulary(embedded_model_path())
    request = g.GenerationRequest(model="m", messages=tuple(g.Message(m["role"], m["content"]) for m in LONG),
                                  max_tokens=GREEDY["num_predict"], truncate=True)
    tokens = prompts.prompt_tokens(vocab, prompts.ChatTemplate.for_model(vocab), request, WINDOW)
    prompt = "".join(vocab.text(t) for t in tokens)
    return [m for m in HISTORY if m["content"] in prompt]


def test_ollama_chat_too_long_is_answered_from_its_system_message_and_newest_turns(oll):
    truncated = oll.chat(model=MODEL, messages=LONG, options=GREEDY)
    assert truncated.done and truncated.message.content
    assert truncated.prompt_eval_count <= WINDOW - GREEDY["num_predict"]
    kept = kept_history()
    assert 0 < len(kept) < len(HISTORY) and kept == HISTORY[-len(kept):]
    # The same answer, from the same number of prompt tokens, as the conversation cut by hand.
    explicit = oll.chat(model=MODEL, messages=[SYSTEM, *kept, QUESTION], options=GREEDY)
    assert explicit.prompt_eval_count == truncated.prompt_eval_count
    assert explicit.message.content == truncated.message.content


def test_ollama_streamed_chat_and_generate_are_truncated_too(oll):
    parts = list(oll.chat(model=MODEL, messages=LONG, options=GREEDY, stream=True))
    assert parts[-1].done and parts[-1].prompt_eval_count <= WINDOW
    answer = oll.generate(model=MODEL, prompt="Once upon a time " * 200, options=GREEDY)
    assert answer.done and answer.prompt_eval_count == WINDOW - GREEDY["num_predict"]


def test_ollama_num_predict_beyond_the_window_is_cut_not_refused(oll):
    answer = oll.chat(model=MODEL, messages=[QUESTION], options={**GREEDY, "num_predict": 1000, "num_ctx": 64})
    assert answer.done and answer.prompt_eval_count + answer.eval_count <= 64


def test_ollama_truncate_false_refuses_in_ollamas_shape(shim):
    for path, body in (("/api/chat", {"messages": LONG}), ("/api/generate", {"prompt": "Once upon a time " * 200})):
        response = requests.post(shim + path, timeout=60, json={
            "model": MODEL, "stream": False, "truncate": False, "options": GREEDY, **body})
        assert response.status_code == 400
        error = response.json()["error"]
        assert isinstance(error, str) and "more than the model's context window of 256 tokens" in error


def test_openai_client_still_gets_context_length_exceeded(shim):
    client = openai.OpenAI(base_url=shim + "/v1", api_key="unused", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=LONG, max_tokens=8,
                                       extra_body={"options": {"num_ctx": WINDOW}})
    assert err.value.body["code"] == "context_length_exceeded"
