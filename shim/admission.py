"""A bounded number of requests per model: past it, clients are told to come back later."""
import threading

from .errors import ServerBusy


class Admission:
    """Counts the requests in flight per model and refuses those past the limit."""

    def __init__(self, limit):
        self.limit = limit
        self._counts = {}
        self._lock = threading.Lock()

    def enter(self, model):
        """Count one more request for model, or raise ServerBusy when the model has `limit` already."""
        with self._lock:
            count = self._counts.get(model, 0)
            if count >= self.limit:
                raise ServerBusy(f"server busy, please try again: {count} requests are already queued or running "
                                 f"for model '{model}' (limit {self.limit})", headers={"Retry-After": "1"})
            self._counts[model] = count + 1

    def leave(self, model):
        """Count one request less for model."""
        with self._lock:
            self._counts[model] = max(0, self._counts.get(model, 0) - 1)

    def depth(self, model):
        """The requests in flight for model."""
        return self._counts.get(model, 0)
