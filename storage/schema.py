"""What analysing one item produces: the records a shard stores (see :mod:`reelsim.storage.shards`).

The pipeline fills them; the shard writer, exports and readers depend only on
these types, so the on-disk schema has one description.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from reelsim.storage.manifest import Item


@dataclass
class Embedding:
    """One modality's features for an item.

    item : float32 (D,) pooled item embedding.
    shot : float32 (S, D) per-shot embeddings, or None (products, text).
    provenance : model, weights, weights_sha256, input size, ...
    """

    item: np.ndarray
    provenance: dict
    shot: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class VideoStructure:
    """Shots and scenes of a video.

    shots : int64 (S, 2) [start_frame, end_frame), end exclusive.
    shot_times : float64 (S, 2) [start_s, end_s] from presentation timestamps.
    scenes : int64 (C, 2) [start_shot, end_shot), end exclusive.
    keyframes : int64 (S,) frame index of each shot's keyframe.
    transitions : (S,) str, how each shot was entered: ``start`` (the first
        shot), ``cut``, ``dissolve`` or ``fade``.
    transition_frames : int64 (S, 2) the entering transition's frames
        [start, end), end exclusive (``start == end`` for a cut).
    params : the shot detector and scene-grouping settings that produced them.
    decode_errors : corrupt packets skipped while decoding the video and its audio.
    keyframe_jpegs : S JPEG thumbnails of the keyframes, in shot order
        (empty when thumbnails are off, ``ThumbnailConfig.max_side == 0``).
    """

    fps: float
    n_frames: int
    width: int
    height: int
    duration_s: float
    shots: np.ndarray
    shot_times: np.ndarray
    scenes: np.ndarray
    keyframes: np.ndarray
    transitions: np.ndarray
    transition_frames: np.ndarray
    params: dict = field(default_factory=dict)
    keyframe_jpegs: list[bytes] = field(default_factory=list)
    decode_errors: int = 0


@dataclass
class RegionFeatures:
    """Region vectors of a video's shots, for copy detection (:mod:`reelsim.pipeline.regions`).

    vectors : float16 (N, D) one unit vector per region (CNN features and colour thumbnail).
    shot : int32 (N,) the shot each region belongs to.
    kind : int8 (N,) index into the region kinds listed in ``provenance["kinds"]``.
    boxes : float32 (N, 4) x0, y0, x1, y1 of each region in fractions of the frame.
    provenance : model, weights, crop size, thumbnail side, the kinds' names.
    """

    vectors: np.ndarray
    shot: np.ndarray
    kind: np.ndarray
    boxes: np.ndarray
    provenance: dict = field(default_factory=dict)


@dataclass
class ItemFeatures:
    """Everything analysed for one item; ``image_jpeg`` is a thumbnail of the product image (or None).

    ``regions``: the region vectors of a video's shots (None for other items, and when regions are off).
    """

    item: Item
    embeddings: dict[str, Embedding]
    video: VideoStructure | None = None
    regions: RegionFeatures | None = None
    image_jpeg: bytes | None = None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
