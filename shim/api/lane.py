"""The app's WSGI entry: every request gets its exchange; POSTs to the generation and embedding endpoints are answered
here, the rest by Flask."""
from ..errors import ShimError
from . import common, ops
from .exchange import Exchange, entered, left


class Lane:
    """WSGI middleware in front of Flask's wsgi_app: the generation and embedding endpoints without Flask's request
    machinery."""

    # Flask's request context, routing and response objects cost a proxied request about a sixth of the worker's
    # CPU (measured under gunicorn); these views need none of it, so their POSTs skip it. Flask still routes every
    # other request, and answers these paths' other methods (405, OPTIONS).

    def __init__(self, flask_wsgi, services):
        self.flask_wsgi = flask_wsgi
        self.services = services
        self.routes = {rule: _Endpoint(rule, view, common.GUARDS[bp_name])
                       for bp_name, rule, view in common.LANE_ROUTES}

    def __call__(self, environ, start_response):
        """Answer one request."""
        exchange = Exchange(environ, self.services)
        token = entered(exchange)
        try:
            endpoint = self.routes.get(environ.get("PATH_INFO")) if environ.get("REQUEST_METHOD") == "POST" else None
            if endpoint is None:
                body = self.flask_wsgi(environ, start_response)
            else:
                answer = endpoint.serve(exchange)
                start_response(answer.status_line, list(answer.headers.items()))
                body = answer.body
        except BaseException:
            exchange.finish()
            raise
        finally:
            left(token)
        return exchange.closing(body)


class _Endpoint:
    """One view with its blueprint's guard, as Flask would run them for it."""

    def __init__(self, rule, view, guard):
        self.rule, self.view, self.guard = rule, view, guard

    def serve(self, exchange):
        """The view's answer (or its error's), finished as every answer is."""
        guard = self.guard
        try:
            guard.check_key()
            answer = self.view()
        except ShimError as err:
            answer = guard.render_error(err)
        except Exception as exc:
            answer = guard.render_error(common.unexpected(exc))
        if guard.after is not None:
            answer = guard.after(answer)
        ops.finish(exchange, self.rule, answer.status, answer.headers)
        return answer
