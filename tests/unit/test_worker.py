"""The gunicorn worker's socket wrapper: a response's head leaves with the first piece of its body."""
from shim.worker import HeadHeld


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
