"""The WSGI app from a checkout: gunicorn -c python:shim.gunicorn_conf wsgi:app (installed: shim.wsgi:app)."""
from shim.wsgi import app  # noqa: F401
