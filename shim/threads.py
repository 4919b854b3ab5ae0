"""Run blocking work (llama.cpp calls) on real OS threads and stream its results back, gevent or not."""
import queue
import sys
import threading

from .streaming import HEARTBEAT, PAUSE

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


def green_lock():
    """A lock whose waiters, under gevent, are greenlets that yield (no OS thread is held); a plain lock otherwise."""
    if gevent_active():
        import gevent.lock
        return gevent.lock.Semaphore()
    return threading.Lock()


def iterate_in_thread(produce):
    """Run produce(emit) on an OS thread; yield what it emits."""
    if gevent_active():
        yield from _iterate_gevent(produce)
    else:
        yield from _iterate_threads(produce)


def with_heartbeats(items, interval):
    """Lists of the items ready at once, or [HEARTBEAT] after `interval` s in which none came; closing stops them."""
    if gevent_active():
        import gevent
        import gevent.queue
        channel = gevent.queue.Queue()
        feeder = gevent.spawn(_run, lambda emit: _forward(items, emit), channel.put)
        try:
            yield from _batches(channel, interval, gevent.queue.Empty)
        finally:
            feeder.kill()
            close(items)
    else:
        channel, stop = queue.Queue(), threading.Event()
        threading.Thread(target=_run, args=(lambda emit: _forward(items, emit, stop.is_set), channel.put),
                         daemon=True).start()
        try:
            yield from _batches(channel, interval, queue.Empty)
        finally:
            stop.set()  # a running generator can only be closed by its own thread: the feeder stops at the next item


def _batches(channel, interval, empty_error):
    # Whatever is already queued goes out with the item waited for: one write to the client, not one per item.
    while True:
        try:
            batch = [channel.get(timeout=interval)]
        except empty_error:
            yield [HEARTBEAT]
            continue
        while not channel.empty():
            batch.append(channel.get_nowait())
        ready = []
        for item in batch:
            if item is _END or isinstance(item, _Raised):
                if ready:
                    yield ready
                if item is _END:
                    return
                raise item.error
            ready.append(item)
        yield ready


def _forward(items, emit, stopped=lambda: False):
    try:
        for item in items:
            if stopped():
                return
            emit(item)
    finally:
        close(items)


def _run(produce, emit):
    try:
        produce(emit)
    except BaseException as err:  # handed to the consumer, which re-raises it in its own context
        emit(_Raised(err))
    finally:
        emit(_END)


def _drain(get):
    while True:
        item = get()
        if item is _END:
            return
        if isinstance(item, _Raised):
            raise item.error
        yield item


def _iterate_threads(produce):
    channel = queue.Queue()
    threading.Thread(target=_run, args=(produce, channel.put), daemon=True).start()
    yield from _drain(channel.get)


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
            self._hub, self._items = gevent.get_hub(), gevent.queue.Queue()
        else:
            self._hub, self._items = None, queue.Queue()

    def put(self, item):
        """Hand one item over."""
        _deliver([(self, item)])

    def __iter__(self):
        return _drain(self._items.get)

    def beating(self, idle):
        """The items, with PAUSE before each wait for one and HEARTBEAT after each idle seconds in which none came
        (idle None: just the items)."""
        if idle is None:
            return iter(self)
        items, paused = self._items, False

        def get_or_beat():
            nonlocal paused
            if not paused and items.empty():
                paused = True
                return PAUSE
            paused = False
            try:
                return items.get(timeout=idle)
            except queue.Empty:  # gevent's queues raise the standard library's Empty
                return HEARTBEAT
        return _drain(get_or_beat)


class Courier:
    """Gathers items for many channels and hands them over together: one wake-up of their loop per flush."""

    def __init__(self):
        self._pending = []

    def put(self, channel, item):
        """Queue one item for a channel."""
        self._pending.append((channel, item))

    def fail(self, channel, error):
        """Queue the error that ends a channel's items (raised in its consumer)."""
        self._pending.append((channel, _Raised(error)))

    def end(self, channel):
        """Queue the end of a channel's items."""
        self._pending.append((channel, _END))

    def flush(self):
        """Hand over everything queued, in order."""
        pending, self._pending = self._pending, []
        if pending:
            _deliver(pending)


def _deliver(pairs):
    hubs = {}
    for channel, item in pairs:
        hubs.setdefault(channel._hub, []).append((channel, item))
    for hub, batch in hubs.items():
        if hub is None:
            _put_all(batch)
        else:
            # A gevent queue may only be touched from its hub's thread: the puts are scheduled there, together.
            hub.loop.run_callback_threadsafe(_put_all, batch)


def _put_all(pairs):
    for channel, item in pairs:
        channel._items.put(item)


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


class watching:  # noqa: N801 (a context manager, named as contextlib's are)
    """While the block runs, check condition() every interval seconds and call then() once it holds (gevent only)."""
    # A class, not a generator: every request enters one, and contextlib's machinery costs three times as much.

    def __init__(self, condition, then, interval):
        self.condition, self.then, self.interval = condition, then, interval
        self.timer = None

    def __enter__(self):
        if not gevent_active():
            return
        import gevent
        # A timer on the event loop, not a greenlet: every request is watched, and a greenlet spawned and killed
        # per request cost more than the checks (none of which runs for a request answered within the interval).
        self.timer = gevent.get_hub().loop.timer(self.interval, self.interval)
        self.timer.start(self._poll)

    def __exit__(self, *exc):
        if self.timer is not None:
            self.timer.stop()
            self.timer.close()

    def _poll(self):
        if self.condition():
            self.timer.stop()
            self.then()


def call_in_thread(fn):
    """fn() run on an OS thread; its result or its exception, in the caller's context."""
    return list(iterate_in_thread(lambda emit: emit(fn())))[0]


def close(items):
    """Close a generator (or anything with close()); leave other iterables alone."""
    closer = getattr(items, "close", None)
    if closer:
        closer()
