"""The Ollama-protocol blueprint: /api/generate, /api/chat, /api/tags, /api/show, /api/ps, /api/version, /."""
from flask import Blueprint, Response, jsonify

from .. import __version__
from .. import generation as g
from ..errors import Forbidden, InvalidRequest, ModelNotFound, ServerBusy, ShimError, Unsupported
from ..protocols import ollama as protocol
from ..streaming import NDJSON
from . import common
from .exchange import json_answer

bp = Blueprint("ollama", __name__)


def _answer(call, renderer):
    if call.load_only:
        backend, target = common.services().router.resolve(call.request.model)
        keep_alive = common.keep_alive_of(call.request)
        if call.request.keep_alive == 0 and keep_alive is None:
            raise InvalidRequest(f"model '{call.request.model}' is shared and stays loaded: clients may not unload "
                                 "models on this server (keep_alive 0 needs client_keep_alive)", param="keep_alive",
                                 status=403)
        reason = backend.load(target, keep_alive)
        return json_answer(renderer.load_reply(reason))
    started = common.start(call.request)
    if call.stream:
        return common.stream_response(started, renderer, NDJSON())
    choices = g.collect(common.gather(started))
    return json_answer(renderer.whole(choices[0]))


@common.lane_post(bp, "/api/generate")
def generate():
    """Completion of a prompt, NDJSON or one object."""
    call = protocol.parse_generate(common.read_json())
    return _answer(call, protocol.GenerateStream(call.request.model, raw=call.request.raw))


@common.lane_post(bp, "/api/chat")
def chat():
    """Chat, NDJSON or one object."""
    call = protocol.parse_chat(common.read_json())
    return _answer(call, protocol.ChatStream(call.request.model))


@common.lane_post(bp, "/api/embed")
def embed():
    """Unit-length embeddings of each input."""
    model, inputs, truncate, dimensions, _options = protocol.parse_embed(common.read_json())
    result = common.embed(model, inputs, truncate)
    return json_answer({"model": model, "embeddings": [g.normalize(v, dimensions) for v in result.vectors],
                        "total_duration": result.total_ns, "load_duration": result.load_ns,
                        "prompt_eval_count": result.prompt_tokens})


@common.lane_post(bp, "/api/embeddings")
def embeddings():
    """The legacy single, raw embedding of a prompt."""
    body = common.read_json()
    model, prompt = protocol.parse_embeddings(body)
    if not prompt:
        common.services().router.resolve(model)
        return json_answer({"embedding": []})
    return json_answer({"embedding": list(common.embed(model, [prompt], param="prompt").vectors[0])})


@bp.get("/api/tags")
def tags():
    """Every model shim serves."""
    return jsonify(protocol.render_tags(common.services().router.models()))


@bp.get("/api/ps")
def ps():
    """The models loaded now."""
    return jsonify(protocol.render_ps(common.services().router.loaded()))


@bp.post("/api/show")
def show():
    """Details of one model."""
    name = protocol.parse_model_name(common.read_json())
    backend, target, info = common.services().router.describe(name)
    shown = backend.show(target)
    if shown is not None:
        return jsonify(shown if info is None else protocol.render_upstream_show(shown, info))
    return jsonify(protocol.render_show(info or g.ModelInfo(name=name, backend=backend.name)))


def _owner(name, param="model"):
    """The backend serving `name`, if it can manage models and this caller may, and the model's name there."""
    backend, target = common.services().router.resolve(name)
    if not backend.can_manage:
        raise Unsupported(_unmanaged(backend, name), param=param)
    _check_management()
    return backend, target


def _unmanaged(backend, name):
    """Why models of this backend are not managed through shim, true to the kind of backend it is."""
    if backend.name == "local":
        return f"model '{name}' is served from a local GGUF file; add or remove local models in shim's configuration"
    return f"model management is not available on backend '{backend.name}' ({backend.description})"


def _check_management():
    """Refuse management unless the `management` setting lets this caller manage models."""
    settings = common.services().settings
    if settings.management == "open":
        return
    if settings.management == "off":
        raise Forbidden("model management is turned off on this server (setting 'management' is \"off\")")
    if not settings.admin_keys:
        raise Forbidden("model management needs an admin key, and none is configured (settings 'management' "
                        "and 'admin_keys')")
    if not common.bearer_in(settings.admin_keys):
        raise Forbidden("model management needs an admin key: send one of 'admin_keys' as 'Authorization: "
                        "Bearer <key>' (setting 'management' is \"admin\")")


def _on(backend, name, param):
    """The name at `backend` of a second model a management call names; it must be routed to that same backend."""
    try:
        other, target = common.services().router.resolve(name)
    except ModelNotFound:
        other = target = None
    if other is not backend:
        raise Forbidden(f"'{param}' names '{name}', which shim does not route to backend '{backend.name}': "
                        "management stays within the names shim serves from one backend", param=param)
    return target


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
    return common.stream_response(common.Started(common.prime(parts)), protocol.ProgressStream(), NDJSON())


@bp.post("/api/pull")
def pull():
    """Pull a model on the Ollama instance that will serve it (a model served otherwise is already there)."""
    body = common.read_json()
    name = protocol.parse_model_name(body)
    try:
        owner = _owner(name)
    except Unsupported:
        return _progress(_streams(body), [{"status": "success"}])
    return _manage("pull", body, owner, insecure=bool(body.get("insecure")))


@bp.post("/api/push")
def push():
    """Push a model from the Ollama instance that has it (to the registry its name names)."""
    body = common.read_json()
    return _manage("push", body, _owner(protocol.parse_model_name(body)), insecure=bool(body.get("insecure")))


@bp.post("/api/create")
def create():
    """Create a model on an Ollama instance, from a model on the same instance."""
    body = common.read_json()
    fields = protocol.parse_create(body)
    backend, target = _owner(fields.pop("model"))
    if isinstance(fields.get("from_"), str):
        fields["from_"] = _on(backend, fields["from_"], "from")
    return _manage("create", body, (backend, target), **fields)


@bp.post("/api/copy")
def copy():
    """Copy a model on the Ollama instance that has it, to a name routed to that instance."""
    source, destination = protocol.parse_copy(common.read_json())
    backend, target = _owner(source, "source")
    list(backend.manage("copy", source=target, destination=_on(backend, destination, "destination")))
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
    """The Ollama API version shim speaks (the ollama_version setting)."""
    response = jsonify({"version": common.services().settings.ollama_version})
    response.headers["X-Shim-Version"] = __version__
    return response


@bp.route("/", methods=["GET", "HEAD"])
def root():
    """Ollama's liveness answer."""
    return Response("Ollama is running", mimetype="text/plain")


def render_error(err: ShimError):
    """An error response in Ollama's shape (a full queue is Ollama's 503 "server busy")."""
    return json_answer(protocol.render_error(err), 503 if isinstance(err, ServerBusy) else err.status, err.headers)


common.protect(bp, render_error)
