"""gunicorn's gevent worker, sending each response's head together with the first piece of its body, and ending its
idle keep-alive connections as soon as it is told to stop."""
import datetime
import socket

import gevent
from gevent.monkey import get_original
from greenlet import getcurrent
from gunicorn.config import Config
from gunicorn.http.parser import RequestParser
from gunicorn.workers.ggevent import GeventWorker

from .http1 import PlainRequest
from .http1_exchange import PlainEnvirons
from .sockets import sendall


STOPPING_WAIT = 1.0
"Seconds a connection may take to send a request once the worker is stopping (nginx sends at once on a new one)."


class Worker(GeventWorker):
    """The gevent worker, its responses' heads held until their first body write (one send instead of two), its idle
    connections closed when it stops."""

    environs = None
    "Makes the environs and responses of plain requests (shim.http1_exchange), once the worker has settled."

    def __init__(self, *args, **kwargs):
        self._idle = {}
        "greenlet -> [its client socket, its keep-alive wait while there is one] for each connection"
        super().__init__(*args, **kwargs)

    def init_process(self):
        """Settle, in the worker, then run as gunicorn's gevent worker does."""
        self.settle()
        super().init_process()

    def settle(self):
        """Read gunicorn's settings once; have plain request heads read the lean way (shim.http1)."""
        self.cfg = self.log.cfg = SettledConfig(self.cfg)
        self.environs = PlainEnvirons(self.cfg)
        # gunicorn makes a parser per connection, whose requests are of this class.
        RequestParser.mesg_class = PlainRequest

    @property
    def alive(self):
        """Whether the worker goes on taking requests (gunicorn sets it False to stop: a signal, max_requests)."""
        return self._alive

    @alive.setter
    def alive(self, value):
        stopping = getattr(self, "_alive", False) and not value
        self._alive = value
        if stopping:
            # gunicorn waits for every connection before the worker exits, an idle keep-alive one too (nginx keeps
            # some open to each worker): a stop or restart took the whole graceful timeout.
            gevent.get_hub().loop.run_callback(self._end_idle_waits)

    def handle(self, listener, client, addr):
        """Serve one connection, its client socket known while it waits for its next request."""
        me = getcurrent()
        self._idle[me] = [client, None]
        try:
            return super().handle(listener, client, addr)
        finally:
            self._idle.pop(me, None)

    def timeout_ctx(self):
        """The keep-alive wait for a connection's next request, which a stopping worker ends at once (or, begun after
        the stop, soon)."""
        return _IdleWait(self._idle.get(getcurrent()), self.cfg.keepalive if self.alive else STOPPING_WAIT)

    def _end_idle_waits(self):
        """End the keep-alive waits of connections on which no byte of a next request has come."""
        readable = get_original("select", "select")  # a look, from the hub: gevent's select would switch
        for glet, (client, wait) in list(self._idle.items()):
            if wait is not None and not readable([client], [], [], 0)[0]:
                glet.throw(wait)  # as its keep-alive timeout would: the connection closes quietly

    def handle_request(self, listener_name, req, sock, addr):
        """Handle one request on a socket that holds the response head back until the body follows it."""
        # gunicorn writes the head and every body piece with a sendall each: for a JSON answer that is two sends,
        # and a send on a busy worker costs about as much as a tenth of the rest of the request (measured).
        held = HeadHeld(sock)
        try:
            made = self.environs and self.environs.create(req, held, addr, listener_name)
            if made is None:
                return super().handle_request(listener_name, req, held, addr)
            try:
                self._handle_plain(req, held, *made)
            except (gevent.GreenletExit, SystemExit):  # as gunicorn's gevent worker: the request just ends
                pass
            return None
        finally:
            held.flush()

    def _handle_plain(self, req, sock, resp, environ):
        """gunicorn's async worker's handle_request, for a request whose environ and response are made already."""
        # Its own builds them with wsgi.create (general code: any head, any listener) and gunicorn's Response.
        request_start = datetime.datetime.now()
        try:
            self.cfg.pre_request(self, req)
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            if self.is_already_handled(respiter):
                return
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                self.log.access(resp, req, environ, datetime.datetime.now() - request_start)
                if hasattr(respiter, "close"):
                    respiter.close()
            if resp.should_close():
                raise StopIteration()
        except (StopIteration, OSError):
            raise  # handle() ends the connection (an OSError quietly when the client is gone)
        except (Exception, SystemExit):
            if resp.headers_sent:  # a 500 written now would land inside the answer already begun
                self.log.exception("Error handling request")
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                except OSError:
                    pass
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")


class SettledConfig:
    """gunicorn's settings as plain attributes, for a worker (whose settings do not change): gunicorn reads some thirty
    of them per request, each through Config.__getattr__, which looks the setting up (0.6-0.9 us a read)."""

    def __init__(self, cfg):
        self._cfg = cfg
        # A setting a Config property shares the name of (worker_class, ...) is read through the property, as is
        # every other property and method.
        self.__dict__.update({name: setting.get() for name, setting in cfg.settings.items()
                              if not hasattr(Config, name)})
        self.is_ssl = cfg.is_ssl  # read per request, and derived from settings only
        # The PROXY protocol's line comes before the first request's head: such heads are left to gunicorn.
        self.plain_http1 = self.proxy_protocol == "off"
        self.trusted_peers = {}

    def __getattr__(self, name):
        return getattr(self._cfg, name)


class _IdleWait(gevent.Timeout):
    """gunicorn's keep-alive wait (a Timeout that ends its block silently), known to the worker while it lasts."""

    def __init__(self, connection, seconds):
        super().__init__(seconds, False)
        self._connection = connection

    def __enter__(self):
        if self._connection is not None:
            self._connection[1] = self
        return super().__enter__()

    def __exit__(self, *exc):
        if self._connection is not None:
            self._connection[1] = None
        return super().__exit__(*exc)


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
        # The first write is still held after a use of the socket before it: shim's views read its timeout and peek
        # at it (a client gone?) before they answer, which had every JSON answer sent in two writes.
        if self._head:
            head, self._head = self._head, b""
            sendall(self._sock_of_response, head)

    def __getattr__(self, name):
        # Anything else (sendfile, fileno, close, timeouts) sees the socket as if every write had gone out.
        self.flush()
        return getattr(self._sock_of_response, name)
