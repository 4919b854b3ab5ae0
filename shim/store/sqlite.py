"""The default response store: one SQLite file in WAL mode, shared by every worker and process on the host."""
import logging
import os
import sqlite3
import time

from ..errors import ConfigError, StoreUnavailable
from ..threads import call_in_thread, gevent_active, real_lock
from . import ResponseStore, decode

log = logging.getLogger(__name__)

BUSY_TIMEOUT = 10.0
"Seconds a call waits for another process's write to finish before the store counts as unavailable."

SETUP_RETRY = 0.01
"Seconds between tries at setting up a file another process is setting up at the same moment."

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (id TEXT PRIMARY KEY, expires REAL NOT NULL, size INTEGER NOT NULL,
                                      body BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires);
CREATE TABLE IF NOT EXISTS totals (one INTEGER PRIMARY KEY CHECK (one = 1), bytes INTEGER NOT NULL);
INSERT OR IGNORE INTO totals VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS responses_added AFTER INSERT ON responses
    BEGIN UPDATE totals SET bytes = bytes + new.size; END;
CREATE TRIGGER IF NOT EXISTS responses_removed AFTER DELETE ON responses
    BEGIN UPDATE totals SET bytes = bytes - old.size; END;
"""

# Keeps the newest records whose sizes sum to at most the cap (rowids grow with each insert: newest last).
EVICT = """DELETE FROM responses WHERE rowid IN (
    SELECT rowid FROM (SELECT rowid, SUM(size) OVER (ORDER BY rowid DESC) AS kept FROM responses) WHERE kept > ?)"""


class SQLiteStore(ResponseStore):
    """Records in a SQLite file, each kept `ttl` seconds from its put; past `max_bytes` the oldest are deleted."""

    def __init__(self, path, ttl, max_bytes):
        self.path, self.ttl, self.max_bytes = path, ttl, max_bytes
        self._lock = real_lock()
        self._db, self._pid = None, None
        try:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            self._connection()
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(f"cannot open the response store {path}: {err}") from err

    def keep(self, response_id, blob):
        """Store the encoded record; drop the expired and, past the cap, the oldest (atomically)."""

        def write(db):
            now = time.time()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM responses WHERE expires <= ?", (now,))
                db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
                db.execute("INSERT INTO responses (id, expires, size, body) VALUES (?, ?, ?, ?)",
                           (response_id, now + self.ttl, len(blob), blob))
                if db.execute("SELECT bytes FROM totals").fetchone()[0] > self.max_bytes:
                    db.execute(EVICT, (self.max_bytes,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self._call(write)

    def get(self, response_id):
        """The record, unless unknown or expired."""
        row = self._call(lambda db: db.execute("SELECT body FROM responses WHERE id = ? AND expires > ?",
                                               (response_id, time.time())).fetchone())
        return None if row is None else decode(row[0])

    def delete(self, response_id):
        """Delete the record; False if it was unknown or expired."""
        def remove(db):
            now = time.time()
            found = db.execute("SELECT expires > ? FROM responses WHERE id = ?", (now, response_id)).fetchone()
            db.execute("DELETE FROM responses WHERE id = ?", (response_id,))
            return bool(found and found[0])
        return self._call(remove)

    def close(self):
        """Close this process's connection."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _call(self, work):
        """work(connection) under the lock; under gevent on an OS thread, so a wait for a lock held by another
        process never stalls the worker's other requests."""
        def run():
            with self._lock:
                try:
                    return work(self._connection())
                except sqlite3.Error as err:
                    log.warning("response store %s: %s", self.path, err)
                    raise StoreUnavailable(f"the response store (SQLite) cannot be used: {err}") from None
        return call_in_thread(run) if gevent_active() else run()

    def _connection(self):
        # A connection must not cross a fork: a process that did not open it opens its own.
        if self._db is None or self._pid != os.getpid():
            self._db, self._pid = self._open(), os.getpid()
        return self._db

    def _open(self):
        """A connection to the file, set up (WAL, schema), retried while another process is setting it up."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        while True:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(SCHEMA)
                return db
            except sqlite3.OperationalError as err:
                db.close()
                # Switching a new file to WAL takes an exclusive lock that SQLite does not wait for with its busy
                # handler: workers starting together find it "locked" and must try again.
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(SETUP_RETRY)
