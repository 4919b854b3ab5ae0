"""Benchmark 4: how many slow SSE streams one worker holds, and the memory each costs.

Environment: BENCH_BASELINE (another source tree of shim, measured after this one), BENCH_HEARTBEATS (the
heartbeat_seconds settings to measure, "10,0"), BENCH_BACKEND (the upstream backend type the streams go through:
"openai", the default, or "ollama").
"""
import asyncio
import json
import os
import resource

from .common import instant_upstream, rss_kb, running_shim

BODY = json.dumps({"model": "instant", "messages": [{"role": "user", "content": "hi"}], "stream": True}).encode()


async def open_stream(port, opened, done):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
    await writer.drain()
    await reader.readuntil(b"data: ")
    opened.append(1)
    try:
        body = await reader.readuntil(b"data: [DONE]")
        done.append(body.count(b'"content"'))
    finally:
        writer.close()


async def hold(port, count, worker_pid):
    opened, done = [], []
    tasks = [asyncio.create_task(open_stream(port, opened, done)) for _ in range(count)]
    while len(opened) < count:
        failed = [t for t in tasks if t.done() and t.exception()]
        if failed:
            raise SystemExit(f"{len(failed)} streams failed, e.g. {failed[0].exception()!r}")
        await asyncio.sleep(0.2)
    rss = rss_kb(worker_pid)
    await asyncio.gather(*tasks)
    return rss, len(done), min(done)


def worker_pid(master_pid):
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as fh:
        return int(fh.read().split()[0])


def run(counts=(1, 1000)):
    """Benchmark 4 as markdown tables: with SSE heartbeats (the default), and with them off."""
    baseline = os.environ.get("BENCH_BASELINE")
    trees = [("shim", None)] + ([("baseline", baseline)] if baseline else [])
    beats = os.environ.get("BENCH_HEARTBEATS", "10,0").split(",")
    return "\n\n".join(f"{label}, heartbeat_seconds = {beat}:\n\n" + held(counts, beat, tree)
                        for beat in beats for label, tree in trees)


def held(counts, heartbeat, tree=None):
    """How many slow streams one worker holds, and their memory, with the given heartbeat setting."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the servers started below inherit it
    lines = ["| open SSE streams | worker RSS | per stream | streams completed |", "|---|---|---|---|"]
    # Each upstream chunk comes 1 s after the last: 18 chunks, so every stream stays open about 18 s.
    with instant_upstream(delay=1.0) as up:
        kind = os.environ.get("BENCH_BACKEND", "openai")
        path = "/v1" if kind == "openai" else ""
        config = (f'embedded_model = false\nlog_level = "warning"\n[backends.up]\ntype = "{kind}"\n'
                  f'url = "http://127.0.0.1:{up}{path}"\nmodels = ["instant"]\n')
        # The per-model queue bound would turn most of these streams away; here every one of them is wanted.
        with running_shim(config, env={"SHIM_MAX_QUEUE": "100000", "SHIM_HEARTBEAT_SECONDS": heartbeat},
                          cwd=tree) as url:
            port = int(url.rsplit(":", 1)[1])
            pid = worker_pid(url.proc.pid)
            base = rss_kb(pid)
            for count in counts:
                rss, completed, least = asyncio.run(hold(port, count, pid))
                lines.append(f"| {count} | {rss / 1024:.1f} MiB | {(rss - base) / count:.1f} KiB | "
                             f"{completed}/{count} (each ≥ {least} tokens) |")
    return "\n".join(lines)
