"""Decode a video once, streamed: frames at analysis resolution, and audio.

PyAV (FFmpeg's libraries, shipped in the ``av`` wheel) does the decoding and
scales inside libswscale, so only small analysis frames ever reach Python.
Frames are yielded one at a time: memory does not grow with video length.

Damaged input is decoded as far as it goes, the way ffmpeg does: packets are
sent to the decoder one by one, a packet the decoder rejects is skipped and
counted (:class:`PacketErrors`, reported as ``decode_errors`` and a warning),
and past ``limits.max_decode_errors`` the item fails with that reason. A
skipped audio packet leaves its duration in silence, so sound stays in step
with the shots. Cover art (a still picture attached to an audio file) is not
a video stream.

Examples
--------
>>> info = probe("clip.mp4")                                   # doctest: +SKIP
>>> for frame in iter_frames("clip.mp4", short_side=160):      # doctest: +SKIP
...     frame.index, frame.time_s, frame.rgb.shape             # (0, 0.0, (160, 284, 3))
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np

from reelsim.config import LimitConfig
from reelsim.errors import MediaError


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (before decoding).

    fps : average frame rate in frames/s (``nan`` when the container has none).
    duration_s : container duration in seconds (``nan`` when unknown).
    width, height : display size in pixels (the coded size, swapped when
        rotation metadata turns the picture by 90 or 270 degrees).
    has_audio : whether an audio stream exists.
    rotation : counter-clockwise degrees (0, 90, 180, 270) the frames are
        turned by to be upright (from the display matrix).
    """

    path: str
    width: int
    height: int
    fps: float
    duration_s: float
    has_audio: bool
    rotation: int = 0


class Frame(NamedTuple):
    """One decoded frame.

    index : 0-based decode order.
    time_s : presentation time in seconds (exact for variable frame rate).
    rgb : uint8 (H, W, 3) at analysis resolution.
    """

    index: int
    time_s: float
    rgb: np.ndarray


def quarter_turns(rotation_deg: float | None) -> int:
    """Counter-clockwise quarter turns (0-3) that make a frame with this display rotation upright.

    Examples
    --------
    >>> quarter_turns(90), quarter_turns(-90), quarter_turns(-180), quarter_turns(None)
    (1, 3, 2, 0)
    """
    return int(round((rotation_deg or 0) / 90)) % 4


def upright(rgb: np.ndarray, turns: int) -> np.ndarray:
    """(H, W, 3) frame turned ``turns`` quarter turns counter-clockwise, contiguous (as ffmpeg's autorotate)."""
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _first_frame_rotation(container, stream) -> int:
    """Display rotation of the first decodable frame (degrees, 0 when none or undecodable)."""
    errors = PacketErrors(LimitConfig().max_decode_errors, "")
    try:
        for frame in _decoded(container, stream, "video", errors):
            if not isinstance(frame, Skipped):
                return quarter_turns(frame.rotation) * 90
    except (_ContainerDamaged, MediaError):
        pass
    return 0


def _open(path: str):
    import av

    if not os.path.exists(path):
        raise MediaError(f"file not found: {path}")
    if os.path.getsize(path) == 0:
        raise MediaError(f"empty file (0 bytes): {path}")
    try:
        return av.open(path)
    except av.error.FFmpegError as e:
        raise MediaError(f"not a readable media file ({e.__class__.__name__}: {e.strerror or e}): {path}") from None


#: ``AV_DISPOSITION_ATTACHED_PIC``: a "video" stream that is one still picture (cover art).
ATTACHED_PIC = 0x400


def video_stream(container, path: str):
    """The first real video stream of ``container`` (cover art is not one).

    Raises
    ------
    MediaError
        No video stream, or only cover art.
    """
    real = [s for s in container.streams.video if not int(s.disposition) & ATTACHED_PIC]
    if real:
        return real[0]
    if container.streams.video:
        raise MediaError(f"no video stream: the only picture is cover art (a still attached to the audio): {path}")
    raise MediaError(f"no video stream: {path}")


class PacketErrors:
    """Corrupt packets skipped while decoding one item, by stream kind; past ``limit`` the item fails.

    Parameters
    ----------
    limit : int
        Skipped packets allowed in all (``limits.max_decode_errors``).
    path : str
        The file, for the failure reason.
    """

    def __init__(self, limit: int, path: str):
        self.limit, self.path = limit, path
        self.counts: dict[str, int] = {"video": 0, "audio": 0}
        self.first: dict[str, str] = {}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def skip(self, kind: str, error: Exception) -> None:
        """Count one skipped ``kind`` packet; :class:`MediaError` once more than ``limit`` were skipped."""
        self.counts[kind] += 1
        self.first.setdefault(kind, f"{error.__class__.__name__}: {getattr(error, 'strerror', None) or error}")
        if self.total > self.limit:
            raise MediaError(f"too damaged to use: more than {self.limit} corrupt packets "
                             f"(limits.max_decode_errors = {self.limit}): {self.path}")

    def warnings(self) -> list[str]:
        """One line per stream kind that had corrupt packets."""
        return [f"{kind}: {n} corrupt packet(s) skipped, decoding went on (first: {self.first[kind]})"
                for kind, n in self.counts.items() if n]


class _ContainerDamaged(Exception):
    """The demuxer itself failed: nothing after this point of the file can be found."""


class Skipped(NamedTuple):
    """In place of the frames of a packet the decoder rejected: how long they would have lasted (s, 0 if unknown)."""

    seconds: float


def _decoded(container, stream, kind: str, errors: PacketErrors):
    """Frames of ``stream``, decoded packet by packet.

    A packet the decoder rejects is skipped and counted in ``errors``; in its
    place a :class:`Skipped` is yielded. Raises :class:`_ContainerDamaged`
    when demuxing fails.
    """
    import av

    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as e:
            raise _ContainerDamaged(str(e)) from None
        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:
            errors.skip(kind, e)
            yield Skipped(float(packet.duration * packet.time_base) if packet.duration and packet.time_base else 0.0)
            continue
        yield from frames


def probe(path: str) -> VideoInfo:
    """Read a video's stream info without decoding frames.

    Raises
    ------
    MediaError
        Missing, empty or unreadable file, or a file with no video stream.
    """
    with _open(path) as container:
        stream = video_stream(container, path)
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        fps = float(rate) if rate else math.nan
        if container.duration:
            duration = container.duration / 1_000_000
        elif stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        else:
            duration = math.nan
        width, height = stream.codec_context.width, stream.codec_context.height
        has_audio = bool(container.streams.audio)
        rotation = _first_frame_rotation(container, stream)
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(path=path, width=width, height=height, fps=fps, duration_s=duration,
                         has_audio=has_audio, rotation=rotation)


def analysis_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) scaled so the shorter side is ``short_side``, both even.

    Examples
    --------
    >>> analysis_size(1280, 720, 160)
    (284, 160)
    """
    if width <= 0 or height <= 0:
        raise MediaError(f"invalid frame size {width}x{height}")
    scale = short_side / min(width, height)
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def iter_frames(path: str, *, short_side: int, skip_loop_filter: bool = False,
                errors: PacketErrors | None = None) -> Iterator[Frame]:
    """Yield every frame of the first video stream, scaled inside the decoder.

    Threaded decoding (``thread_type="AUTO"``) is used; frames are converted
    to RGB at analysis size by libswscale, then turned upright when the
    stream carries rotation metadata (phone videos), as ffmpeg's autorotate does.
    ``skip_loop_filter`` skips the codec's deblocking filter (libavcodec
    ``skip_loop_filter=all``): cheaper, slightly blockier frames (see
    :class:`reelsim.config.DecodeConfig`). Corrupt packets are skipped and
    counted in ``errors`` (default: a counter with the default limit).

    Raises
    ------
    MediaError
        When the file cannot be opened, has no video stream, the container
        fails before any frame, or ``errors`` passes its limit.
    TruncatedStream
        When the container fails after at least one good frame.
    """
    errors = errors if errors is not None else PacketErrors(LimitConfig().max_decode_errors, path)
    with _open(path) as container:
        stream = video_stream(container, path)
        stream.thread_type = "AUTO"
        if skip_loop_filter:
            # codec options are read when the decoder opens, i.e. at the first packet
            stream.codec_context.options = {"skip_loop_filter": "all"}
        w, h = analysis_size(stream.codec_context.width, stream.codec_context.height, short_side)
        index = 0
        try:
            for frame in _decoded(container, stream, "video", errors):
                if isinstance(frame, Skipped):
                    continue
                t = frame.time if frame.time is not None else math.nan
                rgb = frame.to_ndarray(width=w, height=h, format="rgb24")
                yield Frame(index, float(t), upright(rgb, quarter_turns(frame.rotation)))
                index += 1
        except _ContainerDamaged as e:
            if index == 0:
                raise MediaError(f"video could not be decoded ({e}): {path}") from None
            raise TruncatedStream(index, str(e)) from None


class TruncatedStream(Exception):
    """Decoding stopped with an error after ``n_frames`` good frames (or samples)."""

    def __init__(self, n_frames: int, message: str):
        super().__init__(message)
        self.n_frames = n_frames


def iter_audio(path: str, *, rate: int, chunk_s: float = 10.0,
               errors: PacketErrors | None = None) -> Iterator[np.ndarray]:
    """Yield the first audio stream as mono float32 chunks of about ``chunk_s`` seconds.

    A corrupt packet is skipped, counted in ``errors`` and replaced by
    silence of its duration, so the sound stays in step with the pictures.

    Yields
    ------
    np.ndarray
        float32 (n,) in [-1, 1], sampled at ``rate`` Hz.  Nothing is yielded
        for a file without audio.

    Raises
    ------
    TruncatedStream
        The container failed part-way (what decoded before was yielded).
    MediaError
        ``errors`` passed its limit.
    """
    import av

    errors = errors if errors is not None else PacketErrors(LimitConfig().max_decode_errors, path)
    with _open(path) as container:
        if not container.streams.audio:
            return
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        target = int(chunk_s * rate)
        parts: list[np.ndarray] = []
        have = 0

        def converted(frames):
            for out in frames:
                yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)

        try:
            for frame in _decoded(container, stream, "audio", errors):
                got = [np.zeros(int(round(frame.seconds * rate)), np.float32)] if isinstance(frame, Skipped) \
                    else converted(resampler.resample(frame))
                for samples in got:
                    parts.append(samples)
                    have += samples.size
                    if have >= target:
                        yield np.concatenate(parts)
                        parts, have = [], 0
            for samples in converted(resampler.resample(None)):
                parts.append(samples)
        except _ContainerDamaged as e:
            # A damaged audio tail: keep what decoded, then tell the caller.
            if parts:
                yield np.concatenate(parts)
            raise TruncatedStream(have, str(e)) from None
        if parts:
            yield np.concatenate(parts)
