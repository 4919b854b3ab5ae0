"""The `shim` command: serve the app with gunicorn's gevent workers, or list the models."""
import argparse
import json
import sys

from . import __version__
from .config import Settings
from .errors import ConfigError

DESCRIPTION = """shim speaks OpenAI's chat completions and Responses APIs, Ollama's /api and Anthropic's Messages API on
one port, in front of llama.cpp models run in-process (SmolLM2-135M is built in as smollm2:135m), Ollama instances,
and OpenAI- and Anthropic-compatible servers."""


def build_parser():
    """The argument parser of the shim command."""
    parser = argparse.ArgumentParser(prog="shim", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"shim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server (gunicorn, gevent workers)",
                           description="Run shim under gunicorn with gevent workers. Settings come from SHIM_* "
                                       "environment variables and the TOML file of --config (or SHIM_CONFIG); "
                                       "the flags here override both.")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1, env SHIM_HOST)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8000, env SHIM_PORT)")
    serve.add_argument("--workers", type=int, help="gunicorn worker processes (default 1, env SHIM_WORKERS); "
                                                   "each loads its own copy of the local models")
    serve.add_argument("--config", metavar="FILE", help="TOML settings file (env SHIM_CONFIG)")
    models = sub.add_parser("models", help="list the models shim would serve, as JSON")
    models.add_argument("--config", metavar="FILE", help="TOML settings file (env SHIM_CONFIG)")
    return parser


def main(argv=None):
    """Entry point of the shim command."""
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load(path=args.config)
        if args.command == "serve":
            overrides = {k: v for k, v in (("host", args.host), ("port", args.port), ("workers", args.workers))
                         if v is not None}
            import dataclasses
            settings = dataclasses.replace(settings, **overrides)
            settings.validate()
            from .server import serve
            serve(settings)
        else:
            from .backends import build_router
            for info in build_router(settings).models():
                print(json.dumps({"name": info.name, "backend": info.backend, "size": info.size}))
    except ConfigError as err:
        print(f"shim: configuration error: {err}", file=sys.stderr)
        return 2
    return 0
