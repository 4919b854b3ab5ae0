"""OpenAI Responses answers: events to a Response object or to its named stream events; errors in its shape. Pure."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ... import generation as g
from ...errors import ContextLengthExceeded, ServerBusy
from ..render import StreamRenderer
from .request import CUSTOM_ARGUMENT, new_id, split_name

# The contract's names for fields a backend refuses, as a Responses client spells them.
PARAMS = {"think": "reasoning.effort", "images": "input_image", "max_tokens": "max_output_tokens",
          "response_format": "text.format", "logprobs": "include", "top_logprobs": "top_logprobs"}
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}
PARTS = {"message": ("output_text", "response.output_text"), "reasoning": ("reasoning_text", "response.reasoning_text")}


@dataclass(frozen=True)
class Meta:
    """What a Response object says besides its output: id, model, and the request fields it repeats."""

    id: str
    model: str
    created_at: int
    store: bool = True
    echo: dict = field(default_factory=dict)


def response_object(meta, status, output, usage=None, error=None, incomplete=None):
    """A Response object."""
    e = meta.echo.get
    return {
        "id": meta.id, "object": "response", "created_at": meta.created_at, "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "background": False, "error": error, "incomplete_details": incomplete, "instructions": e("instructions"),
        "max_output_tokens": e("max_output_tokens"), "model": meta.model, "output": output,
        "parallel_tool_calls": e("parallel_tool_calls", True), "previous_response_id": e("previous_response_id"),
        "reasoning": e("reasoning") or {"effort": None, "summary": None}, "store": meta.store,
        "temperature": e("temperature"), "text": e("text") or {"format": {"type": "text"}},
        "tool_choice": e("tool_choice", "auto"), "tools": e("tools", []), "top_logprobs": e("top_logprobs"),
        "top_p": e("top_p"), "truncation": "disabled", "usage": usage, "user": e("user"),
        "metadata": e("metadata", {}),
    }


def render_usage(usage):
    """Responses' usage object (all five fields, always)."""
    return {"input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.total_tokens}


def failure_code(err):
    """The error code response.failed carries: Codex retries server_error, and shows the others."""
    if isinstance(err, ContextLengthExceeded):
        return "context_length_exceeded"
    if isinstance(err, ServerBusy):
        return "server_is_overloaded"
    return "invalid_prompt" if 400 <= err.status < 500 else "server_error"


def render_error(err):
    """OpenAI's error body, its param named as the Responses field it stands for."""
    return {"error": {"message": err.message, "type": err.kind, "param": PARAMS.get(err.param, err.param),
                      "code": err.code}}


def render_response(events, meta, **options):
    """The whole Response object for a finished generation's events (options as ResponseStream takes them)."""
    stream = ResponseStream(meta, quiet=True, **options)
    for event in _coalesced(events):
        stream.chunks(event)
    stream.end()
    return stream.response


_RUNS = (g.TextDelta, g.ReasoningDelta)


def _coalesced(events):
    """The events with each run of one choice's text (or reasoning) deltas as one delta: the same Response, built
    without a stream event per delta."""
    run: list = []
    for event in events:
        if run and type(event) is type(run[0]) and event.index == run[0].index:
            run.append(event)
            continue
        if run:
            yield _joined(run)
        run = [event] if isinstance(event, _RUNS) else []
        if not run:
            yield event
    if run:
        yield _joined(run)


def _joined(run):
    first = run[0]
    if len(run) == 1:
        return first
    text = "".join(event.text for event in run)
    if isinstance(first, g.TextDelta):
        return g.TextDelta(text, first.index, tuple(lp for event in run for lp in event.logprobs))
    return g.ReasoningDelta(text, first.index)


def _logprob(lp):
    return {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.bytes)}


def _logprobs(items):
    return [{**_logprob(lp), "top_logprobs": [_logprob(t) for t in lp.top]} for lp in items]


class ResponseStream(StreamRenderer):
    """Turns events into Responses' stream events, numbered, each item opened and closed; keeps the final Response."""

    def __init__(self, meta, custom_tools=frozenset(), logprobs=False, namespaces=frozenset(), quiet=False):
        self.meta, self.custom_tools, self.logprobs, self.namespaces = meta, custom_tools, logprobs, namespaces
        self.quiet = quiet
        "True when only the final Response is wanted: the text items' events are not built (a whole answer's case)."
        self.sequence = 0
        self.output = []
        "The items done so far."
        self.item: Any = None
        "The message or reasoning item open now, its text and logprobs gathered."
        self.call: Any = None
        "The function_call item being streamed in pieces: its key (index, position), item and arguments so far."
        self.finishes = []
        self.response = None
        "The final Response object, once the stream has ended."

    def begin(self):
        """response.created and response.in_progress."""
        response = response_object(self.meta, "in_progress", [])
        return [self._event("response.created", response=response),
                self._event("response.in_progress", response=response)]

    def chunks(self, event):
        """The stream events that carry one generation event."""
        if type(event) is g.TextDelta:
            return self._text(event)
        if isinstance(event, g.ReasoningDelta):
            opened = self._open("reasoning")
            self.item["pieces"].append(event.text)
            return opened if self.quiet else opened + [self._delta("response.reasoning_text.delta", event.text)]
        if isinstance(event, g.ToolCallArgumentsDelta):
            return self._call_piece(event)
        if isinstance(event, g.ToolCallDelta):
            if self.call is not None and self.call["key"] == (event.index, event.position):
                return self._call_done(event.call)
            return self._close() + self._call(event.call)
        if isinstance(event, g.Finish):
            self.finishes.append(event)
        return []

    def end(self):
        """Close the open item, then exactly one of response.completed and response.incomplete."""
        closed = self._close()
        reason = self.finishes[-1].reason if self.finishes else "stop"
        usage = render_usage(g.usage_of(self.finishes))
        if reason in INCOMPLETE:
            self.response = response_object(self.meta, "incomplete", self.output, usage,
                                            incomplete={"reason": INCOMPLETE[reason]})
            return closed + [self._event("response.incomplete", response=self.response)]
        self.response = response_object(self.meta, "completed", self.output, usage)
        return closed + [self._event("response.completed", response=self.response)]

    def error(self, err):
        """response.failed, its code telling a deterministic failure from a transient one."""
        self.response = response_object(self.meta, "failed", self.output, render_usage(g.usage_of(self.finishes)),
                                        error={"code": failure_code(err), "message": err.message})
        return [self._event("response.failed", response=self.response)]

    def _text(self, event):
        """A text delta's event, after the events that open a message item if none is open."""
        item = self.item
        if item is None or item["type"] != "message":
            return self._open("message") + self._text(event)
        item["pieces"].append(event.text)
        if self.quiet:
            if self.logprobs:
                item["logprobs"] += _logprobs(event.logprobs)
            return []
        logprobs = _logprobs(event.logprobs) if self.logprobs else []
        item["logprobs"] += logprobs
        delta = self._delta("response.output_text.delta", event.text)
        delta["logprobs"] = logprobs
        return [delta]

    def _delta(self, kind, text):
        """A delta event of the open item; most of a stream's events are these, so one literal (not _event, _where)."""
        self.sequence += 1
        return {"type": kind, "sequence_number": self.sequence - 1, "item_id": self.item["id"],
                "output_index": len(self.output), "content_index": 0, "delta": text}

    def _event(self, kind, **fields):
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _where(self):
        return {"item_id": self.item["id"], "output_index": len(self.output), "content_index": 0}

    def _open(self, kind):
        """The events that open a message or reasoning item, unless one of that kind is open already."""
        if self.item is not None and self.item["type"] == kind:
            return []
        closed = self._close()
        self.item = {"type": kind, "id": new_id("msg" if kind == "message" else "rs"), "pieces": [], "logprobs": []}
        if self.quiet:
            return closed
        part = self._part()
        return closed + [self._event("response.output_item.added", output_index=len(self.output),
                                     item=self._item("in_progress", empty=True)),
                         self._event("response.content_part.added", **self._where(), part=part)]

    def _part(self):
        kind = PARTS[self.item["type"]][0]
        text = "".join(self.item["pieces"])
        if kind == "reasoning_text":
            return {"type": kind, "text": text}
        return {"type": kind, "text": text, "annotations": [], "logprobs": list(self.item["logprobs"])}

    def _item(self, status, empty=False):
        item = self.item
        if item["type"] == "reasoning":
            return {"id": item["id"], "type": "reasoning", "summary": [],
                    "content": [] if empty else [self._part()], "status": status}
        return {"id": item["id"], "type": "message", "status": status, "role": "assistant",
                "content": [] if empty else [self._part()]}

    def _close(self):
        """The events that close the open message or reasoning item, if one is open."""
        if self.item is None:
            return []
        self.item["pieces"] = ["".join(self.item["pieces"])]  # joined once for the three events below
        item = self._item("completed")
        if self.quiet:
            self.output.append(item)
            self.item = None
            return []
        prefix = PARTS[self.item["type"]][1]
        done = {"text": self.item["pieces"][0]}
        if self.item["type"] == "message":
            done["logprobs"] = self.item["logprobs"]
        events = [self._event(prefix + ".done", **self._where(), **done),
                  self._event("response.content_part.done", **self._where(), part=self._part()),
                  self._event("response.output_item.done", output_index=len(self.output), item=item)]
        self.output.append(item)
        self.item = None
        return events

    def _call(self, call):
        """The events of one whole tool call: a function_call item, or a custom_tool_call item for a custom tool."""
        custom = call.name in self.custom_tools
        status = "incomplete" if call.partial else "completed"
        index = len(self.output)
        if custom:
            text = _custom_input(call.arguments)
            item = {"id": new_id("ctc"), "type": "custom_tool_call", "status": status, "call_id": call.id,
                    **self._named(call.name), "input": text}
            kind = "response.custom_tool_call_input"
        else:
            text = call.arguments
            item = self._function_call(call.id, call.name, status, text)
            kind = "response.function_call_arguments"
        added = {**item, "status": "in_progress", ("input" if custom else "arguments"): ""}
        self.output.append(item)
        where = {"item_id": item["id"], "output_index": index}
        return [self._event("response.output_item.added", output_index=index, item=added),
                self._event(kind + ".delta", **where, delta=text),
                self._done_event(kind, where, item),
                self._event("response.output_item.done", output_index=index, item=item)]

    def _call_piece(self, piece):
        """A function call's arguments as they stream: the item opened on its first piece, then one delta each.

        A custom tool's input is read out of the whole call's JSON, so its pieces are not passed on.
        """
        if piece.name in self.custom_tools:
            return []
        opened = []
        if self.call is None:
            opened = self._close()
            item = self._function_call(piece.id, piece.name, "in_progress", "")
            self.call = {"key": (piece.index, piece.position), "item": item, "text": ""}
            opened.append(self._event("response.output_item.added", output_index=len(self.output), item=item))
        self.call["text"] += piece.text
        if not piece.text:
            return opened
        where = {"item_id": self.call["item"]["id"], "output_index": len(self.output)}
        return opened + [self._event("response.function_call_arguments.delta", **where, delta=piece.text)]

    def _call_done(self, call):
        """The end of a function call streamed in pieces: what the pieces left out, then its done events."""
        sent, self.call = self.call, None
        item = {**sent["item"], "status": "incomplete" if call.partial else "completed", "arguments": call.arguments}
        where = {"item_id": item["id"], "output_index": len(self.output)}
        rest = call.arguments[len(sent["text"]):] if call.arguments.startswith(sent["text"]) else ""
        events = [self._event("response.function_call_arguments.delta", **where, delta=rest)] if rest else []
        events += [self._done_event("response.function_call_arguments", where, item),
                   self._event("response.output_item.done", output_index=len(self.output), item=item)]
        self.output.append(item)
        return events

    def _named(self, full_name):
        namespace, name = split_name(full_name, self.namespaces)
        return {"name": name, **({"namespace": namespace} if namespace else {})}

    def _function_call(self, call_id, full_name, status, arguments):
        return {"id": new_id("fc"), "type": "function_call", "status": status, "call_id": call_id,
                **self._named(full_name), "arguments": arguments}

    def _done_event(self, kind, where, item):
        if item["type"] == "custom_tool_call":
            return self._event(kind + ".done", **where, input=item["input"])
        return self._event(kind + ".done", **where, name=item["name"], arguments=item["arguments"])


def _custom_input(arguments):
    """A custom tool's free-text input, from the one-string-argument function call the model made."""
    try:
        value = json.loads(arguments)
    except ValueError:
        return arguments
    text = value.get(CUSTOM_ARGUMENT) if isinstance(value, dict) else None
    return text if isinstance(text, str) else arguments
