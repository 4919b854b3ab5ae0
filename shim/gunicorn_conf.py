"""Gunicorn settings for shim; also usable as `gunicorn -c python:shim.gunicorn_conf wsgi:app`."""
worker_class = "gevent"
worker_connections = 2000
# Streams can be long and silent while a model thinks; gevent workers heartbeat on their own, so the
# worker timeout only catches a truly stuck worker.
timeout = 120
graceful_timeout = 30
keepalive = 75
bind = "127.0.0.1:8000"
workers = 1
# Several shim servers may run on one machine (tests run two at once); gunicorn's control socket has one
# default path per user, so it is off.
control_socket_disable = True
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms id=%({x-request-id}o)s'


def child_exit(server, worker):
    """Drop a dead worker's live gauges from the shared Prometheus figures."""
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """Close the app's response store as its worker stops."""
    app = getattr(worker, "wsgi", None)
    if app is not None and "shim" in getattr(app, "extensions", {}):
        from shim.app import shutdown
        shutdown(app)


def as_dict():
    """The settings above, for gunicorn's application API."""
    names = ("worker_class", "worker_connections", "timeout", "graceful_timeout", "keepalive", "bind", "workers",
             "accesslog", "access_log_format", "control_socket_disable", "child_exit",
             "worker_exit")
    return {name: globals()[name] for name in names}
