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
    import gevent.queue

    hub = gevent.get_hub()
    channel = gevent.queue.Queue()
    # A gevent queue may only be touched from the hub's thread: the worker thread schedules each put there.
    emit = lambda item: hub.loop.run_callback_threadsafe(channel.put, item)  # noqa: E731
    hub.threadpool.spawn(_run, produce, emit)
    yield from _drain(channel.get, gevent.queue.Empty)


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
