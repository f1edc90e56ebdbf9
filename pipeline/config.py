"""The one typed configuration object that flows from the CLI down.

Defaults live here and nowhere else.  CLI flags default to ``None`` and
override a field only when given (:func:`Config.with_overrides`).  Stages
receive the sub-config they need (``cfg.shots``, ``cfg.clips`` ...), never
the whole object.

``Config.feature_hash()`` covers every field that changes stored features;
a shard whose recorded hash differs is recomputed on the next run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from reelsim.errors import UsageError

MODALITIES = ("visual", "audio", "image", "text")


@dataclass(frozen=True)
class DecodeConfig:
    """How videos are decoded for analysis.

    analysis_short_side : frames are scaled inside the decoder so that their
        shorter side is this many pixels (aspect kept, even sizes).
    audio_rate : audio is decoded to mono at this rate, in Hz.
    """

    analysis_short_side: int = 160
    audio_rate: int = 16000


@dataclass(frozen=True)
class ShotConfig:
    """Shot boundary detection and scene grouping.

    detector : name in :data:`reelsim.extractors.shots.DETECTORS`.
    threshold : the detector's cut threshold (ContentDetector: 0-255 scale).
    min_shot_frames : no shot shorter than this many frames (except at the end).
    scene_similarity : consecutive shots whose keyframe colour-histogram
        correlation is at least this belong to one scene.
    scene_window : a shot also joins the current scene when it matches any of
        the previous ``scene_window`` shots of that scene (A-B-A-B dialogue).
    """

    detector: str = "content"
    threshold: float = 27.0
    min_shot_frames: int = 8
    scene_similarity: float = 0.80
    scene_window: int = 3


@dataclass(frozen=True)
class ClipConfig:
    """How clips for the 3D-CNN are sampled inside each shot.

    clip_len : frames per clip (T); ``None`` = the video model's own clip
        length (8 for the default model, 16 for torchvision's Kinetics models).
    frame_stride : take every ``frame_stride``-th frame inside a clip.
    hop_s : a new clip starts every ``hop_s`` seconds inside a shot.
    max_clips_per_shot : cap on clips per shot (long shots).
    """

    clip_len: int | None = None
    frame_stride: int = 2
    hop_s: float = 2.0
    max_clips_per_shot: int = 16


@dataclass(frozen=True)
class ModelConfig:
    """Which registered extractor computes each modality, and where.

    device : ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    batch_size : clips (or images, texts) per forward pass.
    video_weights / audio_weights : explicit weights files for models that
        need downloaded weights (see ``reelsim models``).
    """

    visual: str = "effnet-lite0-inflated"
    audio: str = "logmel-stats"
    image: str = "effnet-lite0"
    text: str = "minilm-l6-v2"
    video_weights: str | None = None
    audio_weights: str | None = None
    device: str = "auto"
    batch_size: int = 8


def _default_weights() -> dict[str, float]:
    return {"visual": 1.0, "audio": 0.5, "image": 1.0, "text": 1.0}


@dataclass(frozen=True)
class FusionConfig:
    """How per-modality embeddings become one similarity score.

    weights : modality -> non-negative weight.
    k : neighbours kept per item in the written lists.
    oversample : FAISS returns ``oversample * k`` candidates that are then
        scored exactly (see docs/similarity.md).
    pca_dim : per-modality PCA learned on the catalog: a modality with more
        than ``pca_dim`` dimensions is projected onto its top ``pca_dim``
        principal components (None: off). Stored with the catalog, so queries
        and added items get the same transform.
    whiten : with ``pca_dim``, divide each component by its standard deviation.
    index : ``auto`` (by size, see docs/similarity.md "Index choice"), a kind
        (``exact``, ``ivf``, ``hnsw``, ``ivfpq``) or a FAISS index_factory
        string such as ``IVF4096,Flat``.
    memory_budget_gb : fused vectors of one index above this size (GiB) are
        compressed (OPQ + IVF-PQ) by ``auto``.
    knn_batch : queries per batch of the kNN-graph job (one checkpoint file each).
    dedup : collapse near-duplicates: a candidate whose fused score with an
        already listed neighbour is at least this is dropped (None: off).
    mmr : maximal-marginal-relevance lambda in [0, 1] (None: off; 1 = plain ranking).
    blocklist : phrases; items whose text embedding has cosine >= ``blocklist_threshold``
        with one of them never appear as neighbours.
    blocklist_threshold : cosine of the text model (MiniLM) for ``blocklist``.
    lists_formats : files written under STORE/lists/: any of ``parquet``, ``jsonl``, ``hdf5``.
    """

    weights: dict[str, float] = field(default_factory=_default_weights)
    k: int = 10
    oversample: int = 5
    pca_dim: int | None = None
    whiten: bool = False
    index: str = "auto"
    memory_budget_gb: float = 4.0
    knn_batch: int = 16384
    dedup: float | None = None
    mmr: float | None = None
    blocklist: tuple[str, ...] = ()
    blocklist_threshold: float = 0.5
    lists_formats: tuple[str, ...] = ("parquet", "jsonl")


@dataclass(frozen=True)
class Config:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    models: ModelConfig = field(default_factory=ModelConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def feature_hash(self) -> str:
        """sha256 (16 hex chars) of every setting that changes stored features.

        Device and batch size are excluded: they change speed, not results
        beyond floating-point noise.
        """
        d = self.to_dict()
        d.pop("fusion")
        d["models"].pop("device")
        d["models"].pop("batch_size")
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def with_overrides(self, **sections: dict) -> "Config":
        """A copy with ``section={field: value}`` overrides; ``None`` values are ignored."""
        new = {}
        for name, values in sections.items():
            current = getattr(self, name)
            given = {k: v for k, v in values.items() if v is not None}
            unknown = set(given) - {f.name for f in dataclasses.fields(current)}
            if unknown:
                raise UsageError(f"unknown {name} settings: {sorted(unknown)}")
            new[name] = dataclasses.replace(current, **given)
        return dataclasses.replace(self, **new)


def parse_weights(text: str) -> dict[str, float]:
    """Parse ``visual=1,audio=0.5`` into a full weights dict.

    Modalities not named keep their defaults.

    Examples
    --------
    >>> parse_weights("audio=0,text=2")["text"]
    2.0
    """
    weights = _default_weights()
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in MODALITIES:
            raise UsageError(
                f"bad --weights entry {part!r}: expected MODALITY=NUMBER with MODALITY in {', '.join(MODALITIES)}"
            )
        try:
            w = float(value)
        except ValueError:
            raise UsageError(f"bad --weights value in {part!r}: not a number") from None
        if not w >= 0:
            raise UsageError(f"bad --weights value in {part!r}: must be >= 0")
        weights[name] = w
    if not any(weights.values()):
        raise UsageError("--weights: at least one modality needs a positive weight")
    return weights
