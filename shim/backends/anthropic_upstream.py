"""Any Anthropic-compatible server (the Messages API) as a backend."""
from __future__ import annotations

import time

from .. import generation as g
from ..errors import ContextLengthExceeded, ModelNotFound, ServerBusy, UpstreamError
from ..protocols.anthropic import upstream as protocol
from ..streaming import HEARTBEAT, PAUSE
from . import upstream
from .http_upstream import ERROR_TEXT_CHARS, HTTPBackend, release

CONTEXT_LENGTH = 200_000
"The context window reported for its models (Anthropic's /v1/models gives none): every current Claude model's."
CAPABILITIES = ("completion", "tools")

TOO_LONG = ("prompt is too long", "context window", "context length")
"How an upstream words a 400 for a prompt that does not fit."


class AnthropicBackend(HTTPBackend):
    """Streams each generation from an Anthropic-compatible upstream (reading its named SSE events into events), or
    asks for the whole Message when the client reads the answer whole."""

    description = "an Anthropic-compatible server"
    signals_silence = True

    def __init__(self, config):
        auth = {"anthropic-version": config.anthropic_version}
        if config.api_key:
            auth["x-api-key"] = config.api_key
        super().__init__(config, auth)
        self.max_tokens_default = config.max_tokens_default

    def generate(self, request, cancel):
        """Yield Accepted, then the upstream's deltas as they arrive (or its whole answer's), then the Finish."""
        upstream.refuse(request, self.name, "context", "suffix", "logit_bias")
        protocol.refuse_unsupported(request, self.name)
        body = protocol.request_body(request, self.max_tokens_default)
        started = time.perf_counter_ns()
        endpoint, response = upstream.with_failover(
            self.pool, lambda e: self._open(e, "/v1/messages", body, request.model, cancel))
        with self.pool.use(endpoint), response:
            yield g.Accepted()
            reader = protocol.StreamReader()
            if request.stream and not response.headers.get("content-type", "").startswith("application/json"):
                first = yield from self._stream(reader, response, cancel, request.heartbeat_seconds)
                if cancel.is_set():
                    return
            else:  # a whole Message: when its first token came is not known, so none of the time is prefill
                first = started
                yield from self._read(reader.message, self._json(response, exact_with=b'"tool_use"'))
            if not reader.finished and reader.reason is None:
                raise UpstreamError(f"{self.name} ended its answer without finishing it (no message_stop)")
            now = time.perf_counter_ns()
            first = first or now
            yield from reader.end(g.Timings(now - started, 0, first - started, now - first))

    def _stream(self, reader, response, cancel, idle):
        """Yield the events of the upstream's stream as they arrive (PAUSE before each wait, HEARTBEAT after idle
        silent seconds); returns when the first one came."""
        first = None
        for data in self._sse(response, idle):
            if cancel.is_set():
                break
            if data is HEARTBEAT or data is PAUSE:
                yield data
                continue
            for event in self._read(reader.events, self._json_event(data)):
                first = first or time.perf_counter_ns()
                yield event
            if reader.finished:
                release(response)
                break
        return first

    def _read(self, read, value):
        try:
            return read(value)
        except protocol.EventError as err:
            raise _unwrapped(self._error(err.status, self.scrub(err.message)[:ERROR_TEXT_CHARS], None)) from None
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise UpstreamError(f"{self.name} sent an unreadable event: {self.scrub(err)}") from err

    def _error(self, status, message, model):
        lowered = message.lower()
        if status in (400, 413) and any(words in lowered for words in TOO_LONG):
            return ContextLengthExceeded(f"{self.name}: {message}")
        if status == 404 and model and "model" in lowered:  # Anthropic says "model: <name>"
            return ModelNotFound(model)
        if status == 529:
            return upstream.Retryable(ServerBusy(f"{self.name} is overloaded: {message}", headers={"Retry-After": "1"}))
        return upstream.error_for_status(status, message, self.name, model)

    def _fetch_models(self):
        try:
            data = self._get_json("/v1/models")
            return [g.ModelInfo(name=name, backend=self.name, format="", modified_at=created,
                                capabilities=CAPABILITIES, context_length=CONTEXT_LENGTH,
                                extra={"display_name": shown})
                    for name, shown, created in protocol.models_of(data)]
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise UpstreamError(f"{self.name} sent a model list shim cannot read") from err


def _unwrapped(error):
    """The error itself: once the answer has begun, another endpoint cannot be tried."""
    return error.error if isinstance(error, upstream.Retryable) else error
