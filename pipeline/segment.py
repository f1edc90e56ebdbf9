"""Shot segmentation and shot-aligned clip sampling in one streaming pass.

:class:`ShotClipSampler` receives every decoded frame once.  It feeds the
shot detector, and, once the detector can no longer move a cut before a frame
(``latency`` frames later), decides which clips end at that frame.  Clips
never straddle a cut.  Only a ring of ``span + latency + 1`` recent frames is
held, so memory does not depend on video length.

Clip rule (per shot ``[s, e)``; ``span = (clip_len - 1) * frame_stride + 1``):
clips start at ``o, o + hop, o + 2 hop, ...`` while they fit inside the shot,
at most ``max_clips_per_shot``, where ``o`` is ``s`` after a cut and the end of
the dissolve or fade that entered the shot otherwise (so clips do not mix the
two shots of a transition's second half).  A shot shorter than ``span`` gets one clip of
all its frames (at ``frame_stride``); the model loops it in time to its
``clip_len``.  Each shot's keyframe is the middle frame of its first clip.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from reelsim.config import ClipConfig, Config
from reelsim.errors import ParameterError
from reelsim.extractors.detectors import make_detector
from reelsim.extractors.shots import Boundary, ShotDetector
from reelsim.pipeline import decode
from reelsim.pipeline.prefetch import prefetch


class Clip(NamedTuple):
    """Frames for one 3D-CNN forward pass.

    shot : index of the shot the clip lies in.
    start_frame : first frame index of the clip.
    frames : uint8 (T, H, W, 3); ``T <= clip_len`` (shorter for short shots).
    """

    shot: int
    start_frame: int
    frames: np.ndarray


class Keyframe(NamedTuple):
    """One shot's keyframe: ``rgb`` its centre square (what the image model sees), ``full`` the whole
    analysis frame (what region descriptors are cut from, :mod:`reelsim.pipeline.regions`)."""

    shot: int
    frame: int
    rgb: np.ndarray
    full: np.ndarray | None = None


def centre_square(rgb: np.ndarray) -> np.ndarray:
    """Centre square crop of an (H, W, 3) frame (side = min(H, W))."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    y, x = (h - side) // 2, (w - side) // 2
    return rgb[y : y + side, x : x + side]


class ShotClipSampler:
    """Stream consumer: frames in, clips and keyframes out, shots at the end.

    Parameters
    ----------
    detector : ShotDetector
        ``process(index, rgb)``, ``finish(n)``, ``latency`` (:class:`reelsim.extractors.shots.ShotDetector`).
    clips : ClipConfig
    fps : frames per second, to turn ``hop_s`` into frames.
    """

    def __init__(self, detector: ShotDetector, clips: ClipConfig, fps: float):
        if not clips.clip_len or clips.clip_len < 1:
            raise ParameterError("ShotClipSampler needs a clip length (ClipConfig.clip_len >= 1)")
        self._detector = detector
        self._cfg = clips
        self._stride = max(1, clips.frame_stride)
        self.span = (clips.clip_len - 1) * self._stride + 1
        fps = fps if np.isfinite(fps) and fps > 0 else 25.0
        self._hop = max(1, int(round(clips.hop_s * fps)))
        self._latency = int(detector.latency)
        # (index, centre square, full frame): the square is a view of the frame, so keeping both costs nothing
        self._ring: deque[tuple[int, np.ndarray, np.ndarray]] = deque(maxlen=self.span + self._latency + 1)
        self._cuts: dict[int, Boundary] = {}
        self._late_cuts: list[int] = []
        self._settled = -1  # every frame <= settled has its shot fixed
        self._shot_start = 0
        self._clip_origin = 0  # clips start here: after the transition that entered the shot
        self._shot_clips = 0
        self._shots: list[tuple[int, int]] = []
        self._n = 0

    # -- public -----------------------------------------------------------
    def push(self, index: int, rgb: np.ndarray) -> tuple[list[Clip], list[Keyframe]]:
        """Consume frame ``index`` (uint8 (H, W, 3) analysis frame)."""
        if index != self._n:
            raise ParameterError(f"frames must arrive in order: expected {self._n}, got {index}")
        self._n += 1
        self._ring.append((index, centre_square(rgb), rgb))
        for c in self._detector.process(index, rgb):
            self._add_cut(c)
        return self._settle_to(index - self._latency)

    def finish(self) -> tuple[list[Clip], list[Keyframe]]:
        """Flush at end of stream: returns the last clips; :attr:`shots` is then final."""
        for c in self._detector.finish(self._n):
            self._add_cut(c)
        out = self._settle_to(self._n - 1)
        if self._n:
            more = self._close_shot(self._n)
            out[0].extend(more[0])
            out[1].extend(more[1])
        return out

    @property
    def shots(self) -> list[tuple[int, int]]:
        """Shots as (start_frame, end_frame), end exclusive."""
        return list(self._shots)

    @property
    def n_frames(self) -> int:
        """Frames pushed so far."""
        return self._n

    @property
    def boundaries(self) -> list[Boundary]:
        """How each shot was entered, one per shot (the first is ``"start"``)."""
        out = []
        for s, _ in self._shots:
            out.append(self._cuts.get(s, Boundary(s, "start", s, s)))
        return out

    @property
    def late_cuts(self) -> list[int]:
        """Cuts the detector reported later than its declared latency (ignored)."""
        return list(self._late_cuts)

    # -- internals --------------------------------------------------------
    def _add_cut(self, found) -> None:
        b = Boundary.of(found)
        c = b.frame
        if c <= 0:
            return
        if c <= self._settled:
            self._late_cuts.append(c)
            return
        self._cuts[c] = b

    def _frames(self, start: int, stop: int) -> np.ndarray:
        """Ring frames start, start+stride, ... < stop, stacked (T, S, S, 3)."""
        first = self._ring[0][0]
        picked = [self._ring[i - first][1] for i in range(start, stop, self._stride)]
        return np.stack(picked)

    def _settle_to(self, g_max: int) -> tuple[list[Clip], list[Keyframe]]:
        clips: list[Clip] = []
        keys: list[Keyframe] = []
        for g in range(self._settled + 1, g_max + 1):
            if g in self._cuts:
                c, k = self._close_shot(g)
                clips += c
                keys += k
                self._shot_start = g
                self._clip_origin = max(g, self._cuts[g].end)
                self._shot_clips = 0
            w = g - self.span + 1
            s = self._clip_origin
            if w >= s and (w - s) % self._hop == 0 and self._shot_clips < self._cfg.max_clips_per_shot:
                clips.append(Clip(len(self._shots), w, self._frames(w, g + 1)))
                if self._shot_clips == 0:
                    keys.append(self._keyframe(w, g + 1))
                self._shot_clips += 1
            self._settled = g
        return clips, keys

    def _keyframe(self, start: int, stop: int) -> Keyframe:
        mid = (start + stop - 1) // 2
        first = self._ring[0][0]
        _, square, full = self._ring[mid - first]
        return Keyframe(len(self._shots), mid, square, full)

    def _close_shot(self, end: int) -> tuple[list[Clip], list[Keyframe]]:
        """Close the current shot at ``end``; a short shot without clips gets one now."""
        clips: list[Clip] = []
        keys: list[Keyframe] = []
        s = self._shot_start
        if end <= s:
            return clips, keys
        if self._shot_clips == 0:
            clips.append(Clip(len(self._shots), s, self._frames(s, end)))
            keys.append(self._keyframe(s, end))
        self._shots.append((s, end))
        return clips, keys


#: frames the decoder may run ahead of the shot detector when it runs in a thread of its own (ShotPass)
DECODE_AHEAD = 16


class ShotPass:
    """The one decode -> detect -> sample pass over a video: the run, the tests and the benchmarks use it.

    Iterating yields ``(clips, keyframes)`` as the sampler settles them
    (frames whose shot is fixed), only when one of them is non-empty;
    :meth:`finish` then flushes the end of the stream. Frame presentation
    times are collected in :attr:`times`. If decoding stops early
    (:class:`reelsim.pipeline.decode.TruncatedStream`), what was sampled so far
    stays valid and :meth:`finish` still closes the last shot.

    The file is opened once (:class:`~reelsim.pipeline.decode.MediaReader`):
    its stream info, its frames and, with ``audio``, its audio track
    (:attr:`audio`, decoded in the same demux pass) all come from that one container.

    Parameters
    ----------
    path : str
        The video.
    cfg : Config
        ``decode`` (analysis size, loop filter, audio rate), ``shots`` (the detector) and ``clips``.
    clip_len : int
        Frames per clip when ``cfg.clips.clip_len`` is unset (a run takes it from the video model).
    detector : ShotDetector, optional
        Instead of the one ``cfg.shots`` names (e.g. known cuts replayed by a benchmark).
    errors : PacketErrors, optional
        Counts the corrupt packets skipped (default: a new one with ``cfg.limits``'s limit).
    audio : bool
        Also decode the audio track, in the same pass, into :attr:`audio` (None when the file has none).
    decode_ahead : int
        With ``n > 0``, decoding and scaling run in a thread of their own, at most ``n`` frames ahead of
        the detector and the clip sampler (they overlap where a core is free).

    Examples
    --------
    >>> p = ShotPass("clip.mp4", Config(), clip_len=8)    # doctest: +SKIP
    >>> n_clips = sum(len(clips) for clips, _ in p) + len(p.finish()[0])   # doctest: +SKIP
    """

    def __init__(self, path: str, cfg: Config, *, clip_len: int, detector: ShotDetector | None = None,
                 errors: decode.PacketErrors | None = None, audio: bool = False, decode_ahead: int = 0):
        self.path, self._decode = path, cfg.decode
        self.errors = errors if errors is not None else decode.PacketErrors(cfg.limits.max_decode_errors, path)
        self.reader = decode.MediaReader(path, errors=self.errors)
        info = self.reader.info
        self.audio = decode.AudioTrack(cfg.decode.audio_rate) if audio and info.has_audio else None
        self._ahead = decode_ahead
        clips = cfg.clips if cfg.clips.clip_len else dataclasses.replace(cfg.clips, clip_len=clip_len)
        detector = detector if detector is not None else make_detector(cfg.shots, info.fps)
        self.sampler = ShotClipSampler(detector, clips, info.fps)
        self.times: list[float] = []

    @property
    def info(self) -> decode.VideoInfo:
        """The container's stream info (its rotation once the first frame is decoded)."""
        return self.reader.info

    def __iter__(self) -> Iterator[tuple[list[Clip], list[Keyframe]]]:
        frames = self.reader.frames(short_side=self._decode.analysis_short_side,
                                    skip_loop_filter=self._decode.skip_loop_filter, audio=self.audio)
        if self._ahead:
            frames = prefetch(frames, maxsize=self._ahead)
        try:
            for frame in frames:
                self.times.append(frame.time_s)
                out = self.sampler.push(frame.index, frame.rgb)
                if out[0] or out[1]:
                    yield out
        finally:
            if self._ahead:
                frames.close()  # stops and joins the decoding thread before its container closes
            self.reader.close()

    def finish(self) -> tuple[list[Clip], list[Keyframe]]:
        """The clips and keyframes of the end of the stream; the sampler's shots are then final."""
        return self.sampler.finish()


class Segmentation(NamedTuple):
    """What one frame pass over a video found (no model run).

    shots : [(start_frame, end_frame)], end exclusive.
    boundaries : one :class:`Boundary` per shot (how it was entered).
    n_frames : frames decoded.
    n_clips : clips the sampler cut for the 3D-CNN.
    fps : the stream's nominal frame rate.
    """

    shots: list
    boundaries: list
    n_frames: int
    n_clips: int
    fps: float


def segment_video(path: str, cfg: Config, *, clip_len: int = 8) -> Segmentation:
    """Decode ``path`` once, detect shots and sample clips exactly as a run does, without a model.

    ``clip_len`` is used when ``cfg.clips.clip_len`` is unset (a run takes it
    from the video model). Used by benchmarks and tests.
    """
    p = ShotPass(path, cfg, clip_len=clip_len)
    n_clips = sum(len(clips) for clips, _ in p) + len(p.finish()[0])
    return Segmentation(p.sampler.shots, p.sampler.boundaries, p.sampler.n_frames, n_clips, p.info.fps)
