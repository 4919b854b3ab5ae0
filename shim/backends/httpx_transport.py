"""An httpx client and transport over shim's HTTP/1.1 client, so the official ollama client sends through shim's own
pool, without the work of httpx's that shim never needs."""
from __future__ import annotations

import codecs
import contextlib
import contextvars
import secrets
import time
from json import dumps

import httpx
from httpx._client import BoundSyncStream, ClientState

from ..streaming import HEARTBEAT, PAUSE
from .httpclient import Client, ConnectError, HTTPError, ReadTimeout

CANCEL: contextvars.ContextVar = contextvars.ContextVar("shim_transport_cancel", default=None)
"The cancel flag of the generation sending requests from this greenlet or thread, if any (see cancelled_by)."
IDLE: contextvars.ContextVar = contextvars.ContextVar("shim_transport_idle", default=None)
"Seconds of an answer's silence after which its NDJSON lines carry a HEARTBEAT, if any (see cancelled_by)."
SILENCE = "shim.silence." + secrets.token_hex(16)
"The one key of the object a silence's line holds (see cancelled_by): unknown to any upstream, so none can forge it."
SILENCES = {"pause": PAUSE, "heartbeat": HEARTBEAT}
"What a silence's object names, by its SILENCE value."


class BrokenOff(httpx.ReadError):
    """The connection failed in the middle of an answer's body: the upstream was reached, and broke off its answer."""


@contextlib.contextmanager
def cancelled_by(cancel, idle=None):
    """Requests sent meanwhile from this greenlet or thread stop waiting for their answer once cancel is set; with
    idle, the NDJSON lines of their answers carry their silences: a line {SILENCE: "pause"} before each wait for
    more, {SILENCE: "heartbeat"} after each idle silent seconds (SILENCES: what each stands for).

    The httpx client in between cannot carry these: they stay in this context, which each greenlet and thread has
    its own of. Waiting stops with httpclient.Interrupted, which httpx and the ollama client pass on untouched.
    """
    tokens = CANCEL.set(cancel), IDLE.set(idle)
    try:
        yield
    finally:
        CANCEL.reset(tokens[0])
        IDLE.reset(tokens[1])


class LeanClient(httpx.Client):
    """An httpx client that keeps no cookies (shim's own client keeps none either) and merges each path it is asked
    for with its base URL once."""

    MAX_URLS = 64
    "Paths whose merged URL is kept: the ollama client asks for a handful (and one per blob digest it uploads)."

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._kept_urls: dict = {}
        self._no_jar = _Jarless()

    @property
    def cookies(self):
        """An empty jar that stays empty: filling one from every answer cost a fifth of a request."""
        return self._no_jar

    def build_request(self, method, url, *, content=None, json=None, timeout=httpx.USE_CLIENT_DEFAULT,
                      extensions=None, **more):
        """httpx's request; one carrying JSON or nothing (all the ollama client sends but blobs) built as httpx builds
        it, without re-reading every header at each step."""
        url = self._merged(url)
        if content is not None or any(value is not None for value in more.values()):
            return super().build_request(method, url, content=content, json=json, timeout=timeout,
                                         extensions=extensions, **more)
        body = None if json is None else dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        data = None if body is None else body.encode()
        extensions = {} if extensions is None else extensions
        if "timeout" not in extensions:
            chosen = self.timeout if timeout is httpx.USE_CLIENT_DEFAULT else httpx.Timeout(timeout)
            extensions = {**extensions, "timeout": chosen.as_dict()}
        return httpx.Request(method, url, headers=self._request_headers(method.upper(), url, data),
                             stream=httpx.ByteStream(data or b""), extensions=extensions)

    def send(self, request, *, stream=False, auth=httpx.USE_CLIENT_DEFAULT, follow_redirects=httpx.USE_CLIENT_DEFAULT):
        """httpx's send; for a client with no auth, event hooks or redirects to follow (the ollama client's, unless
        its URL carries credentials), without the generators and loops that serve those."""
        follow = self.follow_redirects if follow_redirects is httpx.USE_CLIENT_DEFAULT else follow_redirects
        if (follow or auth is not httpx.USE_CLIENT_DEFAULT or self._auth is not None or self._event_hooks["request"]
                or self._event_hooks["response"] or self.is_closed):
            return super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        self._state = ClientState.OPENED
        self._set_timeout(request)
        start = time.perf_counter()
        response = self._transport_for_url(request.url).handle_request(request)
        response.request, response.history = request, []
        response.stream = BoundSyncStream(response.stream, response=response, start=start)
        response.default_encoding = self._default_encoding
        if response.has_redirect_location:
            response.next_request = self._build_redirect_request(request, response)
        if not stream:
            try:
                response.read()
            except BaseException:
                response.close()
                raise
        return response

    def _merged(self, url):
        """url merged with the base URL as httpx merges it, kept per path and base URL."""
        base = self.base_url
        kept = self._kept_urls.get(url) if isinstance(url, str) else None
        if kept is None or kept[0] is not base:
            kept = (base, self._merge_url(url))
            if isinstance(url, str) and len(self._kept_urls) < self.MAX_URLS:
                self._kept_urls[url] = kept
        return kept[1]

    def _request_headers(self, method, url, data):
        """The headers httpx gives a request with this JSON body (or none): the client's, and what they lack."""
        own = self.headers.raw
        names = {name.lower() for name, _ in own}
        first = [(b"Host", url.netloc)] if b"host" not in names and url.host else []
        if data is None:
            if method in ("POST", "PUT", "PATCH") and not names & {b"content-length", b"transfer-encoding"}:
                first.append((b"Content-Length", b"0"))
            return first + own
        last = [] if b"content-length" in names else [(b"Content-Length", b"%d" % len(data))]
        if b"content-type" not in names:
            last.append((b"Content-Type", b"application/json"))
        return first + own + last


class _Jarless(httpx.Cookies):
    """A cookie jar that ignores the cookies answers set."""

    def extract_cookies(self, response):
        """Nothing to keep."""


class Transport(httpx.BaseTransport):
    """Sends each httpx request as it is built, over kept-alive connections of a shim Client."""

    def __init__(self, client: Client):
        self.client = client

    def handle_request(self, request):
        """The answer to request, its body streamed."""
        # The request's body is read whole: what shim asks of Ollama is JSON (it uploads no blobs).
        try:
            answer = self.client.send(request.method, str(request.url), request.headers.raw, request.read(),
                                      cancel=CANCEL.get())
        except HTTPError as err:
            raise _httpx_error(err, request) from err
        # shim's client decoded the head as latin-1: encoding it back gives httpx the bytes as they came.
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers.items()]
        body = _Body(answer, request, IDLE.get())
        response = _Response(answer.status, headers=headers, stream=body,
                             extensions={"reason_phrase": answer.reason.encode("latin-1", "replace")})
        response.body = body
        return response

    def close(self):
        """Close the pooled connections."""
        self.client.close()


class _Response(httpx.Response):
    """httpx's response, whose lines (NDJSON: what the ollama client reads a stream as) are split at newlines only,
    and carry the body's silences (see cancelled_by)."""

    body = None
    "The _Body under it."

    def iter_lines(self):
        """The body's lines, split at \\n (or \\r\\n) as bytes, then decoded; httpx's own reading where it decodes
        the body first (a Content-Encoding, or a charset other than UTF-8)."""
        kind = self.headers.get("content-type", "").lower()
        if "content-encoding" in self.headers or ("charset" in kind and "charset=utf-8" not in kind
                                                  and codecs.lookup(self.encoding or "utf-8").name != "utf-8"):
            yield from super().iter_lines()
            return
        # httpx splits decoded text at every Unicode line boundary, U+0085 and U+2028 among them, which JSON strings
        # may hold unescaped (Ollama leaves U+0085 so): the line, cut short, is no longer JSON.
        held: list = []  # the start of a line whose end has not come yet
        self.body.marking = True
        for piece in self.iter_raw():
            if type(piece) is _Silence:
                yield _SILENCE_LINES[piece]
                continue
            if b"\n" not in piece:
                held.append(piece)
                continue
            *lines, last = piece.split(b"\n")
            if held:
                lines[0] = b"".join(held) + lines[0]
            held = [last] if last else []
            for line in lines:
                yield _text(line)
        if held:
            yield _text(b"".join(held))


def _text(line):
    """A line of the body as text, without the \\r of a \\r\\n."""
    return line.removesuffix(b"\r").decode("utf-8", "replace")


class _Silence(bytes):
    """A silence in an answer's body, as a piece that httpx passes on as it is (not empty: httpx drops empty ones)."""


_PAUSE, _HEARTBEAT = _Silence(b"p"), _Silence(b"h")
_SILENCE_LINES = {_PAUSE: dumps({SILENCE: "pause"}), _HEARTBEAT: dumps({SILENCE: "heartbeat"})}


class _Body(httpx.SyncByteStream):
    """An answer's body as httpx reads it: pieces as they arrive; closing pools or closes the connection."""

    def __init__(self, answer, request, idle=None):
        self.answer, self.request, self.idle = answer, request, idle
        self.marking = False
        "Whether its silences are pieces too: only for _Response.iter_lines, which makes lines of them."

    def __iter__(self):
        try:
            # A wait begins (None), or went on for idle seconds (b""); a body read whole has no silences to pass on.
            for piece in self.answer.pieces(self.idle if self.marking else None):
                yield piece or (_PAUSE if piece is None else _HEARTBEAT)
        except HTTPError as err:
            raise BrokenOff(str(err), request=self.request) from err

    def close(self):
        """Done with the answer."""
        self.answer.close()


def _httpx_error(err, request):
    """The httpx exception a shim HTTPError stands for (what the ollama client and its callers catch)."""
    if isinstance(err, ConnectError):
        return httpx.ConnectError(str(err), request=request)
    if isinstance(err, ReadTimeout):
        return httpx.ReadTimeout(str(err), request=request)
    return httpx.ReadError(str(err), request=request)
