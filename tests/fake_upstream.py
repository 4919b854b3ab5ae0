"""A scripted upstream (Ollama or OpenAI-compatible) on a loopback port: a werkzeug server in a thread.

Tests give it a handler (recorded request -> werkzeug Response) and read back every request it received.
"""
import json
import logging
import socket
import threading
import time
from dataclasses import dataclass

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log lines in test output


@dataclass
class Recorded:
    """One request the fake upstream received."""

    method: str
    path: str
    headers: dict
    data: bytes
    environ: dict

    @property
    def json(self):
        return json.loads(self.data) if self.data else None


class FakeUpstream:
    """A threaded HTTP server whose answers come from `handler`; records every request."""

    def __init__(self, handler=None):
        self.handler = handler or (lambda req: Response("no handler", status=404))
        self.requests = []
        self.server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        # The default poll interval (0.5 s) is how long shutdown() waits: every fake's exit would cost that.
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def _app(self, environ, start_response):
        request = Request(environ)
        record = Recorded(request.method, request.path, {k.lower(): v for k, v in request.headers.items()},
                          request.get_data(), environ)
        self.requests.append(record)
        return self.handler(record)(environ, start_response)


def ndjson(*objects, status=200):
    """A complete NDJSON answer."""
    body = "".join(json.dumps(o) + "\n" for o in objects)
    return Response(body, status=status, mimetype="application/x-ndjson")


def ollama_answer(record, *parts):
    """An Ollama answer: the parts as NDJSON when the request streams (Ollama's default when it does not say), else
    the one whole object a real server sends instead (the parts folded together; an error part is a 500)."""
    if (record.json or {}).get("stream", True):
        return ndjson(*parts)
    failed = next((p for p in parts if p.get("error")), None)
    if failed:
        return Response(json.dumps({"error": failed["error"]}), status=500, mimetype="application/json")
    return Response(json.dumps(ollama_folded(parts)), mimetype="application/json")


def ollama_folded(parts):
    """The parts of an Ollama chat or generate stream folded into the whole answer they stream."""
    whole: dict = {}
    for part in parts:
        for name, value in part.items():
            if name == "message":
                message = whole.setdefault("message", {})
                for key, piece in value.items():
                    if key == "tool_calls":
                        message.setdefault(key, []).extend(piece)
                    elif key in ("content", "thinking"):
                        message[key] = message.get(key, "") + piece
                    else:
                        message[key] = piece
            elif name in ("response", "thinking"):
                whole[name] = whole.get(name, "") + value
            elif name == "logprobs":
                whole.setdefault(name, []).extend(value)
            else:
                whole[name] = value
    return whole


def sse(*objects, done=True, status=200):
    """A complete SSE answer, ending in [DONE] unless done is False."""
    body = "".join("data: " + json.dumps(o) + "\n\n" for o in objects) + ("data: [DONE]\n\n" if done else "")
    return Response(body, status=status, mimetype="text/event-stream")


def openai_answer(record, *chunks):
    """An OpenAI-compatible answer: the chunks as SSE when the request streams, else the one whole chat.completion
    a real server sends instead (the chunks folded together)."""
    if record.json.get("stream"):
        return sse(*chunks)
    return Response(json.dumps(folded(chunks)), mimetype="application/json")


REASONING = ("reasoning_content", "reasoning")


def folded(chunks):
    """Chat (or text) completion chunks folded into the whole chat.completion (or text_completion) they stream."""
    choices, usage = {}, None
    for chunk in chunks:
        usage = chunk.get("usage") or usage
        for part in chunk.get("choices") or ():
            choice = choices.setdefault(part.get("index", 0), {"index": part.get("index", 0), "finish_reason": None,
                                                               **({"text": ""} if "text" in part else {"message": {}})})
            message = choice.get("message", {})
            for name, value in (part.get("delta") or {}).items():
                if name == "tool_calls":
                    for call in value:
                        calls = message.setdefault("tool_calls", [])
                        if call["index"] == len(calls):
                            calls.append({"id": call.get("id"), "type": "function",
                                          "function": {"name": "", "arguments": ""}})
                        function = calls[call["index"]]["function"]
                        for key, text in (call.get("function") or {}).items():
                            function[key] += text
                elif isinstance(value, str) and name != "role":
                    if name in REASONING:  # one field in a whole answer, named as its first piece was
                        name = next((n for n in REASONING if n in message), name)
                    message[name] = message.get(name, "") + value
                else:
                    message[name] = value
            if "text" in part:  # a legacy text completion's choice
                choice["text"] += part["text"]
            for name, value in (part.get("logprobs") or {}).items():  # content lists, or the legacy parallel lists
                choice.setdefault("logprobs", {}).setdefault(name, []).extend(value)
            choice["finish_reason"] = part.get("finish_reason") or choice["finish_reason"]
    first = chunks[0] if chunks else {}
    kind = "text_completion" if any("text" in c for c in choices.values()) else "chat.completion"
    return {"id": first.get("id", "c"), "object": kind, "created": first.get("created", 0),
            "model": first.get("model", "m"), "choices": [choices[i] for i in sorted(choices)],
            **({"usage": usage} if usage else {})}


def error_json(status, error):
    """An error answer with a JSON body {"error": error}."""
    return Response(json.dumps({"error": error}), status=status, mimetype="application/json")


def dying(record, chunks, mimetype):
    """An answer that sends `chunks` (bytes), then closes the connection without ending the chunked body."""
    sock = record.environ["werkzeug.socket"]

    def body():
        yield from chunks
        time.sleep(0.05)  # let the chunks leave before the connection goes
        sock.shutdown(socket.SHUT_RDWR)
    return Response(body(), mimetype=mimetype)
