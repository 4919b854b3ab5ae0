"""The WSGI entry point: gunicorn -k gevent wsgi:app."""
from shim import create_app

app = create_app()
