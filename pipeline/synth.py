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


def edit_copy(src: Path, dst: Path, *, scale: float = 0.5, hflip: bool = True, crf: int = 30) -> Path:
    """A re-encoded, downscaled (and mirrored) copy of a video, audio kept."""
    import ffmpeg

    inp = ffmpeg.input(str(src))
    v = inp.video.filter("scale", f"trunc(iw*{scale}/2)*2", f"trunc(ih*{scale}/2)*2")
    if hflip:
        v = v.filter("hflip")
    out = ffmpeg.output(v, inp.audio, str(dst), vcodec="libx264", crf=crf, preset="veryfast",
                        pix_fmt="yuv420p", acodec="aac")
    return _run(out, Path(dst))


def make_image(path: Path, source: str, *, size: tuple[int, int] = (320, 320), frame: int = 10) -> Path:
    """A still image (png/jpg by extension) taken from a lavfi source at ``frame``."""
    import ffmpeg

    v = ffmpeg.input(_video_source(source, size, 25), f="lavfi").video.filter("select", f"eq(n,{frame})")
    return _run(ffmpeg.output(v, str(path), vframes=1), Path(path))


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
    import subprocess

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
    cmd = [ffmpeg_exe(), "-y", "-v", "error", "-filter_complex", ";".join(parts), "-map", "[out]",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p", "-r", str(fps), str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise MediaError(f"ffmpeg failed making {path}: {proc.stderr.strip()[-300:]}")
    return truth
