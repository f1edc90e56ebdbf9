"""A labelled shot-boundary set, and how it is scored.

The videos are made by reelsim's one generator of labelled transition videos,
:func:`reelsim.pipeline.synth.build_video`: each is one ffmpeg filter graph of
shots (lavfi sources with texture and motion, or numpy "photos" moved by
``crop``/``zoompan``/``scroll``/``overlay`` so they look like camera footage)
joined by hard cuts, dissolves and fades through black or white, with flashes,
strobes, flickering and colour-cycling light painted over the assembled
stream.  This module holds the set's specifications (:func:`labelled_specs`,
held-out copies with other seeds), the labels, their check on the encoded
file and the scoring.  The ground truth follows from the construction and is
checked on the encoded file (:func:`verify`): frame counts with PyAV, frame
differences peaking exactly at each cut, gradual transitions with no single
step carrying the change, flash frames near white.

Frame conventions (0-based decode order, end exclusive):

- a cut at ``frame`` f: f is the first frame of the new shot;
- a gradual transition ``[start, end)``: the frames that show a mix of the two
  shots (or of a shot and black/white); ``frame`` is its middle;
- a trap ``[start, end)``: frames where a boundary must *not* be reported
  (flash, strobe, flicker, colour cycle, fast pan, zoom, whip pan, scroll,
  long camera move, fast close-up).

Scoring (:func:`score`): a cut is matched by a detection within ``tol`` frames;
a gradual transition by one anywhere in ``[start - tol, end + tol)``; one
detection matches at most one truth and vice versa (nearest first).  An
unmatched detection is a false positive in the class the detector claims
(``cut`` or ``gradual``; ``unmatched`` when it claims none) and, when it lies
on a trap, also a *trap split* of that trap's kind.

Used by ``benchmarks/shots.py``; tests may import it (put ``benchmarks/`` on
``sys.path``) for :func:`verify` and the scoring.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from reelsim.pipeline.synth import (  # re-exported for the tests and benchmarks/shots.py
    FLASH_TRAPS as FLASH_TRAPS,
)
from reelsim.pipeline.synth import (
    JOIN_STYLES as JOIN_STYLES,
)
from reelsim.pipeline.synth import (
    Join as Join,
)
from reelsim.pipeline.synth import (
    Layout as Layout,
)
from reelsim.pipeline.synth import (
    Shot as Shot,
)
from reelsim.pipeline.synth import (
    VideoSpec as VideoSpec,
)
from reelsim.pipeline.synth import (
    build_video as build_video,
)
from reelsim.pipeline.synth import (
    layout as layout,
)

FPS = 25
SMALL = (640, 360)
LARGE = (1280, 720)
#: frames a boundary may be off and still match
TOLERANCE = 2
#: bump when the way videos are built changes (cached videos are then rebuilt)
GENERATOR_VERSION = 2

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
        "painted_frames": sorted(set().union(*lay.painted.values())),  # flash, flicker, cycle and burst frames
        "shot_starts": lay.shot_starts,
        "seed": spec.seed,
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
    - at each cut f, ``diffs[f]`` is the largest in ``[f-3, f+3]`` (the change is exactly there),
      leaving out steps into or out of painted (flash, flicker, colour-cycle) frames;
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
    painted = set(labels.get("painted_frames", labels["flash_frames"]))

    def touches_paint(i: int) -> bool:
        return i in painted or i - 1 in painted

    for t in labels["transitions"]:
        if t["kind"] == "cut":
            f = t["frame"]
            if touches_paint(f):  # a cut onto a flash/flicker frame: the peak is the paint's
                continue
            window = [diffs[i] for i in range(max(1, f - 3), min(n, f + 4)) if not touches_paint(i)]
            if diffs[f] < max(window) or diffs[f] < 3.0:
                problems.append(f"{labels['name']}: cut {f} is not the peak difference "
                                f"({diffs[f]:.1f} vs max {max(window):.1f} in f-3..f+3)")
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
        before = next((i for i in range(tr["start"] - 2, -1, -1) if i not in painted), -1)
        after = next((i for i in range(tr["end"] + 1, n) if i not in painted), n)
        around = [means[i] for i in (before, after) if 0 <= i < n]  # unpainted frames (strobes may abut)
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
    ), (Join("dissolve", 12, "motion"), Join("pixels", 20, "motion"), C, Join("dissolve", 8, "motion"),
        Join("dissolve", 30, "motion"), C, Join("dissolve", 16, "motion"), Join("dissolve", 25), C, Join("pixels", 10)), size)
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
    ), (C, Join("dissolve", 14, "motion"), C, C, Join("dissolve", 20, "motion"), C, Join("fadeblack", 12), C, C,
        Join("dissolve", 18, "motion")), size)
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
    ), (G, G, G, Join("dissolve", 16, "grey"), G, C, Join("cut", tag="similar"), Join("dissolve", 20, "similar"), C,
        Join("cut", tag="similar"), C, Join("cut", tag="similar")), size)
    move = VideoSpec("long-move", (Shot(750, photo="city2", motion="move", speed=2.5),), (), size)
    fl, fc = Join("cut", tag="flicker"), Join("cut", tag="flash")
    flicker = VideoSpec("flicker", (
        Shot(70, "mandelbrot=maxiter=400:start_scale=2:end_scale=1", strobe=(10, 14, 3)),
        Shot(70, photo="city", flicker=(8, 54, 4)),
        Shot(70, "gradients=seed=31:speed=0.02", cycle=(6, 58, 3)),
        Shot(60, "life=seed=33:ratio=0.3:mold=10:life_color=#ff8040:mold_color=#204060", flicker=(0, 60, 6)),
        Shot(60, photo="sunset", motion="pan", speed=4, flicker=(0, 60, 5)),
        Shot(50, "sierpinski=type=carpet:seed=34", flashes=((0, 1),)),
        Shot(50, "cellauto=rule=110:seed=35", flashes=((2, 1),)),
        Shot(50, photo="forest1", flashes=((4, 2),)),
        Shot(50, "perlin=octaves=3:persistence=0.6:tscale=2:random_mode=seed:seed=36", flashes=((1, 1),)),
        Shot(60, photo="sea2", motion="pan", speed=6, strobe=(5, 20, 2)),
        Shot(60, "colorspectrum=type=all", cycle=(0, 60, 2)),
        Shot(60, photo="desert1", flicker=(0, 60, 3), flashes=((20, 1),)),
        Shot(50, "testsrc2", flashes=((0, 1, 0.0),)),
        Shot(60, photo="city2", flicker=(5, 50, 8)),
        Shot(50, photo="sea3", flashes=((3, 2, 0.0),)),
        Shot(70, "gradients=seed=37:speed=0.03", flicker=(0, 70, -8)),
        Shot(60, photo="forest2", motion="pan", speed=5, flashes=((5, 2), (11, 2), (17, 2), (23, 2), (29, 2))),
        Shot(60, "sierpinski=type=triangle:seed=38", flicker=(0, 60, -6)),
    ), (fl, fl, fl, fl, fc, fc, fc, fc, fl, fl, fl, fc, fl, fc, fl, fl, fl), size)
    moving = VideoSpec("moving-gradual", (
        Shot(80, photo="city", motion="pan", speed=12),
        Shot(80, photo="forest1", motion="pan", speed=-12),
        Shot(80, photo="desert1", motion="pan", speed=10),
        Shot(80, photo="sea2", motion="tilt", speed=8),
        Shot(80, photo="sunset", motion="pan", speed=-14),
        Shot(80, photo="city2", motion="closeup", speed=25),
        Shot(80, photo="forest2", motion="closeup", speed=35),
        Shot(70, photo="desert2", motion="pan", speed=16),
        Shot(70, photo="sea1", motion="pan", speed=-9),
        Shot(70, "mandelbrot=maxiter=300:start_scale=1:end_scale=0.3"),
    ), (Join("dissolve", 16, "motion"), Join("fadeblack", 14, "motion"), Join("dissolve", 20, "motion"),
        Join("outin", 8, "motion"), C, C, Join("dissolve", 12, "motion"), Join("fadeblack", 20, "motion"),
        Join("fadewhite", 16, "motion")), size)
    return [cuts, dissolves, fades, camera, grey, move, flicker, moving]


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


def labelled_specs(quick: bool = False, seed: int = 0) -> list[VideoSpec]:
    """The labelled set.

    quick : the first 5 shots of each video and a 6 s camera move.
    seed : held-out copies: the same structure with every lavfi and photo seed
        shifted by ``seed`` (names get ``-s<seed>``).
    """
    specs = _set_specs()
    if quick:
        specs = [truncated(s, 5) if s.name != "long-move" else
                 dataclasses.replace(s, shots=(Shot(150, photo="city2", motion="move", speed=2.5),)) for s in specs]
    if seed:
        specs = [dataclasses.replace(s, name=f"{s.name}-s{seed}", seed=seed) for s in specs]
    return specs


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


def ensure_classes(workdir: Path, seed: int, *, classes=None, progress=print) -> dict:
    """Build (or reuse) the hard classes of issue 24 drawn from ``seed`` (:mod:`reelsim.pipeline.shotclasses`).

    classes : class names (default: all of :data:`~reelsim.pipeline.shotclasses.CLASSES`).
    Returns ``{"videos": [labels, ...], "hash": ...}``; each video's labels
    carry its ``class``.
    """
    from reelsim.pipeline.shotclasses import CLASSES, class_specs

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    videos = []
    for name in classes or CLASSES:
        for spec in class_specs(name, seed):
            videos.append({**ensure_video(spec, workdir, progress), "class": name})
    return {"videos": videos, "speed": None, "hash": hashlib.sha256(
        "".join(v["hash"] for v in videos).encode()).hexdigest()[:16]}


def ensure_set(workdir: Path, *, quick: bool = False, speed_seconds: float | None = 60.0, seed: int = 0,
               progress=print) -> dict:
    """Build (or reuse) the labelled set and, when ``speed_seconds``, the 720p speed video in ``workdir``.

    ``seed``: the held-out copies (see :func:`labelled_specs`).
    Returns ``{"videos": [labels, ...], "speed": labels | None, "left_out": [...]}``;
    each video's labels are also in ``workdir/<name>.json`` (see :func:`labels_of`).
    A held-out copy (``seed`` not 0) whose encoded file does not match its
    labels (another seed can make a shot change faster than the cut into it)
    is left out, with its name and problems in ``left_out``; the labelled set
    itself must match.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    videos, left_out = [], []
    for spec in labelled_specs(quick, seed):
        try:
            videos.append(ensure_video(spec, workdir, progress))
        except RuntimeError as e:
            if not seed:
                raise
            left_out.append({"name": spec.name, "problem": str(e)})
            progress(f"left out of the held-out copy {seed}: {e}")
    speed = ensure_video(speed_spec(speed_seconds), workdir, progress) if speed_seconds else None
    return {"videos": videos, "speed": speed, "left_out": left_out, "hash": hashlib.sha256(
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
    out["flash_splits"] = sum(c.splits.get(k, 0) for k in FLASH_TRAPS)
    out["kind_agreement"] = c.kind_agree / c.classified if c.classified else None
    out["duplicates"] = c.duplicates
    return out
