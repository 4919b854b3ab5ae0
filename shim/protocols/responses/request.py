"""OpenAI Responses requests: a /v1/responses body (and the items it continues from) to a GenerationRequest. Pure."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from ... import generation as g, ids
from ...errors import InvalidRequest, Unsupported
from .. import fields as f
from ..openai import request as oa
from .. import options as opts
from .. import tools as tool_fields

# Server-side features of OpenAI's platform shim does not have: refused by name rather than silently dropped.
REFUSED = {
    "background": "background responses are not supported",
    "conversation": "conversation objects are not supported; use 'previous_response_id' or send the items",
    "prompt": "stored prompt templates are not supported",
    "context_management": "server-side context management is not supported",
}
# Tools OpenAI runs on its own servers: skipped when listed (Codex lists some), refused when tool_choice forces one.
HOSTED_TOOLS = ("web_search", "web_search_preview", "web_search_preview_2025_03_11", "web_search_2025_08_26",
                "file_search", "code_interpreter", "computer_use_preview", "computer", "computer_use",
                "image_generation", "mcp", "local_shell", "shell", "apply_patch", "tool_search")
# Output items of hosted tools a client may send back in its transcript: dropped, as they carry nothing to the model.
HOSTED_ITEMS = ("web_search_call", "file_search_call", "code_interpreter_call", "computer_call",
                "computer_call_output", "image_generation_call", "mcp_call", "mcp_list_tools", "mcp_approval_request",
                "mcp_approval_response", "local_shell_call", "local_shell_call_output", "shell_call",
                "shell_call_output", "apply_patch_call", "apply_patch_call_output", "tool_search_call",
                "tool_search_output")
LOGPROBS_INCLUDE = "message.output_text.logprobs"
CUSTOM_ARGUMENT = "input"
"The one string argument a custom tool becomes, as a function the model calls."
NAMESPACE_SEPARATOR = "__"
"Between a namespace tool's name and its tools' names, in the flat name the model sees."
ID_PREFIXES = {"message": "msg", "function_call": "fc", "custom_tool_call": "ctc", "reasoning": "rs",
               "function_call_output": "fco", "custom_tool_call_output": "ctco"}


@dataclass(frozen=True)
class Call:
    """A parsed Responses request: what to generate, and what the response echoes and keeps."""

    request: g.GenerationRequest
    stream: bool = False
    store: bool = True
    input_items: tuple = ()
    "This request's input items, each with an id (what GET .../input_items lists)."
    custom_tools: frozenset = frozenset()
    "Names of custom tools: their calls go back as custom_tool_call items."
    namespaces: frozenset = frozenset()
    "Names of namespace tools: their tools' calls go back with the namespace apart."
    logprobs: bool = False
    echo: dict = field(default_factory=dict)
    "The request fields a Response object repeats (instructions, tools, temperature, ...)."


def new_id(prefix):
    """A fresh id like resp_3f9c... (OpenAI's ids are a prefix, an underscore and an opaque tail)."""
    return f"{prefix}_{ids.token_hex(12)}"


def parse_request(body, history=()) -> Call:
    """Parse a /v1/responses body; history holds the items of the response it continues (previous_response_id)."""
    f.require_object(body)
    for name, why in REFUSED.items():
        if body.get(name) not in (None, False):
            raise Unsupported(f"'{name}': {why}", param=name)
    if f.get(body, "truncation", str, default="disabled") != "disabled":
        raise Unsupported("'truncation': only 'disabled' is supported (an input too long for the model is refused)",
                          param="truncation")
    model = f.get(body, "model", str, required=True)
    if not model:
        raise InvalidRequest("'model' must not be empty", param="model")
    tools, custom = parse_tools(body)
    items = with_ids(_input_items(body))
    include = f.get(body, "include", list, default=[])
    top_logprobs = f.in_range(f.get(body, "top_logprobs", int), "top_logprobs", 0, 20) or 0
    stream = f.get(body, "stream", bool, default=False)
    request = g.GenerationRequest(
        model=model,
        messages=to_messages(tuple(history) + items, f.get(body, "instructions", str), custom),
        sampling=g.Sampling(temperature=f.in_range(f.get(body, "temperature", float), "temperature", 0, 2),
                            top_p=f.in_range(f.get(body, "top_p", float), "top_p", 0, 1)),
        max_tokens=f.in_range(f.get(body, "max_output_tokens", int), "max_output_tokens", 1),
        response_format=_text_format(body),
        tools=tools,
        tool_choice=parse_tool_choice(body, tools, custom),
        parallel_tool_calls=f.get(body, "parallel_tool_calls", bool, default=True),
        logprobs=LOGPROBS_INCLUDE in include or bool(top_logprobs),
        top_logprobs=top_logprobs,
        think=_reasoning(body),
        stream=stream,
    )
    return Call(request, stream=stream,
                store=f.get(body, "store", bool, default=True), input_items=items, custom_tools=custom,
                namespaces=_namespaces(body),
                logprobs=request.logprobs, echo=_echo(body))


def _echo(body):
    metadata = f.get(body, "metadata", dict, default={})
    if len(metadata) > 16 or not all(isinstance(k, str) and len(k) <= 64 and isinstance(v, str) and len(v) <= 512
                                     for k, v in metadata.items()):
        raise InvalidRequest("'metadata' may hold at most 16 string pairs (keys up to 64 characters, values up to "
                             "512)", param="metadata")
    f.get(body, "user", str)
    names = ("instructions", "max_output_tokens", "temperature", "top_p", "tool_choice", "tools",
             "parallel_tool_calls", "previous_response_id", "reasoning", "text", "top_logprobs", "user")
    echo = {name: body[name] for name in names if body.get(name) is not None}
    return {"metadata": metadata, **echo}


# ---------------------------------------------------------------- input items

def _input_items(body):
    value = body.get("input")
    if isinstance(value, str):
        return ({"type": "message", "role": "user", "content": [{"type": "input_text", "text": value}]},)
    if not isinstance(value, list):
        raise InvalidRequest(f"'input' must be a string or an array of items, got {f.type_name(value)}", param="input")
    items = []
    for i, item in enumerate(value):
        f.require_object(item, f"input[{i}]")
        kind = f.get(item, "type", str, default="message", param=f"input[{i}].type")
        if kind == "message" and isinstance(item.get("content"), str):
            text = "input_text" if item.get("role") != "assistant" else "output_text"
            item = {**item, "content": [{"type": text, "text": item["content"]}]}
        items.append({**item, "type": kind})
    return tuple(items)


def with_ids(items):
    """The items, each with an id (kept when the client gave one)."""
    return tuple(item if item.get("id") else {"id": new_id(ID_PREFIXES.get(item["type"], "item")), **item}
                 for item in items)


def to_messages(items, instructions, custom=frozenset()):
    """The contract's messages for a transcript of items: one leading system message, calls merged into turns."""
    system = [instructions] if instructions else []
    messages = []
    reasoning = ""
    "The text of reasoning items not yet given to the assistant turn they came before."
    for i, item in enumerate(items):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            message = _message(item, where)
            if message.role == "system":
                system.append(message.content)
            else:
                if message.role == "assistant" and reasoning:
                    message, reasoning = dataclasses.replace(message, reasoning=reasoning), ""
                messages.append(message)
        elif kind in ("function_call", "custom_tool_call"):
            call = _call(item, where)
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and not reasoning:
                messages[-1] = dataclasses.replace(last, tool_calls=last.tool_calls + (call,))
            else:
                messages.append(g.Message("assistant", tool_calls=(call,), reasoning=reasoning))
                reasoning = ""
        elif kind == "reasoning":
            reasoning += _reasoning_text(item, where)
        elif kind in ("function_call_output", "custom_tool_call_output"):
            messages.append(g.Message("tool", _output_text(item, where),
                                      tool_call_id=f.get(item, "call_id", str, required=True,
                                                         within=where)))
        elif kind == "item_reference":
            raise Unsupported(f"'{where}': item_reference is not supported; send the item itself",
                              param=f"{where}.type")
        elif kind not in HOSTED_ITEMS:
            raise InvalidRequest(f"'{where}.type' {kind!r} is not an input item shim knows", param=f"{where}.type")
    if not messages:
        raise InvalidRequest("'input' must hold at least one message or tool output", param="input")
    head = (g.Message("system", "\n\n".join(system)),) if system else ()
    return oa.name_tool_results(head + tuple(messages))


def _message(item, where):
    role = f.one_of(f.get(item, "role", str, required=True, within=where), f"{where}.role",
                    ("user", "system", "developer", "assistant"))
    content = f.get(item, "content", list, required=True, within=where)
    texts, images = [], []
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        f.require_object(part, here)
        kind = f.get(part, "type", str, required=True, param=f"{here}.type")
        if kind in ("input_text", "output_text", "text"):
            texts.append(f.get(part, "text", str, required=True, param=f"{here}.text"))
        elif kind == "refusal":
            texts.append(f.get(part, "refusal", str, required=True, param=f"{here}.refusal"))
        elif kind == "input_image" and role == "user":
            if part.get("file_id") is not None:
                raise Unsupported(f"'{here}.file_id': files are not supported; send a data URL in image_url",
                                  param=f"{here}.file_id")
            images.append(oa.parse_image_url(part.get("image_url"), here))
        else:
            raise Unsupported(f"'{here}.type' {kind!r} is not supported in a {role} message", param=f"{here}.type")
    return g.Message("system" if role == "developer" else role, "\n".join(texts), images=tuple(images))


def _reasoning_text(item, where):
    """A reasoning item's text: its reasoning_text parts, else its summary (encrypted content cannot be read)."""
    parts = f.get(item, "content", list, default=[], within=where) or \
        f.get(item, "summary", list, default=[], within=where)
    return "".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


def _call(item, where):
    call_id = f.get(item, "call_id", str, required=True, within=where)
    name = flat_name(f.get(item, "namespace", str, within=where),
                     f.get(item, "name", str, required=True, within=where))
    if item["type"] == "custom_tool_call":
        text = f.get(item, "input", str, required=True, within=where)
        return g.ToolCall(call_id, name, json.dumps({CUSTOM_ARGUMENT: text}, ensure_ascii=False))
    return g.ToolCall(call_id, name, f.get(item, "arguments", str, required=True, within=where))


def _output_text(item, where):
    output = f.get(item, "output", str, list, required=True, within=where)
    if isinstance(output, str):
        return output
    texts = []
    for j, part in enumerate(output):
        here = f"{where}.output[{j}]"
        f.require_object(part, here)
        if part.get("type") not in ("input_text", "output_text"):
            raise Unsupported(f"'{here}.type': only text tool outputs are supported", param=f"{here}.type")
        texts.append(f.get(part, "text", str, required=True, param=f"{here}.text"))
    return "\n".join(texts)


# ---------------------------------------------------------------- tools

def parse_tools(body):
    """The function tools of a request, custom tools as functions of one string; and the custom tools' names."""
    tools, custom = [], set()
    for where, tool, namespace in _flattened(f.get(body, "tools", list, default=[]), "tools"):
        kind = f.get(tool, "type", str, required=True, within=where)
        if kind in HOSTED_TOOLS:
            continue
        name = flat_name(namespace, f.get(tool, "name", str, required=True, within=where))
        description = f.get(tool, "description", str, default="", within=where)
        if kind == "function":
            parameters = f.get(tool, "parameters", dict, default={"type": "object", "properties": {}},
                               within=where)
        elif kind == "custom":
            custom.add(name)
            parameters = {"type": "object", "properties": {CUSTOM_ARGUMENT: {"type": "string"}},
                          "required": [CUSTOM_ARGUMENT]}
        else:
            raise Unsupported(f"'{where}.type' {kind!r} is not supported (function and custom tools are; hosted "
                              "tools are skipped)", param=f"{where}.type")
        tools.append(g.Tool(name, description, parameters))
    return tuple(tools), frozenset(custom)


def _namespaces(body):
    return frozenset(t["name"] for t in body.get("tools") or () if t.get("type") == "namespace")


def _flattened(tools, param, namespace=None):
    """(where, tool, namespace) for each tool, the tools of a namespace tool in its place."""
    for i, tool in enumerate(tools):
        where = f"{param}[{i}]"
        f.require_object(tool, where)
        if tool.get("type") == "namespace" and namespace is None:
            name = f.get(tool, "name", str, required=True, within=where)
            yield from _flattened(f.get(tool, "tools", list, required=True, within=where),
                                  f"{where}.tools", name)
        else:
            yield where, tool, namespace


def flat_name(namespace, name):
    """The one name a namespaced tool has for the model (function names cannot nest)."""
    return f"{namespace}{NAMESPACE_SEPARATOR}{name}" if namespace else name


def split_name(flat, namespaces):
    """(namespace or None, name) of a flat tool name, given the namespaces the request declared."""
    namespace, sep, name = flat.partition(NAMESPACE_SEPARATOR)
    return (namespace, name) if sep and namespace in namespaces else (None, flat)


def parse_tool_choice(body, tools, custom=frozenset()):
    """Responses' tool_choice: none, auto, required, a named function or custom tool, or allowed_tools."""
    choice = body.get("tool_choice")
    if choice is None or isinstance(choice, str):
        return tool_fields.parse_tool_choice({"tool_choice": choice}, tools)
    if not isinstance(choice, dict):
        raise InvalidRequest("'tool_choice' must be a string or an object", param="tool_choice")
    kind = choice.get("type")
    if kind in ("function", "custom"):
        name = f.get(choice, "name", str, required=True, param="tool_choice.name")
        return g.ToolChoice.named(_known(name, tools, "tool_choice.name"))
    if kind == "allowed_tools":
        mode = f.one_of(f.get(choice, "mode", str, required=True, param="tool_choice.mode"), "tool_choice.mode",
                        ("auto", "required"))
        names = []
        for i, tool in enumerate(f.get(choice, "tools", list, required=True, param="tool_choice.tools")):
            where = f"tool_choice.tools[{i}]"
            f.require_object(tool, where)
            if tool.get("type") in HOSTED_TOOLS:
                continue
            names.append(_known(f.get(tool, "name", str, required=True, within=where), tools, where))
        if not names:
            raise Unsupported("'tool_choice.tools' names no function or custom tool shim can offer",
                              param="tool_choice.tools")
        return g.ToolChoice(mode, allowed=tuple(names))
    raise Unsupported(f"'tool_choice' forces a {kind!r} tool, which shim cannot run (hosted tools are not "
                      "supported)", param="tool_choice")


def _known(name, tools, param):
    if name not in {t.name for t in tools}:
        raise InvalidRequest(f"'{param}' names tool {name!r}, which is not in 'tools'", param=param)
    return name


# ---------------------------------------------------------------- text format, reasoning

def _text_format(body):
    text = f.get(body, "text", dict, default={})
    fmt = f.get(text, "format", dict, param="text.format")
    if fmt is None:
        return None
    kind = f.one_of(f.get(fmt, "type", str, required=True, param="text.format.type"), "text.format.type",
                    ("text", "json_object", "json_schema"))
    if kind == "text":
        return None
    if kind == "json_object":
        return g.ResponseFormat("json")
    return g.ResponseFormat("json_schema", schema=f.get(fmt, "schema", dict, required=True,
                                                        param="text.format.schema"),
                            name=f.get(fmt, "name", str, param="text.format.name"))


def _reasoning(body):
    reasoning = f.get(body, "reasoning", dict, default={})
    effort = f.get(reasoning, "effort", str, param="reasoning.effort")
    return None if effort is None else opts.think_of_effort(effort, "reasoning.effort")
