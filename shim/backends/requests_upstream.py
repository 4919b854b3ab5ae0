"""What the upstream backends spoken to through `requests` share: a pooled session, error answers, SSE lines."""
from __future__ import annotations

import http.client
import json

import requests
import urllib3

from ..errors import UpstreamError
from . import upstream

POOL_SIZE = 1024
ERROR_TEXT_CHARS = 200
"How much of an upstream's error text is passed on."
DONE_GRACE = 0.25
"Seconds the end of an answer may take to arrive after its last event before its connection is dropped, not pooled."
READ_BUFFER = 1024
"Bytes of the buffer an upstream answer is read through (http.client's default: 8 KiB); every open stream holds one."


class RequestsBackend(upstream.UpstreamBackend):
    """An upstream backend over one pooled requests.Session sending the configured headers."""

    def __init__(self, config, auth_headers=None):
        super().__init__(config)
        self.session = requests.Session()
        # Proxy variables and .netrc would be looked up on every request (a measured third of the proxy's
        # overhead); upstreams are configured explicitly instead.
        self.session.trust_env = False
        # Every concurrent stream needs its own upstream connection: a pool smaller than the concurrency makes
        # urllib3 open and throw away connections.
        self.adapter = _Adapter(pool_connections=len(config.urls), pool_maxsize=POOL_SIZE)
        self.session.mount("http://", self.adapter)
        self.session.mount("https://", self.adapter)
        self.session.headers.update({"User-Agent": "shim", **config.headers, **(auth_headers or {})})
        self.timeout = (config.connect_timeout, config.read_timeout)
        self._prepared = {}
        "URL: the POST to it as requests.Session prepares it, with no body yet."

    def close(self):
        """Close pooled connections."""
        self.session.close()

    def _error(self, status, message, model):
        """The shim error (maybe Retryable) an upstream's error answer stands for."""
        return upstream.error_for_status(status, message, self.name, model)

    def _open(self, endpoint, path, body, model):
        try:
            response = self._post(endpoint.url + path, body)
        except requests.RequestException as err:
            raise upstream.unreachable(self.name, err) from err
        if response.status_code >= 400:
            raise self._refusal(response, model)
        return response

    def _post(self, url, body):
        """The streamed answer to a POST of body as JSON, as Session.post sends it but prepared once per URL."""
        # Session.post merges settings, cookies and hooks anew on every call: measured, a sixth of the proxy's time.
        # The session's adapter (which the `responses` test library mocks) still sends it.
        template = self._prepared.get(url)
        if template is None:
            template = self._prepared[url] = self.session.prepare_request(
                requests.Request("POST", url, headers={"Content-Type": "application/json"}))
        prepared = requests.PreparedRequest()
        prepared.method, prepared.url, prepared.hooks = template.method, template.url, template.hooks
        prepared.headers = template.headers.copy()
        prepared.body = json.dumps(body, allow_nan=False).encode()
        prepared.headers["Content-Length"] = str(len(prepared.body))
        response = self.adapter.send(prepared, stream=True, timeout=self.timeout)
        if response.is_redirect:  # rare for an API: the session follows it, as it always did
            response.close()
            return self.session.post(url, json=body, stream=True, timeout=self.timeout)
        return response

    def _refusal(self, response, model=None):
        """The shim error for an upstream's error answer, its text scrubbed of credentials before it is cut short."""
        with response:
            message = self.scrub(error_text(response))[:ERROR_TEXT_CHARS]
        return self._error(response.status_code, message, model)

    def _get_json(self, path):
        """The JSON answer to a GET of path, from the first endpoint that gives one."""
        def attempt(endpoint):
            try:
                response = self.session.get(endpoint.url + path, timeout=self.timeout)
            except requests.RequestException as err:
                raise upstream.unreachable(self.name, err) from err
            if response.status_code >= 400:
                raise self._refusal(response)
            return response.json()
        return upstream.with_failover(self.pool, attempt)[1]

    def _json(self, response):
        """A whole answer's body as JSON; a body that is not JSON is an upstream error."""
        try:
            return response.json()
        except ValueError as err:
            raise UpstreamError(f"{self.name} sent a body that is not JSON") from err

    def _json_event(self, data):
        """One SSE event's data as JSON; an event that is not JSON is an upstream error (quoted, scrubbed)."""
        try:
            return json.loads(data)
        except ValueError:
            shown = self.scrub(data)[:80]
            raise UpstreamError(f"{self.name} sent a stream event that is not JSON: {shown!r}") from None

    def _lines(self, response):
        try:
            # Bytes, split only at CR/LF, then UTF-8: an SSE stream is UTF-8 whatever its Content-Type says, and a
            # U+2028 inside a JSON string must not end a line.
            for line in response.iter_lines():
                yield line.decode("utf-8", errors="replace")
        except requests.RequestException as err:
            raise UpstreamError(f"{self.name} broke off the stream: {type(err).__name__}") from err


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, whose connections read their answers through a small buffer."""

    def init_poolmanager(self, *args, **kwargs):
        """The pool manager, making pools of small-buffered connections."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class _LeanResponse(http.client.HTTPResponse):
    """http.client's response, reading through a READ_BUFFER-byte buffer."""

    def __init__(self, sock, *args, **kwargs):
        super().__init__(_SmallFile(sock), *args, **kwargs)


class _SmallFile:
    """A socket as HTTPResponse sees it: its makefile() buffers READ_BUFFER bytes."""

    def __init__(self, sock):
        self.sock = sock

    def makefile(self, mode):
        """The socket's file, with the small buffer."""
        # A stream's lines are a few hundred bytes; a longer read passes the buffer by. Measured with 1,000 open
        # streams, 8 KiB buffers cost 4.7 KiB of resident memory per stream more than these.
        return self.sock.makefile(mode, READ_BUFFER)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    response_class = _LeanResponse


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    response_class = _LeanResponse


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def release(response):
    """Read the end of a finished answer if it comes within DONE_GRACE, so its connection can be reused.

    An upstream that keeps the answer open after its last event is not waited for: the read times out and the
    `with` that holds the response closes its connection instead of pooling it.
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


def error_text(response):
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
