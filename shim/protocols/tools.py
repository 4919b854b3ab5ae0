"""The tools and tool_choice fields, the same in both protocols."""
import json

from .. import generation as g
from ..errors import InvalidRequest
from . import fields as f


def render_tool(tool):
    """A tool as OpenAI, Ollama and chat templates spell it."""
    return {"type": "function", "function": {"name": tool.name, "description": tool.description,
                                             "parameters": dict(tool.parameters)}}


def arguments_object(text):
    """A call's arguments (JSON text) as an object: {} where they are not a JSON object (a call cut off, say)."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def render_tool_call(call):
    """A tool call as OpenAI and chat templates spell it (arguments as a JSON text)."""
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def parse_tools(body):
    """The tools of a request (OpenAI's and Ollama's shapes are the same)."""
    tools = []
    for i, tool in enumerate(f.get(body, "tools", list, default=[])):
        where = f"tools[{i}]"
        f.require_object(tool, where)
        f.one_of(f.get(tool, "type", str, default="function", within=where), f"{where}.type", ("function",))
        function = f.get(tool, "function", dict, required=True, within=where)
        tools.append(declared_tool(function, f"{where}.function", "parameters"))
    return tuple(tools)


def declared_tool(spec, where, schema_field):
    """A Tool from an object with a name, a description and a JSON schema under schema_field (errors name where)."""
    return g.Tool(
        name=f.get(spec, "name", str, required=True, within=where),
        description=f.get(spec, "description", str, default="", within=where),
        parameters=f.get(spec, schema_field, dict, default={"type": "object", "properties": {}},
                         param=f"{where}.{schema_field}"),
    )


def parse_tool_choice(body, tools):
    """The typed tool choice: none, auto, required, a named function, or allowed_tools; auto by default."""
    choice = body.get("tool_choice")
    if choice is None:
        return g.ToolChoice()
    if isinstance(choice, str):
        f.one_of(choice, "tool_choice", ("none", "auto", "required"))
        if choice == "required" and not tools:
            raise InvalidRequest("'tool_choice' is 'required' but no 'tools' were given", param="tool_choice")
        return g.ToolChoice(choice)
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        return _allowed_tools(choice, tools)
    if isinstance(choice, dict):
        name = _function_name(choice)
        if choice.get("type") != "function" or name is None:
            raise InvalidRequest("'tool_choice' must be none, auto, required or "
                                 '{"type": "function", "function": {"name": ...}}', param="tool_choice")
        return g.ToolChoice.named(_known(name, tools, "tool_choice"))
    raise InvalidRequest("'tool_choice' must be a string or an object", param="tool_choice")


def _function_name(item):
    function = item.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) else None


def _known(name, tools, param):
    if name not in {t.name for t in tools}:
        raise InvalidRequest(f"'{param}' names function {name!r}, which is not in 'tools'", param=param)
    return name


def _allowed_tools(choice, tools):
    """OpenAI's {"type": "allowed_tools", "allowed_tools": {"mode", "tools": [{"type": "function", ...}]}}."""
    param = "tool_choice.allowed_tools"
    spec = f.get(choice, "allowed_tools", dict, required=True, param=param)
    mode = f.one_of(f.get(spec, "mode", str, required=True, param=f"{param}.mode"), f"{param}.mode",
                    ("auto", "required"))
    names = []
    for i, item in enumerate(f.get(spec, "tools", list, required=True, param=f"{param}.tools")):
        name = _function_name(item) if isinstance(item, dict) and item.get("type") == "function" else None
        if name is None:
            raise InvalidRequest(f"'{param}.tools[{i}]' must be a function tool with a name",
                                 param=f"{param}.tools[{i}]")
        names.append(_known(name, tools, f"{param}.tools[{i}]"))
    if not names:
        raise InvalidRequest(f"'{param}.tools' must name at least one tool", param=f"{param}.tools")
    return g.ToolChoice(mode, allowed=tuple(names))
