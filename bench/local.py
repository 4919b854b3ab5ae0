"""Benchmarks 1 and 2: the local runtime, one stream against llama-cpp-python itself, then concurrent clients.

Environment of benchmark 1: BENCH_ROUNDS (9), BENCH_BASELINE (another source tree of shim, measured in the same rounds).
"""
import contextlib
import os
import threading
import time

from .common import MODEL, PROMPT, median, rss_kb, running_shim, time_ndjson, time_sse

TOKENS = 128


def direct_stream(llm):
    """One run of llama-cpp-python's own streaming chat completion: (TTFT, time of the last token, tokens)."""
    started = time.perf_counter()
    first = last = None
    tokens = 0
    for chunk in llm.create_chat_completion(PROMPT, temperature=0, max_tokens=TOKENS, stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            last = time.perf_counter()
            first = first or last
            tokens += 1
    return first - started, last - started, tokens


def interleaved(urls, runs):
    """direct, then SSE and NDJSON runs of each shim, taken in turn, so that the machine's drift touches all alike."""
    from llama_cpp import Llama

    from shim.backends.llamacpp import embedded_model_path
    llm = Llama(model_path=embedded_model_path(), n_ctx=4096, n_threads=os.cpu_count(), verbose=False)
    sse_body = {"model": MODEL, "messages": PROMPT, "max_tokens": TOKENS, "temperature": 0, "stream": True}
    ndjson_body = {"model": MODEL, "messages": PROMPT, "options": {"num_predict": TOKENS, "temperature": 0}}
    paths = {"llama-cpp-python, direct": lambda: direct_stream(llm)}
    for name, url in urls.items():
        paths[f"{name}, OpenAI SSE"] = lambda url=url: time_sse(url + "/v1/chat/completions", sse_body)
        paths[f"{name}, Ollama NDJSON"] = lambda url=url: time_ndjson(url + "/api/chat", ndjson_body)
    results = {name: [] for name in paths}
    for round_ in range(runs + 1):
        for name, run in paths.items():
            result = run()
            if round_:  # the first round warms caches up
                results[name].append(result)
    llm.close()
    return results


def summary(results):
    """(median tokens/s end to end, median decode tokens/s, median TTFT ms, tokens)."""
    return (median([n / last for _, last, n in results]), median([(n - 1) / (last - first) for first, last, n in results]),
            median([first * 1000 for first, _, _ in results]), results[0][2])


def single():
    """Benchmark 1 as a markdown table."""
    runs, baseline = int(os.environ.get("BENCH_ROUNDS", "9")), os.environ.get("BENCH_BASELINE")
    with contextlib.ExitStack() as stack:
        urls = {"shim": stack.enter_context(running_shim())}
        if baseline:
            urls["baseline shim"] = stack.enter_context(running_shim(cwd=baseline))
        rows = {name: summary(results) for name, results in interleaved(urls, runs).items()}
    base = rows["llama-cpp-python, direct"]
    lines = ["| path | tokens | tokens/s (end to end) | decode tokens/s | time to first token | ratio to direct |",
             "|---|---|---|---|---|---|"]
    for name, (e2e, decode, ttft, n) in rows.items():
        lines.append(f"| {name} | {n} | {e2e:.1f} | {decode:.1f} | {ttft:.0f} ms | {e2e / base[0]:.2f}× |")
    return "\n".join(lines)


NO_END = {"0": -100, "2": -100}
"SmolLM2's end tokens, banned so that every stream is TOKENS long."
_SUBJECTS = (f"{colour} {animal}" for colour in ("red", "green", "blue", "grey", "golden", "silver", "purple")
             for animal in ("fox", "owl", "whale", "robot", "dragon", "tailor", "sailor", "baker", "miner", "poet"))
"Each used once, so a 'distinct' prompt is one no cache has seen."


def concurrent(clients_list=(1, 4, 8), rounds=3):
    """Benchmark 2 as a markdown table: the same prompt for every client, or a different one each; medians of rounds."""
    lines = ["| clients | prompts | aggregate tokens/s | TTFT p50 | TTFT max | streams complete |",
             "|---|---|---|---|---|---|"]
    with running_shim() as url:
        time_sse(url + "/v1/chat/completions", _body(PROMPT[0]["content"]))
        for clients in clients_list:
            # Rounds alternate the two kinds, so that this machine's drift in speed falls on both alike.
            runs = {False: [], True: []}
            for _ in range(rounds):
                for distinct in (False, True):
                    runs[distinct].append(_clients_round(url, clients, distinct))
            for distinct in (False, True):
                rate, ttft_p50, ttft_max, complete = (median(r[k] for r in runs[distinct]) for k in range(4))
                lines.append(f"| {clients} | {'distinct' if distinct else 'same'} | {rate:.1f} | "
                             f"{ttft_p50 * 1000:.0f} ms | {ttft_max * 1000:.0f} ms | {complete:.0f}/{clients} |")
    return "\n".join(lines)


def slots(choices=(1, 4, 8), clients=8, rounds=2):
    """The slots setting: a worker's memory, and what `clients` distinct streams at once get; medians of rounds."""
    from .streams import worker_pid
    lines = ["| slots | worker RSS | aggregate tokens/s | TTFT p50 | TTFT max | streams complete |",
             "|---|---|---|---|---|---|"]
    for count in choices:
        with running_shim(env={"SHIM_SLOTS": str(count)}) as url:
            time_sse(url + "/v1/chat/completions", _body(PROMPT[0]["content"]))
            rss = rss_kb(worker_pid(url.proc.pid))
            runs = [_clients_round(url, clients, True) for _ in range(rounds)]
            rate, ttft_p50, ttft_max, complete = (median(r[k] for r in runs) for k in range(4))
            lines.append(f"| {count} | {rss / 1024:.0f} MiB | {rate:.1f} | {ttft_p50 * 1000:.0f} ms | "
                         f"{ttft_max * 1000:.0f} ms | {complete:.0f}/{clients} |")
    return "\n".join(lines)


def _body(content):
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": TOKENS,
            "temperature": 0, "stream": True, "logit_bias": NO_END}


def _clients_round(url, clients, distinct):
    """`clients` streams started at once: (aggregate tokens/s, TTFT p50, TTFT max, streams complete)."""
    contents = [f"Write a long story about a {next(_SUBJECTS)} who learns to paint." if distinct
                else PROMPT[0]["content"] for _ in range(clients)]
    results = [None] * clients

    def run(i):
        results[i] = time_sse(url + "/v1/chat/completions", _body(contents[i]))
    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ttfts = sorted(r[0] for r in results)
    return (sum(r[2] for r in results) / wall, median(ttfts), ttfts[-1],
            sum(1 for r in results if r[2] == TOKENS))
