"""The OpenAI-protocol blueprint: /v1/chat/completions, /v1/completions, /v1/models (and the /api/v1 envelope)."""
import time

from flask import Blueprint, jsonify

from .. import generation as g
from ..errors import ShimError
from ..protocols import openai as protocol
from ..streaming import SSE
from . import common
from .exchange import json_answer

bp = Blueprint("openai", __name__)
envelope_bp = Blueprint("openai_envelope", __name__)
"The /api/v1 routes, whose answers and errors come in a {success, code, message, data} envelope."


def _sse(started, renderer):
    return common.stream_response(started, renderer, SSE())


def _meta(prefix, model):
    return dict(id=common.new_id(prefix), created=int(time.time()), model=model)


def _chat():
    call = protocol.parse_chat(common.read_json())
    started = common.start(call.request)
    meta = _meta("chatcmpl", call.request.model)
    if call.stream:
        return None, _sse(started, protocol.ChatStream(**meta, include_usage=call.include_usage))
    return protocol.render_chat(g.collect(common.gather(started)), **meta), None


@common.lane_post(bp, "/v1/chat/completions")
def chat_completions():
    """Chat completions, JSON or SSE."""
    body, streamed = _chat()
    return streamed or json_answer(body)


@envelope_bp.post("/api/v1/chat/completions")
def chat_completions_envelope():
    """Chat completions wrapped in a {success, code, message, data} envelope (streams are plain SSE)."""
    body, streamed = _chat()
    return streamed or json_answer(protocol.render_envelope(body))


@common.lane_post(bp, "/v1/completions")
def completions():
    """Legacy text completions, JSON or SSE."""
    call = protocol.parse_completion(common.read_json())
    started = common.start(call.request)
    meta = _meta("cmpl", call.request.model)
    prefix = call.request.prompt if call.echo else ""
    if call.stream:
        return _sse(started, protocol.CompletionStream(**meta, include_usage=call.include_usage, prefix=prefix))
    return json_answer(protocol.render_text_completion(g.collect(common.gather(started)), **meta, prefix=prefix))


@common.lane_post(bp, "/v1/embeddings")
def embeddings():
    """Unit-length embeddings of each input."""
    model, inputs, dimensions, encoding = protocol.parse_embeddings(common.read_json())
    result = common.embed(model, inputs)
    vectors = [g.normalize(v, dimensions) for v in result.vectors]
    return json_answer(protocol.render_embeddings(model, vectors, result.prompt_tokens, encoding))


@bp.get("/v1/models")
def list_models():
    """Every model shim serves."""
    return jsonify(protocol.render_models(common.services().router.models()))


@bp.get("/v1/models/<path:name>")
def get_model(name):
    """One model, by any name it answers to."""
    router = common.services().router
    listed = {m.name: m for m in router.models()}
    if name in listed:
        return jsonify(protocol.render_model(listed[name]))
    backend, target, info = router.describe(name)  # an unlisted spelling (smollm2:latest) answers as the model it means
    return jsonify(protocol.render_model(info or g.ModelInfo(name=target, backend=backend.name)))


def render_error(err: ShimError, envelope=False):
    """An error response in OpenAI's shape (or the envelope's)."""
    body = protocol.render_envelope(err=err) if envelope else protocol.render_error(err)
    return json_answer(body, err.status, err.headers)


common.protect(bp, render_error)
common.protect(envelope_bp, lambda err: render_error(err, envelope=True))
