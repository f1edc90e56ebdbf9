"""Analyse one catalog item: video (shots, clips, audio, keyframes), image, text.

The stages of a run (:mod:`reelsim.pipeline.batcher`) call the functions
here: the one pass over a video (:func:`segment_pass`: frames for the shot
detector, the clip sampler and the keyframes, and the audio track, from one
demux), its structure and audio (:func:`describe_video`), pooling
(:func:`visual_embedding`, :func:`keyframe_embedding`, :func:`product_embedding`)
and text. :func:`analyse_item` does all of it in one process (tests,
benchmarks, the CPU reference of the GPU comparison). Models come from the
per-process registry cache, so a worker loads each model once.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from reelsim.config import Config, ThumbnailConfig
from reelsim.errors import MediaError, UsageError
from reelsim.extractors import registry
from reelsim.extractors.device import resolve_device
from reelsim.extractors.shots import audio_continuous, colour_signature, detector_provenance, group_scenes
from reelsim.extractors.video import sample_frames
from reelsim.pipeline import decode
from reelsim.pipeline.images import load_image
from reelsim.pipeline.prefetch import prefetch
from reelsim.pipeline.regions import ShotRegions, region_features, shot_regions
from reelsim.pipeline.segment import Clip, Keyframe, ShotPass
from reelsim.pipeline.timeline import checked_times, describe_jumps
from reelsim.storage.manifest import Item
from reelsim.storage.schema import Embedding, ItemFeatures, RegionFeatures, VideoStructure
from reelsim.storage.thumbnails import jpeg_thumbnail


class Models:
    """The configured extractors, loaded on first use, once per process.

    ``device`` overrides ``cfg.models.device`` (the GPU path's CPU workers
    run the audio and text models on ``cpu`` whatever the run's device).
    """

    def __init__(self, cfg: Config, device: str | None = None):
        self._cfg = cfg.models
        self._device: str | None = str(resolve_device(device)) if device else None

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = str(resolve_device(self._cfg.device))
        return self._device

    def get(self, modality: str):
        m = self._cfg
        weights = {"visual": m.video_weights, "audio": m.audio_weights}.get(modality)
        amp = {"precision": m.precision} if modality in ("visual", "audio") else {}
        return registry.load(
            modality, getattr(m, modality), device=self.device, weights_path=weights, batch_size=m.batch_size,
            **amp,
        )


def weighted_mean(rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """float32 (D,) mean of (S, D) ``rows`` weighted by (S,) ``weights``."""
    w = np.asarray(weights, dtype=np.float64)
    return (rows.astype(np.float64) * (w / w.sum())[:, None]).sum(0).astype(np.float32)


class ClipBatcher:
    """Collects clips and runs the video model a batch at a time.

    Memory is bounded by ``batch_size`` clips, never by video length.
    """

    def __init__(self, model, batch_size: int):
        self._model = model
        self._size = max(1, batch_size)
        self._pending: list[Clip] = []
        self.embeddings: list[np.ndarray] = []
        self.shot_of_clip: list[int] = []
        self.clip_start: list[int] = []

    def add(self, clips: list[Clip]) -> None:
        self._pending += clips
        while len(self._pending) >= self._size:
            self._run(self._pending[: self._size])
            self._pending = self._pending[self._size :]

    def flush(self) -> None:
        if self._pending:
            self._run(self._pending)
            self._pending = []

    def _run(self, clips: list[Clip]) -> None:
        T = self._model.clip_len  # short-shot clips are looped to it, so a batch stacks
        batch = np.stack([c.frames[sample_frames(len(c.frames), T)] for c in clips])
        self.embeddings.append(self._model.extract(batch))
        self.shot_of_clip += [c.shot for c in clips]
        self.clip_start += [c.start_frame for c in clips]


class SegmentedVideo(NamedTuple):
    """What the one frame pass over a video found (clips went to the pass's ``on_clips``).

    info : the container's :class:`~reelsim.pipeline.decode.VideoInfo`.
    shots : [(start_frame, end_frame)], end exclusive.
    keyframes : one :class:`Keyframe` per shot, in shot order.
    times : float64 (F,) presentation time of every decoded frame, in seconds.
    boundaries : how each shot was entered (:class:`~reelsim.extractors.shots.Boundary`).
    errors : the corrupt packets skipped so far (in both streams when the audio came in the same pass).
    audio : the audio track decoded in the same demux pass (:class:`~reelsim.pipeline.decode.AudioTrack`),
        or None (no audio stream, or not asked for: it is then decoded on its own when pooled).
    """

    info: decode.VideoInfo
    shots: list[tuple[int, int]]
    keyframes: list[Keyframe]
    times: np.ndarray
    boundaries: list
    errors: decode.PacketErrors
    audio: decode.AudioTrack | None = None


def segment_pass(path: str, cfg: Config, *, clip_len: int, on_clips: Callable[[list[Clip]], None],
                 warnings: list[str], prefetch_size: int | None = None, audio: bool = False,
                 decode_ahead: int = 0) -> SegmentedVideo:
    """The single pass over a video (:class:`ShotPass`): shots, keyframes, frame times; clips to ``on_clips``.

    ``on_clips`` receives the clips as the sampler settles them (the prepare
    stage keeps them for a batch; :func:`analyse_video` embeds them there).
    With ``audio``, the audio track is decoded in the same demux pass
    (``SegmentedVideo.audio``). With ``decode_ahead``, decoding runs in a
    thread of its own that many frames ahead of the detector; with
    ``prefetch_size``, decoding and segmentation run in a producer thread
    (:func:`prefetch`) at most that many clip groups ahead of ``on_clips``.
    A truncated stream keeps what decoded and adds a warning; no frame at all
    is a :class:`MediaError`. Corrupt packets are skipped and counted (past
    ``cfg.limits.max_decode_errors`` the item fails).
    """
    errors = decode.PacketErrors(cfg.limits.max_decode_errors, path)
    shot_pass = ShotPass(path, cfg, clip_len=clip_len, errors=errors, audio=audio, decode_ahead=decode_ahead)
    keyframes: list[Keyframe] = []

    def take(out):
        on_clips(out[0])
        keyframes.extend(out[1])

    source = iter(shot_pass)
    if prefetch_size:
        source = prefetch(source, maxsize=prefetch_size)
    try:
        for out in source:
            take(out)
    except decode.TruncatedStream as e:  # the producer has stopped: the sampler is ours again
        warnings.append(f"video truncated: decoding stopped after {e.n_frames} frames ({e})")
    if not shot_pass.times:
        raise MediaError(f"no decodable video frames: {path}")
    take(shot_pass.finish())
    sampler = shot_pass.sampler
    if sampler.late_cuts:
        warnings.append(f"detector reported cuts later than its latency: {sampler.late_cuts}")
    keyframes.sort(key=lambda k: k.shot)
    return SegmentedVideo(shot_pass.info, sampler.shots, keyframes, np.asarray(shot_pass.times, dtype=np.float64),
                          sampler.boundaries, errors, shot_pass.audio)


def shot_lengths(shots: list[tuple[int, int]]) -> np.ndarray:
    """float64 (S,) shot lengths in frames (the pooling weights)."""
    return np.array([e - s for s, e in shots], dtype=np.float64)


def visual_embedding(clip_emb: np.ndarray, clip_shot: np.ndarray, clip_start: np.ndarray, lengths: np.ndarray,
                     provenance: dict, cfg: Config) -> Embedding:
    """The visual modality of a video from its clip embeddings.

    Parameters
    ----------
    clip_emb : float32 (N, D) clip embeddings, in clip order.
    clip_shot : int (N,) shot of each clip; clip_start : int (N,) first frame of each clip.
    lengths : float64 (S,) shot lengths in frames.
    provenance : the video model's provenance.

    Returns
    -------
    Embedding
        shot = mean of the shot's clips; item = mean of shots weighted by length;
        the clips themselves in ``extra``.
    """
    clip_shot = np.asarray(clip_shot)
    shot = np.stack([clip_emb[clip_shot == i].mean(0) for i in range(len(lengths))]).astype(np.float32)
    return Embedding(
        item=weighted_mean(shot, lengths),
        shot=shot,
        provenance={**provenance, "clip_frame_stride": cfg.clips.frame_stride,
                    "clip_hop_s": cfg.clips.hop_s, "max_clips_per_shot": cfg.clips.max_clips_per_shot,
                    "analysis_short_side": cfg.decode.analysis_short_side,
                    "pooling": "shot = mean of its clips; item = mean of shots weighted by length"},
        extra={"clips": clip_emb.astype(np.float32), "clip_shot": clip_shot.astype(np.int32),
               "clip_start": np.asarray(clip_start, dtype=np.int64)},
    )


def keyframe_embedding(key_emb: np.ndarray, lengths: np.ndarray, provenance: dict) -> Embedding:
    """The image modality of a video: float32 (S, D) keyframe embeddings, item = length-weighted mean."""
    return Embedding(item=weighted_mean(key_emb, lengths), shot=key_emb.astype(np.float32),
                     provenance={**provenance, "source": "video keyframes"})


def product_embedding(vec: np.ndarray, keyframes: Embedding | None, provenance: dict) -> Embedding:
    """The image modality of an item with a product image: the image's (D,) embedding is the item's.

    A video's keyframe rows (``keyframes``), if any, stay as its per-shot rows.
    """
    return Embedding(item=np.asarray(vec, dtype=np.float32), shot=keyframes.shot if keyframes else None,
                     provenance={**provenance, "source": "product image"})


def _shot_times(shots: list[tuple[int, int]], times: np.ndarray, fps: float) -> np.ndarray:
    """(S, 2) start/end seconds from frame presentation times (VFR-safe)."""
    if np.isnan(times).any():  # no timestamps: fall back to the nominal rate
        times = np.arange(len(times)) / (fps if fps > 0 else 25.0)
    last_dur = np.median(np.diff(times)) if len(times) > 1 else 1.0 / (fps if fps > 0 else 25.0)
    ends = np.append(times[1:], times[-1] + last_dur)
    return np.array([[times[s], ends[e - 1]] for s, e in shots], dtype=np.float64)


def pool_audio(path: str, shot_times: np.ndarray, cfg: Config, models: Models, warnings: list[str],
               errors: decode.PacketErrors, track: decode.AudioTrack | None = None):
    """Per-shot and item audio features, or None without audio.

    The audio model's ``span_pooler`` receives the samples: those of
    ``track`` (decoded in the frames' own demux pass), else a decode of the
    audio stream on its own. Shot spans are in seconds from the first shot's
    start (the audio stream's origin).
    """
    model = models.get("audio")
    pooler = model.span_pooler(shot_times - shot_times[0, 0], cfg.decode.audio_rate)
    if track is not None:
        for chunk in track.chunks():
            pooler.push(chunk)
        if track.truncated:
            warnings.append(f"audio truncated after {track.samples} samples ({track.truncated})")
    else:
        try:
            for chunk in decode.iter_audio(path, rate=cfg.decode.audio_rate, errors=errors):
                pooler.push(chunk)
        except decode.TruncatedStream as e:
            warnings.append(f"audio truncated after {e.n_frames} samples ({e})")
    pooled = pooler.pooled()
    if pooled is None:
        return None
    per_shot, overall = pooled
    return Embedding(item=overall, shot=per_shot, provenance=model.provenance())


def _audio_joins(audio: Embedding | None, cfg: Config) -> np.ndarray | None:
    """Continuous-sound joins between consecutive shots, from log-mel band means (or None)."""
    if audio is None or cfg.shots.scene_audio_db <= 0 or audio.provenance.get("model") != "logmel-stats":
        return None
    n_mels = audio.shot.shape[1] // 2  # logmel-stats rows are [band means (dB), band stds]
    return audio_continuous(audio.shot[:, :n_mels], max_db=cfg.shots.scene_audio_db)


def keyframe_regions(seg: SegmentedVideo, cfg: Config) -> ShotRegions | None:
    """The regions of each shot's keyframe (:func:`~reelsim.pipeline.regions.shot_regions`), None when off.

    Both paths call it: the per-item path embeds the crops at once, the GPU
    path in its cross-item batch.
    """
    if not cfg.regions.enabled:
        return None
    return shot_regions([k.full if k.full is not None else k.rgb for k in seg.keyframes], cfg.regions.size,
                        cfg.regions.thumb)


def check_region_model(model) -> None:
    """:class:`UsageError` unless the image ``model`` embeds region crops (``embed_regions``, ``region_dim``)."""
    if not (hasattr(model, "embed_regions") and hasattr(model, "region_dim")):
        raise UsageError(f"region vectors need an image model with region features (effnet-lite0); "
                         f"{type(model).__name__} has none: set --set regions.enabled=false")


def regions_of(regions: ShotRegions | None, cnn: np.ndarray | None, provenance: dict,
               cfg: Config) -> RegionFeatures | None:
    """What a shard stores of the regions, from both paths' crops and CNN rows (None when regions are off)."""
    if regions is None or cnn is None:
        return None
    return region_features(regions, cnn, provenance, cfg.regions.size, cfg.regions.thumb)


def analyse_video(item: Item, cfg: Config, models: Models
                  ) -> tuple[VideoStructure, dict[str, Embedding], list[str], dict, RegionFeatures | None]:
    """Shots, scenes, visual / audio / keyframe-image embeddings and region vectors of ``item.video``."""
    warnings: list[str] = []
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    visual_model = models.get("visual")
    batcher = ClipBatcher(visual_model, cfg.models.batch_size)
    seg = segment_pass(item.video, cfg, clip_len=visual_model.clip_len, on_clips=batcher.add, warnings=warnings,
                       prefetch_size=max(1, cfg.models.prefetch_batches * cfg.models.batch_size), audio=True)
    batcher.flush()
    timings["decode_segment_visual_s"] = time.perf_counter() - t0
    lengths = shot_lengths(seg.shots)
    emb = {"visual": visual_embedding(np.concatenate(batcher.embeddings), batcher.shot_of_clip, batcher.clip_start,
                                      lengths, visual_model.provenance(), cfg)}
    t1 = time.perf_counter()
    image_model = models.get("image")
    emb["image"] = keyframe_embedding(image_model.extract([k.rgb for k in seg.keyframes]), lengths,
                                      image_model.provenance())
    timings["keyframes_scenes_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    found = keyframe_regions(seg, cfg)
    regions = None  # regions off
    if found is not None:
        check_region_model(image_model)
        regions = regions_of(found, image_model.extract_regions(found.crops), image_model.provenance(), cfg)
        timings["regions_s"] = time.perf_counter() - t2
    structure, audio = describe_video(item, cfg, seg, models, warnings, timings)
    if audio is not None:
        emb["audio"] = audio
    return structure, emb, warnings, timings, regions


def describe_video(item: Item, cfg: Config, seg: SegmentedVideo, models: Models, warnings: list[str],
                   timings: dict[str, float]) -> tuple[VideoStructure, Embedding | None]:
    """Everything about a segmented video but its visual and image embeddings: structure, scenes, audio.

    Adds ``audio_s`` to ``timings`` and the scene grouping's time to
    ``keyframes_scenes_s``; the audio model comes from ``models``.
    """
    t1 = time.perf_counter()
    info, shots, keyframes = seg.info, seg.shots, seg.keyframes
    times, jumps = checked_times(seg.times, info.fps, max_gap_s=cfg.limits.max_frame_gap_s)
    if jumps:
        warnings.append(describe_jumps(jumps))
    n_frames = len(times)
    fps = info.fps if np.isfinite(info.fps) and info.fps > 0 else (n_frames - 1) / max(times[-1] - times[0], 1e-6)
    signatures = np.stack([colour_signature(k.rgb) for k in keyframes])
    timings["keyframes_scenes_s"] = timings.get("keyframes_scenes_s", 0.0) + time.perf_counter() - t1

    t2 = time.perf_counter()
    shot_times = _shot_times(shots, times, fps)
    declared, decoded = info.duration_s - sum(j.removed_s for j in jumps), float(shot_times[-1, 1])
    if np.isfinite(declared) and decoded < declared - max(1.0, 0.05 * declared):
        warnings.append(f"decoded {decoded:.1f} s of the {declared:.1f} s the container declares: truncated file?")
    audio = (pool_audio(item.video, shot_times, cfg, models, warnings, seg.errors, seg.audio)
             if info.has_audio else None)
    warnings += seg.errors.warnings()
    timings["audio_s"] = time.perf_counter() - t2
    scenes = group_scenes(signatures, similarity=cfg.shots.scene_similarity, window=cfg.shots.scene_window,
                          audio_joins=_audio_joins(audio, cfg))

    structure = VideoStructure(
        fps=float(fps), n_frames=n_frames, width=info.width, height=info.height,
        duration_s=float(shot_times[-1, 1]), decode_errors=seg.errors.total,
        shots=np.asarray(shots, dtype=np.int64).reshape(-1, 2),
        shot_times=shot_times,
        scenes=np.asarray(scenes, dtype=np.int64).reshape(-1, 2),
        keyframes=np.asarray([k.frame for k in keyframes], dtype=np.int64),
        transitions=np.asarray([b.kind for b in seg.boundaries], dtype="S8"),
        transition_frames=np.asarray([(b.start, b.end) for b in seg.boundaries], dtype=np.int64).reshape(-1, 2),
        params={**{f"shots_{k}": v for k, v in dataclasses.asdict(cfg.shots).items()},
                **detector_provenance(cfg.shots)},
        keyframe_jpegs=[j for j in (thumbnail(k.rgb, cfg.thumbnails) for k in keyframes) if j is not None],
    )
    return structure, audio


def thumbnail(rgb: np.ndarray, cfg: ThumbnailConfig) -> bytes | None:
    """A JPEG thumbnail of ``rgb`` uint8 (H, W, 3) as configured, or None when thumbnails are off."""
    if cfg.max_side <= 0:
        return None
    return jpeg_thumbnail(rgb, max_side=cfg.max_side, quality=cfg.quality)


def analyse_item(item: Item, cfg: Config, models: Models) -> ItemFeatures:
    """Every modality the item has.  Raises MediaError for unusable media."""
    out = ItemFeatures(item=item, embeddings={})
    if item.video:
        out.video, emb, out.warnings, out.timings, out.regions = analyse_video(item, cfg, models)
        out.embeddings.update(emb)
    if item.image:
        t = time.perf_counter()
        model = models.get("image")
        rgb = load_image(item.image, max_pixels=cfg.limits.max_image_pixels)
        out.image_jpeg = thumbnail(rgb, cfg.thumbnails)
        out.embeddings["image"] = product_embedding(model.extract([rgb])[0], out.embeddings.get("image"),
                                                    model.provenance())
        out.timings["image_s"] = time.perf_counter() - t
    add_text(item, out, models)
    return out


def add_text(item: Item, out: ItemFeatures, models: Models) -> None:
    """The text modality of ``item`` (title and description), when it has any, into ``out``."""
    if item.text:
        t = time.perf_counter()
        model = models.get("text")
        out.embeddings["text"] = text_embedding(model.extract([item.text])[0], model)
        out.timings["text_s"] = time.perf_counter() - t


def text_embedding(vec: np.ndarray, model) -> Embedding:
    """The ``text`` embedding of an item's title and description: float32 (D,) ``vec``."""
    return Embedding(item=np.asarray(vec, dtype=np.float32), provenance=model.provenance())


def extract_each(model, inputs: list, warnings: list[str] | None = None, **kw) -> list[np.ndarray | Exception]:
    """``model.extract`` of many inputs in one call; one row (D,) per input, or the error of that input.

    The batch is tried first. Should it raise, every input is extracted on
    its own, so one bad input fails alone and the others still get features;
    the batch's error is added to ``warnings`` (it is not lost when every
    input then succeeds alone). ``kw`` go to ``model.extract`` (e.g. ``batch_size``)
    when given (None values are left out).
    """
    if not inputs:
        return []
    kw = {k: v for k, v in kw.items() if v is not None}
    try:
        return list(model.extract(inputs, **kw))
    except Exception as batch_error:  # noqa: BLE001  (which input failed is found below, one at a time)
        if warnings is not None:
            why = (str(batch_error).splitlines() or [""])[0][:160]
            warnings.append(f"{getattr(model, 'name', 'model')}: a batch of {len(inputs)} inputs failed "
                            f"({batch_error.__class__.__name__}: {why}); they were embedded one at a time")
        out: list[np.ndarray | Exception] = []
        for x in inputs:
            try:
                out.append(model.extract([x], **kw)[0])
            except Exception as e:  # noqa: BLE001  (reported as that item's failure)
                out.append(e)
        return out
