"""Shot boundaries: the detector protocol, its output type, its registry, and scene grouping.

A detector is fed our own decoded frames, one at a time, in order; it never
opens the video itself (:class:`ShotDetector`, after scenedetect's
``SceneDetector``). Detectors register a factory ``(ShotConfig, fps) ->
detector`` under a name with :func:`register_detector`; the built-in ones
live in :mod:`reelsim.extractors.transitions` (``reelsim``) and
:mod:`reelsim.extractors.scenedetect_detectors` (``content``, ``adaptive``),
and :mod:`reelsim.extractors.detectors` builds one by name.

A detector that runs a model registers a ``provenance() -> dict`` with it
(model, weights file, weights sha256); :func:`detector_provenance` gives it
for a configuration without building the detector.

Scenes group consecutive shots (:func:`group_scenes`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Protocol

import numpy as np

from reelsim.config import ShotConfig
from reelsim.errors import ParameterError

#: how a shot was entered
TRANSITION_KINDS = ("start", "cut", "dissolve", "fade")


class Boundary(NamedTuple):
    """A shot boundary reported by a detector.

    frame : first frame of the new shot (for a gradual transition, a frame
        inside it: the darkest frame of a fade, the middle of a dissolve).
    kind : ``"cut"``, ``"dissolve"`` or ``"fade"``.
    start, end : the transition's frames ``[start, end)``; for a cut
        ``start == end == frame``.
    """

    frame: int
    kind: str = "cut"
    start: int = -1
    end: int = -1

    @classmethod
    def of(cls, b) -> "Boundary":
        """A Boundary from a detector's output: an int frame is a hard cut."""
        if isinstance(b, Boundary):
            return b
        f = int(b)
        return cls(f, "cut", f, f)


class ShotDetector(Protocol):
    """What the clip sampler (:class:`reelsim.pipeline.segment.ShotClipSampler`) needs of a detector.

    latency : upper bound, in frames, on how late a boundary at frame ``c`` is
        reported (no later than while processing frame ``c + latency``).
    """

    latency: int

    def process(self, index: int, rgb: np.ndarray) -> list[Boundary | int]:
        """Consume frame ``index`` (uint8 (H, W, 3)); boundaries found so far (an int is a hard cut)."""

    def finish(self, n_frames: int) -> list[Boundary | int]:
        """Boundaries still held back at the end of a stream of ``n_frames`` frames."""


#: name -> factory(cfg: ShotConfig, fps: float) -> ShotDetector
DETECTORS: dict[str, Callable[[ShotConfig, float], ShotDetector]] = {}
#: name -> provenance() -> dict, for detectors that run a model (weights file, sha256)
PROVENANCE: dict[str, Callable[[], dict]] = {}


def register_detector(name: str, *, provenance: Callable[[], dict] | None = None):
    """Decorator: register a detector factory ``(cfg: ShotConfig, fps: float) -> ShotDetector`` as ``name``.

    ``provenance``: for a detector that runs a model, a function giving what
    the shard records about it (:func:`detector_provenance`).
    """
    def deco(factory):
        if name in DETECTORS:
            raise ValueError(f"shot detector {name!r} registered twice")
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
        raise ParameterError(f"expected uint8 (H, W, 3) frame, got {rgb.dtype} {rgb.shape}")
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
