"""OpenAI's wire format, both ways: request JSON to GenerationRequest, events to response JSON. Pure."""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from dataclasses import dataclass

from .. import generation as g
from ..errors import InvalidRequest, Unsupported
from . import fields as f
from . import options as opts
from . import tools as tool_fields
from .render import StreamRenderer

FINGERPRINT = "fp_shim"

# Fields the real API accepts that shim cannot honour: refused by name rather than silently dropped.
REFUSED = {
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
}
# Fields that only matter to OpenAI's own platform (storage, billing, abuse tracking): accepted, no effect.
ACCEPTED_NO_EFFECT = ("user", "store", "metadata", "service_tier", "safety_identifier", "prompt_cache_key")


@dataclass(frozen=True)
class Call:
    """A parsed request: what to generate and how to answer."""

    request: g.GenerationRequest
    stream: bool = False
    include_usage: bool = False
    echo: bool = False


# ---------------------------------------------------------------- requests

def parse_chat(body) -> Call:
    """Parse a /v1/chat/completions body."""
    f.require_object(body)
    _refuse_unsupported(body)
    messages = f.get(body, "messages", list, required=True)
    if not messages:
        raise InvalidRequest("'messages' must hold at least one message", param="messages")
    tools = tool_fields.parse_tools(body)
    request = g.GenerationRequest(
        model=_model(body),
        messages=name_tool_results(tuple(_parse_message(m, i) for i, m in enumerate(messages))),
        tools=tools,
        tool_choice=tool_fields.parse_tool_choice(body, tools),
        parallel_tool_calls=f.get(body, "parallel_tool_calls", bool, default=True),
        response_format=_parse_response_format(body),
        logprobs=f.get(body, "logprobs", bool, default=False),
        top_logprobs=_top_logprobs(body),
        **_common(body, max_names=("max_completion_tokens", "max_tokens")),
    )
    return Call(request, **_stream_flags(body))


def parse_completion(body) -> Call:
    """Parse a legacy /v1/completions body."""
    f.require_object(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise Unsupported("'prompt' must be a string or an array of one string", param="prompt")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InvalidRequest("'prompt' must be a string", param="prompt")
    best_of = f.get(body, "best_of", int)
    if best_of not in (None, 1) and best_of != f.get(body, "n", int, default=1):
        raise Unsupported("'best_of' other than n is not supported", param="best_of")
    logprobs = f.in_range(f.get(body, "logprobs", int), "logprobs", 0, 5)
    if logprobs is not None and body.get("echo") is True:
        raise Unsupported("'echo' with 'logprobs' is not supported: shim does not compute the prompt tokens' "
                          "log probabilities", param="echo")
    request = g.GenerationRequest(
        model=_model(body),
        prompt=prompt,
        raw=True,
        suffix=f.get(body, "suffix", str),
        logprobs=logprobs is not None,
        top_logprobs=logprobs or 0,
        **_common(body, max_names=("max_tokens",), default_max=16),
    )
    return Call(request, echo=f.get(body, "echo", bool, default=False), **_stream_flags(body))


def parse_embeddings(body):
    """Parse a /v1/embeddings body into (model, inputs, dimensions, encoding_format)."""
    f.require_object(body)
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(s, str) for s in inputs):
        raise InvalidRequest("'input' must be a string or a non-empty array of strings", param="input")
    dimensions = f.in_range(f.get(body, "dimensions", int), "dimensions", 1)
    encoding = f.one_of(f.get(body, "encoding_format", str, default="float"), "encoding_format", ("float", "base64"))
    return _model(body), inputs, dimensions, encoding


def _model(body):
    model = f.get(body, "model", str, required=True)
    if not model:
        raise InvalidRequest("'model' must not be empty", param="model")
    return model


def _refuse_unsupported(body):
    for name, why in REFUSED.items():
        if body.get(name) is not None:
            raise Unsupported(f"'{name}': {why}", param=name)
    modalities = f.get(body, "modalities", list)
    if modalities and any(m != "text" for m in modalities):
        raise Unsupported("'modalities': only text output is supported", param="modalities")
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise Unsupported("'functions' and 'function_call' are deprecated; use 'tools' and 'tool_choice'",
                          param="functions" if body.get("functions") is not None else "function_call")


def _common(body, max_names, default_max=None):
    """Fields shared by chat and legacy completions."""
    max_tokens = default_max
    for name in reversed(max_names):  # the first name wins when both are present
        value = f.in_range(f.get(body, name, int), name, 1)
        if value is not None:
            max_tokens = value
    for name in ACCEPTED_NO_EFFECT:
        if name == "user":
            f.get(body, name, str)
    native = opts.parse_options(f.get(body, "options", dict, default={}), param_prefix="options.")
    sampling = g.Sampling(
        temperature=f.in_range(f.get(body, "temperature", float), "temperature", 0, 2),
        top_p=f.in_range(f.get(body, "top_p", float), "top_p", 0, 1),
        top_k=f.in_range(f.get(body, "top_k", int), "top_k", 0),
        min_p=f.in_range(f.get(body, "min_p", float), "min_p", 0, 1),
        seed=f.get(body, "seed", int),
        repeat_penalty=f.in_range(f.get(body, "repetition_penalty", float), "repetition_penalty", 0),
        presence_penalty=f.in_range(f.get(body, "presence_penalty", float), "presence_penalty", -2, 2),
        frequency_penalty=f.in_range(f.get(body, "frequency_penalty", float), "frequency_penalty", -2, 2),
        logit_bias=_parse_logit_bias(body),
    )
    return dict(
        sampling=opts.merge_sampling(native.sampling, sampling),
        max_tokens=max_tokens if max_tokens is not None else native.max_tokens,
        stop=f.stop_list(body.get("stop"), "stop", limit=4) or native.stop,
        n=f.in_range(f.get(body, "n", int, default=1), "n", 1, 16),
        num_ctx=native.num_ctx,
        keep_alive=opts.parse_keep_alive(body.get("keep_alive")),
        think=opts.parse_think(body),
        backend_options=native.raw,
    )


def _stream_flags(body):
    stream = f.get(body, "stream", bool, default=False)
    stream_options = f.get(body, "stream_options", dict)
    if stream_options is not None and not stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")
    include_usage = f.get(stream_options or {}, "include_usage", bool, default=False,
                          param="stream_options.include_usage")
    return {"stream": stream, "include_usage": include_usage}


def _top_logprobs(body):
    top = f.in_range(f.get(body, "top_logprobs", int), "top_logprobs", 0, 20)
    if top and not body.get("logprobs"):
        raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true", param="top_logprobs")
    return top or 0


def _parse_logit_bias(body):
    bias = f.get(body, "logit_bias", dict, default={})
    parsed = {}
    for key, value in bias.items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequest(f"'logit_bias' keys must be token ids, got {key!r}", param="logit_bias") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not -100 <= value <= 100:
            raise InvalidRequest(f"'logit_bias' values must be numbers between -100 and 100, got {value!r}",
                                 param="logit_bias")
        parsed[token] = float(value)
    return parsed


def _parse_message(message, i):
    where = f"messages[{i}]"
    f.require_object(message, where)
    role = f.get(message, "role", str, required=True, param=f"{where}.role")
    f.one_of(role, f"{where}.role", ("system", "developer", "user", "assistant", "tool"))
    tool_calls = tuple(_parse_tool_call(c, f"{where}.tool_calls[{j}]")
                       for j, c in enumerate(f.get(message, "tool_calls", list, default=[], param=f"{where}.tool_calls")))
    content, images = _parse_content(message.get("content"), where, allow_null=role == "assistant")
    return g.Message(
        role="system" if role == "developer" else role,
        content=content,
        images=images,
        tool_calls=tool_calls,
        tool_call_id=f.get(message, "tool_call_id", str, param=f"{where}.tool_call_id"),
        name=f.get(message, "name", str, param=f"{where}.name"),
    )


def name_tool_results(messages):
    """Tool messages named after the call they answer (OpenAI's carry only its id; templates want the name)."""
    names = {c.id: c.name for m in messages for c in m.tool_calls if c.id}
    return tuple(dataclasses.replace(m, name=names[m.tool_call_id])
                 if m.role == "tool" and not m.name and m.tool_call_id in names else m for m in messages)


def _parse_content(content, where, allow_null):
    if content is None and allow_null:
        return "", ()
    if isinstance(content, str):
        return content, ()
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}.content' must be a string or an array of content parts",
                             param=f"{where}.content")
    texts, images = [], []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        f.require_object(part, here)
        kind = f.get(part, "type", str, required=True, param=f"{here}.type")
        if kind == "text":
            texts.append(f.get(part, "text", str, required=True, param=f"{here}.text"))
        elif kind == "image_url":
            images.append(parse_image_url(part.get("image_url"), here))
        else:
            raise Unsupported(f"'{here}.type' {kind!r} is not supported (text and image_url are)", param=f"{here}.type")
    return "\n".join(texts), tuple(images)


def parse_image_url(value, where):
    """The bytes of a base64 data URL (given as a string or as {"url": ...})."""
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str):
        raise InvalidRequest(f"'{where}.image_url.url' must be a string", param=f"{where}.image_url")
    if not url.startswith("data:") or ";base64," not in url:
        raise Unsupported(f"'{where}.image_url': only base64 data URLs are supported", param=f"{where}.image_url")
    try:
        return base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"'{where}.image_url' holds invalid base64 data", param=f"{where}.image_url") from None


def _parse_tool_call(call, where):
    f.require_object(call, where)
    function = f.get(call, "function", dict, required=True, param=f"{where}.function")
    arguments = f.get(function, "arguments", str, default="{}", param=f"{where}.function.arguments")
    return g.ToolCall(
        id=f.get(call, "id", str, default="", param=f"{where}.id"),
        name=f.get(function, "name", str, required=True, param=f"{where}.function.name"),
        arguments=arguments,
    )


def _parse_response_format(body):
    fmt = f.get(body, "response_format", dict)
    if fmt is None:
        return None
    kind = f.one_of(f.get(fmt, "type", str, required=True, param="response_format.type"), "response_format.type",
                    ("text", "json_object", "json_schema"))
    if kind == "text":
        return None
    if kind == "json_object":
        return g.ResponseFormat("json")
    spec = f.get(fmt, "json_schema", dict, required=True, param="response_format.json_schema")
    schema = f.get(spec, "schema", dict, default={"type": "object"}, param="response_format.json_schema.schema")
    return g.ResponseFormat("json_schema", schema=schema,
                            name=f.get(spec, "name", str, param="response_format.json_schema.name"))


# ---------------------------------------------------------------- responses

def render_chat(choices, *, id, created, model):
    """A whole chat.completion object from gathered choices."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{
            "index": c.index,
            "message": _message(c),
            "logprobs": _logprobs(c.logprobs) if c.logprobs else None,
            "finish_reason": c.finish.reason if c.finish else "stop",
        } for c in choices],
        "usage": render_usage(g.total_usage(choices)),
    }


def render_text_completion(choices, *, id, created, model, prefix=""):
    """A whole text_completion object (legacy completions) from gathered choices."""
    return {
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{
            "index": c.index,
            "text": prefix + c.text,
            "logprobs": _legacy_logprobs(c.logprobs) if c.logprobs else None,
            "finish_reason": c.finish.reason if c.finish else "stop",
        } for c in choices],
        "usage": render_usage(g.total_usage(choices)),
    }


def _message(choice):
    message = {"role": "assistant", "content": choice.text if choice.text or not choice.tool_calls else None,
               "refusal": None}
    if choice.thinking:
        message["reasoning_content"] = choice.thinking
    if choice.tool_calls:
        message["tool_calls"] = [_tool_call(c) for c in choice.tool_calls]
    return message


def _tool_call(call, position=None):
    rendered = tool_fields.render_tool_call(call)
    return rendered if position is None else {"index": position, **rendered}


def _logprob(lp):
    return {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.bytes)}


def _logprobs(items):
    return {"content": [{**_logprob(lp), "top_logprobs": [_logprob(t) for t in lp.top]} for lp in items],
            "refusal": None}


def _legacy_logprobs(items, at=0):
    offsets = []
    for lp in items:
        offsets.append(at)
        at += len(lp.token)
    return {"tokens": [lp.token for lp in items], "token_logprobs": [lp.logprob for lp in items],
            "top_logprobs": [{t.token: t.logprob for t in lp.top} for lp in items], "text_offset": offsets}


def render_usage(usage):
    """OpenAI's usage object."""
    rendered = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens, "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}
    if usage.reasoning_tokens:
        rendered["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return rendered


class ChatStream(StreamRenderer):
    """Turns events into chat.completion.chunk objects; pure, one instance per response."""

    object = "chat.completion.chunk"

    def __init__(self, *, id, created, model, include_usage=False):
        self.id, self.created, self.model = id, created, model
        self.include_usage = include_usage
        self._started = set()
        self._finishes = []

    def chunks(self, event):
        """The chunks (zero or more) that carry one event."""
        if isinstance(event, g.Accepted):
            return []
        if isinstance(event, g.Finish):
            self._finishes.append(event)
            return [self._chunk(event.index, {}, finish=event.reason)]
        if isinstance(event, g.ReasoningDelta):
            return [self._chunk(event.index, self._with_role(event.index, {"content": "",
                                                                            "reasoning_content": event.text}))]
        if isinstance(event, g.TextDelta):
            delta = {"content": event.text}
            logprobs = _logprobs(event.logprobs) if event.logprobs else None
            return [self._chunk(event.index, self._with_role(event.index, delta), logprobs=logprobs)]
        call: dict = {"tool_calls": [_tool_call(event.call, event.position)]}
        if event.index not in self._started:
            call["content"] = None
        return [self._chunk(event.index, self._with_role(event.index, call))]

    def end(self):
        """The chunks after the last event: the usage chunk when asked for."""
        if not self.include_usage:
            return []
        return [{**self._base(), "choices": [], "usage": render_usage(g.usage_of(self._finishes))}]

    def error(self, err):
        """The error object that ends a stream cut short."""
        return [render_error(err)]

    def _with_role(self, index, delta):
        if index in self._started:
            return delta
        self._started.add(index)
        return {"role": "assistant", **delta}

    def _base(self):
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "system_fingerprint": FINGERPRINT}

    def _chunk(self, index, delta, finish=None, logprobs=None):
        chunk = {**self._base(), "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                              "finish_reason": finish}]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk


class CompletionStream(ChatStream):
    """Turns events into legacy text_completion chunks; with echo, each choice starts with the prompt."""

    object = "text_completion"

    def __init__(self, *, prefix="", **meta):
        super().__init__(**meta)
        self.prefix = prefix
        self._offsets = {}

    def chunks(self, event):
        """The chunks (zero or more) that carry one event."""
        if not isinstance(event, (g.Finish, g.TextDelta)):
            return []
        chunks = []
        if event.index not in self._offsets:
            self._offsets[event.index] = len(self.prefix)
            if self.prefix:
                chunks.append(self._text_chunk(event.index, self.prefix))
        if isinstance(event, g.Finish):
            self._finishes.append(event)
            return chunks + [self._text_chunk(event.index, "", finish=event.reason)]
        logprobs = _legacy_logprobs(event.logprobs, self._offsets[event.index]) if event.logprobs else None
        self._offsets[event.index] += len(event.text)
        return chunks + [self._text_chunk(event.index, event.text, logprobs=logprobs)]

    def _text_chunk(self, index, text, finish=None, logprobs=None):
        chunk = {**self._base(), "choices": [{"index": index, "text": text, "logprobs": logprobs,
                                              "finish_reason": finish}]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk


def render_embeddings(model, vectors, prompt_tokens, encoding):
    """An embeddings list object."""
    def encode(vector):
        if encoding == "base64":
            import array
            return base64.b64encode(array.array("f", vector).tobytes()).decode()
        return vector
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def render_model(info):
    """One model object."""
    return {"id": info.name, "object": "model", "created": int(info.modified_at), "owned_by": info.backend}


def render_models(infos):
    """The model list object."""
    return {"object": "list", "data": [render_model(i) for i in infos]}


def render_error(err):
    """OpenAI's error body for a ShimError."""
    return {"error": {"message": err.message, "type": err.kind, "param": err.param, "code": err.code}}


def render_envelope(data=None, err=None):
    """The {success, code, message, data} envelope some OpenAI-style gateways answer in."""
    if err is not None:
        return {"success": False, "code": str(err.status), "message": err.message, "data": None}
    return {"success": True, "code": "200", "message": "successful", "data": data}



# ---------------------------------------------------------------- to and from an upstream OpenAI-compatible server

def upstream_request(request):
    """(path, body) of the streaming request that asks an OpenAI-compatible server for this generation."""
    body = {"model": request.model, "stream": True, "stream_options": {"include_usage": True}}
    s = request.sampling
    for name, value in (("temperature", s.temperature), ("top_p", s.top_p), ("seed", s.seed),
                        ("presence_penalty", s.presence_penalty), ("frequency_penalty", s.frequency_penalty),
                        ("top_k", s.top_k), ("min_p", s.min_p), ("typical_p", s.typical_p),
                        ("repetition_penalty", s.repeat_penalty), ("max_tokens", request.max_tokens)):
        if value is not None:
            body[name] = value
    if s.logit_bias:
        body["logit_bias"] = {str(k): v for k, v in s.logit_bias.items()}
    if request.stop:
        body["stop"] = list(request.stop)
    if request.n != 1:
        body["n"] = request.n
    if request.messages is None and request.raw:
        body["prompt"] = request.prompt
        if request.suffix:
            body["suffix"] = request.suffix
        if request.logprobs:
            body["logprobs"] = request.top_logprobs or 1
        return "/completions", body
    body["messages"] = _upstream_messages(request)
    if request.logprobs:
        body["logprobs"] = True
        if request.top_logprobs:
            body["top_logprobs"] = request.top_logprobs
    if request.response_format:
        body["response_format"] = _upstream_format(request.response_format)
    if request.tools:
        body["tools"] = [tool_fields.render_tool(t) for t in request.tools]
        body["tool_choice"] = render_tool_choice(request.tool_choice)
        if not request.parallel_tool_calls:
            body["parallel_tool_calls"] = False
    return "/chat/completions", body


def render_tool_choice(choice):
    """A ToolChoice as OpenAI's chat completions spell tool_choice."""
    if choice.mode == "named":
        return {"type": choice.kind, choice.kind: {"name": choice.name}}
    if choice.allowed and choice.mode != "none":
        return {"type": "allowed_tools", "allowed_tools": {
            "mode": choice.mode, "tools": [{"type": "function", "function": {"name": n}} for n in choice.allowed]}}
    return choice.mode


def _upstream_format(fmt):
    if fmt.kind == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": fmt.name or "response", "schema": dict(fmt.schema)}}


def _upstream_messages(request):
    if request.messages is None:
        messages = [g.Message("system", request.system)] if request.system else []
        messages.append(g.Message("user", request.prompt, images=request.images))
    else:
        messages = request.messages
    return [_upstream_message(m) for m in messages]


def _upstream_message(message):
    wire = {"role": message.role, "content": message.content}
    if message.images:
        wire["content"] = [{"type": "text", "text": message.content}] + [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(i).decode()}}
            for i in message.images]
    if message.tool_calls:
        wire["tool_calls"] = [_tool_call(c) for c in message.tool_calls]
        wire["content"] = message.content or None
    if message.tool_call_id:
        wire["tool_call_id"] = message.tool_call_id
    if message.name:
        wire["name"] = message.name
    return wire


class UpstreamReader:
    """Turns an upstream's stream chunks (chat or legacy completion) into events; pure, one per response."""

    def __init__(self):
        self.calls = {}
        self.reasons = {}
        self.usage = None
        self.pieces = 0

    def events(self, chunk):
        """The events one upstream chunk carries (finishes are held until end())."""
        if not isinstance(chunk, dict):
            raise ValueError("a stream chunk is not a JSON object")
        if chunk.get("error"):
            error = chunk["error"]
            raise ValueError(error.get("message", str(error)) if isinstance(error, dict) else str(error))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        events = []
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            text = delta.get("content") if "delta" in choice else choice.get("text")
            logprobs = _read_logprobs(choice.get("logprobs"))
            if text or logprobs:
                self.pieces += 1
                events.append(g.TextDelta(text or "", index, logprobs))
            for call in delta.get("tool_calls") or ():
                self._add_call(index, call)
            if choice.get("finish_reason"):
                self.reasons[index] = choice["finish_reason"]
        return events

    def _add_call(self, index, call):
        slot = self.calls.setdefault(index, {}).setdefault(call.get("index", 0), {"id": "", "name": "", "args": ""})
        function = call.get("function") or {}
        slot["id"] = call.get("id") or slot["id"]
        slot["name"] += function.get("name") or ""
        slot["args"] += function.get("arguments") or ""

    def end(self, timings):
        """The tool calls and the Finish of each choice, once the stream is over."""
        usage = self.usage or {}
        prompt = usage.get("prompt_tokens", 0)
        completion = usage.get("completion_tokens", self.pieces)
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        events: list[g.Event] = []
        indexes = sorted(set(self.reasons) | set(self.calls)) or [0]
        for index in indexes:
            calls = [self.calls[index][k] for k in sorted(self.calls.get(index, {}))]
            reason = self.reasons.get(index, "stop")
            for position, call in enumerate(calls):
                events.append(g.ToolCallDelta(g.ToolCall(call["id"] or f"call_{index}_{position}", call["name"],
                                                         call["args"] or "{}",
                                                         partial=reason == "length" and not _is_object(call["args"])),
                                              index, position))
            last = index == indexes[-1]
            events.append(g.Finish("tool_calls" if calls and reason == "stop" else reason, index,
                                   g.Usage(prompt, completion if last else 0, cached, reasoning if last else 0),
                                   timings))
        return events


def _is_object(text):
    try:
        return isinstance(json.loads(text or "{}"), dict)
    except ValueError:
        return False


def _read_logprobs(value):
    if not isinstance(value, dict):
        return ()
    if "content" in value:
        return tuple(g.TokenLogprob(i["token"], i["logprob"], tuple(i.get("bytes") or ()),
                                    tuple(g.TokenLogprob(t["token"], t["logprob"], tuple(t.get("bytes") or ()))
                                          for t in i.get("top_logprobs") or ()))
                     for i in value.get("content") or ())
    tops = value.get("top_logprobs") or [{}] * len(value.get("tokens") or ())
    return tuple(g.TokenLogprob(tok, lp, tuple(tok.encode()),
                                tuple(g.TokenLogprob(k, v, tuple(k.encode())) for k, v in (top or {}).items()))
                 for tok, lp, top in zip(value.get("tokens") or (), value.get("token_logprobs") or (), tops))
