"""Real nginx (Debian's package) in front of real gunicorn, configured as docs/deployment.md says."""
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

from harness.servers import free_port, running_shim
from tests.support import slow_upstream

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (scripts/dev.sh test installs it)")
SITE = Path(__file__).resolve().parents[2] / "deploy" / "nginx-shim.conf"
MODEL = "smollm2:135m"


def nginx_conf(tmp, shim_port, listen_port, read_timeout=True):
    """A whole nginx.conf around the deployment's site file, pointed at shim_port."""
    site = SITE.read_text().replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{shim_port};")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen_port};")
    if not read_timeout:  # nginx's default 60 s read timeout, as in a config that forgot to raise it
        site = "\n".join(line for line in site.splitlines() if "proxy_read_timeout" not in line)
    temp = "\n".join(f"    {kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                          "scgi"))
    return (f"daemon off;\nworker_processes 1;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\n"
            f"events {{ worker_connections 256; }}\nhttp {{\n    access_log off;\n{temp}\n{site}\n}}\n")


class Nginx:
    """nginx running in the foreground with a config in a temporary directory."""

    def __init__(self, tmp, shim_port, read_timeout=True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(nginx_conf(tmp, shim_port, self.port, read_timeout))
        self.proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(tmp)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if requests.get(self.url + "/health", timeout=1).status_code in (200, 502):
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx did not start: {self.proc.stderr.read1().decode()}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def shim():
    with running_shim() as url:
        yield url


@pytest.fixture(scope="module")
def proxy(shim, tmp_path_factory):
    nginx = Nginx(tmp_path_factory.mktemp("nginx"), int(shim.rsplit(":", 1)[1]))
    yield nginx
    nginx.stop()


def arrival_times(response, started=None):
    """(seconds since `started` (default: now), line) for each non-empty line as it arrives."""
    started = started or time.perf_counter()
    return [(time.perf_counter() - started, line) for line in response.iter_lines() if line]


def test_sse_chunks_pass_nginx_while_generating(proxy):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": 150,
            "temperature": 0, "stream": True}
    with requests.post(proxy.url + "/v1/chat/completions", json=body, stream=True, timeout=60) as response:
        times = arrival_times(response)
    data = [t for t, line in times if line.startswith(b"data: {")]
    assert times[-1][1] == b"data: [DONE]"
    assert data[0] < 0.5 * data[-1], f"first chunk at {data[0]:.2f}s, last at {data[-1]:.2f}s: buffered"
    assert len({round(t, 2) for t in data}) > 50, "chunks must arrive one by one"


def test_ndjson_chunks_pass_nginx_while_generating(proxy):
    body = {"model": MODEL, "prompt": "Write a long story.", "options": {"num_predict": 150, "temperature": 0}}
    with requests.post(proxy.url + "/api/generate", json=body, stream=True, timeout=60) as response:
        times = arrival_times(response)
    assert json.loads(times[-1][1])["done"] is True
    assert times[0][0] < 0.5 * times[-1][0], f"first line at {times[0][0]:.2f}s, last at {times[-1][0]:.2f}s"


def test_client_keep_alive_through_nginx(proxy):
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    conn.connect()
    first_socket = conn.sock
    for _ in range(3):
        conn.request("GET", "/api/tags")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["models"]
        assert not response.will_close
    assert conn.sock is first_socket
    conn.close()


def test_silent_stream_outlives_nginx_default_read_timeout(tmp_path):
    """65 s without a token, behind nginx's default 60 s read timeout: the SSE heartbeats keep it open."""
    upstream = slow_upstream(65)
    config = (f'embedded_model = false\n[backends.slow]\ntype = "openai"\n'
              f'url = "http://127.0.0.1:{upstream.server_port}/v1"\nread_timeout = 120\n')
    try:
        with running_shim(config, env={"SHIM_HEARTBEAT_SECONDS": "5"}) as url:
            nginx = Nginx(tmp_path, int(url.rsplit(":", 1)[1]), read_timeout=False)
            try:
                body = {"model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": True}
                started = time.perf_counter()
                with requests.post(nginx.url + "/v1/chat/completions", json=body, stream=True,
                                   timeout=120) as response:
                    times = arrival_times(response, started)
            finally:
                nginx.stop()
    finally:
        upstream.shutdown()
    pings = [t for t, line in times if line == b": ping"]
    content = [json.loads(line[6:]) for _, line in times if line.startswith(b"data: {")]
    assert len(pings) >= 10 and times[-1][0] > 60
    assert content[0]["choices"][0]["delta"]["content"] == "late answer"
    assert times[-1][1] == b"data: [DONE]"


def test_nginx_absorbs_clients_that_never_send_their_body(tmp_path):
    """200 stalled bodies at nginx, in front of a shim that could hold only 50 of them: shim never sees them."""
    with running_shim("embedded_model = false\n", env={"SHIM_WORKER_CONNECTIONS": "50", "SHIM_BODY_TIMEOUT": "600",
                                                       "SHIM_LOG_LEVEL": "info"}) as url:
        nginx = Nginx(tmp_path, int(url.rsplit(":", 1)[1]))
        head = (b"POST /api/chat HTTP/1.1\r\nHost: shim\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{\"model\"")
        stalled = [socket.create_connection(("127.0.0.1", nginx.port)) for _ in range(200)]
        try:
            for sock in stalled:
                sock.sendall(head)
            time.sleep(1)
            started = time.perf_counter()
            assert requests.get(nginx.url + "/health", timeout=10).ok
            waited = time.perf_counter() - started
        finally:
            for sock in stalled:
                sock.close()
            nginx.stop()
        assert waited < 1, f"/health through nginx took {waited:.2f} s"
        assert "/api/chat" not in url.log_text(), "nginx passed on a request whose body had not arrived"
