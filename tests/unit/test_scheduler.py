"""The continuous-batching scheduler over a fake engine: who joins a step, what each batch carries, what is reused.

The fake engine keeps each sequence's KV cache as a token list and checks every position the scheduler writes;
its "model" picks the next token from the whole cache of the sequence, so an output is right only if the cache
the scheduler built (reused, copied, cut, extended) is exactly the prompt and what followed. Like ggml, it also
depends on how the cache was evaluated: which tokens of a sequence went through a batch together, and whether that
batch held other sequences too (a lone token per sequence is the same in any batch, as it is in llama.cpp).
"""
import threading
import time

import numpy as np
import pytest

from shim import generation as g
from shim.backends import scheduler as sched
from shim.errors import BackendUnavailable, ContextLengthExceeded
from shim.threads import Channel

END = 2


class FakeEngine:
    """What the scheduler needs of an Engine, with caches as lists."""

    def __init__(self, slots=2, n_ctx=1024, batch_size=64, step_seconds=0.0):
        self.slots, self.n_ctx, self.batch_size, self.n_vocab = slots, n_ctx, batch_size, 1000
        self.kv = {i: [] for i in range(slots)}
        self.groups = {i: [] for i in range(slots)}
        "How each cached token was evaluated: 1 alone, else (its sequence's tokens in the batch, first position, "
        "whether others shared the batch)."
        self.ctx = self
        self.batch, self.batches, self.rows, self.refused = [], [], {}, []
        self.copies, self.resizes = [], []
        self.fail_next = False
        self.poisoned = set()
        "Sequences whose every batch llama.cpp refuses."
        self.step_seconds = step_seconds

    def add(self, token, position, seq_id, logits):
        queued = sum(1 for _, _, s, _ in self.batch if s == seq_id)
        assert position == len(self.kv[seq_id]) + queued, "positions must continue the sequence's cache"
        self.batch.append((token, position, seq_id, logits))
        return len(self.batch) - 1

    def decode(self):
        batch, self.batch = self.batch, []
        assert 0 < len(batch) <= self.batch_size
        time.sleep(self.step_seconds)
        if self.fail_next:
            self.fail_next = False
            return -3
        if any(not 0 <= token < self.n_vocab or seq in self.poisoned for token, _, seq, _ in batch):
            self.refused.append(batch)
            return -1  # as llama.cpp refuses a batch holding a token id outside the vocabulary
        self.batches.append(batch)
        self.rows = {row: seq for row, (_, _, seq, want) in enumerate(batch) if want}
        seqs = [seq for _, _, seq, _ in batch]
        for token, position, seq, _ in batch:
            own = seqs.count(seq)
            first = min(p for _, p, s, _ in batch if s == seq)
            self.kv[seq].append(token)
            self.groups[seq].append(1 if own == 1 else (own, first, own < len(batch)))
        return 0

    def next_token(self, row):
        """The 'model': a function of everything in the sequence's cache."""
        seq = self.rows[row]
        cache = self.kv[seq]
        return 10 + ((sum(t * (i + 1) for i, t in enumerate(cache)) + hash(tuple(self.groups[seq]))) % 80)  # 10-89

    def logits(self, row):
        """The row's 'logits': the model's next token the most likely."""
        logits = np.zeros(self.n_vocab, dtype=np.float32)
        logits[self.next_token(row)] = 1.0
        return logits

    def forget(self, seq_id, start=0):
        del self.kv[seq_id][start:]
        del self.groups[seq_id][start:]
        return start

    def copy(self, source, target):
        self.copies.append((source, target))
        self.kv[target] = list(self.kv[source])
        self.groups[target] = list(self.groups[source])

    def resize(self, n_ctx):
        if n_ctx > 100_000:
            raise BackendUnavailable(f"cannot make a context of {self.slots} x {n_ctx} tokens")
        self.resizes.append(n_ctx)
        self.n_ctx = n_ctx
        self.kv = {i: [] for i in range(self.slots)}
        self.groups = {i: [] for i in range(self.slots)}

    def is_end(self, token):
        return token == END

    def piece(self, token, special=False):
        return f"<{token}>".encode()


class FakeSampler:
    """Greedy over the fake model; ends the sequence after `stop_after` tokens when given."""

    def __init__(self, stop_after=None, fail=False):
        self.stop_after, self.fail, self.calls, self.closed = stop_after, fail, 0, False

    def sample(self, engine, row):
        return self.sample_logits(engine.logits(row))

    def sample_logits(self, logits):
        if self.fail:
            raise RuntimeError("the sampler broke")
        self.calls += 1
        return END if self.calls == self.stop_after else int(np.argmax(logits))

    def close(self):
        self.closed = True


def job(prompt, max_tokens=5, n=1, n_ctx=None, stop_after=None):
    request = g.GenerationRequest(model="m", prompt="p", max_tokens=max_tokens, n=n)
    return sched.Job(request, list(prompt), n_ctx, [FakeSampler(stop_after) for _ in range(n)], g.Cancel(), Channel())


def events(j, timeout=10):
    """Everything a job's channel gives, or the error it ends with."""
    result = []
    done = threading.Event()

    def read():
        try:
            result.extend(j.channel)
        except Exception as err:  # noqa: BLE001 - the test looks at it
            result.append(err)
        done.set()
    threading.Thread(target=read, daemon=True).start()
    assert done.wait(timeout), "the job never ended"
    return result


def run(s, prompt, **kwargs):
    """Submit a job and wait for all its events."""
    j = job(prompt, **kwargs)
    s.submit(j)
    return events(j)


def text(evs, index=0):
    return "".join(e.text for e in evs if isinstance(e, g.TextDelta) and e.index == index)


def finish(evs, index=0):
    return next(e for e in evs if isinstance(e, g.Finish) and e.index == index)


def alone(prompt, max_tokens=5, chunk=8, preamble=()):
    """What a prompt gives on a scheduler of its own, with an empty cache."""
    s = sched.Scheduler(FakeEngine(slots=1), chunk, "m", preamble)
    try:
        j = job(prompt, max_tokens)
        s.submit(j)
        return text(events(j))
    finally:
        s.stop()


@pytest.fixture
def make():
    made = []

    def make_scheduler(**engine_args):
        chunk = engine_args.pop("prefill_chunk", 8)
        preamble = engine_args.pop("preamble", ())
        s = sched.Scheduler(FakeEngine(**engine_args), chunk, "m", preamble)
        made.append(s)
        return s
    yield make_scheduler
    for s in made:
        s.stop()


def test_one_job_runs_to_its_length_with_usage_and_context(make):
    s = make()
    j = job(range(100, 120), max_tokens=6)
    s.submit(j)
    evs = events(j)
    end = finish(evs)
    assert end.reason == "length" and end.usage == g.Usage(20, 6, 0)
    assert len(end.context) == 26 and end.context[:20] == tuple(range(100, 120))
    assert text(evs) == "".join(f"<{t}>" for t in end.context[20:])
    assert all(sampler.closed for sampler in [q.sampler for q in j.sequences])


def test_end_of_sequence_token_stops_with_reason_stop(make):
    s = make()
    j = job(range(100, 110), max_tokens=50, stop_after=4)
    s.submit(j)
    end = finish(events(j))
    assert (end.reason, end.usage.completion_tokens) == ("stop", 3)


def test_concurrent_jobs_share_steps_and_give_what_each_gives_alone(make):
    prompts = [range(100 + 50 * i, 130 + 50 * i) for i in range(3)]
    expected = [alone(p, 20) for p in prompts]
    s = make(slots=3, step_seconds=0.002)
    jobs = [job(p, 20) for p in prompts]
    for j in jobs:
        s.submit(j)
    assert [text(events(j)) for j in jobs] == expected
    shared = [b for b in s.engine.batches if len({seq for _, _, seq, _ in b}) == 3]
    assert len(shared) >= 10, "the three sequences were never decoded together"


def test_a_long_prompt_loads_in_chunks_beside_a_generating_sequence(make):
    s = make(slots=2, prefill_chunk=8, step_seconds=0.002)
    first = job(range(100, 110), max_tokens=150)
    s.submit(first)
    next(iter(first.channel))  # first is generating now
    long = job(range(300, 400), max_tokens=3)
    s.submit(long)
    evs = events(long)
    assert finish(evs).usage.prompt_tokens == 100
    batches = s.engine.batches
    loading = [i for i, b in enumerate(batches) if any(300 <= t < 400 for t, *_ in b)]
    # Each chunk alone in its batch, whole and aligned: positions [0, 8), [8, 16), ..., [96, 100).
    assert [[p for _, p, _, _ in batches[i]] for i in loading] == [list(range(a, min(a + 8, 100)))
                                                                    for a in range(0, 100, 8)]
    for before, after in zip(loading, loading[1:]):
        moved = [b for b in batches[before + 1:after] if {seq for *_, seq, _ in b} == {0}]
        assert len(moved) == 1, "the generating sequence moved one token every step"
    events(first)


def test_greedy_output_is_the_same_cold_cached_batched_or_continuing_a_conversation(make):
    """The fake model, like ggml, depends on which tokens were evaluated together: the output is the same only if
    every path evaluates the prompt in the same chunks."""
    s = make(slots=3, step_seconds=0.001)
    system = list(range(100, 137))  # 37 tokens: the shared prefix ends inside a chunk
    prompt = system + list(range(200, 230))
    expected = alone(prompt, 10)
    cold = run(s, prompt, max_tokens=10)
    cached = run(s, prompt, max_tokens=10)
    one_slot = make(slots=1)
    run(one_slot, system + [7, 8, 9], max_tokens=3)
    after_sibling = run(one_slot, prompt, max_tokens=10)
    busy = job(range(600, 640), max_tokens=80)
    s.submit(busy)
    next(iter(busy.channel))
    together = [job(prompt, max_tokens=10), job(system + [5], max_tokens=10), job(prompt, max_tokens=10)]
    for j in together:
        s.submit(j)
    batched = [events(j) for j in together]
    assert [text(e) for e in (cold, cached, after_sibling, batched[0], batched[2])] == [expected] * 5
    assert text(batched[1]) == alone(system + [5], 10)
    assert finish(cached).usage.cached_tokens == 67 and finish(after_sibling).usage.cached_tokens == 32
    # The next turn of a conversation: its answer's tokens were evaluated one by one, so only the prompt's whole
    # chunks are reused, and the rest is loaded as a fresh load of the longer prompt would be.
    follow_up = list(finish(cold).context) + [300, 301, 302]
    continued = run(s, follow_up, max_tokens=10)
    assert text(continued) == alone(follow_up, 10) and finish(continued).usage.cached_tokens == 64
    events(busy)


PREAMBLE = tuple(range(100, 124))
"A template's preamble of 24 tokens (SmolLM2's length): it ends before the first multiple of 64."


def test_chunks_end_at_multiples_of_the_chunk_size_and_at_the_end_of_a_preamble_that_starts_the_prompt():
    assert sched.chunk_ends(list(range(20)), (), 8) == [8, 16, 20]
    assert sched.chunk_ends(list(range(16)), (), 8) == [8, 16]
    assert sched.chunk_ends([1, 2, 3, 4, 5, 6, 7], (1, 2, 3), 4) == [3, 4, 7]
    assert sched.chunk_ends([1, 2, 3, 4, 5, 6, 7], (1, 2, 4), 4) == [4, 7], "the prompt does not start with it"
    assert sched.chunk_ends([1, 2, 3, 4, 5, 6, 7, 8, 9], (1, 2, 3, 4), 4) == [4, 8, 9], "an end at a multiple"
    assert sched.chunk_ends([1, 2, 3], (1, 2, 3), 4) == [3], "the prompt is the preamble"
    assert sched.chunk_ends([1, 2], (1, 2, 3), 4) == [2], "a prompt shorter than the preamble"


def test_a_conversation_after_another_reuses_exactly_the_template_preamble(make):
    s = make(slots=2, prefill_chunk=64, preamble=PREAMBLE)
    first = list(PREAMBLE) + list(range(200, 230))
    run(s, first, max_tokens=3)
    evs = run(s, list(PREAMBLE) + list(range(300, 330)), max_tokens=3)
    assert finish(evs).usage.cached_tokens == len(PREAMBLE)
    assert text(evs) == alone(list(PREAMBLE) + list(range(300, 330)), 3, chunk=64, preamble=PREAMBLE)
    loads = [[p for _, p, _, _ in b] for b in s.engine.batches if len(b) > 1]
    assert loads == [list(range(24)), list(range(24, 54)), list(range(24, 54))], "cold: the preamble, then the rest"


def test_greedy_output_is_the_same_cold_or_cached_with_the_preamble_without_it_or_sharing_part_of_it(make):
    """With the fake model, an output is right only if a prompt is evaluated in the same chunks on every path."""
    s = make(slots=1, prefill_chunk=16, preamble=PREAMBLE)  # ends 16, 24 (the preamble's), 32, 48, ...
    with_it = list(PREAMBLE) + list(range(200, 230))
    without = list(range(500, 540))
    part = list(PREAMBLE[:20]) + list(range(600, 630))  # shares 20 tokens: only [0, 16) may be reused
    other = list(PREAMBLE) + list(range(700, 730))
    expected = {i: alone(p, 10, 16, PREAMBLE) for i, p in enumerate((with_it, without, part))}
    assert text(run(s, with_it, max_tokens=10)) == expected[0]
    assert text(run(s, with_it, max_tokens=10)) == expected[0]
    after_part = run(s, part, max_tokens=10)
    assert text(after_part) == expected[2] and finish(after_part).usage.cached_tokens == 16
    run(s, other, max_tokens=3)
    after_other = run(s, with_it, max_tokens=10)
    assert text(after_other) == expected[0] and finish(after_other).usage.cached_tokens == 24
    assert text(run(s, without, max_tokens=10)) == text(run(s, without, max_tokens=10)) == expected[1]
    # The same prompts on a scheduler that knows no preamble: chunks cut elsewhere, so the fake model tells.
    assert alone(with_it, 10, 16) != expected[0] and alone(without, 10, 16) == expected[1]


def test_with_every_slot_busy_a_job_waits_then_takes_the_freed_slot(make):
    s = make(slots=1, step_seconds=0.001)
    a, b = job(range(100, 110), max_tokens=10), job(range(500, 510), max_tokens=10)
    s.submit(a)
    s.submit(b)
    assert text(events(a)) and text(events(b)) == alone(range(500, 510), 10)
    steps_of = lambda low: [i for i, batch in enumerate(s.engine.batches) if any(low <= t < low + 10 for t, *_ in batch)]  # noqa: E731
    assert max(steps_of(100)) < min(steps_of(500))


def test_a_shared_prefix_is_reused_from_an_idle_slot(make):
    s = make(slots=2)
    system = list(range(100, 140))
    run(s, system + [7, 8], max_tokens=3)
    evs = run(s, system + [9, 9, 9], max_tokens=4)
    assert finish(evs).usage.cached_tokens == 40
    assert text(evs) == alone(system + [9, 9, 9], 4)
    evaluated = sum(len(b) for b in s.engine.batches)
    assert evaluated == (42 + 2) + (3 + 3), "only what was not cached is evaluated"


def prompt_tokens_evaluated(s, prompt):
    return sum(1 for b in s.engine.batches for t, *_ in b if t in set(prompt))


def test_the_same_prompt_again_evaluates_nothing_and_samples_what_it_did_cold(make):
    s = make(slots=1)
    prompt = list(range(100, 130))
    cold = run(s, prompt, max_tokens=3)
    batches = len(s.engine.batches)
    evs = run(s, prompt, max_tokens=3)
    assert finish(evs).usage.cached_tokens == 30, "the whole prompt came from the cache"
    assert len(s.engine.batches) - batches == 2, "only the two tokens generated after the first were decoded"
    assert text(evs) == text(cold) == alone(prompt, 3)


def test_a_prompt_sharing_all_but_the_cache_s_prompt_still_evaluates_its_last_chunk(make):
    """The kept logits belong to the exact prompt that filled the cache: a prefix of it, a longer prompt, or the
    prompt after the slot served another, are evaluated (and give what they give alone)."""
    s = make(slots=1)
    prompt = list(range(100, 130))
    run(s, prompt, max_tokens=3)
    shorter = run(s, prompt[:-1], max_tokens=3)
    assert text(shorter) == alone(prompt[:-1], 3) and finish(shorter).usage.cached_tokens == 24
    longer = run(s, prompt + [7], max_tokens=3)
    assert text(longer) == alone(prompt + [7], 3) and finish(longer).usage.cached_tokens == 24
    again = run(s, prompt, max_tokens=3)
    assert text(again) == alone(prompt, 3) and finish(again).usage.cached_tokens == 24
    assert finish(run(s, prompt, max_tokens=3)).usage.cached_tokens == 30


def test_an_exact_repeat_copies_the_kept_logits_with_the_cache_of_another_slot(make):
    s = make(slots=2, step_seconds=0.002)
    prompt = list(range(100, 150))
    running = job(prompt, max_tokens=100)
    s.submit(running)
    next(iter(running.channel))
    evaluated = prompt_tokens_evaluated(s, prompt)
    again = job(prompt, max_tokens=5)
    s.submit(again)
    evs = events(again)
    assert s.engine.copies == [(0, 1)] and prompt_tokens_evaluated(s, prompt) == evaluated
    assert finish(evs).usage.cached_tokens == 50 and text(evs) == alone(prompt, 5)
    events(running)


def test_an_exact_repeat_whose_sampler_fails_fails_alone_and_leaves_the_cache(make):
    s = make(slots=1)
    prompt = list(range(100, 120))
    run(s, prompt, max_tokens=3)
    request = g.GenerationRequest(model="m", prompt="p", max_tokens=5)
    broken = sched.Job(request, list(prompt), None, [FakeSampler(fail=True)], g.Cancel(), Channel())
    s.submit(broken)
    [error] = events(broken)
    assert isinstance(error, BackendUnavailable) and "the sampler broke" in str(error)
    assert broken.sequences[0].sampler.closed and s.slots[0].sequence is None
    again = run(s, prompt, max_tokens=3)
    assert finish(again).usage.cached_tokens == 20 and text(again) == alone(prompt, 3)


def test_after_a_failed_decode_the_same_prompt_loads_cold(make):
    s = make(slots=1, step_seconds=0.002)
    prompt = list(range(100, 110))
    run(s, prompt, max_tokens=3)
    doomed = job(prompt, max_tokens=100)
    s.submit(doomed)
    next(iter(doomed.channel))
    s.engine.fail_next = True
    assert isinstance(events(doomed)[-1], BackendUnavailable)
    after = run(s, prompt, max_tokens=3)
    assert finish(after).usage.cached_tokens == 0 and text(after) == alone(prompt, 3)


def test_a_prompt_sharing_little_takes_the_oldest_slot_and_leaves_a_recent_cache_alone(make):
    s = make(slots=2)
    conversation = list(range(100, 150))
    run(s, conversation, max_tokens=3)
    assert finish(run(s, conversation[:5] + list(range(600, 620)), max_tokens=3)).usage.cached_tokens == 0
    assert finish(run(s, conversation + [7], max_tokens=3)).usage.cached_tokens == 48


def test_a_prompt_branching_off_a_cache_copies_it_and_leaves_it_whole(make):
    s = make(slots=2)
    conversation = list(range(100, 150))
    run(s, conversation, max_tokens=30)
    assert finish(run(s, conversation[:40] + [7, 8], max_tokens=3)).usage.cached_tokens == 40
    assert s.engine.copies == [(0, 1)]
    assert finish(run(s, conversation + [9], max_tokens=3)).usage.cached_tokens == 48


def test_a_prefix_held_by_a_running_sequence_is_copied_into_a_free_slot(make):
    s = make(slots=2, step_seconds=0.002)
    system = list(range(100, 160))
    running = job(system + [1], max_tokens=100)
    s.submit(running)
    next(iter(running.channel))
    other = job(system + [5, 6], max_tokens=4)
    s.submit(other)
    evs = events(other)
    assert s.engine.copies == [(0, 1)]
    assert finish(evs).usage.cached_tokens == 56
    assert text(evs) == alone(system + [5, 6], 4)
    events(running)


def test_identical_prompts_arriving_together_are_loaded_once(make):
    s = make(slots=3, prefill_chunk=8)
    prompt = list(range(100, 200))
    jobs = [job(prompt, max_tokens=3) for _ in range(3)]
    for j in jobs:
        s.submit(j)
    results = [events(j) for j in jobs]
    assert {text(r) for r in results} == {alone(prompt, 3)}
    assert prompt_tokens_evaluated(s, prompt) == 100, "the later jobs copied the first one's cache and logits"


def test_choices_of_one_request_run_as_sequences_of_their_own(make):
    s = make(slots=3, prefill_chunk=16)
    j = job(range(100, 150), max_tokens=5, n=3)
    s.submit(j)
    evs = events(j)
    assert sorted(e.index for e in evs if isinstance(e, g.Finish)) == [0, 1, 2]
    assert {text(evs, i) for i in range(3)} == {alone(range(100, 150), 5, chunk=16)}  # the fake model is greedy
    assert prompt_tokens_evaluated(s, range(100, 150)) == 50


def test_a_cancelled_job_leaves_at_the_next_step_and_frees_its_slot(make, caplog):
    s = make(slots=1, step_seconds=0.002)
    long, waiting = job(range(100, 110), max_tokens=900), job(range(500, 510), max_tokens=5)
    s.submit(long)
    s.submit(waiting)
    stream = iter(long.channel)
    for _ in range(5):
        next(stream)
    with caplog.at_level("INFO", logger="shim.llamacpp"):
        long.cancel.set()
        assert finish(events(waiting)).usage.completion_tokens == 5
    assert not any(isinstance(e, g.Finish) for e in events(long))
    generated = [r.getMessage() for r in caplog.records if "generation cancelled" in r.getMessage()]
    assert len(generated) == 1 and int(generated[0].split("generated=")[1].split()[0]) < 100


def test_a_job_cancelled_while_waiting_never_runs(make):
    s = make(slots=1, step_seconds=0.002)
    first, second = job(range(100, 110), max_tokens=20), job(range(500, 510), max_tokens=5)
    second.cancel.set()
    s.submit(first)
    s.submit(second)
    assert events(second) == []
    events(first)
    assert not any(500 <= t < 510 for b in s.engine.batches for t, *_ in b)


def test_a_larger_context_waits_for_the_running_sequences_then_resizes(make):
    s = make(slots=2, n_ctx=1024, step_seconds=0.002)
    running = job(range(100, 110), max_tokens=30)
    s.submit(running)
    next(iter(running.channel))
    resized = job(range(500, 510), max_tokens=5, n_ctx=2048)
    s.submit(resized)
    assert finish(events(resized)).reason == "length"
    assert finish(events(running)).usage.completion_tokens == 30
    assert s.engine.resizes == [2048]
    steps_of = lambda low: [i for i, b in enumerate(s.engine.batches) if any(low <= t < low + 10 for t, *_ in b)]  # noqa: E731
    assert max(steps_of(100)) < min(steps_of(500))


def test_a_smaller_context_runs_beside_the_others_held_to_its_size(make):
    s = make(slots=2, n_ctx=1024)
    small = job(range(100, 130), max_tokens=None, n_ctx=40)
    s.submit(small)
    end = finish(events(small))
    assert s.engine.resizes == [] and end.reason == "length" and end.usage.completion_tokens == 10
    too_long = job(range(100, 150), n_ctx=40)
    s.submit(too_long)
    [error] = events(too_long)
    assert isinstance(error, ContextLengthExceeded) and "40" in str(error)
def test_a_context_that_cannot_be_made_fails_its_request_alone(make):
    s = make(slots=2)
    huge = job(range(100, 110), n_ctx=200_000)
    s.submit(huge)
    [error] = events(huge)
    assert isinstance(error, BackendUnavailable) and "200000" in str(error)
    after = job(range(100, 110), max_tokens=3)
    s.submit(after)
    assert finish(events(after)).reason == "length"


def test_a_prompt_that_no_longer_fits_after_a_resize_fails_alone(make):
    s = make(slots=1, n_ctx=64)
    j = job(range(100, 180), max_tokens=5)
    s.submit(j)
    [error] = events(j)
    assert isinstance(error, ContextLengthExceeded)


def test_the_window_ends_a_sequence_with_reason_length(make):
    s = make(slots=1, n_ctx=40)
    j = job(range(100, 130), max_tokens=None)
    s.submit(j)
    end = finish(events(j))
    assert end.reason == "length" and 30 + end.usage.completion_tokens <= 40


def test_a_failed_decode_fails_the_running_jobs_and_the_loop_goes_on(make):
    s = make(slots=2, step_seconds=0.002)
    doomed = job(range(100, 110), max_tokens=100)
    s.submit(doomed)
    next(iter(doomed.channel))
    s.engine.fail_next = True
    assert isinstance(events(doomed)[-1], BackendUnavailable)
    after = job(range(100, 110), max_tokens=5)
    s.submit(after)
    assert finish(events(after)).reason == "length"
    assert all(q.sampler.closed for q in doomed.sequences)


def test_a_prompt_llama_cpp_refuses_fails_alone(make):
    """A prompt chunk is decoded in a batch of its own: a bad one fails its request and no other."""
    s = make(slots=3, step_seconds=0.002)
    prompts = [range(100, 110), range(500, 530)]
    good, firsts = [job(p, max_tokens=40) for p in prompts], []
    for j in good:
        s.submit(j)
        firsts.append(next(iter(j.channel)))
    bad = job([100, 101, 5000, 102], max_tokens=5)
    s.submit(bad)
    [error] = events(bad)
    assert isinstance(error, BackendUnavailable) and "llama_decode returned -1" in str(error)
    assert s.engine.kv[bad.sequences[0].slot.seq_id] == []
    for j, first, prompt in zip(good, firsts, prompts):
        evs = [first] + events(j)
        assert text(evs) == alone(prompt, 40) and finish(evs).usage.completion_tokens == 40
    after = job(range(100, 110), max_tokens=3)
    s.submit(after)
    assert finish(events(after)).reason == "length"


def test_a_decode_failing_on_one_generating_sequence_fails_it_alone(make):
    """The batch is halved until the culprit is found; the others lose nothing, not even a token of their output."""
    s = make(slots=3, step_seconds=0.002)
    prompts = [range(100, 110), range(500, 530), range(700, 720)]
    jobs, firsts = [job(p, max_tokens=40) for p in prompts], []
    for j in jobs:
        s.submit(j)
        firsts.append(next(iter(j.channel)))
    s.engine.poisoned.add(jobs[1].sequences[0].slot.seq_id)
    evs = [[first] + events(j) for j, first in zip(jobs, firsts)]
    assert isinstance(evs[1][-1], BackendUnavailable)
    for i in (0, 2):
        assert text(evs[i]) == alone(prompts[i], 40) and finish(evs[i]).usage.completion_tokens == 40
    assert any(len({seq for _, _, seq, _ in b}) == 3 for b in s.engine.refused), "the three never shared a batch"


def test_stop_finishes_what_was_submitted_first(make):
    s = make(slots=1, step_seconds=0.001)
    j = job(range(100, 110), max_tokens=20)
    s.submit(j)
    s.stop()
    assert finish(events(j)).usage.completion_tokens == 20


def test_fits_names_what_does_not_fit():
    request = g.GenerationRequest(model="m", prompt="p", max_tokens=10)
    assert sched.fits(5, request, 100) == 10
    assert sched.fits(5, g.GenerationRequest(model="m", prompt="p"), 100) == 95
    with pytest.raises(ContextLengthExceeded) as err:
        sched.fits(95, request, 100)
    assert err.value.param == "max_tokens" and "105" in str(err.value)
    with pytest.raises(ContextLengthExceeded) as err:
        sched.fits(100, request, 100)
    assert err.value.param == "prompt"


def test_a_stop_string_ends_the_choice_and_its_finish_names_it(make):
    s = make()
    free = run(s, range(100, 110), max_tokens=8)
    third = "".join(f"<{t}>" for t in finish(free).context[12:13])
    request = g.GenerationRequest(model="m", prompt="p", max_tokens=8, stop=("<never>", third))
    j = sched.Job(request, list(range(100, 110)), None, [FakeSampler()], g.Cancel(), Channel())
    s.submit(j)
    evs = events(j)
    assert finish(free).stop_sequence is None
    assert (finish(evs).reason, finish(evs).stop_sequence) == ("stop", third)
    assert text(evs) == text(free)[: text(free).index(third)]


def test_a_job_whose_prompt_opened_a_think_block_yields_reasoning_and_counts_its_tokens():
    s = sched.Scheduler(FakeEngine(slots=1), 64, "m")
    try:
        request = g.GenerationRequest(model="m", prompt="p", max_tokens=4)
        j = sched.Job(request, [1, 3, 4], None, [FakeSampler()], g.Cancel(), Channel(), thinking=True)
        s.submit(j)
        evs = events(j)
    finally:
        s.stop()
    reasoning = "".join(e.text for e in evs if isinstance(e, g.ReasoningDelta))
    assert reasoning.count("<") == 4 and text(evs) == ""
    assert finish(evs).usage.completion_tokens == finish(evs).usage.reasoning_tokens == 4
