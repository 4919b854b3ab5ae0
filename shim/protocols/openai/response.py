"""OpenAI's API, client side out: whole responses, stream chunks, models, embeddings and errors. Pure."""
from __future__ import annotations

import base64

from ... import generation as g
from .. import tools as tool_fields
from ..render import StreamRenderer


FINGERPRINT = "fp_shim"
"The system_fingerprint every answer carries."


def render_chat(choices, *, id, created, model):
    """A whole chat.completion object from gathered choices."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{
            "index": c.index,
            "message": _message(c),
            "logprobs": _logprobs(c.logprobs) if c.logprobs else None,
            "finish_reason": c.finish.reason if c.finish else "stop",
        } for c in choices],
        "usage": render_usage(g.total_usage(choices)),
    }


def render_text_completion(choices, *, id, created, model, prefix=""):
    """A whole text_completion object (legacy completions) from gathered choices."""
    return {
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": FINGERPRINT,
        "choices": [{
            "index": c.index,
            "text": prefix + c.text,
            "logprobs": _legacy_logprobs(c.logprobs) if c.logprobs else None,
            "finish_reason": c.finish.reason if c.finish else "stop",
        } for c in choices],
        "usage": render_usage(g.total_usage(choices)),
    }


def _message(choice):
    message = {"role": "assistant", "content": choice.text if choice.text or not choice.tool_calls else None,
               "refusal": None}
    if choice.thinking:
        message.update(_reasoning(choice.thinking))
    if choice.tool_calls:
        message["tool_calls"] = [_tool_call(c) for c in choice.tool_calls]
    return message


def _reasoning(text):
    """Reasoning under both its names: clients split on which one they read (vLLM moved to `reasoning`)."""
    return {"reasoning_content": text, "reasoning": text}


def _tool_call(call, position=None):
    rendered = tool_fields.render_tool_call(call)
    return rendered if position is None else {"index": position, **rendered}


def _logprob(lp):
    return {"token": lp.token, "logprob": lp.logprob, "bytes": list(lp.bytes)}


def _logprobs(items):
    return {"content": [{**_logprob(lp), "top_logprobs": [_logprob(t) for t in lp.top]} for lp in items],
            "refusal": None}


def _legacy_logprobs(items, at=0):
    offsets = []
    for lp in items:
        offsets.append(at)
        at += len(lp.token)
    return {"tokens": [lp.token for lp in items], "token_logprobs": [lp.logprob for lp in items],
            "top_logprobs": [{t.token: t.logprob for t in lp.top} for lp in items], "text_offset": offsets}


def render_usage(usage):
    """OpenAI's usage object."""
    rendered = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens, "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}
    if usage.reasoning_tokens:
        rendered["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return rendered


class ChatStream(StreamRenderer):
    """Turns events into chat.completion.chunk objects; pure, one instance per response."""

    object = "chat.completion.chunk"

    def __init__(self, *, id, created, model, include_usage=False):
        self.id, self.created, self.model = id, created, model
        self.include_usage = include_usage
        self._started = set()
        self._finishes = []
        self._streamed: dict = {}
        "The argument text already sent of each call streamed in pieces, by (index, position)."

    def chunks(self, event):
        """The chunks (zero or more) that carry one event."""
        if isinstance(event, g.Accepted):
            return []
        if isinstance(event, g.Finish):
            self._finishes.append(event)
            return [self._chunk(event.index, {}, finish=event.reason)]
        if isinstance(event, g.ReasoningDelta):
            return [self._chunk(event.index, self._with_role(event.index, {"content": "",
                                                                            **_reasoning(event.text)}))]
        if isinstance(event, g.TextDelta):
            delta = {"content": event.text}
            logprobs = _logprobs(event.logprobs) if event.logprobs else None
            return [self._chunk(event.index, self._with_role(event.index, delta), logprobs=logprobs)]
        if isinstance(event, g.ToolCallArgumentsDelta):
            return self._call_chunks(event.index, self._arguments_piece(event))
        return self._call_chunks(event.index, self._whole_call(event))

    def _arguments_piece(self, event):
        """A call's first piece carries its id and name; later ones only their arguments."""
        key = (event.index, event.position)
        if key in self._streamed:
            self._streamed[key] += event.text
            return {"index": event.position, "function": {"arguments": event.text}}
        self._streamed[key] = event.text
        return {"index": event.position, "id": event.id, "type": "function",
                "function": {"name": event.name, "arguments": event.text}}

    def _whole_call(self, event):
        """A whole call, or for one streamed in pieces what its pieces left out (usually nothing)."""
        sent = self._streamed.pop((event.index, event.position), None)
        if sent is None:
            return _tool_call(event.call, event.position)
        rest = event.call.arguments[len(sent):] if event.call.arguments.startswith(sent) else ""
        return {"index": event.position, "function": {"arguments": rest}} if rest else None

    def _call_chunks(self, index, call):
        if call is None:
            return []
        delta: dict = {"tool_calls": [call]}
        if index not in self._started:
            delta["content"] = None
        return [self._chunk(index, self._with_role(index, delta))]

    def end(self):
        """The chunks after the last event: the usage chunk when asked for."""
        if not self.include_usage:
            return []
        return [{**self._base(), "choices": [], "usage": render_usage(g.usage_of(self._finishes))}]

    def error(self, err):
        """The error object that ends a stream cut short."""
        return [render_error(err)]

    def _with_role(self, index, delta):
        if index in self._started:
            return delta
        self._started.add(index)
        return {"role": "assistant", **delta}

    def _base(self):
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model,
                "system_fingerprint": FINGERPRINT}

    def _chunk(self, index, delta, finish=None, logprobs=None):
        chunk = {**self._base(), "choices": [{"index": index, "delta": delta, "logprobs": logprobs,
                                              "finish_reason": finish}]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk


class CompletionStream(ChatStream):
    """Turns events into legacy text_completion chunks; with echo, each choice starts with the prompt."""

    object = "text_completion"

    def __init__(self, *, prefix="", **meta):
        super().__init__(**meta)
        self.prefix = prefix
        self._offsets = {}

    def chunks(self, event):
        """The chunks (zero or more) that carry one event."""
        if not isinstance(event, (g.Finish, g.TextDelta)):
            return []
        chunks = []
        if event.index not in self._offsets:
            self._offsets[event.index] = len(self.prefix)
            if self.prefix:
                chunks.append(self._text_chunk(event.index, self.prefix))
        if isinstance(event, g.Finish):
            self._finishes.append(event)
            return chunks + [self._text_chunk(event.index, "", finish=event.reason)]
        logprobs = _legacy_logprobs(event.logprobs, self._offsets[event.index]) if event.logprobs else None
        self._offsets[event.index] += len(event.text)
        return chunks + [self._text_chunk(event.index, event.text, logprobs=logprobs)]

    def _text_chunk(self, index, text, finish=None, logprobs=None):
        chunk = {**self._base(), "choices": [{"index": index, "text": text, "logprobs": logprobs,
                                              "finish_reason": finish}]}
        if self.include_usage:
            chunk["usage"] = None
        return chunk


def render_embeddings(model, vectors, prompt_tokens, encoding):
    """An embeddings list object."""
    def encode(vector):
        if encoding == "base64":
            import array
            return base64.b64encode(array.array("f", vector).tobytes()).decode()
        return vector
    return {"object": "list", "model": model,
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}


def render_model(info):
    """One model object, with its capabilities and (where known) context window under vLLM's and OpenRouter's names."""
    model = {"id": info.name, "object": "model", "created": int(info.modified_at), "owned_by": info.backend,
             "capabilities": list(info.capabilities)}
    if info.context_length:
        model.update(context_length=info.context_length, max_model_len=info.context_length)
    return model


def render_models(infos):
    """The model list object."""
    return {"object": "list", "data": [render_model(i) for i in infos]}


def render_error(err):
    """OpenAI's error body for a ShimError."""
    return {"error": {"message": err.message, "type": err.kind, "param": err.param, "code": err.code}}


def render_envelope(data=None, err=None):
    """The {success, code, message, data} envelope some OpenAI-style gateways answer in."""
    if err is not None:
        return {"success": False, "code": str(err.status), "message": err.message, "data": None}
    return {"success": True, "code": "200", "message": "successful", "data": data}


# ---------------------------------------------------------------- to and from an upstream OpenAI-compatible server
