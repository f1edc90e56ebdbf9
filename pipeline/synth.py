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
