"""Ollama's API, client side out: whole answers, NDJSON stream objects, model lists and errors. Pure."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from ... import generation as g
from ..render import StreamRenderer


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


def _details(info, listed=False):
    details = {"parent_model": "", "format": info.format, "family": info.family,
               "families": [info.family] if info.family else None, "parameter_size": info.parameter_size,
               "quantization_level": info.quantization}
    if listed and info.context_length:  # /api/tags details carry it, as newer Ollama lists
        details["context_length"] = info.context_length
    return details


def render_tags(infos):
    """The /api/tags list, with each model's capabilities and (where known) context length, as newer Ollama lists."""
    return {"models": [{"name": i.name, "model": i.name, "modified_at": timestamp(i.modified_at), "size": i.size,
                        "digest": i.digest, "capabilities": list(i.capabilities), "details": _details(i, listed=True)}
                       for i in infos]}


def render_ps(infos):
    """The /api/ps list of loaded models, the one that stays longest first."""
    infos = sorted(infos, key=lambda i: float("inf") if i.expires_at is None else i.expires_at, reverse=True)
    return {"models": [{"name": i.name, "model": i.name, "size": i.size, "digest": i.digest, "details": _details(i),
                        "expires_at": timestamp(i.expires_at) if i.expires_at else "2318-01-01T00:00:00Z",
                        "size_vram": 0, "context_length": i.context_length} for i in infos if i.loaded]}


def render_show(info):
    """The /api/show answer."""
    model_info = {**info.extra.get("model_info", {}), "general.architecture": info.family,
                  "general.parameter_count": info.extra.get("parameter_count")}
    return {"modelfile": f"# Served by shim\nFROM {info.name}\n", "parameters": info.extra.get("parameters", ""),
            "template": info.template, "details": _details(info), "model_info": _with_context(model_info, info),
            "capabilities": list(info.capabilities), "modified_at": timestamp(info.modified_at)}


def render_upstream_show(shown, info):
    """An upstream Ollama's own /api/show answer, saying of capabilities and context length what shim says."""
    return {**shown, "model_info": _with_context(shown.get("model_info") or {}, info),
            "capabilities": list(info.capabilities)}


def _with_context(model_info, info):
    """model_info with the context length shim reports under <architecture>.context_length, the key clients read."""
    # The served window overrides the file's trained length: clients size prompts by this key.
    if not info.context_length:
        return model_info
    arch = model_info.get("general.architecture") or info.family or "general"
    return {**model_info, f"{arch}.context_length": info.context_length}


def render_error(err):
    """Ollama's error body for a ShimError."""
    return {"error": err.message}


# ---------------------------------------------------------------- to and from an upstream Ollama server
