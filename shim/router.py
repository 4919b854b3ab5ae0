"""Which backend serves a client-facing model name, and under which name there."""
from __future__ import annotations

import dataclasses
import fnmatch
import logging
from dataclasses import dataclass
from typing import NamedTuple

from .errors import BackendUnavailable, ModelNotFound, ShimError

log = logging.getLogger("shim.router")


@dataclass(frozen=True)
class Route:
    """A client-facing name (or a pattern with *) and where it goes."""

    pattern: str
    backend: str
    target: str | None = None
    "The model's name at the backend; None passes the client's name through."


class Resolved(NamedTuple):
    """Where a client-facing name goes, and the bounded name it is counted under."""

    backend: object
    target: str
    "The model's name at the backend."
    key: str
    "The route's own name (a configured name, a pattern, or a model the backend lists), never the client's spelling."


class Router:
    """Resolves model names to (backend, name at that backend) and lists every model served."""

    def __init__(self, backends, routes, dynamic=(), overrides=None):
        self.backends = dict(backends)
        self.dynamic = tuple(dynamic)
        "Backends whose own model lists route automatically (asked last, in order)."
        self.overrides = dict(overrides or {})
        "(backend, model name there) -> ModelInfo fields the configuration sets for it (capabilities, context_length)."
        self.exact = {r.pattern: r for r in routes if "*" not in r.pattern}
        self.patterns = [r for r in routes if "*" in r.pattern]

    def resolve(self, name):
        """The backend and the backend's model name for a client-facing name, or ModelNotFound."""
        return self.route(name)[:2]

    def route(self, name):
        """Where a client-facing name goes (backend, name there, key to count it under), or ModelNotFound."""
        for candidate in _spellings(name):
            route = self.exact.get(candidate) or next(
                (r for r in self.patterns if fnmatch.fnmatchcase(candidate, r.pattern)), None)
            if route:
                return Resolved(self.backends[route.backend], route.target or candidate, route.target or route.pattern)
        for candidate in _spellings(name):
            for backend_name in self.dynamic:
                backend = self.backends[backend_name]
                if backend.has_model(candidate):
                    return Resolved(backend, candidate, candidate)  # a name the backend lists: bounded by its list
        raise self._not_found(name)

    def _not_found(self, name):
        """ModelNotFound, or BackendUnavailable if a backend that may serve name could not say whether it does."""
        unasked = [b for b in self.dynamic if self.backends[b].list_error is not None]
        if unasked:
            return BackendUnavailable(f"cannot tell whether model '{name}' is served: the model list of backend "
                                      f"{', '.join(unasked)} is unavailable (upstream unreachable or failing)",
                                      param="model")
        return ModelNotFound(name)

    def models(self):
        """Every name clients can use, with what its backend says of the model behind it.

        Like Ollama, each tag a model answers to is listed (smollm2:135m and smollm2:latest, with one digest);
        a bare name is left out where its :latest spelling is listed for the same model.
        """
        listed = {name: self._backend_models(name) for name in self.backends}
        found = {}
        for route in self.exact.values():
            infos = listed[route.backend]
            info = next((i for i in infos if i.name == (route.target or route.pattern)), None)
            if info:
                found.setdefault(route.pattern, dataclasses.replace(info, name=route.pattern))
        for backend_name, infos in listed.items():
            for info in infos:
                if info.name not in found and self._serves(backend_name, info.name):
                    found[info.name] = info
        return [info for name, info in found.items() if not self._spelled_with_latest(name, found)]

    def describe(self, name):
        """(backend, name there, what is said of the model) for a client-facing name; info None if it is unlisted."""
        backend, target = self.resolve(name)
        backend_name = next(n for n, b in self.backends.items() if b is backend)
        return backend, target, next((i for i in self._backend_models(backend_name) if i.name == target), None)

    def loaded(self):
        """The models loaded now, once each under the name their backend gives them."""
        return [info for name in self.backends for info in self._backend_models(name) if info.loaded]

    def _spelled_with_latest(self, name, found):
        """Whether name is a bare spelling whose name:latest is listed and means the same model."""
        tagged = name + ":latest"
        return ":" not in name and tagged in found and self.resolve(name) == self.resolve(tagged)

    def _backend_models(self, name):
        """The backend's models, with what the configuration says of them over what the backend says."""
        try:
            infos = list(self.backends[name].models())
        except ShimError as err:  # one failing upstream must not fail the whole list
            log.warning("backend %s cannot list its models: %s", name, err.message)
            return []
        return [dataclasses.replace(i, **self.overrides[name, i.name]) if (name, i.name) in self.overrides else i
                for i in infos]

    def _serves(self, backend_name, model):
        try:
            return self.resolve(model)[0] is self.backends[backend_name]
        except (ModelNotFound, BackendUnavailable):
            return False

    def close(self):
        """Release every backend's resources."""
        for backend in self.backends.values():
            backend.close()


def _spellings(name):
    """The name as given, then with or without Ollama's implicit :latest tag."""
    yield name
    if name.endswith(":latest"):
        yield name[: -len(":latest")]
    elif ":" not in name:
        yield name + ":latest"
