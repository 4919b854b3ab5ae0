"""The Ollama-protocol blueprint: /api/generate, /api/chat, /api/tags, /api/show, /api/ps, /api/version, /."""
from flask import Blueprint, Response, jsonify

from .. import __version__
from .. import generation as g
from ..errors import ModelNotFound, ServerBusy, ShimError, Unsupported
from ..protocols import ollama as protocol
from ..streaming import HEARTBEAT, ndjson_line
from . import common

bp = Blueprint("ollama", __name__)

OLLAMA_VERSION = "0.13.0"
"The Ollama release whose API shim speaks; clients gate features on it."


def _frame(chunk):
    # NDJSON has no comment syntax, and a blank line breaks the ollama client: heartbeats are dropped.
    return b"" if chunk is HEARTBEAT else ndjson_line(chunk)


def _error_frames(err):
    yield ndjson_line(protocol.render_error(err))


def _answer(call, renderer):
    if call.load_only:
        backend, target = common.services().router.resolve(call.request.model)
        load = getattr(backend, "load", None)
        reason = load(target, call.request.keep_alive) if load else "load"
        return jsonify(renderer.load_reply(reason))
    started = common.start(call.request)
    if call.stream:
        return common.stream_response(started, renderer.chunks, _frame, _error_frames, end=tuple,
                                      mimetype="application/x-ndjson")
    choices = g.collect(common.gather(started))
    return jsonify(renderer.whole(choices[0]))


@bp.post("/api/generate")
def generate():
    """Completion of a prompt, NDJSON or one object."""
    call = protocol.parse_generate(common.read_json())
    return _answer(call, protocol.GenerateStream(call.request.model, raw=call.request.raw))


@bp.post("/api/chat")
def chat():
    """Chat, NDJSON or one object."""
    call = protocol.parse_chat(common.read_json())
    return _answer(call, protocol.ChatStream(call.request.model))


@bp.post("/api/embed")
def embed():
    """Unit-length embeddings of each input."""
    model, inputs, truncate, dimensions, _options = protocol.parse_embed(common.read_json())
    result = common.embed(model, inputs, truncate)
    return jsonify({"model": model, "embeddings": [g.normalize(v, dimensions) for v in result.vectors],
                    "total_duration": result.total_ns, "load_duration": result.load_ns,
                    "prompt_eval_count": result.prompt_tokens})


@bp.post("/api/embeddings")
def embeddings():
    """The legacy single, raw embedding of a prompt."""
    body = common.read_json()
    model, prompt = protocol.parse_embeddings(body)
    if not prompt:
        common.services().router.resolve(model)
        return jsonify({"embedding": []})
    return jsonify({"embedding": list(common.embed(model, [prompt], param="prompt").vectors[0])})


@bp.get("/api/tags")
def tags():
    """Every model shim serves."""
    return jsonify(protocol.render_tags(common.services().router.models()))


@bp.get("/api/ps")
def ps():
    """The models loaded now."""
    return jsonify(protocol.render_ps(common.services().router.models()))


@bp.post("/api/show")
def show():
    """Details of one model."""
    name = protocol.parse_model_name(common.read_json())
    backend, target = common.services().router.resolve(name)
    show_model = getattr(backend, "show", None)
    if show_model:
        return jsonify(show_model(target))
    info = next((m for m in backend.models() if m.name == target), None) or g.ModelInfo(name=name, backend=backend.name)
    return jsonify(protocol.render_show(info))


def _owner(name):
    """The backend that manages model `name`: the one serving it, else the first that can manage models."""
    router = common.services().router
    try:
        backend, target = router.resolve(name)
    except ModelNotFound:
        backend = next((b for b in router.backends.values() if hasattr(b, "manage")), None)
        if backend is None:
            raise
        return backend, name
    if not hasattr(backend, "manage"):
        raise Unsupported(f"model '{name}' is served from a local GGUF file; add or remove local models in shim's "
                          "configuration", param="model")
    return backend, target


def _manage(action, body, owner, **fields):
    """Run a management action on the owning instance and answer with its progress."""
    backend, target = owner
    stream = _streams(body)
    return _progress(stream, backend.manage(action, stream=stream, **{**fields, "model": target}))


def _streams(body):
    return body.get("stream", True) is not False


def _progress(stream, parts):
    """Progress objects as NDJSON lines, or only the last one when the client asked for no stream."""
    if not stream:
        return jsonify(list(parts)[-1])
    return common.stream_response(common.Started(common.prime(parts)), lambda part: [part], _frame, _error_frames,
                                  end=tuple, mimetype="application/x-ndjson")


@bp.post("/api/pull")
def pull():
    """Pull a model on the Ollama instance that will serve it (a local model is already there)."""
    body = common.read_json()
    name = protocol.parse_model_name(body)
    try:
        owner = _owner(name)
    except Unsupported:
        return _progress(_streams(body), [{"status": "success"}])
    return _manage("pull", body, owner, insecure=bool(body.get("insecure")))


@bp.post("/api/push")
def push():
    """Push a model from the Ollama instance that has it."""
    body = common.read_json()
    return _manage("push", body, _owner(protocol.parse_model_name(body)), insecure=bool(body.get("insecure")))


@bp.post("/api/create")
def create():
    """Create a model on an Ollama instance."""
    body = common.read_json()
    fields = protocol.parse_create(body)
    return _manage("create", body, _owner(fields.pop("model")), **fields)


@bp.post("/api/copy")
def copy():
    """Copy a model on the Ollama instance that has it."""
    source, destination = protocol.parse_copy(common.read_json())
    backend, target = _owner(source)
    list(backend.manage("copy", source=target, destination=destination))
    return Response(status=200)


@bp.delete("/api/delete")
def delete():
    """Delete a model from the Ollama instance that has it."""
    name = protocol.parse_model_name(common.read_json())
    backend, target = _owner(name)
    list(backend.manage("delete", model=target))
    return Response(status=200)


@bp.get("/api/version")
def version():
    """The Ollama API version shim speaks."""
    response = jsonify({"version": OLLAMA_VERSION})
    response.headers["X-Shim-Version"] = __version__
    return response


@bp.route("/", methods=["GET", "HEAD"])
def root():
    """Ollama's liveness answer."""
    return Response("Ollama is running", mimetype="text/plain")


def render_error(err: ShimError):
    """An error response in Ollama's shape (a full queue is Ollama's 503 "server busy")."""
    response = jsonify(protocol.render_error(err))
    response.status_code = 503 if isinstance(err, ServerBusy) else err.status
    response.headers.update(err.headers)
    return response
