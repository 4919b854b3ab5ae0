"""Wire framing only: SSE data-only, SSE with event names, and NDJSON; one framing object per wire format."""
import json
from json.encoder import c_make_encoder  # type: ignore[attr-defined]

HEARTBEAT = object()
"Yielded by a generation source that has nothing new yet; SSE turns it into a comment, NDJSON drops it."

SSE_DONE = b"data: [DONE]\n\n"
SSE_PING = b": ping\n\n"


_LINE_BREAKERS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"})
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"Made once: json.dumps with arguments builds a new encoder for every chunk."
_C_ENCODER = c_make_encoder and c_make_encoder(None, _ENCODER.default, json.encoder.encode_basestring, None, ":",
                                               ",", False, False, True)
"_ENCODER's C encoder, made once: JSONEncoder.encode makes it anew for every call, a third of a small chunk's cost."


def dumps(obj):
    """Compact JSON text, as both protocols write it, with no character a line reader could split on."""
    # Python's str.splitlines (which httpx's line reader uses) breaks at U+2028, U+2029 and U+0085; inside
    # JSON strings they may be written escaped, so they are. All three are outside ASCII, which most text is not.
    text = "".join(_C_ENCODER(obj, 0)) if _C_ENCODER else _ENCODER.encode(obj)
    return text if text.isascii() else text.translate(_LINE_BREAKERS)


def sse_frame(obj):
    """One SSE data event."""
    return f"data: {dumps(obj)}\n\n".encode()


def ndjson_line(obj):
    """One NDJSON line; json.dumps never emits a raw newline, so a line is always exactly one object."""
    return f"{dumps(obj)}\n".encode()


class SSE:
    """Server-Sent Events, data-only (OpenAI chat completions): `data: {...}`, `: ping`, then `data: [DONE]`."""

    mimetype = "text/event-stream"

    def frame(self, chunk):
        """One chunk as one event."""
        return sse_frame(chunk)

    def heartbeat(self):
        """What keeps a silent stream open."""
        return SSE_PING

    def close(self):
        """What ends the stream, after the last chunk or an error."""
        return SSE_DONE


class NamedSSE(SSE):
    """Server-Sent Events with an `event:` line naming each chunk by its `type` field (Responses, Messages)."""

    def __init__(self, ping=None):
        self.ping = sse_named_frame(ping) if ping else SSE_PING

    def frame(self, chunk):
        """One chunk as one named event."""
        return sse_named_frame(chunk)

    def heartbeat(self):
        """A ping event where the protocol has one, else an SSE comment."""
        return self.ping

    def close(self):
        """Named-event streams end with their last event; nothing follows it."""
        return b""


class NDJSON:
    """Newline-delimited JSON (Ollama): one object per line, no heartbeats (a blank line breaks its client)."""

    mimetype = "application/x-ndjson"

    def frame(self, chunk):
        """One chunk as one line."""
        return ndjson_line(chunk)

    def heartbeat(self):
        """NDJSON has no comment syntax: nothing is written."""
        return b""

    def close(self):
        """Nothing follows the last line."""
        return b""


def sse_named_frame(obj):
    """One SSE event whose name is the object's `type`."""
    return f"event: {obj['type']}\ndata: {dumps(obj)}\n\n".encode()


def parse_sse(lines):
    """The data payloads of an SSE stream given as text lines: comments skipped, multi-line data joined."""
    data: list[str] = []
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
