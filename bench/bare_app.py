"""The floor: a bare Flask view, or a bare WSGI callable, under the same gunicorn + gevent settings as shim (parse
the body, answer a fixed completion, or a fixed 16-token SSE stream).

Run alone: python -m bench.bare_app PORT [flask|wsgi]
"""
import dataclasses
import json
import sys

from flask import Flask, Response, jsonify, request
from gunicorn.app.base import BaseApplication

from shim.config import Settings
from shim.server import gunicorn_options

from .instant_upstream import CHAT, SSE

app = Flask(__name__)


@app.post("/v1/chat/completions")
def chat_completions():
    """A fixed completion, or a fixed stream, whatever the (parsed) body asks."""
    body = request.get_json()
    if body.get("stream"):
        return Response(iter(SSE), mimetype="text/event-stream")
    return Response(CHAT, mimetype="application/json")


@app.get("/health")
def health():
    """Alive."""
    return jsonify({"status": "ok"})


def wsgi_app(environ, start_response):
    """The same answers as the Flask view's, from a WSGI callable: the floor below any framework."""
    if environ["PATH_INFO"] == "/health":
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "15")])
        return [b'{"status":"ok"}']
    body = json.loads(environ["wsgi.input"].read())
    if body.get("stream"):
        start_response("200 OK", [("Content-Type", "text/event-stream")])
        return iter(SSE)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(CHAT)))])
    return [CHAT]


class Bare(BaseApplication):
    """gunicorn with shim's own settings, serving a bare app."""

    def __init__(self, port, served=app):
        self.port, self.served = port, served
        super().__init__()

    def load_config(self):
        """shim's gunicorn settings, on this port, one worker."""
        settings = dataclasses.replace(Settings.load(environ={}), port=self.port, workers=1)
        for key, value in gunicorn_options(settings).items():
            if key not in ("post_fork", "child_exit", "worker_exit"):
                self.cfg.set(key, value)

    def load(self):
        """The bare app."""
        return self.served


if __name__ == "__main__":
    Bare(int(sys.argv[1]), wsgi_app if sys.argv[2:] == ["wsgi"] else app).run()
