"""reelsim's own shot-boundary detector: hard cuts, dissolves and fades, flash- and flicker-proof.

It works on tiny copies of the analysis frames (``small_size``, 64x36 by
default) and keeps a ring of ``4 * max_half + cut_delay + 2`` of them, so its
cost and memory do not depend on video length.  Three tests, each a small pure
function over that ring:

**Hard cut at frame t** (:func:`cut_score`).  ``d = mad(f[t-1], f[t])`` (mean
absolute RGB difference, 0-255) must be at least ``cut_min`` and at least
``cut_ratio`` times the local motion level (median over 8 frames before and
``motion_after`` after ``t``, whichever is larger, plus 1), so the onset of a
fast pan or a shaky shot is not a cut.  Each step counts as motion only as far
as the picture's *structure* explains it (``z``, luma standardised per frame,
is blind to brightness and contrast): flickering light next to a cut does not
hide it.  A palette jump lowers the ratio only where the structure is wholly
new (``zstep >= cut_hist_z``; fast motion moves the palette too).
Light rule: a jump that keeps the structure (``zstep < light_max``) is the
same picture in another light (flicker, strobe, a colour-cycling lamp).
Flash rule: if some frame within ``lookahead`` frames after ``t`` is back
close to ``f[t-1]`` (``mad < flash_return * d``), or ``f[t]`` close to one
before, the jump was a flash; with the structure partly kept
(``zstep < return_z_max``) a return within ``return_horizon`` frames counts
too (periodic or returning content: flicker, colour cycling).

**Dissolve centred at c** (:func:`blend_score`), for half-widths ``h`` in
``half_widths``: ``A = f[c-h]``, ``B = f[c+h]``, ``M = f[c]``.  A dissolve makes
``M`` a pixel-wise blend of ``A`` and ``B``, so ``mad(M, (A+B)/2)`` is small
compared with ``mad(A, B)``; a cut inside the window makes it half of it, camera
motion makes it large too.  Also required: ``A`` and ``B`` differ
(``mad >= grad_min``), their colour histograms differ (``>= grad_hist_min``;
a pan keeps its histogram), and no single step inside the window carries most
of the change (that is a cut).

**Fade through black/white centred at c** (:func:`fade_score`): frame ``c`` is
nearly uniform (spatial luma std ``<= fade_flat``) while frames ``h`` before and
after are not, and those two differ (so a white flash inside one shot is no
fade).  ffmpeg's and editors' fades are often fast on one side, so steps are
not required to be small; a cut detected inside the fade is dropped.

Candidates of the gradual tests on consecutive centres form one run; a run
gives ONE boundary, placed at its most uniform frame (fade) or its best blend
(dissolve), reported as a :class:`Boundary` with the transition's frame range.
Boundaries closer than ``min_shot_frames`` to the previous one are dropped (a
cut inside a gradual transition's range is dropped in favour of it).  Every
decision is final ``latency`` frames after the boundary.

Default thresholds were chosen on the labelled set of ``benchmarks/shots.py``
(see ``docs/shots.md``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from reelsim.config import ShotConfig
from reelsim.errors import ParameterError
from reelsim.extractors.shots import Boundary, register_detector


@dataclass(frozen=True)
class TransitionParams:
    """Thresholds of :class:`TransitionDetector` (differences are mean absolute ones on a 0-255 scale).

    Structure steps (``z``, luma standardised per frame) are in units of the
    frame's luma std.  cut_hist_z : a palette jump lowers the cut ratio only
    where the structure step reaches this.  light_max : a jump with a smaller
    structure step is light, not a cut.  return_horizon, return_z_max : a
    jump with a structure step below ``return_z_max`` whose picture returns
    within ``return_horizon`` frames is flicker.  flash_abrupt : a uniform
    run of at most 3 frames entered and left with steps of at least this
    share of the change over 4 frames is a flash, not a fade.  light_scale :
    a step counts as motion up to ``light_scale * zstep * contrast``.
    flat_contrast : below this luma std a frame has no structure to compare:
        the light rule does not apply, a return within ``return_horizon``
        counts, and a palette jump lowers the cut ratio.
    grad_keep, grad_concentrated : the moving-subject dissolve test uses the
    ``grad_keep`` share of least-changed pixels and needs its residual to be
    at most ``grad_concentrated`` of the full one.  fade_local_max : the
    localisation limit of a fade (a dissolve's is ``grad_local_max``).
    motion_after : frames after ``t`` in the motion level.
    """

    cut_min: float = 12.0
    cut_ratio: float = 2.0
    cut_hist: float = 0.2
    cut_hist_z: float = 0.8
    flash_return: float = 0.5
    lookahead: int = 3
    light_max: float = 0.3
    return_horizon: int = 12
    return_z_max: float = 0.75
    flash_abrupt: float = 0.7
    light_scale: float = 1.5
    flat_contrast: float = 4.0
    grad_keep: float = 0.7
    grad_concentrated: float = 0.5
    motion_after: int = 7
    grad_min: float = 12.0
    grad_blend_max: float = 0.22
    grad_hist_min: float = 0.25
    grad_step_max: float = 0.45
    grad_local_max: float = 0.35
    half_widths: tuple[int, ...] = (4, 6, 8, 11, 15)
    fade_flat: float = 10.0
    fade_local_max: float = 0.7
    min_shot_frames: int = 8
    small_size: tuple[int, int] = (64, 36)

    @property
    def max_half(self) -> int:
        return max(self.half_widths)

    @property
    def cut_delay(self) -> int:
        """Frames after ``t`` the cut test at ``t`` needs."""
        return max(self.lookahead, self.return_horizon, self.motion_after)

    @classmethod
    def from_config(cls, cfg: ShotConfig) -> "TransitionParams":
        return cls(cut_min=cfg.cut_min, cut_ratio=cfg.cut_ratio, grad_min=cfg.gradual_min,
                   grad_blend_max=cfg.gradual_blend_max, min_shot_frames=cfg.min_shot_frames)


class SmallFrame:
    """A tiny float32 copy of one analysis frame, with what the tests need.

    rgb : float32 (h, w, 3), 0-255.
    gray : float32 (h, w) luma, 0-255.
    contrast : spatial std of luma, 0-255.
    z : float32 (h, w) luma standardised (mean 0, std 1; std floored at 4):
        the picture's structure, blind to brightness and contrast.
    hist : float32 (64,) joint RGB histogram (4 bins a channel), sums to 1.
    """

    __slots__ = ("rgb", "gray", "contrast", "z", "hist")

    def __init__(self, rgb_uint8: np.ndarray, size: tuple[int, int]):
        import cv2

        small = cv2.resize(rgb_uint8, size, interpolation=cv2.INTER_AREA)
        self.rgb = small.astype(np.float32)
        self.gray = self.rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        mean, std = cv2.meanStdDev(self.gray)
        self.contrast = float(std[0, 0])
        self.z = (self.gray - np.float32(mean[0, 0])) * np.float32(1.0 / max(self.contrast, 4.0))
        q = small >> 6
        codes = (q[..., 0].astype(np.int32) * 4 + q[..., 1]) * 4 + q[..., 2]
        hist = np.bincount(codes.ravel(), minlength=64).astype(np.float32)
        self.hist = hist / hist.sum()


def mad(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two equally shaped float32 arrays (OpenCV's L1 norm: no temporaries)."""
    import cv2

    if not (a.flags.c_contiguous and b.flags.c_contiguous):
        a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return cv2.norm(a, b, cv2.NORM_L1) / a.size


def hist_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance of two normalised histograms, in [0, 1]."""
    return 0.5 * float(np.abs(a - b).sum())


def cut_score(step: float, hist_jump: float, motion_before: float, motion_after: float, returned: float,
              p: TransitionParams) -> bool:
    """Is a step difference ``step`` at frame t a hard cut?

    hist_jump : histogram distance between f[t-1] and f[t]; a large one (a new
        palette) lets a cut into or out of fast motion through at 3/4 of the ratio.
    motion_before / motion_after : median step differences around t.
    returned : how close the picture comes back to where it was: the smallest
        ``mad(f[t-1], f[t+k])`` for k in 1..lookahead (t starts a flash) and
        ``mad(f[t-1-k], f[t])`` for k in 1..lookahead (t ends one).
    """
    ratio = p.cut_ratio * (0.75 if hist_jump >= p.cut_hist else 1.0)
    if step < p.cut_min or step < ratio * (max(motion_before, motion_after) + 1.0):
        return False
    return returned >= p.flash_return * step


def blend_score(a0: SmallFrame, a: SmallFrame, m: SmallFrame, b: SmallFrame, b1: SmallFrame, max_step: float,
                p: TransitionParams) -> float:
    """How much frame ``m`` looks like the middle of a dissolve from ``a`` to ``b``; 0 when it does not.

    a0, b1 : frames as far before ``a`` and after ``b`` as those are from ``m``
        (for :func:`is_localised`).
    max_step : the largest step difference between a and b.
    """
    d_ab = mad(a.rgb, b.rgb)
    if d_ab < p.grad_min or max_step > p.grad_step_max * d_ab:
        return 0.0
    if hist_distance(a.hist, b.hist) < p.grad_hist_min or not is_localised(a0, a, b, b1, p):
        return 0.0
    residual = mad(m.rgb, 0.5 * (a.rgb + b.rgb)) / d_ab
    if residual > p.grad_blend_max:
        return 0.0
    return d_ab * (1.0 - residual / p.grad_blend_max)


def trimmed_mad(a: np.ndarray, b: np.ndarray, keep: float) -> float:
    """Mean absolute difference over the ``keep`` fraction of pixels that differ least.

    a, b : float32 (h, w, 3).  Blind to a moving object covering less than
    ``1 - keep`` of the frame (a head in a close-up, a passer-by).
    """
    import cv2

    d = cv2.absdiff(a, b).reshape(-1, 3)
    d = d[:, 0] + d[:, 1] + d[:, 2]
    k = max(1, int(keep * d.size))
    return float(np.partition(d, k - 1)[:k].sum()) / (3 * k)


def robust_blend(a0: SmallFrame, a: SmallFrame, m: SmallFrame, b: SmallFrame, b1: SmallFrame,
                 p: TransitionParams) -> float:
    """:func:`blend_score` on the pixels that differ least, for shots with a fast-moving subject.

    The blend residual and the localisation test use :func:`trimmed_mad`
    (``grad_keep`` of the pixels), so a subject moving over a steady
    background does not veto the dissolve; a cut inside the window still
    leaves half of ``A - B`` on every pixel and is rejected.
    """
    d_ab = trimmed_mad(a.rgb, b.rgb, p.grad_keep)
    if d_ab < p.grad_min:
        return 0.0
    local = max(trimmed_mad(a0.rgb, a.rgb, p.grad_keep), trimmed_mad(b.rgb, b1.rgb, p.grad_keep))
    if local > p.grad_local_max * d_ab:
        return 0.0
    mix = 0.5 * (a.rgb + b.rgb)
    residual = trimmed_mad(m.rgb, mix, p.grad_keep) / d_ab
    if residual > p.grad_blend_max or residual * d_ab > p.grad_concentrated * mad(m.rgb, mix):
        return 0.0  # the misfit must sit on a few pixels (a moving subject), not everywhere (a morph)
    return d_ab * (1.0 - residual / p.grad_blend_max)


def fade_score(a: SmallFrame, m: SmallFrame, b: SmallFrame, p: TransitionParams) -> float:
    """How uniform frame ``m`` is, as the black/white middle of a fade from shot ``a`` to a different shot ``b``.

    0 when it is no fade: ``m`` not uniform, ``a`` or ``b`` uniform too, or
    ``a`` and ``b`` alike (a white flash inside one shot has ``a ~ b``).
    """
    if m.contrast > p.fade_flat or min(a.contrast, b.contrast) < 2.0 * m.contrast + 4.0:
        return 0.0
    if mad(a.rgb, b.rgb) < p.grad_min or hist_distance(a.hist, b.hist) < p.grad_hist_min:
        return 0.0
    return 1.0 + p.fade_flat - m.contrast


def shift(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``img`` translated by (dx, dy) pixels (sub-pixel, edges reflected)."""
    import cv2

    h, w = img.shape[:2]
    return cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT)


def inner(img: np.ndarray) -> np.ndarray:
    """The central part of a small frame (a sixth trimmed from each side), away from shifted borders."""
    h, w = img.shape[:2]
    return img[h // 6 : h - h // 6, w // 6 : w - w // 6]


def compensated_blend(a0: SmallFrame, a: SmallFrame, m: SmallFrame, b: SmallFrame, b1: SmallFrame,
                      motion_a: tuple[float, float], motion_b: tuple[float, float], p: TransitionParams) -> float:
    """:func:`blend_score` for shots under camera motion.

    ``motion_a`` is shot A's global translation over the h frames before the
    window (from ``a0`` to ``a``), ``motion_b`` shot B's over the h frames after
    it (from ``b`` to ``b1``).  A is moved on by ``motion_a`` and B moved back
    by ``motion_b`` to where they would be at ``m``; the blend and localisation
    tests then compare the central parts of the frames.
    """
    a_at_m = inner(shift(a.rgb, *motion_a))
    b_at_m = inner(shift(b.rgb, -motion_b[0], -motion_b[1]))
    d_ab = mad(a_at_m, b_at_m)
    if d_ab < p.grad_min:
        return 0.0
    before = mad(inner(shift(a0.rgb, *motion_a)), inner(a.rgb))
    after = mad(inner(b.rgb), inner(shift(b1.rgb, -motion_b[0], -motion_b[1])))
    if max(before, after) > p.grad_local_max * d_ab:
        return 0.0
    residual = mad(inner(m.rgb), 0.5 * (a_at_m + b_at_m)) / d_ab
    if residual > p.grad_blend_max:
        return 0.0
    return d_ab * (1.0 - residual / p.grad_blend_max)


def is_localised(a0: SmallFrame, a: SmallFrame, b: SmallFrame, b1: SmallFrame, p: TransitionParams,
                 limit: float | None = None) -> bool:
    """Is the change from ``a`` to ``b`` (2h frames) a transition, not a steady change?

    ``a0`` is h frames before ``a``, ``b1`` h frames after ``b``: across a
    transition the content settles on both sides, whereas a morphing texture
    or a long camera move keeps changing as much outside the window.  The
    change outside may be at most ``limit`` (default ``grad_local_max``)
    times the change across.
    """
    limit = p.grad_local_max if limit is None else limit
    return max(mad(a0.rgb, a.rgb), mad(b.rgb, b1.rgb)) <= limit * mad(a.rgb, b.rgb)


def merge_gradual(a: Boundary, b: Boundary) -> Boundary:
    """One boundary for two overlapping gradual detections (a before b).

    A fade wins the kind (its uniform frame is the boundary); two dissolves
    meet in the middle of their joint range.
    """
    start, end = min(a.start, b.start), max(a.end, b.end)
    if a.kind == "fade" or b.kind == "fade":
        frame = a.frame if a.kind == "fade" else b.frame
        return Boundary(frame, "fade", start, end)
    return Boundary((start + end) // 2, "dissolve", start, end)


@dataclass
class _Run:
    """Consecutive centres that passed a gradual test."""

    kind: str
    first: int
    last: int
    best: int
    best_score: float
    best_half: int


class TransitionDetector:
    """Streaming detector: ``process(index, rgb) -> [Boundary]``, ``finish(n)``, ``latency``.

    See the module docstring for the rules.  ``rgb`` is a uint8 (H, W, 3)
    analysis frame.  Frames must arrive in order starting at 0.
    """

    def __init__(self, params: TransitionParams):
        self.p = params
        h = params.max_half
        self._frames: deque[SmallFrame] = deque(maxlen=4 * h + params.cut_delay + 2)
        self._steps: deque[float] = deque(maxlen=4 * h + params.cut_delay + 12)
        self._zsteps: deque[float] = deque(maxlen=4 * h + params.cut_delay + 12)
        self._hsteps: deque[float] = deque(maxlen=4 * h + params.cut_delay + 12)
        self._n = 0
        self._run: _Run | None = None
        self._pending: list[Boundary] = []
        self._last_emitted = 0
        self._emitted: list[Boundary] = []  # the last gradual boundary emitted (a cut inside it is dropped)
        self._motion: dict[int, tuple[float, float]] = {}  # frame -> translation from the previous frame
        self._window = None
        # a run ends one miss after its last centre; centres lag the newest frame by max_half
        self.latency = 5 * h + params.cut_delay + 4

    # -- ring access --------------------------------------------------------
    def _frame(self, i: int) -> SmallFrame:
        return self._frames[i - (self._n - len(self._frames))]

    def _step(self, i: int) -> float:
        """mad(f[i-1], f[i])."""
        return self._steps[i - (self._n - len(self._steps))]

    def _zstep(self, i: int) -> float:
        """mad(z[i-1], z[i]): how much the picture's structure changed at frame i."""
        return self._zsteps[i - (self._n - len(self._zsteps))]

    def _is_flat(self, i: int) -> bool:
        """Is frame i or i-1 too flat (luma std below ``flat_contrast``) for its structure to mean anything?

        A flat frame's standardised luma is noise: a cut between two plain
        colours changes no structure but is no lighting change either.
        """
        return min(self._frame(i - 1).contrast, self._frame(i).contrast) < self.p.flat_contrast

    def _motion_step(self, i: int) -> float:
        """The part of the step at frame i that the picture's structure explains (its motion).

        A change of structure ``zstep`` (in luma std units) on frames of luma
        contrast ``s`` moves pixels by about ``zstep * s``; the rest of the
        step is light (flicker, a flash, a colour-cycling lamp), which must
        not raise the local motion level that a cut is compared against.
        """
        s = max(self._frame(i - 1).contrast, self._frame(i).contrast, 4.0)
        return min(self._step(i), self.p.light_scale * self._zstep(i) * s)

    def _translation(self, lo: int, hi: int) -> tuple[float, float]:
        """Global camera translation (dx, dy), in small-frame pixels, from frame lo to frame hi."""
        import cv2

        if self._window is None:
            w, h = self.p.small_size
            self._window = cv2.createHanningWindow((w, h), cv2.CV_32F)
        dx = dy = 0.0
        for i in range(lo + 1, hi + 1):
            if i not in self._motion:
                (x, y), _ = cv2.phaseCorrelate(self._frame(i - 1).gray, self._frame(i).gray, self._window)
                self._motion[i] = (x, y)
            dx, dy = dx + self._motion[i][0], dy + self._motion[i][1]
        return dx, dy

    def _steps_between(self, lo: int, hi: int) -> list[float]:
        """Step differences of frames lo+1 .. hi (those still held)."""
        first = self._n - len(self._steps) + 1
        return [self._step(i) for i in range(max(lo + 1, first), hi + 1)]

    # -- interface ----------------------------------------------------------
    def process(self, index: int, rgb: np.ndarray) -> list[Boundary]:
        if index != self._n:
            raise ParameterError(f"frames must arrive in order: expected {self._n}, got {index}")
        f = SmallFrame(rgb, self.p.small_size)
        self._frames.append(f)
        self._steps.append(mad(f.rgb, self._frames[-2].rgb) if len(self._frames) > 1 else 0.0)
        self._zsteps.append(mad(f.z, self._frames[-2].z) if len(self._frames) > 1 else 0.0)
        self._hsteps.append(hist_distance(f.hist, self._frames[-2].hist) if len(self._frames) > 1 else 0.0)
        self._n += 1
        self._motion.pop(self._n - len(self._frames) - 1, None)  # its frame has left the ring
        self._test_cut(self._n - 1 - self.p.cut_delay)
        self._test_gradual(self._n - 1 - 2 * self.p.max_half)
        return self._release(self._n - 1 - self.latency)

    def finish(self, n_frames: int) -> list[Boundary]:
        for t in range(max(1, self._n - self.p.cut_delay), self._n):  # cuts too near the end to test before
            self._test_cut(t)
        self._close_run()
        return self._release(n_frames)

    # -- tests --------------------------------------------------------------
    def _cut_context(self, t: int) -> tuple[float, float, float]:
        """What the cut test at t compares against: (palette jump, motion before, motion after).

        The palette jump (histogram distance of f[t-1] and f[t]) counts only
        where the picture's structure is wholly new (``zstep >= cut_hist_z``):
        fast motion (a whip pan, a head turning in a close-up) also moves the
        palette but keeps part of the structure.  The motion levels are
        medians of :meth:`_motion_step` over 8 frames before and
        ``motion_after`` after.
        """
        p = self.p
        lo = max(1, t - 8, self._n - len(self._steps) + 1)
        before = [self._motion_step(i) for i in range(lo, t)]
        after = [self._motion_step(i) for i in range(t + 1, min(self._n, t + 1 + p.motion_after))]
        new = self._zstep(t) >= p.cut_hist_z or self._is_flat(t)
        jump = self._hsteps[t - (self._n - len(self._hsteps))] if new else 0.0
        return jump, float(np.median(before)) if before else 0.0, float(np.median(after)) if after else 0.0

    def _test_cut(self, t: int) -> None:
        p = self.p
        if t < 1:
            return
        step = self._step(t)
        if step < p.cut_min:
            return
        zstep, flat = self._zstep(t), self._is_flat(t)
        if zstep < p.light_max and not flat:
            return  # the same picture in another light: flicker, strobe, a colour-cycling lamp
        jump, *motion = self._cut_context(t)
        if not cut_score(step, jump, *motion, returned=step, p=p):  # the flash rule costs more: only now
            return
        prev, cur = self._frame(t - 1).rgb, self._frame(t).rgb
        oldest = self._n - len(self._frames)
        horizon = p.return_horizon if zstep < p.return_z_max or flat else p.lookahead
        returned = min([mad(prev, self._frame(k).rgb) for k in range(t + 1, min(self._n, t + 1 + horizon))]
                       + [mad(self._frame(k).rgb, cur) for k in range(max(oldest, t - 1 - horizon), t - 1)])
        if cut_score(step, jump, *motion, returned=returned, p=p):
            self._pending.append(Boundary(t, "cut", t, t))

    def _test_gradual(self, c: int) -> None:
        p = self.p
        best_kind, best_score, best_h = None, 0.0, 0
        oldest = self._n - len(self._frames)
        for h in p.half_widths:
            if c - h < max(oldest, 0):
                continue
            a, m, b = self._frame(c - h), self._frame(c), self._frame(c + h)
            if hist_distance(a.hist, b.hist) < p.grad_hist_min:
                continue  # every gradual test needs the two ends' colours to differ: the cheap test first
            a0, b1 = self._frame(max(c - 2 * h, oldest, 0)), self._frame(c + 2 * h)
            inside = self._steps_between(c - h, c + h)
            fade = fade_score(a, m, b, p)
            # a uniform middle frame is strong evidence: the shots around it may move more than a dissolve's
            if fade and is_localised(a0, a, b, b1, p, p.fade_local_max):
                if best_kind != "fade" or fade > best_score:  # a uniform middle frame decides the kind
                    best_kind, best_score, best_h = "fade", fade, h
                continue
            if best_kind == "fade":
                continue
            score = blend_score(a0, a, m, b, b1, max(inside), p)
            if not score and self._worth_compensating(a, b, max(inside)):
                lo = max(c - 2 * h, oldest, 0)
                score = compensated_blend(a0, a, m, b, b1, self._translation(lo, c - h),
                                          self._translation(c + h, c + 2 * h), p)
                if not score:
                    score = robust_blend(a0, a, m, b, b1, p)
            if score > best_score:
                best_kind, best_score, best_h = "dissolve", score, h
        run = self._run
        if best_kind is None:
            if run is not None and c - run.last > 1:
                self._close_run()
            return
        if run is None:
            self._run = _Run(best_kind, c, c, c, best_score, best_h)
            return
        run.last = c
        if best_kind == "fade" and run.kind != "fade":  # a uniform frame decides the kind
            run.kind, run.best, run.best_score, run.best_half = "fade", c, best_score, best_h
        elif best_kind == run.kind and best_score > run.best_score:
            run.best, run.best_score, run.best_half = c, best_score, best_h

    def _worth_compensating(self, a: SmallFrame, b: SmallFrame, max_step: float) -> bool:
        """Could a and b be the two ends of a dissolve seen through camera motion?

        (Their histograms already differ: :meth:`_test_gradual` checks that first.)
        """
        p = self.p
        d_ab = mad(a.rgb, b.rgb)
        return d_ab >= p.grad_min and max_step <= p.grad_step_max * d_ab

    def _is_flash(self, m: int) -> bool:
        """Is the uniform frame m part of a flash (at most 3 uniform frames, entered and left in one step)?

        A fade through black or white may be fast on one side, never on both;
        a flash right after a cut would otherwise pass for a fade and replace the cut.
        """
        p, oldest = self.p, self._n - len(self._frames)
        flat = lambda i: oldest <= i < self._n and self._frame(i).contrast <= p.fade_flat  # noqa: E731
        u0, u1 = m, m
        while u1 - u0 < 3 and flat(u0 - 1):
            u0 -= 1
        while u1 - u0 < 3 and flat(u1 + 1):
            u1 += 1
        if u1 - u0 >= 3 or u0 - 4 < max(oldest, 0) or u1 + 4 >= self._n:
            return False
        into = self._step(u0) >= p.flash_abrupt * mad(self._frame(u0 - 4).rgb, self._frame(u0).rgb)
        out = self._step(u1 + 1) >= p.flash_abrupt * mad(self._frame(u1).rgb, self._frame(u1 + 4).rgb)
        return into and out

    def _close_run(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        if run.kind == "fade" and self._is_flash(run.best):
            return
        start = max(0, min(run.first, run.best - run.best_half))
        end = max(run.last, run.best + run.best_half) + 1
        new = Boundary(run.best, run.kind, start, end)
        gradual = [i for i, b in enumerate(self._pending) if b.kind != "cut"]
        # one transition seen as two runs (no shot can lie between them): merge
        if gradual and start < self._pending[gradual[-1]].end + self.p.min_shot_frames:
            self._pending[gradual[-1]] = merge_gradual(self._pending[gradual[-1]], new)
        else:
            self._pending.append(new)

    # -- output -------------------------------------------------------------
    def _release(self, upto: int) -> list[Boundary]:
        """Emit pending boundaries at frames <= upto, in order, after the min-shot and overlap rules."""
        ready = sorted((b for b in self._pending if b.frame <= upto), key=lambda b: b.frame)
        if not ready:
            return []
        self._pending = [b for b in self._pending if b.frame > upto]
        gradual = [b for b in ready + self._pending + self._emitted[-1:] if b.kind != "cut"]
        out: list[Boundary] = []
        m = self.p.min_shot_frames
        for b in ready:
            if b.kind == "cut" and any(g.start <= b.frame < g.end or abs(b.frame - g.frame) < m for g in gradual):
                continue  # a gradual transition wins over a cut inside or right next to it
            if b.frame - self._last_emitted < self.p.min_shot_frames:
                continue
            out.append(b)
            self._last_emitted = b.frame
            if b.kind != "cut":
                self._emitted = [b]
        return out


@register_detector("reelsim")
def _reelsim(cfg: ShotConfig, fps: float):
    """reelsim's detector: frame-exact cuts, dissolves and fades as one boundary, flashes ignored."""
    return TransitionDetector(TransitionParams.from_config(cfg))
