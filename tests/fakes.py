"""A small in-process backend for fast tests of translation and error paths."""
from shim import generation as g
from shim.errors import ModelNotFound


class FakeBackend(g.Backend):
    """Yields scripted events; records every request it was given."""

    name = "fake"

    def __init__(self, model="fake-model"):
        self.model = model
        self.history = []
        self.script = None
        self.fail = None
        self.cancels = []
        self.hold = None
        "A threading.Event the generation waits for after its first piece, to keep it running."

    def models(self):
        return [g.ModelInfo(name=self.model, backend=self.name, family="fake", context_length=128,
                            modified_at=1_700_000_000, loaded=True)]

    def embed(self, model, inputs, truncate=True, cancel=None):
        """One small vector per input: its length and a constant."""
        if model != self.model:
            raise ModelNotFound(model)
        return g.Embeddings(tuple((float(len(text)), 1.0) for text in inputs), len(inputs))

    def say(self, *pieces, reason="stop", tool_calls=()):
        """Script the next answers: these text pieces, then these calls, then a Finish."""
        self.script = (pieces, reason, tool_calls)

    def fail_after(self, pieces, error):
        """Script the next answer to raise error after these pieces."""
        self.script = (pieces, "stop", ())
        self.fail = error

    def generate(self, request, cancel):
        if request.model != self.model:
            raise ModelNotFound(request.model)
        self.history.append(request)
        self.cancels.append(cancel)
        pieces, reason, calls = self.script or (("Hello", " world"), "stop", ())
        yield g.Accepted(prompt_tokens=3)
        for index in range(request.n):
            for piece in pieces:
                yield g.TextDelta(piece, index)
                if self.hold is not None:
                    self.hold.wait(10)
            if self.fail:
                raise self.fail
            for position, call in enumerate(calls):
                yield g.ToolCallDelta(call, index, position)
            yield g.Finish(reason, index, g.Usage(3, len(pieces)), g.Timings(1000, 10, 200, 700),
                           context=(1, 2, 3))


def choice_of(spelling):
    """A ToolChoice from the short spelling tests use: None or auto, none, required, or a function's name."""
    if spelling in (None, "auto", "none", "required"):
        return g.ToolChoice(spelling or "auto")
    return g.ToolChoice.named(spelling)
