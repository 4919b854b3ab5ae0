"""One choice's way out: token bytes to text, reasoning split off, stop sequences, tool-call capture, then events."""
from __future__ import annotations

import codecs

from .. import generation as g
from . import toolcalls
from .stops import StopScanner


OPEN, CLOSE = "<think>", "</think>"


class ThinkSplitter:
    """Splits a thinking model's text into the reasoning of a <think>…</think> block it opens with, and the answer.

    Streaming-safe: text that may be the start of a tag is held back until the next piece tells.
    """

    def __init__(self, opened=False):
        self.state = "think" if opened else "start"
        "start (no text yet), think (inside the block), after (just closed: whitespace dropped), answer"
        self.held = ""
        self.reasoned = False

    @property
    def thinking(self):
        """Whether the text is inside the think block now."""
        return self.state == "think"

    def feed(self, text, final=False):
        """(reasoning, answer) of the next piece of text; final flushes what was held back."""
        buf, self.held = self.held + text, ""
        reasoning = answer = ""
        while buf or final:
            if self.state == "start":
                stripped = buf.lstrip()
                if stripped.startswith(OPEN):
                    buf, self.state = stripped[len(OPEN):], "think"
                    continue
                if OPEN.startswith(stripped) and not final:
                    self.held = buf
                    break
                self.state = "answer"
            elif self.state == "think":
                if not self.reasoned:
                    buf = buf.lstrip()
                    self.reasoned = bool(buf)
                end = buf.find(CLOSE)
                if end >= 0:
                    reasoning += buf[:end].rstrip()
                    buf, self.state = buf[end + len(CLOSE):], "after"
                    continue
                # Held back: what may begin </think>, and the whitespace before it (dropped if the block closes).
                body = buf if final else buf[:len(buf) - _tag_start(buf, CLOSE)]
                body = body if final else body.rstrip()
                reasoning, self.held = reasoning + body, buf[len(body):]
                break
            elif self.state == "after":
                buf = buf.lstrip()
                if not buf:
                    break
                self.state = "answer"
            else:
                answer += buf
                break
        return reasoning, answer


def _tag_start(text, tag):
    """How many characters at the end of text could begin the tag."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ChoiceOutput:
    """Turns one choice's tokens into ReasoningDelta, TextDelta and ToolCallDelta events."""

    def __init__(self, emit, index, request, thinking=None):
        """thinking: None for a model that does not think; else whether its prompt opened the <think> block."""
        self.emit, self.index = emit, index
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.splitter = None if thinking is None else ThinkSplitter(opened=thinking)
        self.reasoning_tokens = 0
        self.scanner = StopScanner(request.stop)
        tools_on, forced = toolcalls.call_mode(request)
        self.catcher = toolcalls.CallCatcher(request.tools, forced) if tools_on else None
        self.single_call = not request.parallel_tool_calls
        self.logprobs = []

    def add(self, piece, logprob):
        """Take one token's bytes; returns True when a stop sequence ended the choice."""
        was_thinking = self.splitter is not None and self.splitter.thinking
        text = self._split(self.decoder.decode(piece))
        if was_thinking or (self.splitter is not None and self.splitter.thinking):
            self.reasoning_tokens += 1
        elif logprob is not None:
            self.logprobs.append(logprob)
        text = self.scanner.feed(text)
        self._send(self.catcher.feed(text) if self.catcher else text)
        return self.scanner.stopped

    def close(self, reason):
        """Flush what was held back; returns the finish reason (tool_calls when calls were made)."""
        # Bytes of a character the answer was cut off inside are left out, as llama-server leaves them, not
        # turned into U+FFFD.
        self.decoder.reset()
        tail = "" if self.scanner.stopped else self.scanner.flush() + self._split("", final=True)
        calls = []
        if self.catcher:
            tail = self.catcher.feed(tail)
            text, calls = self.catcher.finish(cut=reason == "length" or self.scanner.stopped)
            tail += text
        self._send(tail, force=True)
        for position, call in enumerate(calls[:1] if self.single_call else calls):
            self.emit(g.ToolCallDelta(call, self.index, position))
        # A call cut off keeps the reason it was cut for (OpenAI: finish_reason length beside the partial call).
        return "tool_calls" if calls and not self.catcher.cut_call else reason

    @property
    def stop_sequence(self):
        """The stop string that ended the choice, or None."""
        return self.scanner.matched

    def _split(self, text, final=False):
        """The answer part of text; the reasoning part is emitted at once."""
        if self.splitter is None:
            return text
        reasoning, answer = self.splitter.feed(text, final)
        if reasoning:
            self.emit(g.ReasoningDelta(reasoning, self.index))
        return answer

    def _send(self, text, force=False):
        if text or (force and self.logprobs) or len(self.logprobs) > 16:
            self.emit(g.TextDelta(text, self.index, tuple(self.logprobs)))
            self.logprobs = []
