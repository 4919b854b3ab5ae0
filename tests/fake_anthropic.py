"""A scripted Anthropic-compatible upstream (the Messages API) for FakeUpstream: a deterministic fake model.

It answers /v1/messages as JSON or named SSE and /v1/models in Anthropic's shape. The answer echoes the last user
text ("You said: ..."); with tools and a forced tool_choice (or a question about the weather) it calls the first
tool; after a tool result it says what the tool returned. Stop sequences cut the answer. Special model names script
failures: `overloaded` (529), `too-long` (400 prompt is too long), `missing` (404), `midstream` (an error event
after some text), `slow` (a piece every 20 ms for a minute; records when the connection went away). With thinking
enabled, the answer starts with a thinking block (THINKING, signed).
"""
import json
import threading
import time

from werkzeug.wrappers import Response

MODELS = {"data": [{"type": "model", "id": "claude-fake", "display_name": "Claude Fake",
                    "created_at": "2025-02-19T00:00:00Z"}], "has_more": False, "first_id": "claude-fake",
          "last_id": "claude-fake"}


class SlowState:
    """What the `slow` model saw: pieces sent, and whether (when) the client hung up."""

    def __init__(self):
        self.sent = 0
        self.closed = threading.Event()


SLOW = SlowState()
THINKING = "Thinking it over."


def app(record):
    """The FakeUpstream handler."""
    if record.method == "GET" and record.path == "/v1/models":
        return _json(MODELS)
    if record.method != "POST" or record.path != "/v1/messages":
        return _error(404, "not_found_error", f"no route {record.path}")
    body = record.json
    model = body.get("model")
    if model == "overloaded":
        return _error(529, "overloaded_error", "Overloaded")
    if model == "too-long":
        return _error(400, "invalid_request_error", "prompt is too long: 300000 tokens > 200000 maximum")
    if model == "missing":
        return _error(404, "not_found_error", f"model: {model}")
    if model == "slow":
        return Response(_slow(), mimetype="text/event-stream")
    blocks, reason, sequence = answer(body)
    if (body.get("thinking") or {}).get("type") == "enabled":
        blocks = [{"type": "thinking", "thinking": THINKING, "signature": "sig-fake"}] + blocks
    if not body.get("stream"):
        return _json(message(body, blocks, reason, sequence))
    events = stream_events(body, blocks, reason, sequence)
    if model == "midstream":
        events = events[:4] + [{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    return Response("".join(frame(e) for e in events), mimetype="text/event-stream")


def answer(body):
    """(content blocks, stop_reason, stop_sequence) the fake model gives."""
    last = body["messages"][-1]
    content = last["content"] if isinstance(last["content"], list) else [{"type": "text", "text": last["content"]}]
    results = [b for b in content if b.get("type") == "tool_result"]
    if results:
        said = " ".join(part["text"] for r in results for part in r.get("content") or () if part["type"] == "text")
        text = f"The tool said: {said}"
    else:
        text = "You said: " + " ".join(b["text"] for b in content if b.get("type") == "text")
        choice = (body.get("tool_choice") or {}).get("type")
        if body.get("tools") and choice != "none" and (choice in ("any", "tool") or "weather" in text.lower()):
            tool = body["tools"][0] if choice != "tool" else {"name": body["tool_choice"]["name"]}
            return [{"type": "tool_use", "id": "toolu_fake1", "name": tool["name"], "input": {"city": "Paris"}}], \
                "tool_use", None
    for sequence in body.get("stop_sequences") or ():
        if sequence in text:
            return [{"type": "text", "text": text.split(sequence)[0]}], "stop_sequence", sequence
    words = text.split(" ")
    if len(words) > body["max_tokens"]:
        return [{"type": "text", "text": " ".join(words[:body["max_tokens"]])}], "max_tokens", None
    return [{"type": "text", "text": text}], "end_turn", None


def usage(body, blocks):
    """Token counts: a word a token."""
    prompt = sum(len(json.dumps(m["content"]).split()) for m in body["messages"])
    output = sum(len((b.get("text") or b.get("thinking") or json.dumps(b.get("input"))).split()) for b in blocks)
    return {"input_tokens": max(prompt - 2, 0), "cache_read_input_tokens": 2, "cache_creation_input_tokens": 0,
            "output_tokens": output}


def message(body, blocks, reason, sequence):
    """A whole Message object."""
    return {"id": "msg_fake", "type": "message", "role": "assistant", "model": body["model"], "content": blocks,
            "stop_reason": reason, "stop_sequence": sequence, "usage": usage(body, blocks)}


def stream_events(body, blocks, reason, sequence):
    """The named SSE events of that answer: text word by word, tool input in two pieces."""
    events = [{"type": "message_start", "message": {**message(body, [], None, None),
                                                    "usage": {**usage(body, []), "output_tokens": 1}}},
              {"type": "ping"}]
    for index, block in enumerate(blocks):
        if block["type"] == "thinking":
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
            events += [{"type": "content_block_delta", "index": index,
                        "delta": {"type": "thinking_delta", "thinking": block["thinking"]}},
                       {"type": "content_block_delta", "index": index,
                        "delta": {"type": "signature_delta", "signature": block["signature"]}}]
        elif block["type"] == "text":
            events.append({"type": "content_block_start", "index": index, "content_block": {"type": "text",
                                                                                               "text": ""}})
            words = block["text"].split(" ")
            events += [{"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": w if i == 0 else " " + w}} for i, w in enumerate(words)]
        else:
            events.append({"type": "content_block_start", "index": index,
                           "content_block": {**block, "input": {}}})
            text = json.dumps(block["input"])
            events += [{"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": part}}
                       for part in (text[:5], text[5:])]
        events.append({"type": "content_block_stop", "index": index})
    events.append({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": sequence},
                   "usage": {"output_tokens": usage(body, blocks)["output_tokens"]}})
    events.append({"type": "message_stop"})
    return events


def frame(event):
    """One named SSE frame."""
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"


def _slow():
    SLOW.sent, _ = 0, SLOW.closed.clear()
    try:
        yield frame({"type": "message_start", "message": message({"model": "slow", "messages": []}, [], None, None)})
        yield frame({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        for _ in range(3000):
            yield frame({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}})
            SLOW.sent += 1
            time.sleep(0.02)
    finally:
        SLOW.closed.set()


def _json(obj, status=200):
    return Response(json.dumps(obj), status=status, mimetype="application/json")


def _error(status, kind, text):
    return _json({"type": "error", "error": {"type": kind, "message": text}, "request_id": "req_fake"}, status)
