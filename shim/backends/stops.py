"""Stop sequences over a stream of text pieces: emit what is safe, hold back what may become a stop. Pure."""


class StopScanner:
    """Feed text pieces; get back the text safe to emit, and whether a stop sequence ended it."""

    def __init__(self, stops):
        self.stops = tuple(s for s in stops if s)
        self.pending = ""
        self.stopped = False

    def feed(self, piece):
        """The text that can be emitted now; sets `stopped` when a stop sequence appeared (it is cut off)."""
        self.pending += piece
        if not self.stops:
            out, self.pending = self.pending, ""
            return out
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        keep = self._held_back()
        out, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep:]
        return out

    def flush(self):
        """Whatever is still held back, at the end of generation."""
        out, self.pending = self.pending, ""
        return out

    def _held_back(self):
        """The length of the longest end of `pending` that begins some stop sequence."""
        longest = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), longest, -1):
                if self.pending.endswith(stop[:n]):
                    longest = n
                    break
        return longest
