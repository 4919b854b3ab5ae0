"""The OpenAI Responses blueprint: /v1/responses (create, retrieve, delete, input items, input tokens)."""
import dataclasses
import logging
import time

from flask import Blueprint, jsonify, request

from ..errors import InvalidRequest, NotFound, ShimError, Unsupported
from ..generation import Accepted, Finish, usage_of
from ..protocols import fields as f
from ..protocols.responses import request as parse
from ..protocols.responses import response as render
from ..protocols.responses import upstream as relay
from ..streaming import NamedSSE
from ..threads import close
from . import common
from .exchange import json_answer

log = logging.getLogger("shim")
bp = Blueprint("responses", __name__)


def _store():
    """The response store, or None where none is configured."""
    return common.services().store


def _record(response_id, param=None):
    """The stored record of a response, or a 404 in OpenAI's shape."""
    store = _store()
    record = store.get(response_id) if store is not None else None
    if record is None:
        raise NotFound(f"response with id '{response_id}' not found" +
                       ("" if store is not None else " (shim has no response store configured)"), param=param)
    return record


def _parsed(body):
    """The parsed request and the stored items it continues from."""
    previous = f.get(f.require_object(body), "previous_response_id", str)
    if previous is not None and _store() is None:
        raise InvalidRequest("'previous_response_id' needs a response store, and none is configured",
                             param="previous_response_id")
    history = _record(previous, "previous_response_id")["history"] if previous is not None else ()
    return parse.parse_request(body, history), history


def _options(call):
    """How the renderer spells the call's output: custom tools, namespaces, logprobs."""
    return dict(custom_tools=call.custom_tools, namespaces=call.namespaces, logprobs=call.logprobs)


class _KeptStream(render.ResponseStream):
    """A response stream that stores its final Response as it ends."""

    def __init__(self, keep, meta, **options):
        super().__init__(meta, **options)
        self.keep = keep

    def end(self):
        events = super().end()
        self.keep(self.response)
        return events

    def error(self, err):
        events = super().error(err)
        self.keep(self.response)
        return events


def _keeper(call, history, store):
    """A function that stores a finished Response with its input and the transcript to continue from."""
    def keep(response):
        if store is None:
            return
        record = {"response": response, "input_items": list(call.input_items),
                  "history": [*history, *call.input_items, *response["output"]]}
        try:
            store.put(response["id"], record)
        except Exception:  # the client has its answer; a store failure must not turn it into an error
            log.exception("cannot store response %s", response["id"])
    return keep


@common.lane_post(bp, "/v1/responses")
def create():
    """Create a response: JSON, or named SSE events when stream is true."""
    body = common.read_json()
    relayed = _relayed(body)
    if relayed is not None:
        return relayed
    call, history = _parsed(body)
    store = _store() if call.store else None
    meta = render.Meta(parse.new_id("resp"), call.request.model, int(time.time()), store is not None, call.echo)
    keep = _keeper(call, history, store)
    started = common.start(call.request)
    if call.stream:
        renderer = _KeptStream(keep, meta, **_options(call))
        return common.stream_response(started, renderer, NamedSSE())
    response = render.render_response(common.gather(started), meta, **_options(call))
    keep(response)
    return json_answer(response)


def _relayed(body):
    """The upstream's own answer where the model's backend serves /v1/responses natively; else None."""
    model = f.get(f.require_object(body), "model", str, required=True)
    route = common.services().router.route(model)
    if not route.backend.serves_responses:
        return None
    wire = relay.upstream_body(body, route.target)
    idle = common.beat_seconds(route.backend, bool(body.get("stream")), common.services().settings)
    started = common.start_routed(route, lambda cancel: route.backend.relay_responses(wire, cancel, idle),
                                  beats=idle is not None)
    if body.get("stream"):
        return common.stream_response(started, relay.RelayStream(model), NamedSSE())
    (whole,) = common.gather(started)
    return json_answer(relay.client_view(whole, model))


@bp.post("/v1/responses/input_tokens")
def input_tokens():
    """How many tokens the input of a create request takes."""
    call, _ = _parsed(common.read_json())
    started = common.start(dataclasses.replace(call.request, max_tokens=1))
    first = next(started.events, None)
    if isinstance(first, Accepted) and first.prompt_tokens is not None:
        started.cancel.set()
        close(started.events)  # frees the admission place now, not when the generator is collected
        count = first.prompt_tokens
    else:
        count = usage_of([e for e in common.gather(started) if isinstance(e, Finish)]).prompt_tokens
    return jsonify({"object": "response.input_tokens", "input_tokens": count})


@bp.get("/v1/responses/<response_id>")
def retrieve(response_id):
    """A stored response."""
    if request.args.get("stream") in ("true", "1"):
        raise Unsupported("'stream': replaying a stored response's events is not supported", param="stream")
    return jsonify(_record(response_id)["response"])


@bp.delete("/v1/responses/<response_id>")
def delete(response_id):
    """Forget a stored response."""
    store = _store()
    if store is None or not store.delete(response_id):
        _record(response_id)
    return jsonify({"id": response_id, "object": "response", "deleted": True})


@bp.get("/v1/responses/<response_id>/input_items")
def input_items(response_id):
    """The input items of a stored response, a page at a time."""
    items = list(_record(response_id)["input_items"])
    args = request.args
    order = f.one_of(args.get("order", "desc"), "order", ("asc", "desc"))
    limit = args.get("limit", "20")
    if not limit.isdigit() or not 1 <= int(limit) <= 100:
        raise InvalidRequest(f"'limit' must be an integer between 1 and 100, got {limit!r}", param="limit")
    if order == "desc":
        items.reverse()
    after = args.get("after")
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise InvalidRequest(f"'after': no input item with id {after!r}", param="after")
        items = items[ids.index(after) + 1:]
    page = items[:int(limit)]
    return jsonify({"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                    "last_id": page[-1]["id"] if page else None, "has_more": len(items) > len(page)})


@bp.post("/v1/responses/<response_id>/cancel")
def cancel(response_id):
    """Only background responses can be cancelled, and shim runs none."""
    raise InvalidRequest("only background responses can be cancelled; shim does not run responses in the "
                         "background", param="response_id")


def render_error(err: ShimError):
    """An error in OpenAI's shape, its param named as the Responses field."""
    return json_answer(render.render_error(err), err.status, err.headers)


common.protect(bp, render_error)
