"""What both blueprints share: the services, reading a JSON body, starting a generation, streaming it out."""
from __future__ import annotations

import dataclasses
import hmac
import io
import itertools
import json
import logging
import re
import socket
import time
import typing

import orjson
from flask import request
from werkzeug.exceptions import HTTPException

from .. import ids, metrics
from ..errors import (Cancelled, InvalidRequest, MethodNotAllowed, NotFound, PayloadTooLarge, ShimError,
                      Unauthorized)
from ..generation import Cancel, Finish, ReasoningDelta, TextDelta, ToolCallArgumentsDelta, ToolCallDelta
from ..streaming import HEARTBEAT, PAUSE
from ..threads import close, watching, with_heartbeats
from . import exchange

log = logging.getLogger("shim")

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
WATCH_SECONDS = 0.25
"How often a request that has not started answering checks whether its client is still there."


def services():
    """The router and settings create_app built."""
    return exchange.current().services


def read_json():
    """The request body as parsed JSON, or a 4xx naming what is wrong with it."""
    req = exchange.current()
    settings = req.services.settings
    limit, length = settings.max_body_bytes, req.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body is {length} bytes; the limit is {limit}")
    data = _read_body(req, limit + 1, settings.body_timeout)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    if not data.strip():
        raise InvalidRequest("missing request body")
    try:
        return parse_body(data)
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not valid UTF-8") from None
    except ValueError as err:
        raise InvalidRequest(f"request body is not valid JSON: {err}") from None
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None


_LONG_DIGITS = re.compile(rb"[0-9]{19}")
"A run of digits that may be an integer past 64 bits, which orjson reads as a float (json.loads: exactly)."


def parse_body(data):
    """A request body's JSON as json.loads reads it, a lone surrogate in it refused (reject_lone_surrogates)."""
    # orjson reads a small body in a fifth of the time, and refuses (rather than reads otherwise) all json.loads takes
    # that it does not: lone surrogates, NaN and Infinity, a BOM, UTF-16 and UTF-32. Those go to json.loads, as does a
    # long run of digits, so every body is read exactly as before.
    if _LONG_DIGITS.search(data) is None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass
    return reject_lone_surrogates(json.loads(data), data)


def reject_lone_surrogates(body, data=None):
    """The parsed body itself, or a 400 naming a string (key or value) in it that holds a lone surrogate."""
    # JSON's \ud800 escapes (and CESU-8 bytes) decode to Python strings no encoder accepts: refused here, they would
    # fail whatever later writes them out (an error message echoing a model name, a prompt sent upstream) with a 500.
    if data is not None and not _may_hold_surrogates(data):
        return body
    stack = [(body, None)]
    while stack:
        value, trail = stack.pop()
        if isinstance(value, str):
            if _lone_surrogate(value):
                raise _surrogate_error(_path(trail))
        elif isinstance(value, dict):
            for key, inner in value.items():
                if _lone_surrogate(key):
                    raise _surrogate_error(_path(trail), key=True)
                if isinstance(inner, (str, dict, list)):
                    stack.append((inner, (trail, key)))
        elif isinstance(value, list):
            stack.extend((inner, (trail, index)) for index, inner in enumerate(value)
                         if isinstance(inner, (str, dict, list)))
    return body


_SURROGATE_ESCAPES = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?:\\u[dD][c-fC-F][0-9a-fA-F]{2})?|\\u[dD][c-fC-F]")
"In raw JSON: a high surrogate escape with the low one after it if there is one (12 bytes), or a low one alone."
_SURROGATE_BYTES = re.compile(rb"\xed[\xa0-\xbf]")
"A surrogate's three UTF-8 bytes begin so (json.loads lets them through)."


def _may_hold_surrogates(data):
    """Whether raw JSON may hold a lone surrogate: an escape that is not half of a pair, or a surrogate's bytes."""
    # Found at C speed; an escaped backslash before "u" may look like one, and the walk then finds nothing.
    return _SURROGATE_BYTES.search(data) is not None or any(len(e) != 12 for e in _SURROGATE_ESCAPES.findall(data))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(text):
    return not text.isascii() and _SURROGATE.search(text) is not None


def _path(trail):
    """A trail of (parent, step) links as a field path like messages[0].content."""
    steps = []
    while trail:
        trail, step = trail
        steps.append(step)
    path = ""
    for step in reversed(steps):
        path += f"[{step}]" if isinstance(step, int) else f".{step}" if path else step
    return path


def _surrogate_error(path, key=False):
    where = f"'{path}'" if path else "the request body"
    return InvalidRequest(f"{'a key in ' if key else ''}{where} holds a lone UTF-16 surrogate (an unpaired "
                          "\\ud800-\\udfff escape), which is not valid Unicode", param=path or None)


OPEN_PATHS = ("/", "/health", "/ready")
"Paths that answer without an API key, so load balancers and probes can reach them."


def bearer_token():
    """The request's `Authorization: Bearer` token, or None."""
    scheme, _, token = exchange.current().header("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def api_key_header():
    """The request's `x-api-key` header (Anthropic's scheme), or None."""
    return exchange.current().header("x-api-key") or None


def bearer_in(keys):
    """Whether the request's `Authorization: Bearer` token is one of keys."""
    return key_in(bearer_token(), keys)


def key_in(token, keys):
    """Whether token is one of keys, compared in constant time."""
    if not token:
        return False
    # Compare against every key, without stopping early, so the time taken says nothing about the keys.
    matches = [hmac.compare_digest(token.encode(), key.encode()) for key in keys]
    return any(matches)


@dataclasses.dataclass(frozen=True)
class Guard:
    """What a protocol's blueprint does around each of its views: the key check, the error shape, a last touch."""

    check_key: typing.Callable[[], None]
    render_error: typing.Callable[[ShimError], typing.Any]
    after: typing.Optional[typing.Callable[[typing.Any], typing.Any]] = None


GUARDS: dict = {}
"Each protocol blueprint's guard, by the blueprint's name; the lane serves that blueprint's views with it."
LANE_ROUTES: list = []
"(blueprint name, rule, view) of the generation and embedding endpoints, which the lane serves (api/lane.py)."


def protect(bp, render_error, schemes=(bearer_token,), asked="'Authorization: Bearer <key>'", after=None):
    """Give a blueprint its own error shape, its key check (keys any of `schemes` may carry) and a last touch to
    every answer (after); returns the check."""
    def check_key():
        keys = services().keys
        if keys and exchange.current().path not in OPEN_PATHS and not any(key_in(s(), keys) for s in schemes):
            raise Unauthorized(f"a valid API key is required: send it as {asked}")
    bp.before_request(check_key)
    bp.register_error_handler(ShimError, render_error)
    bp.register_error_handler(HTTPException, lambda exc: render_error(from_http(exc)))
    bp.register_error_handler(Exception, lambda exc: render_error(unexpected(exc)))
    if after is not None:
        bp.after_request(after)
    GUARDS[bp.name] = Guard(check_key, render_error, after)
    return check_key


def lane_post(bp, rule):
    """bp.post(rule), for a generation or embedding view the lane also serves (POSTs to rule, without Flask's
    request machinery)."""
    def register(view):
        LANE_ROUTES.append((bp.name, rule, view))
        return bp.post(rule)(view)
    return register


def from_http(exc):
    """The shared error for a werkzeug HTTP exception (no route, wrong method, body too large, ...)."""
    if exc.code == 404:
        return NotFound(f"{request.method} {request.path}: no such endpoint")
    if exc.code == 405:
        allowed = ", ".join(exc.valid_methods or ())
        return MethodNotAllowed(f"method {request.method} is not allowed on {request.path} (allowed: {allowed})",
                                headers={"Allow": allowed})
    if exc.code == 413:
        return PayloadTooLarge("request body is too large")
    return ShimError(exc.description or exc.name, status=exc.code)


def unexpected(exc):
    """A bug, logged with its traceback, as a 500 that names only its type."""
    log.exception("unhandled error")
    return ShimError(f"internal error: {type(exc).__name__}")


def _read_body(req, size, idle_timeout):
    """Up to size bytes of req's body; a client that stalls or breaks off sending it gets a 4xx and is hung up on."""
    body = req.body
    if isinstance(body, io.BytesIO):  # already in memory (one that came whole with its head): nothing to wait for
        return body.read(size)
    sock = req.environ.get("gunicorn.socket")
    previous = sock.gettimeout() if sock else None
    if sock:
        sock.settimeout(idle_timeout)
    try:
        return body.read(size)
    except TimeoutError:
        _stop_reading(sock)
        raise InvalidRequest(f"the request body stopped arriving for {idle_timeout:g} s", status=408,
                             code="request_timeout") from None
    # The WSGI server reports a body cut short in its own exception types, all of them the client's doing.
    except Exception as err:
        _stop_reading(sock)
        raise InvalidRequest(f"the request body ended before it was complete ({type(err).__name__})") from None
    finally:
        if sock:
            sock.settimeout(previous)


def _stop_reading(sock):
    """Read no more from this connection, so gunicorn closes it after the answer rather than wait for the rest."""
    if sock:
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass


def new_id(prefix):
    """A fresh response id like chatcmpl-3f9c...."""
    return f"{prefix}-{ids.token_hex(12)}"


@dataclasses.dataclass
class Started:
    """A generation under way: its events (the first already pulled), and the flag that stops it."""

    events: object
    cancel: Cancel = dataclasses.field(default_factory=Cancel)
    beats: bool = False
    "Whether the events carry their own HEARTBEATs (the backend signals silence), so none need be timed here."
    choices: int = 0
    "How many Finish events end the generation (one a choice); 0 when unknown: its events end it."

    def stop(self):
        """Stop the generation and close its events (its backend's connection back to the pool, its admission place
        given back, its last metrics written)."""
        self.cancel.set()
        close(self.events)


def start(generation_request):
    """Admit and route the request, and pull its first event, so early errors get a real status code."""
    services_ = services()
    route = services_.router.route(generation_request.model)
    keep_alive = _keep_alive(generation_request, services_.settings)
    beat = beat_seconds(route.backend, generation_request.stream, services_.settings)
    routed = generation_request
    if (route.target, keep_alive) != (routed.model, routed.keep_alive) or beat:  # a copy costs as much as routing
        routed = routed.replaced(model=route.target, keep_alive=keep_alive, heartbeat_seconds=beat)
    return _admitted(route, lambda cancel: route.backend.generate(routed, cancel), services_.admission,
                     beat is not None, generation_request.n)


def beat_seconds(backend, stream, settings):
    """The interval at which backend beats a streamed answer itself (HEARTBEAT after each silent one), or None: not
    streamed, heartbeats off, or a backend that cannot tell silence (stream_response times those)."""
    interval = settings.heartbeat_seconds
    return interval if stream and interval > 0 and backend.signals_silence else None


def start_routed(route, open_events, beats=False):
    """Admit a routed request and pull the first item open_events(cancel) yields (see start); beats: whether those
    items carry their own HEARTBEATs."""
    return _admitted(route, open_events, services().admission, beats)


def _admitted(route, open_events, admission, beats, choices=0):
    """start_routed with the admission already looked up (and the number of choices when known)."""
    exchange.current().model = route.key
    cancel = Cancel()
    events = _measured(lambda: open_events(cancel), route.key, admission)
    try:
        # Nothing is written before the first event, which can take long (a long prompt tokenising): watch the socket.
        with watching(client_watch(), cancel.set, WATCH_SECONDS):
            next(events)
    except BaseException:
        cancel.set()
        close(events)
        raise
    return Started(events, cancel, beats, choices)


def keep_alive_of(generation_request):
    """The client's keep_alive where clients may set it (client_keep_alive), else None: the server's own applies."""
    return _keep_alive(generation_request, services().settings)


def _keep_alive(generation_request, settings):
    return generation_request.keep_alive if settings.client_keep_alive else None


ITL_BATCH = 64
"Inter-token latencies are written to the metrics this many at a time (and at the end of the generation)."
_DELTAS = (TextDelta, ReasoningDelta, ToolCallArgumentsDelta, ToolCallDelta)
_NOTHING = object()


def _measured(open_events, key, admission):
    """The items of open_events(), measured, while holding one of key's admission places; its first next() pulls
    the first item (so errors before any output are raised there, not mid-response) and returns None."""
    # Admission, metrics and priming in one generator: every event passes through each layer, each a resume.
    # Entered inside the generator so that its finally frees the place whatever fails, even open_events() itself.
    admission.enter(key)
    in_flight = metrics.child(metrics.QUEUE_DEPTH, key)
    in_flight.inc()
    itl, intervals, last = metrics.child(metrics.ITL, key), [], 0.0
    events = None
    try:
        started = time.perf_counter()
        events = iter(open_events())
        first = next(events, _NOTHING)
        yield None
        if first is _NOTHING:
            return
        for event in itertools.chain((first,), events):
            if isinstance(event, _DELTAS):
                now = time.perf_counter()
                if last:
                    intervals.append(now - last)
                    if len(intervals) >= ITL_BATCH:
                        metrics.observe_all(itl, intervals)
                        intervals = []
                else:
                    metrics.child(metrics.TTFT, key).observe(now - started)
                last = now
            elif isinstance(event, Finish):
                metrics.child(metrics.TOKENS_IN, key).inc(event.usage.prompt_tokens)
                metrics.child(metrics.TOKENS_OUT, key).inc(event.usage.completion_tokens)
            yield event
    finally:
        metrics.observe_all(itl, intervals)
        close(events)
        admission.leave(key)
        in_flight.dec()


def prime(items):
    """The same items, the first already pulled: errors before any output are raised here, not mid-response."""
    items = iter(items)
    try:
        first = next(items)
    except StopIteration:
        return iter(())

    def chained():
        yield first
        yield from items
    return chained()


def embed(model, inputs, truncate=True, param="input"):
    """Raw embeddings of inputs from the backend that serves model: capped, admitted, stopped if the client leaves."""
    services_ = services()
    _check_embed_size(inputs, services_.settings, param)
    route = services_.router.route(model)
    exchange.current().model = route.key
    # Embeddings count apart from generations, so a flood of them is refused before it can crowd out chats.
    services_.embed_admission.enter(route.key)
    try:
        return route.backend.embed(route.target, inputs, truncate, cancel=_Watched(client_watch()))
    finally:
        services_.embed_admission.leave(route.key)


def _check_embed_size(inputs, settings, param):
    if len(inputs) > settings.max_embed_inputs:
        raise InvalidRequest(f"'{param}' may hold at most {settings.max_embed_inputs} inputs, got {len(inputs)}",
                             param=param)
    size = sum(len(text.encode()) for text in inputs)
    if size > settings.max_embed_bytes:
        raise InvalidRequest(f"'{param}' is {size} bytes in all; at most {settings.max_embed_bytes} are accepted",
                             param=param)


class _Watched(Cancel):
    """A Cancel that is also set once the client has hung up (looked at whenever it is asked)."""

    def __init__(self, gone):
        super().__init__()
        self._gone = gone

    def is_set(self):
        """Whether the request should stop: cancelled, or its client gone."""
        if not super().is_set() and self._gone():
            self.set()
        return super().is_set()


def stream_response(started, renderer, framing):
    """A streaming Response: events rendered to chunks and framed; errors in-band; a hang-up cancels."""
    interval = services().settings.heartbeat_seconds
    timed = interval > 0 and not started.beats  # else the events' own HEARTBEATs pass through, or there are none
    batches = (with_heartbeats(started.events, interval) if timed else
               _until_pause(started.events) if started.beats else _one_by_one(started.events))

    def body():
        metrics.OPEN_STREAMS.inc()
        # The frames of the events that arrived together are written together: a write per event costs the worker
        # more than the rest of the event's way through it.
        out = list(_framed(renderer.begin(), framing))
        frame, chunks = framing.frame, renderer.chunks
        try:
            for batch in batches:
                for event in batch:
                    if event is HEARTBEAT:
                        out.append(framing.heartbeat())
                    else:
                        out += map(frame, chunks(event))
                if any(out):  # an empty write would be a zero-length chunk, which ends a chunked HTTP body early
                    yield b"".join(out)
                out = []
            out += _framed(renderer.end(), framing)
        except ShimError as err:
            log.warning("stream ended by error: %s", err.message)
            out += _framed(renderer.error(err), framing)
        except Exception as err:  # a bug must not leave the client with a silently truncated stream
            log.exception("stream failed")
            out += _framed(renderer.error(ShimError(f"internal error: {type(err).__name__}")), framing)
        finally:
            metrics.OPEN_STREAMS.dec()
            started.cancel.set()
            close(batches)
        out.append(framing.close())
        if any(out):
            yield b"".join(out)
    return exchange.stream_answer(body(), framing.mimetype, STREAM_HEADERS)


def _one_by_one(events):
    try:
        for event in events:
            yield [event]
    finally:
        close(events)


def _until_pause(events):
    """Lists of the events that came together: each ends where their source paused to wait (PAUSE), or beat."""
    batch = []
    try:
        for event in events:
            if event is not PAUSE:
                batch.append(event)
                if event is not HEARTBEAT:
                    continue
            if batch:
                yield batch
                batch = []
        if batch:
            yield batch
    finally:
        close(events)


def _framed(chunks, framing):
    return [framing.frame(chunk) for chunk in chunks]


def gather(started):
    """All events of a non-streaming generation; stops it if the client hangs up meanwhile."""
    gone = client_watch()
    events, finished, complete = [], 0, False
    # Looked at every WATCH_SECONDS, not per event: each look is a system call, and start() watched until the first.
    next_look = time.monotonic() + WATCH_SECONDS
    try:
        for event in started.events:
            if time.monotonic() >= next_look:
                if gone():
                    log.info("client went away; generation stopped")
                    raise Cancelled("the client closed the connection")
                next_look = time.monotonic() + WATCH_SECONDS
            if event is not HEARTBEAT and event is not PAUSE:
                events.append(event)
                if isinstance(event, Finish):
                    finished += 1
                    complete = finished == started.choices
                    if complete:
                        break
    except BaseException:
        started.stop()
        raise
    if complete:
        # Every choice has finished: what is left (the connection back to its pool, the admission place, the last
        # metrics) need not delay the answer, and is done once it has been written.
        exchange.current().after_answer(started.stop)
    else:
        started.stop()
    return events


def client_watch():
    """A function that tells whether this request's client has closed its connection (False if unknown)."""
    sock = exchange.current().environ.get("gunicorn.socket")
    raw = getattr(sock, "_sock", sock)
    if raw is None:
        return lambda: False

    def gone():
        try:
            return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
    return gone
