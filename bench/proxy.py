"""Benchmark 3: what shim adds in front of an upstream that answers at once (one gunicorn worker)."""
import http.client
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

from .common import instant_upstream, median, pct, running_shim

CHAT = {"model": "instant", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
OLLAMA_CHAT = {"model": "instant", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def latencies(port, path, body, count=2000):
    """Seconds each of `count` sequential requests took, on one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    payload = json.dumps(body)
    headers = {"Content-Type": "application/json"}
    times = []
    for i in range(count + 200):
        started = time.perf_counter()
        conn.request("POST", path, payload, headers)
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status
        if i >= 200:  # warm-up
            times.append(time.perf_counter() - started)
    conn.close()
    return times


def wrk(port, path, body, connections=32, seconds=10):
    """Requests per second wrk measures with `connections` clients."""
    if not shutil.which("wrk"):
        raise SystemExit("benchmark 3 needs wrk: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n'
                     'wrk.headers["Content-Type"] = "application/json"\n')
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "-s", script.name,
                              f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} failed responses:\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def config(upstream_port):
    return (f'embedded_model = false\nlog_level = "warning"\n'
            f'[backends.oa]\ntype = "openai"\nurl = "http://127.0.0.1:{upstream_port}/v1"\nmodels = ["instant"]\n'
            f'[backends.ol]\ntype = "ollama"\nurl = "http://127.0.0.1:{upstream_port}"\nmodels = ["instant-ol"]\n'
            f'[[models]]\nname = "instant-ol"\nbackend = "ol"\ntarget = "instant"\n')


def run():
    """Benchmark 3 as markdown tables."""
    with instant_upstream() as up:
        with running_shim(config(up), env={"SHIM_LOG_LEVEL": "warning"}) as url:
            shim_port = int(url.rsplit(":", 1)[1])
            ol_chat = {**OLLAMA_CHAT, "model": "instant-ol"}
            rows = []
            direct = latencies(up, "/v1/chat/completions", CHAT)
            via = latencies(shim_port, "/v1/chat/completions", CHAT)
            rows.append(("OpenAI client → shim → OpenAI-compatible upstream", direct, via))
            direct = latencies(up, "/api/chat", OLLAMA_CHAT)
            via = latencies(shim_port, "/api/chat", ol_chat)
            rows.append(("Ollama client → shim → Ollama upstream", direct, via))
            lines = ["| path | direct p50 | via shim p50 | added p50 | added p99 |", "|---|---|---|---|---|"]
            for name, d, v in rows:
                lines.append(f"| {name} | {median(d) * 1000:.2f} ms | {median(v) * 1000:.2f} ms | "
                             f"+{(median(v) - median(d)) * 1000:.2f} ms | +{(pct(v, 99) - pct(d, 99)) * 1000:.2f} ms |")
            stream = {**CHAT, "stream": True}
            throughput = [
                ("requests/s, 32 clients (JSON)", wrk(up, "/v1/chat/completions", CHAT),
                 wrk(shim_port, "/v1/chat/completions", CHAT)),
                ("16-token streams/s, 32 clients (SSE)", wrk(up, "/v1/chat/completions", stream),
                 wrk(shim_port, "/v1/chat/completions", stream)),
            ]
            lines += ["", "| load (one gunicorn worker) | upstream direct | via shim |", "|---|---|---|"]
            lines += [f"| {name} | {d:.0f} | {v:.0f} |" for name, d, v in throughput]
            return "\n".join(lines)
