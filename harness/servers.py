"""Start real shim servers (gunicorn + gevent), redis-server and npm CLIs, for end-to-end tests and benchmarks."""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests


class ServerURL(str):
    """A running server's base URL, carrying its process and the path of its log."""

    proc = None
    log_path = None

    def log_text(self):
        """Everything the server has logged so far."""
        with open(self.log_path) as fh:
            return fh.read()


def free_port():
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_shim(config_text=None, env=None, workers=1, cwd=None):
    """Run `python -m shim serve` (of the source tree cwd, default this one) on a free port; yields its base URL."""
    port = free_port()
    environ = {**os.environ, "SHIM_LOG_LEVEL": "warning", **(env or {})}
    args = [sys.executable, "-m", "shim", "serve", "--port", str(port), "--workers", str(workers)]
    with tempfile.TemporaryDirectory() as tmp:
        if config_text:
            path = os.path.join(tmp, "shim.toml")
            with open(path, "w") as fh:
                fh.write(config_text)
            args += ["--config", path]
        log = open(os.path.join(tmp, "server.log"), "w+")
        proc = subprocess.Popen(args, env=environ, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=cwd)
        url = ServerURL(f"http://127.0.0.1:{port}")
        url.proc, url.log_path = proc, log.name
        try:
            _wait_ready(url, proc, log)
            yield url
        finally:
            stop(proc)
            log.close()


def _wait_ready(url, proc, log, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"shim exited with {proc.returncode}:\n{log.read()}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/health", timeout=1).ok:
                return
        time.sleep(0.2)
    log.seek(0)
    raise RuntimeError(f"shim did not start within {timeout}s:\n{log.read()}")


def stop(proc, timeout=30):
    """SIGTERM the server's process group and wait for it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def npm_cli(package, command):
    """The path of npm `package`'s `command`, installed once into ~/.cache/shim-tests/<command>; skips without npm."""
    import pytest  # only the tests that install a CLI need it
    prefix = os.path.expanduser(f"~/.cache/shim-tests/{command}")
    binary = os.path.join(prefix, "node_modules", ".bin", command)
    if not os.path.exists(binary):
        if shutil.which("npm") is None:
            pytest.skip(f"npm is not installed: cannot install {package}")
        subprocess.run(["npm", "install", "--prefix", prefix, package], check=True, capture_output=True, timeout=600)
    return binary


REDIS_SERVER = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                                else None)
"Debian's redis-server binary (scripts/dev.sh test installs the package when missing), or None."


@contextlib.contextmanager
def running_redis(password=None):
    """Run a throw-away redis-server (no persistence) on a free loopback port; yields its redis:// URL."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        args = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", tmp, "--daemonize", "no", "--loglevel", "warning"]
        args += ["--requirepass", password] if password else []
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_port(port, proc)
            yield f"redis://{':' + password + '@' if password else ''}127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


def _wait_port(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"redis-server did not listen on {port} within {timeout}s")
