"""Real HTTP/1.1 upstreams on loopback for backend tests, whatever HTTP client the backend speaks through.

`FakeHTTP` is close to `responses.RequestsMock`: `add(method, url, body=..., json=..., status=...)` registers an
answer and `calls[i].request` records what was received. Being a real server it can also do what no mock of a
client library can: refuse or drop connections, send a body with Content-Length, chunked or close-delimited, in
pieces with pauses, reset the connection mid-body, stall before answering, hold an answer open after its last byte,
keep connections alive (each call records the connection it came on) and close the idle ones.
"""
import contextlib
import http
import http.client
import json as jsonlib
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

GET, POST = "GET", "POST"
FRAMINGS = ("length", "chunked", "close")
ENDS = ("finish", "reset", "close")


@dataclass
class Request:
    """One request a fake server received."""

    method: str
    url: str
    path: str
    headers: http.client.HTTPMessage
    "Case-insensitive, as received."
    body: bytes

    @property
    def json(self):
        return jsonlib.loads(self.body) if self.body else None


@dataclass
class Call:
    """A received request, the server it reached and which of that server's connections (1, 2, ...) carried it."""

    request: Request
    server: "Server"
    connection: int


@dataclass
class Answer:
    """How a fake server answers one request.

    pieces: bytes written one at a time (a chunk each when chunked); a number among them is a pause in seconds, a
    threading.Event a pause until the test sets it.
    framing: "length" (Content-Length), "chunked" or "close" (the body ends when the connection closes).
    end: "finish" ends the body properly; "reset" resets the connection (RST) and "close" closes it (FIN) before
    the body's end (with "length" framing, Content-Length then claims one byte more than is sent).
    hold: seconds to wait after the last piece before the end (an answer kept open after its last event).
    stall: seconds to wait before the status line (for read timeouts); a client that hangs up meanwhile is counted in
    its server's hang_ups and not answered. drop: close without answering.
    keep_alive: False sends `Connection: close` and closes after the answer.
    """

    status: int = 200
    headers: tuple = ()
    pieces: tuple = ()
    framing: str = "length"
    end: str = "finish"
    hold: float = 0.0
    stall: float = 0.0
    drop: bool = False
    keep_alive: bool = True

    def __post_init__(self):
        if self.framing not in FRAMINGS or self.end not in ENDS:
            raise ValueError(f"framing must be one of {FRAMINGS} and end one of {ENDS}")


@dataclass
class _Registration:
    method: str
    path: str
    answer: Answer


def pieces_of(body):
    """A body (str, bytes, or a list of str/bytes pieces and pauses) as a tuple of bytes pieces and pauses."""
    if body is None:
        return ()
    items = body if isinstance(body, (list, tuple)) else [body]
    return tuple(p.encode() if isinstance(p, str) else p for p in items)


class Server:
    """One threaded HTTP/1.1 server on a free loopback port, answering from its registrations."""

    def __init__(self, log):
        self.log = log
        self.calls = []
        self.connections = 0
        "How many connections it has accepted."
        self.hang_ups = 0
        "How many clients closed their connection while it stalled before answering them."
        self._registrations = []
        self._lock = threading.Condition()
        self._open = {}
        "socket: whether it waits for a next request (idle)."
        self._stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def add(self, method, path, answer):
        """Register an answer to method + path (query ignored)."""
        with self._lock:
            self._registrations.append(_Registration(method.upper(), path, answer))

    def close_idle_connections(self, timeout=5.0):
        """Close (FIN) every kept-alive connection once no answer is in progress, as an idle timeout would."""
        with self._lock:
            self._lock.wait_for(lambda: all(self._open.values()), timeout)
            idle = list(self._open)
        for conn in idle:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def hung_up(self, count=1, timeout=5.0):
        """Whether count clients have hung up on a stall (see Answer.stall), waiting up to timeout seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: self.hang_ups >= count, timeout)

    def close(self):
        """Stop listening and end every connection, cutting short any pause."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self._lock:
            conns = list(self._open)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _match(self, method, path):
        """The answer `responses` would pick: the first match, used up only while a later one also matches."""
        with self._lock:
            found = [r for r in self._registrations if r.method == method and r.path == path]
            if not found:
                return None
            if len(found) > 1:
                self._registrations.remove(found[0])
            return found[0].answer

    def _accept(self):
        with contextlib.suppress(OSError):
            while not self._stopping.is_set():
                conn, _ = self.listener.accept()
                with self._lock:
                    self.connections += 1
                    self._open[conn] = True
                threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _set_idle(self, conn, idle):
        with self._lock:
            self._open[conn] = idle
            self._lock.notify_all()

    def _serve(self, conn, number):
        reader = conn.makefile("rb")
        try:
            while not self._stopping.is_set():
                self._set_idle(conn, True)
                request = _read_request(reader, self.url)
                self._set_idle(conn, False)
                if request is None:
                    return
                answer = self._match(request.method, request.path)
                call = Call(request, self, number)
                with self._lock:
                    self.calls.append(call)
                    self.log.append(call)
                    if answer is None:
                        self.log.unmatched.append(call)
                if answer is None or answer.drop:
                    return
                client_keeps = request.headers.get("Connection", "").lower() != "close"
                if not self._answer(conn, answer, keep_alive=answer.keep_alive and client_keeps):
                    return
        except OSError:
            return
        finally:
            with self._lock:
                self._open.pop(conn, None)
                self._lock.notify_all()
            reader.close()
            conn.close()

    def _answer(self, conn, answer, keep_alive):
        """Send the answer; whether the connection may carry another request."""
        if answer.stall and self._stall(conn, answer.stall):
            return False
        data = [p for p in answer.pieces if isinstance(p, bytes)]
        keep_alive = keep_alive and answer.framing != "close" and answer.end == "finish"
        head = [f"HTTP/1.1 {answer.status} {_reason(answer.status)}", *(f"{k}: {v}" for k, v in answer.headers)]
        if answer.framing == "length":
            head.append(f"Content-Length: {sum(map(len, data)) + (answer.end != 'finish')}")
        elif answer.framing == "chunked":
            head.append("Transfer-Encoding: chunked")
        head.append("Connection: " + ("keep-alive" if keep_alive else "close"))
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        for piece in answer.pieces:
            if not isinstance(piece, bytes):
                if self._pause(piece):
                    return False
            elif piece:
                conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if answer.framing == "chunked" else piece)
        if self._pause(answer.hold):
            return False
        if answer.end == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if answer.end == "finish" and answer.framing == "chunked":
            conn.sendall(b"0\r\n\r\n")
        if not keep_alive:
            conn.shutdown(socket.SHUT_WR)
        return keep_alive

    def _stall(self, conn, seconds):
        """Wait seconds before answering; True if the client hung up (counted) or the server closed meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable = select.select([conn], [], [], min(left, 0.01))[0]
            if self._stopping.is_set():
                return True
            if readable and not _peek(conn):
                with self._lock:
                    self.hang_ups += 1
                    self._lock.notify_all()
                return True
            if readable:  # bytes of a next request: not a hang-up, but nothing to wait for in select either
                self._stopping.wait(0.01)
        return False

    def _pause(self, what):
        """Wait `what` seconds or until the Event `what` is set; True if the server closed meanwhile."""
        if isinstance(what, threading.Event):
            while not what.wait(0.005):
                if self._stopping.is_set():
                    return True
            return False
        return bool(what) and self._stopping.wait(what)


class CallLog(list):
    """Every call of a group of servers in arrival order, and those no registration answered."""

    def __init__(self):
        super().__init__()
        self.unmatched = []


class FakeHTTP:
    """Fake upstreams sharing one log of calls, registered with URLs as `responses` registers them."""

    def __init__(self):
        self.calls = CallLog()
        self._servers = {}
        self._refusing = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def server(self, name="default"):
        """The named server, started on first use."""
        if name not in self._servers:
            self._servers[name] = Server(self.calls)
        return self._servers[name]

    def refused_url(self):
        """The base URL of a loopback port that refuses connections (bound, never listening, so never reused)."""
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self._refusing.append(sock)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def add(self, method, url, body=None, json=None, status=200, content_type=None, headers=None, **modes):
        """Answer method + url's path on the server at url's port (a later add for it is used once this one has)."""
        if json is not None:
            body, content_type = jsonlib.dumps(json), content_type or "application/json"
        fields = [("Content-Type", content_type or "text/plain"), *dict(headers or {}).items()]
        parts = urlsplit(url)
        server = next((s for s in self._servers.values() if urlsplit(s.url).port == parts.port), None)
        if server is None:
            raise ValueError(f"no fake server serves {url}")
        server.add(method, parts.path, Answer(status=status, headers=tuple(fields), pieces=pieces_of(body), **modes))

    def close(self):
        """Stop every server and free the refusing ports."""
        for server in self._servers.values():
            server.close()
        for sock in self._refusing:
            sock.close()


def _peek(conn):
    """The next byte waiting on conn, without taking it; b"" once the client closed or reset it."""
    try:
        return conn.recv(1, socket.MSG_PEEK)
    except ConnectionResetError:
        return b""


def _reason(status):
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _read_request(reader, base):
    """The next request on a connection, or None when the client closed it."""
    line = reader.readline(65537)
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers = http.client.parse_headers(reader)
    if headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = b""
        while size := int(reader.readline().split(b";")[0], 16):
            body += reader.read(size)
            reader.readline()
        while reader.readline() not in (b"\r\n", b"\n", b""):
            pass
    else:
        body = reader.read(int(headers.get("Content-Length") or 0))
    host = headers.get("Host") or urlsplit(base).netloc
    return Request(method, f"http://{host}{target}", urlsplit(target).path, headers, body)
