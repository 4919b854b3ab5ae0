"""Turn a GenerationRequest into prompt tokens with the model's own chat template."""
from __future__ import annotations

import jinja2

from ..errors import InvalidRequest
from ..protocols.tools import render_tool, render_tool_call
from . import toolcalls


class ChatTemplate:
    """A model's Jinja chat template, rendered as Hugging Face renders it."""

    def __init__(self, template, bos_token, eos_token):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        self.source = template
        self.formatter = Jinja2ChatFormatter(template=template, bos_token=bos_token, eos_token=eos_token)
        self.handles_tools = toolcalls.knows_tools(template)

    @classmethod
    def for_model(cls, llm, override=None):
        """The template configured for the model, else the one inside its GGUF, else plain ChatML."""
        template = override or llm.metadata.get("tokenizer.chat_template") or CHATML
        return cls(template, _token_text(llm, llm.token_bos()), _token_text(llm, llm.token_eos()))

    def render(self, messages, tools=()):
        """The prompt text for a conversation, ending where the assistant's answer begins."""
        try:
            return self.formatter(messages=messages, tools=list(tools) or None).prompt
        except (jinja2.TemplateError, ValueError) as err:
            raise InvalidRequest(f"the model's chat template rejected the messages: {err}", param="messages") from err


CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _token_text(llm, token):
    if token < 0:
        return ""
    return llm.detokenize([token], special=True).decode("utf-8", errors="replace")


NUM_KEEP = 4
"Tokens kept from the start of a prompt cut in the middle (Ollama's num_keep default)."


def prompt_tokens(llm, template, request, window=None):
    """The token ids the model is to continue from; with request.truncate, cut to fit the window as Ollama cuts."""
    tokens = _prompt_tokens(llm, template, request)
    if not request.truncate or window is None:
        return tokens
    limit = window - answer_room(request, window)
    if len(tokens) > limit and request.messages is not None:
        tokens = _newest_turns(llm, template, request, limit)
    return _cut(tokens, limit, request.backend_options.get("num_keep"))


def answer_room(request, window):
    """The tokens a truncated prompt leaves for the answer: max_tokens, else a quarter of the window; at most half.

    Ollama only fits the prompt and shifts the context as the answer grows; shim does not shift, so it keeps room.
    """
    wanted = request.max_tokens if request.max_tokens is not None else window // 4
    return max(1, min(wanted, window // 2))


def _newest_turns(llm, template, request, limit):
    """The tokens of the system messages and the newest turns that fit in limit (always the last message)."""
    messages = request.messages
    starts = sorted({_turn_start(messages, i) for i in range(len(messages))})
    rendered: dict = {}

    def tokens_from(k):
        if k not in rendered:
            kept = [m for m in messages[:starts[k]] if m.role == "system"] + list(messages[starts[k]:])
            rendered[k] = _chat_tokens(llm, template, kept, request)
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


def _prompt_tokens(llm, template, request):
    if request.messages is not None:
        return _chat_tokens(llm, template, request.messages, request)
    if request.raw:
        return llm.tokenize(request.prompt.encode(), add_bos=True, special=True)
    messages = [{"role": "system", "content": request.system}] if request.system else []
    messages.append({"role": "user", "content": request.prompt})
    context = list(request.context)
    return context + _tokenize_rendered(llm, template.render(messages), add_bos=not context)


def _chat_tokens(llm, template, messages, request):
    dicts = [_message_dict(m) for m in messages]
    listed = _listed_tools(request)
    tools = [render_tool(t) for t in listed]
    if tools and not template.handles_tools:
        dicts = toolcalls.with_instructions(dicts, listed, request.tool_choice)
        tools = []
    return _tokenize_rendered(llm, template.render(dicts, tools), add_bos=True)


def _listed_tools(request):
    """The tools the prompt lists: none for none, all for a named call (the grammar picks it), else those offered."""
    choice = request.tool_choice
    return request.tools if choice.mode == "named" else choice.offered(request.tools)


def _tokenize_rendered(llm, text, add_bos):
    # A Jinja template writes its own BOS where the model wants one; llama.cpp adds another only if it is missing.
    tokens = llm.tokenize(text.encode(), add_bos=False, special=True)
    bos = llm.token_bos()
    if add_bos and llm.metadata.get("tokenizer.ggml.add_bos_token", "true") == "true" and bos >= 0 \
            and tokens[:1] != [bos]:
        tokens.insert(0, bos)
    return tokens


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
    return rendered
