"""Prometheus figures in multiprocess mode: this process's id read once, yet every forked process writes its own file."""
import os

import pytest
from prometheus_client import CollectorRegistry, Counter, multiprocess, values

from shim import metrics


@pytest.fixture
def multiprocess_values(tmp_path, monkeypatch):
    """Metrics made from here on are kept in tmp_path, per process, by the value class shim installs."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(process_identifier=metrics.pid))
    yield tmp_path
    values.ValueClass.close_all_files()


def in_child(work):
    """Fork, run work() in the child and wait for it; the child's pid."""
    child = os.fork()
    if child == 0:
        try:
            work()
        finally:
            os._exit(0)
    assert os.waitpid(child, 0)[1] == 0
    return child


def test_forked_processes_write_their_own_files_and_the_sum_is_whole(multiprocess_values):
    counter = Counter("shim_test_forks", "forks", registry=CollectorRegistry())
    counter.inc(1)  # the parent's figure, made before either fork: a child must not carry it into its own file
    children = [in_child(lambda amount=amount: counter.inc(amount)) for amount in (2, 3)]
    counter.inc(4)
    files = sorted(path.name for path in multiprocess_values.iterdir())
    assert files == sorted(f"counter_{pid}.db" for pid in [os.getpid(), *children])
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(multiprocess_values))
    assert registry.get_sample_value("shim_test_forks_total") == 1 + 2 + 3 + 4


def test_shim_installs_a_value_class_that_does_not_ask_for_the_process_id_on_every_write(tmp_path):
    import subprocess
    import sys
    # os.getpid counted from before prometheus_client is imported, as its default value class binds it then.
    probe = ("import os\nasked = []\ngetpid = os.getpid\nos.getpid = lambda: asked.append(1) or getpid()\n"
             "from shim import metrics\nasked.clear()\nrequests = metrics.child(metrics.REQUESTS, '/x', '200', 'm')\n"
             "requests.inc()\nrequests.inc()\nprint(len(asked))")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "0", done.stderr
    assert any(path.name.startswith("counter_") for path in tmp_path.iterdir())


def test_under_gevent_the_values_share_an_os_threads_lock_and_still_add_up(tmp_path):
    """A write never yields to another greenlet: the values' one lock is an OS thread's, not gevent's (half the cost);
    prometheus_client's own Lock, for whatever else makes one, stays gevent's."""
    import subprocess
    import sys
    probe = ("from gevent import monkey\nmonkey.patch_all()\nimport gevent\nfrom prometheus_client import values\n"
             "from shim import metrics\n"
             "kinds = [type(c.cell_contents) for c in values.ValueClass.inc.__closure__ or ()]\n"
             "real = any((t.__module__, t.__name__) == ('_thread', 'lock') for t in kinds)\n"
             "print(real, type(values.Lock()).__module__)\n"
             "requests = metrics.child(metrics.REQUESTS, '/x', '200', 'm')\n"
             "gevent.joinall([gevent.spawn(lambda: [requests.inc() for _ in range(100)]) for _ in range(5)])\n"
             "body, _ = metrics.render(values.os.environ['PROMETHEUS_MULTIPROC_DIR'])\n"
             "print([line for line in body.decode().splitlines() if line.startswith('shim_requests_total')])")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    lock_line, sample_line = done.stdout.strip().splitlines()
    assert lock_line == "True gevent.thread", done.stderr
    assert sample_line == "['shim_requests_total{model=\"m\",route=\"/x\",status=\"200\"} 500.0']"
