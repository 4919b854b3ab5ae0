"""A scripted upstream (Ollama or OpenAI-compatible) on a loopback port: a werkzeug server in a thread.

Tests give it a handler (recorded request -> werkzeug Response) and read back every request it received.
"""
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log lines in test output


@dataclass
class Recorded:
    """One request the fake upstream received."""

    method: str
    path: str
    headers: dict
    data: bytes
    environ: dict

    @property
    def json(self):
        return json.loads(self.data) if self.data else None


class FakeUpstream:
    """A threaded HTTP server whose answers come from `handler`; records every request."""

    def __init__(self, handler=None):
        self.handler = handler or (lambda req: Response("no handler", status=404))
        self.requests = []
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        # The default poll interval (0.5 s) is how long shutdown() waits: every fake's exit would cost that.
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _app(self, environ, start_response):
        request = Request(environ)
        record = Recorded(request.method, request.path, {k.lower(): v for k, v in request.headers.items()},
                          request.get_data(), environ)
        self.requests.append(record)
        return self.handler(record)(environ, start_response)


def ndjson(*objects, status=200):
    """A complete NDJSON answer."""
    body = "".join(json.dumps(o) + "\n" for o in objects)
    return Response(body, status=status, mimetype="application/x-ndjson")


def sse(*objects, done=True, status=200):
    """A complete SSE answer, ending in [DONE] unless done is False."""
    body = "".join("data: " + json.dumps(o) + "\n\n" for o in objects) + ("data: [DONE]\n\n" if done else "")
    return Response(body, status=status, mimetype="text/event-stream")


def error_json(status, error):
    """An error answer with a JSON body {"error": error}."""
    return Response(json.dumps({"error": error}), status=status, mimetype="application/json")


def dying(record, chunks, mimetype):
    """An answer that sends `chunks` (bytes), then closes the connection without ending the chunked body."""
    sock = record.environ["werkzeug.socket"]

    def body():
        yield from chunks
        time.sleep(0.05)  # let the chunks leave before the connection goes
        sock.shutdown(socket.SHUT_RDWR)
    return Response(body(), mimetype=mimetype)
