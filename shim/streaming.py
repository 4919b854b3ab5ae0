"""Wire framing only: Server-Sent Events for OpenAI, newline-delimited JSON for Ollama."""
import json

HEARTBEAT = object()
"Yielded by a generation source that has nothing new yet; SSE turns it into a comment, NDJSON drops it."

SSE_DONE = b"data: [DONE]\n\n"
SSE_PING = b": ping\n\n"


def dumps(obj):
    """Compact JSON text, as both protocols write it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def sse_frame(obj):
    """One SSE data event."""
    return b"data: " + dumps(obj).encode() + b"\n\n"


def ndjson_line(obj):
    """One NDJSON line; json.dumps never emits a raw newline, so a line is always exactly one object."""
    return dumps(obj).encode() + b"\n"


def parse_sse(lines):
    """The data payloads of an SSE stream given as text lines: comments skipped, multi-line data joined."""
    data = []
    for line in lines:
        if line == "":
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)
