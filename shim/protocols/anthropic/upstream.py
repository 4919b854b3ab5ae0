"""Anthropic's Messages API as an upstream: GenerationRequest -> request body; its answers -> events. Pure."""
from __future__ import annotations

import base64
import datetime
import json
import re

from ... import generation as g
from ...errors import Unsupported

VERSION = "2023-06-01"
"The anthropic-version header sent when the backend sets none."
MAX_TOKENS_DEFAULT = 4096
"max_tokens when the request sets none (Anthropic requires it)."
EFFORT_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384, "max": 32768}
"Thinking budgets for a Think that names an effort but no budget; 1024 is Anthropic's minimum."
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                "model_context_window_exceeded": "length", "pause_turn": "stop", "refusal": "stop"}
ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                "permission_error": 403, "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429,
                "api_error": 500, "timeout_error": 504, "overloaded_error": 529}
"The HTTP status each of Anthropic's error types stands for, so an error inside a stream maps as a status does."
_IMAGE_TYPES = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"))
_ID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
# Sampling fields the Messages API has no counterpart for: refused by name rather than silently dropped.
_NO_SAMPLING = ("seed", "min_p", "typical_p", "repeat_penalty", "repeat_last_n", "presence_penalty",
                "frequency_penalty")


class EventError(Exception):
    """An upstream `error` event or error body: the HTTP status its type stands for, and its message."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


# ---------------------------------------------------------------- the request

def refuse_unsupported(request, backend):
    """Refuse, naming the field, whatever the Messages API cannot carry."""
    s = request.sampling
    refused = [name for name in _NO_SAMPLING if getattr(s, name) is not None]
    checks = (("raw", request.prompt is not None and request.raw, "a raw prompt (Anthropic takes chats only)"),
              ("logprobs", request.logprobs, "log probabilities"),
              ("n", request.n != 1, "more than one choice"),
              ("response_format", request.response_format is not None,
               "a JSON output format (Anthropic cannot enforce one; describe the format in the prompt instead)"),
              ("tool_choice", request.tool_choice.mode == "named" and request.tool_choice.kind != "function",
               "a custom tool"),
              ("temperature", s.temperature is not None and s.temperature > 1, "a temperature above 1"),
              *((name, True, None) for name in refused))
    for name, refuse, what in checks:
        if refuse:
            raise Unsupported(f"'{name}' cannot be carried to the {backend} backend"
                              + (f": it takes no {what}" if what else " (the Messages API has no such field)"),
                              param=name)


def request_body(request, max_tokens_default=MAX_TOKENS_DEFAULT):
    """The Messages request body for this generation: streamed, or whole for a client that reads it whole."""
    budget = _thinking_budget(request)
    max_tokens = request.max_tokens or max_tokens_default + (budget or 0)
    body = {"model": request.model, "max_tokens": max_tokens, "stream": request.stream}
    system, messages = _messages(request)
    if system:
        body["system"] = system
    body["messages"] = messages
    for name, value in (("temperature", request.sampling.temperature), ("top_p", request.sampling.top_p),
                        ("top_k", request.sampling.top_k)):
        if value is not None:
            body[name] = value
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.tools:
        choice = request.tool_choice
        tools = request.tools if choice.mode == "none" else choice.offered(request.tools)
        body["tools"] = [_tool(t) for t in tools]
        body["tool_choice"] = _tool_choice(choice, request.parallel_tool_calls)
    if request.think is not None:
        body["thinking"] = ({"type": "enabled", "budget_tokens": min(budget, max_tokens - 1)} if budget
                            else {"type": "disabled"})
    return body


def _thinking_budget(request):
    think = request.think
    if think is None or not think.enabled:
        return None
    return think.budget_tokens or EFFORT_BUDGETS.get(think.effort, EFFORT_BUDGETS["low"])


def _tool(tool):
    schema = dict(tool.parameters) or {"type": "object", "properties": {}}
    rendered = {"name": tool.name, "input_schema": schema}
    if tool.description:
        rendered["description"] = tool.description
    return rendered


def _tool_choice(choice, parallel):
    kind = {"auto": "auto", "required": "any", "named": "tool", "none": "none"}[choice.mode]
    rendered: dict = {"type": kind}
    if kind == "tool":
        rendered["name"] = choice.name
    if not parallel and kind != "none":
        rendered["disable_parallel_tool_use"] = True
    return rendered


def _messages(request):
    """(system text, Messages turns): system messages lifted out, consecutive same-role turns merged."""
    if request.messages is None:
        return request.system, [{"role": "user", "content": _user_blocks(request.prompt, request.images)}]
    system = [m.content for m in request.messages if m.role == "system" and m.content]
    turns: list[dict] = []
    ids = _ToolIds()
    for i, message in enumerate(request.messages):
        if message.role == "system":
            continue
        role, blocks = _turn(message, i, ids)
        if not blocks:  # an empty assistant turn: the Messages API refuses empty content
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n".join(system), turns


def _turn(message, i, ids):
    if message.role == "assistant":
        # message.reasoning is not sent back: Anthropic takes a thinking block only with the signature it made.
        blocks = [{"type": "text", "text": message.content}] if message.content else []
        ids.start_turn()
        for j, call in enumerate(message.tool_calls):
            blocks.append({"type": "tool_use", "id": ids.call(call.id, call.name, i, j), "name": call.name,
                           "input": _input(call, i)})
        return "assistant", blocks
    if message.role == "tool":
        result = {"type": "tool_result", "tool_use_id": ids.result(message.tool_call_id, message.name, i)}
        if message.content or message.images:
            result["content"] = _user_blocks(message.content, message.images)
        return "user", [result]
    return "user", _user_blocks(message.content, message.images)


def _user_blocks(text, images):
    blocks = [{"type": "image", "source": {"type": "base64", "media_type": _media_type(image),
                                           "data": base64.b64encode(image).decode()}} for image in images]
    if text or not blocks:
        blocks.append({"type": "text", "text": text})
    return blocks


def _media_type(image):
    if image[:4] == b"RIFF" and image[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in _IMAGE_TYPES if image.startswith(magic)), "image/png")


def _input(call, i):
    try:
        value = json.loads(call.arguments or "{}")
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise Unsupported(f"the arguments of tool call {call.name!r} in message {i} are not a JSON object, which "
                          "Anthropic's tool_use input must be", param="messages")
    return value


class _ToolIds:
    """Tool-use ids as Anthropic wants them (unique, [A-Za-z0-9_-]), and which call each tool result answers."""

    def __init__(self):
        self.used, self.pending = set(), []

    def start_turn(self):
        """A new assistant turn: results answer its calls from now on."""
        self.pending = []

    def call(self, original, name, i, j):
        """The wire id of call j of message i."""
        wire = _ID_CHARS.sub("_", original or "") or f"toolu_{i}_{j}"
        if wire in self.used:  # Ollama clients number calls per message: call_0 recurs in every turn
            wire = f"{wire}_{i}_{j}"
        self.used.add(wire)
        self.pending.append((original, name, wire))
        return wire

    def result(self, original, name, i):
        """The wire id of the call a tool result answers: by id, else by tool name, else the next unanswered."""
        match = (next((p for p in self.pending if original and p[0] == original), None)
                 or next((p for p in self.pending if name and p[1] == name), None)
                 or (self.pending[0] if self.pending and not original else None))
        if match is None:
            return _ID_CHARS.sub("_", original or "") or f"toolu_{i}"
        self.pending.remove(match)
        return match[2]


# ---------------------------------------------------------------- the answer

class StreamReader:
    """Turns a Messages stream's events (or one whole Message) into events; pure, one per response."""

    def __init__(self):
        self.blocks = {}
        self.usage = {}
        self.reason = None
        self.stop_sequence = None
        self.calls = 0
        self.finished = False
        "message_stop was read."

    def events(self, event):
        """The events one upstream stream event carries."""
        if not isinstance(event, dict):
            raise ValueError("a stream event is not a JSON object")
        kind = event.get("type")
        if kind == "error":
            raise error_of(event)
        if kind == "message_start":
            self.usage.update(event["message"].get("usage") or {})
        elif kind == "content_block_start":
            return self._start(event["index"], event["content_block"])
        elif kind == "content_block_delta":
            return self._delta(event["index"], event["delta"])
        elif kind == "content_block_stop":
            return self._stop(event["index"])
        elif kind == "message_delta":
            self.reason = event["delta"].get("stop_reason") or self.reason
            self.stop_sequence = event["delta"].get("stop_sequence") or self.stop_sequence
            self.usage.update(event.get("usage") or {})
        elif kind == "message_stop":
            self.finished = True
        return []

    def message(self, message):
        """The events of a whole Message object (an upstream asked for, or answering with, no stream)."""
        return [event for piece in whole_as_events(message) for event in self.events(piece)]

    def _start(self, index, block):
        self.blocks[index] = {**block, "json": ""}
        if block["type"] == "text" and block.get("text"):
            return [g.TextDelta(block["text"])]
        if block["type"] == "thinking" and block.get("thinking"):
            return [g.ReasoningDelta(block["thinking"])]
        return []

    def _delta(self, index, delta):
        kind = delta["type"]
        if kind == "text_delta":
            return [g.TextDelta(delta["text"])] if delta["text"] else []
        if kind == "thinking_delta":
            return [g.ReasoningDelta(delta["thinking"])] if delta["thinking"] else []
        if kind == "input_json_delta":
            self.blocks[index]["json"] += delta["partial_json"]
        return []

    def _stop(self, index):
        block = self.blocks.pop(index)
        if block["type"] != "tool_use":
            return []
        arguments = block["json"] or json.dumps(block.get("input") or {})
        call = g.ToolCall(block["id"], block["name"], arguments)
        self.calls += 1
        return [g.ToolCallDelta(call, 0, self.calls - 1)]

    def end(self, timings):
        """The Finish, once the stream is over; a tool call still open (cut off) is passed on as partial."""
        events = []
        for index in sorted(self.blocks):
            block = self.blocks.pop(index)
            if block["type"] == "tool_use":
                events.append(g.ToolCallDelta(g.ToolCall(block["id"], block["name"], block["json"], partial=True),
                                              0, self.calls))
                self.calls += 1
        reason = STOP_REASONS.get(self.reason or "", "stop")
        if reason == "stop" and self.calls:
            reason = "tool_calls"
        u = self.usage
        cached = u.get("cache_read_input_tokens") or 0
        # Anthropic's input_tokens leaves out the cached tokens; the contract's prompt_tokens counts the whole prompt.
        prompt = (u.get("input_tokens") or 0) + (u.get("cache_creation_input_tokens") or 0) + cached
        usage = g.Usage(prompt, u.get("output_tokens") or 0, cached)
        return events + [g.Finish(reason, 0, usage, timings, stop_sequence=self.stop_sequence or None)]


def whole_as_events(message):
    """A whole Message (or error body) as the stream events that would carry it, for StreamReader.events."""
    if not isinstance(message, dict):
        raise ValueError("the answer is not a JSON object")
    if message.get("type") == "error":
        return [message]
    events: list[dict] = [{"type": "message_start", "message": {}}]
    for index, block in enumerate(message["content"]):
        events += [{"type": "content_block_start", "index": index, "content_block": block},
                   {"type": "content_block_stop", "index": index}]
    delta = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    return events + [{"type": "message_delta", "delta": delta, "usage": message.get("usage")},
                     {"type": "message_stop"}]


def error_of(body):
    """The EventError an Anthropic error event or body stands for."""
    error = body.get("error")
    if not isinstance(error, dict):
        return EventError(500, str(error or body))
    kind = str(error.get("type"))
    return EventError(ERROR_STATUS.get(kind, 500), str(error.get("message") or kind))


def models_of(body):
    """(id, display name, created as a Unix time) of each model in a /v1/models answer."""
    return [(m["id"], m.get("display_name") or m["id"], _timestamp(m.get("created_at")))
            for m in body.get("data") or ()]


def _timestamp(text):
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return 0.0
