"""The one typed configuration object that flows from the CLI down.

Defaults live here and nowhere else.  CLI flags default to ``None`` and
override a field only when given (:func:`Config.with_overrides`).  Stages
receive the sub-config they need (``cfg.shots``, ``cfg.clips`` ...), never
the whole object.

Every section checks its values when it is built (``__post_init__``), so a
bad value from a flag, ``--set`` or a file is a :class:`UsageError` before
any work starts. (Which model and detector names exist is checked against
their registries by the CLI, also before any work.)

``Config.feature_hash()`` covers every field that changes stored features;
a shard whose recorded hash differs is recomputed on the next run.

This module is the root of reelsim's layers (with ``errors.py``): it imports
nothing of reelsim but the errors, and :data:`MODALITIES` is defined here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from reelsim.errors import UsageError

#: The modalities an item can have, in the order they are fused and listed.
MODALITIES = ("visual", "audio", "image", "text")
#: List file formats (``--lists-format``); file names: :data:`reelsim.storage.layout.LIST_FILES`.
LIST_FORMATS = ("parquet", "jsonl", "hdf5")
#: ``--device`` values besides ``cuda:N``.
DEVICES = ("auto", "cpu", "cuda")
#: ``--precision`` values.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: ``jobs.cross_item`` values (the GPU path: cross-item batches).
CROSS_ITEM = ("auto", "on", "off")
#: ``jobs.clip_transport`` values.
CLIP_TRANSPORTS = ("auto", "shm", "dask")


def _require(section: str, name: str, value, ok: bool, expected: str) -> None:
    """Raise :class:`UsageError` naming ``section.name`` unless ``ok``."""
    if not ok:
        raise UsageError(f"{section}.{name} must be {expected}, got {value!r}")


#: the largest integer a setting takes (int32: FAISS, torch and HDF5 take many of them as C ints)
INT_MAX = 2**31 - 1
#: settings with another largest value
INT_MAX_OF = {"learn.seed": 2**32 - 1}


def check_numbers(section: str, obj) -> None:
    """Every number of a section is in range: an integer between ``-INT_MAX - 1`` and :data:`INT_MAX` (or its
    bound in :data:`INT_MAX_OF`), a float finite. The sections call it first in ``__post_init__``.

    Examples
    --------
    >>> LearnConfig(seed=10**23)
    Traceback (most recent call last):
    reelsim.errors.UsageError: learn.seed must be an integer of at most 4294967295, got 100000000000000000000000
    """
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, bool):
            continue
        if isinstance(v, int):
            hi = INT_MAX_OF.get(f"{section}.{f.name}", INT_MAX)
            _require(section, f.name, v, -hi - 1 <= v <= hi, f"an integer of at most {hi}")
        elif isinstance(v, float):
            _require(section, f.name, v, math.isfinite(v), "a finite number")


def _at_least(section: str, obj, minimum: float, *names: str, optional: bool = False) -> None:
    for name in names:
        v = getattr(obj, name)
        if optional and v is None:
            continue
        _require(section, name, v, isinstance(v, (int, float)) and not isinstance(v, bool) and v >= minimum,
                 f">= {minimum:g}")


@dataclass(frozen=True)
class DecodeConfig:
    """How videos are decoded for analysis.

    analysis_short_side : frames are scaled inside the decoder so that their
        shorter side is this many pixels (aspect kept, even sizes).
    audio_rate : audio is decoded to mono at this rate, in Hz.
    skip_loop_filter : skip the in-loop deblocking filter of H.264/HEVC while
        decoding for analysis (libavcodec ``skip_loop_filter=all``).  Frames
        then differ slightly from a full decode (about 1 grey level of 255 on
        average on bikes.mp4) and decoding is cheaper; measured effect on speed
        and on shot F1: ``benchmarks/shots.py``.
    """

    analysis_short_side: int = 160
    audio_rate: int = 16000
    skip_loop_filter: bool = False

    def __post_init__(self):
        check_numbers("decode", self)
        _at_least("decode", self, 16, "analysis_short_side")
        _at_least("decode", self, 1000, "audio_rate")


@dataclass(frozen=True)
class ShotConfig:
    """Shot boundary detection and scene grouping.

    detector : name in :data:`reelsim.extractors.shots.DETECTORS`: ``reelsim``
        (cuts, dissolves, fades, flash-proof; :mod:`reelsim.extractors.transitions`),
        or scenedetect's ``content`` / ``adaptive``.
    threshold : cut threshold of the scenedetect detectors (ContentDetector: 0-255 scale).
    cut_min : ``reelsim`` detector: smallest frame-to-frame mean absolute RGB
        difference (0-255, on 64x36 copies of the frames) that can be a cut.
    cut_ratio : ``reelsim`` detector: a cut's difference must also be this many
        times the local motion level around it.
    gradual_min : ``reelsim`` detector: smallest difference between the two ends
        of a dissolve or fade.
    gradual_blend_max : ``reelsim`` detector: how far (relative) the middle frame
        of a dissolve may be from the mean of its two ends.
    min_shot_frames : no shot shorter than this many frames (except at the end).
    scene_similarity : consecutive shots whose keyframe colour-histogram
        correlation is at least this belong to one scene.
    scene_window : a shot also joins the current scene when it matches any of
        the previous ``scene_window`` shots of that scene (A-B-A-B dialogue).
    scene_audio_db : consecutive shots whose mean log-mel spectra differ by at
        most this many dB (continuous sound) are in one scene; 0 turns the
        audio rule off.  Used with the ``logmel-stats`` audio model.
    """

    detector: str = "reelsim"
    threshold: float = 27.0
    cut_min: float = 12.0
    cut_ratio: float = 2.0
    gradual_min: float = 12.0
    gradual_blend_max: float = 0.22
    min_shot_frames: int = 8
    scene_similarity: float = 0.80
    scene_window: int = 3
    scene_audio_db: float = 3.0

    def __post_init__(self):
        check_numbers("shots", self)
        _require("shots", "detector", self.detector, isinstance(self.detector, str) and bool(self.detector),
                 "a detector name")
        _at_least("shots", self, 0, "threshold", "cut_min", "gradual_min", "scene_audio_db")
        _at_least("shots", self, 1e-9, "cut_ratio", "gradual_blend_max")
        _at_least("shots", self, 1, "min_shot_frames", "scene_window")
        _require("shots", "scene_similarity", self.scene_similarity, 0 <= self.scene_similarity <= 1, "in [0, 1]")


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

    def __post_init__(self):
        check_numbers("clips", self)
        _at_least("clips", self, 1, "clip_len", optional=True)
        _at_least("clips", self, 1, "frame_stride", "max_clips_per_shot")
        _at_least("clips", self, 1e-3, "hop_s")


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

    def __post_init__(self):
        check_numbers("models", self)
        for name in ("visual", "audio", "image", "text"):
            v = getattr(self, name)
            _require("models", name, v, isinstance(v, str) and bool(v), "a model name (see `reelsim models`)")
        _require("models", "device", self.device, self.device in DEVICES or str(self.device).startswith("cuda:"),
                 "auto, cpu, cuda or cuda:N")
        _require("models", "precision", self.precision, self.precision in PRECISIONS, " or ".join(PRECISIONS))
        _at_least("models", self, 1, "batch_size", "prefetch_batches")


@dataclass(frozen=True)
class ThumbnailConfig:
    """Small JPEG pictures stored in each shard for people to look at (``reelsim report``).

    max_side : longest side of a thumbnail in pixels (keyframes and product
        images are shrunk, never enlarged); 0 stores none.
    quality : JPEG quality, 1-95.
    """

    max_side: int = 160
    quality: int = 80

    def __post_init__(self):
        check_numbers("thumbnails", self)
        _at_least("thumbnails", self, 0, "max_side")
        _require("thumbnails", "quality", self.quality, isinstance(self.quality, int) and 1 <= self.quality <= 95,
                 "an integer in 1..95")


@dataclass(frozen=True)
class RegionConfig:
    """Region vectors of each shot, for copy detection (``reelsim matches``; docs/copies.md).

    enabled : describe regions of each shot's keyframe besides the whole
        frame (the picture inside bars, its centre, a 9:16 strip, halves,
        quadrants, insets found in the frame), so a picture-in-picture, a
        split-screen panel, a letterboxed or re-framed copy can be matched
        to its source.
    size : side in pixels of the square each region is scaled to for the
        image model (a multiple of 32).
    thumb : side in pixels of each region's colour thumbnail.
    """

    enabled: bool = True
    size: int = 96
    thumb: int = 8

    def __post_init__(self):
        check_numbers("regions", self)
        _require("regions", "enabled", self.enabled, isinstance(self.enabled, bool), "true or false")
        _require("regions", "size", self.size, isinstance(self.size, int) and self.size >= 32 and self.size % 32 == 0,
                 "a multiple of 32, at least 32")
        _require("regions", "thumb", self.thumb, isinstance(self.thumb, int) and 2 <= self.thumb <= 32,
                 "an integer in 2..32")


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
        with one of them never appear as neighbours, in any space or output. None (the
        default): the store's blocklist, as the last lists job set it (none in a new
        store); ``()`` clears it (``--no-blocklist``).
    blocklist_threshold : cosine of the text model (MiniLM) for ``blocklist``.
    lists_formats : files written under STORE/lists/: any of ``parquet``, ``jsonl``, ``hdf5``.
    device : where the kNN-graph job searches: ``auto`` (a CUDA GPU when
        present), ``cpu`` or ``cuda`` / ``cuda:N``. On a GPU every modality
        group below 10^7 items is searched exactly there
        (:mod:`reelsim.similarity.blocked`); the lists are the same exact
        re-scored lists.
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
    blocklist: tuple[str, ...] | None = None
    blocklist_threshold: float = 0.5
    lists_formats: tuple[str, ...] = ("parquet", "jsonl")
    device: str = "auto"

    def __post_init__(self):
        check_numbers("fusion", self)
        w = check_weights(self.weights)
        if not any(w.values()):
            raise UsageError("fusion.weights: at least one modality needs a positive weight")
        object.__setattr__(self, "weights", w)
        _at_least("fusion", self, 1, "k", "oversample", "knn_batch")
        _at_least("fusion", self, 1, "pca_dim", optional=True)
        _require("fusion", "memory_budget_gb", self.memory_budget_gb, self.memory_budget_gb > 0, "positive")
        _require("fusion", "index", self.index, isinstance(self.index, str) and bool(self.index.strip()),
                 "auto, a kind or a FAISS factory string")
        check_range("fusion.dedup", self.dedup, -1, 1)
        check_range("fusion.mmr", self.mmr, 0, 1)
        check_range("fusion.blocklist_threshold", self.blocklist_threshold, -1, 1)
        if self.blocklist is not None:
            object.__setattr__(self, "blocklist", tuple(self.blocklist))
        formats = tuple(self.lists_formats)
        _require("fusion", "lists_formats", self.lists_formats, bool(formats) and set(formats) <= set(LIST_FORMATS),
                 f"some of {', '.join(LIST_FORMATS)}")
        object.__setattr__(self, "lists_formats", formats)
        _require("fusion", "device", self.device, self.device in DEVICES or str(self.device).startswith("cuda:"),
                 "auto, cpu, cuda or cuda:N")


@dataclass(frozen=True)
class LimitConfig:
    """How much broken or oversized input reelsim accepts, and how it repairs what it accepts.

    These settings decide whether an input is used, not what is computed from
    one that is: they are left out of :meth:`Config.feature_hash`.

    max_image_pixels : an image larger than this (width x height) is refused
        before it is decoded (a 20 KB PNG can hold 13000 x 13000 pixels, about
        4 GB of worker memory); 50 megapixels is larger than any product photo.
    max_decode_errors : corrupt packets skipped in one item's video and audio
        streams together (each is counted, reported as ``decode_errors`` and
        warned about); one more and the item fails.
    max_frame_gap_s : two consecutive video frames whose timestamps step
        backwards, or forwards by more than this, are a timestamp jump (a PTS
        discontinuity or wraparound): a warning, and later frames are re-based
        to follow on at the stream's frame rate.
    """

    max_image_pixels: int = 50_000_000
    max_decode_errors: int = 100
    max_frame_gap_s: float = 10.0

    def __post_init__(self):
        check_numbers("limits", self)
        _at_least("limits", self, 1, "max_image_pixels")
        _at_least("limits", self, 0, "max_decode_errors")
        _at_least("limits", self, 1e-3, "max_frame_gap_s")


@dataclass(frozen=True)
class JobConfig:
    """How the batch runs on the cluster (never changes stored features).

    item_timeout_s : seconds one item may run on a worker (from the start of
        its task, model loading on a fresh worker included) before it is
        reported as timed out and its worker is restarted through its nanny;
        0 = no limit.  The default suits videos up to about an hour on CPU.
    batch_timeout_s : on the GPU path, seconds one cross-item batch may run
        on its GPU worker once the worker has its models loaded; a batch still
        running then is cancelled, the worker restarted through its nanny, and
        the batch's items reported as timed out (a re-run does them again);
        0 = no limit.
    max_worker_deaths : an item whose worker process dies this many times
        while running it is reported as failed instead of retried again
        (local clusters; an existing scheduler applies its own
        ``distributed.scheduler.allowed-failures``).
    cross_item : the GPU path (``jobs/gpu_stage.py``, docs/models.md): CPU
        workers decode, detect shots and cut clips; GPU workers embed the
        clips and keyframes of many items in large batches. ``auto`` = on when
        the models run on CUDA (``--device cuda``, or ``auto`` where the driver
        sees CUDA or the cluster has ``GPU`` workers), ``on`` (also on CPU: the
        same code, e.g. in tests), ``off`` (one task per item, as on CPU).
    gpu_batch : clips (or images) per forward pass on the GPU path, and the
        size the driver fills each cross-item batch to.
    clip_transport : how clips reach the GPU worker: ``shm`` (files in
        ``/dev/shm``, memory-mapped; workers on the driver's machine only),
        ``dask`` (Dask's worker-to-worker transfer), ``auto`` (shm when every
        worker runs on the driver's machine, else dask).
    dashboard_address : where a local cluster's Dask dashboard listens.  It
        has no authentication and shows file paths and item ids, so the
        default is this machine only (``127.0.0.1``, a free port); ``:8787``
        opens it to the network (``--dashboard-address``).
    group_size : items without video (products, text-only rows) run as tasks
        of up to this many items, their images and texts embedded as one
        batch per model (:func:`reelsim.jobs.tasks.process_items`); each item
        is still written and reported on its own. Fewer per task when the
        catalog is small, so every worker gets work; 1 = one task per item.
    """

    item_timeout_s: float = 3600.0
    batch_timeout_s: float = 3600.0
    max_worker_deaths: int = 3
    cross_item: str = "auto"
    gpu_batch: int = 256
    clip_transport: str = "auto"
    dashboard_address: str = "127.0.0.1:0"
    group_size: int = 64

    def __post_init__(self):
        check_numbers("jobs", self)
        _at_least("jobs", self, 0, "item_timeout_s", "batch_timeout_s")
        _at_least("jobs", self, 1, "max_worker_deaths", "gpu_batch", "group_size")
        _require("jobs", "cross_item", self.cross_item, self.cross_item in CROSS_ITEM, " or ".join(CROSS_ITEM))
        _require("jobs", "clip_transport", self.clip_transport, self.clip_transport in CLIP_TRANSPORTS,
                 " or ".join(CLIP_TRANSPORTS))
        _require("jobs", "dashboard_address", self.dashboard_address,
                 isinstance(self.dashboard_address, str) and ":" in self.dashboard_address, "HOST:PORT or :PORT")


#: loss functions of the content tower (:data:`reelsim.similarity.towers.LOSSES`)
TOWER_LOSSES = ("self-adversarial", "in-batch", "softmax")


@dataclass(frozen=True)
class LearnConfig:
    """Learning from interactions (docs/learning.md).

    ``reelsim train`` holds out a validation split of the log (each user's last
    ``valid_rows`` of rows, and a share ``valid_cold`` of the warm items with all their
    rows, as if new) and chooses there every learned setting that has no default
    worth trusting: EASE's λ or ELSA's rank and epochs, the tower's epochs (early
    stopping), the content mix, the popularity prior and the score rules of the
    learned and blend spaces (:mod:`reelsim.similarity.calibrate`). The fields
    below are the ranges and limits of those choices, and the training settings.

    warm_model : ``auto`` (EASE when the warm items are at most ``ease_max_items``, else
        ELSA), ``ease`` or ``elsa``.
    ease_max_items : the largest number of warm items EASE is fitted for: it needs about
        24 W² bytes (1.5 GB at 8 000) and O(W³) time.
    ease_lambdas : EASE's λ values tried on validation (the best is then refined by √10 steps).
    ease_keep : EASE weights kept per item (its largest; the rest count as 0).
    elsa_dim : rank r of ELSA's item matrix A (items x r).
    elsa_dims : other ranks tried on validation besides ``elsa_dim`` (each costs a fit).
    elsa_epochs, elsa_batch, elsa_lr : ELSA training (at most ``elsa_epochs``; users per batch;
        NAdam learning rate).
    warm_min_interactions : an item needs at least this many interactions (distinct users)
        to get an ELSA embedding (EASE takes every item with a user).
    tower_dim : dimension of the learned space (the tower's output, L2-normalised).
    tower_hidden : width of each per-modality projection and of the MLP.
    tower_input_dim : a modality with more dimensions is first reduced to this many
        by a fixed PCA learned on the catalog (speed; None: off).
    tower_epochs, tower_batch, tower_lr : step 1 of the cascade (all engagement; at most
        ``tower_epochs``, early-stopped); pairs per batch (at least 2).
    finetune_epochs, finetune_lr : step 2 (high-quality engagement only; at most; 0 epochs: off).
    patience : epochs without a better validation score before ELSA or a tower step stops.
    max_pairs : co-engagement pairs drawn per epoch (a seeded sample when there are more).
    pair_window : two items a user engaged with at most this many positions apart
        (in timestamp order, else file order) form a co-engagement pair.
    loss : ``self-adversarial`` (in-batch negatives re-weighted by the softmax of their
        scores), ``in-batch`` (the same loss, negatives weighted equally) or ``softmax``
        (in-batch sampled softmax, InfoNCE).
    temperature : scores (cosines) are divided by this in the loss.
    adversarial_temperature : negatives are re-weighted by softmax(score / this).
    mask_false_negatives : an in-batch negative that the training log shows co-engaged with
        the anchor (a pair of the training set) is not used as a negative.
    hard_negatives : per anchor, this many hard negatives mined from its raw content
        neighbours that are not co-engaged with it (0: off).
    hard_negative_pool : raw content neighbours searched per anchor for hard negatives.
    quality_events : ``event`` values that mark high-quality engagement (step 2).
    quality_weight : rows with ``weight`` at least this are high quality too (None: off).
    topicality : the learned space's rule is chosen among those whose validation lists keep
        at least this share of their items within the query's 2k most similar items (1: the
        prior only reorders; 0: pure recall, like blend).
    cold_share : ``fair``: in the learned space and in the blend lists of warm items, the prior of items
        without users (cold, or added after training) is set so that on validation they hold the share
        of list slots they have of held-out co-engagement; ``recall``: it is chosen for recall alone (new
        items then get few slots). The blend lists of cold items choose it for recall.
    valid_rows : ``train``: share of each user's last rows held out for validation.
    valid_cold : ``train``: share of the warm items held out, with all their rows, as pseudo-cold.
    valid_queries : ``train``: at most this many validation query items per group (seeded).
    blend_shrink : no longer used (the blend's weights are chosen on validation); kept so
        that settings files that set it still load.
    cold_fraction : ``evaluate``: share of items held out (with all their interactions) as cold.
    test_rows : ``evaluate``: share of each user's last rows held out as the test segment.
    test_users : no longer used (``evaluate`` holds out each user's last rows, ``test_rows``);
        kept so that settings files that set it still load.
    eval_queries : ``evaluate``: at most this many query items per group (seeded sample).
    seed : every random choice (splits, sampling, initialisation).
    device : ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    threads : torch CPU threads while training (0: torch's default, one per core). On the
        shared 2-core development machine one thread trained ELSA 4.5x and the tower 3x
        faster than two (docs/learning.md); results depend on it only in float rounding.
    """

    warm_model: str = "auto"
    ease_max_items: int = 8000
    ease_lambdas: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0)
    ease_keep: int = 256
    elsa_dim: int = 64
    elsa_dims: tuple[int, ...] = ()
    elsa_epochs: int = 5
    elsa_batch: int = 256
    elsa_lr: float = 0.1
    warm_min_interactions: int = 3
    tower_dim: int = 64
    tower_hidden: int = 128
    tower_input_dim: int | None = 128
    tower_epochs: int = 6
    tower_batch: int = 512
    tower_lr: float = 2e-3
    finetune_epochs: int = 2
    finetune_lr: float = 5e-4
    patience: int = 1
    max_pairs: int = 200_000
    pair_window: int = 2
    loss: str = "softmax"
    temperature: float = 0.1
    adversarial_temperature: float = 1.0
    mask_false_negatives: bool = False
    hard_negatives: int = 0
    hard_negative_pool: int = 20
    quality_events: tuple[str, ...] = ("purchase",)
    quality_weight: float | None = None
    topicality: float = 0.8
    cold_share: str = "fair"
    valid_rows: float = 0.1
    valid_cold: float = 0.1
    valid_queries: int = 2000
    blend_shrink: float = 5.0
    cold_fraction: float = 0.2
    test_rows: float = 0.2
    test_users: float = 0.2
    eval_queries: int = 2000
    seed: int = 0
    device: str = "auto"
    threads: int = 1

    def __post_init__(self) -> None:
        check_numbers("learn", self)
        positive = ("elsa_dim", "elsa_epochs", "elsa_batch", "warm_min_interactions", "tower_dim", "tower_hidden",
                    "tower_epochs", "tower_batch", "max_pairs", "pair_window", "hard_negative_pool", "eval_queries",
                    "ease_max_items", "ease_keep", "patience", "valid_queries")
        for name in positive:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"learn.{name} must be a positive integer, got {v!r}")
        for name in ("finetune_epochs", "hard_negatives", "seed", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UsageError(f"learn.{name} must be an integer >= 0, got {v!r}")
        if self.tower_input_dim is not None and (not isinstance(self.tower_input_dim, int)
                                                 or self.tower_input_dim < 1):
            raise UsageError(f"learn.tower_input_dim must be a positive integer or None, got {self.tower_input_dim!r}")
        for name in ("elsa_lr", "tower_lr", "finetune_lr", "temperature", "adversarial_temperature", "blend_shrink"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < float("inf"):
                raise UsageError(f"learn.{name} must be a positive number, got {v!r}")
        for name in ("cold_fraction", "test_users", "test_rows", "valid_rows", "valid_cold"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < 1:
                raise UsageError(f"learn.{name} must be in (0, 1), got {v!r}")
        if not isinstance(self.topicality, (int, float)) or isinstance(self.topicality, bool) \
                or not 0 <= self.topicality <= 1:
            raise UsageError(f"learn.topicality must be in [0, 1], got {self.topicality!r}")
        if self.tower_batch < 2:
            raise UsageError(f"learn.tower_batch must be at least 2 (a batch needs a negative), got {self.tower_batch}")
        if self.cold_share not in ("fair", "recall"):
            raise UsageError(f"learn.cold_share must be fair or recall, got {self.cold_share!r}")
        if self.warm_model not in ("auto", "ease", "elsa"):
            raise UsageError(f"learn.warm_model must be auto, ease or elsa, got {self.warm_model!r}")
        if isinstance(self.elsa_dims, (str, int)) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in self.elsa_dims):
            raise UsageError(f"learn.elsa_dims must be positive integers, got {self.elsa_dims!r}")
        if isinstance(self.ease_lambdas, (str, int, float)) or not self.ease_lambdas or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf")
                for v in self.ease_lambdas):
            raise UsageError(f"learn.ease_lambdas must be positive numbers, got {self.ease_lambdas!r}")
        if self.loss not in TOWER_LOSSES:
            raise UsageError(f"learn.loss must be one of {', '.join(TOWER_LOSSES)}, got {self.loss!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"learn.device must be auto, cpu or cuda, got {self.device!r}")
        if isinstance(self.quality_events, str) or not all(isinstance(e, str) for e in self.quality_events):
            raise UsageError(f"learn.quality_events must be a tuple of str, got {self.quality_events!r}")
        if self.quality_weight is not None and not (isinstance(self.quality_weight, (int, float))
                                                    and abs(self.quality_weight) < float("inf")):
            raise UsageError(f"learn.quality_weight must be a finite number or None, got {self.quality_weight!r}")

    def training_hash(self) -> str:
        """sha256 (16 hex) of the settings that change a trained model (not the evaluation split or device)."""
        d = dataclasses.asdict(self)
        for name in ("cold_fraction", "test_users", "test_rows", "eval_queries", "device"):
            d.pop(name)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Config:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    models: ModelConfig = field(default_factory=ModelConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    thumbnails: ThumbnailConfig = field(default_factory=ThumbnailConfig)
    jobs: JobConfig = field(default_factory=JobConfig)
    limits: LimitConfig = field(default_factory=LimitConfig)
    learn: LearnConfig = field(default_factory=LearnConfig)
    regions: RegionConfig = field(default_factory=RegionConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def feature_hash(self) -> str:
        """sha256 (16 hex chars) of every setting that changes what a shard stores.

        That is the features and the thumbnails (so a changed thumbnail size,
        or a store written before thumbnails existed, is recomputed).

        Device, batch size, precision and prefetch depth are excluded: they
        change speed, not results beyond floating-point noise (precision is
        recorded in each modality's provenance); so are the fusion, job and
        input-limit settings.
        """
        d = self.to_dict()
        for section in ("fusion", "jobs", "limits", "learn"):
            d.pop(section)
        if not self.regions.enabled:  # a store without regions keeps the hash it had before regions existed
            d.pop("regions")
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

    def with_settings(self, settings: list[str]) -> "Config":
        """A copy with ``SECTION.FIELD=VALUE`` strings applied (the CLI's ``--set``).

        Examples
        --------
        >>> Config().with_settings(["clips.hop_s=1.5", "shots.detector=adaptive"]).clips.hop_s
        1.5
        """
        cfg = self
        for item in settings:
            key, sep, text = item.partition("=")
            section, dot, name = key.strip().partition(".")
            if not sep or not dot or section not in {f.name for f in dataclasses.fields(self)}:
                raise UsageError(f"bad --set {item!r}: expected SECTION.FIELD=VALUE, SECTION one of "
                                 f"{', '.join(f.name for f in dataclasses.fields(self))}")
            current = getattr(cfg, section)
            if name not in {f.name for f in dataclasses.fields(current)}:
                raise UsageError(f"bad --set {item!r}: {section} has no setting {name!r}; it has "
                                 f"{', '.join(f.name for f in dataclasses.fields(current))}")
            if section == "fusion" and name == "weights":
                value = parse_weights(text)
            else:
                try:
                    kind = next(f.type for f in dataclasses.fields(current) if f.name == name)
                    value = _parse_value(text.strip(), getattr(current, name), str(kind))
                except ValueError as e:
                    raise UsageError(f"bad --set {item!r}: {e}") from None
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(current, **{name: value})})
        return cfg


def _parse_value(text: str, current, annotation: str = ""):
    """``text`` converted to the type of the field's current value (a tuple's items by its ``annotation``)."""
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true/false, got {text!r}")
    if isinstance(current, tuple):  # e.g. learn.quality_events=purchase,add_to_cart
        parts = [p.strip() for p in text.split(",") if p.strip()]
        item = int if annotation.startswith("tuple[int") else float if annotation.startswith("tuple[float") else str
        return tuple(item(p) for p in parts)
    if text.lower() in ("none", "null", ""):
        return None
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if current is None:  # an unset optional number, e.g. clips.clip_len
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return text


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


def check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Validate modality weights; modalities not named get weight 0.

    Raises
    ------
    UsageError
        Unknown modality, or a weight that is negative or not finite.

    Examples
    --------
    >>> check_weights({"text": 2})
    {'visual': 0.0, 'audio': 0.0, 'image': 0.0, 'text': 2.0}
    """
    unknown = set(weights) - set(MODALITIES)
    if unknown:
        raise UsageError(f"unknown modalities in weights: {sorted(unknown)}; expected some of {MODALITIES}")
    w = {m: float(weights.get(m, 0.0)) for m in MODALITIES}
    bad = {m: v for m, v in w.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise UsageError(f"weights must be finite and >= 0, got {bad}")
    return w


def check_range(name: str, value: float | None, lo: float, hi: float) -> None:
    """Raise :class:`UsageError` unless ``value`` is None or ``lo <= value <= hi``.

    Examples
    --------
    >>> check_range("MMR lambda", 0.5, 0, 1)
    >>> check_range("MMR lambda", 2, 0, 1)
    Traceback (most recent call last):
    reelsim.errors.UsageError: MMR lambda must be in [0, 1], got 2
    """
    if value is not None and not lo <= value <= hi:
        raise UsageError(f"{name} must be in [{lo:g}, {hi:g}], got {value:g}")


def field_help(section: type, name: str) -> str:
    """A config field's description from its section's docstring, with its default: the CLI's help text.

    The docstring lists fields as ``name : text`` (continuation lines indented
    deeper); defaults come from the dataclass, so help never repeats them by hand.

    Examples
    --------
    >>> field_help(ShotConfig, "min_shot_frames")
    'no shot shorter than this many frames (except at the end). (default: 8)'
    """
    lines = (section.__doc__ or "").splitlines()
    text: list[str] = []
    for i, line in enumerate(lines):
        head, sep, rest = line.strip().partition(" : ")
        if sep and name in (n.strip() for n in head.split("/")):
            text = [rest.strip()]
            for more in lines[i + 1:]:
                if not more.startswith(" " * 8):
                    break
                text.append(more.strip())
            break
    default = {f.name: f.default for f in dataclasses.fields(section)}.get(name)
    return f"{' '.join(text).replace('``', '')} (default: {default})"
