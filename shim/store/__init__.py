"""Stored responses (OpenAI's Responses API `store`): one interface, kept in SQLite, Redis, memory or nowhere."""
import json
import logging
import os

log = logging.getLogger(__name__)

__all__ = ["ResponseStore", "open_store", "data_dir", "describe"]


class ResponseStore:
    """Records by response id, each kept for the store's time to live; the oldest go first when it is full."""

    max_bytes: int

    def put(self, response_id: str, record: dict) -> None:
        """Keep a JSON-serialisable record under the id, replacing any record it had; raises StoreUnavailable."""
        blob = encode(record)
        if len(blob) > self.max_bytes:
            log.warning("response %s (%d bytes) is larger than response_store_max_bytes; not kept",
                        response_id, len(blob))
            self.delete(response_id)
            return
        self.keep(response_id, blob)

    def keep(self, response_id: str, blob: bytes) -> None:
        """Store an encoded record that fits the cap, dropping the expired and, past the cap, the oldest."""
        raise NotImplementedError

    def get(self, response_id: str) -> dict | None:
        """The record kept under the id; None if unknown, deleted, evicted or expired; raises StoreUnavailable."""
        raise NotImplementedError

    def delete(self, response_id: str) -> bool:
        """Forget the id's record; False if there was none (unknown or expired); raises StoreUnavailable."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections and files; the store is not used afterwards."""


def open_store(settings) -> ResponseStore | None:
    """The store `settings.response_store` names: sqlite (in data_dir), redis://… or memory; None when it is off."""
    kind = settings.response_store
    ttl, cap = settings.response_ttl_seconds, settings.response_store_max_bytes
    if kind == "off":
        return None
    if kind == "memory":
        from .memory import MemoryStore
        return MemoryStore(ttl, cap)
    if kind == "sqlite":
        from .sqlite import SQLiteStore
        return SQLiteStore(os.path.join(data_dir(settings), "responses.sqlite3"), ttl, cap)
    from .redis import RedisStore
    return RedisStore(kind, ttl, cap)


def data_dir(settings):
    """Where shim keeps its files: the data_dir setting, else $XDG_DATA_HOME/shim, else ~/.local/share/shim."""
    if settings.data_dir:
        return os.path.expanduser(settings.data_dir)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "shim")


def encode(record):
    """A record as the UTF-8 JSON bytes a store keeps."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


def decode(blob):
    """A record from the bytes encode() made."""
    return json.loads(bytes(blob).decode("utf-8", "surrogatepass"))


def describe(url):
    """A store URL fit for logs and error messages: scheme, host, port and database, never credentials."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "redis"
    return f"{parts.scheme}://{host}{port}{parts.path}"
