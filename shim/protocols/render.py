"""The interface every protocol's stream renderer has: the chunks for each event, and at the start and end. Pure."""
from __future__ import annotations

from typing import Iterable

from ..errors import ShimError
from ..generation import Event


class StreamRenderer:
    """Turns one generation's events into a protocol's chunks (plain dicts a framing object writes)."""

    def begin(self) -> Iterable[dict]:
        """The chunks that open the stream, before any event."""
        return ()

    def chunks(self, event: Event) -> Iterable[dict]:
        """The chunks (zero or more) that carry one event."""
        raise NotImplementedError

    def end(self) -> Iterable[dict]:
        """The chunks after the last event."""
        return ()

    def error(self, err: ShimError) -> Iterable[dict]:
        """The chunks that end a stream an error cut short (in-band, after the first byte)."""
        raise NotImplementedError
