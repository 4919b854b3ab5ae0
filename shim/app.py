"""create_app: read the settings once, build the router, register the two protocol blueprints."""
import logging
from types import SimpleNamespace

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from . import errors
from .admission import Admission
from .api import ollama as ollama_api
from .api import ops as ops_api
from .api import openai as openai_api
from .api import responses as responses_api
from .backends import build_router
from .config import Settings
from .threads import configure_pool


def create_app(settings=None, router=None):
    """The WSGI app; settings default to the environment's, router to the one the settings describe."""
    settings = settings or Settings.load()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_pool(settings.thread_pool_size)
    app = Flask(__name__)
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.json.compact = True
    router = router or build_router(settings)
    if settings.preload:
        for backend in router.backends.values():
            getattr(backend, "preload", lambda: None)()
    keys = settings.keys()
    keys += settings.admin_keys if keys else ()  # an admin key is also an API key, where keys are asked for
    app.extensions["shim"] = SimpleNamespace(settings=settings, router=router, keys=keys,
                                             admission=Admission(settings.max_queue))
    app.register_blueprint(ops_api.bp)
    app.register_blueprint(openai_api.bp)
    app.register_blueprint(responses_api.bp)
    app.register_blueprint(ollama_api.bp)
    app.register_error_handler(errors.ShimError, render_error)
    app.register_error_handler(HTTPException, lambda e: render_error(_from_http(e)))
    app.register_error_handler(Exception, _unexpected)
    return app


def render_error(err):
    """The error in the shape of the protocol the request came in by."""
    path = request.path
    if path.startswith("/api/v1/"):
        return openai_api.render_error(err, envelope=True)
    if path.startswith("/v1/") or path == "/v1":
        return openai_api.render_error(err)
    return ollama_api.render_error(err)


def _from_http(exc):
    if exc.code == 404:
        return errors.NotFound(f"{request.method} {request.path}: no such endpoint")
    if exc.code == 405:
        allowed = ", ".join(exc.valid_methods or ())
        return errors.MethodNotAllowed(f"method {request.method} is not allowed on {request.path} (allowed: {allowed})",
                                       headers={"Allow": allowed})
    if exc.code == 413:
        return errors.PayloadTooLarge("request body is too large")
    return errors.ShimError(exc.description or exc.name, status=exc.code)


def _unexpected(exc):
    logging.getLogger("shim").exception("unhandled error")
    return render_error(errors.ShimError(f"internal error: {type(exc).__name__}"))
