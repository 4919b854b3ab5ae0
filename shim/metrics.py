"""Prometheus metrics; whole across gunicorn workers in prometheus_client's multiprocess mode."""
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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


def render(multiprocess_dir=None):
    """(body, content type) of the metrics; with a multiprocess directory, summed over every worker."""
    if multiprocess_dir:
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
