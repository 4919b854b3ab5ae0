"""A response store in this process's memory: for tests and single-process use (workers do not share it)."""
import logging
import threading
import time
from collections import OrderedDict

from . import ResponseStore, decode

log = logging.getLogger(__name__)


class MemoryStore(ResponseStore):
    """Records in a dict, each kept `ttl` seconds from its put; past `max_bytes` the oldest are dropped."""

    def __init__(self, ttl, max_bytes):
        self.ttl, self.max_bytes = ttl, max_bytes
        self._records = OrderedDict()  # id -> (expires, bytes), oldest first
        self._bytes = 0
        self._lock = threading.Lock()

    def keep(self, response_id, blob):
        """Store the encoded record, dropping the expired and, past the cap, the oldest."""
        with self._lock:
            self._forget(response_id)
            now = time.time()
            while self._records and (next(iter(self._records.values()))[0] <= now
                                     or self._bytes + len(blob) > self.max_bytes):
                self._forget(next(iter(self._records)))
            self._records[response_id] = (now + self.ttl, blob)
            self._bytes += len(blob)

    def get(self, response_id):
        """The record, unless unknown or expired."""
        with self._lock:
            found = self._records.get(response_id)
        if found is None or found[0] <= time.time():
            return None
        return decode(found[1])

    def delete(self, response_id):
        """Forget the record; False if it was unknown or expired."""
        with self._lock:
            found = self._records.get(response_id)
            self._forget(response_id)
        return found is not None and found[0] > time.time()

    def _forget(self, response_id):
        found = self._records.pop(response_id, None)
        if found is not None:
            self._bytes -= len(found[1])
