"""Wire framing only: Server-Sent Events for OpenAI, newline-delimited JSON for Ollama."""
import json

HEARTBEAT = object()
"Yielded by a generation source that has nothing new yet; SSE turns it into a comment, NDJSON drops it."

SSE_DONE = b"data: [DONE]\n\n"
SSE_PING = b": ping\n\n"


_LINE_BREAKERS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"})


def dumps(obj):
    """Compact JSON text, as both protocols write it, with no character a line reader could split on."""
    # Python's str.splitlines (which httpx's line reader uses) breaks at U+2028, U+2029 and U+0085; inside
    # JSON strings they may be written escaped, so they are.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKERS)


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
