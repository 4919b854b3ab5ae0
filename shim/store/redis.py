"""The response store for several hosts: a Redis server (`response_store = "redis://host:port/db"`)."""
import logging
from urllib.parse import urlsplit

import redis

from ..errors import ConfigError, StoreUnavailable
from . import ResponseStore, decode, describe

log = logging.getLogger(__name__)

PREFIX = "shim:response:"
TIMEOUT = 5.0
"Seconds to connect to Redis, to wait for one answer, and to wait for a free connection."
CONNECTIONS = 50
"Connections to Redis per process; more concurrent calls wait for one (redis-py's plain pool would fail them)."

# Every record is a key `<prefix>r:<id>` with its time to live; an index (sorted by expiry time), the sizes and
# their sum let a put drop the expired and, past the cap, the oldest records, atomically on the server.
_FORGET = """
local function forget(prefix, id)
  local size = tonumber(redis.call("HGET", prefix .. "sizes", id) or "0")
  redis.call("HDEL", prefix .. "sizes", id)
  redis.call("ZREM", prefix .. "index", id)
  redis.call("DECRBY", prefix .. "bytes", size)
  return redis.call("DEL", prefix .. "r:" .. id)
end
"""

PUT = _FORGET + """
local prefix, id, blob, ttl_ms, cap = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, old in ipairs(redis.call("ZRANGEBYSCORE", prefix .. "index", "-inf", now, "LIMIT", 0, 1000)) do
  forget(prefix, old)
end
forget(prefix, id)
redis.call("SET", prefix .. "r:" .. id, blob, "PX", ttl_ms)
redis.call("ZADD", prefix .. "index", now + ttl_ms, id)
redis.call("HSET", prefix .. "sizes", id, #blob)
local total = redis.call("INCRBY", prefix .. "bytes", #blob)
while total > cap do
  local oldest = redis.call("ZRANGE", prefix .. "index", 0, 0)[1]
  if not oldest or oldest == id then break end
  forget(prefix, oldest)
  total = tonumber(redis.call("GET", prefix .. "bytes"))
end
"""

DELETE = _FORGET + "return forget(ARGV[1], ARGV[2])"


class RedisStore(ResponseStore):
    """Records in Redis, each kept `ttl` seconds from its put (the key's own expiry); past `max_bytes` the oldest
    are deleted. Its socket I/O is plain Python, so under gevent it waits without blocking the worker."""

    def __init__(self, url, ttl, max_bytes, prefix=PREFIX):
        self.name, self.ttl, self.max_bytes, self.prefix = describe(url), ttl, max_bytes, prefix
        self._password = urlsplit(url).password
        try:
            pool = redis.BlockingConnectionPool.from_url(url, max_connections=CONNECTIONS, timeout=TIMEOUT,
                                                         socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
                                                         health_check_interval=30)
        except ValueError as err:
            raise ConfigError(f"response_store {self.name}: {self._scrub(err)}") from None
        self._client = redis.Redis(connection_pool=pool)
        self._put = self._client.register_script(PUT)
        self._delete = self._client.register_script(DELETE)

    def keep(self, response_id, blob):
        """Store the encoded record; drop the expired and, past the cap, the oldest (atomically)."""
        self._call(lambda: self._put(args=[self.prefix, response_id, blob, max(1, int(self.ttl * 1000)),
                                           self.max_bytes]))

    def get(self, response_id):
        """The record, unless unknown or expired."""
        blob = self._call(lambda: self._client.get(self.prefix + "r:" + response_id))
        return None if blob is None else decode(blob)

    def delete(self, response_id):
        """Delete the record; False if it was unknown or expired."""
        return bool(self._call(lambda: self._delete(args=[self.prefix, response_id])))

    def close(self):
        """Close the connections."""
        self._client.close()
        self._client.connection_pool.disconnect()

    def _call(self, work):
        try:
            return work()
        except redis.RedisError as err:
            message = self._scrub(err)
            log.warning("response store %s: %s", self.name, message)
            raise StoreUnavailable(f"the response store ({self.name}) cannot be reached: {message}") from None

    def _scrub(self, err):
        text = str(err) or type(err).__name__
        return text.replace(self._password, "***") if self._password else text
