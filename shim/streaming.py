"""Wire framing only: SSE data-only, SSE with event names, and NDJSON; one framing object per wire format."""
import json
from json.encoder import c_make_encoder  # type: ignore[attr-defined]

import orjson

HEARTBEAT = object()
"Yielded by a generation source that has nothing new yet; SSE turns it into a comment, NDJSON drops it."

PAUSE = object()
"Yielded by a generation source that signals silence, before it waits for more: what came so far can be written."

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


def strict_dumper(ascii_only, separators):
    """A function writing JSON exactly as json.dumps(obj, ensure_ascii=ascii_only, separators=separators,
    allow_nan=False) writes it (ValueError for NaN), made once: json.dumps makes its encoder anew at every call."""
    encoder = json.JSONEncoder(ensure_ascii=ascii_only, separators=separators, allow_nan=False)
    if not c_make_encoder:
        return encoder.encode
    strings = json.encoder.encode_basestring_ascii if ascii_only else json.encoder.encode_basestring
    # No markers (the circular-reference check): what shim writes was read from JSON or built of it.
    make = c_make_encoder(None, encoder.default, strings, None, separators[1], separators[0], False, False, False)
    return lambda obj: "".join(make(obj, 0))


def dumpb(obj):
    """dumps(obj) as UTF-8 bytes, by orjson (a fifth of the time; some floats spelled otherwise, NaN as null)."""
    try:
        data = orjson.dumps(obj)
    except TypeError:  # lone surrogates, integers past 64 bits, keys that are not strings: dumps decides
        return dumps(obj).encode()
    if data.isascii():
        return data
    return (data.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
            .replace(b"\xc2\x85", b"\\u0085"))


def loads(data):
    """JSON text (str or bytes) as Python values, as json.loads reads it: by orjson when it can read it."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # NaN, Infinity and the like (json.loads reads them), or not JSON at all
        return json.loads(data)


def sse_frame(obj):
    """One SSE data event."""
    return b"data: " + dumpb(obj) + b"\n\n"


def ndjson_line(obj):
    """One NDJSON line; JSON text never holds a raw newline, so a line is always exactly one object."""
    return dumpb(obj) + b"\n"


_EVENT_HEADS: dict = {}
"The bytes before the data of a named event, per name: a stream names few, and writes one for each token."
_EVENT_HEADS_KEPT = 256


def sse_named_frame(obj):
    """One SSE event whose name is the object's `type`."""
    kind = obj["type"]
    head = _EVENT_HEADS.get(kind)
    if head is None:
        head = b"event: " + kind.encode() + b"\ndata: "
        if len(_EVENT_HEADS) < _EVENT_HEADS_KEPT:  # names an upstream passes through are not bounded
            _EVENT_HEADS[kind] = head
    return head + dumpb(obj) + b"\n\n"


class SSE:
    """Server-Sent Events, data-only (OpenAI chat completions): `data: {...}`, `: ping`, then `data: [DONE]`."""

    mimetype = "text/event-stream"

    frame = staticmethod(sse_frame)
    "One chunk as one event."

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

    frame = staticmethod(sse_named_frame)
    "One chunk as one named event."

    def heartbeat(self):
        """A ping event where the protocol has one, else an SSE comment."""
        return self.ping

    def close(self):
        """Named-event streams end with their last event; nothing follows it."""
        return b""


class NDJSON:
    """Newline-delimited JSON (Ollama): one object per line, no heartbeats (a blank line breaks its client)."""

    mimetype = "application/x-ndjson"

    frame = staticmethod(ndjson_line)
    "One chunk as one line."

    def heartbeat(self):
        """NDJSON has no comment syntax: nothing is written."""
        return b""

    def close(self):
        """Nothing follows the last line."""
        return b""


def parse_sse(pieces):
    """The data payloads of an SSE stream given as bytes as they arrive (see SSEReader); an empty piece (the
    stream was silent a while) is passed on as HEARTBEAT, a None piece (nothing more is here yet) as PAUSE."""
    reader = SSEReader()
    for piece in pieces:
        if piece:
            yield from reader.feed(piece)
        else:
            yield PAUSE if piece is None else HEARTBEAT
    yield from reader.end()


class SSEReader:
    """Reads an SSE stream's bytes, piece by piece, into its events' data: lines end at LF, CR or CRLF (even split
    between pieces), comments and other fields are skipped, multi-line data joined, each line decoded as UTF-8."""

    def __init__(self):
        self._pending = b""
        "The start of a line not ended yet (or ended by a CR the next piece's LF may belong to)."
        self._data: list[str] = []
        "The data lines of the event being read."

    def feed(self, piece):
        """The data of the events this piece of the stream completes."""
        lines = (self._pending + piece if self._pending else piece).splitlines(True)
        self._pending = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        return self._read(lines)

    def end(self):
        """The data of the last event, when the stream ended without the blank line that should end it."""
        ended = self._read([self._pending] if self._pending else [])
        self._pending = b""
        if self._data:
            ended.append("\n".join(self._data))
            self._data = []
        return ended

    def _read(self, lines):
        # Bytes split only at CR/LF, then UTF-8: an SSE stream is UTF-8 whatever its Content-Type says, and a
        # U+2028 inside a JSON string must not end a line. Only data lines are decoded.
        found, data = [], self._data
        for line in lines:
            line = line.rstrip(b"\r\n")
            if not line:
                if data:
                    found.append("\n".join(data))
                    data = self._data = []
            elif line[:5] == b"data:":
                data.append(line[6 if line[5:6] == b" " else 5:].decode("utf-8", errors="replace"))
            elif line == b"data":
                data.append("")
        return found
