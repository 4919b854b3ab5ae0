"""A plain request's WSGI environ and its response, made for the requests shim.http1 read the lean way: the same
environ and the same bytes on the wire as gunicorn's wsgi.create and Response make, with less work per request."""
import email.utils
import functools
import os
import time

from gunicorn.http.wsgi import (HEADER_VALUE_RE, SERVER_SOFTWARE, FileWrapper, Response, WSGIErrorsWrapper,
                                _make_early_hints_callback)
from gunicorn.util import is_hoppish, unquote_to_wsgi_str

NAMES_KEPT = 256
"Response header names a worker remembers as checked; past it, it starts again."


class PlainEnvirons:
    """Makes the environs of one worker's plain requests, what is the same for every request worked out once."""

    def __init__(self, cfg):
        self.cfg = cfg
        # gunicorn reads SCRIPT_NAME from the environment per request; a worker's environment does not change.
        self.script_name = os.environ.get("SCRIPT_NAME", "")
        self.base = {"wsgi.version": (1, 0), "wsgi.multithread": True, "wsgi.multiprocess": cfg.workers > 1,
                     "wsgi.run_once": False, "wsgi.file_wrapper": FileWrapper, "wsgi.input_terminated": True,
                     "SERVER_SOFTWARE": SERVER_SOFTWARE, "SERVER_PROTOCOL": "HTTP/1.1", "SCRIPT_NAME": ""}

    def create(self, req, sock, client, server):
        """(response, environ) for a plain request, as gunicorn's wsgi.create makes them (with wsgi.multithread set,
        as its gevent worker sets it); None for any other request, or a listener that is not TCP."""
        if not getattr(req, "plain", False) or self.script_name or type(client) is not tuple \
                or type(server) is not tuple:
            return None
        resp = PlainResponse(req, sock, self.cfg)
        environ = self.base.copy()
        environ.update({"wsgi.errors": LazyErrors(self.cfg), "wsgi.input": req.body, "gunicorn.socket": sock,
                        "REQUEST_METHOD": req.method, "QUERY_STRING": req.query, "RAW_URI": req.uri,
                        "wsgi.url_scheme": req.scheme, "REMOTE_ADDR": client[0], "REMOTE_PORT": str(client[1]),
                        "SERVER_NAME": server[0], "SERVER_PORT": str(server[1]),
                        # A plain head's target is ASCII: without an escape, unquoting leaves it as it is.
                        "PATH_INFO": _unquoted(req.path)})
        for name, value in req.headers:  # plain heads hold no repeated field, and no name with an underscore
            if name == "CONTENT-TYPE":
                environ["CONTENT_TYPE"] = value
            elif name == "CONTENT-LENGTH":
                environ["CONTENT_LENGTH"] = value
            else:
                environ["HTTP_" + name.replace("-", "_")] = value
        environ["wsgi.early_hints"] = _make_early_hints_callback(req, sock, resp)
        return resp, environ


class LazyErrors(WSGIErrorsWrapper):
    """gunicorn's wsgi.errors, which finds the error log's streams when first written to rather than when made."""
    # Made for every request (2 us: a logger looked up, its handlers walked); hardly any request writes to it.

    def __init__(self, cfg):  # noqa: super-init-not-called (as gunicorn's own: RawIOBase has none to call)
        self._cfg = cfg

    @functools.cached_property
    def streams(self):
        """The streams gunicorn's wrapper writes to."""
        return WSGIErrorsWrapper(self._cfg).streams


def _unquoted(path):
    return unquote_to_wsgi_str(path) if "%" in path else path


class PlainResponse(Response):
    """gunicorn's Response, its headers checked and its Date written with less work: the same bytes."""

    _names: dict = {}
    "Header names gunicorn's checks let through as they are (tokens, not hop-by-hop): their lowercase."

    def process_headers(self, headers):
        """gunicorn's checks and bookkeeping of the application's headers; names already checked are not again."""
        names = self._names
        for name, value in headers:
            if name not in names or type(value) is not str or not HEADER_VALUE_RE.fullmatch(value):
                return self._process_and_learn(headers)
        for name, value in headers:
            value = value.strip(" \t")
            if names[name] == "content-length":
                self.response_length = int(value)
            self.headers.append((name, value))
        return None

    def _process_and_learn(self, headers):
        """gunicorn's own processing; the names it let through as they are, remembered."""
        super().process_headers(headers)
        names = self._names
        if len(names) >= NAMES_KEPT:
            names.clear()
        for name, _ in self.headers:  # each checked as a token; hop-by-hop ones are not kept as they are
            if not is_hoppish(name):
                names[name] = name.lower()

    def default_headers(self):
        """gunicorn's status line, Server, Date and Connection lines (and Transfer-Encoding when chunked)."""
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        headers = [f"HTTP/{self.req.version[0]}.{self.req.version[1]} {self.status}\r\n",
                   f"Server: {self.version}\r\n", f"Date: {http_date()}\r\n", f"Connection: {connection}\r\n"]
        if self.chunked:
            headers.append("Transfer-Encoding: chunked\r\n")
        return headers


_date = [-1, ""]
"The second the last Date was written for, and that Date."


def http_date():
    """The current time as an HTTP Date, as gunicorn writes it; made once a second."""
    # email.utils.formatdate costs 3 us, for a text that changes once a second.
    second = int(time.time())
    if second != _date[0]:
        _date[:] = [second, email.utils.formatdate(second, usegmt=True)]
    return _date[1]
