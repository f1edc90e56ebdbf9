"""The GPU path's three stages, without Dask: prepare an item, embed a cross-item batch, complete an item.

The per-item path (:func:`reelsim.pipeline.item.analyse_item`) decodes a
video and runs the 3D-CNN in one process, a few clips at a time. A GPU server
has many cores and one fast accelerator, so the GPU path splits that work:

1. :func:`prepare_item` (a CPU worker): decode once, detect shots, cut the
   clips (already sampled to the model's clip length), keep one keyframe per
   shot, and do everything that needs no visual model: structure, scenes,
   audio, text, thumbnails. The result, :class:`Prepared`, holds the clips,
   keyframes and product image as uint8 arrays, in memory or in shared memory
   (:meth:`Prepared.share`).
2. :func:`embed_batch` (a GPU worker): the clips of *many* items in batches of
   ``batch`` through the video model's ``embed``, their keyframes through the
   image model's (:class:`reelsim.extractors.feed.DeviceFeeder`: pinned
   buffers, non-blocking copies, the next batch copied while this one
   computes), product images through the image model, ``batch`` at a time.
3. :func:`complete_item` (a CPU worker): pool the item's clip and keyframe
   embeddings into its visual and image features, exactly as the per-item path
   pools them (the same functions), giving the :class:`ItemFeatures` a shard stores.

:func:`take_batch` is the driver's rule for which prepared items form the next batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Union

import numpy as np

from reelsim.config import MODALITIES, Config
from reelsim.extractors.feed import FeedStats, feeder
from reelsim.extractors.video import sample_frames
from reelsim.pipeline.images import load_image
from reelsim.pipeline.item import (
    Models,
    add_text,
    check_region_model,
    describe_video,
    keyframe_embedding,
    keyframe_regions,
    product_embedding,
    regions_of,
    segment_pass,
    shot_lengths,
    thumbnail,
    visual_embedding,
)
from reelsim.pipeline.regions import ShotRegions
from reelsim.pipeline.segment import Clip
from reelsim.storage.manifest import Item
from reelsim.storage.schema import ItemFeatures
from reelsim.storage.shm import SharedArray

Array = Union[np.ndarray, SharedArray]


@dataclass
class Prepared:
    """One item after the CPU stage: everything but its visual and image embeddings.

    item : the catalog item.
    features : its :class:`ItemFeatures` so far (video structure, audio, text,
        thumbnails, warnings, timings); no ``visual`` / ``image`` embedding yet.
    arrays : name -> uint8 array, or :class:`SharedArray` handle on one:
        ``clips`` (N, clip_len, S, S, 3) and ``keyframes`` (K, S, S, 3), one per
        shot in shot order (videos); ``regions`` (R, s, s, 3) the keyframes'
        region crops (:func:`~reelsim.pipeline.item.keyframe_regions`);
        ``product`` (1, H, W, 3) (a product image).
    clip_shot, clip_start : int (N,) shot and first frame of each clip.
    lengths : float64 (K,) shot lengths in frames (the pooling weights).
    regions : the regions' shots, kinds, boxes and thumbnails (crops in ``arrays``), or None.
    """

    item: Item
    features: ItemFeatures
    arrays: dict[str, Array] = field(default_factory=dict)
    clip_shot: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    clip_start: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    regions: ShotRegions | None = None

    def array(self, name: str) -> np.ndarray | None:
        """The named array (memory-mapped when shared), or None when the item has none."""
        a = self.arrays.get(name)
        return a.load() if isinstance(a, SharedArray) else a

    def rows(self, name: str) -> int:
        a = self.arrays.get(name)
        return 0 if a is None else int(a.shape[0])

    @property
    def n_rows(self) -> int:
        """Rows the GPU stage will embed: clips, keyframes and the product image."""
        return sum(self.rows(n) for n in self.arrays)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def share(self, folder: str, key: str) -> "Prepared":
        """This item with its arrays written to shared memory under ``folder`` (files ``key-<name>.npy``)."""
        shared = {name: a if isinstance(a, SharedArray) else SharedArray.write(a, folder, f"{key}-{name}")
                  for name, a in self.arrays.items()}
        return Prepared(self.item, self.features, shared, self.clip_shot, self.clip_start, self.lengths,
                        self.regions)

    def shared_paths(self) -> list[str]:
        return [a.path for a in self.arrays.values() if isinstance(a, SharedArray)]


@dataclass
class Embedded:
    """One item's rows from the GPU stage: float32 (N, D) clips, (K, D) keyframes, (R, 320) region
    crops, (D,) product image."""

    clips: np.ndarray | None = None
    keyframes: np.ndarray | None = None
    product: np.ndarray | None = None
    regions: np.ndarray | None = None


@dataclass
class BatchResult:
    """What one cross-item batch gives back (small: embeddings, not pixels).

    embedded : item id -> :class:`Embedded`.
    visual, image : the two models' provenance (device and precision of this run).
    stats : ``clips``, ``images``, ``seconds`` (the stage's wall time),
        ``fill_s`` (reading inputs into staging buffers), ``batches`` (forward passes).
    """

    embedded: dict[str, Embedded]
    visual: dict
    image: dict
    stats: dict


def prepare_item(item: Item, cfg: Config, models: Models, *, clip_len: int) -> Prepared:
    """The CPU stage for one item: decode, shots, clips, keyframes, audio, text, thumbnails.

    Parameters
    ----------
    item : the catalog item.
    cfg : the run's configuration.
    models : the audio and text models (the GPU path runs them on CPU workers).
    clip_len : frames per clip of the video model (its class attribute: no model is loaded).

    Returns
    -------
    Prepared

    Raises
    ------
    MediaError
        Unusable media, as in the per-item path.
    """
    out = ItemFeatures(item=item, embeddings={})
    prep = Prepared(item, out)
    if item.video:
        t0 = time.perf_counter()
        clips: list[Clip] = []
        seg = segment_pass(item.video, cfg, clip_len=clip_len, on_clips=clips.extend, warnings=out.warnings)
        prep.arrays["clips"] = stack_clips(clips, clip_len)
        prep.arrays["keyframes"] = np.stack([k.rgb for k in seg.keyframes])
        prep.clip_shot = np.asarray([c.shot for c in clips], dtype=np.int32)
        prep.clip_start = np.asarray([c.start_frame for c in clips], dtype=np.int64)
        prep.lengths = shot_lengths(seg.shots)
        found = keyframe_regions(seg, cfg)
        if found is not None:
            prep.arrays["regions"] = found.crops
            prep.regions = found._replace(crops=np.zeros((0,), np.uint8))  # the crops travel in ``arrays``
        out.timings["decode_segment_s"] = time.perf_counter() - t0
        out.video, audio = describe_video(item, cfg, seg, models, out.warnings, out.timings)
        if audio is not None:
            out.embeddings["audio"] = audio
    if item.image:
        rgb = load_image(item.image, max_pixels=cfg.limits.max_image_pixels)
        out.image_jpeg = thumbnail(rgb, cfg.thumbnails)
        prep.arrays["product"] = rgb[None]
    add_text(item, out, models)
    return prep


def stack_clips(clips: list[Clip], clip_len: int) -> np.ndarray:
    """uint8 (N, clip_len, S, S, 3): each clip's frames as the model sees them.

    Short-shot clips are looped in time (:func:`~reelsim.extractors.video.sample_frames`),
    exactly as the per-item path's batcher does before its model.
    """
    if not clips:
        return np.zeros((0, clip_len, 1, 1, 3), np.uint8)
    first = clips[0].frames
    out = np.empty((len(clips), clip_len, *first.shape[1:]), np.uint8)
    for i, c in enumerate(clips):
        out[i] = c.frames[sample_frames(len(c.frames), clip_len)]
    return out


def embed_batch(preps: list[Prepared], visual_model, image_model, *, batch: int) -> BatchResult:
    """The GPU stage: every clip, keyframe and product image of ``preps``, in batches of ``batch``.

    Clips of all items share the video model's batches and keyframes the
    image model's (:class:`~reelsim.extractors.feed.DeviceFeeder`); product
    images, which differ in size, are scaled one by one on the device and run
    ``batch`` at a time.

    Parameters
    ----------
    preps : items from :func:`prepare_item` (arrays in memory or shared).
    visual_model : a clip extractor (``embed``, ``dim``, ``device``).
    image_model : the image extractor (``embed``, ``extract``, ``dim``).
    batch : rows per forward pass.

    Returns
    -------
    BatchResult
    """
    t0 = time.perf_counter()
    feed = feeder(visual_model.device, batch)
    with_clips = [p for p in preps if p.rows("clips")]
    clip_out, clip_stats = feed.run([p.array("clips") for p in with_clips], visual_model.embed, visual_model.dim)
    with_keys = [p for p in preps if p.rows("keyframes")]
    key_out, key_stats = feed.run([p.array("keyframes") for p in with_keys], image_model.embed, image_model.dim)
    with_regions = [p for p in preps if p.rows("regions")]
    if with_regions:
        check_region_model(image_model)
    region_out, region_stats = feed.run([p.array("regions") for p in with_regions], image_model.embed_regions,
                                        image_model.region_dim)
    with_product = [p for p in preps if p.rows("product")]
    product_out = (image_model.extract([p.array("product")[0] for p in with_product], batch_size=batch)
                   if with_product else [])
    embedded = {p.item.id: Embedded() for p in preps}
    for p, e in zip(with_clips, clip_out):
        embedded[p.item.id].clips = e
    for p, e in zip(with_keys, key_out):
        embedded[p.item.id].keyframes = e
    for p, e in zip(with_product, product_out):
        embedded[p.item.id].product = e
    for p, e in zip(with_regions, region_out):
        embedded[p.item.id].regions = e
    stats = {"items": len(preps), "clips": clip_stats.rows,
             "images": key_stats.rows + len(with_product) + region_stats.rows,
             "batches": clip_stats.batches + key_stats.batches + region_stats.batches + -(-len(with_product) // batch),
             "fill_s": round(_fill(clip_stats, key_stats, region_stats), 4),
             "seconds": round(time.perf_counter() - t0, 4)}
    return BatchResult(embedded, visual_model.provenance(), image_model.provenance(), stats)


def _fill(*stats: FeedStats) -> float:
    return sum(s.fill_s for s in stats)


def complete_item(prep: Prepared, embedded: Embedded, result: BatchResult, cfg: Config) -> ItemFeatures:
    """The item's full :class:`ItemFeatures`: its prepared parts plus the pooled GPU-stage embeddings.

    Pools exactly as the per-item path does (:func:`~reelsim.pipeline.item.visual_embedding`,
    :func:`~reelsim.pipeline.item.keyframe_embedding`, :func:`~reelsim.pipeline.item.product_embedding`).
    """
    out = prep.features
    emb = dict(out.embeddings)
    if prep.item.video:
        emb["visual"] = visual_embedding(embedded.clips, prep.clip_shot, prep.clip_start, prep.lengths,
                                         result.visual, cfg)
        emb["image"] = keyframe_embedding(embedded.keyframes, prep.lengths, result.image)
        out.regions = regions_of(prep.regions, embedded.regions, result.image, cfg)
    if embedded.product is not None:
        emb["image"] = product_embedding(embedded.product, emb.get("image"), result.image)
    out.embeddings = {m: emb[m] for m in MODALITIES if m in emb}
    return out


def take_batch(ready: list[tuple[str, int]], target: int, *, flush: bool) -> list[str]:
    """Which prepared items form the next cross-item batch.

    Items are taken whole, in the order they became ready, until their rows
    reach ``target``; with fewer rows ready, nothing is taken unless ``flush``
    (no more items will come).

    Parameters
    ----------
    ready : [(item key, rows)] in arrival order.
    target : rows per batch (``jobs.gpu_batch``).
    flush : take what is ready even below ``target``.

    Returns
    -------
    list of item keys (empty: wait for more).

    Examples
    --------
    >>> take_batch([("a", 100), ("b", 100), ("c", 100)], 150, flush=False)
    ['a', 'b']
    >>> take_batch([("a", 100)], 150, flush=False), take_batch([("a", 100)], 150, flush=True)
    ([], ['a'])
    """
    taken, rows = [], 0
    for key, n in ready:
        if rows >= target:
            break
        taken.append(key)
        rows += n
    return taken if rows >= target or flush else []
