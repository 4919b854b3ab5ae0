"""Ollama's native wire format, both ways: request JSON to GenerationRequest, events to NDJSON objects. Pure."""
from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from .. import generation as g
from ..errors import InvalidRequest, Unsupported
from . import fields as f
from . import options as opts
from . import tools as tool_fields
from .render import StreamRenderer


@dataclass(frozen=True)
class Call:
    """A parsed request: what to generate and how to answer."""

    request: g.GenerationRequest
    stream: bool = True
    load_only: bool = False
    "An empty prompt or message list: load (or with keep_alive 0 unload) the model and answer at once."


# ---------------------------------------------------------------- requests

def parse_generate(body) -> Call:
    """Parse an /api/generate body."""
    f.require_object(body)
    raw = f.get(body, "raw", bool, default=False)
    system = f.get(body, "system", str)
    context = f.get(body, "context", list, default=[])
    if f.get(body, "template", str):
        raise Unsupported("'template' is not supported: shim formats prompts with the model's own chat template",
                          param="template")
    if raw and (system or context):
        raise InvalidRequest("raw mode does not support template, system, or context", param="raw")
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in context):
        raise InvalidRequest("'context' must be an array of token ids", param="context")
    prompt = f.get(body, "prompt", str, default="")
    request = g.GenerationRequest(
        prompt=prompt,
        raw=raw,
        system=system,
        suffix=f.get(body, "suffix", str) or None,
        context=tuple(context),
        messages=None,
        **_common(body, images=_images(body.get("images"), "images")),
    )
    return Call(request, stream=f.get(body, "stream", bool, default=True), load_only=not prompt and not context)


def parse_chat(body) -> Call:
    """Parse an /api/chat body."""
    f.require_object(body)
    messages = f.get(body, "messages", list, default=[])
    parsed = tuple(_parse_message(m, i) for i, m in enumerate(messages))
    tools = tool_fields.parse_tools(body)
    request = g.GenerationRequest(
        messages=parsed,
        tools=tools,
        # tool_choice is not Ollama's: shim accepts it as OpenAI spells it, so forced calls are reachable here too.
        tool_choice=tool_fields.parse_tool_choice(body, tools),
        **_common(body),
    )
    return Call(request, stream=f.get(body, "stream", bool, default=True), load_only=not parsed)


def parse_embed(body):
    """Parse an /api/embed body into (model, inputs, truncate, dimensions, options)."""
    f.require_object(body)
    raw = body.get("input", [])
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not all(isinstance(s, str) for s in inputs):
        raise InvalidRequest("invalid input type", param="input")
    return (_model(body), inputs, f.get(body, "truncate", bool, default=True),
            f.in_range(f.get(body, "dimensions", int), "dimensions", 1),
            opts.parse_options(f.get(body, "options", dict, default={})))


def parse_embeddings(body):
    """Parse a legacy /api/embeddings body into (model, prompt)."""
    f.require_object(body)
    opts.parse_options(f.get(body, "options", dict, default={}))
    return _model(body), f.get(body, "prompt", str, default="")


def parse_copy(body):
    """(source, destination) of an /api/copy body."""
    f.require_object(body)
    source = f.get(body, "source", str, required=True)
    return source, f.get(body, "destination", str, required=True)


CREATE_FIELDS = {"from": "from_", "files": "files", "adapters": "adapters", "template": "template",
                 "license": "license", "system": "system", "parameters": "parameters", "messages": "messages",
                 "quantize": "quantize"}


def parse_create(body):
    """The keyword arguments of an /api/create body, for the ollama client's create()."""
    fields = {"model": parse_model_name(body)}
    for wire, name in CREATE_FIELDS.items():
        if body.get(wire) is not None:
            fields[name] = body[wire]
    for name in ("files", "adapters", "parameters"):
        f.get(body, name, dict)
    return fields


def parse_model_name(body):
    """The model a management request (show, delete, pull...) names, by `model` or the legacy `name`."""
    f.require_object(body)
    name = f.get(body, "model", str) or f.get(body, "name", str)
    if not name:
        raise InvalidRequest("model is required", param="model")
    return name


def _model(body):
    model = f.get(body, "model", str)
    if not model:
        raise InvalidRequest("model is required", param="model")
    return model


def _common(body, images=()):
    options = opts.parse_options(f.get(body, "options", dict, default={}))
    logprobs = f.get(body, "logprobs", bool, default=False)
    top = f.get(body, "top_logprobs", int, default=0)
    if not 0 <= top <= 20:
        raise InvalidRequest("top_logprobs must be between 0 and 20", param="top_logprobs")
    f.get(body, "truncate", bool)
    f.get(body, "shift", bool)
    request = dict(
        model=_model(body),
        sampling=options.sampling,
        max_tokens=options.max_tokens,
        stop=options.stop,
        num_ctx=options.num_ctx,
        response_format=_parse_format(body.get("format")),
        logprobs=logprobs or top > 0,
        top_logprobs=top,
        think=opts.parse_think({"think": body.get("think")}),
        keep_alive=opts.parse_keep_alive(body.get("keep_alive")),
        backend_options=options.raw,
    )
    if images:
        request["images"] = images
    return request


def _parse_format(value):
    if value in (None, ""):
        return None
    if value == "json":
        return g.ResponseFormat("json")
    if isinstance(value, dict):
        return g.ResponseFormat("json_schema", schema=value)
    raise InvalidRequest(f'invalid format: {json.dumps(value)}; expected "json" or a valid JSON Schema object',
                         param="format")


def _images(value, where):
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise InvalidRequest(f"'{where}' must be an array of base64 strings", param=where)
    try:
        return tuple(base64.b64decode(i, validate=True) for i in value)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"'{where}' holds invalid base64 data", param=where) from None


def _parse_message(message, i):
    where = f"messages[{i}]"
    f.require_object(message, where)
    role = (f.get(message, "role", str, required=True, param=f"{where}.role")).lower()
    f.one_of(role, f"{where}.role", ("system", "user", "assistant", "tool"))
    calls = f.get(message, "tool_calls", list, default=[], param=f"{where}.tool_calls")
    return g.Message(
        role=role,
        content=f.get(message, "content", str, default="", param=f"{where}.content"),
        images=_images(message.get("images"), f"{where}.images"),
        tool_calls=tuple(_parse_tool_call(c, f"{where}.tool_calls[{j}]", j) for j, c in enumerate(calls)),
        tool_call_id=f.get(message, "tool_call_id", str, param=f"{where}.tool_call_id"),
        name=f.get(message, "tool_name", str, param=f"{where}.tool_name"),
    )


def _parse_tool_call(call, where, position):
    f.require_object(call, where)
    function = f.get(call, "function", dict, required=True, param=f"{where}.function")
    arguments = f.get(function, "arguments", dict, default={}, param=f"{where}.function.arguments")
    return g.ToolCall(id=f.get(call, "id", str, default=f"call_{position}", param=f"{where}.id"),
                      name=f.get(function, "name", str, required=True, param=f"{where}.function.name"),
                      arguments=json.dumps(arguments))


# ---------------------------------------------------------------- responses

def timestamp(seconds=None):
    """RFC 3339 in UTC with nanosecond-style fraction trimmed of zeros, as Ollama writes created_at."""
    seconds = time.time() if seconds is None else seconds
    text = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def _tool_call(call, position):
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = {}
    return {"id": call.id, "function": {"index": position, "name": call.name, "arguments": arguments}}


def _logprobs(items):
    def one(lp):
        return {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.bytes)}
    return [{**one(lp), "top_logprobs": [one(t) for t in lp.top]} if lp.top else one(lp) for lp in items]


def _metrics(finish):
    t, u = finish.timings, finish.usage
    return {"total_duration": t.total_ns, "load_duration": t.load_ns, "prompt_eval_count": u.prompt_tokens,
            "prompt_eval_duration": t.prompt_eval_ns, "eval_count": u.completion_tokens, "eval_duration": t.eval_ns}


class GenerateStream(StreamRenderer):
    """Turns events into /api/generate objects; pure, one instance per response."""

    def __init__(self, model, raw=False, now=timestamp):
        self.model, self.raw, self.now = model, raw, now

    def _base(self):
        return {"model": self.model, "created_at": self.now()}

    def chunks(self, event):
        """The objects (zero or more) that carry one event."""
        if isinstance(event, g.ReasoningDelta):
            return [{**self._base(), "response": "", "done": False, "thinking": event.text}]
        if isinstance(event, g.TextDelta):
            chunk = {**self._base(), "response": event.text, "done": False}
            if event.logprobs:
                chunk["logprobs"] = _logprobs(event.logprobs)
            return [chunk]
        if isinstance(event, g.Finish):
            return [self.final(event)]
        return []

    def error(self, err):
        """The error object that ends a stream cut short."""
        return [render_error(err)]

    def final(self, finish, text=""):
        """The closing object, with the measured durations and counts."""
        chunk = {**self._base(), "response": text, "done": True, "done_reason": _done_reason(finish.reason)}
        if not self.raw and finish.context:
            chunk["context"] = list(finish.context)
        return {**chunk, **_metrics(finish)}

    def whole(self, choice):
        """The single object of a non-streaming answer."""
        chunk = self.final(choice.finish, choice.text)
        if choice.thinking:
            chunk["thinking"] = choice.thinking
        if choice.logprobs:
            chunk["logprobs"] = _logprobs(choice.logprobs)
        return chunk

    def load_reply(self, reason):
        """The one object that answers an empty prompt (load or unload)."""
        return {**self._base(), "response": "", "done": True, "done_reason": reason}


class ChatStream(GenerateStream):
    """Turns events into /api/chat objects."""

    def chunks(self, event):
        """The objects (zero or more) that carry one event."""
        if isinstance(event, g.ReasoningDelta):
            return [{**self._base(), "message": {"role": "assistant", "content": "", "thinking": event.text},
                     "done": False}]
        if isinstance(event, g.TextDelta):
            chunk = {**self._base(), "message": {"role": "assistant", "content": event.text}, "done": False}
            if event.logprobs:
                chunk["logprobs"] = _logprobs(event.logprobs)
            return [chunk]
        if isinstance(event, g.ToolCallDelta):
            if event.call.partial:  # Ollama has no shape for a call cut off mid-way: left out, not made up
                return []
            message = {"role": "assistant", "content": "", "tool_calls": [_tool_call(event.call, event.position)]}
            return [{**self._base(), "message": message, "done": False}]
        if isinstance(event, g.Finish):
            return [self.final(event)]
        return []

    def final(self, finish, text="", tool_calls=()):
        """The closing object, with the measured durations and counts."""
        message = {"role": "assistant", "content": text}
        calls = [_tool_call(c, i) for i, c in enumerate(tool_calls) if not c.partial]
        if calls:
            message["tool_calls"] = calls
        return {**self._base(), "message": message, "done": True, "done_reason": _done_reason(finish.reason),
                **_metrics(finish)}

    def whole(self, choice):
        """The single object of a non-streaming answer."""
        chunk = self.final(choice.finish, choice.text, choice.tool_calls)
        if choice.thinking:
            chunk["message"]["thinking"] = choice.thinking
        if choice.logprobs:
            chunk["logprobs"] = _logprobs(choice.logprobs)
        return chunk

    def load_reply(self, reason):
        """The one object that answers an empty message list (load or unload)."""
        return {**self._base(), "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": reason}


class ProgressStream(StreamRenderer):
    """Model-management progress objects, passed on as they come."""

    def chunks(self, event):
        """The progress object itself."""
        return [event]

    def error(self, err):
        """The error object that ends a stream cut short."""
        return [render_error(err)]


def _done_reason(reason):
    # Ollama reports a tool call turn as a plain stop.
    return "stop" if reason == "tool_calls" else reason


def _details(info):
    return {"parent_model": "", "format": info.format, "family": info.family,
            "families": [info.family] if info.family else None, "parameter_size": info.parameter_size,
            "quantization_level": info.quantization}


def render_tags(infos):
    """The /api/tags list."""
    return {"models": [{"name": i.name, "model": i.name, "modified_at": timestamp(i.modified_at), "size": i.size,
                        "digest": i.digest, "details": _details(i)} for i in infos]}


def render_ps(infos):
    """The /api/ps list of loaded models, the one that stays longest first."""
    infos = sorted(infos, key=lambda i: float("inf") if i.expires_at is None else i.expires_at, reverse=True)
    return {"models": [{"name": i.name, "model": i.name, "size": i.size, "digest": i.digest, "details": _details(i),
                        "expires_at": timestamp(i.expires_at) if i.expires_at else "2318-01-01T00:00:00Z",
                        "size_vram": 0, "context_length": i.context_length} for i in infos if i.loaded]}


def render_show(info):
    """The /api/show answer."""
    # The served window overrides the file's trained <arch>.context_length: clients size prompts by this key.
    model_info = {**info.extra.get("model_info", {}), "general.architecture": info.family,
                  "general.parameter_count": info.extra.get("parameter_count"),
                  f"{info.family or 'general'}.context_length": info.context_length}
    return {"modelfile": f"# Served by shim\nFROM {info.name}\n", "parameters": info.extra.get("parameters", ""),
            "template": info.template, "details": _details(info), "model_info": model_info,
            "capabilities": list(info.capabilities), "modified_at": timestamp(info.modified_at)}


def render_error(err):
    """Ollama's error body for a ShimError."""
    return {"error": err.message}



# ---------------------------------------------------------------- to and from an upstream Ollama server

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
    """("chat" or "generate", keyword arguments) for the ollama client's method that serves this request."""
    common = {"model": request.model, "stream": True, "options": upstream_options(request, seed_offset)}
    if request.response_format:
        common["format"] = "json" if request.response_format.kind == "json" else dict(request.response_format.schema)
    if request.keep_alive is not None:
        common["keep_alive"] = request.keep_alive
    if request.think is not None:
        common["think"] = opts.think_value(request.think)
    if request.logprobs:
        common["logprobs"] = True
        if request.top_logprobs:
            common["top_logprobs"] = request.top_logprobs
    if request.messages is None:
        extra = {"prompt": request.prompt, "raw": request.raw or None, "system": request.system,
                 "suffix": request.suffix, "context": list(request.context) or None,
                 "images": [base64.b64encode(i).decode() for i in request.images] or None}
        return "generate", {**common, **{k: v for k, v in extra.items() if v is not None}}
    messages = [_upstream_message(m) for m in request.messages]
    tools = [tool_fields.render_tool(t) for t in request.tool_choice.offered(request.tools)]
    return "chat", {**common, "messages": messages, "tools": tools or None}


def _upstream_message(message):
    wire = {"role": message.role, "content": message.content}
    if message.images:
        wire["images"] = [base64.b64encode(i).decode() for i in message.images]
    if message.tool_calls:
        wire["tool_calls"] = [{"function": {"name": c.name, "arguments": _arguments(c.arguments)}}
                              for c in message.tool_calls]
    if message.role == "tool" and message.name:
        wire["tool_name"] = message.name
    if message.tool_call_id:
        wire["tool_call_id"] = message.tool_call_id
    return wire


def _arguments(text):
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class UpstreamReader:
    """Turns an upstream Ollama's response objects (as dicts) into events for one choice; pure."""

    def __init__(self, index=0, new_call_id=None):
        self.index = index
        self.new_call_id = new_call_id or (lambda: f"call_{index}")
        self.calls = 0

    def events(self, part):
        """The events one response object carries."""
        if part.get("error"):
            raise ValueError(str(part["error"]))
        message = part.get("message") or {}
        text = message.get("content") if "message" in part else part.get("response")
        thinking = message.get("thinking") if "message" in part else part.get("thinking")
        logprobs = tuple(_logprob_from_wire(i) for i in part.get("logprobs") or ())
        events: list[g.Event] = [g.ReasoningDelta(thinking, self.index)] if thinking else []
        if text or logprobs:
            events.append(g.TextDelta(text or "", self.index, logprobs))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            events.append(g.ToolCallDelta(g.ToolCall(call.get("id") or self.new_call_id(), function.get("name", ""),
                                                     json.dumps(function.get("arguments") or {})),
                                          self.index, self.calls))
            self.calls += 1
        if part.get("done"):
            events.append(self._finish(part))
        return events

    def _finish(self, part):
        reason = part.get("done_reason") or "stop"
        return g.Finish("tool_calls" if self.calls and reason == "stop" else reason, self.index,
                        g.Usage(part.get("prompt_eval_count") or 0, part.get("eval_count") or 0),
                        g.Timings(part.get("total_duration") or 0, part.get("load_duration") or 0,
                                  part.get("prompt_eval_duration") or 0, part.get("eval_duration") or 0),
                        tuple(part.get("context") or ()))


def _logprob_from_wire(item):
    token = item.get("token", "")
    return g.TokenLogprob(token, item.get("logprob", 0.0), tuple(item.get("bytes") or token.encode()),
                          tuple(_logprob_from_wire(t) for t in item.get("top_logprobs") or ()))
