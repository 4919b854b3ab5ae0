"""An upstream that answers at once, speaking OpenAI's, Ollama's and Anthropic's API, for measuring shim's overhead.

Raw asyncio HTTP/1.1 with keep-alive, so that it costs far less than the proxy in front of it.
Run alone: python -m bench.instant_upstream PORT [--delay SECONDS-BETWEEN-CHUNKS]
"""
import asyncio
import json
import sys

TOKENS = 16
TEXT = "".join(f" t{i}" for i in range(TOKENS))
"The text of every answer, streamed a token a chunk or whole: the same 16 tokens either way, so both cost alike."
CHAT = json.dumps({
    "id": "chatcmpl-instant", "object": "chat.completion", "created": 0, "model": "instant",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT[1:]}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": TOKENS, "total_tokens": TOKENS + 5}}).encode()
MODELS = json.dumps({"object": "list", "data": [{"id": "instant", "object": "model", "created": 0,
                                                 "owned_by": "bench"}]}).encode()
TAGS = json.dumps({"models": [{"name": "instant", "model": "instant", "modified_at": "2026-01-01T00:00:00Z",
                               "size": 1, "digest": "0", "details": {"format": "gguf"}}]}).encode()
OLLAMA_CHAT = json.dumps({"model": "instant", "created_at": "2026-01-01T00:00:00Z",
                          "message": {"role": "assistant", "content": TEXT}, "done": True, "done_reason": "stop",
                          "prompt_eval_count": 5, "eval_count": TOKENS}).encode()
OLLAMA_GENERATE = json.dumps({"model": "instant", "created_at": "2026-01-01T00:00:00Z", "response": TEXT, "done": True,
                              "done_reason": "stop", "prompt_eval_count": 5, "eval_count": TOKENS}).encode()
MESSAGE = json.dumps({"id": "msg_instant", "type": "message", "role": "assistant", "model": "instant",
                      "content": [{"type": "text", "text": TEXT}], "stop_reason": "end_turn", "stop_sequence": None,
                      "usage": {"input_tokens": 5, "output_tokens": TOKENS}}).encode()


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


def ndjson_chunks(generate=False):
    """The 16-token NDJSON answer of /api/chat (or of /api/generate)."""
    def part(text):
        return {"response": text} if generate else {"message": {"role": "assistant", "content": text}}
    lines = [{"model": "instant", "created_at": "2026-01-01T00:00:00Z", **part(f" t{i}"), "done": False}
             for i in range(TOKENS)]
    lines.append({"model": "instant", "created_at": "2026-01-01T00:00:00Z", **part(""), "done": True,
                  "done_reason": "stop", "prompt_eval_count": 5, "eval_count": TOKENS})
    return [json.dumps(line).encode() + b"\n" for line in lines]


def named_sse_chunks():
    """The 16-token Anthropic Messages stream: named events, message_start to message_stop."""
    message = {**json.loads(MESSAGE), "content": [], "stop_reason": None, "usage": {"input_tokens": 5,
                                                                                   "output_tokens": 0}}
    events = [{"type": "message_start", "message": message},
              {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}]
    events += [{"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f" t{i}"}}
               for i in range(TOKENS)]
    events += [{"type": "content_block_stop", "index": 0},
               {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": TOKENS}},
               {"type": "message_stop"}]
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


SSE, NDJSON, NDJSON_GENERATE, NAMED_SSE = sse_chunks(), ndjson_chunks(), ndjson_chunks(True), named_sse_chunks()


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
                elif path == "/api/generate":
                    if wants_stream or b'"stream"' not in body:
                        await stream(writer, NDJSON_GENERATE, b"application/x-ndjson", delay)
                    else:
                        writer.write(fixed(OLLAMA_GENERATE))
                elif path.startswith("/v1/messages"):
                    if wants_stream:
                        await stream(writer, NAMED_SSE, b"text/event-stream", delay)
                    else:
                        writer.write(fixed(MESSAGE))
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
