"""gunicorn's gevent worker, sending each response's head together with the first piece of its body."""
from gunicorn.workers.ggevent import GeventWorker

from .sockets import sendall


class Worker(GeventWorker):
    """The gevent worker, its responses' heads held until their first body write (one send instead of two)."""

    def handle_request(self, listener_name, req, sock, addr):
        """Handle one request on a socket that holds the response head back until the body follows it."""
        # gunicorn writes the head and every body piece with a sendall each: for a JSON answer that is two sends,
        # and a send on a busy worker costs about as much as a tenth of the rest of the request (measured).
        held = HeadHeld(sock)
        try:
            return super().handle_request(listener_name, req, held, addr)
        finally:
            held.flush()


class HeadHeld:
    """A socket whose first sendall is held and sent with the next one; any other use sends it first."""

    def __init__(self, sock):
        self._sock_of_response = sock
        self._head = b""
        self._first = True

    def sendall(self, data, *flags):
        """Hold the first write (the head); send it with the second."""
        if self._first:
            self._first = False
            self._head = bytes(data)
            return None
        if self._head:
            data, self._head = self._head + data, b""
        return sendall(self._sock_of_response, data, *flags)

    def flush(self):
        """Send a head that is still held."""
        self._first = False
        if self._head:
            head, self._head = self._head, b""
            sendall(self._sock_of_response, head)

    def __getattr__(self, name):
        # Anything else (sendfile, fileno, close, timeouts) sees the socket as if every write had gone out.
        self.flush()
        return getattr(self._sock_of_response, name)
