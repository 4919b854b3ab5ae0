"""shim.http1_exchange and the worker's plain request handling: a plain request's environ, its response's bytes and
the way it is served come out exactly as gunicorn's wsgi.create, Response and handle_request make them."""
import email.utils
import time
from datetime import timedelta

import pytest
from gunicorn.http import wsgi
from gunicorn.http.message import Request
from gunicorn.http.parser import RequestParser
from gunicorn.http.wsgi import WSGIErrorsWrapper
from gunicorn.workers.base_async import ALREADY_HANDLED
from hypothesis import given, settings, strategies as st

from shim import http1_exchange
from shim.http1 import PlainRequest
from shim.http1_exchange import LazyErrors, PlainEnvirons, PlainResponse, http_date
from shim.worker import Worker

from .test_http1 import PLAIN, Peer, settled

PEERS = [("127.0.0.1", 5000), ("203.0.113.9", 61000)]
LISTENERS = [("127.0.0.1", 8000), ("0.0.0.0", 80)]
READ = {name: raw for name, raw in PLAIN.items() if not name.endswith(" Content-Length")}
"The plain heads gunicorn's body reader does not refuse."
PER_REQUEST = ("wsgi.errors", "wsgi.early_hints")
"Objects made anew for each request, compared by what they do rather than by equality."


def parsed(raw, cfg, peer=PEERS[0], message_class=PlainRequest):
    parser = type("P", (RequestParser,), {"mesg_class": message_class})(cfg, Peer([raw]), peer)
    return next(parser)


def gunicorns(req, sock, peer, listener, cfg):
    resp, environ = wsgi.create(req, sock, peer, listener, cfg)
    environ["wsgi.multithread"] = True  # as gunicorn's gevent worker sets it
    return resp, environ


@pytest.fixture(autouse=True)
def fresh_names(monkeypatch):
    """Each test starts with no header names remembered."""
    monkeypatch.setattr(PlainResponse, "_names", {})


@pytest.fixture
def frozen_time(monkeypatch):
    """time.time() at a fixed instant (gunicorn's Date and shim's read the same clock)."""
    now = [1795000000.25]
    monkeypatch.setattr(time, "time", lambda: now[0])
    return now


class Recording:
    """A socket that records what is sent and what else is done to it."""

    def __init__(self):
        self.sent, self.done = [], []

    def sendall(self, data, *flags):
        self.sent.append(bytes(data))

    def send(self, data, *flags):
        self.sent.append(bytes(data))
        return len(data)

    def shutdown(self, how):
        self.done.append("shutdown")

    def close(self):
        self.done.append("close")


@pytest.mark.parametrize("name", READ)
@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("listener", LISTENERS)
def test_a_plain_requests_environ_is_gunicorns(name, peer, listener):
    cfg = settled(workers=3)
    req = parsed(READ[name], cfg, peer)
    assert req.plain
    sock = Recording()
    ours, theirs = PlainEnvirons(cfg).create(req, sock, peer, listener)[1], gunicorns(req, sock, peer, listener, cfg)[1]
    assert {k: v for k, v in ours.items() if k not in PER_REQUEST} == \
        {k: v for k, v in theirs.items() if k not in PER_REQUEST}
    assert ours["wsgi.input"] is req.body and ours["gunicorn.socket"] is sock
    assert isinstance(ours["wsgi.errors"], WSGIErrorsWrapper)
    assert ours["wsgi.errors"].streams == theirs["wsgi.errors"].streams


def test_wsgi_errors_finds_the_error_logs_streams_when_first_written_to(monkeypatch, capsys):
    cfg = settled(errorlog="-")
    errors = LazyErrors(cfg)
    assert "streams" not in errors.__dict__
    errors.write("a line\n")
    assert capsys.readouterr().err == "a line\n"
    assert errors.streams == WSGIErrorsWrapper(cfg).streams


def test_early_hints_go_out_as_gunicorns_do():
    cfg = settled()
    hints = [("Link", "</a.css>; rel=preload")]
    sent = []
    for make in (lambda req, sock: PlainEnvirons(cfg).create(req, sock, PEERS[0], LISTENERS[0]),
                 lambda req, sock: gunicorns(req, sock, PEERS[0], LISTENERS[0], cfg)):
        sock = Recording()
        resp, environ = make(parsed(PLAIN["sdk"], cfg), sock)
        environ["wsgi.early_hints"](hints)
        resp.start_response("200 OK", [("Content-Length", "0")])
        resp.close()
        environ["wsgi.early_hints"](hints)  # after the response began: nothing
        sent.append(sock.sent[:1] + [len(sock.sent)])
    assert sent[0] == sent[1] == [b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n", 2]


def test_other_requests_and_listeners_are_left_to_gunicorn(monkeypatch):
    cfg = settled()
    environs = PlainEnvirons(cfg)
    general = parsed(PLAIN["sdk"], cfg, message_class=Request)
    assert environs.create(general, Recording(), PEERS[0], LISTENERS[0]) is None
    left = parsed(b"GET / HTTP/1.1\r\nAccept: a\r\nAccept: b\r\n\r\n", cfg)  # read by gunicorn's parser
    assert not left.plain and environs.create(left, Recording(), PEERS[0], LISTENERS[0]) is None
    plain = parsed(PLAIN["sdk"], cfg)
    assert environs.create(plain, Recording(), "unix:/run/shim.sock", LISTENERS[0]) is None
    assert environs.create(plain, Recording(), PEERS[0], "/run/shim.sock") is None
    monkeypatch.setenv("SCRIPT_NAME", "/api")
    assert PlainEnvirons(cfg).create(plain, Recording(), PEERS[0], LISTENERS[0]) is None


GET, HEAD, POST = (b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n",
                   b"POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
CLOSING = b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n"
JSON = [("Content-Type", "application/json"), ("Content-Length", "11"), ("X-Request-ID", "ab12")]
ANSWERS = {
    "json": ("200 OK", JSON, [b'{"a":true}\n']),
    "stream": ("200 OK", [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")],
               [b"data: 1\n\n", b"", b"data: [DONE]\n\n"]),
    "blanks around values": ("404 NOT FOUND", [("X-A", " \tv \t"), ("Content-Length", " 2 ")], [b"no"]),
    "hop-by-hop fields dropped": ("200 OK", [("Connection", "close"), ("Keep-Alive", "5"),
                                             ("Transfer-Encoding", "chunked"), ("Content-Length", "1")], [b"x"]),
    "websocket upgrade": ("101 Switching Protocols", [("Connection", "Upgrade"), ("Upgrade", "websocket")], []),
    "no content": ("204 No Content", [("Content-Length", "0"), ("X-A", "1")], [b""]),
    "not modified": ("304 Not Modified", [("Content-Length", "5")], [b"hello"]),
    "body past its length": ("200 OK", [("Content-Length", "3")], [b"ab", b"cd"]),
    "empty head": ("500 INTERNAL SERVER ERROR", [], []),
    "odd status": ("299 Whatever It Is", [("X-A", "1")], [b"z"]),
    # gunicorn refuses these, with these errors:
    "bad name": ("200 OK", [("X-A", "1"), ("Bad Name", "v")], []),
    "bad value": ("200 OK", [("X-A", "1\r\nX-Injected: 1")], []),
    "value not str": ("200 OK", [("Content-Length", 3)], []),
    "name not str": ("200 OK", [(b"X-A", "1")], []),
    "length not a number": ("200 OK", [("Content-Length", "three")], []),
    "bad status": ("OK", [], []),
}


def answered(response_class, raw, status, headers, pieces, cfg, force_close=False):
    """Everything a response of response_class does for these: the bytes, should_close, errors, what it kept."""
    req = parsed(raw, cfg)
    sock = Recording()
    resp = response_class(req, sock, cfg)
    if force_close:
        resp.force_close()
    try:
        resp.start_response(status, list(headers))
        for piece in pieces:
            resp.write(piece)
        resp.close()
    except Exception as err:  # noqa: BLE001 - the error is the outcome compared
        return type(err).__name__, str(err), resp.headers
    return b"".join(sock.sent), resp.should_close(), resp.headers, resp.response_length, resp.chunked, resp.sent


@pytest.mark.parametrize("answer", ANSWERS)
@pytest.mark.parametrize("raw", [GET, HEAD, POST, CLOSING], ids=["GET", "HEAD", "POST", "Connection: close"])
@pytest.mark.parametrize("force_close", [False, True], ids=["", "forced close"])
def test_a_plain_response_writes_gunicorns_bytes(answer, raw, force_close, frozen_time):
    cfg = settled()
    for _ in range(2):  # the second time, its header names are remembered
        assert answered(PlainResponse, raw, *ANSWERS[answer], cfg, force_close) == \
            answered(wsgi.Response, raw, *ANSWERS[answer], cfg, force_close)


NAMES = st.sampled_from(["Content-Type", "Content-Length", "content-length", "X-Request-ID", "Connection",
                         "Upgrade", "Keep-Alive", "X A", "", "Transfer-Encoding", "Vary"])
VALUES = st.one_of(st.sampled_from(["1", " 2 ", "close", "websocket", "", "a\r\nb", "\x00", "caf\xe9", "12"]),
                   st.text(max_size=4))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.tuples(NAMES, VALUES), max_size=4), min_size=1, max_size=3),
       st.sampled_from(["200 OK", "204 No Content", "304 Not Modified", "101 Switching Protocols", "404 X"]),
       st.sampled_from([GET, HEAD, CLOSING]))
def test_any_headers_come_out_as_gunicorns_again_and_again(header_lists, status, raw):
    PlainResponse._names.clear()
    cfg = settled()
    now = time.time()
    original = time.time
    time.time = lambda: now
    try:
        for headers in header_lists:
            assert answered(PlainResponse, raw, status, headers, [b"abc"], cfg) == \
                answered(wsgi.Response, raw, status, headers, [b"abc"], cfg)
    finally:
        time.time = original


def test_remembered_names_are_bounded(monkeypatch):
    monkeypatch.setattr(http1_exchange, "NAMES_KEPT", 3)
    cfg = settled()
    for n in range(5):
        answered(PlainResponse, GET, "200 OK", [(f"X-{n}", "v"), ("Content-Length", "0")], [], cfg)
        assert len(PlainResponse._names) <= 3
    assert set(PlainResponse._names) == {"X-4", "Content-Length"}


def test_the_date_is_gunicorns_and_is_made_once_a_second(frozen_time, monkeypatch):
    made = []
    formatdate = email.utils.formatdate
    monkeypatch.setattr(email.utils, "formatdate", lambda *a, **k: made.append(a) or formatdate(*a, **k))
    for now in (1795000000.0, 1795000000.999, 1795000001.5, 1795000001.7, 1795086400.0):
        frozen_time[0] = now
        assert http_date() == formatdate(now, usegmt=True)
    assert len(made) == 3


# ---------------------------------------------------------------- the worker


class Log:
    """gunicorn's logger as a worker uses it: the access lines and every other call, kept."""

    def __init__(self, lines):
        self.lines = lines

    def access(self, resp, req, environ, took):
        self.lines.append((resp.status, req.path, environ["PATH_INFO"], isinstance(took, timedelta)))

    def __getattr__(self, level):
        return lambda message, *args, **kwargs: self.lines.append((level, message % args if args else message))


def worker(app, cfg=None, alive=True, nr=0, max_requests=100):
    """A Worker with what handling a request uses (gunicorn's own setup needs an arbiter), its access lines kept."""
    cfg = cfg or settled()
    w = Worker.__new__(Worker)
    w.cfg, w.wsgi, w.alive, w.nr, w.max_requests = cfg, app, alive, nr, max_requests
    w.environs = PlainEnvirons(cfg)
    w.lines = []
    w.log = Log(w.lines)
    return w


def served(app, raw=POST, plain=True, **kwargs):
    """What a worker does with one request: its result or error, the bytes sent, the socket's fate, its state."""
    w = worker(app, **kwargs)
    if not plain:
        w.environs = None  # gunicorn's own handle_request
    sock = Recording()
    try:
        result = w.handle_request(("127.0.0.1", 8000), parsed(raw, w.cfg), sock, PEERS[0])
    except BaseException as err:  # noqa: BLE001 - the error is the outcome compared
        result = (type(err).__name__, str(err))
    return result, b"".join(sock.sent), sock.done, w.nr, w.alive, w.lines


def app_answering(status, headers, pieces, fail_after=None, closed=None):
    def app(environ, start_response):
        start_response(status, headers)

        def body():
            for n, piece in enumerate(pieces):
                if n == fail_after:
                    raise RuntimeError("broke mid-answer")
                yield piece

        class Body:
            def __iter__(self):
                return body()

            def close(self):
                if closed is not None:
                    closed.append(environ["REQUEST_METHOD"])
        return Body()
    return app


def failing_before_the_answer(environ, start_response):
    raise ValueError("no answer")


APPS = {
    "json": lambda: app_answering("200 OK", JSON, [b'{"a":true}\n']),
    "stream": lambda: app_answering("200 OK", [("Content-Type", "text/plain")], [b"a", b"b"]),
    "fails before answering": lambda: failing_before_the_answer,
    "fails mid-answer": lambda: app_answering("200 OK", [("Content-Type", "text/plain")], [b"a", b"b"], 1),
    "already handled": lambda: lambda environ, start_response: ALREADY_HANDLED,
}


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("raw", [POST, HEAD, CLOSING], ids=["POST", "HEAD", "Connection: close"])
@pytest.mark.parametrize("state", [{}, {"alive": False}, {"nr": 99}, {"cfg": "no keep-alive"}],
                         ids=["", "stopping", "last request", "no keep-alive"])
def test_a_plain_request_is_served_as_gunicorn_serves_it(app, raw, state, frozen_time):
    state = {**state, "cfg": settled(keepalive=0)} if state.get("cfg") else state
    assert served(APPS[app](), raw, **state) == served(APPS[app](), raw, plain=False, **state)


def test_what_serving_a_plain_request_does(frozen_time):
    closed = []
    result, sent, done, nr, alive, lines = served(app_answering("200 OK", JSON, [b'{"a":true}\n'], closed=closed))
    assert result is None and done == [] and nr == 1 and alive and closed == ["POST"]
    assert sent.startswith(b"HTTP/1.1 200 OK\r\nServer: gunicorn\r\nDate: ") and sent.endswith(b'\r\n\r\n{"a":true}\n')
    assert lines == [("debug", "POST /v1/chat/completions"),  # gunicorn's pre_request hook
                     ("200 OK", "/v1/chat/completions", "/v1/chat/completions", True)]
    # The client asked to close: the connection ends after the answer.
    assert served(APPS["json"](), CLOSING)[0] == ("StopIteration", "")
    # A failure before the answer goes to gunicorn's handle(), which answers 500; one after it began cuts it off.
    assert served(failing_before_the_answer)[:3] == (("ValueError", "no answer"), b"", [])
    result, sent, done, *_, lines = served(APPS["fails mid-answer"]())
    assert result == ("StopIteration", "") and done == ["shutdown", "close"] and sent.endswith(b"\r\n\r\n1\r\na\r\n")
    assert ("exception", "Error handling request") in lines
    # The last request before a restart: the worker stops taking more.
    result, _, _, nr, alive, lines = served(APPS["json"](), nr=99)
    assert result == ("StopIteration", "") and nr == 100 and not alive
    assert ("info", "Autorestarting worker after current request.") in lines
