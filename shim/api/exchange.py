"""One request as shim's views see it, whether Flask dispatched it or the lane did; and the answer they give."""
from __future__ import annotations

import contextvars
import dataclasses
import http
import logging
import typing

from werkzeug.sansio.utils import get_content_length
from werkzeug.wsgi import get_input_stream

from .. import ids, streaming
from ..threads import close

log = logging.getLogger("shim")
_current: contextvars.ContextVar[Exchange] = contextvars.ContextVar("shim_exchange")


class Exchange:
    """A request's WSGI environ, the app's services, and what is learned of it on the way (its id, its model)."""

    __slots__ = ("environ", "services", "request_id", "model", "afterwards")

    def __init__(self, environ, services):
        self.environ = environ
        self.services = services
        self.request_id = environ.get("HTTP_X_REQUEST_ID") or ids.token_hex(8)
        self.model = ""
        self.afterwards = None
        "What is left to do once the answer has been written (see after_answer), or None."

    def after_answer(self, then):
        """Have then() called once the answer has been written (or has failed to be)."""
        if self.afterwards is None:
            self.afterwards = []
        self.afterwards.append(then)

    def finish(self):
        """Call what after_answer left, each once; one that fails is logged (the answer has gone, or is failing)."""
        left, self.afterwards = self.afterwards or (), None
        for then in left:
            try:
                then()
            except Exception:  # noqa: BLE001 - a bug, but the next must still run, and the client has its answer
                log.exception("finishing a request failed")

    def closing(self, body):
        """body, or (when something is left for after the answer) body that does it when closed."""
        return body if self.afterwards is None else _ThenFinish(body, self)

    def header(self, name, default=None):
        """A request header's value (name in any case), or default."""
        key = name.upper().replace("-", "_")
        return self.environ.get(key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key, default)

    @property
    def path(self):
        """The request's path below the app's root, decoded as Flask decodes it."""
        return self.environ.get("PATH_INFO", "").encode("latin-1").decode(errors="replace")

    @property
    def content_length(self):
        """The body's declared length, or None (chunked, absent or unreadable), as Flask reads it."""
        environ = self.environ
        declared = environ.get("CONTENT_LENGTH")
        # What every client sends, read without werkzeug's general parsing (a regular expression, a set header parsed).
        if declared is not None and declared.isdigit() and declared.isascii() and (
                "HTTP_TRANSFER_ENCODING" not in environ):
            return int(declared)
        return get_content_length(declared, environ.get("HTTP_TRANSFER_ENCODING"))

    @property
    def body(self):
        """The body's stream, bounded as Flask bounds it."""
        environ = self.environ
        # A server that ends the stream itself at the body's end (gunicorn does) has it read as it is, as werkzeug would.
        return environ["wsgi.input"] if "wsgi.input_terminated" in environ else get_input_stream(environ)


class _ThenFinish:
    """A WSGI body whose close() (after the server has written it) also finishes its exchange."""

    def __init__(self, body, exchange):
        self.body, self.exchange = body, exchange

    def __iter__(self):
        return iter(self.body)

    def close(self):
        """Close the body, then finish the exchange."""
        try:
            close(self.body)
        finally:
            self.exchange.finish()


def current() -> Exchange:
    """The exchange of the request being answered."""
    return _current.get()


def entered(exchange):
    """Make exchange the current one; returns what `left` takes to undo it."""
    return _current.set(exchange)


def left(token):
    """Undo `entered`."""
    _current.reset(token)


@dataclasses.dataclass(slots=True)
class Answer:
    """A response: status, headers, and the body's byte strings (a generator for a stream)."""

    status: int
    headers: dict
    body: typing.Iterable[bytes]

    @property
    def status_line(self):
        """The status as WSGI's start_response takes it."""
        return STATUS_LINES.get(self.status) or f"{self.status} UNKNOWN"


STATUS_LINES = {status.value: f"{status.value} {status.phrase}" for status in http.HTTPStatus}


def json_answer(obj, status=200, headers=()):
    """obj as a JSON answer, written as Flask's jsonify writes it (compact, a newline at the end)."""
    data = streaming.ndjson_line(obj)
    return Answer(status, {"Content-Type": "application/json", "Content-Length": str(len(data)), **dict(headers)},
                  [data])


def stream_answer(body, mimetype, headers):
    """A streamed answer of body's byte strings."""
    return Answer(200, {"Content-Type": _with_charset(mimetype), **headers}, body)


def _with_charset(mimetype):
    # As werkzeug labels a text/* response: the charset the bytes are written in.
    return f"{mimetype}; charset=utf-8" if mimetype.startswith("text/") else mimetype
