"""llama.cpp sampler chains and logprob readings for one sequence."""
from __future__ import annotations

import ctypes
import json
import math

import numpy as np

from .. import generation as g
from ..errors import Unsupported

DEFAULTS = dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, typical_p=1.0, repeat_penalty=1.0,
                repeat_last_n=64, presence_penalty=0.0, frequency_penalty=0.0)
RANDOM_SEED = 0xFFFFFFFF


def _value(sampling, name):
    value = getattr(sampling, name)
    return DEFAULTS[name] if value is None else value


def build(engine, sampling, response_format, index=0, schema=None, lazy_schema=None):
    """A Sampler for one sequence: bias, penalties, grammar, then greedy or the random pipeline.

    schema constrains the whole output; lazy_schema only what follows the output's first "{".
    """
    return Sampler(_chain(engine, sampling, response_format, index, schema, lazy_schema))


def _chain(engine, sampling, response_format, index, schema, lazy_schema):
    import llama_cpp
    from llama_cpp._internals import LlamaSampler

    grammar = _grammar_sampler(engine.vocab, response_format, schema) if lazy_schema is None else \
        _lazy_grammar_sampler(engine.vocab, lazy_schema)
    chain = LlamaSampler()
    n_vocab = engine.n_vocab
    if sampling.logit_bias:
        bad = [t for t in sampling.logit_bias if not 0 <= t < n_vocab]
        if bad:
            chain.close()
            raise Unsupported(f"'logit_bias' names token {bad[0]}, outside the vocabulary (0-{n_vocab - 1})",
                              param="logit_bias")
        chain.add_logit_bias(n_vocab, dict(sampling.logit_bias))
    last_n = _value(sampling, "repeat_last_n")
    chain.add_penalties(n_vocab, engine.n_ctx if last_n < 0 else last_n, _value(sampling, "repeat_penalty"),
                        _value(sampling, "frequency_penalty"), _value(sampling, "presence_penalty"))
    if grammar is not None:
        llama_cpp.llama_sampler_chain_add(chain.sampler, grammar)
    temperature = _value(sampling, "temperature")
    if temperature <= 0:
        chain.add_greedy()
        return chain
    seed = RANDOM_SEED if sampling.seed is None else (sampling.seed + index) % RANDOM_SEED
    top_k = _value(sampling, "top_k")
    if top_k > 0:
        chain.add_top_k(top_k)
    chain.add_typical(_value(sampling, "typical_p"), 1)
    chain.add_top_p(_value(sampling, "top_p"), 1)
    chain.add_min_p(_value(sampling, "min_p"), 1)
    chain.add_temp(temperature)
    chain.add_dist(seed)
    return chain


def _grammar_sampler(vocab, response_format, schema):
    """A grammar sampler for a JSON constraint, or None; an unusable schema is the client's error."""
    if schema is None and response_format is None:
        return None
    import llama_cpp
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    if schema is None and response_format.kind == "json_schema":
        schema = response_format.schema
    try:
        grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False) if schema is not None \
            else LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    except Exception as err:  # the converter raises bare Exceptions/ValueErrors for what it cannot express
        raise Unsupported(f"the JSON schema cannot be turned into a grammar: {err}", param="response_format") from err
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar._grammar.encode(),
                                                   grammar._root.encode())
    if not sampler:
        raise Unsupported("the JSON schema cannot be turned into a grammar", param="response_format")
    return sampler


# llama.cpp full-matches this against the text generated so far; the group marks where the grammar takes over.
LAZY_TRIGGER = r"\s*(\{[\s\S]*)"


def _lazy_grammar_sampler(vocab, schema):
    """A grammar that waits until the output opens a JSON object, then holds it to the schema."""
    import ctypes

    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar

    grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
    patterns = (ctypes.c_char_p * 1)(LAZY_TRIGGER.encode())
    sampler = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
        vocab, grammar._grammar.encode(), grammar._root.encode(), patterns, 1,
        (llama_cpp.llama_token * 0)(), 0)
    if not sampler:
        raise Unsupported("the tools' parameter schemas cannot be turned into a grammar", param="tools")
    return sampler


class Sampler:
    """One sequence's sampler chain: the next token from a batch row's logits, or from a kept copy of them."""

    def __init__(self, chain):
        self.chain = chain

    def sample(self, ctx, row):
        """Sample and accept the next token from the logits of batch row `row`."""
        return self.chain.sample(ctx, row)

    def sample_logits(self, logits):
        """Sample and accept the next token from an array of logits, as llama_sampler_sample does from a row."""
        import llama_cpp

        candidates = np.empty(len(logits), dtype=_TOKEN_DATA)
        candidates["id"], candidates["logit"], candidates["p"] = np.arange(len(logits)), logits, 0.0
        array = llama_cpp.llama_token_data_array(
            candidates.ctypes.data_as(llama_cpp.llama_token_data_p), len(logits), -1, False)
        llama_cpp.llama_sampler_apply(self.chain.sampler, ctypes.byref(array))
        token = int(candidates["id"][array.selected])
        llama_cpp.llama_sampler_accept(self.chain.sampler, token)
        return token

    def close(self):
        """Free the chain."""
        self.chain.close()


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
"llama_token_data's layout."


class LogprobReader:
    """Reads the log probabilities of the distribution the last token was sampled from."""

    def __init__(self, engine, top):
        self.engine, self.top = engine, top

    def read(self, token, logits):
        """The TokenLogprob of token, sampled from these logits, with the `top` most likely alternatives."""
        shifted = logits - logits.max()
        logprobs = shifted - math.log(float(np.exp(shifted).sum()))
        top = ()
        if self.top:
            best = np.argpartition(-logprobs, self.top)[: self.top]
            best = best[np.argsort(-logprobs[best])]
            top = tuple(self._one(int(t), logprobs) for t in best)
        return self._one(token, logprobs, top)

    def _piece(self, token):
        raw = self.engine.piece(token, special=True)
        return raw.decode("utf-8", errors="replace"), tuple(raw)

    def _one(self, token, logprobs, top=()):
        text, raw = self._piece(token)
        return g.TokenLogprob(text, float(logprobs[token]), raw, top)
