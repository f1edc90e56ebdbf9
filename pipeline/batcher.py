"""The three stages of every run, without Dask: prepare items, embed a batch of them, complete each item.

A run (:mod:`reelsim.jobs.driver`) sends every item through the same
stages, whatever the device:

1. :func:`prepare_items` (CPU workers), a group of items at a time: hash
   nothing (the task does), decode each video once (frames and audio from one
   demux pass, decoding in a thread ahead of the shot detector), detect shots,
   cut the clips (already sampled to the model's clip length), keep one
   keyframe per shot, and do everything that needs no visual or image model:
   structure, scenes, audio features, thumbnails, and the texts of the group
   as one batch of the text model. The result, :class:`Prepared`, holds the
   clips, keyframes and product image as uint8 arrays, in memory or in
   shared memory (:meth:`Prepared.share`).
2. :func:`embed_batch` (the model's device), the prepared items of a batch:
   clips through the video model, keyframes and product images through the
   image model. With ``mix`` (CUDA, or ``jobs.cross_item=on``) the clips of
   *all* items share forward passes of ``batch`` rows
   (:class:`reelsim.extractors.feed.DeviceFeeder`: pinned buffers,
   non-blocking copies); without it each item's rows go through the model on
   their own, ``models.batch_size`` at a time, so an item's features never
   depend on which items shared its batch (CPU runs are repeatable bit for bit).
3. :func:`complete_item` (CPU workers): pool the item's clip and keyframe
   embeddings into its visual and image features (the functions of
   :mod:`reelsim.pipeline.item`), giving the :class:`ItemFeatures` a shard stores.

:func:`take_batch` is the driver's rule for which prepared groups form the next batch.
A new per-shot step that needs a model (e.g. region crops for copy detection)
adds its array in :func:`prepare_item`, its forward passes in
:func:`embed_batch` and its pooling in :func:`complete_item`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Union

import numpy as np

from reelsim.config import MODALITIES, Config
from reelsim.errors import MediaError
from reelsim.extractors.feed import FeedStats, feeder
from reelsim.extractors.video import sample_frames
from reelsim.pipeline.images import load_image
from reelsim.pipeline.item import (
    Models,
    add_text,
    check_region_model,
    describe_video,
    extract_each,
    keyframe_embedding,
    keyframe_regions,
    product_embedding,
    regions_of,
    segment_pass,
    shot_lengths,
    text_embedding,
    thumbnail,
    visual_embedding,
)
from reelsim.pipeline.regions import ShotRegions
from reelsim.pipeline.segment import DECODE_AHEAD, Clip
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
        return replace(self, arrays=shared)

    def shared_paths(self) -> list[str]:
        return [a.path for a in self.arrays.values() if isinstance(a, SharedArray)]


@dataclass
class Embedded:
    """One item's rows from the embed stage: float32 (N, D) clips, (K, D) keyframes, (R, 320) region
    crops, (D,) product image.

    error : why the item's product image could not be embedded (the item then fails alone).
    warnings : what the stage wants on the item's row (a batch that had to be split).
    """

    clips: np.ndarray | None = None
    keyframes: np.ndarray | None = None
    product: np.ndarray | None = None
    regions: np.ndarray | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


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


def prepare_item(item: Item, cfg: Config, models: Models, *, clip_len: int, text: bool = True) -> Prepared:
    """The CPU stage for one item: decode, shots, clips, keyframes, audio, thumbnails (and its text).

    Parameters
    ----------
    item : the catalog item.
    cfg : the run's configuration.
    models : the audio and text models (they run on CPU workers).
    clip_len : frames per clip of the video model (its class attribute: no model is loaded).
    text : embed the item's text here (:func:`prepare_items` embeds a group's texts as one batch instead).

    Returns
    -------
    Prepared

    Raises
    ------
    MediaError
        Unusable media.
    """
    out = ItemFeatures(item=item, embeddings={})
    prep = Prepared(item, out)
    if item.video:
        t0 = time.perf_counter()
        clips: list[Clip] = []
        seg = segment_pass(item.video, cfg, clip_len=clip_len, on_clips=clips.extend, warnings=out.warnings,
                           audio=True, decode_ahead=DECODE_AHEAD)
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
        t = time.perf_counter()
        rgb = load_image(item.image, max_pixels=cfg.limits.max_image_pixels)
        out.image_jpeg = thumbnail(rgb, cfg.thumbnails)
        prep.arrays["product"] = rgb[None]
        out.timings["image_s"] = time.perf_counter() - t
    if text:
        add_text(item, out, models)
    return prep


def prepare_items(items: list[Item], cfg: Config, models: Models, *, clip_len: int) -> list[Prepared | Exception]:
    """:func:`prepare_item` of a group of items, their texts embedded as one batch of the text model.

    Returns
    -------
    list, one per item in order: its :class:`Prepared`, or the exception that
    made it unusable (an unreadable video or image); one item's failure never
    affects the others.
    """
    out: list[Prepared | Exception] = []
    for item in items:
        try:
            out.append(prepare_item(item, cfg, models, clip_len=clip_len, text=False))
        except Exception as e:  # noqa: BLE001  (this item fails, the others go on: the task reports it)
            out.append(e)
    texts = {i: p for i, p in enumerate(out) if isinstance(p, Prepared) and p.item.text}
    if texts:
        t = time.perf_counter()
        model = models.get("text")
        warnings: list[str] = []
        vecs = extract_each(model, [p.item.text for p in texts.values()], warnings)
        share = (time.perf_counter() - t) / len(texts)
        for (i, p), vec in zip(texts.items(), vecs):
            if isinstance(vec, Exception):
                out[i] = vec
                continue
            p.features.embeddings["text"] = text_embedding(vec, model)
            p.features.timings["text_s"] = share
            p.features.warnings.extend(warnings)
    return out


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


def embed_batch(preps: list[Prepared], visual_model, image_model, *, batch: int, mix: bool = True) -> BatchResult:
    """The embed stage: every clip, keyframe and product image of ``preps``.

    With ``mix``, clips of all items share the video model's forward passes
    of ``batch`` rows and keyframes the image model's
    (:class:`~reelsim.extractors.feed.DeviceFeeder`); without it, each item's
    clips go through ``visual_model.extract`` in passes of the model's own
    ``batch_size`` and its keyframes through ``image_model.extract``, exactly
    as :func:`~reelsim.pipeline.item.analyse_item` runs them. Product images,
    which differ in size, are scaled one by one and run ``batch`` at a time;
    one that fails fails its own item only (``Embedded.error``).

    Parameters
    ----------
    preps : items from :func:`prepare_item` (arrays in memory or shared).
    visual_model : a clip extractor (``embed``, ``extract``, ``dim``, ``device``, ``batch_size``).
    image_model : the image extractor (``embed``, ``extract``, ``dim``).
    batch : rows per forward pass when mixing.
    mix : whether items share forward passes.

    Returns
    -------
    BatchResult
    """
    t0 = time.perf_counter()
    embedded = {p.item.id: Embedded() for p in preps}
    with_clips = [p for p in preps if p.rows("clips")]
    with_keys = [p for p in preps if p.rows("keyframes")]
    with_regions = [p for p in preps if p.rows("regions")]
    if with_regions:
        check_region_model(image_model)
    if mix:
        feed = feeder(visual_model.device, batch)
        clip_out, clip_stats = feed.run([p.array("clips") for p in with_clips], visual_model.embed, visual_model.dim)
        key_out, key_stats = feed.run([p.array("keyframes") for p in with_keys], image_model.embed, image_model.dim)
        region_out, region_stats = feed.run([p.array("regions") for p in with_regions], image_model.embed_regions,
                                            image_model.region_dim)
        fill_s = _fill(clip_stats, key_stats, region_stats)
        passes = clip_stats.batches + key_stats.batches + region_stats.batches
    else:
        size = max(1, visual_model.batch_size or 1)  # ClipExtractor.extract: one forward pass per `size` clips
        clip_out = [visual_model.extract(p.array("clips")) for p in with_clips]
        key_out = [image_model.extract(list(p.array("keyframes"))) for p in with_keys]
        region_out = [image_model.extract_regions(p.array("regions")) for p in with_regions]
        fill_s = 0.0
        passes = sum(-(-p.rows("clips") // size) for p in with_clips) + len(with_keys) + len(with_regions)
    for p, e in zip(with_clips, clip_out):
        embedded[p.item.id].clips = e
    for p, e in zip(with_keys, key_out):
        embedded[p.item.id].keyframes = e
    for p, e in zip(with_regions, region_out):
        embedded[p.item.id].regions = e
    with_product = [p for p in preps if p.rows("product")]
    warnings: list[str] = []
    product_out = extract_each(image_model, [p.array("product")[0] for p in with_product], warnings,
                               batch_size=batch if mix else None)
    for p, e in zip(with_product, product_out):
        if isinstance(e, Exception):
            embedded[p.item.id].error = failure_line(e)
        else:
            embedded[p.item.id].product = e
            embedded[p.item.id].warnings = warnings
    stats = {"items": len(preps), "clips": sum(p.rows("clips") for p in with_clips),
             "images": sum(p.rows("keyframes") for p in with_keys) + len(with_product)
             + sum(p.rows("regions") for p in with_regions),
             "batches": passes + -(-len(with_product) // batch), "fill_s": round(fill_s, 4), "mixed": mix,
             "seconds": round(time.perf_counter() - t0, 4)}
    return BatchResult(embedded, visual_model.provenance(), image_model.provenance(), stats)


def failure_line(e: BaseException) -> str:
    """One line naming an exception (its class and the first line of its message)."""
    text = (str(e).splitlines() or [""])[0][:200]
    return f"{e.__class__.__name__}: {text}" if text else e.__class__.__name__


def _fill(*stats: FeedStats) -> float:
    return sum(s.fill_s for s in stats)


def complete_item(prep: Prepared, embedded: Embedded, result: BatchResult, cfg: Config) -> ItemFeatures:
    """The item's full :class:`ItemFeatures`: its prepared parts plus the pooled GPU-stage embeddings.

    Pools exactly as the per-item path does (:func:`~reelsim.pipeline.item.visual_embedding`,
    :func:`~reelsim.pipeline.item.keyframe_embedding`, :func:`~reelsim.pipeline.item.product_embedding`).
    """
    if embedded.error:
        raise MediaError(f"product image could not be embedded ({embedded.error}): {prep.item.image}")
    out = prep.features
    out.warnings.extend(embedded.warnings)
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
    """Which prepared groups (or items) form the next batch.

    Groups are taken whole, in the order they became ready, until their rows
    reach ``target``; with fewer rows ready, nothing is taken unless ``flush``
    (no more items will come).

    Parameters
    ----------
    ready : [(key, rows)] in arrival order.
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
