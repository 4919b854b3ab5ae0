"""Turn a GenerationRequest into prompt tokens with the model's own chat template."""
from __future__ import annotations

import dataclasses
import math
import os
import re
import secrets

import jinja2

from ..errors import ContextLengthExceeded, InvalidRequest
from ..generation import GenerationRequest, Message
from ..protocols.tools import render_tool, render_tool_call
from . import toolcalls


class ChatTemplate:
    """A model's Jinja chat template, rendered as Hugging Face renders it."""

    def __init__(self, template, bos_token, eos_token):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        self.source = template
        self.formatter = Jinja2ChatFormatter(template=template, bos_token=bos_token, eos_token=eos_token)
        self.handles_tools = toolcalls.knows_tools(template)
        self.thinks = thinks(template)
        self.toggles_thinking = "enable_thinking" in template
        "Whether the template takes enable_thinking (Qwen3's switch), so think false can turn thinking off."

    @classmethod
    def for_model(cls, vocab, override=None):
        """The template configured for the model, else the one inside its GGUF, else plain ChatML."""
        template = override or vocab.metadata.get("tokenizer.chat_template") or CHATML
        return cls(template, _token_text(vocab, vocab.bos), _token_text(vocab, vocab.eos))

    def render(self, messages, tools=(), think=None):
        """The prompt text for a conversation, ending where the assistant's answer begins."""
        switch = {"enable_thinking": think.enabled} if think is not None and self.toggles_thinking else {}
        try:
            return self.formatter(messages=messages, tools=list(tools) or None, **switch).prompt
        except (jinja2.TemplateError, ValueError) as err:
            raise InvalidRequest(f"the model's chat template rejected the messages: {err}", param="messages") from err


CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def thinks(template):
    """Whether a chat template is a thinking model's: it writes (or opens) <think> blocks."""
    return "<think>" in template


def thinking_mode(vocab, template, tokens):
    """None for a model that does not think; else whether the prompt ends inside a <think> block it opened."""
    if not template.thinks:
        return None
    tail = "".join(vocab.text(t) for t in tokens[-THINK_TAIL:])
    return tail.rfind("<think>") > tail.rfind("</think>")


THINK_TAIL = 16
"The prompt's last tokens that are looked at for an open <think> (DeepSeek-R1's templates end with one)."


def _token_text(vocab, token):
    return vocab.text(token) if token >= 0 else ""


def prompt_tokens(vocab, template, request, window, cancel=None):
    """The token ids the model is to continue from; with request.truncate, cut to fit the window as Ollama cuts.

    Client text (message content, tool results and definitions, a prompt outside raw mode) is tokenised as
    text: a special token's spelling typed by a client stays text, only the template's own markup is special.
    """
    if request.truncate:
        return _truncated(vocab, template, request, window, cancel)
    return _tokens(vocab, template, request, window, cancel)


def _tokens(vocab, template, request, window=None, cancel=None):
    """The prompt's token ids; with a window, text that cannot fit in it is refused before it is tokenised."""
    context, add_bos = [], True
    if request.messages is not None:
        dicts = [_message_dict(m) for m in request.messages]
        listed = _listed_tools(request)
        tools = [render_tool(t) for t in listed]
        if tools and not template.handles_tools:
            dicts = toolcalls.with_instructions(dicts, listed, request.tool_choice)
            tools = []
        parts = _rendered(vocab, template, dicts, tools, request.think)
    elif request.raw:
        parts = vocab.split(request.prompt)
    else:
        context, add_bos = _checked_context(vocab, request.context), not request.context
        messages = [{"role": "system", "content": request.system}] if request.system else []
        messages.append({"role": "user", "content": request.prompt})
        parts = _rendered(vocab, template, messages, [], request.think)
    if window is not None:
        _check_size(vocab, parts, len(context), window, "messages" if request.messages is not None else "prompt")
    tokens = vocab.tokenize(parts, cancel)
    # A Jinja template writes its own BOS where the model wants one; it is added only if missing.
    if add_bos and vocab.add_bos and tokens[:1] != [vocab.bos]:
        tokens.insert(0, vocab.bos)
    return context + tokens


def preamble(vocab, template):
    """The tokens every conversation of one user message starts with under this template (empty if none)."""
    try:
        first, other = (_tokens(vocab, template, GenerationRequest(model="", messages=(Message("user", text),)))
                        for text in PREAMBLE_PROBES)
    except InvalidRequest:  # a template that refuses a lone user message has no preamble to share
        return ()
    return tuple(os.path.commonprefix([first, other]))


PREAMBLE_PROBES = ("Hello", "1")
"Two user messages that differ from their first character: what their prompts share is the template's."


NUM_KEEP = 4
"Tokens kept from the start of a prompt cut in the middle (Ollama's num_keep default)."


def _truncated(vocab, template, request, window, cancel):
    """Ollama's manner: the system messages and the newest turns that fit, then a cut in the middle if need be."""
    limit = window - answer_room(request, window)
    # A token stands for at most `longest` bytes, so text beyond limit * longest bytes can never fit: it is left
    # out before anything is tokenised, which bounds the work a huge prompt costs.
    budget = limit * vocab.longest
    if request.messages is not None:
        request = dataclasses.replace(request, messages=_within_bytes(request.messages, budget))
        tokens = _tokens(vocab, template, request, None, cancel)
        if len(tokens) > limit:
            tokens = _newest_turns(vocab, template, request, limit, cancel)
    else:
        tokens = _tokens(vocab, template, _prompt_within(request, budget, vocab.longest), None, cancel)
    return _cut(tokens, limit, request.backend_options.get("num_keep"))


def answer_room(request, window):
    """The tokens a truncated prompt leaves for the answer: max_tokens, else a quarter of the window; at most half.

    Ollama only fits the prompt and shifts the context as the answer grows; shim does not shift, so it keeps room.
    """
    wanted = request.max_tokens if request.max_tokens is not None else window // 4
    return max(1, min(wanted, window // 2))


def _within_bytes(messages, budget):
    """The messages from the first turn start whose non-system text could fit in budget bytes (system ones kept)."""
    starts = sorted({_turn_start(messages, i) for i in range(len(messages))})
    sizes = [len(m.content.encode()) if m.role != "system" else 0 for m in messages]
    for start in starts:
        if sum(sizes[start:]) <= budget or start == starts[-1]:
            return tuple(m for m in messages[:start] if m.role == "system") + tuple(messages[start:])
    return messages


def _prompt_within(request, budget, longest):
    """A generate prompt with its middle left out where it has more characters than budget bytes could hold."""
    prompt = request.prompt
    if len(prompt) <= budget:
        return request
    head = NUM_KEEP * longest  # enough characters for the num_keep tokens the cut keeps from the start
    return dataclasses.replace(request, prompt=prompt[:head] + prompt[len(prompt) - (budget - head):])


def _newest_turns(vocab, template, request, limit, cancel):
    """The tokens of the system messages and the newest turns that fit in limit (always the last message)."""
    messages = request.messages
    starts = sorted({_turn_start(messages, i) for i in range(len(messages))})
    rendered: dict = {}

    def tokens_from(k):
        if k not in rendered:
            kept = tuple(m for m in messages[:starts[k]] if m.role == "system") + tuple(messages[starts[k]:])
            rendered[k] = _tokens(vocab, template, dataclasses.replace(request, messages=kept), None, cancel)
        return rendered[k]
    # Fewer messages never take more tokens, so the first start that fits is found by bisection.
    low, high = 0, len(starts) - 1
    while low < high:
        middle = (low + high) // 2
        if len(tokens_from(middle)) <= limit:
            high = middle
        else:
            low = middle + 1
    return tokens_from(low)


def _turn_start(messages, i):
    """Where a conversation kept from message i starts: tool results keep the assistant turn that called them."""
    if messages[i].role != "tool":
        return i
    start = i
    while start > 0 and messages[start - 1].role == "tool":
        start -= 1
    return start - 1 if start > 0 and messages[start - 1].tool_calls else i


def _cut(tokens, limit, keep=None):
    """The tokens, if more than limit, cut in the middle: the first num_keep kept, then the newest that fit."""
    if len(tokens) <= limit:
        return tokens
    keep = NUM_KEEP if not isinstance(keep, int) or keep < 0 else keep
    keep = min(keep, limit - 1)
    return tokens[:keep] + tokens[len(tokens) - (limit - keep):]


def _listed_tools(request):
    """The tools the prompt lists: none for none, all for a named call (the grammar picks it), else those offered."""
    choice = request.tool_choice
    return request.tools if choice.mode == "named" else choice.offered(request.tools)


def _checked_context(vocab, context):
    """Ollama's context: token ids of this vocabulary only."""
    bad = next((t for t in context if not 0 <= t < vocab.n_vocab), None)
    if bad is not None:
        raise InvalidRequest(f"'context' holds {bad}, which is not a token id of this model "
                             f"(0-{vocab.n_vocab - 1})", param="context")
    return list(context)


def _rendered(vocab, template, messages, tools, think=None):
    """The template's text split into plain text and its special tokens (client text's spellings left as text)."""
    marks = Marks(vocab.controls)
    rendered = template.render(marks.hide(messages), marks.hide(tools), think)
    return [marks.show(p) if isinstance(p, str) else p for p in vocab.split(rendered)]


def _check_size(vocab, parts, n_context, window, param):
    """Refuse, before any tokenising, text with more bytes than the window's tokens can stand for."""
    text_bytes = sum(len(p.encode()) for p in parts if isinstance(p, str))
    least = n_context + math.ceil(text_bytes / vocab.longest) + sum(1 for p in parts if not isinstance(p, str))
    if least > window:
        raise ContextLengthExceeded(
            f"the prompt is at least {least} tokens ({text_bytes} bytes of text; a token of this model stands for "
            f"{vocab.longest} bytes at most), more than the context window of {window} tokens", param=param)


class Marks:
    """Swaps the spellings of control tokens in client text for markers while a template renders, and back after.

    The rendered text's special tokens are then the template's alone; a marker turns back into its spelling
    inside the plain text around them, so the client's "<|im_end|>" is tokenised as the characters it is.
    """

    def __init__(self, controls):
        self._controls = list(controls)
        self._nonce = secrets.token_hex(8)
        self._find = re.compile("|".join(map(re.escape, self._controls))) if self._controls else None
        self._index = {text: i for i, text in enumerate(self._controls)}
        self._marker = re.compile(f"zq{self._nonce}(\\d+)zq")

    def hide(self, value):
        """The value (strings, lists, dicts of them) with every control token spelling marked."""
        if isinstance(value, str):
            if self._find is None or not self._find.search(value):
                return value
            return self._find.sub(lambda m: f"zq{self._nonce}{self._index[m.group()]}zq", value)
        if isinstance(value, dict):
            return {self.hide(k): self.hide(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.hide(v) for v in value]
        return value

    def show(self, text):
        """The text with the markers turned back into the spellings they stand for."""
        if self._nonce not in text:
            return text
        return self._marker.sub(lambda m: self._controls[int(m.group(1))], text)


def _message_dict(message):
    rendered = {"role": message.role, "content": message.content}
    if message.tool_calls:
        rendered["tool_calls"] = [render_tool_call(c) for c in message.tool_calls]
        if not message.content:
            rendered["content"] = toolcalls.calls_as_text(message.tool_calls)
    if message.tool_call_id:
        rendered["tool_call_id"] = message.tool_call_id
    if message.name:
        rendered["name"] = message.name
    if message.reasoning:
        rendered["reasoning_content"] = message.reasoning  # the name Qwen3's and DeepSeek's templates read
    return rendered
