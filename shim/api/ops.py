"""Operations: health and readiness, Prometheus metrics, API keys, CORS and request ids for every route."""

from flask import Blueprint, Response, g, jsonify, request

from .. import ids, metrics
from . import common

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
    """Name the request and answer CORS preflights (each protocol's blueprint checks keys its own way)."""
    req = request._get_current_object()  # each proxied lookup costs a microsecond
    g.request_id = req.headers.get("X-Request-ID") or ids.token_hex(8)
    if req.method == "OPTIONS" and req.headers.get("Access-Control-Request-Method"):
        return Response(status=204)
    return None


@bp.after_app_request
def after(response):
    """Echo the request id, add CORS headers, count the request."""
    req, request_g = request._get_current_object(), g._get_current_object()  # each proxied lookup costs a microsecond
    response.headers["X-Request-ID"] = request_g.get("request_id", "")
    origin = req.headers.get("Origin")
    origins = common.services().settings.cors_origins if origin else ()
    if origin and ("*" in origins or origin in origins):
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in origins else origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, DELETE, HEAD, OPTIONS"
        response.headers["Access-Control-Expose-Headers"] = "X-Request-ID"
    route = req.url_rule.rule if req.url_rule else "unmatched"
    metrics.child(metrics.REQUESTS, route, str(response.status_code), request_g.get("model", "")).inc()
    return response


def render_error(err):
    """An error response of the operational routes: `{"error": message}`."""
    response = jsonify({"error": err.message})
    response.status_code = err.status
    response.headers.update(err.headers)
    return response


common.protect(bp, render_error)
