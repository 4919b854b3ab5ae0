"""The gunicorn worker: a response's head leaves with the first piece of its body; a stopping worker ends its idle
keep-alive waits."""
import socket
from types import SimpleNamespace

import gevent
from greenlet import getcurrent

from shim.worker import STOPPING_WAIT, HeadHeld, Worker


class Recording:
    """A socket that records what is sent and what else is asked of it."""

    def __init__(self):
        self.sent, self.asked = [], []

    def sendall(self, data, *flags):
        self.sent.append(bytes(data))

    def fileno(self):
        self.asked.append("fileno")
        return 7


def test_the_head_is_sent_with_the_first_body_write_and_later_writes_go_out_at_once():
    sock = Recording()
    held = HeadHeld(sock)
    held.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    assert sock.sent == []
    held.sendall(b"body")
    held.sendall(b"more")
    assert sock.sent == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"]


def test_a_head_without_a_body_goes_out_when_the_request_ends():
    sock = Recording()
    held = HeadHeld(sock)
    held.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    held.flush()
    held.flush()
    assert sock.sent == [b"HTTP/1.1 204 No Content\r\n\r\n"]


def test_any_other_use_of_the_socket_sends_the_held_head_first():
    """sendfile works on the file descriptor: the head must be on the wire before the file."""
    sock = Recording()
    held = HeadHeld(sock)
    held.sendall(b"HEAD")
    assert held.fileno() == 7
    assert sock.sent == [b"HEAD"] and sock.asked == ["fileno"]
    held.sendall(b"tail")
    assert sock.sent == [b"HEAD", b"tail"]


def test_a_use_of_the_socket_before_the_head_leaves_the_head_held_for_the_body():
    """shim's views read the socket's timeout and peek at it before they answer: the head still leaves with the body."""
    sock = Recording()
    held = HeadHeld(sock)
    assert held.fileno() == 7
    held.sendall(b"HEAD")
    assert sock.sent == []
    held.sendall(b"body")
    assert sock.sent == [b"HEADbody"]


def stopping_worker(keepalive=30):
    """A Worker with only what its keep-alive waits use (gunicorn's own setup needs an arbiter)."""
    worker = Worker.__new__(Worker)
    worker._idle, worker.alive, worker.cfg = {}, True, SimpleNamespace(keepalive=keepalive)
    return worker


def connection(worker, sock, log):
    """A connection's keep-alive wait as gunicorn's handle() has it: the block ends quietly if the wait is ended."""
    worker._idle[getcurrent()] = [sock, None]
    with worker.timeout_ctx():
        gevent.sleep(5)
        log.append("a request came")
        return
    log.append("wait ended")


def test_a_stopping_worker_ends_the_waits_with_nothing_to_read_and_only_those():
    worker = stopping_worker()
    quiet, started = socket.socketpair(), socket.socketpair()
    started[1].sendall(b"GET / HTTP/1.1\r\n")  # a next request under way: its connection is left to finish it
    logs = {"quiet": [], "started": []}
    waits = [gevent.spawn(connection, worker, quiet[0], logs["quiet"]),
             gevent.spawn(connection, worker, started[0], logs["started"])]
    gevent.sleep(0.05)
    worker.alive = False
    gevent.sleep(0.05)
    assert logs == {"quiet": ["wait ended"], "started": []} and waits[0].dead and not waits[1].dead
    gevent.killall(waits)
    for pair in (quiet, started):
        pair[0].close(), pair[1].close()


def test_waits_begun_after_the_stop_are_short_and_a_worker_not_stopping_ends_none():
    worker = stopping_worker()
    sock = socket.socketpair()
    log = []
    wait = gevent.spawn(connection, worker, sock[0], log)
    gevent.sleep(0.05)
    worker.alive = True
    gevent.sleep(0.05)
    assert log == [] and not wait.dead
    wait.kill()
    worker.alive = False
    assert worker.timeout_ctx().seconds == STOPPING_WAIT < 30
    sock[0].close(), sock[1].close()


def test_settled_settings_read_as_gunicorns_config_reads_them():
    from gunicorn.config import Config

    from shim.config import Settings
    from shim.server import gunicorn_options
    from shim.worker import SettledConfig
    cfg = Config()
    for key, value in gunicorn_options(Settings(embedded_model=False)).items():
        cfg.set(key, value)
    cfg.set("forwarded_allow_ips", "10.0.0.0/8,127.0.0.1")
    settled = SettledConfig(cfg)
    for name in cfg.settings:
        assert getattr(settled, name) == getattr(cfg, name), name
    assert settled.is_ssl == cfg.is_ssl and settled.worker_class is cfg.worker_class
    assert settled.forwarded_allow_networks() == cfg.forwarded_allow_networks()
    assert "keepalive" in vars(settled) and "worker_class" not in vars(settled)  # a setting read once; a property not


def test_a_settled_worker_reads_plain_heads_the_lean_way(monkeypatch):
    from gunicorn.config import Config
    from gunicorn.http.message import Request
    from gunicorn.http.parser import RequestParser

    from shim.http1 import PlainRequest
    from shim.worker import SettledConfig
    monkeypatch.setattr(RequestParser, "mesg_class", Request)
    worker = Worker.__new__(Worker)
    worker.cfg, worker.log = Config(), SimpleNamespace()
    worker.settle()
    assert RequestParser.mesg_class is PlainRequest
    assert isinstance(worker.cfg, SettledConfig) and worker.log.cfg is worker.cfg and worker.cfg.plain_http1
