"""reelsim's own shot-boundary detector: hard cuts, dissolves and fades, flash- and flicker-proof.

It works on tiny copies of the analysis frames (``small_size``, 64x36 by
default, with a quarter-size copy for structure and long dissolves) and keeps
a ring of ``4 * max_half + cut_delay + 2`` of them (and of quarter-size ones
``4 * long_half + 2``), so its cost and memory do not depend on video length.
Four tests, each a small pure function over that ring:

**Hard cut at frame t.**  A candidate is any of:

- *colour cut* (:func:`cut_score`): ``d = mad(f[t-1], f[t])`` (mean absolute
  RGB difference, 0-255) is at least ``cut_min`` and at least ``cut_ratio``
  times the local motion level (median over 8 frames before and
  ``motion_after`` after ``t``, whichever is larger, plus 1), so the onset of
  a fast pan or a shaky shot is not a cut.  Each step counts as motion only as
  far as the picture's *structure* explains it (``z``, luma standardised per
  frame, is blind to brightness and contrast): flickering light next to a cut
  does not hide it.  A palette jump lowers the ratio only where the structure
  is wholly new (``zstep >= cut_hist_z``).  Or, for a subject that moves fast
  and then jumps (a jump cut), the difference left after motion of up to 2
  pixels (:func:`compensated_step`) against its own level around;
- *structure cut*, for dark and noisy footage whose colour steps are small:
  the quarter-size structure (sensor noise averaged down) changes by
  ``dark_z_min`` and ``dark_ratio`` times its level around, over the whole
  picture;
- *structure spike*: the whole picture's structure changes at least twice as
  much as at the frames next to it, whatever light did to the colour step (a
  cut between two lit frames of a burst).

Light rule: a jump that keeps the structure (``zstep < light_max``) over the
whole picture (not a change of part of it, :func:`is_local_change`) is the
same picture in another light (flicker, strobe, a colour-cycling lamp); so
is, over a moving picture, a jump in brightness alone whose structure moves
no more than around it (:meth:`TransitionDetector._shaded_motion`).  A
colour or structure cut must also stand out: at least ``spike`` times the
motion of the steps next to it (inside a whip pan every step is large).
Then a candidate is dropped as a *transient* when the picture comes back
(:meth:`TransitionDetector._transient`): within ``lookahead`` frames (a
flash), ``return_horizon`` (light over the whole picture: flicker, colour
cycling), on both sides of a burst of up to ``burst_max`` lit frames
(lightning with its afterglow, a muzzle flash; and a burst's first lit frame
is no cut when the structure jumps more a few frames later); and, for a jump
that does not stand alone, when it changes part of the picture (something
sweeping across) or the picture comes back within ``excursion_horizon``
frames (something passing in front of the camera).  "Comes back" is judged
in colour and, where the structure jumped, in structure too: white strobe
frames over two different shots look alike in colour only.  A cut found where
the light goes on or off is moved to where the lit frames change shot
(:meth:`TransitionDetector._placed_in_burst`).

**Dissolve centred at c** (:func:`blend_score`), for half-widths ``h`` in
``half_widths``: ``A = f[c-h]``, ``B = f[c+h]``, ``M = f[c]``.  A dissolve makes
``M`` a pixel-wise blend of ``A`` and ``B``, so ``mad(M, (A+B)/2)`` is small
compared with ``mad(A, B)``; a cut inside the window makes it half of it, camera
motion makes it large too.  Also required: ``A`` and ``B`` differ
(``mad >= grad_min``), their colour histograms differ (``>= grad_hist_min``;
a pan keeps its histogram), and no single step inside the window carries most
of the change (that is a cut).  Under camera motion A and B are moved to
where they would be at ``M`` (:func:`compensated_blend`; under fast motion
every step is large, and only the part of the frame all moved images cover
is compared); with a fast-moving subject the least-changed pixels decide
(:func:`robust_blend`).

**Long dissolve centred at c** (:func:`long_blend_score`), for 2-3 s
dissolves (``long_half_widths``), on quarter-size frames where a slow pan or
zoom moves the picture by less than a pixel: the ends differ in structure
(similar colours are allowed), the middle and the quarter points are blends
of the ends with weights 1/2, 1/4 and 3/4, and the content settles outside;
again with each shot's slow camera move taken out.

**Fade through black/white centred at c** (:func:`fade_score`): frame ``c`` is
nearly uniform (spatial luma std ``<= fade_flat``) while frames ``h`` before and
after are not, and those two differ (so a white flash inside one shot is no
fade).  ffmpeg's and editors' fades are often fast on one side, so steps are
not required to be small; a cut detected inside the fade is dropped.  A
uniform run entered and left in one step each is a flash; a plain grey one
entered or left in one step is a plain picture; one entered or left by a
change of part of the picture, or reached or left by a ramp that changes
part of the picture at half of its steps, is something dark passing in front.

Candidates of the gradual tests on consecutive centres form one run; a run
gives ONE boundary, placed at its most uniform frame (fade) or its best blend
(dissolve), reported as a :class:`Boundary` with the transition's frame range.
A run whose picture before is the picture after (:meth:`TransitionDetector._same_around`)
is no transition, nor is a dissolve around a cut whose step jumps above every
step of its range (a cut into a shot that keeps changing fast).  Overlapping
gradual boundaries are merged.  Boundaries
closer than ``min_shot_frames`` to the previous one are dropped (a cut inside
a gradual transition's range is dropped in favour of it).  Every decision is
final ``latency`` frames after the boundary.

Default thresholds were chosen on the labelled set of ``benchmarks/shots.py``
and on seeds 0-4 of the hard classes (:mod:`reelsim.pipeline.shotclasses`),
with seeds 100-400 looked at; 500 and 600 are held out (``docs/shots.md``).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from reelsim.config import ShotConfig
from reelsim.errors import ParameterError
from reelsim.extractors.shots import Boundary, register_detector

#: frames whose cut evidence a detector built with ``evidence=True`` keeps (at most)
EVIDENCE_KEPT = 2048


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

    Issue 24 (strobes and bursts, passing objects, whip pans, dark footage,
    jump cuts, long and moving dissolves); quarter-size structure steps
    (``zc``) are in units of the quarter-size luma std:

    burst_max : the longest burst of lit frames a cut test looks across.
    z_reliable : a jump's quarter-size structure step must be this many times
        its level around (and at least ``light_max``) to be compared in
        structure at a return.
    zc_flat : below this quarter-size luma std a frame has no structure to compare.
    local_keep, local_share, local_z : a change is of part of the picture when
        the ``local_keep`` least-changed pixels carry less than ``local_share``
        of the mean change and the tenth most changed move by ``local_z`` in
        structure (:func:`is_local_change`).
    iso_max : a jump whose neighbours' motion exceeds this share of it does
        not stand alone (sweep and excursion rules).
    excursion_horizon, excursion_return : a picture that comes back within
        ``excursion_horizon`` frames closer than ``excursion_return`` of how
        far it went was only covered (something passing in front).
    same_z_max : two frames are the same picture only if their quarter-size
        structures differ by less than this.
    spike : a colour or structure cut must be this many times the motion of
        the steps next to it.
    jump_min, jump_ratio : the jump-cut test: the step left after motion of up
        to 2 pixels is at least ``jump_min`` and ``jump_ratio`` times its level.
    dark_z_min, dark_ratio, dark_step_min : the structure cut (dark footage):
        a quarter-size structure step of at least ``dark_z_min`` and
        ``dark_ratio`` times its level, with a colour step of ``dark_step_min``.
    long_half_widths, long_min, long_z_min, long_local_max, long_blend_max :
        the long-dissolve test on quarter-size frames (``long_min``: least
        change of colour; ``long_z_min``: least change of structure unless
        the colour changes four times ``long_min``).
    motion_cover, motion_fast : the moving-dissolve test compares the part of
        the frame every moved image covers, at least ``motion_cover`` of it
        each way; it runs whatever the steps inside when the camera moves
        ``motion_fast`` pixels a frame (64 px wide).
    fade_grey : a uniform frame within this of mid-grey (mean luma) is a fade's
        middle only if the picture dissolves into it and out of it.
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
    fade_grey: float = 70.0
    min_shot_frames: int = 8
    small_size: tuple[int, int] = (64, 36)
    # -- issue 24: strobes and bursts, passing objects, whip pans, dark footage, long dissolves
    burst_max: int = 6
    z_reliable: float = 3.0
    local_keep: float = 0.7
    local_share: float = 0.45
    local_z: float = 0.75
    iso_max: float = 0.4
    excursion_horizon: int = 30
    excursion_return: float = 0.4
    same_z_max: float = 0.7
    zc_flat: float = 1.0
    spike: float = 1.3
    jump_min: float = 2.5
    jump_ratio: float = 2.0
    dark_z_min: float = 0.6
    dark_ratio: float = 2.5
    dark_step_min: float = 3.0
    long_half_widths: tuple[int, ...] = (20, 30)
    long_min: float = 6.0
    long_z_min: float = 0.4
    long_local_max: float = 0.35
    long_blend_max: float = 0.22
    motion_cover: float = 0.2
    motion_fast: float = 1.0
    shade_share: float = 0.8
    shade_z: float = 1.3

    @property
    def max_half(self) -> int:
        return max(self.half_widths)

    @property
    def long_half(self) -> int:
        return max(self.long_half_widths) if self.long_half_widths else 0

    @property
    def cut_delay(self) -> int:
        """Frames after ``t`` the cut test at ``t`` needs."""
        return max(self.lookahead, self.return_horizon, self.motion_after, self.excursion_horizon, self.burst_max)

    @classmethod
    def from_config(cls, cfg: ShotConfig) -> "TransitionParams":
        return cls(cut_min=cfg.cut_min, cut_ratio=cfg.cut_ratio, grad_min=cfg.gradual_min,
                   grad_blend_max=cfg.gradual_blend_max, min_shot_frames=cfg.min_shot_frames)


class SmallFrame:
    """A tiny float32 copy of one analysis frame, with what the tests need.

    rgb : float32 (h, w, 3), 0-255.
    gray : float32 (h, w) luma, 0-255.
    mean : mean luma, 0-255.
    contrast : spatial std of luma, 0-255.
    z : float32 (h, w) luma standardised (mean 0, std 1; std floored at 4):
        the picture's structure, blind to brightness and contrast.
    hist : float32 (64,) joint RGB histogram (4 bins a channel), sums to 1.
    zc : float32 (h/4, w/4) the structure at quarter size (luma standardised,
        std floored at 2): sensor noise averaged down, for dark footage.
    zc_contrast : spatial std of luma at quarter size, 0-255.
    coarse : float32 (h/4, w/4, 3) RGB at quarter size, for long dissolves
        (slow camera moves shift it by less than a pixel).
    """

    __slots__ = ("rgb", "gray", "mean", "contrast", "z", "hist", "zc", "zc_contrast", "coarse")

    def __init__(self, rgb_uint8: np.ndarray, size: tuple[int, int]):
        import cv2

        small = cv2.resize(rgb_uint8, size, interpolation=cv2.INTER_AREA)
        self.rgb = small.astype(np.float32)
        self.gray = self.rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        mean, std = cv2.meanStdDev(self.gray)
        self.mean = float(mean[0, 0])
        self.contrast = float(std[0, 0])
        self.z = (self.gray - np.float32(mean[0, 0])) * np.float32(1.0 / max(self.contrast, 4.0))
        q = small >> 6
        codes = (q[..., 0].astype(np.int32) * 4 + q[..., 1]) * 4 + q[..., 2]
        hist = np.bincount(codes.ravel(), minlength=64).astype(np.float32)
        self.hist = hist / hist.sum()
        w, h = size
        self.coarse = cv2.resize(self.rgb, (w // 4, h // 4), interpolation=cv2.INTER_AREA)
        gray = self.coarse @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        mean, std = cv2.meanStdDev(gray)
        self.zc_contrast = float(std[0, 0])
        self.zc = (gray - np.float32(mean[0, 0])) * np.float32(1.0 / max(self.zc_contrast, 2.0))


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


def came_back(a: SmallFrame, b: SmallFrame, step: float, zstep: float, use_z: bool, share: float,
              flat_contrast: float, z_slack: float = 0.0) -> bool:
    """Does ``b`` show the picture of ``a`` again, closer than ``share`` of a jump of ``step``?

    In colour, and, when ``use_z`` and neither frame is flat (quarter-size luma
    std below ``flat_contrast``), in structure too, at quarter size against a
    structure jump of ``zstep``: two white strobe frames over two different
    shots look alike in colour but each keeps its own shot's structure, at
    a sixth of its contrast.  ``z_slack``: structure differences up to this
    count as the same (sensor noise in dark footage).
    """
    if mad(a.rgb, b.rgb) >= share * step:
        return False
    if use_z and min(a.zc_contrast, b.zc_contrast) >= flat_contrast:
        return mad(a.zc, b.zc) < max(share * zstep, z_slack)
    return True


def compensated_step(a: np.ndarray, b: np.ndarray, reach: int = 2) -> float:
    """Mean difference of two luma frames left after any motion of up to ``reach`` pixels.

    Each pixel of one frame is compared with the range of values the other
    takes within ``reach`` pixels around it (a max and a min filter): a
    pixel inside that range could have moved there and counts 0.  Averaged
    both ways.  Small motion (a walker's legs, a talking head) leaves little;
    a subject that jumps to another place (a jump cut) leaves its whole change.

    Parameters
    ----------
    a, b : np.ndarray [shape=(h, w), dtype=float32], 0-255.

    Examples
    --------
    >>> a = np.zeros((9, 9), np.float32); a[4, 4] = 100
    >>> compensated_step(a, np.roll(a, 1, axis=1)), round(compensated_step(a, np.roll(a, 4, axis=1)), 3)
    (0.0, 1.235)
    """
    import cv2

    kernel = np.ones((2 * reach + 1, 2 * reach + 1), np.uint8)
    out = 0.0
    for x, y in ((a, b), (b, a)):
        outside = cv2.max(cv2.subtract(x, cv2.dilate(y, kernel)), cv2.subtract(cv2.erode(y, kernel), x))
        out += cv2.sumElems(cv2.threshold(outside, 0, 0, cv2.THRESH_TOZERO)[1])[0]
    return out / (2 * a.size)


def is_local_change(a: SmallFrame, b: SmallFrame, step: float, p: TransitionParams) -> bool:
    """Is the change from ``a`` to ``b`` (mean ``step``) a change of part of the picture?

    The ``local_keep`` share of pixels that change least carries less than
    ``local_share`` of the mean colour change, and the tenth of pixels whose
    structure changes most changes by ``local_z`` on average: a subject that
    jumps (a jump cut), a panel, a passer-by.  Light changes the whole
    picture's colour and keeps its structure everywhere (dimming a bright
    shape on black changes only the shape, but keeps its structure).
    """
    if trimmed_mad(a.rgb, b.rgb, p.local_keep) >= p.local_share * step:
        return False
    d = cv2_absdiff_flat(a.z, b.z)
    k = max(1, d.size // 10)
    return float(np.partition(d, d.size - k)[d.size - k:].mean()) >= p.local_z


def is_local_structure_change(a: SmallFrame, b: SmallFrame, p: TransitionParams) -> bool:
    """Is the change of structure from ``a`` to ``b`` confined to part of the picture (a caption, a panel)?

    The ``local_keep`` share of pixels whose standardised luma changes least
    carries less than ``local_share`` of the mean change.  Unlike
    :func:`is_local_change` this holds under light that clips colours.
    """
    d = cv2_absdiff_flat(a.z, b.z)
    k = max(1, int(p.local_keep * d.size))
    return float(np.partition(d, k - 1)[:k].mean()) < p.local_share * float(d.mean())


def cv2_absdiff_flat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| as a flat float32 array."""
    import cv2

    return cv2.absdiff(a, b).ravel()


def long_blend_score(a0: np.ndarray, a: np.ndarray, q1: np.ndarray, m: np.ndarray, q3: np.ndarray,
                     b: np.ndarray, b1: np.ndarray, max_step: float, p: TransitionParams,
                     motion_a: tuple[float, float] = (0.0, 0.0), motion_b: tuple[float, float] = (0.0, 0.0)) -> float:
    """How much a 2h-frame stretch looks like a long dissolve, on quarter-size frames; 0 when it does not.

    ``a``, ``m``, ``b`` are the coarse frames at ``c - h``, ``c``, ``c + h``;
    ``q1``, ``q3`` at ``c - h/2`` and ``c + h/2``; ``a0``, ``b1`` at
    ``c - 2h`` and ``c + 2h``.  A dissolve is a pixel-wise blend whose weight
    grows steadily: ``m`` is the mean of ``a`` and ``b``, ``q1`` three parts
    ``a`` to one ``b``, ``q3`` the reverse, each within ``long_blend_max`` of
    the change ``d(a, b)``; the content settles outside (``long_local_max``)
    and no single full-size step carries more than ``grad_step_max`` of it.
    ``motion_a`` (``a0`` to ``a``) and ``motion_b`` (``b`` to ``b1``) are the
    two shots' slow camera moves over h frames, in coarse pixels: each image
    is moved to the time it is compared at (constant speed), and only the
    part of the frame every moved image covers is compared.
    """
    still = not any(motion_a + motion_b)
    ax, ay = motion_a
    bx, by = -motion_b[0], -motion_b[1]
    if still:
        rows, cols = slice(None), slice(None)
        moved = lambda img, k, dx, dy: img
    else:
        rows, cols = overlap(a.shape[:2], (1.5 * ax, 1.5 * ay), (1.5 * bx, 1.5 * by), (ax, ay), (bx, by), margin=0)
        if rows.stop - rows.start < 3 or cols.stop - cols.start < 4:
            return 0.0
        moved = lambda img, k, dx, dy: shift(img, k * dx, k * dy)[rows, cols]
    a_m, b_m = moved(a, 1.0, ax, ay), moved(b, 1.0, bx, by)
    d_ab = mad(a_m, b_m)
    if d_ab < p.long_min or max_step > p.grad_step_max * d_ab:
        return 0.0
    crop = (lambda img: img) if still else (lambda img: img[rows, cols])
    if max(mad(moved(a0, 1.0, ax, ay), crop(a)), mad(crop(b), moved(b1, 1.0, bx, by))) > p.long_local_max * d_ab:
        return 0.0
    residual = max(mad(crop(m), 0.5 * (a_m + b_m)),
                   mad(crop(q1), 0.75 * moved(a, 0.5, ax, ay) + 0.25 * moved(b, 1.5, bx, by)),
                   mad(crop(q3), 0.25 * moved(a, 1.5, ax, ay) + 0.75 * moved(b, 0.5, bx, by))) / d_ab
    if residual > p.long_blend_max:
        return 0.0
    return d_ab * (1.0 - residual / p.long_blend_max)


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
    mix = 0.5 * (a.rgb + b.rgb)
    residual = trimmed_mad(m.rgb, mix, p.grad_keep) / d_ab
    if residual > p.grad_blend_max or residual * d_ab > p.grad_concentrated * mad(m.rgb, mix):
        return 0.0  # the misfit must sit on a few pixels (a moving subject), not everywhere (a morph)
    local = max(trimmed_mad(a0.rgb, a.rgb, p.grad_keep), trimmed_mad(b.rgb, b1.rgb, p.grad_keep))
    if local > p.grad_local_max * d_ab:
        return 0.0
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


def overlap(shape: tuple[int, int], *shifts: tuple[float, float], margin: int = 1) -> tuple[slice, slice]:
    """Rows and columns of an (h, w) frame that every image moved by one of ``shifts`` still covers.

    Examples
    --------
    >>> overlap((36, 64), (10.4, 0.0), (-3.0, 1.5))
    (slice(3, 35, None), slice(12, 60, None))
    """
    h, w = shape
    x0 = max([0] + [math.ceil(dx) for dx, _ in shifts]) + margin
    x1 = min([w] + [w + math.floor(dx) for dx, _ in shifts]) - margin
    y0 = max([0] + [math.ceil(dy) for _, dy in shifts]) + margin
    y1 = min([h] + [h + math.floor(dy) for _, dy in shifts]) - margin
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def compensated_blend(a0: SmallFrame, a: SmallFrame, m: SmallFrame, b: SmallFrame, b1: SmallFrame,
                      motion_a: tuple[float, float], motion_b: tuple[float, float], p: TransitionParams) -> float:
    """:func:`blend_score` for shots under camera motion.

    ``motion_a`` is shot A's global translation over the h frames before the
    window (from ``a0`` to ``a``), ``motion_b`` shot B's over the h frames after
    it (from ``b`` to ``b1``).  A is moved on by ``motion_a`` and B moved back
    by ``motion_b`` to where they would be at ``m``; the blend and localisation
    tests then compare the part of the frames that all moved images still
    cover, which must be at least ``motion_cover`` of the frame each way.
    """
    back = (-motion_b[0], -motion_b[1])
    rows, cols = overlap(a.rgb.shape[:2], motion_a, back)
    h, w = a.rgb.shape[:2]
    if (rows.stop - rows.start) < p.motion_cover * h or (cols.stop - cols.start) < p.motion_cover * w:
        return 0.0
    a_at_m = shift(a.rgb, *motion_a)[rows, cols]
    b_at_m = shift(b.rgb, *back)[rows, cols]
    d_ab = mad(a_at_m, b_at_m)
    if d_ab < p.grad_min:
        return 0.0
    residual = mad(m.rgb[rows, cols], 0.5 * (a_at_m + b_at_m)) / d_ab
    if residual > p.grad_blend_max:
        return 0.0
    before = mad(shift(a0.rgb, *motion_a)[rows, cols], a.rgb[rows, cols])
    after = mad(b.rgb[rows, cols], shift(b1.rgb, *back)[rows, cols])
    if max(before, after) > p.grad_local_max * d_ab:
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

    def __init__(self, params: TransitionParams, *, evidence: bool = False):
        self.p = params
        self._evidence: dict[int, tuple[float, str, float]] | None = {} if evidence else None
        h = params.max_half
        self._frames: deque[SmallFrame] = deque(maxlen=4 * h + params.cut_delay + 2)
        self._steps: deque[float] = deque(maxlen=4 * h + params.cut_delay + 12)
        self._zsteps: deque[float] = deque(maxlen=4 * h + params.cut_delay + 12)
        self._hsteps: deque[float] = deque(maxlen=4 * h + params.cut_delay + 12)
        self._zcsteps: deque[float] = deque(maxlen=4 * h + params.cut_delay + 12)
        self._csteps: dict[int, float] = {}  # frame -> compensated step, computed only where a cut test needs it
        big = params.long_half
        # quarter-size frames (and quarter-size structure) for the long-dissolve test, which looks further
        self._coarse: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=4 * big + 2)
        self._half_window = None
        self._long_steps: deque[float] = deque(maxlen=4 * big + 2)
        self._long_run: _Run | None = None
        self._n = 0
        self._run: _Run | None = None
        self._pending: list[Boundary] = []
        self._last_emitted = 0
        self._emitted: list[Boundary] = []  # the last gradual boundary emitted (a cut inside it is dropped)
        self._motion: dict[int, tuple[float, float]] = {}  # frame -> translation from the previous frame
        self._window = None
        # a run ends one miss after its last centre; centres lag the newest frame by max_half
        self.latency = max(5 * h + params.cut_delay + 4, 5 * big + 4)

    # -- ring access --------------------------------------------------------
    def _frame(self, i: int) -> SmallFrame:
        return self._frames[i - (self._n - len(self._frames))]

    def _step(self, i: int) -> float:
        """mad(f[i-1], f[i])."""
        return self._steps[i - (self._n - len(self._steps))]

    def _zstep(self, i: int) -> float:
        """mad(z[i-1], z[i]): how much the picture's structure changed at frame i."""
        return self._zsteps[i - (self._n - len(self._zsteps))]

    def _zcstep(self, i: int) -> float:
        """mad(zc[i-1], zc[i]): the structure step at quarter size (less sensor noise)."""
        return self._zcsteps[i - (self._n - len(self._zcsteps))]

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

    def _medians_around(self, t: int, step_of, first: int) -> tuple[float, float]:
        """Medians of ``step_of(i)`` over the 8 frames before t and the ``motion_after`` after it (t left out;
        frames from ``first`` on: those still held), 0.0 for a side with none."""
        before = [step_of(i) for i in range(max(first, t - 8), t)]
        after = [step_of(i) for i in range(t + 1, min(self._n, t + 1 + self.p.motion_after))]
        return float(np.median(before)) if before else 0.0, float(np.median(after)) if after else 0.0

    # -- interface ----------------------------------------------------------
    def process(self, index: int, rgb: np.ndarray) -> list[Boundary]:
        import cv2

        if index != self._n:
            raise ParameterError(f"frames must arrive in order: expected {self._n}, got {index}")
        f = SmallFrame(rgb, self.p.small_size)
        self._frames.append(f)
        self._steps.append(mad(f.rgb, self._frames[-2].rgb) if len(self._frames) > 1 else 0.0)
        self._zsteps.append(mad(f.z, self._frames[-2].z) if len(self._frames) > 1 else 0.0)
        self._hsteps.append(hist_distance(f.hist, self._frames[-2].hist) if len(self._frames) > 1 else 0.0)
        self._zcsteps.append(mad(f.zc, self._frames[-2].zc) if len(self._frames) > 1 else 0.0)
        w, h = self.p.small_size
        self._coarse.append((f.coarse, f.zc, cv2.resize(f.gray, (w // 2, h // 2), interpolation=cv2.INTER_AREA)))
        self._long_steps.append(self._steps[-1])
        self._n += 1
        self._motion.pop(self._n - len(self._frames) - 1, None)  # its frame has left the ring
        self._csteps.pop(self._n - len(self._frames), None)
        self._test_cut(self._n - 1 - self.p.cut_delay)
        self._test_gradual(self._n - 1 - 2 * self.p.max_half)
        if self.p.long_half:
            self._test_long(self._n - 1 - 2 * self.p.long_half)
        return self._release(self._n - 1 - self.latency)

    def finish(self, n_frames: int) -> list[Boundary]:
        for t in range(max(1, self._n - self.p.cut_delay), self._n):  # cuts too near the end to test before
            self._test_cut(t)
        self._close_run()
        self._close_long_run()
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
        before, after = self._medians_around(t, self._motion_step, max(1, self._n - len(self._steps) + 1))
        new = self._zstep(t) >= p.cut_hist_z or self._is_flat(t)
        jump = self._hsteps[t - (self._n - len(self._hsteps))] if new else 0.0
        return jump, before, after

    def _test_cut(self, t: int) -> None:
        """A hard cut at t: a colour cut or a structure cut that is no transient (see the module docstring)."""
        if t < 1:
            return
        step = self._step(t)
        spike = self._structure_spike(t)
        if not (self._colour_cut(t, step) or self._structure_cut(t, step) or spike):
            self._note(t, step, "light" if self._is_light(t, step) or self._brightness_only(t, step) else "weak")
        elif not (self._stands_out(t, step) or spike):
            self._note(t, step, "motion")
        elif self._transient(t, step):
            self._note(t, step, "transient")
        else:
            self._note(t, step, "cut")
            c = self._placed_in_burst(t, step)
            self._pending.append(Boundary(c, "cut", c, c))

    def _placed_in_burst(self, t: int, step: float) -> int:
        """Where a cut found at a burst's edge belongs: the frame at which the lit frames change shot.

        When the jump at t is the light going on or off (the mean luma moves
        by ``shade_share`` of the step), the lit run it bounds (frames at
        least half the jump brighter than the unlit side, ``burst_max + 1``
        at most) lies between an unlit frame P of one shot and an unlit frame
        Q of the other.  Each lit frame belongs to the shot whose quarter-size
        structure it is closer to; the cut is the split of the run that
        agrees with the most frames (t where it ties): a muzzle flash that
        starts before the cut and ends after it.
        """
        p = self.p
        prev, cur = self._frame(t - 1), self._frame(t)
        rise = cur.mean - prev.mean
        if abs(rise) < p.shade_share * step:
            return t
        oldest, limit = self._n - len(self._frames), p.burst_max + 1
        if rise > 0:  # the light goes on at t: the lit run is t .. l1 - 1
            floor, l0, l1 = prev.mean + 0.5 * rise, t, t
            while l1 < self._n and l1 - l0 <= limit and self._frame(l1).mean >= floor:
                l1 += 1
        else:  # it goes off at t: the lit run is l0 .. t - 1
            floor, l0, l1 = cur.mean - 0.5 * rise, t, t
            while l0 - 1 > oldest and l1 - l0 <= limit and self._frame(l0 - 1).mean >= floor:
                l0 -= 1
        if l1 - l0 > limit or l1 >= self._n or l0 - 1 < oldest or l1 == l0:
            return t
        before, after = self._frame(l0 - 1).zc, self._frame(l1).zc
        side = [mad(self._frame(i).zc, after) < mad(self._frame(i).zc, before) for i in range(l0, l1)]

        def wrong(c: int) -> int:  # lit frames put on the other side of a cut at c
            return sum(side[: c - l0]) + sum(not s for s in side[c - l0:])

        best = min(range(l0, l1 + 1), key=lambda c: (wrong(c), c != t))
        return best if wrong(best) < wrong(t) else t

    def _structure_spike(self, t: int) -> bool:
        """Does the whole picture's structure change at t, and at least twice as much as next to it?

        The quarter-size structure step at t is at least ``dark_z_min``,
        twice the steps before and after it and ``dark_ratio`` times its
        level around (plus 0.05), and the change is not confined to part of
        the picture (:func:`is_local_structure_change`).  Light leaves the
        structure alone, so a cut between two lit frames of a burst, whose
        colour step light has squeezed, stands out here.
        """
        p = self.p
        zc = self._zcstep(t)
        if zc < p.dark_z_min or t + 1 >= self._n:
            return False
        if zc < 2.0 * max(self._zcstep(t - 1) if t - 1 > self._n - len(self._zcsteps) else 0.0, self._zcstep(t + 1)):
            return False
        if zc < p.dark_ratio * (self._zc_level(t) + 0.05):
            return False
        return not is_local_structure_change(self._frame(t - 1), self._frame(t), p)

    def _is_light(self, t: int, step: float) -> bool:
        """Would the light rule call the step at t the same picture in another light?"""
        p = self.p
        return (step >= p.cut_min and self._zstep(t) < p.light_max and not self._is_flat(t)
                and not is_local_change(self._frame(t - 1), self._frame(t), step, p))

    def _note(self, t: int, step: float, verdict: str) -> None:
        """Keep the cut evidence at t (:meth:`cut_evidence`) when asked to (``evidence=True``)."""
        if self._evidence is None or (step < self.p.dark_step_min and verdict == "weak"):
            return
        _, before, after = self._cut_context(t)
        self._evidence[t] = (self._cut_strength(t, step), verdict, max(before, after))
        while len(self._evidence) > EVIDENCE_KEPT:
            del self._evidence[next(iter(self._evidence))]

    def _cut_strength(self, t: int, step: float) -> float:
        """How far the step at t goes towards a cut: the larger of step / what the colour test needs and
        quarter-size structure step / what the structure test needs (1 or more: the test's size and ratio
        pass)."""
        p = self.p
        jump, before, after = self._cut_context(t)
        ratio = p.cut_ratio * (0.75 if jump >= p.cut_hist else 1.0)
        colour = step / max(p.cut_min, ratio * (max(before, after) + 1.0))
        level = max(self._medians_around(t, self._zcstep, self._n - len(self._zcsteps) + 1))
        structure = self._zcstep(t) / max(p.dark_z_min, p.dark_ratio * (level + 0.05))
        return max(colour, structure)

    def cut_evidence(self, t: int) -> tuple[float, str]:
        """(strength, verdict) of the cut test at frame t, kept for the last ``EVIDENCE_KEPT`` frames tested
        with a step of at least ``dark_step_min`` when the detector was built with ``evidence=True``.

        strength : :meth:`_cut_strength` (1 or more: large enough against the motion around).
        verdict : ``cut`` (reported), ``light`` (the same picture in another light), ``transient``
            (the picture came back: a flash, a burst, something passing), ``motion`` (no spike above the
            steps next to it: a whip pan), ``weak`` (too small), ``none`` (not kept).
        """
        if self._evidence is None:
            raise ValueError("cut_evidence needs TransitionDetector(..., evidence=True)")
        return self._evidence.get(t, (0.0, "none", 0.0))[:2]

    def motion_level(self, t: int) -> float:
        """The camera motion around frame t that the cut test compared against (the larger median of
        :meth:`_motion_step` over 8 frames before and ``motion_after`` after, 0-255 per frame), kept with
        :meth:`cut_evidence`; 0.0 where none was kept (the step at t was under ``dark_step_min``)."""
        if self._evidence is None:
            raise ValueError("motion_level needs TransitionDetector(..., evidence=True)")
        return self._evidence.get(t, (0.0, "none", 0.0))[2]

    def _colour_cut(self, t: int, step: float) -> bool:
        """The colour test: a step large in itself and against the motion around, not light.

        Against the motion around either as the module docstring says, or
        (a subject moving fast, then jumping: a jump cut) as what is left
        after small motion (:func:`compensated_step`): at least ``jump_min``
        and ``jump_ratio`` times its median over 8 frames before and
        ``motion_after`` after (the larger, plus 0.2).
        """
        p = self.p
        if step < p.cut_min:
            return False
        if self._zstep(t) < p.light_max and not self._is_flat(t) and not is_local_change(
                self._frame(t - 1), self._frame(t), step, p):
            return False  # the same picture in another light: flicker, strobe, a colour-cycling lamp
        if self._shaded_motion(t, step):
            return False  # a lamp dimmed or lit over a moving picture: its structure moves as before
        jump, *motion = self._cut_context(t)
        if cut_score(step, jump, *motion, returned=step, p=p):
            return True
        c = self._cstep(t)
        if c < p.jump_min:
            return False
        level = max(self._medians_around(t, self._cstep, self._n - len(self._frames) + 1))
        return c >= p.jump_ratio * (level + 0.2)

    def _brightness_only(self, t: int, step: float) -> bool:
        """Does (nearly) every pixel move one way at t: the mean luma changes by ``shade_share`` of the step
        (at least ``dark_step_min``), on frames with a structure (a lamp dimmed or lit, not a new picture)?"""
        p = self.p
        return (step >= p.dark_step_min and not self._is_flat(t)
                and abs(self._frame(t).mean - self._frame(t - 1).mean) >= p.shade_share * step)

    def _shaded_motion(self, t: int, step: float) -> bool:
        """Is the step at t light over a moving picture: brightness alone, while the structure moves as before?

        Nearly every pixel moves one way (the mean luma changes by at least
        ``shade_share`` of the step), and the structure step is no more than
        ``shade_z`` times its level around (the larger median of
        :meth:`_zstep` over 8 frames before and ``motion_after`` after): a
        club light dimming a panning shot.  A cut into a brighter or darker
        shot changes the structure far more than the camera's motion does.
        """
        p = self.p
        if step < p.cut_min or not self._brightness_only(t, step):
            return False
        level = max(self._medians_around(t, self._zstep, self._n - len(self._zsteps) + 1))
        return self._zstep(t) < p.shade_z * level

    def _cstep(self, i: int) -> float:
        """compensated_step(gray[i-1], gray[i]), computed once, when first asked for."""
        if i not in self._csteps:
            self._csteps[i] = compensated_step(self._frame(i - 1).gray, self._frame(i).gray)
        return self._csteps[i]

    def _stands_out(self, t: int, step: float) -> bool:
        """Is the step at t more than ``spike`` times the motion of the steps next to it?

        Inside a whip pan the picture changes a lot at every frame, rising and
        falling smoothly; a cut is a spike.  Light (a flash next to a cut)
        does not count: only :meth:`_motion_step`.
        """
        near = [self._motion_step(i) for i in (t - 1, t + 1) if self._n - len(self._steps) < i < self._n]
        return not near or step >= self.p.spike * max(near)

    def _structure_cut(self, t: int, step: float) -> bool:
        """The structure test, for dark and noisy footage whose colour steps are small.

        At half size (sensor noise averaged down) the standardised structure
        must change by ``dark_z_min`` and ``dark_ratio`` times its level
        around (medians over 8 frames before and ``motion_after`` after, plus
        0.05), with a colour step of at least ``dark_step_min``, over the
        whole picture (:func:`is_local_change`); flat frames have no
        structure to compare.
        """
        p = self.p
        zc = self._zcstep(t)
        if zc < p.dark_z_min or step < p.dark_step_min or min(self._frame(t - 1).zc_contrast,
                                                               self._frame(t).zc_contrast) < 1.0:
            return False
        level = max(self._medians_around(t, self._zcstep, self._n - len(self._zcsteps) + 1))
        if zc < p.dark_ratio * (level + 0.05):
            return False
        return not is_local_change(self._frame(t - 1), self._frame(t), step, p)  # a caption on a plain sky

    def _zc_level(self, t: int) -> float:
        """Median quarter-size structure step around t (8 frames each side, t left out): motion plus noise."""
        first = self._n - len(self._zcsteps) + 1
        around = [self._zcstep(i) for i in range(max(first, t - 8), min(self._n, t + 9)) if i != t]
        return float(np.median(around)) if around else 0.0

    def _transient(self, t: int, step: float) -> bool:
        """Does the picture come back after the jump at t (a flash, a burst, flicker, something passing)?

        - Flash rule: a frame within ``lookahead`` after t shows ``f[t-1]``
          again, or ``f[t]`` was shown within ``lookahead`` before; where the
          structure is partly kept and the change is over the whole frame
          (light), within ``return_horizon``.
        - Burst rule: some frame up to ``burst_max`` before t and some up to
          ``burst_max`` after it, at most ``burst_max + 1`` apart, show the
          same picture: t is inside a burst of lit frames (lightning with its
          afterglow, a muzzle flash), wherever in it.  And where the
          structure jumps twice as much (and by ``dark_z_min``) within
          ``burst_max`` frames after t, t is where a burst starts and the cut
          inside it comes later.
        - Sweep rule, for a jump that does not stand alone (its neighbours'
          motion above ``iso_max`` of it): it changes part of the picture
          (:func:`is_local_change`: an edge sweeping across, something
          entering the frame), or the picture from before comes back within
          ``excursion_horizon`` frames, closer than ``excursion_return`` of
          how far it went (an object passing in front of the camera).

        "The same picture" is judged in colour and, where the structure
        changed at t (a quarter-size step of at least ``light_max``, and
        ``z_reliable`` times its level around, so not sensor noise), in
        structure too, to within three times that level (:func:`came_back`).
        """
        p = self.p
        zstep, flat = self._zstep(t), self._is_flat(t)
        oldest = self._n - len(self._frames)
        prev, cur = self._frame(t - 1), self._frame(t)
        zc, level = self._zcstep(t), self._zc_level(t)
        use_z = min(prev.zc_contrast, cur.zc_contrast) >= p.zc_flat and zc >= max(p.z_reliable * level, p.light_max)
        light = (zstep < p.return_z_max or flat) and not is_local_change(prev, cur, step, p)
        horizon = p.return_horizon if light else p.lookahead

        def back(i: int, j: int, share: float = p.flash_return) -> bool:
            return came_back(self._frame(i), self._frame(j), step, zc, use_z, share, p.zc_flat, 3.0 * level)

        if min(prev.zc_contrast, cur.zc_contrast) >= p.zc_flat and any(  # plain colours have no structure to jump
                self._zcstep(k) >= max(2.0 * zc, p.dark_z_min) for k in range(t + 1, min(self._n, t + 1 + p.burst_max))):
            return True  # the light jumps here, the structure only a few frames later: the cut is there
        if any(back(t - 1, k) for k in range(t + 1, min(self._n, t + 1 + horizon))):
            return True
        if any(back(k, t) for k in range(max(oldest, t - 1 - horizon), t - 1)):
            return True
        for i in range(max(oldest, t - 1 - p.burst_max), t - 1):
            for j in range(t + 1, min(self._n, i + p.burst_max + 2)):
                if back(i, j):
                    return True
        near = [self._motion_step(i) for i in (t - 1, t + 1) if oldest < i < self._n]
        if near and max(near) > p.iso_max * step:
            # a change of part of the picture that goes on changing: something sweeping across it
            return is_local_change(prev, cur, step, p) or self._excursion(t)
        return False

    def _moved_mad(self, i: int, j: int) -> float:
        """mad of frames i and j after moving i by their global translation (phase correlation), on the overlap."""
        import cv2

        if self._window is None:
            w, h = self.p.small_size
            self._window = cv2.createHanningWindow((w, h), cv2.CV_32F)
        a, b = self._frame(i), self._frame(j)
        (dx, dy), _ = cv2.phaseCorrelate(a.gray, b.gray, self._window)
        rows, cols = overlap(a.gray.shape, (dx, dy))
        h, w = a.gray.shape
        if rows.stop - rows.start < h // 2 or cols.stop - cols.start < w // 2:
            return mad(a.rgb, b.rgb)
        return min(mad(a.rgb, b.rgb), mad(shift(a.rgb, dx, dy)[rows, cols], b.rgb[rows, cols]))

    def _excursion(self, t: int) -> bool:
        """Does the picture from just before t come back within ``excursion_horizon`` frames?

        Forward from ``f[t-1]``, ``f[t-2]`` and backward from ``f[t]`` ..
        ``f[t+3]``: a frame closer than ``excursion_return`` times the
        farthest the picture went in between.
        """
        p = self.p
        oldest = self._n - len(self._frames)

        def returns(i: int, j: int, far: float) -> tuple[bool, float]:
            d = mad(self._frame(i).rgb, self._frame(j).rgb)
            return far > 0 and d < far and self._same_picture(i, j, far, d), max(far, d)

        for i in (t - 1, t - 2):
            if i < oldest:
                continue
            far = 0.0
            for j in range(t, min(self._n, i + 1 + p.excursion_horizon)):
                back, far = returns(i, j, far)
                if back:
                    return True
        for j in range(t, min(self._n, t + 4)):
            far = 0.0
            for i in range(t - 1, max(oldest, j - p.excursion_horizon) - 1, -1):
                back, far = returns(i, j, far)
                if back:
                    return True
        return False

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
            if not score and mad(a.rgb, b.rgb) >= p.grad_min:
                steady = max(inside) <= p.grad_step_max * mad(a.rgb, b.rgb)
                lo = max(c - 2 * h, oldest, 0)
                motion_a = self._translation(lo, c - h) if steady or self._moving(c - h) else (0.0, 0.0)
                motion_b = self._translation(c + h, c + 2 * h) if steady or self._moving(c + h + 1) else (0.0, 0.0)
                if steady or max(map(abs, motion_a + motion_b)) >= p.motion_fast * h:
                    # under fast camera motion every step is large: the moved images decide
                    score = compensated_blend(a0, a, m, b, b1, motion_a, motion_b, p)
                if not score and steady:
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

    def _moving(self, i: int) -> bool:
        """Is the camera moving fast at frame i (the step there at least ``cut_min``: worth measuring)?"""
        return self._step(i) >= self.p.cut_min

    def _is_flash(self, m: int) -> bool:
        """Is the uniform frame m no fade: part of a flash, or a plain grey picture entered or left at once?

        A fade through black or white may be fast on one side, never on both:
        at most 3 uniform frames entered and left in one step each are a
        flash (a flash right after a cut would otherwise pass for a fade and
        replace the cut).  A uniform frame neither dark nor bright (mean luma
        within ``fade_grey`` of mid-grey) is the middle of a fade only if the
        picture dissolves into it and out of it: a plain sky entered by a cut
        is no fade.  Nor is a uniform frame entered or left by a change of
        part of the picture (:func:`is_local_change`: something dark sweeping
        across the frame until it fills it).
        """
        p, oldest = self.p, self._n - len(self._frames)
        flat = lambda i: oldest <= i < self._n and self._frame(i).contrast <= p.fade_flat  # noqa: E731
        grey = abs(self._frame(m).mean - 127.5) < p.fade_grey
        longest = 2 * p.max_half if grey else 3
        u0, u1 = m, m
        while u1 - u0 < 2 * p.max_half and flat(u0 - 1):
            u0 -= 1
        while u1 - u0 < 2 * p.max_half and flat(u1 + 1):
            u1 += 1
        if u0 - 4 < max(oldest, 0) or u1 + 4 >= self._n:
            return False
        if any(is_local_change(self._frame(i - 1), self._frame(i), self._step(i), p)
               for i in (u0 - 1, u0, u1 + 1, u1 + 2) if self._step(i) >= p.dark_step_min):
            return True  # covered and uncovered by something sweeping across, not faded
        if self._swept(u0, u1):
            return True
        if u1 - u0 >= longest:
            return False
        # abrupt: the last step carries most of the change over 2 or 4 frames (2: a cut may lie 3 frames away)
        into = any(self._step(u0) >= p.flash_abrupt * mad(self._frame(u0 - k).rgb, self._frame(u0).rgb) for k in (2, 4))
        out = any(self._step(u1 + 1) >= p.flash_abrupt * mad(self._frame(u1).rgb, self._frame(u1 + k).rgb)
                  for k in (2, 4))
        return (into or out) if grey else (into and out)

    def _swept(self, u0: int, u1: int) -> bool:
        """Is the uniform run [u0, u1] reached or left by an edge sweeping across the picture (no fade)?

        The ramp into the run is the frames before it whose luma contrast
        keeps falling towards it, the ramp out those after it whose contrast
        keeps rising; a fade dims or lights the whole picture at every step
        of its ramp, something passing in front of the camera changes part of
        it (:func:`is_local_change`).  A ramp of at least 3 steps with at
        least half of them local is a sweep.
        """
        p, oldest = self.p, self._n - len(self._frames)
        con = lambda i: self._frame(i).contrast  # noqa: E731
        ramps, i, j = [], u0, u1
        while i - 1 > oldest and u0 - i < 2 * p.max_half and con(i - 1) > con(i) + 0.5:
            i -= 1
        ramps.append(range(i + 1, u0 + 1))
        while j + 1 < self._n and j - u1 < 2 * p.max_half and con(j + 1) > con(j) + 0.5:
            j += 1
        ramps.append(range(u1 + 1, j + 1))
        for ramp in ramps:
            steps = [k for k in ramp if self._step(k) >= p.dark_step_min]
            local = sum(is_local_change(self._frame(k - 1), self._frame(k), self._step(k), p) for k in steps)
            if len(steps) >= 3 and 2 * local >= len(steps):
                return True
        return False

    def _close_run(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        if run.kind == "fade" and self._is_flash(run.best):
            return
        start = max(0, min(run.first, run.best - run.best_half))
        end = max(run.last, run.best + run.best_half) + 1
        if any(self._same_around(run.best - h, run.best + h + 1) for h in sorted({*self.p.half_widths, run.best_half})
               if run.best - h >= start):
            return  # the picture before it comes back after it: something passed in front, or the light dipped
        self._add_gradual(Boundary(run.best, run.kind, start, end))

    def _add_gradual(self, new: Boundary, core: tuple[int, int] | None = None) -> None:
        """Hold a gradual boundary, merged with held ones it overlaps (one transition seen as several runs).

        ``core``: the frames ``[start, end)`` of ``new`` that decide what it
        overlaps (default: its whole range).  A long dissolve's range is its
        whole test window, which can reach a dissolve next to it.
        """
        if new.kind == "dissolve" and self._cut_spikes_in(new):
            return  # a cut into a shot that keeps changing fast: the cut is the boundary
        m = self.p.min_shot_frames
        lo, hi = core or (new.start, new.end)
        keep = []
        for b in self._pending:
            if b.kind != "cut" and lo < b.end + m and b.start < hi + m:
                new = merge_gradual(b, new) if b.start <= new.start else merge_gradual(new, b)
            else:
                keep.append(b)
        self._pending = keep + [new]

    def _cut_spikes_in(self, g: Boundary) -> bool:
        """Is a cut already found inside the dissolve ``g`` a jump its range cannot explain?

        Its step is at least twice every step before it in the range and 1.5
        times every step after it: a dissolve changes the picture a little at
        every frame, rising and falling smoothly, while a cut into a shot that
        keeps changing fast (a texture evolving, decaying motion) can pass the
        blend tests around it but starts with one jump.
        """
        first = self._n - len(self._long_steps)
        lo, hi = max(g.start + 1, first), min(g.end, self._n)
        for b in self._pending:
            if b.kind != "cut" or not lo <= b.frame < hi:
                continue
            step = self._long_steps[b.frame - first]
            before = [self._long_steps[i - first] for i in range(lo, b.frame)]
            after = [self._long_steps[i - first] for i in range(b.frame + 1, hi)]
            if before and after and step >= 2.0 * max(before) and step >= 1.5 * max(after):
                return True
        return False

    def _same_around(self, start: int, end: int) -> bool:
        """Is the picture just before frames [start, end) the one just after them (no transition: something
        passed in front of the camera, or the light dipped and came back)?

        True when some frame of ``start - 3 .. start - 1`` and some of
        ``end .. end + 2`` differ by less than ``excursion_return`` times the
        farthest any frame in between is from the first (the nearest two also
        after moving one onto the other: the camera may have moved meanwhile).
        """
        oldest = self._n - len(self._frames)
        before = [i for i in range(start - 3, start) if oldest <= i]
        after = [j for j in range(end, end + 3) if j < self._n]
        for i in before:
            a = self._frame(i)
            far = max((mad(a.rgb, self._frame(k).rgb) for k in range(start, min(end, self._n))), default=0.0)
            if any(self._same_picture(i, j, far) for j in after):
                return True
        return False

    def _same_picture(self, i: int, j: int, far: float, d: float | None = None) -> bool:
        """Do frames i and j show the same picture, seen against a change of ``far`` in between?

        Closer than ``excursion_return * far`` in colour, as they are or after
        moving one onto the other (the camera may have moved meanwhile), and,
        where neither is flat, alike in structure (quarter-size structure
        closer than ``same_z_max``: a half-faded shot can match another in
        colour).
        """
        p = self.p
        a, b = self._frame(i), self._frame(j)
        d = mad(a.rgb, b.rgb) if d is None else d
        if d >= p.excursion_return * far and not (d < far and self._moved_mad(i, j) < p.excursion_return * far):
            return False
        return min(a.zc_contrast, b.zc_contrast) < p.zc_flat or mad(a.zc, b.zc) < p.same_z_max

    # -- long dissolves -----------------------------------------------------
    def _coarse_at(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(quarter-size RGB, quarter-size structure, half-size luma) of frame i."""
        return self._coarse[i - (self._n - len(self._coarse))]

    def _coarse_motion(self, i: int, j: int) -> tuple[float, float]:
        """Global translation from frame i to frame j, in quarter-size pixels (phase correlation at half size)."""
        import cv2

        if self._half_window is None:
            w, h = self.p.small_size
            self._half_window = cv2.createHanningWindow((w // 2, h // 2), cv2.CV_32F)
        (x, y), _ = cv2.phaseCorrelate(self._coarse_at(i)[2], self._coarse_at(j)[2], self._half_window)
        return x / 2, y / 2

    def _test_long(self, c: int) -> None:
        """Long dissolves (``long_half_widths``, 2-3 s) centred at c, on quarter-size frames."""
        p = self.p
        oldest = self._n - len(self._coarse)
        best_score, best_h = 0.0, 0
        for h in p.long_half_widths:
            if c - 2 * h < max(oldest, 0):
                continue
            (a, za, _), (b, zb, _) = self._coarse_at(c - h), self._coarse_at(c + h)
            d_ab = mad(a, b)
            if d_ab < p.long_min or (mad(za, zb) < p.long_z_min and d_ab < 4 * p.long_min):
                continue  # the two ends must differ in structure (similar colours) or clearly in colour
            m = self._coarse_at(c)[0]
            if mad(m, 0.5 * (a + b)) > 2 * p.long_blend_max * d_ab:
                continue  # cheap test first: the middle is nothing like a blend, even with slow motion
            first = self._n - len(self._long_steps)
            max_step = max(itertools.islice(self._long_steps, c - h + 1 - first, c + h + 1 - first))
            frames = [self._coarse_at(i)[0] for i in (c - 2 * h, c - h, c - h // 2, c, c + h // 2, c + h, c + 2 * h)]
            score = long_blend_score(*frames, max_step, p)
            if not score and max_step <= p.grad_step_max * d_ab:  # the same under the shots' slow camera moves
                score = long_blend_score(*frames, max_step, p, self._coarse_motion(c - 2 * h, c - h),
                                         self._coarse_motion(c + h, c + 2 * h))
            if score > best_score:
                best_score, best_h = score, h
        run = self._long_run
        if not best_score:
            if run is not None and c - run.last > 1:
                self._close_long_run()
            return
        if run is None:
            self._long_run = _Run("dissolve", c, c, c, best_score, best_h)
            return
        run.last = c
        if best_score > run.best_score:
            run.best, run.best_score, run.best_half = c, best_score, best_h

    def _close_long_run(self) -> None:
        run, self._long_run = self._long_run, None
        if run is None:
            return
        start = max(0, min(run.first, run.best - run.best_half))
        end = max(run.last, run.best + run.best_half) + 1
        # merged only with what overlaps its core: the window's outer quarters may reach the next transition
        core = (max(0, min(run.first, run.best - run.best_half // 2)), max(run.last, run.best + run.best_half // 2) + 1)
        self._add_gradual(Boundary(run.best, "dissolve", start, end), core)

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
