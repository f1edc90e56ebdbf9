"""Run a producer (e.g. decode + shot segmentation) in a thread ahead of its consumer.

:func:`prefetch` iterates a generator in a background thread and hands its
items over through a bounded queue, so the consumer (the model) works on one
batch while the next one is decoded, and at most ``maxsize`` items wait in
between: memory stays bounded by that, never by the stream's length.
An exception in the producer is raised in the consumer, at the point in the
stream where it happened; a consumer that stops early stops the producer.

Examples
--------
>>> from reelsim.pipeline.prefetch import prefetch
>>> list(prefetch(iter(range(5)), maxsize=2))
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

import queue
import threading
from typing import Iterator, TypeVar

from reelsim.errors import ParameterError

T = TypeVar("T")

_DONE = object()


class _Raised:
    """A producer exception, carried through the queue."""

    def __init__(self, error: BaseException):
        self.error = error


def prefetch(source: Iterator[T], maxsize: int, *, poll_s: float = 0.1) -> Iterator[T]:
    """Yield ``source``'s items, produced by a background thread up to ``maxsize`` ahead.

    Parameters
    ----------
    source : iterator, consumed in the background thread only
    maxsize : items that may wait in the queue (>= 1); the producer blocks
        when it is full.
    poll_s : how often a blocked producer checks whether the consumer stopped.

    Yields
    ------
    The items of ``source`` in order.  Whatever ``source`` raises is re-raised
    here after the items produced before it.
    """
    if maxsize < 1:
        raise ParameterError(f"prefetch: maxsize must be >= 1, got {maxsize}")
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def put(obj) -> bool:
        while not stop.is_set():
            try:
                q.put(obj, timeout=poll_s)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Raised(e))

    thread = threading.Thread(target=produce, name="reelsim-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()
