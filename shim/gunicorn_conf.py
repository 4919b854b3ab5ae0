"""Gunicorn settings from shim's settings (SHIM_* variables, SHIM_CONFIG), for gunicorn's own command:

    gunicorn -c python:shim.gunicorn_conf -w 2 shim.wsgi:app
"""
import os
import shutil
import tempfile

from shim.config import Settings
from shim.server import gunicorn_options, share_metrics

_scratch = None
if not (os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("SHIM_METRICS_DIR")):
    _scratch = tempfile.mkdtemp(prefix="shim-metrics-")
# Set here, in the master, so every worker it forks sums its figures in the same place.
share_metrics(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("SHIM_METRICS_DIR") or _scratch)

globals().update(gunicorn_options(Settings.load()))


def on_exit(server):
    """Remove the metrics directory made above."""
    if _scratch:
        shutil.rmtree(_scratch, ignore_errors=True)
