"""OpenAI's API toward an OpenAI-compatible upstream: the request it is sent, the events its answer carries. Pure."""
from __future__ import annotations

import base64
import json

from ... import generation as g
from .. import options as opts
from .. import tools as tool_fields


def upstream_request(request):
    """(path, body) of the request that asks an OpenAI-compatible server for this generation (streamed or whole).

    Fields the client sent that shim does not know go first, as they are; every field shim sets wins over them.
    """
    body = {**request.extra_fields, "model": request.model, "stream": request.stream}
    if request.stream:
        body["stream_options"] = {"include_usage": True}
    s = request.sampling
    for name, value in (("temperature", s.temperature), ("top_p", s.top_p), ("seed", s.seed),
                        ("presence_penalty", s.presence_penalty), ("frequency_penalty", s.frequency_penalty),
                        ("top_k", s.top_k), ("min_p", s.min_p), ("typical_p", s.typical_p),
                        ("repetition_penalty", s.repeat_penalty), ("max_tokens", request.max_tokens)):
        if value is not None:
            body[name] = value
    if s.logit_bias:
        body["logit_bias"] = {str(k): v for k, v in s.logit_bias.items()}
    if request.stop:
        body["stop"] = list(request.stop)
    if request.n != 1:
        body["n"] = request.n
    if request.messages is None and request.raw:
        body["prompt"] = request.prompt
        if request.suffix:
            body["suffix"] = request.suffix
        if request.logprobs:
            body["logprobs"] = request.top_logprobs or 1
        return "/completions", body
    body["messages"] = _upstream_messages(request)
    effort = opts.effort_of_think(request.think)
    if effort is not None:
        body["reasoning_effort"] = effort
    if request.logprobs:
        body["logprobs"] = True
        if request.top_logprobs:
            body["top_logprobs"] = request.top_logprobs
    if request.response_format:
        body["response_format"] = _upstream_format(request.response_format)
    if request.tools:
        body["tools"] = [tool_fields.render_tool(t) for t in request.tools]
        body["tool_choice"] = render_tool_choice(request.tool_choice)
        if not request.parallel_tool_calls:
            body["parallel_tool_calls"] = False
    return "/chat/completions", body


def render_tool_choice(choice):
    """A ToolChoice as OpenAI's chat completions spell tool_choice."""
    if choice.mode == "named":
        return {"type": choice.kind, choice.kind: {"name": choice.name}}
    if choice.allowed and choice.mode != "none":
        return {"type": "allowed_tools", "allowed_tools": {
            "mode": choice.mode, "tools": [{"type": "function", "function": {"name": n}} for n in choice.allowed]}}
    return choice.mode


def _upstream_format(fmt):
    if fmt.kind == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": fmt.name or "response", "schema": dict(fmt.schema)}}


def _upstream_messages(request):
    if request.messages is None:
        messages = [g.Message("system", request.system)] if request.system else []
        messages.append(g.Message("user", request.prompt, images=request.images))
    else:
        messages = request.messages
    return [_upstream_message(m) for m in messages]


def _upstream_message(message):
    wire = {"role": message.role, "content": message.content}
    if message.images:
        wire["content"] = [{"type": "text", "text": message.content}] + [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(i).decode()}}
            for i in message.images]
    if message.tool_calls:
        wire["tool_calls"] = [tool_fields.render_tool_call(c) for c in message.tool_calls]
        wire["content"] = message.content or None
    if message.tool_call_id:
        wire["tool_call_id"] = message.tool_call_id
    if message.name:
        wire["name"] = message.name
    if message.reasoning:
        wire["reasoning_content"] = message.reasoning
    return wire


class UpstreamReader:
    """Turns an upstream's stream chunks (chat or legacy completion) into events; pure, one per response.

    A tool call's arguments are passed on piece by piece as they arrive (ToolCallArgumentsDelta); its whole
    ToolCallDelta follows once the upstream has moved on to another call or to text, or at the end.
    """

    def __init__(self):
        self.whole = False
        "Whether it read one whole answer, whose pieces are not tokens: then only the upstream's usage counts them."
        self.calls = {}
        "Per choice: the calls in the order they began, each {id, name, args, sent, done}."
        self.reasons = {}
        self.stop_sequences = {}
        self.usage = None
        self.pieces = 0
        self.reasoning_pieces = 0

    def events(self, chunk):
        """The events one upstream chunk carries (finishes are held until end())."""
        if not isinstance(chunk, dict):
            raise ValueError("a stream chunk is not a JSON object")
        if chunk.get("error"):
            error = chunk["error"]
            raise ValueError(error.get("message", str(error)) if isinstance(error, dict) else str(error))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        events: list[g.Event] = []
        for choice in chunk.get("choices") or ():
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            text = delta.get("content") if "delta" in choice else choice.get("text")
            # Most chunks carry text alone: the helpers for what they lack are not called (this runs per token).
            reasoning = _reasoning(delta) if "reasoning_content" in delta or "reasoning" in delta else ""
            if reasoning:
                self.reasoning_pieces += 1
                events.append(g.ReasoningDelta(reasoning, index))
            logprobs = _read_logprobs(choice["logprobs"]) if choice.get("logprobs") else ()
            if text or logprobs:
                self.pieces += 1
                if index in self.calls:
                    events += self._close(index)
                events.append(g.TextDelta(text or "", index, logprobs))
            if "tool_calls" in delta:
                for call in delta["tool_calls"] or ():
                    events += self._add_call(index, call)
            if choice.get("finish_reason"):
                self.reasons[index] = choice["finish_reason"]
            if isinstance(choice.get("stop_reason"), str):  # vLLM: the stop string that matched (a token id is not)
                self.stop_sequences[index] = choice["stop_reason"]
        return events

    def answer(self, whole):
        """The events of one whole (non-streaming) answer, a chat or a text completion."""
        self.whole = True
        return self.events(whole_as_chunk(whole))

    def _add_call(self, index, call):
        """The events of one tool-call piece: earlier calls closed, then the arguments not yet passed on."""
        calls = self.calls.setdefault(index, {})
        key = call.get("index", 0)
        events = self._close(index, but=key)
        slot = calls.get(key)
        if slot is None:
            slot = calls[key] = {"id": "", "name": "", "args": "", "sent": None, "done": False,
                                 "position": len(calls)}
        function = call.get("function") or {}
        if slot["sent"] is None:
            slot["id"] = call.get("id") or slot["id"]
            slot["name"] += function.get("name") or ""
        slot["args"] += function.get("arguments") or ""
        if slot["done"] or not slot["name"]:  # a call is passed on once its name is known
            return events
        if slot["sent"] is None:
            slot["id"] = slot["id"] or f"call_{index}_{slot['position']}"
            slot["sent"] = 0
        elif len(slot["args"]) == slot["sent"]:
            return events
        events.append(g.ToolCallArgumentsDelta(slot["args"][slot["sent"]:], slot["id"], slot["name"], index,
                                               slot["position"]))
        slot["sent"] = len(slot["args"])
        return events

    def _close(self, index, but=None, reason="stop"):
        """The whole ToolCallDelta of each call of a choice still open (but the one keyed `but`)."""
        events: list[g.Event] = []
        for key, call in sorted(self.calls.get(index, {}).items(), key=lambda item: item[1]["position"]):
            if key == but or call["done"]:
                continue
            call["done"] = True
            position = call["position"]
            events.append(g.ToolCallDelta(g.ToolCall(call["id"] or f"call_{index}_{position}", call["name"],
                                                     call["args"] or "{}",
                                                     partial=reason == "length" and not _is_object(call["args"])),
                                          index, position))
        return events

    def end(self, timings):
        """The tool calls still open and the Finish of each choice, once the stream is over."""
        usage = self.usage or {}
        pieces, reasoning_pieces = (0, 0) if self.whole else (self.pieces, self.reasoning_pieces)
        prompt = usage.get("prompt_tokens", 0)
        completion = usage.get("completion_tokens", pieces + reasoning_pieces)
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        # Not every upstream counts reasoning tokens (vLLM does not): then its reasoning chunks, a token each, are.
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or reasoning_pieces
        events: list[g.Event] = []
        indexes = sorted(set(self.reasons) | set(self.calls)) or [0]
        for index in indexes:
            reason = self.reasons.get(index, "stop")
            events += self._close(index, reason=reason)
            last = index == indexes[-1]
            events.append(g.Finish("tool_calls" if self.calls.get(index) and reason == "stop" else reason, index,
                                   g.Usage(prompt, completion if last else 0, cached, reasoning if last else 0),
                                   timings,
                                   stop_sequence=self.stop_sequences.get(index)))
        return events


def whole_as_chunk(answer):
    """An upstream's whole answer (a chat or text completion) in the shape of one stream chunk, for UpstreamReader."""
    if not isinstance(answer, dict):
        raise ValueError("the answer is not a JSON object")
    choices = []
    for choice in answer.get("choices") or ():
        if not isinstance(choice, dict):
            raise ValueError("a choice is not a JSON object")
        piece = {name: choice[name] for name in ("index", "text", "logprobs", "finish_reason", "stop_reason")
                 if name in choice}
        if "message" in choice:
            message = choice["message"] or {}
            piece["delta"] = {**message, "tool_calls": [{**call, "index": position} for position, call
                                                        in enumerate(message.get("tool_calls") or ())]}
        choices.append(piece)
    return {**answer, "choices": choices}


def _reasoning(delta):
    """A delta's reasoning text under either name (an upstream sending both sends the same text twice)."""
    for name in ("reasoning_content", "reasoning"):
        if isinstance(delta.get(name), str) and delta[name]:
            return delta[name]
    return ""


def _is_object(text):
    try:
        return isinstance(json.loads(text or "{}"), dict)
    except ValueError:
        return False


def _read_logprobs(value):
    if not isinstance(value, dict):
        return ()
    if "content" in value:
        return tuple(g.TokenLogprob(i["token"], i["logprob"], tuple(i.get("bytes") or ()),
                                    tuple(g.TokenLogprob(t["token"], t["logprob"], tuple(t.get("bytes") or ()))
                                          for t in i.get("top_logprobs") or ()))
                     for i in value.get("content") or ())
    tops = value.get("top_logprobs") or [{}] * len(value.get("tokens") or ())
    return tuple(g.TokenLogprob(tok, lp, tuple(tok.encode()),
                                tuple(g.TokenLogprob(k, v, tuple(k.encode())) for k, v in (top or {}).items()))
                 for tok, lp, top in zip(value.get("tokens") or (), value.get("token_logprobs") or (), tops))


# Where OpenAI-compatible servers put a model's context window in /v1/models, most telling first: vLLM; OpenRouter
# and Together; Groq; Mistral and LM Studio; llama.cpp forks; llama-server (only its trained window).
CONTEXT_FIELDS = (("max_model_len",), ("context_length",), ("context_window",), ("max_context_length",),
                  ("meta", "n_ctx"), ("meta", "n_ctx_train"))
DEFAULT_CAPABILITIES = ("completion", "tools")
"An upstream model's capabilities when its server does not list them: chat completions take tools."


def described_by_model(entry):
    """The capabilities and context length an upstream's /v1/models entry gives (capabilities by default)."""
    listed = entry.get("capabilities")
    known = isinstance(listed, list) and listed and all(c in g.CAPABILITIES for c in listed)
    found: dict = {"capabilities": tuple(listed) if known else DEFAULT_CAPABILITIES}
    for path in CONTEXT_FIELDS:
        value = entry
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            found["context_length"] = value
            break
    return found
