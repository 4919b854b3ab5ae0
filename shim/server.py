"""Run the app under gunicorn with gevent workers, through gunicorn's application API."""
import dataclasses
import os
import tempfile

from gunicorn.app.base import BaseApplication

from . import gunicorn_conf


class ShimServer(BaseApplication):
    """A gunicorn application that builds the Flask app inside each worker, after gevent has patched it."""

    def __init__(self, settings):
        self.settings = settings
        super().__init__()

    def load_config(self):
        """Gunicorn settings: the defaults of shim.gunicorn_conf, then the bind and workers of shim's settings."""
        for key, value in gunicorn_conf.as_dict().items():
            self.cfg.set(key, value)
        self.cfg.set("bind", f"{self.settings.host}:{self.settings.port}")
        self.cfg.set("workers", self.settings.workers)
        self.cfg.set("graceful_timeout", self.settings.graceful_timeout)

    def load(self):
        """The WSGI app, built in the worker process."""
        from .app import create_app
        return create_app(self.settings)


def serve(settings):
    """Serve until stopped, with Prometheus figures shared by the workers through a directory."""
    with tempfile.TemporaryDirectory(prefix="shim-metrics-") as scratch:
        metrics_dir = settings.metrics_dir or scratch
        # prometheus_client picks its multiprocess storage from this variable when the workers import it.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        ShimServer(dataclasses.replace(settings, metrics_dir=metrics_dir)).run()
