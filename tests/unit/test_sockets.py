"""sendall on gevent sockets: one plain send when the buffer takes it all, gevent's sendall for whatever is left."""
import gevent
import pytest
from gevent import socket
from gevent._socketcommon import SocketMixin

from shim import sockets


@pytest.fixture
def pair():
    ends = socket.socketpair()
    yield ends
    for end in ends:
        end.close()


@pytest.fixture
def sizes_asked(monkeypatch):
    """Every getsockopt gevent's sendall makes on any gevent socket."""
    asked = []
    real = SocketMixin.getsockopt
    monkeypatch.setattr(SocketMixin, "getsockopt", lambda self, *args: asked.append(args) or real(self, *args))
    return asked


def test_a_write_the_buffer_takes_whole_is_one_send_without_asking_the_buffer_size(pair, sizes_asked):
    sockets.sendall(pair[0], b"HTTP/1.1 200 OK\r\n\r\n{}")
    assert pair[1].recv(100) == b"HTTP/1.1 200 OK\r\n\r\n{}"
    assert sizes_asked == []


def test_a_write_larger_than_the_buffer_arrives_whole_and_in_order_to_a_slow_reader(pair, sizes_asked):
    payload = bytes(range(256)) * 16384  # 4 MiB: many times a socket's send buffer
    received = bytearray()

    def drain():
        while len(received) < len(payload):
            gevent.sleep(0.001)
            received.extend(pair[1].recv(65536))
    reader = gevent.spawn(drain)
    sockets.sendall(pair[0], payload)
    reader.join(timeout=30)
    assert bytes(received) == payload
    assert sizes_asked  # the rest went through gevent's sendall


def test_a_write_nobody_reads_still_times_out(pair):
    pair[0].settimeout(0.2)
    with pytest.raises(TimeoutError):
        sockets.sendall(pair[0], b"x" * (16 << 20))


def test_a_socket_of_another_kind_uses_its_own_sendall():
    """A TLS socket is a gevent socket's subclass: the bytes must go through its encryption, not beneath it."""
    class Tls(socket.socket):
        def sendall(self, data, *flags):
            self.written = bytes(data)
    with Tls() as tls:
        sockets.sendall(tls, b"secret")
        assert tls.written == b"secret"
