"""The Anthropic Messages blueprint: /v1/messages, /v1/messages/count_tokens, and /v1/models for Anthropic clients."""
import dataclasses
import logging

from flask import Blueprint, jsonify, request

from .. import generation as g
from ..errors import ShimError
from ..protocols.anthropic import request as protocol
from ..protocols.anthropic import response as render
from ..streaming import NamedSSE
from . import common, exchange
from .exchange import json_answer

bp = Blueprint("anthropic", __name__)
log = logging.getLogger("shim")

MODEL_PATHS = ("/v1/models", "/v1/models/")


@common.lane_post(bp, "/v1/messages")
def messages():
    """A Message, as JSON or (stream: true) as named SSE events."""
    call = protocol.parse_messages(common.read_json())
    if call.user_id:
        log.debug("messages request for user %s", call.user_id)
    estimate = protocol.estimate_tokens(call.request)
    started = common.start(call.request)
    meta = dict(id=render.new_id("msg"), model=call.request.model, prompt_tokens=estimate)
    if call.stream:
        return common.stream_response(started, render.MessageStream(**meta), NamedSSE(ping={"type": "ping"}))
    choices = g.collect(common.gather(started))
    return json_answer(render.render_message(choices[0] if choices else g.Choice(0), **meta))


@bp.post("/v1/messages/count_tokens")
def count_tokens():
    """The prompt's token count: the backend's tokenizer where it has one, else an estimate."""
    parsed = protocol.parse_count_tokens(common.read_json())
    route = common.services().router.route(parsed.model)
    exchange.current().model = route.key
    count = route.backend.count_tokens(dataclasses.replace(parsed, model=route.target))
    if count is None:
        log.info("count_tokens for %s is an estimate: its backend cannot tokenize", parsed.model)
        count = protocol.estimate_tokens(parsed)
    return jsonify({"input_tokens": count})


@bp.before_app_request
def models_for_anthropic_clients():
    """GET /v1/models(/id) in Anthropic's shape when the client is an Anthropic one (it sends anthropic-version)."""
    # The path is the OpenAI blueprint's too; only a header tells the two kinds of client apart, and routes
    # cannot match on headers, so the Anthropic answer is given here, before the OpenAI view would run.
    if request.method != "GET" or not request.headers.get("anthropic-version") \
            or not (request.path == MODEL_PATHS[0] or request.path.startswith(MODEL_PATHS[1])):
        return None
    try:
        check_key()
        if request.path == MODEL_PATHS[0]:
            answer = jsonify(render.render_models(common.services().router.models(),
                                                  *render.parse_model_page(request.args)))
        else:
            answer = jsonify(render.render_model(_model_info(request.path[len(MODEL_PATHS[1]):])))
    except ShimError as err:
        answer = render_error(err)
    return request_id(answer)


def _model_info(name):
    router = common.services().router
    listed = {m.name: m for m in router.models()}
    if name in listed:
        return listed[name]
    backend, target = router.resolve(name)
    return dataclasses.replace(listed.get(target) or g.ModelInfo(name=target, backend=backend.name), name=name)


def request_id(response):
    """Anthropic's request-id header, which its SDK reports with errors."""
    response.headers.setdefault("request-id", "req_" + exchange.current().request_id)
    return response


def render_error(err: ShimError):
    """An error response in Anthropic's shape, with Anthropic's status codes."""
    body, status = render.render_error(err)
    return json_answer(body, status, err.headers)


check_key = common.protect(bp, render_error, schemes=(common.api_key_header, common.bearer_token),
                           asked="'x-api-key: <key>' (or 'Authorization: Bearer <key>')", after=request_id)
