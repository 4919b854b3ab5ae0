"""Anthropic's Messages API answers: Message objects, the named-event stream, errors, model lists. Pure."""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone

from ... import generation as g, ids
from ...errors import InvalidRequest, ServerBusy
from .. import fields as f
from ..render import StreamRenderer
from ..tools import arguments_object

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 504: "timeout_error", 529: "overloaded_error"}
"Anthropic's error types by HTTP status; another 4xx is an invalid_request_error, another 5xx an api_error."
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
OVERLOADED = 529


def new_id(prefix):
    """A fresh id like msg_3f9c... (prefixes: msg, toolu, req)."""
    return f"{prefix}_{ids.token_hex(12)}"


# ---------------------------------------------------------------- whole messages

def render_message(choice, *, id, model, prompt_tokens=0):
    """A whole Message object from one gathered choice (prompt_tokens: the estimate if the backend gave none)."""
    content = []
    if choice.thinking:
        content.append({"type": "thinking", "thinking": choice.thinking, "signature": ""})
    if choice.text:
        content.append({"type": "text", "text": choice.text})
    content.extend(render_tool_use(c) for c in choice.tool_calls)
    finish = choice.finish or g.Finish("stop")
    reason, sequence = stop_reason(finish, bool(choice.tool_calls))
    return {"id": id, "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": reason, "stop_sequence": sequence, "usage": render_usage(finish.usage, prompt_tokens)}


def render_tool_use(call):
    """A tool call as a tool_use block (its input an object: {} if it was cut off unreadable)."""
    return {"type": "tool_use", "id": call.id or new_id("toolu"), "name": call.name, "input": arguments_object(call.arguments)}


def stop_reason(finish, called):
    """(stop_reason, stop_sequence) of a Finish; a matched stop string is reported as the one that matched."""
    if finish.stop_sequence is not None and finish.reason == "stop":
        return "stop_sequence", finish.stop_sequence
    if called and finish.reason != "length":
        return "tool_use", None
    return STOP_REASONS.get(finish.reason, "end_turn"), None


def render_usage(usage, prompt_tokens=0):
    """Anthropic's usage: input_tokens without the cached ones, which are cache_read_input_tokens."""
    prompt = usage.prompt_tokens or prompt_tokens
    cached = min(usage.cached_tokens, prompt)
    return {"input_tokens": prompt - cached, "output_tokens": usage.completion_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


# ---------------------------------------------------------------- streams

class MessageStream(StreamRenderer):
    """Turns events into Anthropic's named stream events: one block open at a time, indexes from 0."""

    def __init__(self, *, id, model, prompt_tokens=0):
        self.id, self.model = id, model
        self.prompt_tokens = prompt_tokens
        "The prompt's length for message_start: the backend's count when it gives one, else this estimate."
        self._started = False
        self._open = None
        "The kind of the block open now (text, thinking, or (\"tool_use\", call id)), or None."
        self._index = -1
        self._called = False
        self._streamed = ""
        "The argument text of the tool_use block open now, as its pieces went out."

    def chunks(self, event):
        """The events that carry one generation event (only the first choice: Messages has no n)."""
        if isinstance(event, g.Accepted):
            self.prompt_tokens = event.prompt_tokens or self.prompt_tokens
            return self._start()
        if getattr(event, "index", 0) != 0:
            return []
        chunks = self._start()
        if isinstance(event, g.TextDelta):
            return chunks + self._delta("text", {"type": "text_delta", "text": event.text}) if event.text else chunks
        if isinstance(event, g.ReasoningDelta):
            return chunks + self._delta("thinking", {"type": "thinking_delta", "thinking": event.text})
        if isinstance(event, g.ToolCallArgumentsDelta):
            return chunks + self._tool_piece(event)
        if isinstance(event, g.ToolCallDelta):
            return chunks + self._tool_use(event.call)
        return chunks + self._finish(event)

    def end(self):
        """Nothing more: message_stop went out with the Finish."""
        return self._start()

    def error(self, err):
        """An error event; the stream then ends without message_stop, which the SDK raises as an API error."""
        return [render_error(err)[0]]

    def _start(self):
        if self._started:
            return []
        self._started = True
        message = {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                   "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": self.prompt_tokens, "output_tokens": 0,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
        return [{"type": "message_start", "message": message}, {"type": "ping"}]

    def _delta(self, kind, delta):
        chunks = []
        if self._open != kind:
            chunks += self._close()
            empty = {"type": "text", "text": ""} if kind == "text" else {"type": "thinking", "thinking": ""}
            chunks += self._open_block(empty, kind)
        return chunks + [{"type": "content_block_delta", "index": self._index, "delta": delta}]

    def _open_block(self, block, kind):
        self._index += 1
        self._open = kind
        return [{"type": "content_block_start", "index": self._index, "content_block": block}]

    def _close(self):
        if self._open is None:
            return []
        chunks = []
        if self._open == "thinking":  # the SDK expects a signature just before the block closes
            chunks.append({"type": "content_block_delta", "index": self._index,
                           "delta": {"type": "signature_delta", "signature": ""}})
        self._open = None
        return chunks + [{"type": "content_block_stop", "index": self._index}]

    def _tool_piece(self, piece):
        """A piece of a call's arguments as it streams in: the call's tool_use block opens on its first piece."""
        chunks = []
        if self._open != ("tool_use", piece.id):
            self._called, self._streamed = True, ""
            block = {"type": "tool_use", "id": piece.id, "name": piece.name, "input": {}}
            chunks = self._close() + self._open_block(block, ("tool_use", piece.id))
        self._streamed += piece.text
        return chunks + [self._input_json(piece.text)] if piece.text else chunks

    def _tool_use(self, call):
        """A whole call: its own block, or the end of the block its pieces opened (with what they left out)."""
        if self._open == ("tool_use", call.id):
            rest = call.arguments[len(self._streamed):] if call.arguments.startswith(self._streamed) else ""
            if not self._streamed and not rest:
                rest = "{}"
            return ([self._input_json(rest)] if rest else []) + self._close()
        self._called = True
        block = {**render_tool_use(call), "input": {}}
        arguments = json.dumps(arguments_object(call.arguments), ensure_ascii=False)
        return self._close() + self._open_block(block, "tool_use") + [self._input_json(arguments)] + self._close()

    def _input_json(self, text):
        return {"type": "content_block_delta", "index": self._index,
                "delta": {"type": "input_json_delta", "partial_json": text}}

    def _finish(self, finish):
        reason, sequence = stop_reason(finish, self._called)
        usage = render_usage(finish.usage, self.prompt_tokens)
        return self._close() + [
            {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence}, "usage": usage},
            {"type": "message_stop"}]


# ---------------------------------------------------------------- errors

_PROMPT_TOO_LONG = re.compile(r"the prompt is (\d+) tokens, more than the model's context window of (\d+) tokens")
_TOO_MUCH_ASKED = re.compile(r"maximum context length is (\d+) tokens; you requested \d+ tokens \((\d+) in the "
                             r"prompt, (\d+) for the completion\)")


def render_error(err):
    """(body, status) of Anthropic's error answer for a ShimError; a full queue is 529 overloaded_error."""
    status = OVERLOADED if isinstance(err, ServerBusy) else err.status
    kind = ERROR_TYPES.get(status) or ("invalid_request_error" if status < 500 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": _message(err)}}, status


def _message(err):
    """The error's text, a context overflow worded as Anthropic words it (Claude Code's recovery reads it)."""
    if not isinstance(err, InvalidRequest):
        return err.message
    too_long = _PROMPT_TOO_LONG.search(err.message)
    if too_long:
        return f"prompt is too long: {too_long[1]} tokens > {too_long[2]} maximum"
    too_much = _TOO_MUCH_ASKED.search(err.message)
    if too_much:
        window, prompt, asked = too_much.groups()
        return (f"input length and `max_tokens` exceed context limit: {prompt} + {asked} > {window}, "
                "decrease input length or `max_tokens` and try again")
    return err.message


# ---------------------------------------------------------------- models

def render_model(info):
    """One model object in Anthropic's shape."""
    created = datetime.fromtimestamp(info.modified_at or 0, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": info.name, "display_name": info.name, "created_at": created}


def parse_model_page(args):
    """(after_id, before_id, limit) of a model list's query string."""
    limit = args.get("limit", "20")
    try:
        limit = int(limit)
    except ValueError:
        raise InvalidRequest(f"'limit' must be an integer, got {limit!r}", param="limit") from None
    return args.get("after_id"), args.get("before_id"), f.in_range(limit, "limit", 1, 1000)


def render_models(infos, after_id=None, before_id=None, limit=20):
    """A page of the model list: those after after_id (or before before_id), at most limit."""
    ids = [i.name for i in infos]
    start, stop = 0, len(infos)
    if after_id is not None:
        start = ids.index(after_id) + 1 if after_id in ids else len(ids)
    if before_id is not None:
        stop = ids.index(before_id) if before_id in ids else 0
        start = max(start, stop - limit)
    page = infos[start:min(stop, start + limit)]
    has_more = (start + len(page) < stop) if before_id is None else start > 0
    return {"data": [render_model(i) for i in page], "has_more": has_more,
            "first_id": page[0].name if page else None, "last_id": page[-1].name if page else None}
