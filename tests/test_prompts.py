"""Prompt tokens with the real SmolLM2 tokenizer and chat template (vocab only): Ollama-style truncation to a window."""
import dataclasses

import pytest

from shim import generation as g
from shim.backends import prompts
from shim.backends.llamacpp import embedded_model_path
from shim.backends.scheduler import fits
from shim.errors import ContextLengthExceeded

WINDOW = 256
SYSTEM = g.Message("system", "You are a pirate. Always answer like a pirate.")
QUESTION = g.Message("user", "What is the capital of France?")


@pytest.fixture(scope="module")
def llm():
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(embedded_model_path(), vocab_only=True, verbose=False)


@pytest.fixture(scope="module")
def template(llm):
    return prompts.ChatTemplate.for_model(llm)


def turns(count):
    out = []
    for i in range(count):
        out += [g.Message("user", f"Tell me fact number {i} about the sea, in one sentence please."),
                g.Message("assistant", f"Fact {i}: the sea is deep, salty and full of fish of many colours.")]
    return tuple(out)


def chat(messages, **fields):
    return g.GenerationRequest(model="m", messages=tuple(messages), truncate=True, **fields)


def text(llm, tokens):
    return llm.detokenize(tokens, special=True).decode()


def test_a_long_conversation_keeps_its_system_message_and_as_many_newest_turns_as_fit(llm, template):
    history = turns(20)
    request = chat((SYSTEM, *history, QUESTION))
    whole = prompts.prompt_tokens(llm, template, dataclasses.replace(request, truncate=False), WINDOW)
    tokens = prompts.prompt_tokens(llm, template, request, WINDOW)
    limit = WINDOW - prompts.answer_room(request, WINDOW)
    assert len(whole) > WINDOW >= limit >= len(tokens)
    prompt = text(llm, tokens)
    assert prompt.startswith("<|im_start|>system\nYou are a pirate.") and "capital of France?" in prompt
    assert "fact number 0 " not in prompt and "fact number 19 " in prompt
    kept = sum(m.content in prompt for m in history)
    assert all(m.content in prompt for m in history[len(history) - kept:]), "the newest messages are the ones kept"
    one_more = prompts.prompt_tokens(llm, template, chat((SYSTEM, *history[len(history) - kept - 1:], QUESTION)))
    assert len(one_more) > limit, "the newest message left out would not have fitted"
    assert fits(len(tokens), request, WINDOW) == WINDOW - len(tokens)


def test_a_prompt_that_fits_is_left_as_it_is(llm, template):
    request = chat((SYSTEM, *turns(1), QUESTION))
    assert prompts.prompt_tokens(llm, template, request, WINDOW) == prompts.prompt_tokens(llm, template, request)


def test_without_truncate_the_prompt_is_whole_and_refused(llm, template):
    request = g.GenerationRequest(model="m", messages=(SYSTEM, *turns(20), QUESTION))
    tokens = prompts.prompt_tokens(llm, template, request, WINDOW)
    assert len(tokens) > WINDOW
    with pytest.raises(ContextLengthExceeded):
        fits(len(tokens), request, WINDOW)


def test_room_for_the_answer_is_num_predict_or_a_quarter_of_the_window_and_at_most_half():
    assert prompts.answer_room(chat((QUESTION,)), 256) == 64
    assert prompts.answer_room(chat((QUESTION,), max_tokens=20), 256) == 20
    assert prompts.answer_room(chat((QUESTION,), max_tokens=1000), 256) == 128
    assert prompts.answer_room(chat((QUESTION,), max_tokens=0), 256) == 1


def test_one_message_too_long_is_cut_in_the_middle_keeping_num_keep_tokens_at_the_start(llm, template):
    long = g.Message("user", " ".join(f"word{i}" for i in range(400)) + " THE END")
    request = chat((long,), max_tokens=16)
    whole = prompts.prompt_tokens(llm, template, dataclasses.replace(request, truncate=False))
    tokens = prompts.prompt_tokens(llm, template, request, WINDOW)
    assert len(tokens) == WINDOW - 16
    assert tokens[:prompts.NUM_KEEP] == whole[:prompts.NUM_KEEP] and tokens[-50:] == whole[-50:]
    kept = prompts.prompt_tokens(llm, template, dataclasses.replace(request, backend_options={"num_keep": 10}),
                                 WINDOW)
    assert kept[:10] == whole[:10] and len(kept) == WINDOW - 16


def test_a_generate_prompt_is_cut_the_same_way(llm, template):
    request = g.GenerationRequest(model="m", prompt="Once upon a time " * 200, truncate=True)
    tokens = prompts.prompt_tokens(llm, template, request, WINDOW)
    assert len(tokens) == WINDOW - WINDOW // 4


def test_tool_results_are_never_kept_without_the_turn_that_called_them():
    call = g.ToolCall("c1", "get_weather", "{}")
    messages = (g.Message("user", "weather?"), g.Message("assistant", tool_calls=(call,)),
                g.Message("tool", "sunny", tool_call_id="c1"), g.Message("tool", "warm", tool_call_id="c1"),
                g.Message("user", "thanks"))
    assert [prompts._turn_start(messages, i) for i in range(len(messages))] == [0, 1, 1, 1, 4]
