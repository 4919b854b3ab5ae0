"""Operations: health and readiness, Prometheus metrics, API keys, CORS and request ids for every route."""
from flask import Blueprint, Response, jsonify, request

from .. import metrics
from . import common, exchange

bp = Blueprint("ops", __name__)

CORS_HEADERS = "Authorization, Content-Type, X-Request-ID, X-Stainless-Lang, X-Stainless-Package-Version, " \
               "X-Stainless-OS, X-Stainless-Arch, X-Stainless-Runtime, X-Stainless-Runtime-Version, " \
               "X-Stainless-Retry-Count, X-Stainless-Timeout, OpenAI-Beta, X-Api-Key, Anthropic-Version, " \
               "Anthropic-Beta, Anthropic-Dangerous-Direct-Browser-Access"


@bp.get("/health")
def health():
    """Alive: the worker answers."""
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready():
    """Ready: local models loaded, upstreams reachable; 503 with the details otherwise."""
    checks = {}
    for name, backend in common.services().router.backends.items():
        checks[name] = bool(backend.check())
    ok = all(checks.values())
    response = jsonify({"status": "ready" if ok else "not ready", "backends": checks})
    response.status_code = 200 if ok else 503
    return response


@bp.get("/metrics")
def prometheus():
    """Prometheus exposition of shim's metrics."""
    body, content_type = metrics.render(common.services().settings.metrics_dir)
    return Response(body, content_type=content_type)


@bp.before_app_request
def before():
    """Answer CORS preflights (each protocol's blueprint checks keys its own way; the exchange named the request)."""
    req = request._get_current_object()  # each proxied lookup costs a microsecond
    if req.method == "OPTIONS" and req.headers.get("Access-Control-Request-Method"):
        return Response(status=204)
    return None


@bp.after_app_request
def after(response):
    """Finish every answer Flask gives (see finish)."""
    req = request._get_current_object()  # each proxied lookup costs a microsecond
    finish(exchange.current(), req.url_rule.rule if req.url_rule else "unmatched", response.status_code,
           response.headers)
    return response


def finish(ex, route, status, headers):
    """Echo the request id and add CORS headers to an answer's headers; count the request."""
    headers["X-Request-ID"] = ex.request_id
    origin = ex.header("Origin")
    origins = ex.services.settings.cors_origins if origin else ()
    if origin and ("*" in origins or origin in origins):
        headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
        headers["Vary"] = "Origin"
        headers["Access-Control-Allow-Headers"] = CORS_HEADERS
        headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, HEAD, OPTIONS"
        headers["Access-Control-Expose-Headers"] = "X-Request-ID"
    metrics.child(metrics.REQUESTS, route, str(status), ex.model).inc()


def render_error(err):
    """An error response of the operational routes: `{"error": message}`."""
    response = jsonify({"error": err.message})
    response.status_code = err.status
    response.headers.update(err.headers)
    return response


common.protect(bp, render_error)
