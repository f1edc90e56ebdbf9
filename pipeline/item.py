"""Analyse one catalog item: video (shots, clips, audio, keyframes), image, text.

This is the work of one Dask task.  The video is decoded once for frames
(which feed the shot detector, the clip sampler and the keyframes) and once
for audio.  Models come from the per-process registry cache, so a worker
loads each model once.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from reelsim.errors import MediaError
from reelsim.extractors import registry
from reelsim.extractors.shots import (audio_continuous, colour_signature, detector_provenance, group_scenes,
                                     make_detector)
from reelsim.pipeline import decode
from reelsim.pipeline.config import Config, ThumbnailConfig
from reelsim.pipeline.prefetch import prefetch
from reelsim.pipeline.segment import Clip, Keyframe, ShotClipSampler
from reelsim.storage.catalog import Item
from reelsim.storage.thumbnails import jpeg_thumbnail


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


@dataclass
class ItemFeatures:
    """Everything analysed for one item; ``image_jpeg`` is a thumbnail of the product image (or None)."""

    item: Item
    embeddings: dict[str, Embedding]
    video: VideoStructure | None = None
    image_jpeg: bytes | None = None
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)


class Models:
    """The configured extractors, loaded on first use, once per process."""

    def __init__(self, cfg: Config):
        self._cfg = cfg.models
        self._device: str | None = None

    @property
    def device(self) -> str:
        if self._device is None:
            from reelsim.extractors.device import resolve_device

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
        from reelsim.extractors.video import sample_frames

        T = self._model.clip_len  # short-shot clips are looped to it, so a batch stacks
        batch = np.stack([c.frames[sample_frames(len(c.frames), T)] for c in clips])
        self.embeddings.append(self._model.extract(batch))
        self.shot_of_clip += [c.shot for c in clips]
        self.clip_start += [c.start_frame for c in clips]


def _segment_and_embed(path: str, info: decode.VideoInfo, cfg: Config, models: Models, warnings: list[str]):
    """The single frame pass: shots, clip embeddings, keyframes, frame times.

    Decoding and segmentation run in a producer thread (:func:`prefetch`) at
    most ``prefetch_batches`` batches of clips ahead of the model.
    """
    detector = make_detector(cfg.shots, info.fps)
    model = models.get("visual")
    clips = cfg.clips if cfg.clips.clip_len else dataclasses.replace(cfg.clips, clip_len=model.clip_len)
    sampler = ShotClipSampler(detector, clips, info.fps)
    batcher = ClipBatcher(model, cfg.models.batch_size)
    keyframes: list[Keyframe] = []
    times: list[float] = []

    def take(out):
        batcher.add(out[0])
        keyframes.extend(out[1])

    def segmented():  # runs in the producer thread; only outputs with clips or keyframes are queued
        for frame in decode.iter_frames(path, short_side=cfg.decode.analysis_short_side,
                                        skip_loop_filter=cfg.decode.skip_loop_filter):
            times.append(frame.time_s)
            out = sampler.push(frame.index, frame.rgb)
            if out[0] or out[1]:
                yield out

    try:
        for out in prefetch(segmented(), maxsize=max(1, cfg.models.prefetch_batches * cfg.models.batch_size)):
            take(out)
    except decode.TruncatedStream as e:  # the producer has stopped: the sampler is ours again
        warnings.append(f"video truncated: decoding stopped after {e.n_frames} frames ({e})")
    if not times:
        raise MediaError(f"no decodable video frames: {path}")
    take(sampler.finish())
    batcher.flush()
    if sampler.late_cuts:
        warnings.append(f"detector reported cuts later than its latency: {sampler.late_cuts}")
    return sampler.shots, batcher, keyframes, np.asarray(times, dtype=np.float64), sampler.boundaries


def _shot_times(shots: list[tuple[int, int]], times: np.ndarray, fps: float) -> np.ndarray:
    """(S, 2) start/end seconds from frame presentation times (VFR-safe)."""
    if np.isnan(times).any():  # no timestamps: fall back to the nominal rate
        times = np.arange(len(times)) / (fps if fps > 0 else 25.0)
    last_dur = np.median(np.diff(times)) if len(times) > 1 else 1.0 / (fps if fps > 0 else 25.0)
    ends = np.append(times[1:], times[-1] + last_dur)
    return np.array([[times[s], ends[e - 1]] for s, e in shots], dtype=np.float64)


def _pool_audio(path: str, shot_times: np.ndarray, cfg: Config, models: Models, warnings: list[str]):
    """Per-shot and item audio features from a streamed audio decode, or None without audio.

    The audio model's ``span_pooler`` receives the chunks; shot spans are in
    seconds from the first shot's start (the audio stream's origin).
    """
    model = models.get("audio")
    pooler = model.span_pooler(shot_times - shot_times[0, 0], cfg.decode.audio_rate)
    try:
        for chunk in decode.iter_audio(path, rate=cfg.decode.audio_rate):
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


def analyse_video(item: Item, cfg: Config, models: Models) -> tuple[VideoStructure, dict[str, Embedding], list[str], dict]:
    """Shots, scenes and visual / audio / keyframe-image embeddings of ``item.video``."""
    warnings: list[str] = []
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    info = decode.probe(item.video)
    shots, batcher, keyframes, times, boundaries = _segment_and_embed(item.video, info, cfg, models, warnings)
    timings["decode_segment_visual_s"] = time.perf_counter() - t0
    n_frames = len(times)
    fps = info.fps if np.isfinite(info.fps) and info.fps > 0 else (n_frames - 1) / max(times[-1] - times[0], 1e-6)
    lengths = np.array([e - s for s, e in shots], dtype=np.float64)

    clip_emb = np.concatenate(batcher.embeddings)
    clip_shot = np.asarray(batcher.shot_of_clip)
    visual_shot = np.stack([clip_emb[clip_shot == i].mean(0) for i in range(len(shots))]).astype(np.float32)
    visual_model = models.get("visual")
    emb = {
        "visual": Embedding(
            item=weighted_mean(visual_shot, lengths),
            shot=visual_shot,
            provenance={**visual_model.provenance(), "clip_frame_stride": cfg.clips.frame_stride,
                        "clip_hop_s": cfg.clips.hop_s, "max_clips_per_shot": cfg.clips.max_clips_per_shot,
                        "analysis_short_side": cfg.decode.analysis_short_side,
                        "pooling": "shot = mean of its clips; item = mean of shots weighted by length"},
            extra={"clips": clip_emb.astype(np.float32), "clip_shot": clip_shot.astype(np.int32),
                   "clip_start": np.asarray(batcher.clip_start, dtype=np.int64)},
        )
    }

    t1 = time.perf_counter()
    keyframes.sort(key=lambda k: k.shot)
    image_model = models.get("image")
    key_emb = image_model.extract([k.rgb for k in keyframes])
    emb["image"] = Embedding(item=weighted_mean(key_emb, lengths), shot=key_emb.astype(np.float32),
                             provenance={**image_model.provenance(), "source": "video keyframes"})
    signatures = np.stack([colour_signature(k.rgb) for k in keyframes])
    timings["keyframes_scenes_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    shot_times = _shot_times(shots, times, fps)
    declared, decoded = info.duration_s, float(shot_times[-1, 1])
    if np.isfinite(declared) and decoded < declared - max(1.0, 0.05 * declared):
        warnings.append(f"decoded {decoded:.1f} s of the {declared:.1f} s the container declares: truncated file?")
    audio = _pool_audio(item.video, shot_times, cfg, models, warnings) if info.has_audio else None
    if audio is not None:
        emb["audio"] = audio
    timings["audio_s"] = time.perf_counter() - t2
    scenes = group_scenes(signatures, similarity=cfg.shots.scene_similarity, window=cfg.shots.scene_window,
                          audio_joins=_audio_joins(audio, cfg))

    structure = VideoStructure(
        fps=float(fps), n_frames=n_frames, width=info.width, height=info.height,
        duration_s=float(shot_times[-1, 1]),
        shots=np.asarray(shots, dtype=np.int64).reshape(-1, 2),
        shot_times=shot_times,
        scenes=np.asarray(scenes, dtype=np.int64).reshape(-1, 2),
        keyframes=np.asarray([k.frame for k in keyframes], dtype=np.int64),
        transitions=np.asarray([b.kind for b in boundaries], dtype="S8"),
        transition_frames=np.asarray([(b.start, b.end) for b in boundaries], dtype=np.int64).reshape(-1, 2),
        params={**{f"shots_{k}": v for k, v in dataclasses.asdict(cfg.shots).items()}, **detector_provenance(cfg.shots)},
        keyframe_jpegs=[j for j in (thumbnail(k.rgb, cfg.thumbnails) for k in keyframes) if j is not None],
    )
    return structure, emb, warnings, timings


def thumbnail(rgb: np.ndarray, cfg: ThumbnailConfig) -> bytes | None:
    """A JPEG thumbnail of ``rgb`` uint8 (H, W, 3) as configured, or None when thumbnails are off."""
    if cfg.max_side <= 0:
        return None
    return jpeg_thumbnail(rgb, max_side=cfg.max_side, quality=cfg.quality)


def load_image(path: str) -> np.ndarray:
    """uint8 RGB (H, W, 3) of an image file; MediaError when missing or unreadable."""
    import os

    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise MediaError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise MediaError(f"unreadable image ({e.__class__.__name__}): {path}") from None


def analyse_item(item: Item, cfg: Config, models: Models) -> ItemFeatures:
    """Every modality the item has.  Raises MediaError for unusable media."""
    out = ItemFeatures(item=item, embeddings={})
    if item.video:
        out.video, emb, out.warnings, out.timings = analyse_video(item, cfg, models)
        out.embeddings.update(emb)
    if item.image:
        t = time.perf_counter()
        model = models.get("image")
        rgb = load_image(item.image)
        vec = model.extract([rgb])[0]
        out.image_jpeg = thumbnail(rgb, cfg.thumbnails)
        keyframes = out.embeddings.get("image")  # a video's keyframes stay as per-shot rows
        out.embeddings["image"] = Embedding(item=vec.astype(np.float32),
                                            shot=keyframes.shot if keyframes else None,
                                            provenance={**model.provenance(), "source": "product image"})
        out.timings["image_s"] = time.perf_counter() - t
    if item.text:
        t = time.perf_counter()
        model = models.get("text")
        out.embeddings["text"] = Embedding(item=model.extract([item.text])[0].astype(np.float32),
                                           provenance=model.provenance())
        out.timings["text_s"] = time.perf_counter() - t
    return out
