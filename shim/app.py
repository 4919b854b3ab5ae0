"""create_app: read the settings once, build the router, register one blueprint per protocol."""
import logging
from types import SimpleNamespace

from flask import Flask, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from . import streaming
from .admission import Admission
from .api import anthropic as anthropic_api
from .api import common
from .api import ollama as ollama_api
from .api import openai as openai_api
from .api import ops as ops_api
from .api import responses as responses_api
from .api.exchange import Answer
from .api.lane import Lane
from .backends import build_router
from .config import Settings
from .store import open_store
from .threads import configure_pool


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON with shim's encoder, made once (Flask's json.dumps builds a new encoder for every answer)."""

    ensure_ascii = False
    sort_keys = False
    compact = True

    def dumps(self, obj, **kwargs):
        """Compact JSON text of obj; a type only Flask's own encoder knows (dates, dataclasses) goes to it."""
        try:
            return streaming.dumps(obj)
        except TypeError:
            return super().dumps(obj, **kwargs)


class ShimFlask(Flask):
    """Flask, whose views may also answer with an exchange.Answer (the lane's kind of answer)."""

    def make_response(self, rv):
        """A response object for what a view (or error handler) returned."""
        if isinstance(rv, Answer):
            return self.response_class(rv.body, status=rv.status, headers=rv.headers)
        return super().make_response(rv)


def create_app(settings=None, router=None):
    """The WSGI app; settings default to the environment's, router to the one the settings describe."""
    settings = settings or Settings.load()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_pool(settings.thread_pool_size)
    app = ShimFlask(__name__)
    app.json = JSONProvider(app)
    router = router or build_router(settings)
    if settings.preload:
        for backend in router.backends.values():
            backend.preload()
    keys = settings.keys()
    keys += settings.admin_keys if keys else ()  # an admin key is also an API key, where keys are asked for
    services = app.extensions["shim"] = SimpleNamespace(
        settings=settings, router=router, keys=keys, admission=Admission(settings.max_queue),
        embed_admission=Admission(settings.max_queue), store=open_store(settings))
    app.register_blueprint(ops_api.bp)
    app.register_blueprint(openai_api.bp)
    app.register_blueprint(openai_api.envelope_bp)
    app.register_blueprint(responses_api.bp)
    app.register_blueprint(ollama_api.bp)
    app.register_blueprint(anthropic_api.bp)
    # Each blueprint renders its own errors; these catch what no blueprint matched (no route, wrong method).
    app.register_error_handler(HTTPException, lambda e: render_error(common.from_http(e)))
    app.register_error_handler(Exception, lambda e: render_error(common.unexpected(e)))
    app.wsgi_app = Lane(app.wsgi_app, services)  # type: ignore[method-assign]
    return app


def shutdown(app):
    """Release what the app holds outside the process: the response store's connections."""
    store = app.extensions["shim"].store
    if store is not None:
        store.close()


def render_error(err):
    """An error outside any blueprint, in the shape of the protocol its path belongs to."""
    path = request.path
    if path.startswith("/v1/messages") or request.headers.get("anthropic-version"):
        return anthropic_api.render_error(err)
    if path.startswith("/api/v1/"):
        return openai_api.render_error(err, envelope=True)
    if path.startswith("/v1/") or path == "/v1":
        return openai_api.render_error(err)
    return ollama_api.render_error(err)
