"""Stop sequences over a stream of text pieces: emit what is safe, hold back what may become a stop. Pure."""


class StopScanner:
    """Feed text pieces; get back the text safe to emit, and whether (and which) stop sequence ended it.

    The stops are compiled once into an Aho-Corasick automaton, so each character fed costs the same however
    many stops there are: the automaton's state says at once whether a stop just ended, and its depth is the
    length of the longest end of the text that begins some stop (the part to hold back).
    """

    def __init__(self, stops):
        self.stops = tuple(dict.fromkeys(s for s in stops if s))
        self.pending = ""
        self.stopped = False
        self.matched = None
        "The stop sequence that ended the text, once one has."
        self._goto, self._fail, self._depth, self._out = _automaton(self.stops)
        self._state = 0

    def feed(self, piece):
        """The text that can be emitted now; sets `stopped` when a stop sequence appeared (it is cut off)."""
        self.pending += piece
        if not self.stops:
            out, self.pending = self.pending, ""
            return out
        goto, fail, found = self._goto, self._fail, self._out
        state, start, base = self._state, None, len(self.pending) - len(piece)
        for i, char in enumerate(piece):
            while state and char not in goto[state]:
                state = fail[state]
            state = goto[state].get(char, 0)
            stop = found[state]
            # The earliest-starting stop wins, as if the whole text were searched: keep looking to the piece's end.
            if stop is not None and (start is None or base + i + 1 - len(stop) < start):
                start, self.matched = base + i + 1 - len(stop), stop
        if start is not None:
            self.stopped = True
            out, self.pending = self.pending[:start], ""
            return out
        self._state = state
        split = len(self.pending) - self._depth[state]
        out, self.pending = self.pending[:split], self.pending[split:]
        return out

    def flush(self):
        """Whatever is still held back, at the end of generation."""
        out, self.pending = self.pending, ""
        return out


def _automaton(stops):
    """The Aho-Corasick automaton of the stops: transitions, failure links, depths, and the stop ending at each."""
    goto, depth, out = [{}], [0], [None]
    for stop in stops:
        state = 0
        for char in stop:
            if char not in goto[state]:
                goto[state][char] = len(goto)
                goto.append({})
                depth.append(depth[state] + 1)
                out.append(None)
            state = goto[state][char]
        out[state] = stop
    fail = [0] * len(goto)
    queue = list(goto[0].values())
    for state in queue:  # breadth first: a failure link points to a shallower state, already done
        for char, child in goto[state].items():
            queue.append(child)
            link = fail[state]
            while link and char not in goto[link]:
                link = fail[link]
            fail[child] = goto[link].get(char, 0)
            # The longest stop ending here: the state's own, else the one its longest proper suffix ends with.
            if out[child] is None:
                out[child] = out[fail[child]]
    return goto, fail, depth, out
