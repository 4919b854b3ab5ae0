"""Ollama's API toward an Ollama instance: the call it is sent, the events its answer carries. Pure."""
from __future__ import annotations

import base64
import json

from ... import generation as g
from .. import options as opts
from .. import tools as tool_fields


_SAMPLING_OPTIONS = ("temperature", "top_p", "top_k", "min_p", "typical_p", "seed", "repeat_penalty", "repeat_last_n",
                     "presence_penalty", "frequency_penalty")


def upstream_options(request, seed_offset=0):
    """The options object for an upstream Ollama: the client's own options, then every field shim parsed."""
    options = dict(request.backend_options)
    for name in _SAMPLING_OPTIONS:
        value = getattr(request.sampling, name)
        if value is not None:
            options[name] = value
    if request.sampling.seed is not None:
        options["seed"] = request.sampling.seed + seed_offset
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    if request.stop:
        options["stop"] = list(request.stop)
    if request.num_ctx is not None:
        options["num_ctx"] = request.num_ctx
    return options


def upstream_call(request, seed_offset=0):
    """(path, body) of the call an Ollama instance serves this request with: /api/chat or /api/generate, streamed,
    or whole for a client that reads the answer whole. The body is Ollama's own JSON, nothing in it null."""
    body = {"model": request.model, "stream": request.stream, "options": upstream_options(request, seed_offset)}
    if request.response_format:
        body["format"] = "json" if request.response_format.kind == "json" else dict(request.response_format.schema)
    if request.keep_alive is not None:
        body["keep_alive"] = request.keep_alive
    if request.think is not None:
        body["think"] = opts.think_value(request.think)
    if request.logprobs:
        body["logprobs"] = True
        if request.top_logprobs:
            body["top_logprobs"] = request.top_logprobs
    if request.messages is None:
        extra = {"prompt": request.prompt, "raw": request.raw or None, "system": request.system,
                 "suffix": request.suffix, "context": list(request.context) or None,
                 "images": [base64.b64encode(i).decode() for i in request.images] or None}
        return "/api/generate", {**body, **{k: v for k, v in extra.items() if v is not None}}
    body["messages"] = [_upstream_message(m) for m in request.messages]
    tools = [tool_fields.render_tool(t) for t in request.tool_choice.offered(request.tools)]
    if tools:
        body["tools"] = tools
    return "/api/chat", body


def _upstream_message(message):
    wire = {"role": message.role, "content": message.content}
    if message.images:
        wire["images"] = [base64.b64encode(i).decode() for i in message.images]
    if message.tool_calls:
        wire["tool_calls"] = [{"function": {"name": c.name, "arguments": tool_fields.arguments_object(c.arguments)}}
                              for c in message.tool_calls]
    if message.role == "tool" and message.name:
        wire["tool_name"] = message.name
    if message.tool_call_id:
        wire["tool_call_id"] = message.tool_call_id
    if message.reasoning:
        wire["thinking"] = message.reasoning
    return wire


class UpstreamReader:
    """Turns an upstream Ollama's response objects (as dicts: the parts of a stream, or one whole answer) into events
    for one choice; pure."""

    def __init__(self, index=0, new_call_id=None, whole=False):
        self.index = index
        self.new_call_id = new_call_id or (lambda: f"call_{index}")
        self.calls = 0
        self.thinking_parts = 0
        "Ollama counts no reasoning tokens apart; it streams one token a part, so its thinking parts are counted."
        self.whole = whole
        "Reading one whole answer: its thinking is not split into tokens, so how many it took is not known."

    def events(self, part):
        """The events one response object carries; ValueError for what no Ollama answers."""
        if not isinstance(part, dict):
            raise ValueError("an answer part is not a JSON object")
        if part.get("error"):
            raise ValueError(str(part["error"]))
        message = part.get("message")
        if message is None:
            message, text, thinking = {}, part.get("response"), part.get("thinking")
        elif isinstance(message, dict):
            text, thinking = message.get("content"), message.get("thinking")
        else:
            raise ValueError("its message is not a JSON object")
        if text is not None and type(text) is not str:
            raise ValueError("the text is not a string")
        if thinking is not None and type(thinking) is not str:
            raise ValueError("the thinking is not a string")
        wire_logprobs = part.get("logprobs")  # most parts have none: no generator is made for them (this runs per token)
        logprobs = tuple(map(_logprob_from_wire, wire_logprobs)) if wire_logprobs else ()
        events: list[g.Event] = []
        if thinking:
            self.thinking_parts += 1
            events.append(g.ReasoningDelta(thinking, self.index))
        if text or logprobs:
            events.append(g.TextDelta(text or "", self.index, logprobs))
        for call in message.get("tool_calls") or ():
            events.append(g.ToolCallDelta(self._call(call), self.index, self.calls))
            self.calls += 1
        if part.get("done"):
            events.append(self._finish(part))
        return events

    def _call(self, call):
        """The ToolCall of one of Ollama's tool calls."""
        function = call.get("function") or {}
        name, arguments = function.get("name", ""), function.get("arguments") or {}
        if not isinstance(name, str) or not isinstance(arguments, dict):
            raise ValueError("a tool call's name is not a string or its arguments not a JSON object")
        return g.ToolCall(call.get("id") or self.new_call_id(), name, json.dumps(arguments))

    def _finish(self, part):
        reason = part.get("done_reason") or "stop"
        if type(reason) is not str:
            raise ValueError("its done_reason is not a string")
        count, context = _count(part, "eval_count"), part.get("context") or ()
        if not all(type(token) is int for token in context):
            raise ValueError("its context is not a list of whole numbers")
        return g.Finish("tool_calls" if self.calls and reason == "stop" else reason, self.index,
                        g.Usage(_count(part, "prompt_eval_count"), count, 0,
                                0 if self.whole else min(self.thinking_parts, count)),
                        g.Timings(*(_count(part, name) for name in _DURATIONS)), tuple(context))


_DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


def _count(part, name):
    """A count or duration of the answer (0 when missing); ValueError for anything but a whole number."""
    value = part.get(name) or 0
    if type(value) is not int:
        raise ValueError(f"its {name} is not a whole number")
    return value


def _logprob_from_wire(item):
    token, logprob = item.get("token", ""), item.get("logprob", 0.0)
    if not isinstance(token, str) or type(logprob) not in (int, float):
        raise ValueError("a logprob's token is not a string or its logprob not a number")
    return g.TokenLogprob(token, logprob, tuple(item.get("bytes") or token.encode()),
                          tuple(_logprob_from_wire(t) for t in item.get("top_logprobs") or ()))


def described_by_show(shown):
    """The capabilities and context length an Ollama /api/show answer gives a model (only those it gives)."""
    found: dict = {}
    capabilities = shown.get("capabilities")
    if isinstance(capabilities, list) and all(isinstance(c, str) for c in capabilities):
        found["capabilities"] = tuple(capabilities)
    info = shown.get("model_info") or {}
    length = info.get(f"{info.get('general.architecture', '')}.context_length")
    if isinstance(length, int) and not isinstance(length, bool) and length > 0:
        found["context_length"] = length
    return found
