"""A labelled shot-boundary set made with ffmpeg and numpy, and how it is scored.

Every video is one ffmpeg filter graph: shots (lavfi sources with texture and
motion, or numpy "photos" moved by ``crop``/``zoompan``/``scroll`` so they
look like camera footage) joined by hard cuts (``concat``), dissolves
(``xfade=fade|dissolve``) and fades through black or white
(``xfade=fadeblack|fadewhite``, or ``fade`` out + ``fade`` in), with flash
frames and strobes painted over the assembled stream (``lutrgb`` enabled on
``between(n,a,b)``).  The ground truth follows from the construction and is
checked on the encoded file (:func:`verify`): frame counts with PyAV, frame
differences peaking exactly at each cut, gradual transitions with no single
step carrying the change, flash frames near white.

Frame conventions (0-based decode order, end exclusive):

- a cut at ``frame`` f: f is the first frame of the new shot;
- a gradual transition ``[start, end)``: the frames that show a mix of the two
  shots (or of a shot and black/white); ``frame`` is its middle;
- a trap ``[start, end)``: frames where a boundary must *not* be reported
  (flash, strobe, fast pan, zoom, whip pan, scroll, long camera move).

Scoring (:func:`score`): a cut is matched by a detection within ``tol`` frames;
a gradual transition by one anywhere in ``[start - tol, end + tol)``; one
detection matches at most one truth and vice versa (nearest first).  An
unmatched detection is a false positive in the class the detector claims
(``cut`` or ``gradual``; ``unmatched`` when it claims none) and, when it lies
on a trap, also a *trap split* of that trap's kind.

Used by ``benchmarks/shots.py``; tests may import it (put ``benchmarks/`` on
``sys.path``) to build single videos with :func:`build_video`.

Examples
--------
>>> v = VideoSpec("tiny", (Shot(30, "testsrc2"), Shot(30, "mandelbrot")), (Join("fadeblack", 10),))
>>> [t.kind for t in layout(v).transitions]
['fade']
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

FPS = 25
SMALL = (640, 360)
LARGE = (1280, 720)
#: frames a boundary may be off and still match
TOLERANCE = 2
#: bump when the way videos are built changes (cached videos are then rebuilt)
GENERATOR_VERSION = 1

# ---------------------------------------------------------------------------
# Specification
# ---------------------------------------------------------------------------

#: join style -> transition class written to the labels
JOIN_KINDS = {
    "cut": "cut",
    "fade": "dissolve",  # xfade=fade: a cross-dissolve
    "dissolve": "dissolve",  # xfade=dissolve: pixel-random dissolve
    "fadeblack": "fade",
    "fadewhite": "fade",
    "outin": "fade",  # fade out to black, fade in from black
    "outin-white": "fade",
}
#: motions that are traps (a boundary inside such a shot is a false split)
TRAP_MOTIONS = ("pan", "tilt", "zoom", "zoomout", "whip", "scroll", "move")


@dataclass(frozen=True)
class Shot:
    """One shot of ``frames`` frames.

    source : lavfi source without size/rate (``"mandelbrot"``, ``"life=seed=3"``),
        or ``""`` when ``photo`` is set.
    photo : name in :data:`PHOTOS`; moved by ``motion``.
    motion : ``still``, ``pan`` (x moves ``speed`` px/frame at 640 px width),
        ``tilt`` (y moves), ``whip`` (fast pan with motion blur), ``zoom``
        (zoom factor grows ``speed`` per frame), ``zoomout``, ``scroll``
        (``speed`` = fraction of the width per frame, wrapping), ``move``
        (a long wandering zoom-and-pan, ``speed`` times faster than a slow drift).
    look : extra ffmpeg filters after the source (``"format=gray"``, ``"noise=alls=8:allf=t"``).
    flashes : ((offset, n_frames), ...): near-white frames, offset from the shot's first frame.
    strobe : (offset, count, period): ``count`` single white frames every ``period`` frames.
    """

    frames: int
    source: str = ""
    photo: str = ""
    motion: str = "still"
    speed: float = 0.0
    look: str = ""
    flashes: tuple = ()
    strobe: tuple = ()


@dataclass(frozen=True)
class Join:
    """How two consecutive shots are joined: ``style`` in :data:`JOIN_KINDS`;
    ``frames`` = transition length (for ``outin``: frames of fade on each side);
    ``tag`` marks special cases in the labels (``grey``, ``similar``, ``motion``)."""

    style: str
    frames: int = 0
    tag: str = ""


@dataclass(frozen=True)
class VideoSpec:
    name: str
    shots: tuple
    joins: tuple
    size: tuple = SMALL
    crf: int = 18

    def __post_init__(self):
        if len(self.joins) != len(self.shots) - 1:
            raise ValueError(f"{self.name}: {len(self.shots)} shots need {len(self.shots) - 1} joins")
        for j in self.joins:
            if j.style not in JOIN_KINDS:
                raise ValueError(f"{self.name}: unknown join style {j.style!r}")


class Transition(NamedTuple):
    kind: str  # cut | dissolve | fade
    frame: int
    start: int
    end: int
    style: str = "cut"
    tag: str = ""


class Trap(NamedTuple):
    kind: str  # flash | strobe | pan | tilt | zoom | zoomout | whip | scroll | move
    start: int
    end: int


class Layout(NamedTuple):
    """Where everything lands in the encoded video (frame indices)."""

    n_frames: int
    shot_starts: list  # output index of each shot's own frame 0
    transitions: list  # [Transition]
    traps: list  # [Trap]
    flash_frames: list  # frames painted near white


# ---------------------------------------------------------------------------
# Photos: numpy images that pan and zoom like camera footage
# ---------------------------------------------------------------------------

PALETTES = {
    "city": [(40, 50, 70), (120, 130, 140), (200, 190, 170), (150, 110, 80), (235, 225, 200)],
    "forest": [(10, 40, 15), (40, 90, 30), (90, 140, 50), (60, 70, 30), (170, 190, 90)],
    "desert": [(120, 70, 30), (190, 130, 70), (230, 180, 120), (160, 100, 50), (250, 220, 170)],
    "sea": [(10, 30, 70), (20, 70, 130), (60, 120, 170), (30, 90, 140), (170, 200, 220)],
    "sunset": [(40, 10, 50), (140, 40, 70), (230, 110, 50), (250, 190, 90), (90, 30, 90)],
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
}


def smooth_field(rng: np.random.Generator, w: int, h: int, cells=(96, 24, 6), amps=(1.0, 0.45, 0.2)) -> np.ndarray:
    """Multi-scale value noise in [0, 1], float32 (h, w): large smooth forms plus fine texture."""
    import cv2

    out = np.zeros((h, w), np.float32)
    for cell, amp in zip(cells, amps):
        small = rng.random((h // cell + 3, w // cell + 3)).astype(np.float32)
        big = cv2.resize(small, ((w // cell + 3) * cell, (h // cell + 3) * cell), interpolation=cv2.INTER_CUBIC)
        out += amp * big[cell : cell + h, cell : cell + w]
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def palette_map(values: np.ndarray, palette) -> np.ndarray:
    """Map values in [0, 1] (h, w) through colour stops -> float32 (h, w, 3) in 0..255."""
    stops = np.linspace(0.0, 1.0, len(palette))
    pal = np.asarray(palette, np.float32)
    return np.stack([np.interp(values, stops, pal[:, c]) for c in range(3)], axis=-1).astype(np.float32)


def make_photo(name: str, w: int, h: int) -> np.ndarray:
    """A photo-like uint8 RGB (h, w, 3) image: textured palette field, a horizon, structures, grain."""
    import cv2

    palette_name, seed, structures = PHOTOS[name]
    palette = PALETTES[palette_name]
    rng = np.random.default_rng(seed)
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


def photo_file(folder: Path, name: str, w: int, h: int) -> Path:
    """The photo ``name`` at ``w``x``h`` as a JPEG in ``folder`` (made once)."""
    import cv2

    path = folder / f"photo-{name}-{w}x{h}.jpg"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        rgb = make_photo(name, w, h)
        tmp = path.with_suffix(".tmp.jpg")
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 93]):
            raise OSError(f"could not write {tmp}")
        tmp.replace(path)
    return path


# ---------------------------------------------------------------------------
# Layout: ground truth from the specification
# ---------------------------------------------------------------------------


def layout(spec: VideoSpec) -> Layout:
    """Frame positions of shots, transitions and traps in the encoded video.

    xfade of ``d`` frames is run with duration ``d + 1`` frames at offset
    ``L - d - 1`` (``L`` = frames so far): output frames ``[L - d, L)`` are
    mixed, the next shot's frame ``j`` lands at ``L - d - 1 + j``.
    """
    starts, transitions = [0], []
    length = spec.shots[0].frames
    for join, shot in zip(spec.joins, spec.shots[1:]):
        kind = JOIN_KINDS[join.style]
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
    traps, flash_frames = [], []
    for i, (shot, s) in enumerate(zip(spec.shots, starts)):
        for off, n in shot.flashes:
            traps.append(Trap("flash", s + off, s + off + n))
            flash_frames += range(s + off, s + off + n)
        if shot.strobe:
            off, count, period = shot.strobe
            frames = [s + off + period * k for k in range(count)]
            traps.append(Trap("strobe", frames[0], frames[-1] + 1))
            flash_frames += frames
        if shot.motion in TRAP_MOTIONS:
            lo = transitions[i - 1].end if i else 0
            hi = transitions[i].start if i < len(transitions) else length
            if hi - lo > 2 * (TOLERANCE + 1):
                traps.append(Trap(shot.motion, lo + TOLERANCE + 1, hi - TOLERANCE - 1))
    return Layout(length, starts, transitions, traps, sorted(flash_frames))


# ---------------------------------------------------------------------------
# Building: one ffmpeg filter graph per video
# ---------------------------------------------------------------------------


def _source(expr: str, size, fps: int) -> str:
    sep = ":" if "=" in expr else "="
    return f"{expr}{sep}size={size[0]}x{size[1]}:rate={fps}"


def _photo_size(shot: Shot, size) -> tuple[int, int]:
    w, h = size
    if shot.motion in ("pan", "whip"):
        return 5 * w, (3 * h) // 2
    if shot.motion == "tilt":
        return (3 * w) // 2, 4 * h
    if shot.motion == "scroll" or shot.motion == "still":
        return w, h
    return 3 * w, 3 * h  # zoom, zoomout, move: same aspect as the output


def _shot_input(shot: Shot, size, fps: int, photos: Path) -> tuple[list[str], str]:
    """ffmpeg input arguments (``[]`` for a lavfi source) and the filter chain that makes the shot.

    The chain starts with ``{in}`` where the input label goes.
    """
    w, h = size
    k = w / 640.0  # speeds are given at 640 px width
    n = shot.frames
    if shot.source:
        return [], _source(shot.source, size, fps)
    path = photo_file(photos, shot.photo, *_photo_size(shot, size))
    loop = ["-loop", "1", "-framerate", str(fps), "-i", str(path)]
    single = ["-i", str(path)]
    v = shot.speed * k
    if shot.motion == "still":
        return loop, "{in}null"
    if shot.motion in ("pan", "whip"):
        x0 = "0" if v >= 0 else "iw-ow"
        chain = f"{{in}}crop=w={w}:h={h}:x='max(0,min(iw-ow,{x0}+{v:.3f}*n))':y='(ih-oh)/2+{h // 8}*sin(n/40)'"
        if shot.motion == "whip":
            chain += ",tmix=frames=3"
        return loop, chain
    if shot.motion == "tilt":
        y0 = "0" if v >= 0 else "ih-oh"
        return loop, f"{{in}}crop=w={w}:h={h}:x='(iw-ow)/2':y='max(0,min(ih-oh,{y0}+{v:.3f}*n))'"
    if shot.motion == "scroll":
        return loop, f"{{in}}scroll=horizontal={shot.speed:.4f}"
    centre = "x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)'"
    if shot.motion == "zoom":
        return single, f"{{in}}zoompan=z='1+{shot.speed:.4f}*on':{centre}:d={n}:s={w}x{h}:fps={fps}"
    if shot.motion == "zoomout":
        z0 = 1 + shot.speed * n
        return single, f"{{in}}zoompan=z='max(1,{z0:.4f}-{shot.speed:.4f}*on)':{centre}:d={n}:s={w}x{h}:fps={fps}"
    if shot.motion == "move":
        r = shot.speed or 1.0  # how fast the camera wanders (1 = slow drift)
        z = f"1.7+0.6*sin(on*{r:.3f}/97)"
        x = f"(iw-iw/zoom)*(0.5+0.5*sin(on*{r:.3f}/61))"
        y = f"(ih-ih/zoom)*(0.5+0.45*sin(on*{r:.3f}/83+1))"
        return single, f"{{in}}zoompan=z='{z}':x='{x}':y='{y}':d={n}:s={w}x{h}:fps={fps}"
    raise ValueError(f"unknown motion {shot.motion!r}")


def filter_graph(spec: VideoSpec, photos: Path, fps: int = FPS) -> tuple[list[str], str, Layout]:
    """ffmpeg input arguments, the ``-filter_complex`` text (output label ``[out]``) and the layout."""
    lay = layout(spec)
    args: list[str] = []
    chains: list[str] = []
    n_inputs = 0
    regular = f"settb=1/{fps},setpts=N"
    for i, shot in enumerate(spec.shots):
        inp, chain = _shot_input(shot, spec.size, fps, photos)
        if inp:
            chain = chain.replace("{in}", f"[{n_inputs}:v]")
            args += inp
            n_inputs += 1
        else:
            chain = chain.replace("{in}", "")
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
        if join.style == "cut" or join.style.startswith("outin"):
            chains.append(f"[{acc}][s{i}]concat=n=2:v=1:a=0,{regular}[{out}]")
            length += shot.frames
        else:
            d = join.frames
            offset = (length - d - 1) / fps
            chains.append(
                f"[{acc}][s{i}]xfade=transition={join.style}:duration={(d + 1) / fps:.6f}:offset={offset:.6f},"
                f"{regular}[{out}]"
            )
            length = length - d - 1 + shot.frames
        acc = out
    if lay.flash_frames:
        on = "+".join(f"eq(n,{f})" for f in lay.flash_frames)
        white = "val*0.15+215"
        chains.append(f"[{acc}]lutrgb=r='{white}':g='{white}':b='{white}':enable='{on}',format=yuv420p[out]")
    else:
        chains.append(f"[{acc}]null[out]")
    return args, ";".join(chains), lay


def build_video(spec: VideoSpec, path: Path, photos: Path, fps: int = FPS) -> Layout:
    """Encode ``spec`` to ``path`` (H.264, yuv420p, no audio); return its layout (the ground truth)."""
    from reelsim.pipeline.synth import ffmpeg_exe

    args, graph, lay = filter_graph(spec, photos, fps)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args, "-filter_complex", graph,
           "-map", "[out]", "-frames:v", str(lay.n_frames), "-c:v", "libx264", "-preset", "veryfast",
           "-crf", str(spec.crf), "-pix_fmt", "yuv420p", "-r", str(fps), "-an", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-4:])
        raise RuntimeError(f"ffmpeg failed making {path.name}: {tail}")
    tmp.replace(path)
    return lay


def labels_of(spec: VideoSpec, lay: Layout, file: str, fps: int = FPS) -> dict:
    """The JSON ground truth of one video."""
    return {
        "name": spec.name,
        "file": file,
        "fps": fps,
        "size": list(spec.size),
        "n_frames": lay.n_frames,
        "transitions": [t._asdict() for t in lay.transitions],
        "traps": [t._asdict() for t in lay.traps],
        "flash_frames": lay.flash_frames,
        "shot_starts": lay.shot_starts,
    }


# ---------------------------------------------------------------------------
# Verification on the encoded file
# ---------------------------------------------------------------------------


def frame_stats(path: Path, short_side: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame luma means and frame-to-frame mean absolute differences.

    Returns
    -------
    means : float32 (n,), 0..255
    diffs : float32 (n,); ``diffs[i]`` = mean |frame i - frame i-1| in RGB, ``diffs[0] = 0``.
    """
    from reelsim.pipeline.decode import iter_frames

    means, diffs, prev = [], [], None
    for f in iter_frames(str(path), short_side=short_side):
        cur = f.rgb.astype(np.int16)
        means.append(float(cur.mean()))
        diffs.append(0.0 if prev is None else float(np.abs(cur - prev).mean()))
        prev = cur
    return np.asarray(means, np.float32), np.asarray(diffs, np.float32)


def verify(path: Path, labels: dict) -> list[str]:
    """Check that the encoded file matches its labels; returns problems (empty = fine).

    - the decoded frame count equals ``n_frames``;
    - at each cut f, ``diffs[f]`` is the largest in ``[f-3, f+3]`` (the change is exactly there);
    - inside a gradual transition no single step carries more than 60% of the
      change from the frame before it to the frame after it;
    - flash frames are near white (mean > 200) and brighter than the frames around the trap.
    """
    means, diffs = frame_stats(path)
    problems = []
    if len(diffs) != labels["n_frames"]:
        problems.append(f"{labels['name']}: {len(diffs)} frames decoded, {labels['n_frames']} labelled")
        return problems
    n = len(diffs)
    for t in labels["transitions"]:
        if t["kind"] == "cut":
            f = t["frame"]
            window = diffs[max(1, f - 3) : min(n, f + 4)]
            if diffs[f] < window.max() or diffs[f] < 3.0:
                problems.append(f"{labels['name']}: cut {f} is not the peak difference "
                                f"({diffs[f]:.1f} vs max {window.max():.1f} in f-3..f+3)")
        else:
            s, e = t["start"], t["end"]
            steps = diffs[s : e + 1]
            a, b = max(0, s - 1), min(n - 1, e)
            total = float(np.sum(diffs[a + 1 : b + 1]))
            if steps.max() > 0.6 * total:
                problems.append(f"{labels['name']}: gradual [{s},{e}) has a step of {steps.max():.1f} "
                                f"of {total:.1f} total (looks like a cut)")
    for tr in labels["traps"]:
        if tr["kind"] not in ("flash", "strobe"):
            continue
        around = [means[i] for i in (tr["start"] - 2, tr["end"] + 1) if 0 <= i < n]
        for f in (x for x in labels["flash_frames"] if tr["start"] <= x < tr["end"]):
            if means[f] < 200 or means[f] < max(around) + 20:
                problems.append(f"{labels['name']}: flash frame {f} mean {means[f]:.0f} (around {around})")
    return problems


# ---------------------------------------------------------------------------
# The set
# ---------------------------------------------------------------------------

GREY = "format=gray"
NOISE = "noise=alls=8:allf=t"
C, G = Join("cut"), Join("cut", tag="grey")


def _set_specs(size=SMALL) -> list[VideoSpec]:
    """The labelled videos (640x360, 25 fps, 20-40 s each)."""
    cuts = VideoSpec("cuts", (
        Shot(80, "mandelbrot=maxiter=400", flashes=((40, 1),)),
        Shot(50, "testsrc2"),
        Shot(70, "life=seed=7:ratio=0.25:mold=12:life_color=#ffd040:mold_color=#402060", flashes=((30, 2),)),
        Shot(45, "cellauto=rule=110:seed=3"),
        Shot(60, "sierpinski=type=carpet:seed=2"),
        Shot(60, "gradients=seed=5:speed=0.05"),
        Shot(40, "smptehdbars", look=NOISE),
        Shot(60, "perlin=octaves=3:persistence=0.6:xscale=2:yscale=2:random_mode=seed:seed=1", look=GREY),
        Shot(55, "life=seed=11:ratio=0.4:mold=8", look=GREY),
        Shot(55, "mandelbrot=maxiter=300:start_scale=1.5:end_scale=0.2", look=GREY),
        Shot(60, photo="forest1", motion="pan", speed=3),
        Shot(60, photo="forest2", motion="pan", speed=-3),
        Shot(40, "colorspectrum=type=all"),
    ), (C, C, C, C, C, C, C, G, G, C, Join("cut", tag="similar"), C), size)
    dissolves = VideoSpec("dissolves", (
        Shot(90, photo="city", motion="pan", speed=6),
        Shot(80, "mandelbrot=maxiter=400"),
        Shot(70, "life=seed=3:ratio=0.3:mold=10:life_color=#80ff80:mold_color=#203060"),
        Shot(80, photo="desert1", motion="pan", speed=-8),
        Shot(80, photo="sea1", motion="zoom", speed=0.006),
        Shot(70, "gradients=seed=9:speed=0.1"),
        Shot(80, photo="forest1", motion="pan", speed=10),
        Shot(60, "sierpinski=type=triangle:seed=4"),
        Shot(60, "testsrc2"),
        Shot(70, "perlin=octaves=3:persistence=0.6:tscale=2:random_mode=seed:seed=5"),
        Shot(70, photo="city2", motion="tilt", speed=5),
    ), (Join("fade", 12, "motion"), Join("dissolve", 20, "motion"), C, Join("fade", 8, "motion"),
        Join("fade", 30, "motion"), C, Join("fade", 16, "motion"), Join("fade", 25), C, Join("dissolve", 10)), size)
    fades = VideoSpec("fades", (
        Shot(60, "life=seed=5:ratio=0.3:mold=10"),
        Shot(70, "testsrc2", strobe=(25, 4, 3)),
        Shot(80, photo="city", motion="pan", speed=5),
        Shot(70, "mandelbrot=maxiter=400:start_scale=2:end_scale=0.5"),
        Shot(60, "cellauto=rule=30:seed=8"),
        Shot(70, "gradients=seed=13:speed=0.05"),
        Shot(70, "sierpinski=type=carpet:seed=7"),
        Shot(50, "smptehdbars", look=NOISE),
        Shot(70, photo="desert2", motion="zoom", speed=0.005),
        Shot(70, "perlin=octaves=3:persistence=0.6:tscale=2:random_mode=seed:seed=9"),
    ), (Join("fadeblack", 16), Join("fadewhite", 12), Join("outin", 10), C, Join("fadeblack", 24),
        Join("outin-white", 8), Join("fadeblack", 30), C, Join("fadewhite", 20)), size)
    camera = VideoSpec("camera", (
        Shot(70, photo="city", motion="pan", speed=36),
        Shot(60, photo="forest1", motion="zoom", speed=0.07),
        Shot(40, photo="desert1", motion="whip", speed=120),
        Shot(50, photo="sea2", flashes=((25, 1),)),
        Shot(80, photo="sunset", motion="pan", speed=16, flashes=((40, 2),)),
        Shot(60, photo="city2", motion="scroll", speed=0.04),
        Shot(60, photo="city", motion="zoomout", speed=0.06),
        Shot(50, photo="forest2", motion="pan", speed=-48),
        Shot(40, photo="sunset", motion="whip", speed=-100),
        Shot(60, "mandelbrot=maxiter=400:start_scale=1:end_scale=0.1"),
        Shot(60, photo="desert2", motion="tilt", speed=10),
    ), (C, Join("fade", 14, "motion"), C, C, Join("fade", 20, "motion"), C, Join("fadeblack", 12), C, C,
        Join("fade", 18, "motion")), size)
    grey = VideoSpec("grey-similar", (
        Shot(60, "perlin=octaves=3:persistence=0.5:random_mode=seed:seed=21", look=GREY),
        Shot(60, "perlin=octaves=2:persistence=0.8:xscale=3:yscale=3:random_mode=seed:seed=22", look=GREY),
        Shot(60, "life=seed=23:ratio=0.35:mold=6", look=GREY),
        Shot(70, photo="city", motion="pan", speed=8, look=GREY),
        Shot(60, "mandelbrot=maxiter=300:start_scale=2:end_scale=1", look=GREY),
        Shot(60, "sierpinski=type=triangle:seed=24", look=GREY),
        Shot(60, photo="sea1", motion="zoom", speed=0.004),
        Shot(60, photo="sea2", motion="pan", speed=4),
        Shot(60, photo="sea3", motion="tilt", speed=3),
        Shot(60, photo="desert1", motion="pan", speed=-4),
        Shot(60, photo="desert2", motion="zoom", speed=0.004),
        Shot(60, "gradients=c0=#3060a0:c1=#80a0d0:nb_colors=2:seed=25:speed=0.01"),
        Shot(60, "gradients=c0=#3060a0:c1=#80a0d0:nb_colors=2:seed=26:speed=0.01"),
    ), (G, G, G, Join("fade", 16, "grey"), G, C, Join("cut", tag="similar"), Join("fade", 20, "similar"), C,
        Join("cut", tag="similar"), C, Join("cut", tag="similar")), size)
    move = VideoSpec("long-move", (Shot(750, photo="city2", motion="move", speed=2.5),), (), size)
    return [cuts, dissolves, fades, camera, grey, move]


def truncated(spec: VideoSpec, n_shots: int) -> VideoSpec:
    """The first ``n_shots`` shots of ``spec`` (for ``--quick``)."""
    if len(spec.shots) <= n_shots:
        return spec
    return dataclasses.replace(spec, shots=spec.shots[:n_shots], joins=spec.joins[: n_shots - 1])


def speed_spec(seconds: float = 60.0, size=LARGE, fps: int = FPS) -> VideoSpec:
    """A 1280x720 H.264 video of ``seconds`` made of the labelled set's shots (also labelled)."""
    specs = _set_specs(size)
    shots, joins = [], []
    for spec in specs[:4]:
        if shots:
            joins.append(C)
        shots += spec.shots
        joins += spec.joins
    target = int(round(seconds * fps))
    last = 30  # the closing shot pads the video to exactly ``target`` frames
    while len(shots) > 1:
        n = layout(VideoSpec("x", tuple(shots), tuple(joins), size)).n_frames
        if n <= target - last:
            break
        shots.pop()
        joins.pop()
    shots.append(Shot(target - n, "testsrc2", look=NOISE))
    joins.append(C)
    spec = VideoSpec("speed-720p", tuple(shots), tuple(joins), size, crf=21)
    got = layout(spec).n_frames
    if got != target:
        raise AssertionError(f"speed video is {got} frames, wanted {target}")
    return spec


def labelled_specs(quick: bool = False) -> list[VideoSpec]:
    """The labelled set; ``quick``: the first 5 shots of the first five videos and a 6 s camera move."""
    specs = _set_specs()
    if not quick:
        return specs
    out = [truncated(s, 5) for s in specs[:-1]]
    out.append(dataclasses.replace(specs[-1], shots=(Shot(150, photo="city2", motion="move", speed=2.5),)))
    return out


def spec_hash(spec: VideoSpec) -> str:
    """Hash of a video's specification and :data:`GENERATOR_VERSION` (16 hex chars)."""
    blob = json.dumps([GENERATOR_VERSION, dataclasses.asdict(spec)], sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def ensure_video(spec: VideoSpec, workdir: Path, progress=print) -> dict:
    """Build ``workdir/<name>.mp4`` and its labels ``<name>.json`` unless both exist for this spec.

    A new file is verified (:func:`verify`) before its labels are written.

    Raises
    ------
    RuntimeError
        When ffmpeg fails or the encoded file does not match its labels.
    """
    from reelsim.storage.atomic import write_text_atomic

    file, label_path = f"{spec.name}.mp4", workdir / f"{spec.name}.json"
    h = spec_hash(spec)
    if label_path.exists() and (workdir / file).exists():
        labels = json.loads(label_path.read_text())
        if labels.get("hash") == h:
            return labels
    progress(f"building {file} ({spec.size[0]}x{spec.size[1]}, {len(spec.shots)} shots)")
    lay = build_video(spec, workdir / file, workdir / "photos")
    labels = {**labels_of(spec, lay, file), "hash": h}
    problems = verify(workdir / file, labels)
    if problems:
        raise RuntimeError(f"{file} does not match its labels:\n  " + "\n  ".join(problems))
    write_text_atomic(label_path, json.dumps(labels, indent=1))
    return labels


def ensure_set(workdir: Path, *, quick: bool = False, speed_seconds: float | None = 60.0,
               progress=print) -> dict:
    """Build (or reuse) the labelled set and, when ``speed_seconds``, the 720p speed video in ``workdir``.

    Returns ``{"videos": [labels, ...], "speed": labels | None}``; each video's
    labels are also in ``workdir/<name>.json`` (see :func:`labels_of`).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    videos = [ensure_video(s, workdir, progress) for s in labelled_specs(quick)]
    speed = ensure_video(speed_spec(speed_seconds), workdir, progress) if speed_seconds else None
    return {"videos": videos, "speed": speed, "hash": hashlib.sha256(
        "".join(v["hash"] for v in videos).encode()).hexdigest()[:16]}


# ---------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------

#: detector kind -> scoring class
CLAIMS = {"cut": "cut", "dissolve": "gradual", "fade": "gradual", "gradual": "gradual", None: "unmatched"}


class Detection(NamedTuple):
    frame: int
    kind: str | None = None  # cut | dissolve | fade | None (detector gives no class)


@dataclass
class Counts:
    """Matches per class; ``fp`` by claimed class; ``splits`` by trap kind."""

    tp: dict = field(default_factory=lambda: {"cut": 0, "gradual": 0})
    fn: dict = field(default_factory=lambda: {"cut": 0, "gradual": 0})
    fp: dict = field(default_factory=lambda: {"cut": 0, "gradual": 0, "unmatched": 0})
    splits: dict = field(default_factory=dict)
    kind_agree: int = 0  # matched detections whose claimed class equals the truth's
    classified: int = 0  # matched detections that claim a class at all
    duplicates: int = 0  # unmatched detections inside a matched truth's window

    def add(self, other: "Counts") -> "Counts":
        for name in ("tp", "fn", "fp", "splits"):
            mine = getattr(self, name)
            for k, v in getattr(other, name).items():
                mine[k] = mine.get(k, 0) + v
        self.kind_agree += other.kind_agree
        self.classified += other.classified
        self.duplicates += other.duplicates
        return self


def truth_class(t: dict) -> str:
    return "cut" if t["kind"] == "cut" else "gradual"


def window(t: dict, tol: int = TOLERANCE) -> tuple[int, int]:
    """Frames ``[lo, hi)`` where a detection matches truth ``t``."""
    if t["kind"] == "cut":
        return t["frame"] - tol, t["frame"] + tol + 1
    return t["start"] - tol, t["end"] + tol


def _distance(t: dict, f: int) -> int:
    if t["kind"] == "cut":
        return abs(f - t["frame"])
    if t["start"] <= f < t["end"]:
        return 0
    return t["start"] - f if f < t["start"] else f - t["end"] + 1


def match(truths: list[dict], detections: list[Detection], tol: int = TOLERANCE) -> list[tuple[int, int]]:
    """One-to-one (truth index, detection index) pairs, nearest pairs first."""
    pairs = []
    for ti, t in enumerate(truths):
        lo, hi = window(t, tol)
        for di, d in enumerate(detections):
            if lo <= d.frame < hi:
                pairs.append((_distance(t, d.frame), ti, di))
    used_t, used_d, out = set(), set(), []
    for _, ti, di in sorted(pairs):
        if ti not in used_t and di not in used_d:
            used_t.add(ti)
            used_d.add(di)
            out.append((ti, di))
    return out


def score(labels: dict, detections: list[Detection], tol: int = TOLERANCE) -> Counts:
    """Count matches of ``detections`` against one video's labels (see the module docstring)."""
    truths = labels["transitions"]
    pairs = match(truths, detections, tol)
    c = Counts()
    matched_t = {ti for ti, _ in pairs}
    matched_d = {di for _, di in pairs}
    for ti, di in pairs:
        cls = truth_class(truths[ti])
        c.tp[cls] += 1
        c.kind_agree += CLAIMS.get(detections[di].kind, "unmatched") == cls
        c.classified += detections[di].kind is not None
    for ti, t in enumerate(truths):
        if ti not in matched_t:
            c.fn[truth_class(t)] += 1
    for di, d in enumerate(detections):
        if di in matched_d:
            continue
        c.fp[CLAIMS.get(d.kind, "unmatched")] += 1
        if any(window(truths[ti], tol)[0] <= d.frame < window(truths[ti], tol)[1] for ti in matched_t):
            c.duplicates += 1
        for tr in labels["traps"]:
            if tr["start"] - tol <= d.frame < tr["end"] + tol:
                c.splits[tr["kind"]] = c.splits.get(tr["kind"], 0) + 1
                break
    return c


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall, F1 (1.0 where nothing was to be found and nothing was reported)."""
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def summary(c: Counts) -> dict:
    """P/R/F1 per class and overall, trap splits, and the raw counts."""
    out = {}
    for cls in ("cut", "gradual"):
        p, r, f = prf(c.tp[cls], c.fp[cls], c.fn[cls])
        out[cls] = {"precision": p, "recall": r, "f1": f, "tp": c.tp[cls], "fp": c.fp[cls], "fn": c.fn[cls]}
    tp, fn = sum(c.tp.values()), sum(c.fn.values())
    fp = sum(c.fp.values())
    p, r, f = prf(tp, fp, fn)
    out["unmatched_fp"] = c.fp["unmatched"]
    out["overall"] = {"precision": p, "recall": r, "f1": f, "tp": tp, "fp": fp, "fn": fn}
    out["trap_splits"] = dict(sorted(c.splits.items()))
    out["flash_splits"] = c.splits.get("flash", 0) + c.splits.get("strobe", 0)
    out["kind_agreement"] = c.kind_agree / c.classified if c.classified else None
    out["duplicates"] = c.duplicates
    return out
