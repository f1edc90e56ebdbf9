"""Feed the rows of many arrays to a model on its device, in large batches.

The cross-item batches of the GPU path (:mod:`reelsim.pipeline.batcher`)
hold the clips (or keyframes) of many videos, one array per video.
:class:`DeviceFeeder` runs a model's ``embed`` over all their rows in
batches of at most ``batch`` rows of one shape (:func:`plan_batches`) and
hands each array its own output rows back, in order.

On CUDA each batch is filled into a pinned host buffer (two per row shape,
reused), copied to the device with ``non_blocking=True`` on a side stream,
and the model's stream waits for that copy only: the next batch is filled and
copied while the model computes this one.  Outputs stay on the device until
the end, then come back in one copy.  On CPU the same plan and the same
staging run in order, so the tests exercise the batching code without a GPU.

``torch`` is imported inside the functions.

Examples
--------
>>> plan_batches([(3, 8, 2, 2, 3), (4, 8, 2, 2, 3)], batch=5)
[[Rows(source=0, start=0, stop=3), Rows(source=1, start=0, stop=2)], [Rows(source=1, start=2, stop=4)]]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from reelsim.errors import ReelsimError

if TYPE_CHECKING:
    import torch


class Rows(NamedTuple):
    """Rows ``[start, stop)`` of input array number ``source``."""

    source: int
    start: int
    stop: int


def plan_batches(shapes: Sequence[tuple[int, ...]], batch: int) -> list[list[Rows]]:
    """Cut the rows of arrays of ``shapes`` into batches of at most ``batch`` rows of one row shape.

    Arrays whose rows have the same shape (``shape[1:]``) share batches, in
    input order; a new row shape starts a new batch.

    Parameters
    ----------
    shapes : sequence of tuple
        Each input array's shape ``(n_rows, *row_shape)``.
    batch : int
        Rows per batch, >= 1.

    Returns
    -------
    list of list of Rows
        Every row of every array exactly once.
    """
    if batch < 1:
        raise ReelsimError(f"batch must be >= 1, got {batch}")
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        if shape[0]:
            by_shape.setdefault(tuple(shape[1:]), []).append(i)
    plan: list[list[Rows]] = []
    for sources in by_shape.values():
        current: list[Rows] = []
        room = batch
        for i in sources:
            start, n = 0, shapes[i][0]
            while start < n:
                take = min(room, n - start)
                current.append(Rows(i, start, start + take))
                start += take
                room -= take
                if room == 0:
                    plan.append(current)
                    current, room = [], batch
        if current:
            plan.append(current)
    return plan


@dataclass
class FeedStats:
    """What one :meth:`DeviceFeeder.run` did.

    rows, batches : rows fed and forward passes made.
    fill_s : seconds spent filling host buffers (reading the inputs).
    wall_s : seconds of the whole call, the copy back included.
    """

    rows: int = 0
    batches: int = 0
    fill_s: float = 0.0
    wall_s: float = 0.0


class _Slot:
    """One staging buffer and the event of the copy that last read it."""

    def __init__(self, buffer: "torch.Tensor"):
        self.buffer = buffer
        self.copied = None  # torch.cuda.Event of the last host->device copy from it


class DeviceFeeder:
    """Batches rows of many uint8 arrays into a model on ``device`` (see the module docstring).

    Parameters
    ----------
    device : torch.device
        Where the model runs.
    batch : int
        Rows per forward pass.

    One feeder is used by one thread at a time (:func:`feeder` gives each
    thread its own): its staging buffers are reused from call to call.
    """

    def __init__(self, device: "torch.device", batch: int):
        if batch < 1:
            raise ReelsimError(f"batch must be >= 1, got {batch}")
        self.device = device
        self.batch = batch
        self._slots: dict[tuple, list[_Slot]] = {}
        self._turn: dict[tuple, int] = {}
        self._copy_stream = None

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def run(self, arrays: Sequence[np.ndarray], embed: Callable[["torch.Tensor"], "torch.Tensor"],
            dim: int) -> tuple[list[np.ndarray], FeedStats]:
        """``embed`` over every row of ``arrays``, in batches; each array's output rows.

        Parameters
        ----------
        arrays : sequence of np.ndarray [shape=(n_i, ...)], uint8
            E.g. one video's clips ``(n_i, T, H, W, 3)``; memory maps are read
            while filling the staging buffer.
        embed : callable
            uint8 tensor ``(b, ...)`` on ``device`` -> float32 tensor ``(b, dim)`` on ``device``
            (an extractor's ``embed``).
        dim : int
            Output width.

        Returns
        -------
        outputs : list of np.ndarray [shape=(n_i, dim)], float32
        stats : FeedStats
        """
        import torch

        t0 = time.perf_counter()
        for a in arrays:
            if a.dtype != np.uint8 or a.ndim < 2:
                raise ReelsimError(f"feed: expected uint8 arrays of rows, got {a.dtype} {a.shape}")
        plan = plan_batches([a.shape for a in arrays], self.batch)
        stats = FeedStats(rows=sum(len(a) for a in arrays), batches=len(plan))
        outs: list["torch.Tensor"] = []
        with torch.inference_mode():
            staged = self._stage(arrays, plan[0], stats) if plan else None
            for k in range(len(plan)):
                x = self._ready(staged) if self.cuda else staged
                outs.append(embed(x))  # on CUDA this only queues the work ...
                if k + 1 < len(plan):  # ... so the next batch is filled and copied meanwhile
                    staged = self._stage(arrays, plan[k + 1], stats)
            flat = torch.cat(outs).float().cpu().numpy() if outs else np.empty((0, dim), np.float32)
        result = [np.empty((len(a), dim), np.float32) for a in arrays]
        row = 0
        for rows in (r for batch in plan for r in batch):
            n = rows.stop - rows.start
            result[rows.source][rows.start : rows.stop] = flat[row : row + n]
            row += n
        stats.wall_s = time.perf_counter() - t0
        return result, stats

    # -- staging ---------------------------------------------------------------
    def _slot(self, row_shape: tuple) -> _Slot:
        """The next of the two staging buffers for ``row_shape`` (made on first use)."""
        import torch

        slots = self._slots.get(row_shape)
        if slots is None:
            slots = self._slots[row_shape] = [
                _Slot(torch.empty((self.batch, *row_shape), dtype=torch.uint8, pin_memory=self.cuda))
                for _ in range(2 if self.cuda else 1)]
            self._turn[row_shape] = 0
        turn = self._turn[row_shape]
        self._turn[row_shape] = (turn + 1) % len(slots)
        return slots[turn]

    def _stage(self, arrays, batch: list[Rows], stats: FeedStats):
        """Fill a staging buffer with ``batch``'s rows; on CUDA also start its copy to the device."""
        import torch

        t = time.perf_counter()
        row_shape = tuple(arrays[batch[0].source].shape[1:])
        slot = self._slot(row_shape)
        if slot.copied is not None:
            slot.copied.synchronize()  # the copy that last read this buffer is done
        host = slot.buffer.numpy()
        n = 0
        for r in batch:
            k = r.stop - r.start
            np.copyto(host[n : n + k], arrays[r.source][r.start : r.stop])
            n += k
        stats.fill_s += time.perf_counter() - t
        if not self.cuda:
            return slot.buffer[:n]
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._copy_stream):
            x = slot.buffer[:n].to(self.device, non_blocking=True)
            slot.copied = torch.cuda.Event()
            slot.copied.record(self._copy_stream)
        return x, slot.copied

    def _ready(self, staged) -> "torch.Tensor":
        """Make the model's stream wait for a staged copy (not the host) and own its memory."""
        import torch

        x, copied = staged
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(copied)
        x.record_stream(compute)  # allocated on the copy stream, used on this one
        return x


_LOCAL = threading.local()


def feeder(device: "torch.device", batch: int) -> DeviceFeeder:
    """This thread's :class:`DeviceFeeder` for ``device`` and ``batch`` (its buffers are kept for the next call)."""
    cache = getattr(_LOCAL, "feeders", None)
    if cache is None:
        cache = _LOCAL.feeders = {}
    key = (str(device), batch)
    if key not in cache:
        cache[key] = DeviceFeeder(device, batch)
    return cache[key]
