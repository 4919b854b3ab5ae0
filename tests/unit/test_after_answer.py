"""A whole answer is written before its generation is closed: once every choice has finished, the backend's cleanup,
the admission place and the last metrics wait until the server has written the answer (and closed its body)."""
import io
import json

import pytest

from shim import generation as g
from shim.api import exchange
from shim.app import create_app
from shim.config import Settings
from shim.router import Route, Router
from tests.fakes import FakeBackend


class Tracked(FakeBackend):
    """The fake backend, noting when each generation is closed and what comes after its last Finish."""

    def __init__(self, after_finish=()):
        super().__init__()
        self.closed, self.after_finish = [], list(after_finish)

    def generate(self, request, cancel):
        try:
            yield from super().generate(request, cancel)
            yield from self.after_finish
        finally:
            self.closed.append(request.n)


def app_over(backend):
    router = Router({"fake": backend}, [Route("fake-model", "fake", "fake-model")])
    return create_app(Settings(embedded_model=False), router=router)


def call(app, path, body):
    """(status, headers, the body's iterable) of a WSGI call, its body not yet read or closed."""
    data = json.dumps(body).encode()
    said = {}
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "SERVER_NAME": "x", "SERVER_PORT": "80",
               "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "CONTENT_TYPE": "application/json",
               "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data), "wsgi.errors": io.StringIO()}
    out = app.wsgi_app(environ, lambda status, headers, exc_info=None: said.update(status=status,
                                                                                    headers=dict(headers)))
    return said["status"], said["headers"], out


def in_flight(app):
    return app.extensions["shim"].admission.depth("fake-model")


WHOLE = [("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
         ("/v1/completions", {"prompt": "hi"}),
         ("/api/chat", {"messages": [{"role": "user", "content": "hi"}], "stream": False}),
         ("/api/generate", {"prompt": "hi", "stream": False}),
         ("/v1/messages", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}),
         ("/v1/responses", {"input": "hi", "store": False}),
         ("/api/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})]  # Flask's, not the lane's


@pytest.mark.parametrize("path,body", WHOLE, ids=[path for path, _ in WHOLE])
@pytest.mark.parametrize("n", [1, 3])
def test_the_generation_is_closed_after_the_answer_is_written(path, body, n):
    backend = Tracked()
    app = app_over(backend)
    extra = {"n": n} if n > 1 and path in ("/v1/chat/completions", "/v1/completions") else {}
    status, headers, out = call(app, path, {**body, **extra, "model": "fake-model"})
    written = b"".join(out)
    assert status.startswith("200") and b"Hello world" in written
    assert backend.closed == [] and in_flight(app) == 1  # the answer is complete; its generation is still open
    out.close()
    assert backend.closed == [extra.get("n", 1)] and in_flight(app) == 0
    assert backend.cancels[0].is_set()


def test_nothing_after_the_last_finish_is_waited_for():
    """A generation ends with its choices' Finish events (generation.Backend.generate): what a backend would do
    after them is its cleanup, which runs when the generation is closed."""
    backend = Tracked(after_finish=[g.TextDelta("!", 0)])
    app = app_over(backend)
    status, _, out = call(app, "/v1/chat/completions", {"model": "fake-model",
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert json.loads(b"".join(out))["choices"][0]["message"]["content"] == "Hello world"
    assert backend.closed == [] and in_flight(app) == 1
    out.close()
    assert backend.closed == [1] and in_flight(app) == 0


def test_a_generation_that_fails_is_closed_before_its_error_is_answered():
    backend = Tracked()
    backend.fail_after(["Hel"], RuntimeError("broken"))
    app = app_over(backend)
    status, _, out = call(app, "/v1/chat/completions", {"model": "fake-model",
                                                        "messages": [{"role": "user", "content": "hi"}]})
    assert status.startswith("500") and backend.closed == [1] and in_flight(app) == 0
    assert not hasattr(out, "close")  # nothing was left for after the answer


def test_an_answer_that_cannot_be_started_still_closes_its_generation(monkeypatch):
    backend = Tracked()
    app = app_over(backend)

    def refusing(status, headers, exc_info=None):
        raise OSError("the client is gone")
    data = json.dumps({"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/v1/chat/completions", "SERVER_NAME": "x",
               "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
               "CONTENT_LENGTH": str(len(data)), "wsgi.input": io.BytesIO(data), "wsgi.errors": io.StringIO()}
    with pytest.raises(OSError):
        app.wsgi_app(environ, refusing)
    assert backend.closed == [1] and in_flight(app) == 0


def test_what_is_left_runs_once_each_even_when_one_fails(caplog):
    ex = exchange.Exchange({}, None)
    ran = []
    assert ex.closing(["body"]) == ["body"]  # nothing left: the body as it is

    def failing():
        ran.append("failing")
        raise ValueError("cleanup failed")
    ex.after_answer(failing)
    ex.after_answer(lambda: ran.append("next"))
    body = ex.closing(iter([b"a"]))
    assert list(body) == [b"a"]
    body.close()
    assert ran == ["failing", "next"]
    assert "finishing a request failed" in caplog.text and "ValueError: cleanup failed" in caplog.text
    ex.finish()
    assert ran == ["failing", "next"]
