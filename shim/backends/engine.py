"""A loaded GGUF model with one llama.cpp context that holds several sequences, each in its own KV cache."""
from __future__ import annotations

import numpy as np

from ..errors import BackendUnavailable


class Engine:
    """The model, its tokenizer and a context of `slots` sequences of `n_ctx` tokens each, decoded in one batch."""

    def __init__(self, path, n_ctx, slots, n_threads, batch_size):
        try:
            import llama_cpp
            # The high-level Llama brings the tokenizer, the metadata and the chat template; its own one-sequence
            # context is closed at once, because decoding happens in a context made for several sequences.
            self.llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_batch=32, n_threads=n_threads,
                                       n_threads_batch=n_threads, verbose=False)
        except (ImportError, ValueError, OSError) as err:
            raise BackendUnavailable(f"cannot load model {path}: {err}") from err
        self.llm._ctx.close()
        self.slots, self.batch_size, self.n_threads = slots, batch_size, n_threads
        self.vocab = self.llm._model.vocab
        self.n_vocab = self.llm.n_vocab()
        self.ctx = self.memory = None
        self._batch = llama_cpp.llama_batch_init(batch_size, 0, 1)
        self.resize(n_ctx)

    def resize(self, n_ctx):
        """A fresh context whose sequences hold n_ctx tokens each (every KV cache is emptied)."""
        previous = self.n_ctx if self.ctx is not None else None
        self._close_context()
        try:
            self._make_context(n_ctx)
        except BackendUnavailable:
            if previous is not None:
                self._make_context(previous)
            raise

    def _make_context(self, n_ctx):
        import llama_cpp
        from llama_cpp import _internals
        params = self.llm.context_params
        params.n_ctx = n_ctx * self.slots
        params.n_seq_max = self.slots
        # Each sequence gets its own KV buffer: attention then only reads that sequence's cells, and a sequence's
        # numbers do not depend on what else is in the batch, so greedy output is the same alone or batched.
        params.kv_unified = False
        # With flash attention a short prompt gives the same logits however it is split into batches (without it,
        # token by token differs from whole by up to 0.77 in a logit); a longer prompt still depends on its split,
        # which the scheduler keeps the same on every path (chunks aligned to absolute positions).
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.n_batch = params.n_ubatch = self.batch_size
        params.n_threads = params.n_threads_batch = self.n_threads
        try:
            self.ctx = _internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
        except ValueError as err:
            raise BackendUnavailable(f"cannot make a context of {self.slots} x {n_ctx} tokens: {err}") from err
        self.memory = llama_cpp.llama_get_memory(self.ctx.ctx)
        self.n_ctx = n_ctx

    def _close_context(self):
        if self.ctx is not None:
            self.ctx.close()
        self.ctx = self.memory = None

    def add(self, token, position, seq_id, logits):
        """Put one token of one sequence into the next batch; returns its row (where its logits will be)."""
        batch = self._batch
        row = batch.n_tokens
        batch.token[row], batch.pos[row], batch.n_seq_id[row] = token, position, 1
        batch.seq_id[row][0], batch.logits[row] = seq_id, logits
        batch.n_tokens = row + 1
        return row

    def decode(self):
        """Evaluate the batch built with add(); returns llama_decode's status (0: done)."""
        import llama_cpp
        try:
            return llama_cpp.llama_decode(self.ctx.ctx, self._batch) if self.ctx is not None else -1
        finally:
            self._batch.n_tokens = 0

    def logits(self, row):
        """The logits of a batch row: an array over llama.cpp's buffer, valid until the next decode."""
        return np.ctypeslib.as_array(self.ctx.get_logits_ith(row), shape=(self.n_vocab,))

    def forget(self, seq_id, start=0):
        """Drop a sequence's cache from position start on (all of it where llama.cpp cannot cut there).

        Returns how many tokens of the cache are left.
        """
        import llama_cpp
        if self.memory is None:
            return 0
        if llama_cpp.llama_memory_seq_rm(self.memory, seq_id, start, -1):
            return start
        llama_cpp.llama_memory_seq_rm(self.memory, seq_id, -1, -1)
        return 0

    def copy(self, source, target):
        """Make target's cache a copy of source's (llama.cpp copies the whole buffer before the next decode)."""
        import llama_cpp
        if self.memory is not None:
            llama_cpp.llama_memory_seq_rm(self.memory, target, -1, -1)
            llama_cpp.llama_memory_seq_cp(self.memory, source, target, -1, -1)

    def is_end(self, token):
        """Whether the token ends generation (end of sequence, end of turn)."""
        import llama_cpp
        return llama_cpp.llama_vocab_is_eog(self.vocab, token)

    def piece(self, token, special=False):
        """The bytes of one token."""
        return self.llm.detokenize([token], special=special)

    def close(self):
        """Free the context, the batch and the model."""
        import llama_cpp
        self._close_context()
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        self.llm.close()

