"""Benchmark 3: what shim adds in front of an upstream that answers at once (one gunicorn worker).

Side by side in one run, several rounds interleaved, medians: the upstream directly, a bare Flask view and a bare WSGI
callable under the same gunicorn + gevent settings, and shim for each client protocol through each upstream backend
type. Latency at 1 client is taken two ways, each in turns with the upstream the row goes to, and a row's added p50 is
the difference of the two (the machine's drift between figures taken minutes apart would swamp it): wrk with one
connection (the issue's own method: requests back to back, from a client that costs next to nothing), and a Python
client sending LATENCY_CHUNK sequential requests a turn (its own work between requests leaves the server's caches
cold, as a slow client's would).
Environment: BENCH_ROUNDS (3), BENCH_SECONDS (wrk seconds per rate figure, 5), BENCH_LATENCY_SECONDS (wrk seconds per
1-client turn, 1; two turns a round), BENCH_COUNT (sequential requests, 1000), BENCH_ONLY (a regular expression the
row names must match), BENCH_BASELINE (another source tree of shim, whose rows are measured beside this one's,
marked "baseline").
"""
import contextlib
import dataclasses
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
    before = cpu_seconds(pids)
    out = _wrk_output(port, path, body, seconds, connections)
    spent = cpu_seconds(pids) - before
    count = int(re.search(r"(\d+) requests in", out).group(1))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), spent / max(count, 1)


def wrk_latency(port, path, body, seconds):
    """(p50, p99) in seconds of requests wrk sends back to back on one connection for `seconds`."""
    return latency_percentiles(_wrk_output(port, path, body, seconds, connections=1, latency=True))


def latency_percentiles(out):
    """(p50, p99) in seconds from the latency distribution wrk --latency prints."""
    found = []
    for percent in (50, 99):
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if match is None:
            raise SystemExit(f"wrk printed no {percent}% latency:\n{out}")
        found.append(float(match.group(1)) * _UNITS[match.group(2)])
    return tuple(found)


def wrk_latencies_beside(targets, seconds, turns=2):
    """For each (port, path, body) target, its (p50, p99) of each of `turns` wrk runs of one connection, the
    targets taking turns (so the machine's drift falls on all alike)."""
    found = [[] for _ in targets]
    for _ in range(turns):
        for (port, path, body), kept in zip(targets, found):
            kept.append(wrk_latency(port, path, body, seconds))
    return found


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
"The units of wrk's latency figures."


def _wrk_output(port, path, body, seconds, connections, latency=False):
    """What wrk prints after POSTing body to path for `seconds` with `connections` clients; failures end the run."""
    if not shutil.which("wrk"):
        raise SystemExit("benchmark 3 needs wrk: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')
    threads = min(2, connections)
    try:
        out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "-s", script.name,
                              *(["--latency"] if latency else []), f"http://127.0.0.1:{port}{path}"],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} failed responses on {path} {body}:\n{out}")
    return out


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


@dataclasses.dataclass
class Figures:
    """What the rounds measured of one row."""

    latencies: list = dataclasses.field(default_factory=list)
    "Seconds of each sequential request of the Python client."
    upstream_latencies: list = dataclasses.field(default_factory=list)
    "The same, of the upstream the row goes to, taken in turns with the row's."
    wrk_latencies: list = dataclasses.field(default_factory=list)
    "(p50, p99) in seconds of each wrk run of one connection."
    upstream_wrk_latencies: list = dataclasses.field(default_factory=list)
    "The same, of the upstream, taken in turns with the row's."
    json_rates: list = dataclasses.field(default_factory=list)
    "(requests/s, CPU seconds per request) of each wrk run of 32 clients, JSON answers."
    stream_rates: list = dataclasses.field(default_factory=list)
    "The same, 16-token streams."


def measure(table, rounds, seconds, count, latency_seconds=1):
    """{row name: Figures}, the rows taken in turn, round after round."""
    results = {name: Figures() for name, *_ in table}
    directs = {name: (port, path, body) for name, port, path, body, *_ in table if name.startswith("upstream direct")}
    for round_ in range(rounds):
        for name, port, path, body, stream, compare in in_turn(table, round_):
            got = results[name]
            pids = listening_pids(port)
            direct = directs.get(f"upstream direct ({compare} API)") if compare else None
            # The upstream's own latency taken in turns with the row's: added p50 is the difference of the two.
            targets = [(port, path, body)] + ([direct] if direct else [])
            by_wrk = wrk_latencies_beside(targets, latency_seconds)
            by_client = latencies_beside(targets, count)
            got.wrk_latencies.extend(by_wrk[0])
            got.latencies.extend(by_client[0])
            if direct:
                got.upstream_wrk_latencies.extend(by_wrk[1])
                got.upstream_latencies.extend(by_client[1])
            got.json_rates.append(wrk(port, path, body, seconds, pids=pids))
            got.stream_rates.append(wrk(port, path, stream, seconds, pids=pids))
            print(f"round {round_ + 1}: {name}: p50 {_wrk_p50(got.wrk_latencies) * 1000:.3f} ms by wrk, "
                  f"{median(got.latencies) * 1000:.2f} ms by the Python client, {got.json_rates[-1][0]:.0f} req/s "
                  f"({got.json_rates[-1][1] * 1e6:.0f} µs CPU each), {got.stream_rates[-1][0]:.0f} streams/s "
                  f"({got.stream_rates[-1][1] * 1e6:.0f} µs), load {os.getloadavg()[0]:.1f}", file=sys.stderr)
    return results


def render(table, results):
    """The markdown table: p50 and added p50 at 1 client (by wrk, and by a Python client), JSON req/s and 16-token
    streams/s at 32 clients."""
    lines = ["| path | p50, 1 client (wrk) | added p50 (wrk) | p50, 1 client (Python client) | added p50 (Python "
             "client) | added p99 (Python client) | JSON req/s, 32 clients (CPU per request) | 16-token streams/s, "
             "32 clients (CPU per stream) |", "|---|---|---|---|---|---|---|---|"]
    for name, *_, compare in table:
        got = results[name]
        added_wrk = added = added99 = "—"
        if compare:
            added_wrk = f"{(_wrk_p50(got.wrk_latencies) - _wrk_p50(got.upstream_wrk_latencies)) * 1000:+.3f} ms"
            added = f"{(median(got.latencies) - median(got.upstream_latencies)) * 1000:+.2f} ms"
            added99 = f"{(pct(got.latencies, 99) - pct(got.upstream_latencies, 99)) * 1000:+.2f} ms"
        lines.append(f"| {name} | {_wrk_p50(got.wrk_latencies) * 1000:.3f} ms | {added_wrk} | "
                     f"{median(got.latencies) * 1000:.2f} ms | {added} | {added99} | {_rate(got.json_rates)} | "
                     f"{_rate(got.stream_rates)} |")
    return "\n".join(lines)


def _wrk_p50(figures):
    """The median of wrk runs' p50s."""
    return median([p50 for p50, _ in figures])


def _rate(figures):
    """Median rate and median CPU per request of (rate, CPU seconds per request) figures."""
    return f"{median([f[0] for f in figures]):.0f} ({median([f[1] for f in figures]) * 1e6:.0f} µs)"


def run():
    """Benchmark 3 as a markdown table."""
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    seconds = int(os.environ.get("BENCH_SECONDS", "5"))
    count = int(os.environ.get("BENCH_COUNT", "1000"))
    latency_seconds = int(os.environ.get("BENCH_LATENCY_SECONDS", "1"))
    baseline = os.environ.get("BENCH_BASELINE")
    with contextlib.ExitStack() as stack:
        up = stack.enter_context(instant_upstream())
        bares = [(kind, stack.enter_context(bare_app(kind))) for kind in BARE]
        shims = [("shim", stack.enter_context(running_shim(config(up))))]
        if baseline:
            shims.append(("baseline", stack.enter_context(running_shim(config(up), cwd=baseline))))
        shims = [(label, int(url.rsplit(":", 1)[1])) for label, url in shims]
        table = rows(up, bares, shims)
        return render(table, measure(table, rounds, seconds, count, latency_seconds))
