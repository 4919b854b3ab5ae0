"""Which backend serves a client-facing model name, and under which name there."""
from __future__ import annotations

import fnmatch
import logging
from dataclasses import dataclass

from .errors import ModelNotFound, ShimError

log = logging.getLogger("shim.router")


@dataclass(frozen=True)
class Route:
    """A client-facing name (or a pattern with *) and where it goes."""

    pattern: str
    backend: str
    target: str | None = None
    "The model's name at the backend; None passes the client's name through."


class Router:
    """Resolves model names to (backend, name at that backend) and lists every model served."""

    def __init__(self, backends, routes):
        self.backends = dict(backends)
        self.exact = {r.pattern: r for r in routes if "*" not in r.pattern}
        self.patterns = [r for r in routes if "*" in r.pattern]

    def resolve(self, name):
        """The backend and the backend's model name for a client-facing name, or ModelNotFound."""
        for candidate in _spellings(name):
            route = self.exact.get(candidate) or next(
                (r for r in self.patterns if fnmatch.fnmatchcase(candidate, r.pattern)), None)
            if route:
                return self.backends[route.backend], route.target or candidate
        raise ModelNotFound(name)

    def models(self):
        """Every model of every backend (a failing upstream lists nothing rather than failing the list)."""
        infos = []
        for name, backend in self.backends.items():
            try:
                infos.extend(backend.models())
            except ShimError as err:
                log.warning("backend %s cannot list its models: %s", name, err.message)
        return infos

    def close(self):
        """Release every backend's resources."""
        for backend in self.backends.values():
            close = getattr(backend, "close", None)
            if close:
                close()


def _spellings(name):
    """The name as given, then with or without Ollama's implicit :latest tag."""
    yield name
    if name.endswith(":latest"):
        yield name[: -len(":latest")]
    elif ":" not in name:
        yield name + ":latest"
