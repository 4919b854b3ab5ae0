"""The WSGI app for gunicorn's own command: gunicorn -c python:shim.gunicorn_conf shim.wsgi:app."""
from .config import Settings
from .server import build_app

app = build_app(Settings.load())
