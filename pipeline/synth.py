"""Synthetic media with known structure, made with ffmpeg (no downloads).

Used by ``reelsim demo``, the tests and the benchmarks.  ffmpeg is the static
binary shipped by the ``imageio-ffmpeg`` wheel, driven through
``ffmpeg-python``; lavfi sources (fractals, cellular automata, noise, test
patterns) become shots joined by hard cuts at known frames, each with its own
tone or noise on the audio track.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reelsim.errors import MediaError


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary shipped by imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@dataclass(frozen=True)
class Segment:
    """One shot: ``source`` is a lavfi video source expression without size/rate
    (e.g. ``"mandelbrot"``, ``"life=seed=3:mold=10"``); ``audio`` a lavfi audio
    source (e.g. ``"sine=frequency=440"``) or None for silence."""

    source: str
    frames: int
    audio: str | None = None


def _video_source(source: str, size: tuple[int, int], fps: int) -> str:
    sep = ":" if "=" in source else "="
    return f"{source}{sep}size={size[0]}x{size[1]}:rate={fps}"


def _run(stream, path: Path) -> Path:
    import ffmpeg

    try:
        stream.overwrite_output().run(cmd=ffmpeg_exe(), quiet=True)
    except ffmpeg.Error as e:
        tail = (e.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        raise MediaError(f"ffmpeg failed making {path}: {' | '.join(tail)}") from None
    return path


def make_video(path: Path, segments: list[Segment], *, size: tuple[int, int] = (320, 240), fps: int = 25,
               audio: bool = True, crf: int = 23) -> Path:
    """Encode ``segments`` back to back (H.264 + AAC in mp4).

    Segment ``i`` starts at frame ``sum(s.frames for s in segments[:i])``: the
    hard cuts are exactly there.
    """
    import ffmpeg

    if len(set(segments)) != len(segments):
        # ffmpeg-python merges identical graph nodes, which ffmpeg then rejects.
        raise ValueError("make_video: segments must differ (source, frames or audio)")
    parts = []
    for seg in segments:
        v = ffmpeg.input(_video_source(seg.source, size, fps), f="lavfi").video
        v = v.filter("trim", end_frame=seg.frames).filter("setpts", "PTS-STARTPTS").filter("format", "yuv420p")
        parts.append(v)
        if audio:
            dur = seg.frames / fps
            src = seg.audio or "anullsrc=channel_layout=mono"
            sep = ":" if "=" in src else "="
            a = ffmpeg.input(f"{src}{sep}sample_rate=44100", f="lavfi").audio
            parts.append(a.filter("atrim", duration=dur).filter("asetpts", "PTS-STARTPTS"))
    joined = ffmpeg.concat(*parts, v=1, a=1 if audio else 0, unsafe=True).node
    streams = [joined[0], joined[1]] if audio else [joined[0]]
    out = ffmpeg.output(*streams, str(path), vcodec="libx264", crf=crf, preset="veryfast", pix_fmt="yuv420p",
                        r=fps, **({"acodec": "aac", "ac": 1} if audio else {}))
    return _run(out, Path(path))


def edit_copy(src: Path, dst: Path, *, scale: float = 0.5, hflip: bool = True, crf: int = 30,
              crop: float = 1.0, speed: float = 1.0) -> Path:
    """A re-encoded, edited copy of a video, audio kept (and sped up with it).

    Parameters
    ----------
    scale : frame size factor (0.5 = half width and height).
    hflip : mirror left-right.
    crf : H.264 quality of the re-encode (higher = worse).
    crop : keep the centre ``crop`` fraction of width and height (0.8 = 80%), before scaling.
    speed : play ``speed`` times faster (1.2 = 20% shorter), video and audio alike.
    """
    import ffmpeg

    if not (0 < crop <= 1 and 0 < scale and 0.5 <= speed <= 2):
        raise ValueError(f"edit_copy: need 0 < crop <= 1, scale > 0, 0.5 <= speed <= 2; got {crop}, {scale}, {speed}")
    inp = ffmpeg.input(str(src))
    v = inp.video
    if crop < 1:
        v = v.filter("crop", f"trunc(iw*{crop}/2)*2", f"trunc(ih*{crop}/2)*2")
    v = v.filter("scale", f"trunc(iw*{scale}/2)*2", f"trunc(ih*{scale}/2)*2")
    if hflip:
        v = v.filter("hflip")
    a = inp.audio
    if speed != 1:
        v = v.filter("setpts", f"PTS/{speed}")
        a = a.filter("atempo", speed)
    out = ffmpeg.output(v, a, str(dst), vcodec="libx264", crf=crf, preset="veryfast",
                        pix_fmt="yuv420p", acodec="aac")
    return _run(out, Path(dst))


def make_image(path: Path, source: str, *, size: tuple[int, int] = (320, 320), frame: int = 10) -> Path:
    """A still image (png/jpg by extension) taken from a lavfi source at ``frame``."""
    import ffmpeg

    v = ffmpeg.input(_video_source(source, size, 25), f="lavfi").video.filter("select", f"eq(n,{frame})")
    return _run(ffmpeg.output(v, str(path), vframes=1), Path(path))


# ------------------------------------------------------------- awkward inputs
# Generators for the bad/awkward input catalogue (tests/test_bad_inputs.py).


def _ffmpeg(path: Path, *args: str) -> Path:
    """Run the bundled ffmpeg with ``args`` writing ``path``; MediaError with ffmpeg's last lines on failure."""
    import subprocess

    proc = subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise MediaError(f"ffmpeg failed making {path}: {' | '.join(tail)}")
    return Path(path)


def make_pattern_video(path: Path, *, size: tuple[int, int], frames: int, fps: int = 25,
                       source: str = "testsrc2", audio: bool = False, audio_codec: str = "aac",
                       gop: int | None = None, extra: tuple[str, ...] = ()) -> Path:
    """A single-shot H.264 clip of ``frames`` frames at ``size`` (``audio``: a 440 Hz tone).

    ``audio_codec``: e.g. ``aac`` or ``ac3``; ``gop``: a keyframe every ``gop``
    frames (default: x264's, one in 250); ``extra``: more output options
    (e.g. ``("-output_ts_offset", "3600")``).
    """
    args = ["-f", "lavfi", "-i", _video_source(source, size, fps)]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-c:a", audio_codec, "-shortest"]
    if gop:
        args += ["-g", str(gop)]
    return _ffmpeg(path, *args, *extra, "-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast",
                   "-pix_fmt", "yuv420p")


def make_audio_only(path: Path, *, seconds: float = 1.0) -> Path:
    """An mp4 holding only an AAC tone: no video stream."""
    return _ffmpeg(path, "-f", "lavfi", "-i", "sine=frequency=440", "-t", str(seconds), "-c:a", "aac")


def make_vfr_video(path: Path, shots: list[tuple[str, int, int]], *, size: tuple[int, int] = (160, 120)) -> Path:
    """A variable-frame-rate video: shot ``i`` is ``(source, frames, fps)``, kept at its own rate.

    Shot ``i`` starts at ``sum(frames_j / fps_j for j < i)`` seconds and at
    frame ``sum(frames_j)``; the container's average rate matches neither.
    """
    args, labels = [], []
    for n, (source, frames, fps) in enumerate(shots):
        args += ["-f", "lavfi", "-i", _video_source(source, size, fps)]
        labels.append(f"[{n}:v]trim=end_frame={frames},setpts=PTS-STARTPTS,format=yuv420p[v{n}]")
    graph = ";".join(labels) + ";" + "".join(f"[v{n}]" for n in range(len(shots))) + \
        f"concat=n={len(shots)}:v=1:a=0[out]"
    return _ffmpeg(path, *args, "-filter_complex", graph, "-map", "[out]", "-fps_mode", "vfr",
                   "-c:v", "libx264", "-preset", "ultrafast", "-video_track_timescale", "1000")


def with_rotation(src: Path, dst: Path, degrees: int) -> Path:
    """A stream copy of ``src`` whose display matrix says: turn ``degrees`` counter-clockwise to view."""
    return _ffmpeg(dst, "-display_rotation", str(degrees), "-i", str(src), "-c", "copy")


def truncated_copy(src: Path, dst: Path, *, keep: float = 1 / 3) -> Path:
    """The first ``keep`` of ``src`` re-muxed with the index in front (faststart), as an interrupted download."""
    fast = Path(dst).with_name(f".{Path(dst).name}.faststart.mp4")
    _ffmpeg(fast, "-i", str(src), "-c", "copy", "-movflags", "+faststart")
    data = fast.read_bytes()
    fast.unlink()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


#: transition name -> ffmpeg xfade transition
XFADE = {"dissolve": "fade", "fade": "fadeblack", "fadewhite": "fadewhite"}


@dataclass(frozen=True)
class Join:
    """How segment ``i`` follows segment ``i - 1``: ``kind`` is ``cut`` or a key
    of :data:`XFADE`; ``frames`` is the transition's length (0 for a cut)."""

    kind: str = "cut"
    frames: int = 0


def make_edited_video(path: Path, segments: list[Segment], joins: list[Join], *, size: tuple[int, int] = (320, 180),
                      fps: int = 25, flashes: tuple[int, ...] = (), crf: int = 20) -> list[dict]:
    """Encode ``segments`` joined by cuts, dissolves and fades (no audio); return the true transitions.

    ``joins[i - 1]`` joins segment ``i`` to what came before.  A gradual join of
    ``L`` frames overlaps the two segments by ``L`` frames (ffmpeg ``xfade``).
    ``flashes`` are output frames turned near-white (a photo flash) that must
    not split a shot.

    Returns
    -------
    list of ``{"kind", "start", "end"}``: frames ``[start, end)`` of each
    transition in the output (``start == end`` = first frame of the new shot
    for a cut).
    """
    if len(joins) != len(segments) - 1:
        raise ValueError("need one join per segment after the first")
    parts = [f"{_video_source(s.source, size, fps)},trim=end_frame={s.frames},setpts=PTS-STARTPTS,"
             f"settb=1/{fps},format=yuv420p[s0{i}]" for i, s in enumerate(segments)]
    current, length, truth = "s00", segments[0].frames, []
    for i, (seg, join) in enumerate(zip(segments[1:], joins), start=1):
        out = f"j{i}"
        if join.kind == "cut":
            parts.append(f"[{current}][s0{i}]concat=n=2:v=1:a=0,settb=1/{fps}[{out}]")
            truth.append({"kind": "cut", "start": length, "end": length})
            length += seg.frames
        else:
            offset = (length - join.frames) / fps
            parts.append(f"[{current}][s0{i}]xfade=transition={XFADE[join.kind]}:duration={join.frames / fps}"
                         f":offset={offset}[{out}]")
            truth.append({"kind": join.kind, "start": length - join.frames, "end": length})
            length += seg.frames - join.frames
        current = out
    flash = "+".join(f"eq(n,{f})" for f in flashes)
    last = f"[{current}]eq=brightness=0.6:enable='{flash}'[out]" if flashes else f"[{current}]null[out]"
    parts.append(last)
    _ffmpeg(path, "-filter_complex", ";".join(parts), "-map", "[out]", "-c:v", "libx264", "-preset", "veryfast",
            "-crf", str(crf), "-pix_fmt", "yuv420p", "-r", str(fps))
    return truth


# ------------------------------------------------------------- hostile inputs
# Damaged files as they arrive from the field (tests/test_hostile_inputs.py).


def overwrite_bytes(path: Path, offset: int, n: int, *, seed: int = 0) -> Path:
    """Overwrite ``n`` bytes of ``path`` from ``offset`` with seeded random bytes (a damaged download)."""
    import numpy as np

    data = bytearray(Path(path).read_bytes())
    data[offset:offset + n] = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    Path(path).write_bytes(bytes(data))
    return Path(path)


def damage_packets(path: Path, kind: str, packets: list[int], *, nbytes: int = 8) -> list[int]:
    """Zero the first ``nbytes`` bytes of the given packets of the first ``kind`` (video/audio) stream.

    A zeroed header (an AC-3 sync word, an H.264 NAL header) makes the
    decoder reject exactly those packets.  Returns the byte offsets damaged.
    """
    import av

    with av.open(str(path)) as c:
        stream = (c.streams.video if kind == "video" else c.streams.audio)[0]
        found = [(p.pos, p.size) for p in c.demux(stream) if p.size]
    data = bytearray(Path(path).read_bytes())
    offsets = []
    for i in packets:
        pos, size = found[i]
        data[pos:pos + min(nbytes, size)] = bytes(min(nbytes, size))
        offsets.append(pos)
    Path(path).write_bytes(bytes(data))
    return offsets


def make_ts_with_jump(path: Path, *, jump_s: float, size: tuple[int, int] = (160, 120), seconds: float = 2.0) -> Path:
    """An MPEG-TS of two ``seconds``-long shots whose timestamps jump by ``jump_s`` at the join.

    Made as a broadcast capture is: two TS files joined byte for byte, the
    second stamped ``jump_s`` later (a PTS discontinuity).  Both have a tone.
    """
    frames = int(seconds * 25)
    parts = []
    for n, (source, offset) in enumerate((("testsrc2", 0.0), ("mandelbrot", jump_s))):
        part = Path(path).with_name(f".{Path(path).name}.{n}.ts")
        make_pattern_video(part, size=size, frames=frames, source=source, audio=True,
                           extra=("-output_ts_offset", str(offset)))
        parts.append(part.read_bytes())
        part.unlink()
    Path(path).write_bytes(b"".join(parts))
    return Path(path)


def make_cover_art_only(path: Path, image: Path, *, seconds: float = 2.0) -> Path:
    """An mp4 holding an AAC tone and ``image`` as cover art (an attached picture): no real video."""
    return _ffmpeg(path, "-f", "lavfi", "-t", str(seconds), "-i", "sine=frequency=440", "-i", str(image),
                   "-map", "0", "-map", "1", "-c:a", "aac", "-c:v", "png", "-disposition:v", "attached_pic")


def write_blank_png(path: Path, width: int, height: int) -> Path:
    """A black 8-bit greyscale PNG of ``width`` x ``height``: tiny on disk, huge when decoded.

    Written without holding the picture: one row, deflated and fully flushed
    (so each copy is the same bytes), repeated ``height`` times; the zlib
    checksum of all-zero data is ``(n % 65521) << 16 | 1``.
    """
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = bytes(width + 1)  # filter byte 0, then zero pixels
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated_row = z.compress(row) + z.flush(zlib.Z_FULL_FLUSH)
    n = len(row) * height
    idat = b"\x78\xda" + deflated_row * height + z.flush() + struct.pack(">I", (n % 65521) << 16 | 1)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return Path(path)
