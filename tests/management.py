"""A fake Ollama instance's answers to model management, and the names shim routes to it (unit and e2e tests)."""
from werkzeug.wrappers import Response

from tests.fake_upstream import error_json, ndjson

PROGRESS = [{"status": "pulling manifest"}, {"status": "pulling abc", "digest": "sha256:abc", "total": 10,
                                             "completed": 5}, {"status": "success"}]


def answer(record):
    if record.path == "/api/tags":
        return ndjson({"models": [{"model": "llama3:8b", "name": "llama3:8b", "size": 1}]})
    if record.path in ("/api/pull", "/api/push", "/api/create"):
        return ndjson(*PROGRESS) if record.json.get("stream") else ndjson(PROGRESS[-1])
    if record.path in ("/api/copy", "/api/delete"):
        if (record.json.get("model") or record.json.get("source")) == "missing:latest":
            return error_json(404, "model 'missing:latest' not found")
        return Response(status=200)
    return error_json(404, "no")


ADMIN = {"Authorization": "Bearer sk-admin"}
ROUTED = ["qwen3:*", "llama3:*", "me/*", "mine", "backup", "missing:*"]
"The names shim routes to the instance, so the only ones it manages there."
