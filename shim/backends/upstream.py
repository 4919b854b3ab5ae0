"""What both upstream backends share: endpoint pools with failover, cached model lists, error mapping."""
from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
import urllib.parse

from ..config import description
from ..generation import Backend
from ..errors import (BackendUnavailable, Cancelled, InvalidRequest, ModelNotFound, ServerBusy, ShimError, Unsupported,
                      UpstreamError)

log = logging.getLogger("shim.upstream")

DOWN_SECONDS = 10.0
"How long an endpoint that failed is passed over (unless every endpoint is down)."


class Endpoint:
    """One upstream base URL, with the requests now in flight there and when it last failed."""

    def __init__(self, url):
        self.url = url.rstrip("/")
        self.shown = without_userinfo(self.url)
        "The URL as logs may show it: without credentials."
        self.outstanding = 0
        self.down_until = 0.0

    @property
    def healthy(self):
        """Whether the endpoint has not failed recently."""
        return time.monotonic() >= self.down_until


class EndpointPool:
    """Spreads requests over endpoints (least outstanding first) and tries the next one when one fails."""

    def __init__(self, urls):
        if not urls:
            raise ValueError("an upstream backend needs at least one url")
        self.endpoints = [Endpoint(u) for u in urls]
        self._lock = threading.Lock()

    def ordered(self):
        """The endpoints to try, best first: healthy ones by fewest requests in flight, then the rest."""
        with self._lock:
            return sorted(self.endpoints, key=lambda e: (not e.healthy, e.outstanding))

    def use(self, endpoint):
        """Count a request as in flight at endpoint while the block (a with statement) runs."""
        return _InUse(self._lock, endpoint)

    def failed(self, endpoint, why):
        """Take endpoint out of rotation for a while."""
        log.warning("upstream %s failed: %s", endpoint.shown, why)
        endpoint.down_until = time.monotonic() + DOWN_SECONDS

    def succeeded(self, endpoint):
        """Put endpoint back into rotation."""
        endpoint.down_until = 0.0


class _InUse:
    """A request in flight at an endpoint, counted while a with block runs (a class: every request enters one)."""

    def __init__(self, lock, endpoint):
        self.lock, self.endpoint = lock, endpoint

    def __enter__(self):
        with self.lock:
            self.endpoint.outstanding += 1
        return self.endpoint

    def __exit__(self, *exc):
        with self.lock:
            self.endpoint.outstanding -= 1


def with_failover(pool, attempt):
    """attempt(endpoint) on each endpoint in turn until one does not fail with a retryable error."""
    last = None
    for endpoint in pool.ordered():
        try:
            result = attempt(endpoint)
        except Retryable as err:
            pool.failed(endpoint, err.error.message)
            last = err.error
            continue
        pool.succeeded(endpoint)
        return endpoint, result
    raise last


class Retryable(Exception):
    """Wraps an error that happened before anything reached the client, so another endpoint may be tried."""

    def __init__(self, error):
        super().__init__(error.message)
        self.error = error


class UpstreamBackend(Backend):
    """What both upstream backends share: a name, an endpoint pool, a cached model list, a readiness check."""

    def __init__(self, config):
        self.name = config.name
        self.scrub = Scrubber.for_backend(config)
        self.pool = EndpointPool(config.urls)
        self.described = description(config)
        "What the configuration says of every model of this backend, over what the upstream says."
        self._models = ModelListCache(self._described_models, name=config.name)

    def _fetch_models(self):
        raise NotImplementedError

    def _described_models(self):
        return [dataclasses.replace(i, **self.described) for i in self._fetch_models()]

    def models(self):
        """The upstream's model list (cached briefly)."""
        return self._models.get()

    @property
    def list_error(self):
        """Why the last attempt to list the upstream's models failed, or None if it did not."""
        return self._models.error

    def check(self):
        """Whether an endpoint answers now."""
        try:
            self._fetch_models()
            return True
        except ShimError:
            return False


class ModelListCache:
    """A backend's model list, fetched live and kept for `ttl` seconds; a failure lists nothing."""

    def __init__(self, fetch, ttl=10.0, name="upstream"):
        self.fetch, self.ttl, self.name = fetch, ttl, name
        self._value, self._at = [], float("-inf")
        self.error = None

    def get(self):
        """The cached list, refreshed when stale."""
        if time.monotonic() - self._at > self.ttl:
            try:
                self._value, self.error = list(self.fetch()), None
            except ShimError as err:
                log.warning("cannot list the models of %s: %s", self.name, err.message)
                self._value, self.error = [], err
            self._at = time.monotonic()
        return self._value


def redirect_text(location):
    """What a redirect answer says: no upstream client follows one, since the configured URL should be where it points."""
    return f"a redirect to {location or '(no location)'}; set the backend's url to it"


def error_for_status(status, message, backend, model=None):
    """The shim error an upstream HTTP status stands for; 5xx and 429 are retryable on another endpoint."""
    text = f"{backend}: {message}"
    if status < 100:  # the ollama client's code for an error that arrived inside a stream
        return UpstreamError(text)
    lowered = message.lower()
    if status == 404 and model and ("not found" in lowered or "does not exist" in lowered
                                    or "model_not_found" in lowered):
        return ModelNotFound(model)
    if status in (400, 422):
        return InvalidRequest(text)
    if status == 413:
        return InvalidRequest(text, status=413)
    if status == 429:
        return Retryable(ServerBusy(text, headers={"Retry-After": "1"}))
    if status >= 500:
        return Retryable(UpstreamError(f"{backend} answered {status}: {message}"))
    if status in (401, 403):
        return UpstreamError(f"{backend} refused shim's credentials ({status}): {message}")
    return UpstreamError(f"{backend} answered {status}: {message}")


REDACTED = "[redacted]"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@]+@")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|token|digest)(\s+)[^\s\"',;}]+")
_KEY_FIELD = re.compile(r"(?i)((?:proxy-)?authorization|x-api-key|api[-_]?key|access[-_]token)(\"?'?\s*[:=]\s*[\"']?)"
                        r"(?!bearer\b|basic\b|token\b|digest\b)[^\s\"',;}]+")
_SK_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{12,}")
_SECRET_HEADER = re.compile(r"(?i)auth|key|token|secret|cookie|session|password")


class Scrubber:
    """Takes credentials out of upstream-originated text: configured secrets, URL userinfo, auth header values."""

    def __init__(self, secrets=()):
        # Longest first, so a secret containing another is replaced whole; very short ones would redact prose.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    @classmethod
    def for_backend(cls, config):
        """A scrubber for everything secret in a backend's configuration."""
        secrets = [config.api_key]
        secrets += [v for k, v in config.headers.items() if _SECRET_HEADER.search(k)]
        for url in config.urls:
            parts = urllib.parse.urlsplit(url)
            secrets += [parts.password, urllib.parse.unquote(parts.password or "") or None]
            if parts.username and parts.password is not None:
                secrets.append(f"{parts.username}:{parts.password}")
        return cls(secrets)

    def __call__(self, text):
        """text without any credential in it."""
        text = str(text)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        text = _USERINFO.sub(lambda m: m.group(1) + REDACTED + "@", text)
        text = _AUTH_SCHEME.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
        text = _KEY_FIELD.sub(lambda m: m.group(1) + m.group(2) + REDACTED, text)
        return _SK_KEY.sub(REDACTED, text)


def without_userinfo(url):
    """url with any user:password@ taken out."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def unreachable(backend, err):
    """The error for an endpoint that cannot be connected to (retryable)."""
    return Retryable(BackendUnavailable(f"{backend} is unreachable: {type(err).__name__}"))


def client_left(backend):
    """The error for a request whose client went away while the upstream worked on its answer."""
    return Cancelled(f"the client went away while {backend} was working on the answer")


def refuse(request, backend, *fields):
    """Refuse the first of fields the request sets that this backend cannot carry."""
    checks = {
        "logit_bias": bool(request.sampling.logit_bias),
        "context": bool(request.context),
        "suffix": bool(request.suffix),
        "think": request.think is not None and request.think.enabled,
        "images": bool(request.images) or any(m.images for m in request.messages or ()),
    }
    for name in fields:
        if checks[name]:
            raise Unsupported(f"'{name}' cannot be carried to the {backend} backend", param=name)
