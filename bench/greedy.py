"""Repeatable greedy output: 200 greedy requests over 20 prompts, cold, cached and batched, all identical per prompt.

Runs the local runtime in process (LocalModel: the real tokenizer, samplers, Engine and Scheduler, no HTTP), once
with the scheduler as it is and once with the scheduler of a baseline revision (git show REV:...), in turn, on the
same workload, so the two are measured side by side.
"""
import importlib.util
import os
import random
import subprocess
import sys
import threading
import time

from shim import generation as g
from shim.backends import llamacpp
from shim.config import ModelConfig
from shim.threads import Channel

from .common import median

BASELINE = "c8d14d4"
"The last revision whose scheduler loaded a lone prompt whole and reused a cached prefix at any position."
SYSTEM = ("You are a careful assistant for a city library. Answer briefly and precisely, in plain English. "
          "The library opens at nine and closes at six, except on Sundays, when it opens at noon. Members may "
          "borrow up to eight books for three weeks; films for one week. Late returns cost ten cents a day. ")
QUESTIONS = ("What time does the library open on Sunday?", "How many books may a member borrow?",
             "How long may I keep a film?", "What does a late return cost?", "Write a JSON object with a name.",
             "Give me three tips for finding a book.", "Summarise the rules in one sentence.",
             "Can I borrow ten books at once? Explain.", "What should I do if I lose a book?",
             "Describe the library to a child.", "Write a short poem about reading.",
             "List the opening hours as a table.", "Is the library open at seven in the evening?",
             "How much do I owe for a book five days late?", "Recommend a book about the sea.",
             "Explain the difference between books and films here.", "Write a haiku about a library.",
             "What is a good question to ask a librarian?", "Translate 'library' into French and Spanish.",
             "Tell me a fun fact about libraries.")
MAX_TOKENS = 16


def load_baseline(rev):
    """The Scheduler class of another revision, loaded beside the current one."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(["git", "-C", root, "show", f"{rev}:shim/backends/scheduler.py"], check=True,
                            capture_output=True, text=True).stdout
    name = "shim.backends._baseline_scheduler"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "shim.backends"
    sys.modules[name] = module
    exec(compile(source, f"{rev}:scheduler.py", "exec"), module.__dict__)  # noqa: S102 - our own file at REV
    return module.Scheduler


def _request(index):
    messages = (g.Message("system", SYSTEM), g.Message("user", QUESTIONS[index]))
    return g.GenerationRequest(model="smollm2:135m", messages=messages, max_tokens=MAX_TOKENS,
                               sampling=g.Sampling(temperature=0.0))


class Runner:
    """One model in process, driven as the server would drive it."""

    def __init__(self, scheduler_class, prefill_chunk):
        config = ModelConfig(name="smollm2:135m", path=llamacpp.embedded_model_path())
        self.model = llamacpp.LocalModel(config, os.cpu_count() or 1, 4, prefill_chunk)
        self.model.load()
        if scheduler_class is not None:
            self.model.scheduler.stop()
            self.model.scheduler = scheduler_class(self.model.engine, prefill_chunk, config.name)
        self.outputs = {i: [] for i in range(len(QUESTIONS))}
        self.generated = self.prompt_tokens = self.cached = 0

    def start(self, index):
        """Submit one request; returns a function that waits for its end, and an event set at its first token."""
        channel, first, done = Channel(), threading.Event(), []
        self.model.submit(_request(index), g.Cancel(), channel)

        def read():
            for event in channel:
                first.set()
                if isinstance(event, g.Finish):
                    done.append(event)
            first.set()
        reader = threading.Thread(target=read)
        reader.start()

        def wait():
            reader.join()
            finish = done[0]
            self.outputs[index].append(tuple(finish.context[finish.usage.prompt_tokens:]))
            self.generated += finish.usage.completion_tokens
            self.prompt_tokens += finish.usage.prompt_tokens
            self.cached += finish.usage.cached_tokens
        return wait, first

    def run(self, index):
        """One request alone."""
        self.start(index)[0]()

    def forget_all(self):
        """Empty every slot's cache (between requests, when the decode loop is idle)."""
        for slot in self.model.scheduler.slots:
            slot.cached = []
            self.model.engine.forget(slot.seq_id)

    def close(self):
        self.model.unload()


def workload(runner, seed=1):
    """200 requests, 10 per prompt: cold, after another prompt, repeated, 3 times in bursts, 4 times staggered."""
    n, rng = len(QUESTIONS), random.Random(seed)
    started = time.perf_counter()
    for i in range(n):  # cold: no cache holds any of it
        runner.forget_all()
        runner.run(i)
    cold = time.perf_counter() - started
    for i in range(n):  # after another prompt (its system prompt cached), then the same again (all of it cached)
        runner.run(i)
        runner.run(i)
    for _ in range(3):  # bursts of 4 distinct prompts at once
        order = rng.sample(range(n), n)
        for group in range(0, n, 4):
            waits = [runner.start(i)[0] for i in order[group:group + 4]]
            for wait in waits:
                wait()
    for _ in range(4):  # staggered: each joins when the one before has its first token, so it loads beside it
        order = rng.sample(range(n), n)
        waits = []
        for i in order:
            wait, first = runner.start(i)
            first.wait()
            waits.append(wait)
            if len(waits) == 4:
                waits.pop(0)()
        for wait in waits:
            wait()
    return time.perf_counter() - started, cold


def _measure(scheduler_class, prefill_chunk):
    runner = Runner(scheduler_class, prefill_chunk)
    try:
        seconds, cold = workload(runner)
    finally:
        runner.close()
    outputs = runner.outputs
    differing = sum(1 for outs in outputs.values() for out in outs if out != outs[0])
    return {"requests": sum(len(o) for o in outputs.values()), "seconds": seconds,
            "tokens_per_s": runner.generated / seconds, "prompts_varying": sum(len(set(o)) > 1 for o in outputs.values()),
            "requests_differing": differing, "cached": runner.cached, "cold_ms": cold * 1000 / len(QUESTIONS)}


def run(rounds=1, rev=BASELINE, prefill_chunk=64):
    """The table for docs/performance.md: the baseline and the current scheduler, in turn, medians of rounds."""
    variants = {f"before ({rev}: whole prompt alone, reuse at any position)": load_baseline(rev),
                f"aligned chunks of {prefill_chunk} (now)": None}
    results = {name: [] for name in variants}
    for _ in range(rounds):
        for name, scheduler_class in variants.items():
            results[name].append(_measure(scheduler_class, prefill_chunk))
    lines = ["| scheduler | requests | prompts with >1 output | requests differing from their cold run | "
             f"generated tokens/s | wall time | cached prompt tokens | cold request ({MAX_TOKENS} tokens) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        pick = lambda key: median([r[key] for r in runs])  # noqa: E731
        lines.append(f"| {name} | {runs[0]['requests']} | {max(r['prompts_varying'] for r in runs)}/{len(QUESTIONS)} | "
                     f"{max(r['requests_differing'] for r in runs)} | {pick('tokens_per_s'):.1f} | "
                     f"{pick('seconds'):.0f} s | {pick('cached'):.0f} | {pick('cold_ms'):.0f} ms |")
    return "\n".join(lines)
