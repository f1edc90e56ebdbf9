"""Frame timestamps checked where they enter: monotonic, bounded steps, from 0.

Containers lie. An MPEG-TS capture joined from two recordings jumps by an
hour between two frames (a PTS discontinuity); a 33-bit PTS wraps around
after 26.5 hours; a stream starts at 1.4 s or at -0.3 s. Shot times are read
from these timestamps (exact for variable frame rate), so before they are
used they are made to start at 0, and a step that goes backwards, or forwards
by more than ``limits.max_frame_gap_s``, is replaced by the stream's typical
step: later frames are re-based to follow on, and the caller warns.

Examples
--------
>>> import numpy as np
>>> t = np.array([1.40, 1.44, 3601.48, 3601.52])
>>> times, jumps = checked_times(t, 25.0, max_gap_s=10.0)
>>> times.round(2).tolist(), [(j.frame, round(j.step_s, 2)) for j in jumps]
([0.0, 0.04, 0.08, 0.12], [(2, 3600.04)])
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class TimestampJump(NamedTuple):
    """A step between two frames' timestamps that was replaced.

    frame : index of the first frame after the jump.
    step_s : the step as the container gave it, in seconds (negative: backwards).
    removed_s : how much later frames moved (``step_s`` minus the typical step).
    """

    frame: int
    step_s: float
    removed_s: float


def nominal_step(fps: float) -> float:
    """Seconds per frame at ``fps`` (1/25 when the container gives no usable rate)."""
    return 1.0 / fps if np.isfinite(fps) and fps > 0 else 1.0 / 25.0


#: Frames a decoder may deliver out of timestamp order (B-frames in an AVI, whose packets carry no
#: presentation time): a step back within this many frame durations is reordering, not a jump.
REORDER_FRAMES = 16


def checked_times(times, fps: float, *, max_gap_s: float) -> tuple[np.ndarray, list[TimestampJump]]:
    """Frame presentation times from 0, in order, with every jump re-based.

    A step back by at most :data:`REORDER_FRAMES` frame durations is local
    reordering (the times are sorted within their run, no warning); a step
    back by more, or forward by more than ``max_gap_s``, is a jump.

    Parameters
    ----------
    times : array-like, float (N,)
        Presentation times in seconds, in decode order; NaN where a frame had none.
    fps : float
        The stream's nominal frame rate (used when no timestamps are usable).
    max_gap_s : float
        A forward step larger than this is a jump (``limits.max_frame_gap_s``).

    Returns
    -------
    times : float64 (N,)
        Non-decreasing, starting at 0.0; equal to ``times - times[0]`` when
        they were in order without a jump. Without timestamps (any NaN),
        frames at the nominal rate.
    jumps : list of TimestampJump
        The steps that were replaced by the typical step (the median of the others).
    """
    t = np.asarray(times, dtype=np.float64)
    if t.size == 0 or np.isnan(t).any():
        return np.arange(t.size) * nominal_step(fps), []
    d = np.diff(t)
    back = -REORDER_FRAMES * min(nominal_step(fps), max_gap_s)
    cuts = np.flatnonzero((d > max_gap_s) | (d < back))
    runs = np.split(t, cuts + 1)
    runs = [np.sort(r) for r in runs]  # local reordering within a run
    steps = np.concatenate([np.diff(r) for r in runs])
    positive = steps[steps > 0]
    typical = float(np.median(positive)) if positive.size else nominal_step(fps)
    out, jumps = [runs[0] - runs[0][0]], []
    for n in range(1, len(runs)):  # each run follows on from the one before, one typical step later
        i = int(cuts[n - 1])
        jumps.append(TimestampJump(i + 1, float(d[i]), float(runs[n][0] - runs[n - 1][-1] - typical)))
        out.append(runs[n] - runs[n][0] + out[-1][-1] + typical)
    return np.concatenate(out), jumps


def describe_jumps(jumps: list[TimestampJump]) -> str:
    """The one-line warning for ``jumps`` (non-empty)."""
    first = jumps[0]
    more = f"; {len(jumps)} jumps in all" if len(jumps) > 1 else ""
    return (f"timestamps jump by {first.step_s:+.1f} s at frame {first.frame} (a discontinuity or wraparound"
            f"{more}): later frames re-based to follow on at the stream's frame rate")
