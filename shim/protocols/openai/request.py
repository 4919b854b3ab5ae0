"""OpenAI's API, client side in: chat and completion requests parsed into the contract. Pure."""
from __future__ import annotations

import base64
import binascii
import dataclasses
from dataclasses import dataclass

from ... import generation as g
from ...errors import InvalidRequest, Unsupported
from .. import fields as f
from .. import options as opts
from .. import tools as tool_fields


# Fields the real API accepts that shim cannot honour: refused by name rather than silently dropped.
REFUSED = {
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
}
# Fields that only matter to OpenAI's own platform (storage, billing, abuse tracking): accepted, no effect.
REASONING_FIELDS = ("reasoning_content", "reasoning")
"The names a message's reasoning goes by: DeepSeek's and llama-server's, and vLLM's and OpenRouter's newer one."
ACCEPTED_NO_EFFECT = ("user", "store", "metadata", "service_tier", "safety_identifier", "prompt_cache_key")
# Every field shim reads from a request; any other (vLLM's chat_template_kwargs, guided_json...) is carried as it is
# in extra_fields, for an OpenAI-compatible upstream.
COMMON_FIELDS = frozenset({
    "model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed",
    "repetition_penalty", "presence_penalty", "frequency_penalty", "logit_bias", "stop", "n", "logprobs", "options",
    "keep_alive", "think", "reasoning_effort", *ACCEPTED_NO_EFFECT})
CHAT_FIELDS = COMMON_FIELDS | {
    "messages", "tools", "tool_choice", "parallel_tool_calls", "response_format", "top_logprobs",
    "max_completion_tokens", "modalities", "functions", "function_call", *REFUSED}
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt", "suffix", "echo", "best_of"}


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
    flags = _stream_flags(body)
    request = g.GenerationRequest(
        model=_model(body),
        messages=name_tool_results(tuple(_parse_message(m, i) for i, m in enumerate(messages))),
        tools=tools,
        tool_choice=tool_fields.parse_tool_choice(body, tools),
        parallel_tool_calls=f.get(body, "parallel_tool_calls", bool, default=True),
        response_format=_parse_response_format(body),
        logprobs=f.get(body, "logprobs", bool, default=False),
        top_logprobs=_top_logprobs(body),
        extra_fields=_unknown(body, CHAT_FIELDS),
        stream=flags["stream"],
        **_common(body, max_names=("max_completion_tokens", "max_tokens")),
    )
    return Call(request, **flags)


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
    flags = _stream_flags(body)
    request = g.GenerationRequest(
        model=_model(body),
        prompt=prompt,
        raw=True,
        suffix=f.get(body, "suffix", str),
        logprobs=logprobs is not None,
        top_logprobs=logprobs or 0,
        extra_fields=_unknown(body, COMPLETION_FIELDS),
        stream=flags["stream"],
        **_common(body, max_names=("max_tokens",), default_max=16),
    )
    return Call(request, echo=f.get(body, "echo", bool, default=False), **flags)


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


def _unknown(body, known):
    """The fields of body shim does not read, as they are."""
    return {name: value for name, value in body.items() if name not in known}


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
    f.get(body, "user", str)  # the one of ACCEPTED_NO_EFFECT whose type is checked
    native = opts.parse_options(f.get(body, "options", dict, default={}), param_prefix="options.")
    sampling = native.sampling
    if not body.keys().isdisjoint(SAMPLING_FIELDS):  # most requests set none: nothing to check or merge
        sampling = opts.merge_sampling(sampling, _sampling(body))
    return dict(
        sampling=sampling,
        max_tokens=max_tokens if max_tokens is not None else native.max_tokens,
        stop=f.stop_list(body.get("stop"), "stop", limit=4) or native.stop,
        n=f.in_range(f.get(body, "n", int, default=1), "n", 1, 16),
        num_ctx=native.num_ctx,
        keep_alive=opts.parse_keep_alive(body.get("keep_alive")),
        think=opts.parse_think(body),
        backend_options=native.raw,
    )


SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "seed", "repetition_penalty", "presence_penalty",
                   "frequency_penalty", "logit_bias")
"The fields _sampling reads."


def _sampling(body):
    """The sampling fields of body, checked."""
    return g.Sampling(
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
    role = f.get(message, "role", str, required=True, within=where)
    f.one_of(role, f"{where}.role", ("system", "developer", "user", "assistant", "tool"))
    tool_calls = tuple(_parse_tool_call(c, f"{where}.tool_calls[{j}]")
                       for j, c in enumerate(f.get(message, "tool_calls", list, default=[], within=where)))
    content, images = _parse_content(message.get("content"), where, allow_null=role == "assistant")
    return g.Message(
        role="system" if role == "developer" else role,
        content=content,
        images=images,
        tool_calls=tool_calls,
        tool_call_id=f.get(message, "tool_call_id", str, within=where),
        name=f.get(message, "name", str, within=where),
        reasoning=_reasoning_of(message, where),
    )


def _reasoning_of(message, where):
    """An earlier turn's reasoning, by either name clients send it back under (reasoning_content or reasoning)."""
    for name in REASONING_FIELDS:
        text = f.get(message, name, str, within=where)
        if text:
            return text
    return ""


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
    function = f.get(call, "function", dict, required=True, within=where)
    arguments = f.get(function, "arguments", str, default="{}", param=f"{where}.function.arguments")
    return g.ToolCall(
        id=f.get(call, "id", str, default="", within=where),
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
