"""An upstream that answers at once, speaking both OpenAI's and Ollama's API, for measuring shim's own overhead.

Raw asyncio HTTP/1.1 with keep-alive, so that it costs far less than the proxy in front of it.
Run alone: python -m bench.instant_upstream PORT [--delay SECONDS-BETWEEN-CHUNKS]
"""
import asyncio
import json
import sys

TOKENS = 16
CHAT = json.dumps({
    "id": "chatcmpl-instant", "object": "chat.completion", "created": 0, "model": "instant",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "instant", "object": "model", "created": 0,
                                                 "owned_by": "bench"}]}).encode()
TAGS = json.dumps({"models": [{"name": "instant", "model": "instant", "modified_at": "2026-01-01T00:00:00Z",
                               "size": 1, "digest": "0", "details": {"format": "gguf"}}]}).encode()
OLLAMA_CHAT = json.dumps({"model": "instant", "created_at": "2026-01-01T00:00:00Z",
                          "message": {"role": "assistant", "content": "ok"}, "done": True, "done_reason": "stop",
                          "prompt_eval_count": 5, "eval_count": 1}).encode()


def sse_chunks():
    """The 16-token SSE answer, then usage and [DONE]."""
    def chunk(delta, finish=None):
        return {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "instant",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    events = [chunk({"role": "assistant", "content": "t0"})] + [chunk({"content": f" t{i}"}) for i in range(1, TOKENS)]
    events += [chunk({}, "stop"), {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "instant",
                                   "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": TOKENS,
                                                            "total_tokens": TOKENS + 5}}]
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events] + [b"data: [DONE]\n\n"]


def ndjson_chunks():
    """The 16-token NDJSON answer."""
    lines = [{"model": "instant", "created_at": "2026-01-01T00:00:00Z",
              "message": {"role": "assistant", "content": f" t{i}"}, "done": False} for i in range(TOKENS)]
    lines.append({"model": "instant", "created_at": "2026-01-01T00:00:00Z",
                  "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
                  "prompt_eval_count": 5, "eval_count": TOKENS})
    return [json.dumps(line).encode() + b"\n" for line in lines]


SSE, NDJSON = sse_chunks(), ndjson_chunks()


async def read_request(reader):
    """(method, path, body) of the next request on the connection, or None at its end."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return method, path, body


def fixed(body, content_type=b"application/json"):
    return (b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


async def stream(writer, chunks, content_type, delay):
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: " + content_type + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    for chunk in chunks:
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if delay:
            await writer.drain()
            await asyncio.sleep(delay)
    writer.write(b"0\r\n\r\n")


def make_handler(delay):
    async def handle(reader, writer):
        try:
            while True:
                method, path, body = await read_request(reader)
                wants_stream = b'"stream": true' in body or b'"stream":true' in body
                if path.endswith("/models"):
                    writer.write(fixed(MODELS))
                elif path == "/api/tags":
                    writer.write(fixed(TAGS))
                elif path.endswith("/chat/completions"):
                    if wants_stream:
                        await stream(writer, SSE, b"text/event-stream", delay)
                    else:
                        writer.write(fixed(CHAT))
                elif path == "/api/chat":
                    if wants_stream or b'"stream"' not in body:
                        await stream(writer, NDJSON, b"application/x-ndjson", delay)
                    else:
                        writer.write(fixed(OLLAMA_CHAT))
                else:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
    return handle


async def serve(port, delay=0.0):
    """Serve until cancelled."""
    server = await asyncio.start_server(make_handler(delay), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    delay = float(sys.argv[sys.argv.index("--delay") + 1]) if "--delay" in sys.argv else 0.0
    asyncio.run(serve(int(sys.argv[1]), delay))
