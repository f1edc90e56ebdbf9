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

import dataclasses
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

    def rotated(self, degrees: int) -> "VideoInfo":
        """This info for frames turned ``degrees`` (a multiple of 90): width and height swap at 90 and 270.

        Examples
        --------
        >>> info = VideoInfo("v.mp4", 1920, 1080, 30.0, 10.0, True).rotated(90)
        >>> info.width, info.height, info.rotation
        (1080, 1920, 90)
        """
        degrees %= 360
        if degrees == self.rotation:
            return self
        swap = (degrees - self.rotation) % 180 == 90
        w, h = (self.height, self.width) if swap else (self.width, self.height)
        return dataclasses.replace(self, width=w, height=h, rotation=degrees)


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
    for _, frame in _demuxed(container, {stream.index: (stream, kind)}, errors):
        yield frame


def _demuxed(container, streams: dict, errors: PacketErrors):
    """``(kind, frame)`` of every stream in ``streams`` ({stream index: (stream, kind)}), in one demux pass.

    Packets come in file order and each goes to its own stream's decoder; a
    rejected packet is skipped, counted in ``errors`` under its kind, and
    stands as a :class:`Skipped`. Raises :class:`_ContainerDamaged` when
    demuxing fails.
    """
    import av

    packets = container.demux(*(s for s, _ in streams.values()))
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.error.FFmpegError as e:
            raise _ContainerDamaged(str(e)) from None
        kind = streams[packet.stream.index][1]
        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:
            errors.skip(kind, e)
            yield kind, Skipped(float(packet.duration * packet.time_base) if packet.duration and packet.time_base
                                else 0.0)
            continue
        for frame in frames:
            yield kind, frame


def probe(path: str) -> VideoInfo:
    """Read a video's stream info without decoding frames (but the first, for its rotation).

    Raises
    ------
    MediaError
        Missing, empty or unreadable file, or a file with no video stream.
    """
    with _open(path) as container:
        stream = video_stream(container, path)
        info = _container_info(container, stream, path)
        rotation = _first_frame_rotation(container, stream)
        return info.rotated(rotation)


def _container_info(container, stream, path: str) -> VideoInfo:
    """What the container says about its first real video stream (rotation not known yet: 0)."""
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    fps = float(rate) if rate else math.nan
    if container.duration:
        duration = container.duration / 1_000_000
    elif stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    else:
        duration = math.nan
    return VideoInfo(path=path, width=stream.codec_context.width, height=stream.codec_context.height, fps=fps,
                     duration_s=duration, has_audio=bool(container.streams.audio))


class AudioTrack:
    """A video's audio decoded in the same demux pass as its frames: mono float32 at ``rate`` Hz.

    Kept in blocks of about ``chunk_s`` seconds (4 bytes a sample: 64 KB per
    second at 16 kHz) until the shots are known and the audio features are
    pooled per shot (:meth:`chunks`); the samples are the same as
    :func:`iter_audio` reads in a pass of its own. A skipped audio packet stands
    as silence of its duration. ``truncated`` says why decoding stopped early.
    """

    def __init__(self, rate: int, chunk_s: float = 10.0):
        self.rate, self._target = rate, int(chunk_s * rate)
        self._blocks: list[np.ndarray] = []
        self._parts: list[np.ndarray] = []
        self._have = 0
        self.samples = 0
        self.truncated: str | None = None

    def append(self, samples: np.ndarray) -> None:
        self._parts.append(samples)
        self._have += samples.size
        self.samples += samples.size
        if self._have >= self._target:
            self._blocks.append(np.concatenate(self._parts))
            self._parts, self._have = [], 0

    def chunks(self) -> Iterator[np.ndarray]:
        """The samples in order, in blocks of about ``chunk_s`` seconds."""
        yield from self._blocks
        if self._parts:
            yield np.concatenate(self._parts)


class MediaReader:
    """One open video file: what it holds (:attr:`info`) and one demux pass over its frames and audio.

    A run opens each video once: the stream info, every frame at the
    analysis size and, when asked, the audio track all come from the same
    container (:meth:`frames`). ``info.rotation`` (and a 90/270 degree swap of
    ``width``/``height``) is known once the first frame is decoded.

    Examples
    --------
    >>> with MediaReader("clip.mp4") as video:               # doctest: +SKIP
    ...     audio = AudioTrack(16000)
    ...     n = sum(1 for _ in video.frames(short_side=160, audio=audio))
    ...     video.info.fps, n, audio.samples
    (25.0, 90, 57600)
    """

    def __init__(self, path: str, *, errors: PacketErrors | None = None):
        self.path = path
        self.errors = errors if errors is not None else PacketErrors(LimitConfig().max_decode_errors, path)
        self._container = _open(path)
        try:
            self._stream = video_stream(self._container, path)
            self.info = _container_info(self._container, self._stream, path)
        except BaseException:
            self._container.close()
            raise

    def __enter__(self) -> "MediaReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def frames(self, *, short_side: int, skip_loop_filter: bool = False,
               audio: AudioTrack | None = None) -> Iterator[Frame]:
        """Every frame of the video stream at the analysis size (see :func:`iter_frames`); with ``audio``,
        the first audio stream is decoded in the same pass into it.

        Raises
        ------
        MediaError
            The container fails before any frame, or ``errors`` passes its limit.
        TruncatedStream
            The container fails after at least one good frame (``audio.truncated`` says so too).
        """
        import av
        from av.video.reformatter import VideoReformatter

        container, stream = self._container, self._stream
        stream.thread_type = "AUTO"
        if skip_loop_filter:
            # codec options are read when the decoder opens, i.e. at the first packet
            stream.codec_context.options = {"skip_loop_filter": "all"}
        w, h = analysis_size(stream.codec_context.width, stream.codec_context.height, short_side)
        streams = {stream.index: (stream, "video")}
        if audio is not None and container.streams.audio:
            sound = container.streams.audio[0]
            streams[sound.index] = (sound, "audio")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=audio.rate)
        scale = VideoReformatter()  # one scaler for every frame (a frame's own would be built again each time)
        index = 0
        try:
            for kind, frame in _demuxed(container, streams, self.errors):
                if kind == "audio":
                    if isinstance(frame, Skipped):
                        audio.append(np.zeros(int(round(frame.seconds * audio.rate)), np.float32))
                    else:
                        for out in resampler.resample(frame):
                            audio.append(_samples(out))
                    continue
                if isinstance(frame, Skipped):
                    continue
                t = frame.time if frame.time is not None else math.nan
                turns = quarter_turns(frame.rotation)
                if index == 0:
                    self.info = self.info.rotated(turns * 90)
                rgb = scale.reformat(frame, width=w, height=h, format="rgb24").to_ndarray()
                yield Frame(index, float(t), upright(rgb, turns))
                index += 1
            if len(streams) > 1:
                for out in resampler.resample(None):
                    audio.append(_samples(out))
        except _ContainerDamaged as e:
            if audio is not None:
                audio.truncated = str(e)
            if index == 0:
                raise MediaError(f"video could not be decoded ({e}): {self.path}") from None
            raise TruncatedStream(index, str(e)) from None


def _samples(frame) -> np.ndarray:
    """float32 (n,) of a resampled mono audio frame."""
    return frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)


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
    with MediaReader(path, errors=errors) as video:
        yield from video.frames(short_side=short_side, skip_loop_filter=skip_loop_filter)


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
