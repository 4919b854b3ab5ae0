"""The tools and tool_choice fields, the same in both protocols."""
from .. import generation as g
from ..errors import InvalidRequest
from . import fields as f


def render_tool(tool):
    """A tool as OpenAI, Ollama and chat templates spell it."""
    return {"type": "function", "function": {"name": tool.name, "description": tool.description,
                                             "parameters": dict(tool.parameters)}}


def render_tool_call(call):
    """A tool call as OpenAI and chat templates spell it (arguments as a JSON text)."""
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def parse_tools(body):
    """The tools of a request (OpenAI's and Ollama's shapes are the same)."""
    tools = []
    for i, tool in enumerate(f.get(body, "tools", list, default=[])):
        where = f"tools[{i}]"
        f.require_object(tool, where)
        f.one_of(f.get(tool, "type", str, default="function", param=f"{where}.type"), f"{where}.type", ("function",))
        function = f.get(tool, "function", dict, required=True, param=f"{where}.function")
        tools.append(g.Tool(
            name=f.get(function, "name", str, required=True, param=f"{where}.function.name"),
            description=f.get(function, "description", str, default="", param=f"{where}.function.description"),
            parameters=f.get(function, "parameters", dict, default={"type": "object", "properties": {}},
                             param=f"{where}.function.parameters"),
        ))
    return tuple(tools)


def parse_tool_choice(body, tools):
    """auto, none, required or a function name; auto when tools are given without a choice."""
    choice = body.get("tool_choice")
    if choice is None:
        return None if not tools else "auto"
    if isinstance(choice, str):
        f.one_of(choice, "tool_choice", ("none", "auto", "required"))
        if choice == "required" and not tools:
            raise InvalidRequest("'tool_choice' is 'required' but no 'tools' were given", param="tool_choice")
        return choice
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise InvalidRequest("'tool_choice' must be none, auto, required or "
                                 '{"type": "function", "function": {"name": ...}}', param="tool_choice")
        if name not in {t.name for t in tools}:
            raise InvalidRequest(f"'tool_choice' names function {name!r}, which is not in 'tools'", param="tool_choice")
        return name
    raise InvalidRequest("'tool_choice' must be a string or an object", param="tool_choice")
