"""threads.signalling: markers signalled from deep inside a generator come out between its items, on the consumer's
side, with errors, closing and gevent's hub as a plain generator would have them."""
import gevent
import greenlet
import pytest

from shim.threads import signal, signalling


def nested(log, *script):
    """A generator with a layer between it and the signals, as ollama's client stands between shim and its transport:
    a number in script is yielded, a string signalled."""
    def inner():
        try:
            for step in script:
                if isinstance(step, str):
                    signal(step)
                else:
                    yield step
        finally:
            log.append(("inner closed in", greenlet.getcurrent()))

    def outer():
        for item in inner():
            yield item * 10
    return outer()


def test_markers_come_out_between_the_items_where_they_were_signalled():
    assert list(signalling(nested([], "P", 1, "H", "H", 2, "P"))) == ["P", 10, "H", "H", 20, "P"]


def test_a_signal_outside_any_signalling_is_nothing():
    assert signal("P") is None
    assert list(nested([], "P", 1)) == [10]


def test_an_error_inside_is_raised_to_the_consumer_with_its_frames():
    def failing():
        yield 1
        signal("P")
        raise ValueError("upstream broke")
    seen = []
    with pytest.raises(ValueError, match="upstream broke") as err:
        for item in signalling(failing()):
            seen.append(item)
    assert seen == [1, "P"] and err.traceback[-1].name == "failing"


def test_closing_during_a_signal_unwinds_the_items_in_their_own_greenlet():
    log = []
    items = signalling(nested(log, 1, "H", 2))
    assert [next(items), next(items)] == [10, "H"]
    items.close()
    assert len(log) == 1 and log[0][1] is not greenlet.getcurrent()


def test_closing_between_items_and_before_the_first_closes_them_here():
    for taken in (1, 0):
        log = []
        items = signalling(nested(log, 1, 2))
        assert [next(items) for _ in range(taken)] == [10] * taken
        items.close()
        started = bool(taken)
        assert log == ([("inner closed in", greenlet.getcurrent())] if started else [])


def test_another_consumer_may_take_over():
    items = signalling(nested([], 1, "P", 2))
    assert next(items) == 10
    assert gevent.spawn(lambda: [next(items), next(items)]).get(timeout=2) == ["P", 20]


def test_under_gevent_other_greenlets_run_while_the_items_wait():
    ticks = []

    def slow():
        for n in range(3):
            signal("P")
            gevent.sleep(0.02)  # a wait on the hub, from the items' own greenlet
            yield n

    def ticker():
        while True:
            ticks.append(1)
            gevent.sleep(0.005)

    beating = gevent.spawn(ticker)
    try:
        assert gevent.spawn(lambda: list(signalling(slow()))).get(timeout=2) == ["P", 0, "P", 1, "P", 2]
    finally:
        beating.kill()
    assert len(ticks) >= 6


def test_items_left_by_a_consumer_that_ended_are_unwound_by_whoever_closes_them():
    log = []
    items = signalling(nested(log, 1, "H", 2))
    assert gevent.spawn(lambda: [next(items), next(items)]).get(timeout=2) == [10, "H"]
    items.close()
    assert len(log) == 1
