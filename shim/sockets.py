"""sendall on a gevent socket, without the system call gevent's own sendall makes before every send."""
from gevent.socket import socket as GeventSocket


def sendall(sock, data, *flags):
    """sock.sendall(data), tried first as one send on the non-blocking socket beneath a plain gevent socket."""
    # gevent's sendall asks the kernel for the send buffer's size (getsockopt SO_SNDBUF) on every call, to size
    # chunks: measured, about 3% of a proxying worker's CPU. Most writes fit the buffer whole in one send; what
    # does not (a full buffer, a partial send) goes through gevent's sendall, its waiting and timeout unchanged.
    # Only a plain gevent socket: beneath a TLS one, _sock would carry the bytes unencrypted.
    if type(sock) is GeventSocket and data:
        try:
            sent = sock._sock.send(data, *flags)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return None
        data = memoryview(data)[sent:]
    return sock.sendall(data, *flags)
