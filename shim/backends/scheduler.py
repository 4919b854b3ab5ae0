"""Continuous batching: one decode loop per model, on its own OS thread, over several sequence slots.

Each step evaluates the next token of every sequence that is generating, in one batch, and a chunk of the prompts
of those that are starting, each chunk in a batch of its own. Requests join between steps and leave the moment they
end, freeing their slot.

Greedy output must not depend on whether a prompt came from the cache or was batched with others, but ggml's numbers
depend on which tokens are evaluated together. So every prompt is evaluated in the same token groups, whatever else
runs: chunks ending at its `chunk_ends`, the multiples of `prefill_chunk` and, in a prompt that starts with the
model's preamble (what its template writes before every lone user message), that preamble's end. A cached prefix is
reused only up to one of those ends, and only as far as it was itself evaluated in whole chunks of a prompt. Two
prompts sharing the whole preamble both start with it, so their ends agree; sharing less, only multiples of
`prefill_chunk` below the preamble's end can be reused, and both cut there alike. The one exception is an exact
repeat: the logits of a prompt's last position are kept with its slot's cache, every first token is sampled from
that copy, and the same prompt again samples from it without evaluating anything.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from _queue import Empty, SimpleQueue  # the C queue: gevent leaves it alone, so get() blocks the OS thread

from .. import generation as g
from ..errors import BackendUnavailable, ContextLengthExceeded, ShimError
from ..threads import Courier, start_thread
from . import sampling
from .output import ChoiceOutput

log = logging.getLogger("shim.llamacpp")

# Copying another slot's cache copies its whole buffer (SmolLM2, 4096-token slots: about 15 ms, where loading
# 16 prompt tokens takes about 70 ms); it is done when it saves more than this many prompt tokens.
COPY_WORTH = 16
_STOP = object()


class Job:
    """One request on its way through the scheduler: its prompt, one sequence per choice, where events go."""

    def __init__(self, request, tokens, n_ctx, samplers, cancel, channel, load_ns=0, thinking=None):
        self.request, self.tokens, self.n_ctx = request, tokens, n_ctx
        self.thinking = thinking
        "None for a model that does not think; else whether the prompt opened its <think> block."
        self.cancel, self.channel, self.load_ns = cancel, channel, load_ns
        self.courier = None
        "Set by the scheduler: what carries the job's events to its channel."
        self.started = time.perf_counter_ns()
        self.sequences = [Sequence(self, index, sampler) for index, sampler in enumerate(samplers)]
        self.open = len(self.sequences)
        self.failed = False

    def stopped(self):
        """Whether the client went away or the job failed."""
        return self.failed or self.cancel.is_set()

    def ended(self, sequence):
        """One sequence is over; the channel ends with the last."""
        sequence.sampler.close()
        self.open -= 1
        if self.open == 0 and not self.failed:
            self.courier.end(self.channel)

    def fail(self, error):
        """End the job with an error the client sees."""
        if not self.failed:
            self.failed = True
            self.courier.fail(self.channel, error)

    def post(self, event):
        """Send one event to the client."""
        self.courier.put(self.channel, event)


@dataclass(eq=False)
class Sequence:
    """One choice of a job: its sampler, its output, and where it stands."""

    job: Job
    index: int
    sampler: object
    slot: Slot | None = None
    todo: list = field(default_factory=list)
    "Tokens to evaluate next: what is left of the prompt, then the token just sampled."
    prefilling: bool = True
    generated: list = field(default_factory=list)
    max_tokens: int = 0
    window: int = 0
    "The context window the sequence is held to (its request's num_ctx, else the context's)."
    out: ChoiceOutput | None = None
    logprobs: object = None
    admitted: int = 0
    prompt_ns: int = 0
    cached: int = 0
    "Prompt tokens found in the KV cache."

    def finish(self, reason):
        """Emit the choice's last events."""
        job, now = self.job, time.perf_counter_ns()
        reason = self.out.close(reason)
        eval_ns = now - self.admitted - self.prompt_ns
        usage = g.Usage(len(job.tokens), len(self.generated), self.cached, self.out.reasoning_tokens)
        job.post(g.Finish(reason, self.index, usage,
                                 g.Timings(now - job.started, job.load_ns, self.prompt_ns, eval_ns),
                                 tuple(job.tokens) + tuple(self.generated), self.out.stop_sequence))


@dataclass(eq=False)
class Slot:
    """One sequence id of the context and the tokens its KV cache holds (kept after use, for prefix reuse)."""

    seq_id: int
    cached: list = field(default_factory=list)
    prompt: int = 0
    "The length of the prompt that filled the cache: past its last whole chunk, the cache is not reusable."
    logits: object = None
    "The logits of that prompt's last position, once evaluated: its first token is sampled from them."
    sequence: Sequence | None = None
    last_used: int = 0


class Scheduler:
    """Decodes the sequences of many requests together, on one OS thread that owns the model's context."""

    def __init__(self, engine, prefill_chunk, name, preamble=()):
        self.engine, self.prefill_chunk, self.name = engine, prefill_chunk, name
        self.preamble = tuple(preamble)
        "The tokens the model's template writes before every lone user message: a chunk ends where they do."
        self.slots = [Slot(i) for i in range(engine.slots)]
        self.waiting = deque()
        self.inbox = SimpleQueue()
        # The step's events leave together, so the worker's event loop wakes once per step, not once per token:
        # each wake-up can take a core from llama.cpp's threads in the middle of a decode.
        self.courier = Courier()
        self.steps = 0
        self._stopping = False
        self.join = start_thread(self._loop)

    def submit(self, job):
        """Queue a job; its events arrive on its channel."""
        job.courier = self.courier
        self.inbox.put(job)

    def stop(self):
        """Finish what was submitted, then end the loop; returns once it has."""
        self.inbox.put(_STOP)
        self.join()

    def busy(self):
        """Whether any sequence is running or waiting."""
        return bool(self.waiting or not self.inbox.empty() or self._running())

    def _running(self):
        return [s for s in self.slots if s.sequence is not None]

    def _loop(self):
        while True:
            idle = not self.waiting and not self._running()
            if idle and self._stopping:
                return
            self._receive(block=idle)
            try:
                self._step()
            except Exception as err:  # a failure ends the requests in flight, never the loop
                log.exception("decode step failed: model=%s", self.name)
                self._fail_running(BackendUnavailable(f"the local runtime failed: {err}"))
            self.courier.flush()

    def _receive(self, block):
        while True:
            try:
                item = self.inbox.get(block=block)
            except Empty:
                return
            block = False
            if item is _STOP:
                self._stopping = True
            else:
                self.waiting.extend(item.sequences)

    def _step(self):
        self._drop_stopped()
        self._admit()
        for batch in self._plan():
            self._decode(batch)

    def _decode(self, plan):
        """Evaluate a batch in one llama_decode; a batch llama.cpp refuses is halved until only its culprit fails.

        A bad token (or any failure tied to one sequence) thus ends that sequence alone: the others' halves decode.
        """
        rows = [self._add(sequence, chunk, logits) for sequence, chunk, logits in plan]
        status = self.engine.decode()
        self.steps += 1
        if status == 0:
            for (sequence, chunk, _), row in zip(plan, rows):
                sequence.slot.cached.extend(chunk)
                del sequence.todo[:len(chunk)]
                if row is not None and sequence.prefilling:  # the prompt's end: its logits stay with the cache
                    sequence.slot.logits = self.engine.logits(row).copy()
                    self._next_token(sequence, None)
                elif row is not None:
                    self._next_token(sequence, row)
            return
        lost = [sequence for sequence, _, _ in plan if not self._rewind(sequence)]
        if len(plan) > 1 and not lost:
            half = len(plan) // 2
            self._decode(plan[:half])
            self._decode(plan[half:])
            return
        culprits = lost or [plan[0][0]]
        for sequence in culprits:
            log.error("decode failed: model=%s choice=%d status=%d", self.name, sequence.index, status)
            self._fail(sequence, BackendUnavailable(f"the local runtime failed: llama_decode returned {status}"))
        rest = [entry for entry in plan if entry[0] not in culprits]
        if rest:
            self._decode(rest)

    def _rewind(self, sequence):
        """Drop what a failed decode may have left in a sequence's cache; False if its cache could not be kept."""
        slot = sequence.slot
        return self.engine.forget(slot.seq_id, len(slot.cached)) == len(slot.cached)

    # ------------------------------------------------------------------ joining and leaving

    def _drop_stopped(self):
        for sequence in [s for s in self.waiting if s.job.stopped()]:
            self.waiting.remove(sequence)
            sequence.job.ended(sequence)
        for slot in self._running():
            if slot.sequence.job.stopped():
                sequence = slot.sequence
                if sequence.job.cancel.is_set():
                    log.info("generation cancelled: model=%s choice=%d generated=%d tokens", self.name,
                             sequence.index, len(sequence.generated))
                self._leave(sequence)

    def _leave(self, sequence):
        slot = sequence.slot
        slot.sequence, slot.last_used = None, self.steps
        sequence.job.ended(sequence)

    def _fail_running(self, error):
        for slot in self._running():
            self._fail(slot.sequence, error)

    def _fail(self, sequence, error):
        """End a running sequence's job with an error, and empty its slot's cache."""
        slot = sequence.slot
        sequence.job.fail(error)
        self._leave(sequence)
        slot.cached, slot.prompt, slot.logits = [], 0, None
        self.engine.forget(slot.seq_id)

    def _admit(self):
        while self.waiting:
            free = [s for s in self.slots if s.sequence is None]
            sequence = self.waiting[0]
            if not free or self._worth_waiting(sequence.job.tokens):
                return
            job = sequence.job
            # A smaller window runs inside the loaded one (held to its own size); only a larger one needs a new
            # context, and the sequences in the old one finish first.
            if job.n_ctx is not None and job.n_ctx > self.engine.n_ctx and self._running():
                return
            self.waiting.popleft()
            try:
                if job.n_ctx is not None and job.n_ctx > self.engine.n_ctx:
                    self._resize(job.n_ctx)
                self._place(sequence, free)
            except ShimError as err:
                job.fail(err)
                job.ended(sequence)

    def _resize(self, n_ctx):
        for slot in self.slots:
            slot.cached, slot.prompt, slot.logits = [], 0, None
        self.engine.resize(n_ctx)

    def _worth_waiting(self, prompt):
        """Whether a running sequence is loading more of this prompt than any cache holds now.

        Then the prompt waits until that load is done and copies it (a few steps at most), instead of loading
        the same tokens a second time: what identical prompts arriving together, and the choices of n > 1, do.
        """
        cached = max(self._reusable(s.cached, s.prompt, prompt, s.logits is not None) for s in self.slots)
        loading = [(s.cached + s.sequence.todo, s.prompt) for s in self._running() if s.sequence.prefilling]
        return any(self._reusable(tokens, exact, prompt, True) > max(cached, COPY_WORTH) for tokens, exact in loading)

    def _reusable(self, cached, exact, prompt, kept=False):
        """How many tokens of a cache a prompt may reuse.

        exact: how many were evaluated as a prompt's chunks; kept: whether that prompt's last logits are kept.
        """
        shared = _common(cached, prompt)
        if kept and shared >= len(prompt) == exact:  # the same prompt again: its first token needs no evaluation
            return shared
        # Else never the prompt's last token, evaluated again so that its logits are fresh; and only up to a chunk
        # end, so that the rest loads in the same chunks as the whole prompt would.
        shared = min(shared, exact, len(prompt) - 1)
        return max((end for end in self._ends(prompt) if end <= shared), default=0)

    def _ends(self, prompt):
        return chunk_ends(prompt, self.preamble, self.prefill_chunk)

    def _place(self, sequence, free):
        job, engine = sequence.job, self.engine
        prompt = job.tokens
        sequence.window = job.n_ctx or engine.n_ctx
        sequence.max_tokens = fits(len(prompt), job.request, sequence.window)
        slot = self._slot_for(prompt, free)
        reusable = lambda s: self._reusable(s.cached, s.prompt, prompt, s.logits is not None)  # noqa: E731
        reuse, source, copied = reusable(slot), max(self.slots, key=reusable), None
        if reusable(source) > reuse + COPY_WORTH:
            engine.copy(source.seq_id, slot.seq_id)
            slot.cached, slot.prompt, slot.logits = list(source.cached), source.prompt, source.logits
            copied, reuse = source.seq_id, reusable(slot)
        reuse = engine.forget(slot.seq_id, reuse)
        del slot.cached[reuse:]
        if reuse < len(prompt):  # the kept logits belong to the prompt the cache held, not to this one
            slot.logits = None
        slot.prompt = len(prompt)
        sequence.cached, sequence.todo = reuse, list(prompt[reuse:])
        log.debug("placed: model=%s choice=%d slot=%d prompt=%d cached=%d copied_from=%s", self.name,
                  sequence.index, slot.seq_id, len(prompt), reuse, copied)
        sequence.slot, slot.sequence = slot, sequence
        sequence.out = ChoiceOutput(job.post, sequence.index, job.request, job.thinking)
        if job.request.logprobs:
            sequence.logprobs = sampling.LogprobReader(engine, job.request.top_logprobs)
        sequence.admitted = time.perf_counter_ns()
        if not sequence.todo:
            self._next_token(sequence, None)

    @staticmethod
    def _slot_for(prompt, free):
        """The free slot to use: the one whose cache the prompt continues, else the least recently used.

        Taking a slot overwrites what its cache holds past the shared prefix; rather than lose more than a copy
        costs, the prompt goes to the oldest slot, and _place copies the shared prefix over.
        """
        best = max(free, key=lambda s: (_common(s.cached, prompt), -s.last_used))
        if len(best.cached) - _common(best.cached, prompt) <= COPY_WORTH:
            return best
        return min(free, key=lambda s: s.last_used)

    # ------------------------------------------------------------------ one step

    def _plan(self):
        """The step's batches, each a list of (sequence, tokens to evaluate, whether the last one's logits are wanted).

        One batch holds the next token of every generating sequence: with a KV buffer per sequence and one token each,
        a sequence's numbers are the same in it as alone. Each prompt chunk gets a batch of its own: llama.cpp splits a
        batch into equal shares of consecutive sequences, which would cut a chunk beside another sequence's token.
        """
        running = sorted(self._running(), key=lambda s: s.sequence.admitted)
        generating = [(s.sequence, s.sequence.todo[:1], True) for s in running if not s.sequence.prefilling]
        loading = [s.sequence for s in running if s.sequence.prefilling]
        # Beside generating sequences one chunk loads per step, so that a long prompt never stalls them.
        if generating:
            loading = loading[:1]
        return ([generating] if generating else []) + [[self._chunk(sequence)] for sequence in loading]

    def _chunk(self, sequence):
        """A loading sequence's next chunk: its prompt up to the next of its chunk ends."""
        start = len(sequence.slot.cached)
        end = min(end for end in self._ends(sequence.job.tokens) if end > start)
        chunk = sequence.todo[:end - start]
        return sequence, chunk, len(chunk) == len(sequence.todo)

    def _add(self, sequence, chunk, logits):
        """Put a sequence's tokens into the batch; returns the logits row of the last, or None."""
        slot, row = sequence.slot, None
        for offset, token in enumerate(chunk):
            row = self.engine.add(token, len(slot.cached) + offset, slot.seq_id, logits and offset == len(chunk) - 1)
        return row if logits else None

    def _next_token(self, sequence, row):
        """Sample a sequence's next token, hand it out, and see whether the choice ends.

        row: the batch row of its logits; None for the first token, sampled from the logits its slot keeps.
        """
        if sequence.prefilling:
            sequence.prefilling = False
            sequence.prompt_ns = time.perf_counter_ns() - sequence.admitted
        try:
            # A choice of a failed job leaves at once: one admitted from the cache would be decoded with no token.
            reason = "failed" if sequence.job.failed else self._sample(sequence, row)
        except Exception as err:  # one request's failure (a sampler, a tool-call parse) ends only that request
            log.exception("sampling failed: model=%s", self.name)
            sequence.job.fail(BackendUnavailable(f"the local runtime failed: {err}"))
            reason = "failed"
        if reason is not None:
            if not sequence.job.stopped():
                sequence.finish(reason)
            self._leave(sequence)

    def _sample(self, sequence, row):
        """The next token into the sequence's output; returns a finish reason once the choice is over."""
        if len(sequence.generated) >= sequence.max_tokens:
            return "length"
        # The first token, cold or cached alike, comes from the logits kept with the prompt; the others from a row.
        if row is None:
            token = sequence.sampler.sample_logits(sequence.slot.logits)
        else:
            token = sequence.sampler.sample(self.engine.ctx, row)
        if self.engine.is_end(token):
            return "stop"
        sequence.generated.append(token)
        logprob = None
        if sequence.logprobs:
            logprob = sequence.logprobs.read(token, sequence.slot.logits if row is None else self.engine.logits(row))
        if sequence.out.add(self.engine.piece(token), logprob):
            return "stop"
        if len(sequence.generated) >= sequence.max_tokens or len(sequence.slot.cached) + 1 >= sequence.window:
            return "length"
        sequence.todo = [token]
        return None


def fits(n_prompt, request, n_ctx):
    """The tokens a request may generate in an n_ctx window, or ContextLengthExceeded naming what does not fit.

    A request that may be truncated (Ollama's) is given what room the window has rather than refused.
    """
    requested = request.max_tokens
    if n_prompt >= n_ctx:
        raise ContextLengthExceeded(
            f"the prompt is {n_prompt} tokens, more than the model's context window of {n_ctx} tokens",
            param="messages" if request.messages is not None else "prompt")
    if requested is not None and n_prompt + requested > n_ctx:
        if request.truncate:  # Ollama's manner: the answer runs until the window is full
            return n_ctx - n_prompt
        raise ContextLengthExceeded(
            f"this model's maximum context length is {n_ctx} tokens; you requested {n_prompt + requested} "
            f"tokens ({n_prompt} in the prompt, {requested} for the completion)", param="max_tokens")
    return requested if requested is not None else n_ctx - n_prompt


def chunk_ends(prompt, preamble, size):
    """Where a prompt's chunks end: at each multiple of size, at the preamble's end if it starts the prompt, at its end."""
    ends = set(range(size, len(prompt), size)) | {len(prompt)}
    if preamble and _common(prompt, preamble) == len(preamble):
        ends.add(len(preamble))
    return sorted(ends)


def _common(a, b):
    """The length of the common prefix of two token lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
