"""Run blocking work (llama.cpp calls) on real OS threads and stream its results back, gevent or not."""
import queue
import sys
import threading

from .streaming import HEARTBEAT

_END = object()


class _Raised:
    def __init__(self, error):
        self.error = error


def gevent_active():
    """Whether gevent has patched threading in this process (as gunicorn's gevent worker does)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("threading"))


def real_lock():
    """A lock that blocks an OS thread, even where gevent has patched threading."""
    if gevent_active():
        from gevent.monkey import get_original
        return get_original("threading", "Lock")()
    return threading.Lock()


def iterate_in_thread(produce):
    """Run produce(emit) on an OS thread; yield what it emits."""
    if gevent_active():
        yield from _iterate_gevent(produce)
    else:
        yield from _iterate_threads(produce)


def with_heartbeats(items, interval):
    """The items, with HEARTBEAT yielded after each `interval` seconds in which none came; closing stops the source."""
    if gevent_active():
        import gevent
        import gevent.queue
        channel = gevent.queue.Queue()
        feeder = gevent.spawn(_run, lambda emit: _forward(items, emit), channel.put)
        try:
            yield from _drain(lambda: channel.get(timeout=interval), gevent.queue.Empty)
        finally:
            feeder.kill()
            close(items)
    else:
        yield from _iterate_threads(lambda emit: _forward(items, emit), interval)


def _forward(items, emit):
    for item in items:
        emit(item)


def _run(produce, emit):
    try:
        produce(emit)
    except BaseException as err:  # handed to the consumer, which re-raises it in its own context
        emit(_Raised(err))
    finally:
        emit(_END)


def _drain(get, empty_error):
    while True:
        try:
            item = get()
        except empty_error:
            yield HEARTBEAT
            continue
        if item is _END:
            return
        if isinstance(item, _Raised):
            raise item.error
        yield item


def _iterate_threads(produce, heartbeat=None):
    channel = queue.Queue()
    threading.Thread(target=_run, args=(produce, channel.put), daemon=True).start()
    yield from _drain(lambda: channel.get(timeout=heartbeat), queue.Empty)


def _iterate_gevent(produce):
    import gevent

    channel = Channel()
    gevent.get_hub().threadpool.spawn(_run, produce, channel.put)
    yield from channel


class Channel:
    """Items handed from any OS thread to one consumer, who iterates them in its own context (gevent or not)."""

    def __init__(self):
        if gevent_active():
            import gevent
            import gevent.queue
            hub, items = gevent.get_hub(), gevent.queue.Queue()
            # A gevent queue may only be touched from its hub's thread: each put is scheduled there.
            self._put = lambda item: hub.loop.run_callback_threadsafe(items.put, item)
            self._get, self._empty = items.get, gevent.queue.Empty
        else:
            items = queue.Queue()
            self._put, self._get, self._empty = items.put, items.get, queue.Empty

    def put(self, item):
        """Hand one item over."""
        self._put(item)

    def fail(self, error):
        """End the items with an error, raised in the consumer."""
        self._put(_Raised(error))

    def end(self):
        """End the items."""
        self._put(_END)

    def __iter__(self):
        return _drain(self._get, self._empty)


def start_thread(target):
    """Run target() on a new OS thread, even where gevent has patched threading; returns a join() to wait for it."""
    if gevent_active():
        from gevent.monkey import get_original
        start_new_thread = get_original("_thread", "start_new_thread")
    else:
        import _thread
        start_new_thread = _thread.start_new_thread
    done = real_lock()
    done.acquire()

    def run():
        try:
            target()
        finally:
            done.release()

    start_new_thread(run, ())

    def join():
        with done:
            pass
    return join


def configure_pool(size):
    """Let up to `size` blocking calls run at once on gevent's thread pool (a no-op without gevent)."""
    if gevent_active():
        import gevent
        gevent.get_hub().threadpool.maxsize = size


def call_in_thread(fn):
    """fn() run on an OS thread; its result or its exception, in the caller's context."""
    return list(iterate_in_thread(lambda emit: emit(fn())))[0]


def close(items):
    """Close a generator (or anything with close()); leave other iterables alone."""
    closer = getattr(items, "close", None)
    if closer:
        closer()
