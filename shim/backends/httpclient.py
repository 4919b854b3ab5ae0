"""A lean HTTP/1.1 client for upstream APIs: kept-alive connections, streamed bodies, nothing else."""
from __future__ import annotations

import base64
import os
import socket
import ssl
import time
import urllib.parse
import weakref

from ..sockets import sendall
from ..streaming import loads, strict_dumper

READ_SIZE = 16384
"Bytes asked of the socket per read; only what arrives is kept, so an open stream holds just its unread bytes."
MAX_HEAD = 65536
"Bytes an answer's status line and headers may take."
MAX_IDLE = 1024
"Idle connections kept per host: every concurrent stream needs its own, and reopening them costs more than keeping."
IDLE_SECONDS = 60.0
"An idle connection older than this is closed rather than reused: many servers have dropped it by then."
NO_BODY = (204, 304)
CANCEL_LOOK_SECONDS = 0.25
"How often a request waiting for its answer's head looks at its cancel flag."
_JSON = strict_dumper(True, (", ", ": "))
"A JSON body as json.dumps(body, allow_nan=False) writes it."


class HTTPError(OSError):
    """The upstream could not be talked to: a failed connect, send or read, or an answer that is not HTTP."""


class ConnectError(HTTPError):
    """No connection could be opened (nothing was sent)."""


class ReadTimeout(HTTPError):
    """The upstream did not send the next bytes in time."""


class _ClosedEarly(HTTPError):
    """The connection closed before the first byte of an answer."""


class Interrupted(Exception):
    """The caller's cancel flag was set while it waited for an answer; its connection is closed."""


class Client:
    """Sends requests over kept-alive connections, one pool of idle ones per host."""

    def __init__(self, headers=None, connect_timeout=5.0, read_timeout=600.0):
        self.headers = {"User-Agent": "shim", "Accept": "*/*", "Accept-Encoding": "identity", **(headers or {})}
        for name, value in self.headers.items():
            if not _is_token(name) or "\r" in str(value) or "\n" in str(value):
                raise ValueError(f"invalid header {name!r}")
        self.connect_timeout, self.read_timeout = connect_timeout, read_timeout
        self._targets: dict = {}
        "(method, url): the Target it parses into, with its request head."
        self._idle: dict = {}
        "(host, port, tls): idle connections, the most recent last."
        self._tls = None
        _CLIENTS.add(self)

    def request(self, method, url, body=None, content_type="application/json", cancel=None):
        """The answer to method url (a body of bytes, or of JSON when not bytes), its head read, its body not.

        With a cancel flag (anything with is_set()), waiting for the head stops with Interrupted once it is set.
        """
        target = self._targets.get((method, url)) or self._target(method, url)
        if body is not None and not isinstance(body, bytes):
            body = _JSON(body).encode()
        head = target.line + target.head
        if body is not None:
            head += b"Content-Type: %s\r\nContent-Length: %d\r\n" % (content_type.encode(), len(body))
        return self._exchange(target, method, head + b"\r\n" + (body or b""), cancel)

    def send(self, method, url, headers, body=b"", cancel=None):
        """The answer to method url with exactly these headers ((name, value) bytes, Host among them) and body."""
        target = self._targets.get((method, url)) or self._target(method, url)
        head = b"".join([target.line, *(b"%s: %s\r\n" % pair for pair in headers), b"\r\n"])
        return self._exchange(target, method, head + body, cancel)

    def _exchange(self, target, method, data, cancel=None):
        """Send data (a whole request) over a pooled connection and read the answer's head."""
        for attempt in (0, 1):
            conn, reused = self._checkout(target)
            try:
                sendall(conn.sock, data)
                if cancel is not None:
                    _wait_for_answer(conn, cancel, self.read_timeout)
                return Response(self, conn, method, *_read_head(conn))
            except Interrupted:
                conn.close()  # the upstream sees the request's connection close, and stops working on it
                raise
            except _ClosedEarly:
                conn.close()
                if reused and not attempt:  # the server dropped an idle connection: it never saw this request
                    continue
                raise
            except HTTPError:
                conn.close()
                raise
            except OSError as err:
                conn.close()
                if reused and not attempt and isinstance(err, (BrokenPipeError, ConnectionResetError)):
                    continue
                if isinstance(err, TimeoutError):
                    raise ReadTimeout(f"{target.shown} did not answer in time") from err
                raise HTTPError(f"{type(err).__name__} talking to {target.shown}") from err
        raise AssertionError("unreachable")

    def close(self):
        """Close every idle connection."""
        idle, self._idle = self._idle, {}
        for pool in idle.values():
            for conn in pool:
                conn.close()

    def _target(self, method, url):
        target = self._targets[(method, url)] = Target(method, url, self.headers)
        return target

    def _checkout(self, target):
        """An idle connection to target's host (reused=True), or a new one."""
        pool = self._idle.get(target.key)
        now = time.monotonic()
        while pool:
            conn = pool.pop()
            if now - conn.idle_since < IDLE_SECONDS:
                return conn, True
            conn.close()
        return Connection(self._connect(target), target.key), False

    def _checkin(self, conn):
        pool = self._idle.setdefault(conn.key, [])
        if len(pool) < MAX_IDLE:
            conn.idle_since = time.monotonic()
            pool.append(conn)
        else:
            conn.close()

    def _connect(self, target):
        try:
            sock = socket.create_connection((target.host, target.port), self.connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if target.tls:
                self._tls = self._tls or ssl.create_default_context()
                sock = self._tls.wrap_socket(sock, server_hostname=target.host)
        except OSError as err:
            raise ConnectError(f"cannot connect to {target.shown}: {type(err).__name__}") from err
        sock.settimeout(self.read_timeout)
        return sock


class Target:
    """Where a request goes: host, port, TLS, and the request's head up to its body headers, built once."""

    def __init__(self, method, url, headers):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        self.tls = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port or (443 if self.tls else 80)
        self.key = (self.host, self.port, self.tls)
        host = parts.netloc.rpartition("@")[2]
        self.shown = f"{parts.scheme}://{host}"
        path = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
        path += "?" + parts.query if parts.query else ""
        self.line = f"{method} {path} HTTP/1.1\r\n".encode("latin-1")
        lines = [f"Host: {host}"] + [f"{name}: {value}" for name, value in headers.items()]
        if parts.username is not None:  # credentials in the URL become Basic auth, as requests makes them
            pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            lines = [line for line in lines if not line.lower().startswith("authorization:")]
            lines.append("Authorization: Basic " + base64.b64encode(pair.encode()).decode())
        self.head = ("\r\n".join(lines) + "\r\n").encode("latin-1")


class Connection:
    """A socket and the bytes read from it but not yet taken."""

    __slots__ = ("sock", "key", "buf", "idle_since")

    def __init__(self, sock, key):
        self.sock, self.key, self.buf, self.idle_since = sock, key, b"", 0.0

    def take(self, limit):
        """Up to limit of the bytes buffered."""
        piece, self.buf = self.buf[:limit], self.buf[limit:]
        return piece

    def line(self):
        """The next CRLF-ended line buffered, without its end; None if none is whole yet."""
        end = self.buf.find(b"\n")
        if end >= 0:
            line, self.buf = self.buf[:end], self.buf[end + 1:]
            return line.rstrip(b"\r")
        if len(self.buf) > MAX_HEAD:
            raise HTTPError("a line of the answer's framing is too long")
        return None

    def close(self):
        """Close the socket."""
        try:
            self.sock.close()
        except OSError:
            pass


def _wait_for_answer(conn, cancel, timeout):
    """Wait until the answer's first bytes arrive, looking at cancel every CANCEL_LOOK_SECONDS."""
    deadline = time.monotonic() + timeout
    conn.sock.settimeout(min(CANCEL_LOOK_SECONDS, timeout))
    try:
        while not conn.buf:
            try:
                data = conn.sock.recv(READ_SIZE)
            except TimeoutError:
                if cancel.is_set():
                    raise Interrupted("cancelled while waiting for the answer") from None
                if time.monotonic() >= deadline:
                    raise
                continue
            if not data:
                raise _ClosedEarly("the connection closed before an answer")
            conn.buf = data
    finally:
        conn.sock.settimeout(timeout)


def _read_head(conn):
    """(status, reason, headers, keep_alive) of the answer on conn, skipping 1xx interim answers."""
    while True:
        while True:
            end = conn.buf.find(b"\r\n\r\n")
            if end >= 0 or len(conn.buf) > MAX_HEAD:
                break
            data = conn.sock.recv(READ_SIZE)
            if not data:
                raise (HTTPError("the connection closed in the middle of an answer's head") if conn.buf
                       else _ClosedEarly("the connection closed before an answer"))
            conn.buf += data
        if not 0 <= end <= MAX_HEAD:
            raise HTTPError("the answer's head is too long")
        head, conn.buf = conn.buf[:end].decode("latin-1"), conn.buf[end + 4:]
        status, reason, headers, version = _parse_head(head)
        if not 100 <= status < 200:
            break
    tokens = headers.get("connection", "").lower()
    keep_alive = "close" not in tokens and (version == "HTTP/1.1" or "keep-alive" in tokens)
    return status, reason, headers, keep_alive


def _parse_head(head):
    lines = head.split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise HTTPError(f"the answer is not HTTP: {lines[0][:40]!r}")
    headers: dict = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise HTTPError(f"a malformed header line in the answer: {line[:40]!r}")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return int(code), reason, headers, version


class Response:
    """An answer whose head is read; its body is read as it is asked for, then its connection pooled or closed."""

    def __init__(self, client, conn, method, status, reason, headers, keep_alive):
        self.status, self.reason, self.headers = status, reason, headers
        self._client, self._conn = client, conn
        self._idle = None
        "While the body is read with an idle interval (see pieces): its seconds."
        self._nonblocking = False
        "Whether the socket was left non-blocking for such a read (its read timeout is put back at the body's end)."
        self.complete = False
        "Whether the whole body has been read (so the connection may carry another request)."
        if method == "HEAD" or status in NO_BODY:
            self._body, self.complete = iter(()), True
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            self._body = self._chunked()
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise HTTPError("the answer's Content-Length is not a number") from None
            self._body = self._sized(length)
        else:
            keep_alive = False
            self._body = self._until_close()
        self.keep_alive = keep_alive

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def pieces(self, idle=None):
        """The body's bytes as they arrive; with idle (seconds), None before each wait for more and an empty piece
        after each idle seconds of silence."""
        self._idle = idle if idle is not None and idle < self._client.read_timeout else None
        try:
            yield from self._body
        except HTTPError:
            raise
        except TimeoutError as err:
            raise ReadTimeout("the answer stopped arriving") from err
        except OSError as err:
            raise HTTPError(f"{type(err).__name__} reading the answer") from err
        finally:
            if self._nonblocking and self._conn is not None:
                self._nonblocking = False
                self._conn.sock.settimeout(self._client.read_timeout)

    def read(self):
        """The rest of the body."""
        return b"".join(self.pieces())

    @property
    def text(self):
        """The rest of the body as text (UTF-8, undecodable bytes replaced)."""
        return self.read().decode("utf-8", errors="replace")

    def json(self):
        """The rest of the body as JSON (ValueError when it is not)."""
        return loads(self.read())

    def release(self, grace):
        """Read the rest of the body if it comes within grace seconds, so the connection can be reused."""
        if self.complete or not self.keep_alive:
            return
        try:
            self._conn.sock.settimeout(grace)
            for _ in self.pieces():
                pass
            self._conn.sock.settimeout(self._client.read_timeout)
        except OSError:
            self.keep_alive = False

    def close(self):
        """Give the connection back to the pool when its answer was read whole, else close it."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self.complete and self.keep_alive and not conn.buf:
            self._client._checkin(conn)
        else:
            conn.close()

    def _fill(self):
        """Read what the socket has into the buffer, and return it (b"" at its end); with an idle interval, yield
        None before waiting, then b"" after each interval without bytes, the read timeout counting the whole silence."""
        # The readers are generators: a timeout raised inside one would end it, so a silence is yielded instead.
        conn = self._conn
        if self._idle is None:
            data = conn.sock.recv(READ_SIZE)
        else:
            if not self._nonblocking:  # and it stays so while the body is read: a read costs no settimeout
                conn.sock.settimeout(0.0)
                self._nonblocking = True
            try:
                data = conn.sock.recv(READ_SIZE)
            except (BlockingIOError, ssl.SSLWantReadError):  # nothing yet, on a plain or a TLS socket
                yield None  # what came so far can be used before the wait
                data = yield from self._wait()
        conn.buf += data
        return data

    def _wait(self):
        """The socket's next bytes, waited for at most the idle interval at a time, b"" yielded after each."""
        sock, idle = self._conn.sock, self._idle
        deadline = time.monotonic() + self._client.read_timeout
        while True:
            sock.settimeout(max(min(idle, deadline - time.monotonic()), 0.001))
            try:
                return sock.recv(READ_SIZE)
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
            finally:
                sock.settimeout(0.0)
            yield b""

    def _more(self):
        """Read more of the answer (see _fill); its end here means it was cut short."""
        if not (yield from self._fill()):
            raise HTTPError("the connection closed in the middle of an answer")

    def _line(self):
        """The next line of the answer's framing (see Connection.line), read as it comes."""
        while (line := self._conn.line()) is None:
            yield from self._more()
        return line

    def _sized(self, length):
        conn = self._conn
        while length:
            if not conn.buf:
                yield from self._more()
            piece = conn.take(length)
            length -= len(piece)
            yield piece
        self.complete = True

    def _chunked(self):
        conn = self._conn
        while True:
            whole = self._whole_chunks()
            if whole:
                yield whole
            size = _chunk_size((yield from self._line()))  # the next chunk is not all here yet: read it as it comes
            if not size:
                break
            while size:
                if not conn.buf:
                    yield from self._more()
                piece = conn.take(size)
                size -= len(piece)
                yield piece
            if (yield from self._line()):
                raise HTTPError("a chunk of the answer is longer than its size says")
        while (yield from self._line()):  # trailers
            pass
        self.complete = True

    def _whole_chunks(self):
        """The data of the complete chunks already buffered, as one piece (events that arrived together, together)."""
        buf, pos, out = self._conn.buf, 0, []
        find, startswith, length = buf.find, buf.startswith, len(buf)
        while True:
            end_of_size = find(b"\n", pos)
            if end_of_size < 0:
                break
            size = _chunk_size(buf[pos:end_of_size])
            start = end_of_size + 1
            if not size or length < start + size + 2:
                break
            if not startswith(b"\r\n", start + size):
                raise HTTPError("a chunk of the answer is longer than its size says")
            out.append(buf[start:start + size])
            pos = start + size + 2
        if pos:
            self._conn.buf = buf[pos:]
        return b"".join(out)

    def _until_close(self):
        conn = self._conn
        while True:
            if conn.buf:
                piece, conn.buf = conn.buf, b""
                yield piece
            if not (yield from self._fill()):
                break
        self.complete = True


_CLIENTS: weakref.WeakSet = weakref.WeakSet()


def _forget_connections_after_fork():
    # A connection opened before a fork (an app built in gunicorn's master with --preload) would be shared by every
    # process, their requests and answers interleaved on one socket: a forked process opens its own.
    for client in list(_CLIENTS):
        client._idle = {}


os.register_at_fork(after_in_child=_forget_connections_after_fork)


_HEX = b"0123456789abcdefABCDEF"


def _chunk_size(line):
    """The size a chunk's size line gives (its CR and any extensions after ';' ignored): hex digits only."""
    digits = line.rstrip(b"\r")
    if not digits or digits.strip(_HEX):  # not bare digits, the usual line: extensions, spaces, or malformed
        digits = digits.split(b";", 1)[0].strip(b" \t")
        if not digits or digits.strip(_HEX):  # int() alone would take "-1", "+2", "1_0", "0x2"
            raise HTTPError(f"a malformed chunk size in the answer: {digits[:20]!r}")
    return int(digits, 16)


def _is_token(name):
    return bool(name) and all(33 <= ord(c) < 127 and c not in '"(),/:;<=>?@[\\]{}' for c in name)
