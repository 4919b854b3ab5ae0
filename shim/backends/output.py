"""One choice's way out: token bytes to text, stop sequences, tool-call capture, then events."""
from __future__ import annotations

import codecs

from .. import generation as g
from . import toolcalls
from .stops import StopScanner


class ChoiceOutput:
    """Turns one choice's tokens into TextDelta and ToolCallDelta events."""

    def __init__(self, emit, index, request):
        self.emit, self.index = emit, index
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.scanner = StopScanner(request.stop)
        tools_on, forced = toolcalls.call_mode(request)
        self.catcher = toolcalls.CallCatcher(request.tools, forced) if tools_on else None
        self.single_call = not request.parallel_tool_calls
        self.logprobs = []

    def add(self, piece, logprob):
        """Take one token's bytes; returns True when a stop sequence ended the choice."""
        if logprob is not None:
            self.logprobs.append(logprob)
        text = self.scanner.feed(self.decoder.decode(piece))
        self._send(self.catcher.feed(text) if self.catcher else text)
        return self.scanner.stopped

    def close(self, reason):
        """Flush what was held back; returns the finish reason (tool_calls when calls were made)."""
        tail = "" if self.scanner.stopped else self.scanner.flush() + self.decoder.decode(b"", final=True)
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

    def _send(self, text, force=False):
        if text or (force and self.logprobs) or len(self.logprobs) > 16:
            self.emit(g.TextDelta(text, self.index, tuple(self.logprobs)))
            self.logprobs = []
