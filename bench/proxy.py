"""Benchmark 3: what shim adds in front of an upstream that answers at once (one gunicorn worker).

Side by side in one run, several rounds interleaved, medians: the upstream directly, a bare Flask view and a bare WSGI
callable under the same gunicorn + gevent settings, and shim for each client protocol through each upstream backend
type. A row's latency is taken in turns with that of the upstream it goes to (LATENCY_CHUNK requests each), and its
added p50 is the difference of the two: the machine's drift between figures taken minutes apart would swamp it.
Environment: BENCH_ROUNDS (3), BENCH_SECONDS (wrk seconds per figure, 5), BENCH_COUNT (sequential requests, 1000),
BENCH_ONLY (a regular expression the row names must match), BENCH_BASELINE (another source tree of shim, whose
rows are measured beside this one's, marked "baseline").
"""
import contextlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import requests

from .common import free_port, instant_upstream, median, pct, running_shim

PROMPT = [{"role": "user", "content": "hi"}]
PROTOCOLS = {  # name: (path, JSON body, SSE/NDJSON body)
    "chat completions": ("/v1/chat/completions", {"messages": PROMPT, "max_tokens": 16},
                         {"messages": PROMPT, "max_tokens": 16, "stream": True}),
    "Ollama chat": ("/api/chat", {"messages": PROMPT, "stream": False}, {"messages": PROMPT}),
    "Ollama generate": ("/api/generate", {"prompt": "hi", "stream": False}, {"prompt": "hi"}),
    "Responses": ("/v1/responses", {"input": "hi", "store": False, "max_output_tokens": 16},
                  {"input": "hi", "store": False, "max_output_tokens": 16, "stream": True}),
    "Messages": ("/v1/messages", {"messages": PROMPT, "max_tokens": 16},
                 {"messages": PROMPT, "max_tokens": 16, "stream": True}),
}
BACKENDS = {"OpenAI-compatible": "instant", "Ollama": "instant-ol", "Anthropic-compatible": "instant-an"}
"Upstream backend type: the model name routed to it."
DIRECT = {"OpenAI-compatible": "chat completions", "Ollama": "Ollama chat", "Anthropic-compatible": "Messages"}
"The upstream API each backend type speaks, as the protocol whose request goes to the upstream directly."


def config(upstream_port):
    """shim's configuration: one backend of each upstream type, all on the instant upstream."""
    url = f"http://127.0.0.1:{upstream_port}"
    # wrk abandons the requests in flight when it stops; bounded queues would turn the next figure's first ones away.
    return (f'embedded_model = false\nlog_level = "warning"\nresponse_store = "off"\nmax_queue = 100000\n'
            f'[backends.oa]\ntype = "openai"\nurl = "{url}/v1"\nmodels = ["instant"]\n'
            f'[backends.ol]\ntype = "ollama"\nurl = "{url}"\nmodels = ["instant-ol"]\n'
            f'[backends.an]\ntype = "anthropic"\nurl = "{url}"\nmodels = ["instant-an"]\n'
            f'[[models]]\nname = "instant-ol"\nbackend = "ol"\ntarget = "instant"\n'
            f'[[models]]\nname = "instant-an"\nbackend = "an"\ntarget = "instant"\n')


def latencies(port, path, body, count):
    """Seconds each of `count` sequential requests took, on one keep-alive connection."""
    return latencies_beside([(port, path, body)], count)[0]


LATENCY_CHUNK = 25
"Sequential requests to one target before the next target's turn, when targets are measured beside each other."


def latencies_beside(targets, count):
    """For each (port, path, body) target, seconds each of `count` sequential requests took on its own keep-alive
    connection, the targets taking turns every LATENCY_CHUNK requests (so the machine's drift falls on all alike)."""
    conns = [http.client.HTTPConnection("127.0.0.1", port) for port, _, _ in targets]
    requests_ = [(path, json.dumps(body)) for _, path, body in targets]
    times = [[] for _ in targets]
    warm, total = count // 10, count + count // 10
    for start in range(0, total, LATENCY_CHUNK):
        for conn, (path, payload), kept in zip(conns, requests_, times):
            for index in range(start, min(start + LATENCY_CHUNK, total)):
                started = time.perf_counter()
                conn.request("POST", path, payload, {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise SystemExit(f"POST {path} answered {response.status}")
                if index >= warm:
                    kept.append(time.perf_counter() - started)
    for conn in conns:
        conn.close()
    return times


def wrk(port, path, body, seconds, connections=32, pids=()):
    """(requests per second wrk measures with `connections` clients, CPU seconds the pids spent per request)."""
    if not shutil.which("wrk"):
        raise SystemExit("benchmark 3 needs wrk: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')
    before = cpu_seconds(pids)
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", script.name,
                              f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} failed responses on {path} {body}:\n{out}")
    spent = cpu_seconds(pids) - before
    count = int(re.search(r"(\d+) requests in", out).group(1))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), spent / max(count, 1)


def cpu_seconds(pids):
    """User + system CPU seconds the processes have used (those that have exited count nothing)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def listening_pids(port):
    """The processes holding the listening socket of port (a gunicorn master and its workers)."""
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    return sorted({int(pid) for pid in re.findall(r"pid=(\d+)", out)})


@contextlib.contextmanager
def bare_app(kind="flask"):
    """bench.bare_app (its Flask view, or its WSGI callable) under gunicorn in a subprocess; yields its port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.bare_app", str(port), kind], stdout=subprocess.DEVNULL,
                            cwd=os.path.dirname(os.path.dirname(__file__)), start_new_session=True)
    try:
        for _ in range(200):
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                    break
            time.sleep(0.1)
        yield port
    finally:
        os.killpg(proc.pid, 15)
        proc.wait()


def served(name, protocols):
    """Whether a shim serves the protocol (its route answers something other than 404)."""
    path = PROTOCOLS[name][0]
    return requests.post(f"http://127.0.0.1:{protocols}{path}", json={}, timeout=5).status_code != 404


BARE = {"flask": "bare Flask, same gunicorn + gevent", "wsgi": "bare WSGI callable, same gunicorn + gevent"}


def rows(up, bares, shims):
    """(row name, port, path, JSON body, stream body, upstream API it compares with) of every row to measure."""
    found = []
    for api in ("chat completions", "Ollama chat", "Messages"):
        path, body, stream = PROTOCOLS[api]
        found.append((f"upstream direct ({api} API)", up, path, {**body, "model": "instant"},
                      {**stream, "model": "instant", "stream": True}, None))
    path, body, stream = PROTOCOLS["chat completions"]
    found += [(BARE[kind], port, path, body, stream, "chat completions") for kind, port in bares]
    for label, port in shims:
        for protocol, (path, body, stream) in PROTOCOLS.items():
            if not served(protocol, port):
                continue
            for backend, model in BACKENDS.items():
                found.append((f"{label}: {protocol} → {backend}", port, path, {**body, "model": model},
                              {**stream, "model": model}, DIRECT[backend]))
    only = re.compile(os.environ.get("BENCH_ONLY", ""))
    return [r for r in found if only.search(r[0]) or not r[5] or r[0].startswith("bare")]


def in_turn(table, round_):
    """The rows in the order a round measures them: each baseline row beside the same row of this tree, which goes
    first in every other round, so the machine's drift over a round falls on both alike."""
    named = {row[0]: row for row in table}
    order = []
    for row in table:
        twin = named.get("baseline: " + row[0].removeprefix("shim: ")) if row[0].startswith("shim: ") else None
        if not row[0].startswith("baseline: "):
            order += [row] if twin is None else [row, twin] if round_ % 2 == 0 else [twin, row]
    return order


def measure(table, rounds, seconds, count):
    """{row name: (latencies, [JSON req/s], [streams/s], latencies of its upstream taken beside its own)}, the rows
    taken in turn, round after round."""
    results = {name: ([], [], [], []) for name, *_ in table}
    directs = {name: (port, path, body) for name, port, path, body, *_ in table if name.startswith("upstream direct")}
    for round_ in range(rounds):
        for name, port, path, body, stream, compare in in_turn(table, round_):
            lat, json_rate, stream_rate, beside = results[name]
            pids = listening_pids(port)
            direct = directs.get(f"upstream direct ({compare} API)") if compare else None
            if direct is None:
                lat.extend(latencies(port, path, body, count))
            else:  # the upstream's own latency taken in turns with the row's: added p50 is the difference of the two
                own, upstream = latencies_beside([(port, path, body), direct], count)
                lat.extend(own)
                beside.extend(upstream)
            json_rate.append(wrk(port, path, body, seconds, pids=pids))
            stream_rate.append(wrk(port, path, stream, seconds, pids=pids))
            print(f"round {round_ + 1}: {name}: p50 {median(lat) * 1000:.2f} ms, {json_rate[-1][0]:.0f} req/s "
                  f"({json_rate[-1][1] * 1e6:.0f} µs CPU each), {stream_rate[-1][0]:.0f} streams/s "
                  f"({stream_rate[-1][1] * 1e6:.0f} µs), load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return results


def render(table, results):
    """The markdown table: p50 and added p50 at 1 client, JSON req/s and 16-token streams/s at 32 clients."""
    lines = ["| path | p50, 1 client | added p50 | added p99 | JSON req/s, 32 clients (CPU per request) | "
             "16-token streams/s, 32 clients (CPU per stream) |", "|---|---|---|---|---|---|"]
    for name, *_, compare in table:
        lat, json_rate, stream_rate, beside = results[name]
        added = added99 = "—"
        if compare:
            upstream = beside or results[f"upstream direct ({compare} API)"][0]
            added = f"+{(median(lat) - median(upstream)) * 1000:.2f} ms"
            added99 = f"+{(pct(lat, 99) - pct(upstream, 99)) * 1000:.2f} ms"
        lines.append(f"| {name} | {median(lat) * 1000:.2f} ms | {added} | {added99} | {_rate(json_rate)} | "
                     f"{_rate(stream_rate)} |")
    return "\n".join(lines)


def _rate(figures):
    """Median rate and median CPU per request of (rate, CPU seconds per request) figures."""
    return f"{median([f[0] for f in figures]):.0f} ({median([f[1] for f in figures]) * 1e6:.0f} µs)"


def run():
    """Benchmark 3 as a markdown table."""
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    seconds = int(os.environ.get("BENCH_SECONDS", "5"))
    count = int(os.environ.get("BENCH_COUNT", "1000"))
    baseline = os.environ.get("BENCH_BASELINE")
    with contextlib.ExitStack() as stack:
        up = stack.enter_context(instant_upstream())
        bares = [(kind, stack.enter_context(bare_app(kind))) for kind in BARE]
        shims = [("shim", stack.enter_context(running_shim(config(up))))]
        if baseline:
            shims.append(("baseline", stack.enter_context(running_shim(config(up), cwd=baseline))))
        shims = [(label, int(url.rsplit(":", 1)[1])) for label, url in shims]
        table = rows(up, bares, shims)
        return render(table, measure(table, rounds, seconds, count))
