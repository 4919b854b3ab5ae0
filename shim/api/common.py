"""What both blueprints share: the services, reading a JSON body, starting a generation, streaming it out."""
from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import socket
import time

from flask import Response, current_app, request
from flask import g as flask_g

from .. import metrics
from ..errors import Cancelled, InvalidRequest, PayloadTooLarge, ShimError, Unsupported
from ..generation import Cancel, Finish, TextDelta, ToolCallDelta
from ..streaming import HEARTBEAT
from ..threads import close, watching, with_heartbeats

log = logging.getLogger("shim")

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
WATCH_SECONDS = 0.25
"How often a request that has not started answering checks whether its client is still there."


def services():
    """The router and settings create_app built."""
    return current_app.extensions["shim"]


def read_json():
    """The request body as parsed JSON, or a 4xx naming what is wrong with it."""
    limit = services().settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is {request.content_length} bytes; the limit is {limit}")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
    if not data.strip():
        raise InvalidRequest("missing request body")
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not valid UTF-8") from None
    except ValueError as err:
        raise InvalidRequest(f"request body is not valid JSON: {err}") from None
    except RecursionError:
        raise InvalidRequest("request body is nested too deeply") from None


def new_id(prefix):
    """A fresh response id like chatcmpl-3f9c...."""
    return f"{prefix}-{secrets.token_hex(12)}"


@dataclasses.dataclass
class Started:
    """A generation under way: its events (the first already pulled), and the flag that stops it."""

    events: object
    cancel: Cancel = dataclasses.field(default_factory=Cancel)


def start(generation_request):
    """Admit and route the request, and pull its first event, so early errors get a real status code."""
    services_ = services()
    backend, target = services_.router.resolve(generation_request.model)
    model = flask_g.model = generation_request.model
    services_.admission.enter(model)
    metrics.QUEUE_DEPTH.labels(model).inc()
    cancel = Cancel()
    try:
        events = backend.generate(dataclasses.replace(generation_request, model=target), cancel)
        # Nothing is written before the first event, which can take long (a long prompt tokenising): watch the socket.
        with watching(client_watch(), cancel.set, WATCH_SECONDS):
            events = prime(_observed(events, model, time.perf_counter(), services_.admission))
    except BaseException:
        cancel.set()
        raise
    return Started(events, cancel)


def _observed(events, model, started, admission):
    """The events, measured: time to first token, time between tokens, tokens in and out; frees the slot."""
    last = None
    itl, ttft = metrics.ITL.labels(model), metrics.TTFT.labels(model)  # once, not per token
    try:
        for event in events:
            if isinstance(event, (TextDelta, ToolCallDelta)):
                now = time.perf_counter()
                itl.observe(now - last) if last else ttft.observe(now - started)
                last = now
            elif isinstance(event, Finish):
                metrics.TOKENS_IN.labels(model).inc(event.usage.prompt_tokens)
                metrics.TOKENS_OUT.labels(model).inc(event.usage.completion_tokens)
            yield event
    finally:
        admission.leave(model)
        metrics.QUEUE_DEPTH.labels(model).dec()


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


def embed(model, inputs, truncate=True):
    """Raw embeddings of inputs from the backend that serves model."""
    backend, target = services().router.resolve(model)
    if not hasattr(backend, "embed"):
        raise Unsupported(f"model '{model}' does not support embeddings", param="model")
    return backend.embed(target, inputs, truncate)


def stream_response(started, render_chunks, frame, error_frame, end=(), mimetype="text/event-stream"):
    """A streaming Response: events rendered to chunks and framed; errors in-band; a hang-up cancels."""
    interval = services().settings.heartbeat_seconds
    events = with_heartbeats(started.events, interval) if interval > 0 else started.events

    def body():
        metrics.OPEN_STREAMS.inc()
        try:
            for event in events:
                if event is HEARTBEAT:
                    ping = frame(HEARTBEAT)
                    if ping:
                        yield ping
                    continue
                for chunk in render_chunks(event):
                    yield frame(chunk)
            for tail in end():
                yield tail
        except ShimError as err:
            log.warning("stream ended by error: %s", err.message)
            yield from error_frame(err)
        except Exception as err:  # a bug must not leave the client with a silently truncated stream
            log.exception("stream failed")
            yield from error_frame(ShimError(f"internal error: {type(err).__name__}"))
        finally:
            metrics.OPEN_STREAMS.dec()
            started.cancel.set()
            close(events)
    return Response(body(), mimetype=mimetype, headers=STREAM_HEADERS)


def gather(started):
    """All events of a non-streaming generation; stops it if the client hangs up meanwhile."""
    gone = client_watch()
    events = []
    try:
        for event in started.events:
            if gone():
                log.info("client went away; generation stopped")
                raise Cancelled("the client closed the connection")
            if event is not HEARTBEAT:
                events.append(event)
        return events
    finally:
        started.cancel.set()
        close(started.events)


def client_watch():
    """A function that tells whether this request's client has closed its connection (False if unknown)."""
    sock = request.environ.get("gunicorn.socket")
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
