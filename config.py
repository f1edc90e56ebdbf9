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
import os
import re
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
#: ``jobs.cross_item`` values (whether an embed batch's items share forward passes).
CROSS_ITEM = ("auto", "on", "off")
#: ``jobs.clip_transport`` values.
CLIP_TRANSPORTS = ("auto", "shm", "dask")


#: The commands that analyse items (their flags set models, shots, thumbnails and jobs settings).
ANALYSE = ("run", "add", "demo")
#: The commands that build content lists (their flags set fusion settings).
LISTS = ("run", "add", "demo", "lists")


@dataclass(frozen=True)
class Flag:
    """The command-line flag that sets one config field: the CLI's parser is built from these.

    The flag's help is the field's description in its section's docstring
    with the field's default (:func:`field_help`); its type is the default's
    type; its choices are ``choices`` (or, for a registered name, the
    registry's names, which the CLI adds: ``registry``).

    option : the flag, e.g. ``--batch-size`` (a contract: never renamed).
    metavar : what its value is called in the help.
    commands : the commands that take it.
    choices : the values it accepts, when they are a fixed list.
    registry : ``visual`` / ``audio`` (a model registry) or ``detector``: the CLI offers their names.
    dest : the argparse attribute (default: the option without dashes, ``-`` -> ``_``).
    parse : how the flag's text becomes the value: ``path`` (made absolute), ``weights``
        (:func:`parse_weights`), ``formats`` (a comma-separated list), ``switch`` (a flag without a value).
    """

    option: str
    metavar: str | None = None
    commands: tuple[str, ...] = ANALYSE
    choices: tuple[str, ...] | None = None
    registry: str | None = None
    dest: str | None = None
    parse: str | None = None

    @property
    def attr(self) -> str:
        return self.dest or self.option.lstrip("-").replace("-", "_")


def flag(option: str, metavar: str | None = None, **kw) -> dict:
    """A dataclass field's metadata naming its command-line flag (see :class:`Flag`)."""
    return {"flag": Flag(option, metavar, **kw)}


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

    detector : the shot detector, by name (:data:`reelsim.extractors.shots.DETECTORS`):
        ``reelsim`` (cuts, dissolves, fades, flash-proof; docs/shots.md),
        scenedetect's ``content`` / ``adaptive``, or a model-based one.
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

    detector: str = field(default="reelsim", metadata=flag("--shot-detector", registry="detector"))
    threshold: float = field(default=27.0, metadata=flag("--shot-threshold", "X", dest="threshold"))
    cut_min: float = field(default=12.0, metadata=flag("--cut-min", "X"))
    cut_ratio: float = field(default=2.0, metadata=flag("--cut-ratio", "X"))
    gradual_min: float = field(default=12.0, metadata=flag("--gradual-min", "X"))
    gradual_blend_max: float = 0.22
    min_shot_frames: int = field(default=8, metadata=flag("--min-shot-frames", "N"))
    scene_similarity: float = field(default=0.80, metadata=flag("--scene-similarity", "X"))
    scene_window: int = field(default=3, metadata=flag("--scene-window", "N"))
    scene_audio_db: float = field(default=3.0, metadata=flag("--scene-audio-db", "X"))

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

    visual : the 3D-CNN that embeds shot clips (``reelsim models`` lists them and says which
        this machine can run).
    audio : the audio features: ``logmel-stats`` (log-mel statistics, no weights) or
        ``cnn14-16k`` (PANNs CNN14 embeddings, needs ``--audio-weights``).
    image : the image model of keyframes and product images.
    text : the text model of titles and descriptions (and of blocklist phrases and search queries).
    device : ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N`` (the N-th GPU); ``run``'s
        ``--device`` also sets where its lists are searched (``fusion.device``).
    batch_size : clips (or images, texts, audio windows) per forward pass.
    video_weights / audio_weights : explicit weights files for models that
        need downloaded weights (see ``reelsim models``), e.g. a Kinetics video
        model's or ``Cnn14_16k_mAP=0.438.pth``.
    precision : ``auto`` (bf16 autocast on CUDA, fp16 where the GPU lacks
        bf16; fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``; for the video and
        audio models.  Recorded per modality in provenance.
    prefetch_batches : decoding and shot segmentation run in a thread at most
        this many batches of clips ahead of the video model (a bounded queue).
    """

    visual: str = field(default="effnet-lite0-inflated", metadata=flag("--video-model", "NAME", registry="visual"))
    audio: str = field(default="logmel-stats", metadata=flag("--audio-model", "NAME", registry="audio"))
    image: str = "effnet-lite0"
    text: str = "minilm-l6-v2"
    video_weights: str | None = field(default=None, metadata=flag("--video-weights", "PATH", parse="path"))
    audio_weights: str | None = field(default=None, metadata=flag("--audio-weights", "PATH", parse="path"))
    device: str = field(default="auto", metadata=flag("--device", "DEVICE", choices=DEVICES + ("cuda:N",)))
    batch_size: int = field(default=8, metadata=flag("--batch-size", "N"))
    precision: str = field(default="auto", metadata=flag("--precision", choices=PRECISIONS))
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

    max_side: int = field(default=160, metadata=flag("--thumbnail-size", "PX"))
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

    weights : modality -> non-negative weight, e.g. ``visual=1,audio=0.5,image=1,text=1``
        (modalities not named keep their defaults; ``reelsim lists``: the weights the
        catalog was built with).
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

    weights: dict[str, float] = field(default_factory=_default_weights,
                                      metadata=flag("--weights", "SPEC", commands=LISTS, parse="weights"))
    k: int = field(default=10, metadata=flag("-k", "N", commands=LISTS))
    oversample: int = 5
    pca_dim: int | None = field(default=None, metadata=flag("--pca", "N", commands=ANALYSE))
    whiten: bool = field(default=False, metadata=flag("--whiten", commands=ANALYSE, parse="switch"))
    index: str = field(default="auto", metadata=flag("--index", "SPEC", commands=LISTS))
    memory_budget_gb: float = field(default=4.0, metadata=flag("--memory-budget", "GB", commands=LISTS))
    knn_batch: int = field(default=16384, metadata=flag("--knn-batch", "N", commands=LISTS))
    dedup: float | None = field(default=None, metadata=flag("--dedup", "T", commands=LISTS))
    mmr: float | None = field(default=None, metadata=flag("--mmr", "LAMBDA", commands=LISTS))
    blocklist: tuple[str, ...] | None = None
    blocklist_threshold: float = field(default=0.5, metadata=flag("--blocklist-threshold", "T", commands=LISTS))
    lists_formats: tuple[str, ...] = field(default=("parquet", "jsonl"),
                                           metadata=flag("--lists-format", "LIST", commands=LISTS, parse="formats"))
    device: str = field(default="auto", metadata=flag("--device", "DEVICE", commands=LISTS,
                                                       choices=DEVICES + ("cuda:N",)))

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

    item_timeout_s : seconds one item's prepare task may run on a worker (from
        its start, model loading on a fresh worker not counted) before it is
        reported as timed out and its worker is restarted through its nanny;
        0 = no limit.  The default suits videos up to about an hour on CPU.
    batch_timeout_s : seconds one embed task (a batch of items) may run once
        its worker has its models loaded; a batch still running then is
        cancelled, the worker restarted through its nanny, and the batch's
        items reported as timed out (a re-run does them again); 0 = no limit.
    max_worker_deaths : an item whose worker process dies this many times
        while running it is reported as failed instead of retried again
        (local clusters; an existing scheduler applies its own
        ``distributed.scheduler.allowed-failures``).
    cross_item : whether embed batches gather many items that share forward
        passes (``jobs/driver.py``, docs/models.md): ``auto`` = on when the
        models run on CUDA (large batches for the GPU), off on the CPU (each
        prepared group is embedded on its own, its items written as soon as it
        is done, and their features do not depend on other items); ``on``
        (also on the CPU, e.g. in tests), ``off``.
    gpu_batch : with ``cross_item`` on, the rows (clips, keyframes, images) the
        driver fills each embed batch to, and the rows per forward pass.
    clip_transport : how clips reach the embed worker: ``shm`` (files in
        ``/dev/shm``, memory-mapped; workers on the driver's machine only),
        ``dask`` (Dask's worker-to-worker transfer), ``auto`` (shm when several
        worker processes share the driver's machine, else dask).
    dashboard_address : where a local cluster's Dask dashboard listens.  It
        has no authentication and shows file paths and item ids, so the
        default is this machine only (``127.0.0.1``, a free port); ``:8787``
        opens it to the network (``--dashboard-address``).
    group_size : items without video (products, text-only rows) are prepared
        in tasks of up to this many items, their texts embedded as one batch
        (:func:`reelsim.jobs.tasks.prepare_task`); each item is still written
        and reported on its own. Fewer per task when the catalog is small, so
        every worker gets work; 1 = one task per item.
    """

    item_timeout_s: float = field(default=3600.0, metadata=flag("--item-timeout", "SECONDS"))
    batch_timeout_s: float = 3600.0
    max_worker_deaths: int = 3
    cross_item: str = "auto"
    gpu_batch: int = 256
    clip_transport: str = "auto"
    dashboard_address: str = field(default="127.0.0.1:0", metadata=flag("--dashboard-address", "HOST:PORT"))
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

    def with_file(self, path: str | os.PathLike) -> "Config":
        """A copy with the settings of a TOML file applied (the CLI's ``--config FILE``).

        The file has one table per section, holding any of its fields::

            [models]
            device = "cuda:1"
            batch_size = 32

            [fusion]
            k = 20
            weights = { visual = 1.0, audio = 0.0 }   # modalities not named keep their defaults
            lists_formats = ["parquet", "hdf5"]

        ``"none"`` unsets an optional field. ``reelsim config`` prints a
        configuration in this form. Every value is checked as the config is
        built; a mistake is a :class:`UsageError` naming the file and the setting.
        """
        table = read_config_file(path)
        try:
            return self.with_mapping(table)
        except UsageError as e:
            raise UsageError(f"--config {path}: {e}") from None

    def with_mapping(self, table: Mapping[str, Mapping]) -> "Config":
        """A copy with ``{section: {field: value}}`` applied (a parsed config file); checked as it is built."""
        sections = {f.name: f for f in dataclasses.fields(self)}
        cfg = self
        for section, values in table.items():
            if section not in sections or not isinstance(values, Mapping):
                raise UsageError(f"unknown section [{section}]; sections: {', '.join(sections)}")
            current = getattr(cfg, section)
            names = {f.name for f in dataclasses.fields(current)}
            given = {}
            for name, value in values.items():
                if name not in names:
                    raise UsageError(f"[{section}] has no setting {name!r}; it has {', '.join(sorted(names))}")
                given[name] = _file_value(section, name, value, getattr(current, name))
            try:
                cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(current, **given)})
            except TypeError as e:  # a value of the wrong type that a check compared
                raise UsageError(f"[{section}]: {e}") from None
        return cfg

    def to_toml(self) -> str:
        """This configuration as a TOML file that :meth:`with_file` reads back to an equal ``Config``.

        Examples
        --------
        >>> text = Config().with_settings(["fusion.k=20"]).to_toml()
        >>> "[fusion]" in text and "k = 20" in text
        True
        """
        lines = ["# reelsim configuration (reelsim config); every field of every section, with its value", ""]
        for section in dataclasses.fields(self):
            lines.append(f"[{section.name}]")
            for f in dataclasses.fields(getattr(self, section.name)):
                lines.append(f"{f.name} = {_toml_value(getattr(getattr(self, section.name), f.name))}")
            lines.append("")
        return "\n".join(lines)

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
            elif section == "fusion" and name == "blocklist":  # phrases, comma-separated (unset: the default)
                value = tuple(p.strip() for p in text.split(",") if p.strip())
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


def read_config_file(path: str | os.PathLike) -> dict:
    """The tables of a TOML config file, as read (:meth:`Config.with_file` checks them).

    Raises
    ------
    UsageError
        The file is missing, unreadable or not TOML (the message names it).
    """
    import tomllib

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except OSError as e:
        raise UsageError(f"--config {path}: cannot be read ({e.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"--config {path}: not valid TOML ({e})") from None


def _file_value(section: str, name: str, value, current):
    """A config file's ``value`` for a field whose current value is ``current``, in the field's type."""
    if isinstance(value, str):  # "none", or a number or flag written as text: as --set reads it
        if section == "fusion" and name == "weights":
            return parse_weights(value)
        try:
            return _parse_value(value.strip(), current)
        except ValueError as e:
            raise UsageError(f"[{section}] {name}: {e}") from None
    if section == "fusion" and name == "weights":
        if not isinstance(value, Mapping):
            raise UsageError(f"[fusion] weights must be a table such as {{ visual = 1.0, audio = 0.5 }}, got {value!r}")
        return {**_default_weights(), **{str(k): v for k, v in value.items()}}  # checked by FusionConfig
    if isinstance(value, list):
        return tuple(value)
    if isinstance(current, bool) and not isinstance(value, bool):
        raise UsageError(f"[{section}] {name} must be true or false, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float):
        raise UsageError(f"[{section}] {name} must be an integer, got {value!r}")
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _toml_value(value) -> str:
    """One TOML value: strings and names quoted (JSON escapes are TOML's), ``None`` as ``"none"``."""
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value), ensure_ascii=False)


def config_flags(command: str) -> list[tuple[str, str, Flag]]:
    """``(section, field, flag)`` of every config field that a flag of ``command`` sets, in config order.

    Examples
    --------
    >>> [(s, n) for s, n, f in config_flags("lists") if f.option == "--device"]
    [('fusion', 'device')]
    >>> sorted({f.option for _, _, f in config_flags("run")} - {f.option for _, _, f in config_flags("lists")})[:3]
    ['--audio-model', '--audio-weights', '--batch-size']
    """
    out = []
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory):
            fl = f.metadata.get("flag")
            if fl is not None and command in fl.commands:
                out.append((section.name, f.name, fl))
    return out


def section_class(name: str) -> type:
    """The dataclass of config section ``name`` (``models`` -> :class:`ModelConfig`)."""
    return {f.name: f.default_factory for f in dataclasses.fields(Config)}[name]


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
    f = next(f for f in dataclasses.fields(section) if f.name == name)
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    words = re.sub(r":\w+:`~?(?:[\w.]+\.)?(\w+)`", r"\1", " ".join(text)).replace("``", "")
    return f"{words} (default: {_shown(default)})"


def _shown(value) -> str:
    """A default as the help shows it: ``none``, ``a,b`` for a tuple, ``visual=1.0,...`` for weights."""
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v:g}" for k, v in value.items())
    return str(value)
