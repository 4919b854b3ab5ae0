"""Tool calling on models whose template knows no tools: instructions in, JSON calls out. Pure."""
from __future__ import annotations

import json
import re
import secrets
import string

from .. import generation as g
from ..protocols.tools import render_tool

_ID_ALPHABET = string.ascii_lowercase + string.digits
_TAGGED = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


def new_call_id():
    """A call id in the shape Ollama and OpenAI clients expect."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def call_mode(request):
    """(tools on, a call forced) for a request: tools count unless tool_choice is none; any choice but auto forces."""
    on = bool(request.tools) and request.tool_choice != "none"
    return on, on and request.tool_choice not in (None, "auto")


def calls_as_text(calls):
    """An assistant turn's tool calls in the JSON form the model was told to write."""
    rendered = [{"name": c.name, "arguments": _loads(c.arguments, {})} for c in calls]
    return json.dumps(rendered[0] if len(rendered) == 1 else rendered)


_NOTE_HEAD = "You can call these tools:\n"
_HOW_FORCED = "Answer with only a JSON object {\"name\": <tool name>, \"arguments\": <object>}."
_HOW_AUTO = ("If a tool helps, answer with only a JSON object {\"name\": <tool name>, \"arguments\": <object>}; "
             "otherwise answer in plain text.")


def knows_tools(template):
    """Whether a chat template renders tools itself (else shim lists them in a system note)."""
    return "tools" in template


def with_instructions(messages, tools, tool_choice):
    """The messages with a system note that lists the tools and how to call them."""
    listing = "\n".join(json.dumps(render_tool(t)["function"]) for t in tools)
    how = _HOW_AUTO if tool_choice in (None, "auto") else _HOW_FORCED
    note = f"{_NOTE_HEAD}{listing}\n{how}"
    tool_results = [_tool_result_text(m) for m in messages]
    if tool_results and tool_results[0]["role"] == "system":
        first = dict(tool_results[0], content=f"{tool_results[0]['content']}\n\n{note}")
        return [first] + tool_results[1:]
    return [{"role": "system", "content": note}] + tool_results


def template_with_tools(template):
    """The chat template as shim applies it: a template without tools gets with_instructions() in front, in Jinja.

    Rendered as Hugging Face renders chat templates (`tools`, `tool_choice` passed in), it gives the prompt shim
    builds; clients that read a template to learn whether a model takes tools (LiteLLM) then see that it does.
    """
    if knows_tools(template):
        return template
    return _TOOLS_PREFIX + template


def _jinja_text(text):
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


_TOOLS_PREFIX = (
    "{#- shim: tools are listed in a system note, tool results become user turns -#}\n"
    "{%- if tools -%}\n"
    "{%- set how = " + _jinja_text(_HOW_AUTO) + " if tool_choice is not defined or tool_choice is none"
    " or tool_choice == 'auto' else " + _jinja_text(_HOW_FORCED) + " -%}\n"
    "{%- set note = " + _jinja_text(_NOTE_HEAD) + " ~ (tools | map(attribute='function') | map('tojson')"
    " | join('\\n')) ~ '\\n' ~ how -%}\n"
    "{%- set ns = namespace(turns=[]) -%}\n"
    "{%- for m in messages -%}\n"
    "{%- if m.role == 'tool' -%}\n"
    "{%- set ns.turns = ns.turns + [{'role': 'user', 'content': 'Result of ' ~ (m.name or 'the tool') ~ ': '"
    " ~ m.content}] -%}\n"
    "{%- else -%}\n"
    "{%- set ns.turns = ns.turns + [m] -%}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if ns.turns and ns.turns[0].role == 'system' -%}\n"
    "{%- set messages = [dict(ns.turns[0], content=ns.turns[0].content ~ '\\n\\n' ~ note)] + ns.turns[1:] -%}\n"
    "{%- else -%}\n"
    "{%- set messages = [{'role': 'system', 'content': note}] + ns.turns -%}\n"
    "{%- endif -%}\n"
    "{%- endif %}")


def _tool_result_text(message):
    # Templates without a tool role would drop it or fail: present a tool result as a user turn that says so.
    if message["role"] != "tool":
        return message
    name = message.get("name") or "the tool"
    return {"role": "user", "content": f"Result of {name}: {message['content']}"}


def forced_schema(tools, tool_choice):
    """The JSON schema a forced call (required, or a named function) must match."""
    chosen = [t for t in tools if tool_choice in ("required", t.name)]
    options = [{"type": "object", "properties": {"name": {"const": t.name}, "arguments": _object_schema(t)},
                "required": ["name", "arguments"]} for t in chosen]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _object_schema(tool):
    schema = dict(tool.parameters) or {"type": "object"}
    schema.setdefault("type", "object")
    return schema


def parse_calls(text, tools):
    """The tool calls written in text, or None when it is not (only) tool calls."""
    names = {t.name for t in tools}
    candidates = _TAGGED.findall(text) or [text.strip()]
    calls = []
    for candidate in candidates:
        value = _loads(candidate, default=None)
        items = value if isinstance(value, list) else [value]
        for item in items:
            call = _as_call(item, names)
            if call is None:
                return None
            calls.append(call)
    return calls or None


def _as_call(item, names):
    if not isinstance(item, dict):
        return None
    if "function" in item and isinstance(item["function"], dict):
        item = item["function"]
    name = item.get("name")
    arguments = item.get("arguments", item.get("parameters", {}))
    if name not in names or not isinstance(arguments, (dict, str)):
        return None
    if isinstance(arguments, str):
        arguments = _loads(arguments, default=None)
        if not isinstance(arguments, dict):
            return None
    return g.ToolCall(new_call_id(), name, json.dumps(arguments))


def _loads(text, default=None):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return default


class CallCatcher:
    """Sits between decoded text and the client: passes prose through, holds back what may be a tool call."""

    def __init__(self, tools, forced):
        self.tools, self.forced = tools, forced
        self.held = ""
        self.deciding = not forced
        self.holding = forced

    def feed(self, text):
        """The text to emit now."""
        if not self.holding and not self.deciding:
            return text
        self.held += text
        stripped = self.held.lstrip()
        if self.deciding and stripped:
            self.deciding = False
            self.holding = stripped[0] in "{[<"
            if not self.holding:
                out, self.held = self.held, ""
                return out
        return ""

    def finish(self):
        """(text, calls) at the end: the calls if what was held parses as calls, else the held text."""
        held, self.held = self.held, ""
        calls = parse_calls(held, self.tools) if held.strip() else None
        return ("", calls) if calls else (held, [])
