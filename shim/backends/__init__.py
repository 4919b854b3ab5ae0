"""Backends and the router over them, built from the settings."""
import dataclasses
import os

from ..backend_types import backend_class
from ..config import EMBEDDED_ALIASES, EMBEDDED_MODEL, ModelConfig, description
from ..errors import ConfigError
from ..router import Route, Router


def local_models(settings):
    """The configured local GGUF models, with the embedded SmolLM2 first when it is enabled, each with its max_ctx."""
    models = [m for m in settings.models if m.backend == "local" and m.path]
    if settings.embedded_model and not any(m.name == EMBEDDED_MODEL for m in models):
        from .llamacpp import embedded_model_path
        models.insert(0, ModelConfig(name=EMBEDDED_MODEL, path=embedded_model_path(), aliases=EMBEDDED_ALIASES))
    return [dataclasses.replace(m, max_ctx=m.max_ctx or settings.max_ctx or m.n_ctx) for m in models]


def threads_per_worker(settings):
    """llama.cpp threads per model: as configured, else the cores shared out among the workers."""
    # More decoding threads than cores makes llama.cpp's spinning thread barriers crawl: two workers with two
    # threads each on two cores measured 24.7 tokens/s together, with one thread each 80.
    return settings.n_threads or max(1, (os.cpu_count() or 1) // max(1, settings.workers))


def build_router(settings):
    """A Router over every configured backend."""
    from .llamacpp import LlamaCppBackend

    local = local_models(settings)
    backends = {"local": LlamaCppBackend(local, n_threads=threads_per_worker(settings), keep_alive=settings.keep_alive,
                                         slots=settings.slots, prefill_chunk=settings.prefill_chunk)}
    routes = []
    for m in local:
        routes.append(Route(m.name, "local", m.name))
        routes.extend(Route(alias, "local", m.name) for alias in m.aliases)
    routes.extend(Route(m.name, "local", m.target) for m in settings.models if m.backend == "local" and not m.path)
    for b in settings.backends:
        backends[b.name] = _upstream(b)
        routes.extend(Route(pattern, b.name) for pattern in b.models)
    routes.extend(Route(m.name, m.backend, m.target or m.name) for m in settings.models if m.backend != "local")
    for m in settings.models:
        routes.extend(Route(alias, m.backend, m.target or m.name) for alias in m.aliases if m.backend != "local")
    return Router(backends, routes, dynamic=[b.name for b in settings.backends if not b.models],
                  overrides=model_overrides(settings.models))


def model_overrides(models):
    """(backend, model name there) -> what the configuration says of that model, for each model it describes."""
    return {(m.backend, m.target or m.name): description(m) for m in models if description(m)}


def _upstream(config):
    if not config.urls:
        raise ConfigError(f"backend {config.name!r} needs a 'url' (or 'urls')")
    return backend_class(config.type)(config)
