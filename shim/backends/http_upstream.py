"""What the upstream backends spoken to over plain HTTP share: a kept-alive client, error answers, SSE lines."""
from __future__ import annotations

import json

from ..errors import UpstreamError
from ..streaming import loads, parse_sse
from . import upstream
from .httpclient import Client, HTTPError, Interrupted

ERROR_TEXT_CHARS = 200
"How much of an upstream's error text is passed on."
DONE_GRACE = 0.25
"Seconds the end of an answer may take to arrive after its last event before its connection is dropped, not pooled."


class HTTPBackend(upstream.UpstreamBackend):
    """An upstream backend over one kept-alive HTTP client sending the configured headers."""

    def __init__(self, config, auth_headers=None):
        super().__init__(config)
        try:
            self.client = Client({**config.headers, **(auth_headers or {})}, config.connect_timeout,
                                 config.read_timeout)
        except ValueError as err:
            raise ValueError(f"backend '{config.name}': {err}") from None

    def close(self):
        """Close pooled connections."""
        self.client.close()

    def _error(self, status, message, model):
        """The shim error (maybe Retryable) an upstream's error answer stands for."""
        return upstream.error_for_status(status, message, self.name, model)

    def _open(self, endpoint, path, body, model, cancel=None):
        """The answer to a POST of body as JSON, its body unread; an error answer raises its shim error.

        Waiting for the answer stops once cancel is set (the client went away): the upstream sees the connection close.
        """
        try:
            response = self.client.request("POST", endpoint.url + path, body, cancel=cancel)
        except HTTPError as err:
            raise upstream.unreachable(self.name, err) from err
        except Interrupted:
            raise upstream.client_left(self.name) from None
        if response.status >= 300:
            raise self._refusal(response, model)
        return response

    def _refusal(self, response, model=None):
        """The shim error for an upstream's error answer, its text scrubbed of credentials before it is cut short."""
        with response:
            try:
                message = self.scrub(error_text(response))[:ERROR_TEXT_CHARS]
            except HTTPError as err:
                message = f"(its body could not be read: {self.scrub(err)})"
        return self._error(response.status, message, model)

    def _get_json(self, path):
        """The JSON answer to a GET of path, from the first endpoint that gives one."""
        def attempt(endpoint):
            try:
                response = self.client.request("GET", endpoint.url + path)
                if response.status >= 300:
                    raise self._refusal(response)
                with response:
                    return response.json()
            except HTTPError as err:
                raise upstream.unreachable(self.name, err) from err
        return upstream.with_failover(self.pool, attempt)[1]

    def _json(self, response, exact_with=None):
        """A whole answer's body as JSON (by the json module where it holds exact_with); not JSON: an upstream error."""
        try:
            # orjson reads integers past 64 bits as floats: a tool's input, an object written out again as the
            # call's arguments, must keep them as they came.
            if exact_with is not None:
                data = response.read()
                return json.loads(data) if exact_with in data else loads(data)
            return response.json()
        except ValueError as err:
            raise UpstreamError(f"{self.name} sent a body that is not JSON") from err
        except HTTPError as err:
            raise UpstreamError(f"{self.name} broke off its answer: {self.scrub(err)}") from err

    def _json_event(self, data):
        """One SSE event's data as JSON; an event that is not JSON is an upstream error (quoted, scrubbed)."""
        try:
            return loads(data)
        except ValueError:
            shown = self.scrub(data)[:80]
            raise UpstreamError(f"{self.name} sent a stream event that is not JSON: {shown!r}") from None

    def _sse(self, response, idle=None):
        """The data of each event of a streamed SSE answer, as they arrive; with idle (seconds), PAUSE before each
        wait and HEARTBEAT after each idle seconds in which none came (see parse_sse)."""
        try:
            yield from parse_sse(response.pieces(idle))
        except HTTPError as err:
            raise UpstreamError(f"{self.name} broke off the stream: {self.scrub(err)}") from err


def release(response):
    """Read the end of a finished answer if it comes within DONE_GRACE, so its connection can be reused.

    An upstream that keeps the answer open after its last event is not waited for: its connection is closed
    instead of pooled.
    """
    response.release(DONE_GRACE)


def error_text(response):
    """What an error answer says: its error message when it has one, else its body (JSON of any shape, or not)."""
    if 300 <= response.status < 400:
        return upstream.redirect_text(response.headers.get("location"))
    raw = response.read()
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace") or response.reason or ""
    if not isinstance(body, dict):
        return body if isinstance(body, str) else json.dumps(body)
    error = body.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or json.dumps(error))
    return str(error or body.get("message") or json.dumps(body))
