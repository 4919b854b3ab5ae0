"""Any OpenAI-compatible server (vLLM, NIM, llama-server, devices) as a backend."""
from __future__ import annotations

import dataclasses
import time

from .. import generation as g
from ..errors import InvalidRequest, UpstreamError
from ..protocols import openai as protocol
from ..streaming import HEARTBEAT, PAUSE
from . import upstream
from .http_upstream import HTTPBackend, release


class OpenAICompatBackend(HTTPBackend):
    """Streams every generation from an OpenAI-compatible upstream and reads its SSE into events."""

    description = "an OpenAI-compatible server"
    signals_silence = True

    def __init__(self, config):
        super().__init__(config, {"Authorization": f"Bearer {config.api_key}"} if config.api_key else None)
        self.serves_responses = config.responses
        self.unknown_fields = config.unknown_fields

    def generate(self, request, cancel):
        """Yield Accepted, then the upstream's deltas as they arrive (or its whole answer's), then the Finish events."""
        # A raw prompt goes to /completions, which takes no reasoning_effort; a chat takes no suffix.
        upstream.refuse(request, self.name, "context", *(("think",) if request.raw else ("suffix",)))
        path, body = protocol.upstream_request(self._with_unknown_fields(request))
        started = time.perf_counter_ns()
        endpoint, response = upstream.with_failover(self.pool,
                                                    lambda e: self._open(e, path, body, request.model, cancel))
        with self.pool.use(endpoint), response:
            yield g.Accepted()
            reader = protocol.UpstreamReader()
            if request.stream:
                first = yield from self._streamed(reader, response, cancel, request.heartbeat_seconds)
                if cancel.is_set():
                    return
            else:  # asked whole: one answer to read; when its first token came is not known, so none is prefill
                first = started
                yield from self._read(reader.answer, self._json(response))
            now = time.perf_counter_ns()
            first = first or now
            yield from reader.end(g.Timings(now - started, 0, first - started, now - first))

    def _streamed(self, reader, response, cancel, idle):
        """Yield the events of an upstream's stream as they arrive (PAUSE before each wait, HEARTBEAT after idle
        silent seconds); returns when the first one came."""
        first, complete = None, False
        for data in self._sse(response, idle):
            if cancel.is_set():
                return first
            if data is HEARTBEAT or data is PAUSE:
                yield data
                continue
            if data.strip() == "[DONE]":
                complete = True
                release(response)
                break
            for event in self._read(reader.events, self._json_event(data)):
                first = first or time.perf_counter_ns()
                yield event
        if not complete and not reader.reasons:
            raise UpstreamError(f"{self.name} ended its answer without finishing it (no [DONE], no finish_reason)")
        return first

    def _with_unknown_fields(self, request):
        """The request with the fields shim does not know kept, dropped or refused, as the backend is set up."""
        if not request.extra_fields or self.unknown_fields == "pass":
            return request
        if self.unknown_fields == "drop":
            return dataclasses.replace(request, extra_fields={})
        name = next(iter(request.extra_fields))
        raise InvalidRequest(f"unknown field '{name}': backend '{self.name}' refuses fields shim does not know "
                             "(unknown_fields = \"refuse\")", param=name)

    def relay_responses(self, body, cancel, idle=None):
        """The upstream's own /responses answer: its stream's events one by one (with idle, PAUSE before each wait and
        HEARTBEAT after idle silent seconds), or its one whole Response."""
        endpoint, response = upstream.with_failover(self.pool, lambda e: self._open(e, "/responses", body,
                                                                                    body.get("model"), cancel))
        with self.pool.use(endpoint), response:
            if not body.get("stream"):
                yield self._json(response)
                return
            for data in self._sse(response, idle):
                if cancel.is_set():
                    return
                yield data if data is HEARTBEAT or data is PAUSE else self._json_event(data)

    def embed(self, model, inputs, truncate=True, cancel=None):
        """Embeddings from the upstream's /embeddings (one call: a cancel does not stop it)."""
        started = time.perf_counter_ns()
        body = {"model": model, "input": inputs, "encoding_format": "float"}
        _, data = upstream.with_failover(self.pool, lambda e: self._post_json(e, "/embeddings", body, model))
        try:
            vectors = tuple(tuple(item["embedding"]) for item in sorted(data["data"], key=lambda d: d["index"]))
            tokens = data.get("usage", {}).get("prompt_tokens", 0)
        except (KeyError, TypeError) as err:
            raise UpstreamError(f"{self.name} sent an embeddings answer shim cannot read: {err!r}") from err
        return g.Embeddings(vectors, tokens, time.perf_counter_ns() - started)

    def _post_json(self, endpoint, path, body, model):
        with self._open(endpoint, path, {**body}, model) as response:
            return self._json(response)

    def _read(self, read, data):
        """The events read(data) finds in an upstream chunk or whole answer; what it cannot read is an upstream error."""
        try:
            return read(data)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise UpstreamError(f"{self.name} sent an error or an unreadable event: {self.scrub(err)}") from err

    def _fetch_models(self):
        try:
            data = self._get_json("/models")
            return [g.ModelInfo(name=m["id"], backend=self.name, format="", modified_at=m.get("created") or 0,
                                **protocol.described_by_model(m))
                    for m in data.get("data") or ()]
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise UpstreamError(f"{self.name} sent a model list shim cannot read") from err

