"""Helpers the benchmarks share: servers to start, streams to time, figures to summarise."""
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import requests

from harness.servers import free_port, running_shim

PROMPT = [{"role": "user", "content": "Write a long story about a dragon who learns to paint."}]
MODEL = "smollm2:135m"

__all__ = ["free_port", "running_shim", "instant_upstream", "time_sse", "time_ndjson", "median", "pct", "rss_kb"]


@contextlib.contextmanager
def instant_upstream(delay=0.0):
    """bench.instant_upstream in a subprocess; yields its port."""
    port = free_port()
    args = [sys.executable, "-m", "bench.instant_upstream", str(port), "--delay", str(delay)]
    proc = subprocess.Popen(args, cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        for _ in range(100):
            with contextlib.suppress(requests.RequestException):
                requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait()


def _sse_token(line):
    if not line.startswith(b"data: {"):
        return False
    chunk = json.loads(line[6:])
    return bool(chunk["choices"] and chunk["choices"][0]["delta"].get("content"))


def _ndjson_token(line):
    part = json.loads(line)
    return bool(part.get("response") or (part.get("message") or {}).get("content"))


def _time_stream(url, body, is_token):
    """(seconds to the first token, seconds to the last, tokens) of one stream; is_token(line) spots tokens."""
    started = time.perf_counter()
    first = last = None
    tokens = 0
    with requests.post(url, json=body, stream=True, timeout=300) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line and is_token(line):
                last = time.perf_counter()
                first = first or last
                tokens += 1
    return first - started, last - started, tokens


def time_sse(url, body):
    """(seconds to the first token, seconds to the last, tokens) of one SSE chat stream."""
    return _time_stream(url, body, _sse_token)


def time_ndjson(url, body):
    """(seconds to the first token, seconds to the last, tokens) of one NDJSON stream."""
    return _time_stream(url, body, _ndjson_token)


def median(values):
    """The median."""
    return statistics.median(values)


def pct(values, q):
    """The q-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def rss_kb(pid):
    """Resident memory of a process, in KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def temp_config(text):
    """A TOML file holding text; the caller removes it."""
    fd, path = tempfile.mkstemp(suffix=".toml")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path
