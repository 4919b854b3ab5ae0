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
    """(tools on, a call forced) for a request: tools count when the choice offers any; required or named forces."""
    on = bool(request.tool_choice.offered(request.tools))
    return on, on and request.tool_choice.forced


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
    how = _HOW_FORCED if tool_choice.forced else _HOW_AUTO
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
    """The JSON schema a call must match: one of the tools the choice offers, with its arguments."""
    options = [{"type": "object", "properties": {"name": {"const": t.name}, "arguments": _object_schema(t)},
                "required": ["name", "arguments"]} for t in tool_choice.offered(tools)]
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


# The head of a call envelope up to where its arguments begin: {"name": "<name>", "arguments":
_CALL_HEAD = re.compile(r'\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*(,\s*"(?:arguments|parameters)"\s*:\s*)?')


def partial_calls(text, tools):
    """The calls in an envelope the output was cut off in: whole ones, then the last as far as it got.

    The cut call keeps its arguments text as it stands (OpenAI's partial call on finish_reason length); a call
    cut before its name is complete is left out. None when the text does not open an envelope at all.
    """
    stripped = text.strip()
    if not _opens_envelope(stripped):
        return None
    names = {t.name for t in tools}
    calls = []
    for candidate in _TAGGED.findall(stripped) or [stripped]:
        calls.extend(_calls_so_far(candidate, names))
    return calls


def _opens_envelope(text):
    # Under the grammar every output that opens with "{" is a call; "[" and "<tool_call>" open lists of them.
    return (text.startswith("{") or re.match(r"\[\s*(\{|$)", text) is not None
            or (bool(text) and "<tool_call>".startswith(text[:11])))


def _calls_so_far(candidate, names):
    body = candidate[1:] if candidate.startswith("[") else candidate
    decoder, position, calls = json.JSONDecoder(), 0, []
    while True:
        position = len(body) - len(body[position:].lstrip(" \t\r\n,"))
        if position >= len(body) or body[position] == "]":
            return calls
        try:
            item, position = decoder.raw_decode(body, position)
        except ValueError:
            cut = _cut_call(body[position:], names)
            return calls + ([cut] if cut else [])
        call = _as_call(item, names)
        calls.extend([call] if call else [])


def _cut_call(text, names):
    """The call a cut-off envelope names, with its arguments as far as they got."""
    head = _CALL_HEAD.match(text)
    name = _loads(head.group(1)) if head else None
    if name not in names:
        return None
    rest = text[head.end():] if head.group(2) else ""
    try:
        arguments, _ = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        arguments = None
    if isinstance(arguments, dict):
        return g.ToolCall(new_call_id(), name, json.dumps(arguments))
    return g.ToolCall(new_call_id(), name, rest, partial=True)


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
        self.cut_call = False
        "Whether finish gave the calls of an envelope that was cut off (so they are not whole)."

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

    def finish(self, cut=False):
        """(text, calls) at the end: the calls if what was held parses as calls, else the held text.

        When the output was cut off (cut), a call envelope is never text: it gives the calls so far.
        """
        held, self.held = self.held, ""
        calls = parse_calls(held, self.tools) if held.strip() else None
        if calls:
            return "", calls
        partial = partial_calls(held, self.tools) if cut else None
        self.cut_call = partial is not None
        return ("", partial) if partial is not None else (held, [])
