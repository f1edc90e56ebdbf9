"""The driver's view of running items: attempts, where each runs, since when.

Every task announces its start on the Dask event topic
:data:`reelsim.jobs.tasks.START_TOPIC` (``Worker.log_event``); the driver
subscribes and records, with its *own* monotonic clock (no clock skew
between machines), which worker each item runs on and since when (the clock restarts when the
worker reports it has finished loading models for the item).  From that
it knows how many attempts an item took (a worker killed mid-task makes the
scheduler run the item again elsewhere) and which items have run longer
than the per-item timeout.

Dask cannot stop a running thread, so a timed-out item is cancelled and its
worker process is restarted through its nanny (``Client.restart_workers``),
which kills whatever the item was blocked in (a read that never returns, a
decoder loop).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class Attempt:
    """The latest attempt at one item: which worker, started when (driver's monotonic seconds)."""

    worker: str
    started: float | None  # None while the worker loads models (the clock is paused)
    count: int


class ItemWatch:
    """Attempts per item, fed by the workers' start events (thread-safe).

    Its state is bounded by the items still running: :meth:`finish` forgets
    an item. When the driver names the items it waits for (:meth:`expect`),
    events about any other item (one already finished, another run's) are
    ignored, so a late event cannot bring a finished item back.

    Examples
    --------
    >>> w = ItemWatch("run-1")
    >>> w.on_event((0.0, {"run": "run-1", "item": "a", "worker": "tcp://h:1"}), now=10.0)
    >>> w.attempts("a"), w.overdue(timeout_s=5, now=16.0)
    (1, [('a', 'tcp://h:1', 6.0)])
    >>> w.on_event((0.0, {"run": "run-1", "items": ["b", "c"], "worker": "tcp://h:2"}), now=12.0)
    >>> w.finish("a"), sorted(i for i, _, _ in w.overdue(timeout_s=5, now=20.0))
    (1, ['b', 'c'])
    """

    def __init__(self, run_id: str):
        self.run_id = run_id
        self._lock = threading.Lock()
        self._latest: dict[str, Attempt] = {}
        self._expected: set[str] | None = None

    def expect(self, item_ids) -> None:
        """Record events only for these items (and those named by later calls) from now on."""
        with self._lock:
            self._expected = (self._expected or set()) | set(item_ids)

    def on_event(self, event, now: float | None = None) -> None:
        """Dask topic handler: ``event`` is ``(timestamp, message)``; the message names one ``item`` or ``items``."""
        _, msg = event
        if not isinstance(msg, dict) or msg.get("run") != self.run_id:
            return  # another run on the same cluster
        now = time.monotonic() if now is None else now
        items = msg.get("items") if "items" in msg else [msg.get("item")]
        phase = msg.get("phase", "start")
        with self._lock:
            for item in items:
                if self._expected is not None and item not in self._expected:
                    continue  # finished already, or not ours
                prev = self._latest.get(item)
                if phase != "start" and prev is not None:
                    # loading models pauses the clock; once loaded it starts again from zero
                    prev.started = None if phase == "loading-models" else now
                    continue
                self._latest[item] = Attempt(msg.get("worker", "?"), now, (prev.count if prev else 0) + 1)

    def attempts(self, item_id: str) -> int:
        with self._lock:
            a = self._latest.get(item_id)
            return a.count if a else 0

    def pause(self, item_id: str) -> None:
        """Stop an item's clock but keep counting its attempts (its prepare task is done; the item is not):
        a new start event (the task run again) starts the clock again."""
        with self._lock:
            a = self._latest.get(item_id)
            if a is not None:
                a.started = None

    def finish(self, item_id: str) -> int:
        """Forget a finished item; returns its number of attempts (0 when none was seen)."""
        with self._lock:
            if self._expected is not None:
                self._expected.discard(item_id)
            a = self._latest.pop(item_id, None)
            return a.count if a else 0

    def overdue(self, timeout_s: float, now: float | None = None) -> list[tuple[str, str, float]]:
        """``(item, worker, seconds running)`` of unfinished items running longer than ``timeout_s``."""
        if not timeout_s or timeout_s <= 0:
            return []
        now = time.monotonic() if now is None else now
        with self._lock:
            return [(item, a.worker, round(now - a.started, 1)) for item, a in self._latest.items()
                    if a.started is not None and now - a.started > timeout_s]
