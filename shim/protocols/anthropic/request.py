"""Anthropic's Messages API requests: a /v1/messages (or count_tokens) body to a GenerationRequest. Pure."""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from dataclasses import dataclass
from typing import Optional

from ... import generation as g
from ...errors import InvalidRequest, Unsupported
from .. import fields as f
from ..tools import declared_tool

BILLING_HEADER = "x-anthropic-billing-header:"
"Claude Code's first system block starts so; it changes on every request and would defeat prefix caching."
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
THINKING_TYPES = ("enabled", "disabled", "adaptive")
EFFORTS = ("low", "medium", "high", "max")
DROPPED_BLOCKS = ("redacted_thinking", "tool_reference", "server_tool_use", "container_upload")
"Blocks a replayed history may hold that have no place in a chat: accepted and left out."


@dataclass(frozen=True)
class Call:
    """A parsed /v1/messages request: what to generate and how to answer."""

    request: g.GenerationRequest
    stream: bool = False
    user_id: Optional[str] = None


def parse_messages(body) -> Call:
    """Parse a /v1/messages body; unknown fields are ignored, as Claude Code depends on."""
    f.require_object(body)
    stream = f.get(body, "stream", bool, default=False)
    request = parse_count_tokens(body, max_tokens=_max_tokens(body), stream=stream)
    metadata = f.get(body, "metadata", dict, default={})
    return Call(request, stream=stream,
                user_id=f.get(metadata, "user_id", str, param="metadata.user_id"))


def parse_count_tokens(body, max_tokens=None, stream=True) -> g.GenerationRequest:
    """Parse a /v1/messages/count_tokens body (a messages body without max_tokens)."""
    f.require_object(body)
    if body.get("mcp_servers"):
        raise Unsupported("'mcp_servers': shim does not connect to MCP servers", param="mcp_servers")
    model = f.get(body, "model", str, required=True)
    if not model:
        raise InvalidRequest("'model' must not be empty", param="model")
    system, messages = _conversation(body)
    tools = parse_tools(body)
    choice, parallel = parse_tool_choice(body, tools)
    return g.GenerationRequest(
        model=model,
        messages=((g.Message("system", system),) if system else ()) + messages,
        sampling=g.Sampling(
            temperature=f.in_range(f.get(body, "temperature", float), "temperature", 0, 1),
            top_p=f.in_range(f.get(body, "top_p", float), "top_p", 0, 1),
            top_k=f.in_range(f.get(body, "top_k", int), "top_k", 0),
        ),
        max_tokens=max_tokens,
        stop=_stop_sequences(body),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        response_format=_response_format(body),
        think=parse_thinking(body),
        stream=stream,
    )


def _max_tokens(body):
    f.require_object(body)
    return f.in_range(f.get(body, "max_tokens", int, required=True), "max_tokens", 1)


def _stop_sequences(body):
    stops = f.get(body, "stop_sequences", list, default=[])
    if not all(isinstance(s, str) for s in stops):
        raise InvalidRequest("'stop_sequences' must be an array of strings", param="stop_sequences")
    return tuple(s for s in stops if s)


# ---------------------------------------------------------------- system and messages

def _conversation(body):
    """The system prompt (the top-level one, then any system messages of the list) and the other messages."""
    system = [parse_system(body.get("system"))]
    messages = f.get(body, "messages", list, required=True)
    if not messages:
        raise InvalidRequest("'messages' must hold at least one message", param="messages")
    turns = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        f.require_object(message, where)
        role = f.one_of(f.get(message, "role", str, required=True, within=where), f"{where}.role",
                        ("user", "assistant", "system"))
        if role == "system":  # newer clients send these mid-conversation; folded in, as vLLM does
            system.append(parse_system(message.get("content"), f"{where}.content"))
        else:
            turns.extend(parse_turn(role, message.get("content"), where))
    return "\n".join(s for s in system if s), _merged(turns)


def parse_system(system, param="system"):
    """A system prompt given as a string or text blocks, as one text (Claude Code's billing line left out)."""
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise InvalidRequest(f"'{param}' must be a string or an array of text blocks", param=param)
    texts = []
    for j, block in enumerate(system):
        here = f"{param}[{j}]"
        f.require_object(block, here)
        text = f.get(block, "text", str, default="", param=f"{here}.text")
        if not text.startswith(BILLING_HEADER):
            texts.append(text)
    return "\n".join(texts)


def parse_turn(role, content, where):
    """One user or assistant turn as contract messages: a user turn's tool results first, one tool message each."""
    if isinstance(content, str):
        return [g.Message(role, content)]
    if not isinstance(content, list):
        raise InvalidRequest(f"'{where}.content' must be a string or an array of content blocks",
                             param=f"{where}.content")
    texts, images, calls, results, thinking = [], [], [], [], []
    for j, block in enumerate(content):
        here = f"{where}.content[{j}]"
        f.require_object(block, here)
        kind = f.get(block, "type", str, required=True, param=f"{here}.type")
        if kind == "thinking":  # kept as the turn's reasoning; its signature is Anthropic's, unchecked here
            thinking.append(f.get(block, "thinking", str, default="", param=f"{here}.thinking"))
        elif kind == "tool_use":
            calls.append(parse_tool_use(block, here))
        elif kind == "tool_result":
            results.append(parse_tool_result(block, here))
        else:
            text, image = parse_block(block, kind, here)
            texts.extend([text] if text else [])
            images.extend([image] if image else [])
    rest = [g.Message(role, "\n".join(texts), images=tuple(images), tool_calls=tuple(calls),
                      reasoning="\n".join(t for t in thinking if t))] if texts or images or calls or not results else []
    return results + rest


def parse_block(block, kind, where):
    """(text, image bytes) of a content block that is neither a tool call nor a tool result."""
    if kind == "text":
        return f.get(block, "text", str, required=True, within=where), None
    if kind == "image":
        return None, parse_image(f.get(block, "source", dict, required=True, within=where), where)
    if kind == "document":
        return parse_document(block, where), None
    if kind == "search_result":
        return _search_result(block), None
    if kind in DROPPED_BLOCKS or kind.endswith("_tool_result"):
        return None, None
    text = block.get("text")  # a block type newer than shim: its text if it has one, never a refusal
    return (text if isinstance(text, str) else None), None


def parse_image(source, where):
    """The bytes of a base64 image source; URL sources are refused by name (shim fetches nothing)."""
    kind = f.get(source, "type", str, required=True, param=f"{where}.source.type")
    if kind == "url":
        raise Unsupported(f"'{where}.source': image URLs are not fetched; send the image as base64",
                          param=f"{where}.source")
    f.one_of(kind, f"{where}.source.type", ("base64", "url"))
    f.one_of(f.get(source, "media_type", str, required=True, param=f"{where}.source.media_type"),
             f"{where}.source.media_type", IMAGE_TYPES)
    data = f.get(source, "data", str, required=True, param=f"{where}.source.data")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"'{where}.source.data' holds invalid base64 data", param=f"{where}.source.data") from None


def parse_document(block, where):
    """A plain-text document as text (its title first); PDFs and URLs are refused by name."""
    source = f.get(block, "source", dict, required=True, within=where)
    kind = f.get(source, "type", str, required=True, param=f"{where}.source.type")
    if kind == "text":
        text = f.get(source, "data", str, required=True, param=f"{where}.source.data")
    elif kind == "content":
        inner = source.get("content")
        text = inner if isinstance(inner, str) else "\n".join(
            b["text"] for b in inner or () if isinstance(b, dict) and isinstance(b.get("text"), str))
    else:
        raise Unsupported(f"'{where}.source': only text documents are supported (not {kind!r})",
                          param=f"{where}.source")
    title = block.get("title")
    return f"{title}\n{text}" if isinstance(title, str) and title else text


def _search_result(block):
    texts = [b["text"] for b in block.get("content") or () if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return "\n".join(t for t in [block.get("title") if isinstance(block.get("title"), str) else None, *texts] if t)


def parse_tool_use(block, where):
    """An assistant's tool_use block as a ToolCall (its input as a JSON text)."""
    tool_input = block.get("input", {})
    if not isinstance(tool_input, dict):
        raise InvalidRequest(f"'{where}.input' must be an object", param=f"{where}.input")
    return g.ToolCall(id=f.get(block, "id", str, default="", within=where),
                      name=f.get(block, "name", str, required=True, within=where),
                      arguments=json.dumps(tool_input, ensure_ascii=False))


def parse_tool_result(block, where):
    """A tool_result block as a tool message; an error result says so in its text."""
    call_id = f.get(block, "tool_use_id", str, required=True, within=where)
    content = block.get("content", "")
    images = ()
    if isinstance(content, list):
        (parsed, *_) = parse_turn("tool", content, where)  # text and image blocks: one message
        content, images = parsed.content, parsed.images
    elif content is None:
        content = ""
    elif not isinstance(content, str):
        raise InvalidRequest(f"'{where}.content' must be a string or an array of content blocks",
                             param=f"{where}.content")
    if f.get(block, "is_error", bool, default=False, within=where):
        content = f"Error: {content}"
    return g.Message("tool", content, images=images, tool_call_id=call_id)


def _merged(messages):
    """Consecutive user (or assistant) messages made one, as the API merges them; tool messages stay apart."""
    merged: list[g.Message] = []
    for message in messages:
        last = merged[-1] if merged else None
        if last and message.role == last.role and message.role in ("user", "assistant") and not last.tool_calls:
            merged[-1] = g.Message(message.role, "\n".join(t for t in (last.content, message.content) if t),
                                   images=last.images + message.images, tool_calls=message.tool_calls,
                                   reasoning="\n".join(t for t in (last.reasoning, message.reasoning) if t))
        else:
            merged.append(message)
    return tuple(_named_results(merged))


def _named_results(messages):
    """Tool messages named after the call they answer (templates want the name)."""
    names = {c.id: c.name for m in messages for c in m.tool_calls if c.id}
    return [dataclasses.replace(m, name=names.get(m.tool_call_id)) if m.role == "tool" else m for m in messages]


# ---------------------------------------------------------------- tools, thinking, output format

def parse_tools(body):
    """Client tools as functions (parameters = input_schema); a server tool is refused naming its type."""
    tools = []
    for i, tool in enumerate(f.get(body, "tools", list, default=[])):
        where = f"tools[{i}]"
        f.require_object(tool, where)
        kind = f.get(tool, "type", str, default="custom", within=where)
        if kind != "custom":
            raise Unsupported(f"'{where}.type': server tool {kind!r} is not supported (only client tools, "
                              "with an input_schema, are)", param=f"{where}.type")
        tools.append(declared_tool(tool, where, "input_schema"))
    return tuple(tools)


def parse_tool_choice(body, tools):
    """(ToolChoice, parallel_tool_calls) from tool_choice: auto, any, tool (by name) or none."""
    choice = f.get(body, "tool_choice", dict)
    if choice is None:
        return g.ToolChoice(), True
    kind = f.one_of(f.get(choice, "type", str, required=True, param="tool_choice.type"), "tool_choice.type",
                    ("auto", "any", "tool", "none"))
    parallel = not f.get(choice, "disable_parallel_tool_use", bool, default=False,
                         param="tool_choice.disable_parallel_tool_use")
    if kind in ("any", "tool") and not tools:
        raise InvalidRequest(f"'tool_choice' is {kind!r} but no 'tools' were given", param="tool_choice")
    if kind == "tool":
        name = f.get(choice, "name", str, required=True, param="tool_choice.name")
        if name not in {t.name for t in tools}:
            raise InvalidRequest(f"'tool_choice.name' names tool {name!r}, which is not in 'tools'",
                                 param="tool_choice.name")
        return g.ToolChoice.named(name), parallel
    return g.ToolChoice({"any": "required"}.get(kind, kind)), parallel


def parse_thinking(body):
    """thinking (enabled with a budget, disabled) and output_config.effort as a Think; None: the model's default."""
    thinking = f.get(body, "thinking", dict)
    effort = f.get(f.get(body, "output_config", dict, default={}), "effort", str, param="output_config.effort")
    f.one_of(effort, "output_config.effort", EFFORTS)
    if thinking is None:
        return None
    kind = f.one_of(f.get(thinking, "type", str, required=True, param="thinking.type"), "thinking.type",
                    THINKING_TYPES)
    if kind == "disabled":
        return g.Think(enabled=False)
    if kind == "adaptive":  # the model decides: a thinking model thinks, another answers (Claude Code sends this)
        return None
    budget = f.in_range(f.get(thinking, "budget_tokens", int, required=True, param="thinking.budget_tokens"),
                        "thinking.budget_tokens", 1)
    return g.Think(enabled=True, effort=effort, budget_tokens=budget)


def _response_format(body):
    fmt = f.get(f.get(body, "output_config", dict, default={}), "format", dict, param="output_config.format")
    if fmt is None:
        return None
    f.one_of(f.get(fmt, "type", str, required=True, param="output_config.format.type"), "output_config.format.type",
             ("json_schema",))
    return g.ResponseFormat("json_schema", schema=f.get(fmt, "schema", dict, required=True,
                                                        param="output_config.format.schema"))


# ---------------------------------------------------------------- token estimate

def estimate_tokens(request):
    """A rough prompt token count (4 characters a token) for backends that cannot count: what Ollama estimates."""
    chars = sum(len(m.content) + sum(len(c.name) + len(c.arguments) for c in m.tool_calls)
                for m in request.messages or ())
    chars += sum(len(t.name) + len(t.description) + len(json.dumps(dict(t.parameters))) for t in request.tools)
    return max(1, chars // 4)
