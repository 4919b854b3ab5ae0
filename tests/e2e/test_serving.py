"""Shim as packaged and served: the wheel's contents, `shim --version`, gunicorn's own command as
docs/deployment.md gives it, and clients that never finish sending a body (against real gunicorn)."""
import contextlib
import importlib.metadata
import os
import pathlib
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile

import pytest
import requests

from harness.servers import ServerURL, _wait_ready, free_port, running_shim, stop
from shim.app import create_app
from shim.config import Settings
from shim.errors import ConfigError
from tests.support import slow_upstream

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_version_flag_prints_the_installed_version():
    out = subprocess.run([sys.executable, "-m", "shim", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"shim {importlib.metadata.version('shim')}"


def test_api_version_reports_the_ollama_version_setting():
    def reported(**settings):
        app = create_app(Settings(embedded_model=False, **settings), router=None)
        return app.test_client().get("/api/version")
    default = reported()
    assert default.get_json() == {"version": "0.13.5"} and default.headers["X-Shim-Version"]
    assert reported(ollama_version="0.14.2").get_json() == {"version": "0.14.2"}
    assert Settings.load(environ={"SHIM_OLLAMA_VERSION": "0.12.11"}).ollama_version == "0.12.11"
    with pytest.raises(ConfigError, match="ollama_version"):
        Settings.load(environ={"SHIM_OLLAMA_VERSION": "latest"})


def copy_of_the_checkout(dest):
    """The files git knows of (tracked or not ignored), copied to dest: a build there leaves the checkout alone."""
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in names:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


def test_wheel_holds_every_module_and_the_gevent_worker_requirements(tmp_path):
    source = copy_of_the_checkout(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
                    "-w", str(tmp_path), str(source)], check=True, timeout=300)
    wheel = next(tmp_path.glob("shim-*.whl"))
    checked = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_install.py"), "contents", str(wheel)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    with zipfile.ZipFile(wheel) as whl:
        metadata = next(whl.read(n).decode() for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
    assert re.search(r"^Requires-Dist: gunicorn\[gevent\]", metadata, re.M), metadata


def documented_gunicorn_args():
    """The arguments docs/deployment.md gives the gunicorn command."""
    doc = (ROOT / "docs" / "deployment.md").read_text()
    words = shlex.split(next(line for line in doc.splitlines() if "/bin/gunicorn " in line))
    return words[next(i for i, w in enumerate(words) if w.endswith("/bin/gunicorn")) + 1:]


def ask_slowly(url):
    """A request the slow upstream keeps waiting; however it ends (the server will stop under it) is fine."""
    with contextlib.suppress(requests.RequestException):
        requests.post(url + "/v1/chat/completions", timeout=60, json={
            "model": "slow", "messages": [{"role": "user", "content": "hi"}], "stream": True})


THREADS = re.compile(r"worker (\d+): (\d+) workers, (\d+) llama.cpp threads per model")


def test_documented_gunicorn_command_shares_the_cores_and_honours_the_graceful_timeout(tmp_path):
    args = documented_gunicorn_args()
    assert args[args.index("-w") + 1] == "2"
    upstream = slow_upstream(40)
    config = tmp_path / "shim.toml"
    config.write_text(f'[backends.slow]\ntype = "openai"\nurl = "http://127.0.0.1:{upstream.server_port}/v1"\n'
                      'models = ["slow"]\n')
    port = free_port()
    env = {**os.environ, "SHIM_CONFIG": str(config), "SHIM_PORT": str(port), "SHIM_GRACEFUL_TIMEOUT": "3",
           "SHIM_LOG_LEVEL": "info"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    gunicorn = pathlib.Path(sys.executable).parent / "gunicorn"
    log = open(tmp_path / "server.log", "w+")
    # From a directory outside the checkout: the installed package is all the command needs.
    proc = subprocess.Popen([str(gunicorn), *args], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = ServerURL(f"http://127.0.0.1:{port}")
    url.proc, url.log_path = proc, log.name
    try:
        _wait_ready(url, proc, log)
        deadline = time.monotonic() + 60
        while len(THREADS.findall(url.log_text())) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = THREADS.findall(url.log_text())
        assert len({pid for pid, _, _ in workers}) == 2, url.log_text()
        assert {(n, int(t)) for _, n, t in workers} == {("2", max(1, os.cpu_count() // 2))}
        threading.Thread(target=ask_slowly, args=(url,), daemon=True).start()
        time.sleep(1)
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(40)
        waited = time.monotonic() - started
        assert 2.5 <= waited <= 8, f"SHIM_GRACEFUL_TIMEOUT=3, yet the server took {waited:.1f} s to stop"
        assert "Traceback" not in url.log_text(), url.log_text()
    finally:
        stop(proc)
        log.close()
        upstream.shutdown()


@pytest.fixture(scope="module")
def strict():
    """A shim that waits 2 s for a stalled body and holds at most 100 connections."""
    with running_shim("embedded_model = false\n", env={"SHIM_BODY_TIMEOUT": "2", "SHIM_WORKER_CONNECTIONS": "100",
                                                       "SHIM_LOG_LEVEL": "info"}) as url:
        yield url


def read_to_end(sock, deadline):
    """Everything the server sends until it closes the connection."""
    data = b""
    while True:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_bodies_that_never_arrive_time_out_and_free_their_connections(strict):
    port = int(strict.rsplit(":", 1)[1])
    head = (b"POST /api/chat HTTP/1.1\r\nHost: shim\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"model\"")
    stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
    try:
        for sock in stalled:
            sock.sendall(head)
        started = time.monotonic()
        assert requests.get(strict + "/health", timeout=30).ok
        waited = time.monotonic() - started
        deadline = time.monotonic() + 15
        answers = [read_to_end(sock, deadline) for sock in stalled]
    finally:
        for sock in stalled:
            sock.close()
    assert waited < 10, f"/health took {waited:.1f} s behind 200 stalled bodies"
    assert all(a.startswith(b"HTTP/1.1 408 ") and b'"error":' in a for a in answers), answers[0]
    assert "unhandled error" not in strict.log_text()


def test_a_chunked_body_cut_off_is_a_400_not_an_unhandled_error(strict):
    port = int(strict.rsplit(":", 1)[1])
    for path in (b"/api/chat", b"/v1/chat/completions"):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: shim\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n20\r\n{\"model\": \"smo")
    deadline = time.monotonic() + 10
    while strict.log_text().count('HTTP/1.1" 400') < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    log = strict.log_text()
    assert '"POST /api/chat HTTP/1.1" 400' in log and '"POST /v1/chat/completions HTTP/1.1" 400' in log, log
    assert "unhandled error" not in log and "Traceback" not in log, log


def test_the_access_logger_writes_the_line_gunicorns_own_logger_writes():
    import datetime
    import types

    from gunicorn import glogging
    from gunicorn.config import Config

    from shim.server import ACCESS_LOG_FORMAT, AccessLogger
    cfg = Config()
    cfg.set("access_log_format", ACCESS_LOG_FORMAT)
    resp = types.SimpleNamespace(status="200 OK", sent=4105, headers=[("Content-Type", "text/plain"),
                                                                        ("X-Request-ID", 'req-"7"')])
    environ = {"REMOTE_ADDR": "10.0.0.1", "REQUEST_METHOD": "POST", "RAW_URI": '/v1/chat/completions?a="b"',
               "SERVER_PROTOCOL": "HTTP/1.1", "PATH_INFO": "/v1/chat/completions", "HTTP_USER_AGENT": "x"}
    req = types.SimpleNamespace(headers=[("USER-AGENT", "x")])
    took = datetime.timedelta(seconds=1, microseconds=234567)

    def line(logger_class, response):
        logger = logger_class(cfg)
        return ACCESS_LOG_FORMAT % logger.atoms_wrapper_class(logger.atoms(response, req, environ, took))
    assert line(AccessLogger, resp) == line(glogging.Logger, resp) == \
        '10.0.0.1 "POST /v1/chat/completions?a=\\"b\\" HTTP/1.1" 200 4105 1234ms id=req-\\"7\\"'
    bare = types.SimpleNamespace(status=499, sent=None, headers=[])
    assert line(AccessLogger, bare) == line(glogging.Logger, bare) == \
        '10.0.0.1 "POST /v1/chat/completions?a=\\"b\\" HTTP/1.1" 499 - 1234ms id=-'


def test_the_access_line_goes_straight_to_a_plain_stream_as_logging_would_write_it(monkeypatch):
    import datetime
    import io
    import logging
    import types

    from gunicorn import glogging
    from gunicorn.config import Config

    from shim.server import ACCESS_LOG_FORMAT, AccessLogger
    cfg = Config()
    cfg.set("accesslog", "-")
    cfg.set("access_log_format", ACCESS_LOG_FORMAT)
    resp = types.SimpleNamespace(status="200 OK", sent=12, headers=[("X-Request-ID", "r1")])
    environ = {"REMOTE_ADDR": "10.0.0.1", "REQUEST_METHOD": "POST", "RAW_URI": "/api/chat",
               "SERVER_PROTOCOL": "HTTP/1.1"}
    took = datetime.timedelta(microseconds=2500)
    monkeypatch.setattr(logging.getLogger("gunicorn.access"), "handlers", [])  # pytest's capture adds its own

    def written(logger_class, handler_filter=None):
        logger = logger_class(cfg)
        handler = logger.access_log.handlers[0]
        handler.stream = io.StringIO()
        if handler_filter:
            handler.addFilter(handler_filter)
        logger.access(resp, types.SimpleNamespace(headers=[]), environ, took)
        return logger, handler.stream.getvalue()
    ours, line = written(AccessLogger)
    assert ours._plain_access_stream() is not None
    assert line == written(glogging.Logger)[1] == '10.0.0.1 "POST /api/chat HTTP/1.1" 200 12 2ms id=r1\n'
    # Anything more than the plain handler (here a filter that drops the line) goes the logging module's way.
    dropping = logging.Filter("nothing")
    ours, line = written(AccessLogger, dropping)
    assert ours._plain_access_stream() is None and line == ""


def test_workers_keep_no_spawn_tree_of_their_greenlets(monkeypatch):
    import types

    import gevent

    from shim.server import post_fork
    monkeypatch.setattr(gevent.config, "track_greenlet_tree", True)
    monkeypatch.setenv("SHIM_WORKERS", "1")
    post_fork(types.SimpleNamespace(num_workers=3), None)
    assert gevent.config.track_greenlet_tree is False, "each open stream would keep its greenlets' spawn stacks"
    assert os.environ["SHIM_WORKERS"] == "3"


def test_plain_heads_and_those_left_to_gunicorn_take_turns_on_one_connection(strict):
    """The worker reads plain heads itself (shim.http1) and leaves the rest to gunicorn's parser, request by request."""
    import http.client
    conn = http.client.HTTPConnection(strict.removeprefix("http://"), timeout=10)
    unknown = b'{"model": "nope", "messages": [{"role": "user", "content": "hi"}]}'
    asked = [("GET", "/health", None, {}),
             ("POST", "/api/chat", iter([unknown[:9], unknown[9:]]), {"Transfer-Encoding": "chunked"}),
             ("POST", "/api/chat", unknown, {"Content-Type": "application/json"}),
             ("POST", "/v1/chat/completions", unknown, {"Expect": "100-continue", "X-Forwarded-Proto": "https"}),
             ("GET", "/health", None, {"X-Forwarded-Proto": "https", "X-Forwarded-Ssl": "off"})]
    answers, sockets = [], set()
    for method, path, body, headers in asked:
        conn.request(method, path, body=body, headers=headers, encode_chunked="Transfer-Encoding" in headers)
        sockets.add(id(conn.sock))
        answer = conn.getresponse()
        answers.append((answer.status, answer.read()[:40], answer.getheader("Connection")))
    assert [status for status, _, _ in answers] == [200, 404, 404, 404, 400], answers
    assert b"nope" in answers[1][1] and b"nope" in answers[2][1] and b"nope" in answers[3][1]
    assert len(sockets) == 1 and [connection for _, _, connection in answers[:4]] == ["keep-alive"] * 4
    # Pipelined: two plain heads and a chunked one in one send, answered in order.
    with socket.create_connection(("127.0.0.1", int(strict.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: s\r\n\r\n"
                     b"POST /api/chat HTTP/1.1\r\nHost: s\r\nContent-Length: %d\r\n\r\n%s"
                     b"POST /api/chat HTTP/1.1\r\nHost: s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                     b"%x\r\n%s\r\n0\r\n\r\n" % (len(unknown), unknown, len(unknown), unknown))
        replies = read_to_end(sock, time.monotonic() + 10)
    assert re.findall(rb"HTTP/1.1 (\d+)", replies) == [b"200", b"404", b"404"], replies
