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
        self.thinks = thinks(template)
        self.toggles_thinking = "enable_thinking" in template
        "Whether the template takes enable_thinking (Qwen3's switch), so think false can turn thinking off."

    @classmethod
    def for_model(cls, llm, override=None):
        """The template configured for the model, else the one inside its GGUF, else plain ChatML."""
        template = override or llm.metadata.get("tokenizer.chat_template") or CHATML
        return cls(template, _token_text(llm, llm.token_bos()), _token_text(llm, llm.token_eos()))

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


def thinking_mode(llm, template, tokens):
    """None for a model that does not think; else whether the prompt ends inside a <think> block it opened."""
    if not template.thinks:
        return None
    tail = llm.detokenize(tokens[-THINK_TAIL:], special=True).decode("utf-8", errors="replace")
    return tail.rfind("<think>") > tail.rfind("</think>")


THINK_TAIL = 16
"The prompt's last tokens that are looked at for an open <think> (DeepSeek-R1's templates end with one)."


def _token_text(llm, token):
    if token < 0:
        return ""
    return llm.detokenize([token], special=True).decode("utf-8", errors="replace")


def prompt_tokens(llm, template, request):
    """The token ids the model is to continue from."""
    if request.messages is not None:
        return _chat_tokens(llm, template, request.messages, request)
    if request.raw:
        return llm.tokenize(request.prompt.encode(), add_bos=True, special=True)
    messages = [{"role": "system", "content": request.system}] if request.system else []
    messages.append({"role": "user", "content": request.prompt})
    context = list(request.context)
    return context + _tokenize_rendered(llm, template.render(messages, think=request.think), add_bos=not context)


def _chat_tokens(llm, template, messages, request):
    dicts = [_message_dict(m) for m in messages]
    listed = _listed_tools(request)
    tools = [render_tool(t) for t in listed]
    if tools and not template.handles_tools:
        dicts = toolcalls.with_instructions(dicts, listed, request.tool_choice)
        tools = []
    return _tokenize_rendered(llm, template.render(dicts, tools, request.think), add_bos=True)


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
    if message.reasoning:
        rendered["reasoning_content"] = message.reasoning  # the name Qwen3's and DeepSeek's templates read
    return rendered
