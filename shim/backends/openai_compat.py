"""Any OpenAI-compatible server (vLLM, NIM, llama-server, devices) as a backend, through requests."""
from __future__ import annotations

import json
import time

import requests

from .. import generation as g
from ..errors import UpstreamError
from ..protocols import openai as protocol
from ..streaming import parse_sse
from . import upstream

POOL_SIZE = 1024
ERROR_TEXT_CHARS = 200
"How much of an upstream's error text is passed on."
DONE_GRACE = 0.25
"Seconds the end of an answer may take to arrive after [DONE] before its connection is dropped instead of pooled."


class OpenAICompatBackend(upstream.UpstreamBackend):
    """Streams every generation from an OpenAI-compatible upstream and reads its SSE into events."""

    description = "an OpenAI-compatible server"

    def __init__(self, config):
        super().__init__(config)
        self.serves_responses = config.responses
        self.session = requests.Session()
        # Proxy variables and .netrc would be looked up on every request (a measured third of the proxy's
        # overhead); upstreams are configured explicitly instead.
        self.session.trust_env = False
        # Every concurrent stream needs its own upstream connection: a pool smaller than the concurrency makes
        # urllib3 open and throw away connections.
        adapter = requests.adapters.HTTPAdapter(pool_connections=len(config.urls), pool_maxsize=POOL_SIZE)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update({"User-Agent": "shim", **config.headers})
        if config.api_key:
            self.session.headers["Authorization"] = f"Bearer {config.api_key}"
        self.timeout = (config.connect_timeout, config.read_timeout)

    def generate(self, request, cancel):
        """Yield Accepted, then the upstream's deltas as they arrive, then the Finish events."""
        upstream.refuse(request, self.name, "context", "think", *(() if request.raw else ("suffix",)))
        path, body = protocol.upstream_request(request)
        started = time.perf_counter_ns()
        endpoint, response = upstream.with_failover(self.pool, lambda e: self._open(e, path, body, request.model))
        with self.pool.use(endpoint), response:
            yield g.Accepted()
            reader = protocol.UpstreamReader()
            first, complete = None, False
            for data in parse_sse(self._lines(response)):
                if cancel.is_set():
                    return
                if data.strip() == "[DONE]":
                    complete = True
                    _release(response)
                    break
                for event in self._read(reader, data):
                    first = first or time.perf_counter_ns()
                    yield event
            if not complete and not reader.reasons:
                raise UpstreamError(f"{self.name} ended its answer without finishing it (no [DONE], no finish_reason)")
            now = time.perf_counter_ns()
            first = first or now
            yield from reader.end(g.Timings(now - started, 0, first - started, now - first))

    def relay_responses(self, body, cancel):
        """The upstream's own /responses answer: its stream's events one by one, or its one whole Response."""
        endpoint, response = upstream.with_failover(self.pool, lambda e: self._open(e, "/responses", body,
                                                                                    body.get("model")))
        with self.pool.use(endpoint), response:
            if not body.get("stream"):
                yield self._json(response)
                return
            for data in parse_sse(self._lines(response)):
                if cancel.is_set():
                    return
                yield self._json_event(data)

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

    def close(self):
        """Close pooled connections."""
        self.session.close()

    def _open(self, endpoint, path, body, model):
        try:
            response = self.session.post(endpoint.url + path, json=body, stream=True, timeout=self.timeout)
        except requests.RequestException as err:
            raise upstream.unreachable(self.name, err) from err
        if response.status_code >= 400:
            raise self._refusal(response, model)
        return response

    def _refusal(self, response, model=None):
        """The shim error for an upstream's error answer, its text scrubbed of credentials before it is cut short."""
        with response:
            message = self.scrub(_error_text(response))[:ERROR_TEXT_CHARS]
        return upstream.error_for_status(response.status_code, message, self.name, model)

    def _post_json(self, endpoint, path, body, model):
        with self._open(endpoint, path, {**body}, model) as response:
            return self._json(response)

    def _lines(self, response):
        try:
            # Bytes, split only at CR/LF, then UTF-8: an SSE stream is UTF-8 whatever its Content-Type says, and a
            # U+2028 inside a JSON string must not end a line.
            for line in response.iter_lines():
                yield line.decode("utf-8", errors="replace")
        except requests.RequestException as err:
            raise UpstreamError(f"{self.name} broke off the stream: {type(err).__name__}") from err

    def _json(self, response):
        try:
            return response.json()
        except ValueError as err:
            raise UpstreamError(f"{self.name} sent a body that is not JSON") from err

    def _json_event(self, data):
        try:
            return json.loads(data)
        except ValueError:
            shown = self.scrub(data)[:80]
            raise UpstreamError(f"{self.name} sent a stream event that is not JSON: {shown!r}") from None

    def _read(self, reader, data):
        chunk = self._json_event(data)
        try:
            return reader.events(chunk)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise UpstreamError(f"{self.name} sent an error or an unreadable event: {self.scrub(err)}") from err

    def _fetch_models(self):
        def attempt(endpoint):
            try:
                response = self.session.get(endpoint.url + "/models", timeout=self.timeout)
            except requests.RequestException as err:
                raise upstream.unreachable(self.name, err) from err
            if response.status_code >= 400:
                raise self._refusal(response)
            return response.json()
        try:
            _, data = upstream.with_failover(self.pool, attempt)
            return [g.ModelInfo(name=m["id"], backend=self.name, format="", modified_at=m.get("created") or 0)
                    for m in data.get("data") or ()]
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise UpstreamError(f"{self.name} sent a model list shim cannot read") from err


def _release(response):
    """Read the end of a finished answer if it comes within DONE_GRACE, so its connection can be reused.

    An upstream that keeps the answer open after [DONE] is not waited for: the read times out and the `with` that
    holds the response closes its connection instead of pooling it.
    """
    sock = getattr(getattr(response.raw, "connection", None), "sock", None)
    if sock is None:  # the connection closes with this answer (or is no socket): there is nothing to keep
        return
    timeout = sock.gettimeout()
    sock.settimeout(DONE_GRACE)
    try:
        for _ in response.iter_content(chunk_size=None):
            pass
    except (requests.RequestException, OSError):
        return
    sock.settimeout(timeout)


def _error_text(response):
    """What an error answer says: its error message when it has one, else its body (JSON of any shape, or not)."""
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason or ""
    if not isinstance(body, dict):
        return body if isinstance(body, str) else json.dumps(body)
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or json.dumps(error))
    return str(error or body.get("message") or json.dumps(body))
