"""Run the app under gunicorn with gevent workers; gunicorn's settings come from shim's."""
import dataclasses
import logging
import os
import shutil
import tempfile
import traceback

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

log = logging.getLogger("shim")

ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms id=%({x-request-id}o)s'


class AccessLogger(glogging.Logger):
    """gunicorn's logger; shim's own access line gathers only the fields it shows, and goes straight to its stream."""

    def access(self, resp, req, environ, request_time):
        """Write the access line: to gunicorn's plain access stream directly when that is where it goes."""
        stream = self._plain_access_stream()
        if stream is None:
            return super().access(resp, req, environ, request_time)
        # The logging module's way (a LogRecord, the caller's frame looked up, a lock) cost 20 us a line, measured.
        try:
            stream.write(ACCESS_LOG_FORMAT % self.atoms(resp, req, environ, request_time) + "\n")
            stream.flush()
        except Exception:
            self.error(traceback.format_exc())
        return None

    def _plain_access_stream(self):
        """The stream of the access log's one handler when it writes shim's line as it is, else None."""
        handlers = self.access_log.handlers
        if (self.cfg.access_log_format != ACCESS_LOG_FORMAT or len(handlers) != 1 or self.access_log.filters
                or type(handlers[0]) is not logging.StreamHandler or handlers[0].filters
                or getattr(handlers[0].formatter, "_fmt", None) != "%(message)s"):
            return None
        return handlers[0].stream

    def atoms(self, resp, req, environ, request_time):
        """The access line's fields (every header and environ variable only for another format)."""
        # gunicorn's own atoms() copies every request and response header and environ variable into a dict per
        # request: measured, 4% of the worker's time under load.
        if self.cfg.access_log_format != ACCESS_LOG_FORMAT:
            return super().atoms(resp, req, environ, request_time)
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        sent = getattr(resp, "sent", None)
        headers = resp.headers.items() if hasattr(resp.headers, "items") else resp.headers
        request_id = next((value for name, value in headers if name.lower() == "x-request-id"), "-")
        return {"h": environ.get("REMOTE_ADDR", "-"),
                "r": f"{environ['REQUEST_METHOD']} {environ['RAW_URI']} {environ['SERVER_PROTOCOL']}",
                "s": status, "b": "-" if sent is None else str(sent),
                "M": request_time.seconds * 1000 + request_time.microseconds // 1000,
                "{x-request-id}o": request_id}


def gunicorn_options(settings):
    """Gunicorn's settings for shim's settings (`shim serve` and shim.gunicorn_conf both use these)."""
    return {
        "worker_class": "shim.worker.Worker",
        "workers": settings.workers,
        "worker_connections": settings.worker_connections,
        "bind": f"{settings.host}:{settings.port}",
        # Streams can be long and silent while a model thinks; gevent workers heartbeat on their own, so the
        # worker timeout only catches a truly stuck worker.
        "timeout": 120,
        "graceful_timeout": settings.graceful_timeout,
        # Also bounds how long a client may take to send request headers; longer than nginx's upstream keep-alive.
        "keepalive": 75,
        # Several shim servers may run on one machine (tests run two at once); gunicorn's control socket has one
        # default path per user, so it is off.
        "control_socket_disable": True,
        "accesslog": "-",
        "access_log_format": ACCESS_LOG_FORMAT,
        "logger_class": AccessLogger,
        "post_fork": post_fork,
        "child_exit": child_exit,
        "worker_exit": worker_exit,
    }


def post_fork(server, worker):
    """Tell the new worker how many workers gunicorn runs (`-w` may override the settings) before it loads."""
    os.environ["SHIM_WORKERS"] = str(server.num_workers)
    # gevent otherwise keeps, for debugging, the spawning greenlet and stack of every greenlet: measured, 2.6 KiB
    # of every open stream with heartbeats (two greenlets each).
    import gevent
    gevent.config.track_greenlet_tree = False


def child_exit(server, worker):
    """Drop a dead worker's live gauges from the shared Prometheus figures."""
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)


def worker_exit(server, worker):
    """Close the app's response store as its worker stops."""
    app = getattr(worker, "wsgi", None)
    if app is not None and "shim" in getattr(app, "extensions", {}):
        from .app import shutdown
        shutdown(app)


def build_app(settings):
    """One worker's WSGI app; logs the llama.cpp threads it decodes with."""
    from .app import create_app
    from .backends import threads_per_worker
    app = create_app(settings)
    log.info("worker %d: %d workers, %d llama.cpp threads per model", os.getpid(), settings.workers,
             threads_per_worker(settings))
    return app


class ShimServer(BaseApplication):
    """A gunicorn application that builds the Flask app inside each worker, after gevent has patched it."""

    def __init__(self, settings):
        self.settings = settings
        super().__init__()

    def load_config(self):
        """Gunicorn's settings, from shim's."""
        for key, value in gunicorn_options(self.settings).items():
            self.cfg.set(key, value)

    def load(self):
        """The WSGI app, built in the worker process."""
        return build_app(self.settings)


def share_metrics(metrics_dir):
    """Have every worker keep its Prometheus figures in metrics_dir, so /metrics sums them."""
    # prometheus_client picks its multiprocess storage from this variable when the workers import it.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["SHIM_METRICS_DIR"] = metrics_dir


def serve(settings):
    """Serve until stopped, with Prometheus figures shared by the workers through a directory."""
    scratch = None if settings.metrics_dir else tempfile.mkdtemp(prefix="shim-metrics-")
    metrics_dir, master = settings.metrics_dir or scratch, os.getpid()
    try:
        share_metrics(metrics_dir)
        ShimServer(dataclasses.replace(settings, metrics_dir=metrics_dir)).run()
    finally:
        # gunicorn ends each forked worker with sys.exit, so workers leave through here too: only the master may
        # remove the directory every other worker still writes in.
        if scratch and os.getpid() == master:
            shutil.rmtree(scratch, ignore_errors=True)
