"""The bounded producer thread that overlaps decoding with model compute."""

from __future__ import annotations

import threading
import time

import pytest

from reelsim.pipeline.prefetch import prefetch


def test_items_arrive_in_order():
    assert list(prefetch(iter(range(100)), maxsize=3)) == list(range(100))


def test_producer_runs_in_another_thread_and_stays_bounded():
    produced, threads = [], set()

    def source():
        for i in range(50):
            threads.add(threading.get_ident())
            produced.append(i)
            yield i

    ahead = []
    for i in prefetch(source(), maxsize=4):
        time.sleep(0.002)  # a slow consumer: the producer fills the queue and waits
        ahead.append(len(produced) - (i + 1))
    assert threads and threading.get_ident() not in threads
    # in the queue (4) + one being put + one handed over: never more than maxsize + 2 ahead
    assert max(ahead) <= 4 + 2
    assert max(ahead) >= 2  # it did run ahead


def test_producer_error_is_raised_after_earlier_items():
    class Boom(Exception):
        pass

    def source():
        yield 1
        yield 2
        raise Boom("decode failed at frame 3")

    got = []
    with pytest.raises(Boom, match="frame 3"):
        for item in prefetch(source(), maxsize=8):
            got.append(item)
    assert got == [1, 2]


def test_consumer_stopping_early_stops_the_producer():
    produced = []

    def source():
        for i in range(10_000):
            produced.append(i)
            yield i

    for item in prefetch(source(), maxsize=2, poll_s=0.01):
        if item == 3:
            break
    time.sleep(0.05)
    assert len(produced) < 20


def test_bad_maxsize():
    with pytest.raises(ValueError, match="maxsize"):
        list(prefetch(iter([1]), maxsize=0))
