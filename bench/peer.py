"""Benchmark 2b: the local runtime beside a peer server, llama-cpp-python's own, on the same model file: one stream,
and four started at once (benchmark 2's streams).

Needs the server's own packages, which shim does not (llama-cpp-python's `server` extra, without building
llama-cpp-python again): `pip install -e '.[bench]'` brings them.
Environment: BENCH_ROUNDS (4), BENCH_BASELINE (another source tree of shim, measured in the same rounds).
"""
import contextlib
import importlib.util
import os
import subprocess
import sys
import time

import requests

from .common import MODEL, PROMPT, free_port, median, running_shim, time_sse
from .local import TOKENS, _clients_round

PEER = "llama-cpp-python's server"


@contextlib.contextmanager
def peer_server():
    """llama-cpp-python's server on the embedded model, both cores, serving one request at a time; yields its URL."""
    from shim.backends.llamacpp import embedded_model_path
    port = free_port()
    # In its default mode a new request cuts off the stream being served: its clients would see streams end early.
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", embedded_model_path(),
                             "--model_alias", MODEL, "--n_ctx", "4096", "--n_threads", str(os.cpu_count()),
                             "--interrupt_requests", "False", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            with contextlib.suppress(requests.RequestException):
                if requests.get(url + "/v1/models", timeout=1).ok:
                    break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait()


def run():
    """The peer comparison as a markdown table: the servers take turns, each round starting with the next one."""
    if not all(importlib.util.find_spec(name) for name in ("fastapi", "uvicorn", "sse_starlette", "starlette_context",
                                                           "pydantic_settings")):
        raise SystemExit("benchmark peer needs llama-cpp-python's server packages: pip install -e '.[bench]' (or "
                         "fastapi uvicorn sse-starlette starlette-context pydantic-settings)")
    rounds, baseline = int(os.environ.get("BENCH_ROUNDS", "4")), os.environ.get("BENCH_BASELINE")
    one_stream = {"model": MODEL, "messages": PROMPT, "max_tokens": TOKENS, "temperature": 0, "stream": True}
    with contextlib.ExitStack() as stack:
        urls = {"shim": stack.enter_context(running_shim())}
        if baseline:
            urls["baseline shim"] = stack.enter_context(running_shim(cwd=baseline))
        urls[PEER] = stack.enter_context(peer_server())
        found = {name: ([], [], []) for name in urls}
        for url in urls.values():
            time_sse(url + "/v1/chat/completions", one_stream)  # warm: the model loaded, the prompt cached
        names = list(urls)
        for round_ in range(rounds):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                one, same, distinct = found[name]
                first, last, tokens = time_sse(urls[name] + "/v1/chat/completions", one_stream)
                one.append((tokens / last, first))
                same.append(_clients_round(urls[name], 4, False))
                distinct.append(_clients_round(urls[name], 4, True))
    return _table(found)


def _table(found):
    """The markdown table of {server: (one-stream runs, four-stream runs with one prompt, with distinct ones)}."""
    lines = ["| server | one stream: tokens/s (TTFT) | 4 streams, same prompt: aggregate tokens/s (TTFT p50, complete) "
             "| 4 streams, distinct prompts | 4 streams against the peer's |", "|---|---|---|---|---|"]
    peer = median([r[0] for r in found[PEER][1]]), median([r[0] for r in found[PEER][2]])
    for name, (one, same, distinct) in found.items():
        rates = median([r[0] for r in same]), median([r[0] for r in distinct])
        cells = [f"{median([r[0] for r in one]):.1f} ({median([r[1] for r in one]) * 1000:.0f} ms)"]
        cells += [f"{rate:.1f} ({median([r[1] for r in runs]) * 1000:.0f} ms, {min(r[3] for r in runs)}/4)"
                  for rate, runs in zip(rates, (same, distinct))]
        cells.append(f"{rates[0] / peer[0]:.2f}× / {rates[1] / peer[1]:.2f}×")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
