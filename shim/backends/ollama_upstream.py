"""An Ollama instance as a backend, through the official ollama client."""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import urllib.parse

import httpx
import ollama
from ollama._client import BaseClient

from .. import generation as g
from ..errors import ShimError, UpstreamError
from ..protocols import ollama as protocol
from ..streaming import HEARTBEAT, PAUSE
from . import toolcalls, upstream
from .httpclient import Client, Interrupted
from .httpx_transport import SILENCE, SILENCES, BrokenOff, LeanClient, Transport, cancelled_by

log = logging.getLogger("shim.ollama_upstream")
# httpx logs every request it sends at INFO (shim's default level): a line per Ollama call no other backend writes.
logging.getLogger("httpx").setLevel(logging.WARNING)
_STREAM_ERRORS = (httpx.HTTPError, ollama.ResponseError, ValueError, KeyError, TypeError, AttributeError)


class OllamaBackend(upstream.UpstreamBackend):
    """Streams each generation from an Ollama instance token by token, or asks for it whole for a client that reads
    it whole."""

    description = "an Ollama instance"
    can_manage = True
    signals_silence = True

    def __init__(self, config):
        super().__init__(config)
        headers = dict(config.headers)
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        timeout = httpx.Timeout(config.read_timeout, connect=config.connect_timeout)
        self.clients = {e.url: _client(e.url, timeout, headers) for e in self.pool.endpoints}
        self._shown = {}
        "(model, digest) -> its capabilities and context length from /api/show, asked once per version of a model."

    def generate(self, request, cancel):
        """Yield Accepted, then Ollama's parts as events; n choices are n requests."""
        upstream.refuse(request, self.name, "logit_bias")
        forced = toolcalls.call_mode(request)[1]
        if forced:
            # Ollama cannot be told to call a tool; its own grammar can be: ask for the call's JSON as the format.
            schema = toolcalls.forced_schema(request.tools, request.tool_choice)
            request = dataclasses.replace(request, response_format=g.ResponseFormat("json_schema", schema),
                                          tool_choice=g.ToolChoice("none"))
        opened = self._open_choice(request, 0, cancel)
        yield g.Accepted()
        yield from self._choices(request, opened, cancel, forced)

    def _choices(self, request, opened, cancel, forced):
        """The events of the n choices, the first already opened."""
        for index in range(request.n):
            if cancel.is_set():
                return
            events = self._stream(opened if index == 0 else self._open_choice(request, index, cancel), index, cancel,
                                  whole=not request.stream)
            events = _as_tool_call(events, request, index) if forced else events
            # Ollama has no parallel_tool_calls: shim keeps the first call itself, as the local backend does.
            yield from (events if request.parallel_tool_calls else _first_call_only(events))

    def _open_choice(self, request, index, cancel):
        """(endpoint, first part, the rest) of one choice's call, failing over before anything is read."""
        path, body = protocol.upstream_call(request, seed_offset=index)
        endpoint, (first, parts) = upstream.with_failover(
            self.pool, lambda e: self._open(e, path, body, request, cancel, quiet=index == 0))
        return endpoint, first, parts

    def _stream(self, opened, index, cancel, whole=False):
        """The events of one choice's parts (a whole answer is its only part)."""
        endpoint, first, parts = opened
        reader = protocol.UpstreamReader(index, toolcalls.new_call_id, whole)
        done = False
        with self.pool.use(endpoint):
            try:
                for part in itertools.chain(() if first is None else (first,), parts):
                    if cancel.is_set():
                        return
                    if SILENCE in part:  # a line of the transport's, not Ollama's (see httpx_transport.cancelled_by)
                        yield SILENCES[part[SILENCE]]
                        continue
                    yield from reader.events(part)
                    done = done or bool(part.get("done"))
            except _STREAM_ERRORS as err:
                if whole:
                    raise self._error(err, None) from err
                raise UpstreamError(f"{self.name} broke off the stream: {self._describe(err)}") from err
            finally:
                parts.close()
        if not done:
            raise UpstreamError(f"{self.name} ended the stream before it was done")

    def _open(self, endpoint, path, body, request, cancel, quiet):
        """(first part, the rest) of the call: read before any output, so failures can fail over; quiet, the silences
        before it are not kept (nothing is yielded before the first choice's Accepted), else the first may be one.

        Waiting for the first part stops once cancel is set (the client went away): Ollama sees the connection close,
        and stops generating.
        """
        try:
            with cancelled_by(cancel, request.heartbeat_seconds):
                answer = self.clients[endpoint.url].post(path, body, body["stream"])
                if not body["stream"]:
                    return answer, _nothing_more()
                first = next(answer, None)
                while quiet and first is not None and SILENCE in first:
                    first = next(answer, None)
                return first, answer
        except Interrupted:
            raise upstream.client_left(self.name) from None
        except (ollama.ResponseError, ConnectionError, httpx.HTTPError, ValueError, TypeError, AttributeError) as err:
            raise self._error(err, request.model) from err

    def load(self, name, keep_alive=None):
        """Load (or with keep_alive 0 unload) a model on the instance."""
        reply = self._call("generate", model=name, prompt="", keep_alive=keep_alive)
        return reply.done_reason or "load"

    def embed(self, model, inputs, truncate=True, cancel=None):
        """Embeddings from the instance's /api/embed (one call: a cancel does not stop it)."""
        reply = self._call("embed", model=model, input=inputs, truncate=truncate)
        return g.Embeddings(tuple(tuple(v) for v in reply.embeddings), reply.prompt_eval_count or 0,
                            reply.total_duration or 0, reply.load_duration or 0)

    def show(self, name):
        """The instance's own /api/show answer, its fields spelled as Ollama spells them (model_info)."""
        return self._call("show", model=name).model_dump(mode="json", by_alias=True, exclude_none=True)

    def manage(self, action, **kwargs):
        """pull, push, create, copy or delete on the instance; progress objects as dicts, as they come."""
        result = self._call(action, **kwargs)
        if action in ("copy", "delete"):
            return [{"status": "success"}]
        parts = result if kwargs.get("stream") else [result]
        return (p.model_dump(exclude_none=True) for p in parts)

    def close(self):
        """Close pooled connections."""
        for client in self.clients.values():
            client._client.close()

    def _call(self, method, **kwargs):
        def attempt(endpoint):
            try:
                return getattr(self.clients[endpoint.url], method)(**kwargs)
            except (ollama.ResponseError, ConnectionError, httpx.HTTPError, ValueError) as err:
                raise self._error(err, kwargs.get("model")) from err
        return upstream.with_failover(self.pool, attempt)[1]

    def _error(self, err, model):
        """The shim error for a failed call, every upstream-originated text in it scrubbed of credentials."""
        if isinstance(err, ollama.ResponseError):
            text = _redirect_text(err) or err.error
            return upstream.error_for_status(err.status_code, self.scrub(text), self.name, model)
        if isinstance(err, BrokenOff):
            return UpstreamError(f"{self.name} broke off its answer: {self._describe(err)}")
        if isinstance(err, (ConnectionError, httpx.TransportError)):
            return upstream.unreachable(self.name, err)
        return UpstreamError(f"{self.name} sent an answer shim cannot read: {self._describe(err)}")

    def _describe(self, err):
        return self.scrub(err.error if isinstance(err, ollama.ResponseError) else f"{type(err).__name__}: {err}")

    def _fetch_models(self):
        listed = self._call("list")
        return [g.ModelInfo(name=m.model, backend=self.name, family=m.details.family or "" if m.details else "",
                            parameter_size=(m.details.parameter_size or "") if m.details else "",
                            quantization=(m.details.quantization_level or "") if m.details else "",
                            size=m.size or 0, digest=m.digest or "",
                            modified_at=m.modified_at.timestamp() if m.modified_at else 0,
                            **self._described(m.model, m.digest or ""))
                for m in listed.models]

    def _described(self, model, digest):
        """What the instance's /api/show says the model can do and its context length; remembered per digest."""
        if (model, digest) not in self._shown:
            try:
                self._shown[model, digest] = protocol.described_by_show(self.show(model))
            except ShimError as err:  # the list stands without it; the next listing asks again
                log.warning("cannot describe model %s of %s: %s", model, self.name, err.message)
                return {}
        return self._shown[model, digest]


def _client(url, timeout, headers):
    """An ollama client for url; credentials in it become Basic auth, as requests makes them for the openai type."""
    parts = urllib.parse.urlsplit(url)
    auth = None
    if parts.username is not None:  # the ollama client itself would drop them
        auth = httpx.BasicAuth(urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    # The client's own transport (httpcore) costs about as much as the rest of a proxied request: measured in
    # docs/performance.md. Its requests go out through shim's lean client instead, exactly as httpx builds them.
    transport = Transport(Client(connect_timeout=timeout.connect, read_timeout=timeout.read))
    return _OllamaClient(host=upstream.without_userinfo(url), timeout=timeout, headers=headers, auth=auth,
                         transport=transport, follow_redirects=False)


def _redirect_text(err):
    """What a redirect the ollama client refused says, None for another error.

    The client keeps only the body's text in its ResponseError; the answer, with its Location, is the httpx error it
    replaced (its context).
    """
    if not 300 <= err.status_code < 400:
        return None
    response = getattr(err.__context__, "response", None)
    return upstream.redirect_text(response.headers.get("location") if response is not None else None)


class _OllamaClient(ollama.Client):
    """The official client over a LeanClient instead of an httpx.Client."""

    def __init__(self, host=None, **kwargs):
        BaseClient.__init__(self, LeanClient, host, **kwargs)

    def post(self, path, body, stream):
        """The instance's answer to body at path, as dicts: one, or the parts of a stream."""
        # The client's own sending, status and error handling and NDJSON reading, without its typed models: they
        # cost a request about 22 µs and a stream about 8 µs a part, and drop fields Ollama reads (a tool message's
        # tool_call_id, the schemas of a tool's nested parameters). shim builds the JSON, and its reader checks it.
        return self._request(dict, "POST", path, json=body, stream=stream)


def _nothing_more():
    """The parts after a whole answer: none, in a generator that closes as a stream's parts do."""
    yield from ()


def _as_tool_call(events, request, index):
    """Turn the JSON text of a forced call into a ToolCallDelta, keeping the Finish (with tool_calls).

    A call cut off by num_predict is kept as far as it got (its arguments partial), and the Finish says length.
    """
    text = ""
    for event in events:
        if event is PAUSE or event is HEARTBEAT:
            yield event
        elif isinstance(event, g.TextDelta):
            text += event.text
        elif isinstance(event, g.Finish):
            calls = toolcalls.parse_calls(text, request.tools)
            whole = bool(calls)
            if not whole and event.reason == "length":
                calls = toolcalls.partial_calls(text, request.tools)
            if calls is None and text:
                raise UpstreamError(f"the model's forced tool call is not valid JSON: {json.dumps(text[:80])}")
            for position, call in enumerate(calls or ()):
                yield g.ToolCallDelta(call, index, position)
            yield dataclasses.replace(event, reason="tool_calls" if whole else event.reason)


def _first_call_only(events):
    """The events without any tool call after a choice's first."""
    return (e for e in events if not (isinstance(e, g.ToolCallDelta) and e.position > 0))
