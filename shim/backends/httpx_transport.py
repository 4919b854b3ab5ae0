"""An httpx client and transport over shim's HTTP/1.1 client, so the official ollama client sends through shim's own
pool, without the work of httpx's that shim never needs."""
from __future__ import annotations

import codecs
import contextlib
import contextvars
import datetime
import secrets
import time
from json import dumps

import httpx
from httpx._client import ClientState

from ..streaming import HEARTBEAT, PAUSE, strict_dumper
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


class cancelled_by:  # noqa: N801 (a context manager, named as contextlib's are)
    """Requests sent meanwhile from this greenlet or thread stop waiting for their answer once cancel is set; with
    idle, the NDJSON lines of their answers carry their silences: a line {SILENCE: "pause"} before each wait for
    more, {SILENCE: "heartbeat"} after each idle silent seconds (SILENCES: what each stands for).

    The httpx client in between cannot carry these: they stay in this context, which each greenlet and thread has
    its own of. Waiting stops with httpclient.Interrupted, which httpx and the ollama client pass on untouched.
    """
    # A class, not a generator: every request to Ollama enters one, and contextlib's machinery costs three times as
    # much.

    def __init__(self, cancel, idle=None):
        self.cancel, self.idle = cancel, idle

    def __enter__(self):
        self.tokens = CANCEL.set(self.cancel), IDLE.set(self.idle)

    def __exit__(self, *exc):
        CANCEL.reset(self.tokens[0])
        IDLE.reset(self.tokens[1])


class LeanClient(httpx.Client):
    """An httpx client that keeps no cookies (shim's own client keeps none either), merges each path it is asked
    for with its base URL once, and sends a plain JSON request straight through shim's Transport (see request)."""

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
        data = _json_bytes(json)
        extensions = {} if extensions is None else extensions
        if "timeout" not in extensions:
            chosen = self.timeout if timeout is httpx.USE_CLIENT_DEFAULT else httpx.Timeout(timeout)
            extensions = {**extensions, "timeout": chosen.as_dict()}
        return httpx.Request(method, url, headers=self._request_headers(method.upper(), url, data),
                             stream=httpx.ByteStream(data or b""), extensions=extensions)

    def request(self, method, url, *, json=None, **more):
        """httpx's request; a plain JSON one (see _sends_lean) sent straight through shim's Transport."""
        # Its httpx Request is built only if something asks for it (an error names it, a redirect builds on it).
        if not self._sends_lean(more):
            return super().request(method, url, json=json, **more)
        response = self._sent_lean(method, url, json)
        try:
            response.read()
        except BaseException:
            response.close()
            raise
        return response

    @contextlib.contextmanager
    def stream(self, method, url, *, json=None, **more):
        """httpx's stream, sent as request sends it."""
        if not self._sends_lean(more):
            with super().stream(method, url, json=json, **more) as response:
                yield response
            return
        response = self._sent_lean(method, url, json)
        try:
            yield response
        finally:
            response.close()

    def _sends_lean(self, more):
        """Whether a request with these options needs nothing of httpx's but what _sent_lean does."""
        return (type(self._transport) is Transport and not self._mounts and self._auth is None
                and not self.follow_redirects and not self._event_hooks["request"]
                and not self._event_hooks["response"] and not self.is_closed
                and all(value is None or value is httpx.USE_CLIENT_DEFAULT for value in more.values()))

    def _sent_lean(self, method, url, json):
        """The answer to a request with this JSON (or none), its body not read yet."""
        url, text, netloc = self._kept(url)[1:]
        method = method.upper()
        data = _json_bytes(json)
        self._state = ClientState.OPENED
        response = self._transport.answer(method, url, self._request_headers(method, url, data, netloc), data or b"",
                                          lambda: self.build_request(method, url, json=json), text)
        response.default_encoding = self._default_encoding
        if response.has_redirect_location:
            response.next_request = self._build_redirect_request(response.request, response)
        return response

    def _merged(self, url):
        """url merged with the base URL as httpx merges it, kept per path and base URL."""
        return self._kept(url)[1]

    def _kept(self, url):
        """(base URL, url merged with it, as text, its Host or None), kept per path and base URL."""
        # httpx makes a URL's text and netloc anew each time they are asked for (3 us a request, measured).
        base = self.base_url
        kept = self._kept_urls.get(url) if isinstance(url, str) else None
        if kept is None or kept[0] is not base:
            merged = self._merge_url(url)
            kept = (base, merged, str(merged), merged.netloc if merged.host else None)
            if isinstance(url, str) and len(self._kept_urls) < self.MAX_URLS:
                self._kept_urls[url] = kept
        return kept

    def _request_headers(self, method, url, data, netloc=False):
        """The headers httpx gives a request with this JSON body (or none): the client's, and what they lack (netloc:
        the URL's Host, None for none, when known)."""
        own = self.headers.raw
        names = {name.lower() for name, _ in own}
        if netloc is False:
            netloc = url.netloc if url.host else None
        first = [(b"Host", netloc)] if b"host" not in names and netloc is not None else []
        if data is None:
            if method in ("POST", "PUT", "PATCH") and not names & {b"content-length", b"transfer-encoding"}:
                first.append((b"Content-Length", b"0"))
            return first + own
        last = [] if b"content-length" in names else [(b"Content-Length", b"%d" % len(data))]
        if b"content-type" not in names:
            last.append((b"Content-Type", b"application/json"))
        return first + own + last


_HTTPX_JSON = strict_dumper(False, (",", ":"))
"JSON text as httpx writes a request's: json.dumps(ensure_ascii=False, separators=(',', ':'), allow_nan=False)."


def _json_bytes(json):
    """A request's JSON body as httpx encodes it, None for none."""
    return None if json is None else _HTTPX_JSON(json).encode()


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
        return self.answer(request.method, request.url, request.headers.raw, request.read(), lambda: request)

    def answer(self, method, url, headers, body, request, text=None):
        """The answer to method url (text: the URL as text, when known) with these raw headers and body; request()
        makes the httpx Request it answers."""
        started = time.perf_counter()
        try:
            answer = self.client.send(method, text or str(url), headers, body, cancel=CANCEL.get())
        except HTTPError as err:
            raise _httpx_error(err, request()) from err
        return _Response(answer, request, IDLE.get(), started)

    def close(self):
        """Close the pooled connections."""
        self.client.close()


class _Response(httpx.Response):
    """httpx's response to an answer of shim's client: request and headers made when asked for, the body read
    straight from the answer, its lines split at newlines only and carrying its silences (see cancelled_by)."""

    def __init__(self, answer, request, idle, started):
        # httpx.Response.__init__ is not called: these are the attributes it sets, but its request and headers,
        # which are properties here (made when asked for), and its stream, which is the answer's body.
        self.answer, self._make_request, self._made = answer, request, {}
        self.status_code = answer.status
        self.next_request = None
        self.extensions = {"reason_phrase": answer.reason.encode("latin-1", "replace")}
        self.history = []
        self.is_closed = self.is_stream_consumed = False
        self.default_encoding = "utf-8"
        self.stream = self.body = _Body(answer, self, idle)
        self._num_bytes_downloaded = 0
        self._started = started

    @property
    def _request(self):
        """The httpx Request answered, made when first asked for."""
        if "request" not in self._made:
            self._made["request"] = self._make_request()
        return self._made["request"]

    @_request.setter
    def _request(self, value):
        self._made["request"] = value

    @property
    def headers(self):
        """The answer's headers, made when first asked for."""
        if "headers" not in self._made:
            # shim's client decoded the head as latin-1: encoding it back gives httpx the bytes as they came.
            self._made["headers"] = httpx.Headers([(name.encode("latin-1"), value.encode("latin-1"))
                                                   for name, value in self.answer.headers.items()])
        return self._made["headers"]

    @headers.setter
    def headers(self, value):
        self._made["headers"] = value

    def raise_for_status(self):
        """httpx's, which a success passes without making the request."""
        return self if 200 <= self.status_code < 300 else super().raise_for_status()

    def read(self):
        """httpx's: the whole body, then closed; read straight from the answer unless it has a Content-Encoding."""
        if hasattr(self, "_content") or "content-encoding" in self.answer.headers:
            return super().read()
        self._consume()
        try:
            self._content = b"".join(self.body)
        finally:
            self.close()
        self._num_bytes_downloaded = len(self._content)
        return self._content

    def close(self):
        """httpx's: done with the answer."""
        if not self.is_closed:
            self.is_closed = True
            if self.stream is self.body:  # else it is httpx's, which times the answer itself
                self.elapsed = datetime.timedelta(seconds=time.perf_counter() - self._started)
            self.stream.close()

    def iter_lines(self):
        """The body's lines, split at \\n (or \\r\\n) as bytes, then decoded; httpx's own reading where it decodes
        the body first (a Content-Encoding, or a charset other than UTF-8)."""
        kind = self.answer.headers.get("content-type", "").lower()
        if "content-encoding" in self.answer.headers or (
                "charset" in kind and "charset=utf-8" not in kind
                and codecs.lookup(self.encoding or "utf-8").name != "utf-8"):
            yield from super().iter_lines()
            return
        self._consume()
        # httpx splits decoded text at every Unicode line boundary, U+0085 and U+2028 among them, which JSON strings
        # may hold unescaped (Ollama leaves U+0085 so): the line, cut short, is no longer JSON.
        held: list = []  # the start of a line whose end has not come yet
        self.body.marking = True
        for piece in self.body:
            if type(piece) is _Silence:
                yield _SILENCE_LINES[piece]
                continue
            self._num_bytes_downloaded += len(piece)
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
        self.close()

    def _consume(self):
        """Mark the body read, as httpx does before reading it (refusing to read it twice)."""
        if self.is_stream_consumed:
            raise httpx.StreamConsumed()
        if self.is_closed:
            raise httpx.StreamClosed()
        self.is_stream_consumed = True


def _text(line):
    """A line of the body as text, without the \\r of a \\r\\n."""
    return line.removesuffix(b"\r").decode("utf-8", "replace")


class _Silence(bytes):
    """A silence in an answer's body, as a piece that httpx passes on as it is (not empty: httpx drops empty ones)."""


_PAUSE, _HEARTBEAT = _Silence(b"p"), _Silence(b"h")
_SILENCE_LINES = {_PAUSE: dumps({SILENCE: "pause"}), _HEARTBEAT: dumps({SILENCE: "heartbeat"})}


class _Body(httpx.SyncByteStream):
    """An answer's body as httpx reads it: pieces as they arrive; closing pools or closes the connection."""

    def __init__(self, answer, response, idle=None):
        self.answer, self.response, self.idle = answer, response, idle
        self.marking = False
        "Whether its silences are pieces too: only for _Response.iter_lines, which makes lines of them."

    def __iter__(self):
        try:
            # A wait begins (None), or went on for idle seconds (b""); a body read whole has no silences to pass on.
            for piece in self.answer.pieces(self.idle if self.marking else None):
                yield piece or (_PAUSE if piece is None else _HEARTBEAT)
        except HTTPError as err:
            raise BrokenOff(str(err), request=self.response._request) from err

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
