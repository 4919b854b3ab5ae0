"""threads.watching: a timer on gevent's loop that calls then() once condition() holds, while a block runs."""
import gevent

from shim import threads


def watched(monkeypatch, condition, block_seconds, active=True):
    """The times then() was called while a block of block_seconds ran watched every 10 ms."""
    monkeypatch.setattr(threads, "gevent_active", lambda: active)
    called = []
    with threads.watching(condition, lambda: called.append(True), 0.01):
        gevent.sleep(block_seconds)
    gevent.sleep(0.05)  # the timer is gone: then() is not called after the block
    return len(called)


def test_then_is_called_once_when_the_condition_comes_to_hold(monkeypatch):
    looks = []
    assert watched(monkeypatch, lambda: looks.append(1) or len(looks) >= 3, 0.1) == 1
    assert len(looks) == 3  # not looked at again once it held


def test_then_is_not_called_while_the_condition_does_not_hold(monkeypatch):
    assert watched(monkeypatch, lambda: False, 0.05) == 0


def test_a_block_shorter_than_the_interval_is_never_looked_at(monkeypatch):
    looks = []
    assert watched(monkeypatch, lambda: looks.append(1) or True, 0.0) == 0 and looks == []


def test_without_gevent_nothing_is_watched(monkeypatch):
    looks = []
    assert watched(monkeypatch, lambda: looks.append(1) or True, 0.05, active=False) == 0 and looks == []
