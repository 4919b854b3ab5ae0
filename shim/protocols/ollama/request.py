"""Ollama's API, client side in: generate, chat, embed and management requests parsed into the contract. Pure."""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from ... import generation as g
from ...errors import InvalidRequest, Unsupported
from .. import fields as f
from .. import options as opts
from .. import tools as tool_fields


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
    return Call(request, stream=request.stream, load_only=not prompt and not context)


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
    return Call(request, stream=request.stream, load_only=not parsed)


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
    f.get(body, "shift", bool)
    request = dict(
        model=_model(body),
        truncate=f.get(body, "truncate", bool, default=True),
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
        stream=f.get(body, "stream", bool, default=True),
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
    role = (f.get(message, "role", str, required=True, within=where)).lower()
    f.one_of(role, f"{where}.role", ("system", "user", "assistant", "tool"))
    calls = f.get(message, "tool_calls", list, default=[], within=where)
    return g.Message(
        role=role,
        content=f.get(message, "content", str, default="", within=where),
        images=_images(message.get("images"), f"{where}.images"),
        tool_calls=tuple(_parse_tool_call(c, f"{where}.tool_calls[{j}]", j) for j, c in enumerate(calls)),
        tool_call_id=f.get(message, "tool_call_id", str, within=where),
        name=f.get(message, "tool_name", str, within=where),
        reasoning=f.get(message, "thinking", str, default="", within=where),
    )


def _parse_tool_call(call, where, position):
    f.require_object(call, where)
    function = f.get(call, "function", dict, required=True, within=where)
    arguments = f.get(function, "arguments", dict, default={}, param=f"{where}.function.arguments")
    return g.ToolCall(id=f.get(call, "id", str, default=f"call_{position}", within=where),
                      name=f.get(function, "name", str, required=True, param=f"{where}.function.name"),
                      arguments=json.dumps(arguments))


# ---------------------------------------------------------------- responses
