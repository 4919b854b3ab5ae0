"""Continuous batching end to end: the official clients against real gunicorn and the real SmolLM2.

Requests that run together must give, token for token, what each gives alone (greedy, and seeded sampling too),
with every feature on; streams must interleave instead of queueing; a full house waits and then completes.
"""
import json
import threading
import time

import jsonschema
import ollama
import openai
import pytest
import requests

from tests.support import CANCELLED, MODEL, PARIS_WEATHER, WEATHER

NO_END = {"0": -100, "2": -100}
"Bans SmolLM2's end tokens, so a stream runs to its max_tokens."
POINT = {"type": "object", "additionalProperties": False, "required": ["x", "y"],
         "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}}


def _logprob_tokens(choice):
    return [(t.token, round(t.logprob, 5)) for t in choice.logprobs.content]


def _chat_stream(oai, **kwargs):
    text, reason, usage = "", None, None
    for chunk in oai.chat.completions.create(model=MODEL, stream=True, stream_options={"include_usage": True},
                                             **kwargs):
        if chunk.usage:
            usage = chunk.usage.completion_tokens
        for choice in chunk.choices:
            text += choice.delta.content or ""
            reason = choice.finish_reason or reason
    return text, reason, usage


def _requests(url):
    """Named requests covering the features the local runtime has, each returning what it must reproduce."""
    oai = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
    oll = ollama.Client(host=url)
    user = lambda text: [{"role": "user", "content": text}]  # noqa: E731

    def greedy_logprobs():
        r = oai.chat.completions.create(model=MODEL, messages=user("Name three colors."), temperature=0,
                                        max_tokens=30, logprobs=True, top_logprobs=2)
        return r.choices[0].message.content, _logprob_tokens(r.choices[0])

    def seeded_stream_with_stop():
        return _chat_stream(oai, messages=user("Write a short poem about rain."), temperature=0.9, seed=7,
                            top_p=0.9, max_tokens=40, stop=["\n\n"])

    def penalties_and_bias():
        r = oai.chat.completions.create(model=MODEL, messages=user("List some animals."), temperature=0,
                                        max_tokens=40, frequency_penalty=1.0, presence_penalty=0.5,
                                        logit_bias={"28": -100})
        return r.choices[0].message.content, r.choices[0].finish_reason

    def json_schema():
        r = oai.chat.completions.create(model=MODEL, messages=user("Give a point as JSON."), temperature=0,
                                        max_tokens=40, response_format={"type": "json_schema", "json_schema": {
                                            "name": "point", "schema": POINT}})
        jsonschema.validate(json.loads(r.choices[0].message.content), POINT)
        return r.choices[0].message.content

    def forced_tool():
        r = oai.chat.completions.create(model=MODEL, messages=PARIS_WEATHER, tools=[WEATHER], temperature=0,
                                        tool_choice="required", max_tokens=60)
        calls = r.choices[0].message.tool_calls
        return [(c.function.name, c.function.arguments) for c in calls], r.choices[0].finish_reason

    def two_seeded_choices():
        r = oai.chat.completions.create(model=MODEL, messages=user("Say something about cats."), n=2, seed=3,
                                        temperature=1.0, max_tokens=25)
        return sorted((c.index, c.message.content) for c in r.choices)

    def legacy_completion():
        r = oai.completions.create(model=MODEL, prompt="The three primary colors are", temperature=0,
                                   max_tokens=25)
        return r.choices[0].text, r.choices[0].finish_reason

    def ollama_options_stream():
        parts = list(oll.chat(model=MODEL, messages=user("Tell me about the moon."), stream=True, options={
            "temperature": 0.7, "seed": 11, "top_k": 20, "min_p": 0.1, "repeat_penalty": 1.2, "num_predict": 40}))
        return "".join(p.message.content for p in parts), parts[-1].eval_count, parts[-1].done_reason

    def ollama_generate_format():
        r = oll.generate(model=MODEL, prompt="A point as JSON:", format=POINT, options={"temperature": 0,
                                                                                        "num_predict": 40})
        jsonschema.validate(json.loads(r.response), POINT)
        return r.response

    return {f.__name__: f for f in (greedy_logprobs, seeded_stream_with_stop, penalties_and_bias, json_schema,
                                    forced_tool, two_seeded_choices, legacy_completion, ollama_options_stream,
                                    ollama_generate_format)}


def _all_at_once(calls):
    results, errors = {}, []

    def run(name, call):
        try:
            results[name] = call()
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append((name, err))
    threads = [threading.Thread(target=run, args=item) for item in calls.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    return results


def test_requests_running_together_give_what_each_gives_alone(shim_url):
    calls = _requests(shim_url)
    alone = {name: call() for name, call in calls.items()}
    together = _all_at_once(calls)
    assert together == alone
    # and the answers are real: greedy colors, a call to the one tool, two different seeded choices
    assert "Red" in alone["greedy_logprobs"][0]
    assert alone["forced_tool"][0][0][0] == "get_weather" and alone["forced_tool"][1] == "tool_calls"
    assert alone["two_seeded_choices"][0][1] != alone["two_seeded_choices"][1][1]


def _timed_stream(url, content, max_tokens, times):
    response = requests.post(url + "/v1/chat/completions", stream=True, timeout=120, json={
        "model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
        "temperature": 0, "stream": True})
    arrivals = []
    for line in response.iter_lines():
        if line.startswith(b"data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
            arrivals.append(time.monotonic())
    times.append(arrivals)


def _concurrent_streams(url, prompts, max_tokens):
    times = []
    threads = [threading.Thread(target=_timed_stream, args=(url, p, max_tokens, times)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return times


def test_streams_interleave_instead_of_queueing(shim_url):
    prompts = ["Tell me a story about a dragon.", "Explain how rain forms.", "Write a poem about the sea.",
               "Describe a busy market."]
    times = _concurrent_streams(shim_url, prompts, 64)
    assert len(times) == 4 and all(len(t) >= 30 for t in times)
    # Every stream had its first token before any stream was done: they were decoded side by side.
    assert max(t[0] for t in times) < min(t[-1] for t in times)


def test_a_repeated_system_prompt_is_taken_from_the_cache(shim_url):
    oai = openai.OpenAI(base_url=shim_url + "/v1", api_key="unused", max_retries=0)
    system = {"role": "system", "content": "You are a museum guide. " * 20}
    usages = [oai.chat.completions.create(model=MODEL, temperature=0, max_tokens=5, messages=[
        system, {"role": "user", "content": question}]).usage for question in ("Hello?", "Where is the exit?")]
    assert usages[1].prompt_tokens_details.cached_tokens >= 100
    assert usages[1].prompt_tokens_details.cached_tokens < usages[1].prompt_tokens


@pytest.fixture(scope="module")
def two_slots():
    from harness.servers import running_shim
    with running_shim("slots = 2\nmax_ctx = 8192\n", env={"SHIM_LOG_LEVEL": "info"}) as url:
        yield url


def test_past_the_slots_requests_wait_in_the_queue_then_complete(two_slots):
    prompts = ["Tell me a story about a dragon.", "Explain how rain forms.", "Write a poem about the sea.",
               "Describe a busy market."]
    times = sorted(_concurrent_streams(two_slots, prompts, 24), key=lambda t: t[0])
    assert len(times) == 4 and all(len(t) >= 20 for t in times)
    # Two ran at once; the other two started only when a slot came free.
    assert times[1][0] < times[0][-1]
    assert times[2][0] > min(times[0][-1], times[1][-1])


def test_a_client_leaving_frees_its_slot_for_a_waiting_one(two_slots):
    before = len(CANCELLED.findall(two_slots.log_text()))
    long = [requests.post(two_slots + "/v1/chat/completions", stream=True, timeout=120, json={
        "model": MODEL, "messages": [{"role": "user", "content": f"Count from {n} to 1000."}], "max_tokens": 2000,
        "temperature": 0, "stream": True, "logit_bias": NO_END}) for n in (1, 500)]
    # Keep each stream's line iterator: a dropped one closes its connection, which is a client leaving.
    lines = [response.iter_lines() for response in long]
    for stream in lines:
        assert sum(1 for line, _ in zip(stream, range(8)) if line.startswith(b"data: {")) == 4
    waiting = []
    third = threading.Thread(target=_timed_stream, args=(two_slots, "Say hi.", 8, waiting))
    third.start()
    time.sleep(1.0)
    left_at = time.monotonic()
    long[0].close()
    third.join(60)
    long[1].close()
    # The third request got its first token only once the first client had gone and its slot was free.
    assert len(waiting) == 1 and waiting[0] and waiting[0][0] > left_at
    assert len(CANCELLED.findall(two_slots.log_text())) > before


def test_a_larger_num_ctx_waits_for_the_running_streams_then_gets_its_window(two_slots):
    running = []
    first = threading.Thread(target=_timed_stream, args=(two_slots, "Tell me a story about a dragon.", 40, running))
    first.start()
    time.sleep(0.3)
    oll = ollama.Client(host=two_slots)
    larger = oll.generate(model=MODEL, prompt="Name three colors.", options={"num_ctx": 8192, "num_predict": 10})
    done_at = time.monotonic()
    first.join(60)
    assert larger.done and 1 <= larger.eval_count <= 10 and len(running) == 1 and len(running[0]) >= 30
    # The new context was made once the running stream was over, so that stream was never cut short.
    assert running[0][-1] < done_at
    loaded = requests.get(two_slots + "/api/ps", timeout=10).json()["models"]
    assert [m["context_length"] for m in loaded if m["model"] == MODEL] == [8192]


LIBRARY = {"role": "system", "content": (
    "You are a careful assistant for a city library. Answer briefly and precisely, in plain English. The library "
    "opens at nine and closes at six, except on Sundays, when it opens at noon. Members may borrow up to eight books "
    "for three weeks; films for one week. Late returns cost ten cents a day. ")}
TRICKY = ("Give me three tips for finding a book.", "Can I borrow ten books at once? Explain.",
          "Write a JSON object with a name.")
"Questions whose greedy answer changed with how the prompt was split before every prompt loaded in aligned chunks."


@pytest.fixture(scope="module")
def fresh_shim():
    from harness.servers import running_shim
    with running_shim() as url:  # its own server: the first request of the first question finds every cache empty
        yield url


def test_greedy_requests_give_the_same_tokens_cold_cached_and_batched(fresh_shim):
    oai = openai.OpenAI(base_url=fresh_shim + "/v1", api_key="unused", max_retries=0)

    def ask(question):
        r = oai.chat.completions.create(model=MODEL, messages=[LIBRARY, {"role": "user", "content": question}],
                                        temperature=0, max_tokens=12, logprobs=True)
        return _logprob_tokens(r.choices[0]), r.usage.prompt_tokens_details.cached_tokens
    # First cold (then each after another question: its system prompt in the cache), then again (all of it cached),
    # then every question twice at once, beside each other.
    runs = [{q: ask(q) for q in TRICKY}, {q: ask(q) for q in TRICKY}]
    together = _all_at_once({(q, k): (lambda q=q: ask(q)) for q in TRICKY for k in range(2)})
    for q in TRICKY:
        outputs = [runs[0][q][0], runs[1][q][0], together[q, 0][0], together[q, 1][0]]
        assert all(out == outputs[0] for out in outputs), q
    assert runs[0][TRICKY[0]][1] == 0 and all(runs[1][q][1] >= 64 for q in TRICKY), "the cache was used"


SMOLLM_PREAMBLE = 24
"The tokens of SmolLM2's default system message and user turn start, before every conversation without a system one."


def test_conversations_without_a_system_message_reuse_the_template_preamble_and_give_the_same_tokens(fresh_shim):
    oai = openai.OpenAI(base_url=fresh_shim + "/v1", api_key="unused", max_retries=0)

    def ask(question):
        r = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                        temperature=0, max_tokens=12, logprobs=True)
        return _logprob_tokens(r.choices[0]), r.usage.prompt_tokens_details.cached_tokens, r.usage.prompt_tokens
    # Each after another question (the preamble cached), then again (all of it cached), then twice at once.
    runs = [{q: ask(q) for q in TRICKY}, {q: ask(q) for q in TRICKY}]
    together = _all_at_once({(q, k): (lambda q=q: ask(q)) for q in TRICKY for k in range(2)})
    for q in TRICKY:
        outputs = [runs[0][q][0], runs[1][q][0], together[q, 0][0], together[q, 1][0]]
        assert all(out == outputs[0] for out in outputs), q
    assert [runs[0][q][1] for q in TRICKY[1:]] == [SMOLLM_PREAMBLE] * 2, "a new conversation reuses the preamble"
    assert all(runs[1][q][1] == runs[1][q][2] for q in TRICKY), "a repeat comes whole from the cache"


@pytest.fixture(scope="module")
def one_slot():
    from harness.servers import running_shim
    with running_shim("slots = 1\n") as url:  # one slot: each prompt overwrites the cache of the one before
        yield url


def test_an_exact_repeat_comes_whole_from_the_cache_and_gives_what_it_gave_cold(one_slot):
    """The first token of a repeated prompt is sampled from the logits kept with the cache: the same tokens and
    logprobs, with a grammar too, and never another prompt's logits."""
    oai = openai.OpenAI(base_url=one_slot + "/v1", api_key="unused", max_retries=0)

    def ask(question, **extra):
        r = oai.chat.completions.create(model=MODEL, messages=[LIBRARY, {"role": "user", "content": question}],
                                        temperature=0, max_tokens=12, logprobs=True, top_logprobs=3, **extra)
        tops = [[(t.token, round(t.logprob, 5)) for t in lp.top_logprobs] for lp in r.choices[0].logprobs.content]
        cached = r.usage.prompt_tokens_details.cached_tokens
        return (r.choices[0].message.content, _logprob_tokens(r.choices[0]), tops), cached, r.usage.prompt_tokens
    as_json = {"response_format": {"type": "json_object"}}
    plain, plain_again = ask(TRICKY[0]), ask(TRICKY[0])
    constrained, constrained_again = ask(TRICKY[2], **as_json), ask(TRICKY[2], **as_json)
    plain_after_another = ask(TRICKY[0])
    assert plain_again[0] == plain_after_another[0] == plain[0] and constrained_again[0] == constrained[0]
    assert constrained[0][0].lstrip().startswith("{") and not plain[0][0].lstrip().startswith("{")
    assert plain_again[1] == plain_again[2] and constrained_again[1] == constrained_again[2], "all of it cached"
    assert plain[1] < plain[2] and constrained[1] < constrained[2] and plain_after_another[1] < plain[2]
