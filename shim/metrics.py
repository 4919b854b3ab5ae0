"""Prometheus metrics; whole across gunicorn workers in prometheus_client's multiprocess mode."""
import bisect
import os
from collections import Counter as Tally

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values

from .threads import real_lock

_pid = os.getpid()


def _refresh_pid():
    """Read this process's id again, in a child just forked."""
    global _pid
    _pid = os.getpid()


def pid():
    """This process's id, as last read (at import, then after every fork)."""
    return _pid


os.register_at_fork(after_in_child=_refresh_pid)
# In multiprocess mode every write asks for the process id to notice a fork: os.getpid() is a system call (measured,
# 4.8% of a proxying worker's CPU). The id read once and again after each fork tells the same.
if getattr(values.ValueClass, "_multiprocess", False):
    # Every write also takes the one lock its values share: under gevent, gevent's lock (0.53 us a write, against 0.26
    # for an OS thread's, measured). A write never yields to another greenlet, so an OS thread's lock serves as well.
    values.Lock, _patched_lock = real_lock, values.Lock
    try:
        values.ValueClass = values.MultiProcessValue(process_identifier=pid)
    finally:
        values.Lock = _patched_lock

REQUESTS = Counter("shim_requests_total", "HTTP requests answered", ["route", "status", "model"])
TOKENS_IN = Counter("shim_prompt_tokens_total", "Prompt tokens processed", ["model"])
TOKENS_OUT = Counter("shim_completion_tokens_total", "Completion tokens generated", ["model"])
TTFT = Histogram("shim_time_to_first_token_seconds", "Time from request to the first generated text", ["model"],
                 buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
ITL = Histogram("shim_inter_token_latency_seconds", "Time between consecutive pieces of generated text", ["model"],
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
QUEUE_DEPTH = Gauge("shim_requests_in_flight", "Generation requests queued or running", ["model"],
                    multiprocess_mode="livesum")
OPEN_STREAMS = Gauge("shim_open_streams", "Streaming responses being written", multiprocess_mode="livesum")

_children: dict = {}


def child(metric, *labels):
    """metric.labels(*labels), looked up once per worker (labels() validates and locks on every call)."""
    # Bounded as prometheus_client's own table of children is: one entry per label set it keeps anyway.
    found = _children.get((metric, labels))
    if found is None:
        found = _children[metric, labels] = metric.labels(*labels)
    return found


def observe_all(histogram, amounts):
    """histogram.observe(a) for every amount, in one write per bucket touched rather than two writes per amount."""
    # In multiprocess mode every write takes a lock and packs into a shared file: per token, that was most of a
    # stream's metrics cost. prometheus_client has no batch API, so its own bucket values are added to.
    bounds, buckets, total = (getattr(histogram, name, None) for name in ("_upper_bounds", "_buckets", "_sum"))
    if bounds is None or buckets is None or total is None:
        for amount in amounts:
            histogram.observe(amount)
        return
    if not amounts:
        return
    total.inc(sum(amounts))
    for index, count in Tally(bisect.bisect_left(bounds, amount) for amount in amounts).items():
        buckets[index].inc(count)


def render(multiprocess_dir=None):
    """(body, content type) of the metrics; with a multiprocess directory, summed over every worker."""
    if multiprocess_dir:
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
