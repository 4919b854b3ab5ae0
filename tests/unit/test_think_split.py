"""The local runtime's reasoning: a thinking model's <think> block split off its answer, streaming-safe, whatever
the token boundaries; reasoning tokens counted; the template's enable_thinking switch; history's reasoning."""
import pytest

from shim import generation as g
from shim.backends import prompts
from shim.backends.output import ChoiceOutput, ThinkSplitter

OUTPUT = "<think>\nThey greet me.\n</think>\n\nHello there!"


def split(pieces, opened=False):
    splitter = ThinkSplitter(opened)
    parts = [splitter.feed(p) for p in pieces] + [splitter.feed("", final=True)]
    return "".join(r for r, _ in parts), "".join(a for _, a in parts)


def every_split(text):
    """text cut into pieces at every pair of places: tags split across pieces in every way."""
    for i in range(len(text) + 1):
        for j in range(i, len(text) + 1):
            yield [text[:i], text[i:j], text[j:]]


def test_a_think_block_is_split_off_the_answer_however_the_pieces_fall():
    for pieces in every_split(OUTPUT):
        assert split(pieces) == ("They greet me.", "Hello there!"), pieces


def test_character_by_character():
    assert split(list(OUTPUT)) == ("They greet me.", "Hello there!")


def test_a_prompt_that_opened_the_block_starts_inside_it():
    for pieces in every_split("They greet me.</think>Hello"):
        assert split(pieces, opened=True) == ("They greet me.", "Hello"), pieces


@pytest.mark.parametrize("text", ["Hello <think>not reasoning</think>", "<thinking>no</thinking>", "<", " <thi", ""])
def test_text_that_does_not_open_with_a_think_block_is_all_answer(text):
    for pieces in every_split(text):
        assert split(pieces) == ("", text), pieces


def test_an_unclosed_block_is_all_reasoning():
    assert split(["<think>still thinking </th"]) == ("still thinking </th", "")


def test_reasoning_streams_before_the_block_closes():
    splitter = ThinkSplitter()
    assert splitter.feed("<think>one two") == ("one two", "")
    assert splitter.thinking
    assert splitter.feed(" three</") == (" three", "")
    assert splitter.feed("think>Hi") == ("", "Hi")
    assert not splitter.thinking


def run_output(pieces, thinking, **fields):
    events = []
    out = ChoiceOutput(events.append, 0, g.GenerationRequest(model="m", messages=(), **fields), thinking)
    for piece in pieces:
        if out.add(piece.encode(), None):
            break
    reason = out.close("stop")
    return events, out, reason


def test_choice_output_emits_reasoning_deltas_and_counts_reasoning_tokens():
    pieces = ["<think>", "They", " greet", " me.", "</think>", "\n\n", "Hello", " there!"]
    events, out, _ = run_output(pieces, thinking=False)
    choice = g.collect(events)[0]
    assert (choice.thinking, choice.text) == ("They greet me.", "Hello there!")
    assert out.reasoning_tokens == 5
    assert all(isinstance(e, g.ReasoningDelta) for e in events[:3])


def test_choice_output_of_a_model_that_does_not_think_keeps_tags_as_text():
    events, out, _ = run_output(["<think>", "x", "</think>", "y"], thinking=None)
    assert g.collect(events)[0].text == "<think>x</think>y" and out.reasoning_tokens == 0


def test_stop_sequences_apply_to_the_answer_not_the_reasoning():
    events, out, _ = run_output(["<think>", "a STOP b", "</think>", "c STOP d"], thinking=False, stop=("STOP",))
    choice = g.collect(events)[0]
    assert (choice.thinking, choice.text, out.stop_sequence) == ("a STOP b", "c ", "STOP")


QWEN_LIKE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n"
             "{% if m.reasoning_content %}<think>{{ m.reasoning_content }}</think>{% endif %}{{ m.content }}<|im_end|>\n"
             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
             "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}")


def template(text):
    return prompts.ChatTemplate(text, "", "")


def test_a_template_with_think_thinks_and_one_with_enable_thinking_can_be_switched_off():
    qwen, chatml = template(QWEN_LIKE), template(prompts.CHATML)
    assert (qwen.thinks, qwen.toggles_thinking) == (True, True)
    assert (chatml.thinks, chatml.toggles_thinking) == (False, False)
    hi = [{"role": "user", "content": "Hi"}]
    assert qwen.render(hi, think=g.Think(False)).endswith("<think>\n\n</think>\n\n")
    assert qwen.render(hi, think=g.Think(True)).endswith("assistant\n")
    assert qwen.render(hi).endswith("assistant\n")


def test_history_reasoning_reaches_the_template_as_reasoning_content():
    message = g.Message("assistant", "Hello", reasoning="They greet me.")
    rendered = template(QWEN_LIKE).render([prompts._message_dict(message)])
    assert "<think>They greet me.</think>Hello" in rendered
