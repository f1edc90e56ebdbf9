"""Edited copies of videos with known ground truth: where each piece of a copy comes from.

The copy-detection benchmark (``benchmarks/copies.py``) and the tests make
their catalogs here: source videos of photo-like shots moved like camera
footage (:func:`source_spec`, built by :func:`reelsim.pipeline.synth.build_video`),
and the edits a video catalog meets: picture-in-picture in any corner,
split-screen, an excerpt of a longer video, a trailer-style montage of
excerpts of several sources, mirror plus crop, speed change, a vertical
re-frame, a colour grade with letterbox, logo and noise, a low-resolution
re-encode.

Every edit returns :class:`EditTruth`: the pieces of the copy, each a time
span of the copy and the span of the source it shows (seconds), so a
benchmark can score both whether a copy was found and where.

Examples
--------
>>> from pathlib import Path
>>> import tempfile
>>> d = Path(tempfile.mkdtemp())
>>> src = build_source(d / "a.mp4", seed=1, n_shots=3, shot_s=1.0, size=(192, 108))   # doctest: +SKIP
>>> truth = excerpt(src, d / "a-excerpt.mp4", start_s=0.5, dur_s=1.5)                  # doctest: +SKIP
>>> truth.pieces[0]                                                                    # doctest: +SKIP
Piece(source='a.mp4', src_start=0.5, src_end=2.0, dst_start=0.0, dst_end=1.5)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from reelsim.pipeline.synth import PHOTOS, Join, Shot, VideoSpec, build_video, run_ffmpeg

#: camera motions of source shots (see :class:`reelsim.pipeline.synth.Shot`)
MOTIONS = ("pan", "tilt", "zoom", "zoomout", "move", "closeup", "still")
FPS = 25


class Piece(NamedTuple):
    """One piece of a copy: ``source``'s ``[src_start, src_end)`` shown at the copy's ``[dst_start, dst_end)`` (s)."""

    source: str
    src_start: float
    src_end: float
    dst_start: float
    dst_end: float


@dataclass
class EditTruth:
    """What an edit made: its kind, parameters and the pieces of each source it shows."""

    path: Path
    kind: str
    pieces: list[Piece]
    params: dict = field(default_factory=dict)


def source_spec(seed: int, *, n_shots: int = 6, shot_s: float = 2.0, size: tuple[int, int] = (320, 180),
                name: str = "source") -> VideoSpec:
    """A source video: ``n_shots`` photo shots with camera motion, joined by cuts.

    Shot lengths vary around ``shot_s`` (0.6x to 1.4x), photos and motions
    are drawn from ``seed`` and every photo's texture is re-seeded by it, so
    two seeds give unrelated footage with the same kind of look.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    names = sorted(PHOTOS)
    shots = []
    for _ in range(n_shots):
        frames = int(round(shot_s * FPS * rng.uniform(0.6, 1.4)))
        motion = MOTIONS[int(rng.integers(len(MOTIONS)))]
        speed = {"pan": 3.0, "tilt": 2.0, "zoom": 0.004, "zoomout": 0.004, "move": 3.0, "closeup": 6.0}.get(motion, 0)
        shots.append(Shot(frames, photo=names[int(rng.integers(len(names)))], motion=motion,
                          speed=float(speed * rng.uniform(0.6, 1.4))))
    return VideoSpec(name, tuple(shots), tuple(Join("cut") for _ in shots[1:]), size=size, crf=20,
                     seed=1000 + 37 * seed)


def build_source(path: Path, seed: int, **kw) -> Path:
    """:func:`source_spec` encoded to ``path`` (made once; photos cached beside it)."""
    path = Path(path)
    if not path.exists():
        build_video(source_spec(seed, name=path.stem, **kw), path, photos=path.parent / "photos")
    return path


def duration_s(path: Path) -> float:
    """Seconds of video in ``path`` (frames / frame rate of its stream)."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        n = s.frames or sum(1 for _ in c.demux(s) if _.size)
        return float(n / s.average_rate)


def _encode(dst: Path, *args: str, crf: int = 23) -> Path:
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.stem}.tmp{dst.suffix}")
    run_ffmpeg(tmp, *args, "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
               "-r", str(FPS), "-an")
    tmp.replace(dst)
    return dst


def _whole(src: Path, dst_dur: float, speed: float = 1.0) -> list[Piece]:
    return [Piece(Path(src).name, 0.0, dst_dur * speed, 0.0, dst_dur)]


def picture_in_picture(src: Path, host: Path, dst: Path, *, scale: float, corner: str,
                       margin: float = 0.03) -> EditTruth:
    """``src`` shrunk to ``scale`` of the frame's width and height over ``host``, in ``corner`` (tl, tr, bl, br).

    Lasts as long as the shorter of the two.
    """
    if corner not in ("tl", "tr", "bl", "br"):
        raise ValueError(f"corner must be tl, tr, bl or br, got {corner!r}")
    m = f"{margin:.3f}"
    x = f"W*{m}" if corner[1] == "l" else f"W-w-W*{m}"
    y = f"H*{m}" if corner[0] == "t" else f"H-h-H*{m}"
    graph = (f"[1:v]scale=trunc(iw*{scale}/2)*2:trunc(ih*{scale}/2)*2[p];"
             f"[0:v][p]overlay=x={x}:y={y}:shortest=1,format=yuv420p[out]")
    _encode(dst, "-i", str(host), "-i", str(src), "-filter_complex", graph, "-map", "[out]")
    d = duration_s(dst)
    return EditTruth(Path(dst), "pip", _whole(src, d), {"scale": scale, "corner": corner, "host": Path(host).name})


def split_screen(left: Path, right: Path, dst: Path) -> EditTruth:
    """Two videos side by side, each centre-cropped to half the width (a comparison or reaction video)."""
    graph = ("[0:v]crop=iw/2:ih,scale=trunc(iw/2)*2:trunc(ih/2)*2[a];[1:v]crop=iw/2:ih,scale=trunc(iw/2)*2:"
             "trunc(ih/2)*2[b];[a][b]hstack=shortest=1,format=yuv420p[out]")
    _encode(dst, "-i", str(left), "-i", str(right), "-filter_complex", graph, "-map", "[out]")
    d = duration_s(dst)
    return EditTruth(Path(dst), "split", _whole(left, d) + _whole(right, d))


def excerpt(src: Path, dst: Path, *, start_s: float, dur_s: float) -> EditTruth:
    """``dur_s`` seconds of ``src`` from ``start_s`` (re-encoded)."""
    _encode(dst, "-ss", f"{start_s:.3f}", "-i", str(src), "-t", f"{dur_s:.3f}")
    d = duration_s(dst)
    return EditTruth(Path(dst), "excerpt", [Piece(Path(src).name, start_s, start_s + d, 0.0, d)],
                     {"start_s": start_s, "fraction": round(d / duration_s(src), 3)})


def montage(parts: list[tuple[Path, float, float]], dst: Path, *, size: tuple[int, int] = (320, 180)) -> EditTruth:
    """A trailer-style montage: excerpt ``(source, start_s, dur_s)`` after excerpt, cut together."""
    args, chains = [], []
    for i, (src, start, dur) in enumerate(parts):
        args += ["-ss", f"{start:.3f}", "-t", f"{dur:.3f}", "-i", str(src)]
        chains.append(f"[{i}:v]scale={size[0]}:{size[1]},setsar=1,fps={FPS},format=yuv420p[v{i}]")
    graph = ";".join(chains) + ";" + "".join(f"[v{i}]" for i in range(len(parts))) + \
        f"concat=n={len(parts)}:v=1:a=0[out]"
    _encode(dst, *args, "-filter_complex", graph, "-map", "[out]")
    pieces, t = [], 0.0
    for src, start, dur in parts:
        n = int(round(dur * FPS))  # frames each excerpt contributes
        pieces.append(Piece(Path(src).name, start, start + n / FPS, t, t + n / FPS))
        t += n / FPS
    return EditTruth(Path(dst), "montage", pieces, {"sources": len(parts)})


def mirror_crop(src: Path, dst: Path, *, crop: float = 0.8) -> EditTruth:
    """Mirrored left-right and centre-cropped to ``crop`` of the width and height (scaled back)."""
    _encode(dst, "-i", str(src), "-vf", f"hflip,crop=iw*{crop}:ih*{crop},scale=trunc(iw/{crop}/2)*2:trunc(ih/{crop}/2)*2")
    return EditTruth(Path(dst), "mirror-crop", _whole(src, duration_s(dst)), {"crop": crop})


def speed_change(src: Path, dst: Path, *, speed: float) -> EditTruth:
    """Played ``speed`` times faster (0.5: slow motion, each frame shown twice)."""
    _encode(dst, "-i", str(src), "-vf", f"setpts=PTS/{speed}")
    return EditTruth(Path(dst), "slowmo" if speed < 1 else "speed", _whole(src, duration_s(dst), speed),
                     {"speed": speed})


def vertical_reframe(src: Path, dst: Path, *, size: tuple[int, int] = (180, 320)) -> EditTruth:
    """A 9:16 re-frame: the centre strip of a landscape video, scaled to a portrait frame."""
    _encode(dst, "-i", str(src), "-vf", f"crop=ih*9/16:ih,scale={size[0]}:{size[1]}")
    return EditTruth(Path(dst), "vertical", _whole(src, duration_s(dst)))


def grade_letterbox(src: Path, dst: Path, *, seed: int = 0) -> EditTruth:
    """A colour grade, letterbox bars (2.35:1 inside 16:9), a logo box in a corner and grain."""
    vf = ("eq=contrast=1.25:saturation=1.4:gamma=0.85,colorbalance=rs=0.12:bs=-0.1,"
          "scale=iw:trunc(ih*0.76/2)*2,pad=iw:trunc(ih/0.76/2)*2:0:(oh-ih)/2:black,"
          "drawbox=x=iw*0.84:y=ih*0.16:w=iw*0.12:h=ih*0.08:color=white@0.8:t=fill,"
          f"noise=alls=10:allf=t+u:all_seed={seed}")
    _encode(dst, "-i", str(src), "-vf", vf)
    return EditTruth(Path(dst), "grade", _whole(src, duration_s(dst)))


def low_resolution(src: Path, dst: Path, *, scale: float = 0.35) -> EditTruth:
    """Shrunk to ``scale`` of its size and re-encoded at low quality."""
    _encode(dst, "-i", str(src), "-vf", f"scale=trunc(iw*{scale}/2)*2:trunc(ih*{scale}/2)*2", crf=34)
    return EditTruth(Path(dst), "lowres", _whole(src, duration_s(dst)), {"scale": scale})
