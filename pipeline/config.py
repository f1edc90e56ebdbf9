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
    batch_size : clips (or images, texts, audio windows) per forward pass.
    video_weights / audio_weights : explicit weights files for models that
        need downloaded weights (see ``reelsim models``).
    precision : ``auto`` (bf16 autocast on CUDA, fp16 where the GPU lacks
        bf16; fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``; for the video and
        audio models.  Recorded per modality in provenance.
    prefetch_batches : decoding and shot segmentation run in a thread at most
        this many batches of clips ahead of the video model (a bounded queue).
    """

    visual: str = "effnet-lite0-inflated"
    audio: str = "logmel-stats"
    image: str = "effnet-lite0"
    text: str = "minilm-l6-v2"
    video_weights: str | None = None
    audio_weights: str | None = None
    device: str = "auto"
    batch_size: int = 8
    precision: str = "auto"
    prefetch_batches: int = 2


def _default_weights() -> dict[str, float]:
    return {"visual": 1.0, "audio": 0.5, "image": 1.0, "text": 1.0}


@dataclass(frozen=True)
class FusionConfig:
    """How per-modality embeddings become one similarity score.

    weights : modality -> non-negative weight.
    k : neighbours kept per item in the written lists.
    oversample : FAISS returns ``oversample * k`` candidates that are then
        scored exactly (see docs/similarity.md).
    """

    weights: dict[str, float] = field(default_factory=_default_weights)
    k: int = 10
    oversample: int = 5


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

        Device, batch size, precision and prefetch depth are excluded: they
        change speed, not results beyond floating-point noise (precision is
        recorded in each modality's provenance).
        """
        d = self.to_dict()
        d.pop("fusion")
        for speed_only in ("device", "batch_size", "precision", "prefetch_batches"):
            d["models"].pop(speed_only)
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
