"""reelsim's shot detector on the five failure modes of issue 14, each a small labelled video.

1. flicker inside a shot (strobe, a lamp flickering every 8 frames, colour cycling): no split;
2. a flash right after a real cut: the cut stays, no fade is reported;
3. a dissolve and a fade between panning textured shots, a dissolve out of a fast close-up: found;
4. cuts between flickering shots: frame-exact;
5. a fast-moving close-up on a static background: no split.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import build_clips

from reelsim.config import Config
from reelsim.extractors.transitions import SmallFrame, TransitionParams, mad, trimmed_mad
from reelsim.pipeline.segment import segment_video
from reelsim.pipeline.synth import Join, Shot

SIZE = (320, 180)
TRAPS = {
    "strobe": ((Shot(50, "mandelbrot=maxiter=200", strobe=(6, 12, 3)),), ()),
    "lamp-every-8": ((Shot(60, photo="city", flicker=(4, 52, 8)),), ()),
    "irregular-lamp": ((Shot(60, "gradients=seed=37:speed=0.03", flicker=(0, 60, -8)),), ()),
    "colour-cycle": ((Shot(50, "gradients=seed=31:speed=0.02", cycle=(2, 48, 3)),), ()),
    "flash-after-cut": ((Shot(40, "mandelbrot=maxiter=200"), Shot(40, photo="sea3", flashes=((3, 2, 0.0),))),
                        (Join("cut"),)),
    "white-frame-cut": ((Shot(40, "cellauto=rule=110:seed=3"), Shot(40, "testsrc2", flashes=((0, 1, 0.0),))),
                        (Join("cut"),)),
    "moving-dissolve-fade": ((Shot(50, photo="city", motion="pan", speed=12),
                              Shot(55, photo="forest1", motion="pan", speed=-12),
                              Shot(50, photo="desert1", motion="pan", speed=10)),
                             (Join("dissolve", 16), Join("fadeblack", 14))),
    "closeup-dissolve": ((Shot(50, photo="forest2", motion="closeup", speed=35),
                          Shot(45, photo="desert2", motion="pan", speed=16)), (Join("dissolve", 12),)),
    "flickering-cuts": ((Shot(45, "life=seed=33:ratio=0.3:mold=10:life_color=#ff8040:mold_color=#204060",
                              flicker=(0, 45, 6)),
                         Shot(45, photo="sunset", motion="pan", speed=4, flicker=(0, 45, 5)),
                         Shot(40, "colorspectrum=type=all", cycle=(0, 40, 2)),
                         Shot(40, photo="desert1", flicker=(0, 40, 3))), (Join("cut"),) * 3),
    "closeup": ((Shot(75, photo="city2", motion="closeup", speed=35),), ()),
    # flat pictures have no structure to keep: a change of plain colour is a cut, not light
    "plain-colour-cuts": ((Shot(20, "color=c=red"), Shot(12, "color=c=blue"), Shot(20, "color=c=0x208020")),
                          (Join("cut"), Join("cut"))),
}


@pytest.fixture(scope="session")
def traps(tmp_path_factory):
    """name -> (path, layout) for every trap video (built once, 320x180)."""
    return build_clips(TRAPS, tmp_path_factory.mktemp("traps"), SIZE)


def found(path):
    return [(b.frame, b.kind) for b in segment_video(str(path), Config()).boundaries if b.kind != "start"]


@pytest.mark.parametrize("name", ["strobe", "lamp-every-8", "irregular-lamp", "colour-cycle", "closeup"])
def test_flicker_and_fast_closeup_do_not_split_a_shot(traps, name):
    path, lay = traps[name]
    assert lay.traps and found(path) == []


@pytest.mark.parametrize("name", ["flash-after-cut", "white-frame-cut", "flickering-cuts", "plain-colour-cuts"])
def test_cuts_next_to_flashes_and_flicker_stay_frame_exact(traps, name):
    path, lay = traps[name]
    truth = [(t.frame, "cut") for t in lay.transitions]
    got = found(path)
    if name == "white-frame-cut":  # the white frame is the new shot's first: either side of it is exact
        assert len(got) == 1 and got[0][1] == "cut" and got[0][0] - truth[0][0] in (0, 1)
    else:
        assert got == truth


@pytest.mark.parametrize("name", ["moving-dissolve-fade", "closeup-dissolve"])
def test_gradual_transitions_between_moving_shots_are_found(traps, name):
    path, lay = traps[name]
    got = found(path)
    assert [k for _, k in got] == [t.kind for t in lay.transitions]
    for (f, _), t in zip(got, lay.transitions):
        assert t.start - 2 <= f < t.end + 2


def test_structure_ignores_light_and_trimmed_difference_ignores_a_small_subject():
    rng = np.random.default_rng(0)
    rgb = rng.integers(30, 200, (36, 64, 3), dtype=np.uint8)
    bright, dim = SmallFrame(rgb, (64, 36)), SmallFrame((rgb * 0.45).astype(np.uint8), (64, 36))
    other = SmallFrame(rng.integers(30, 200, (36, 64, 3), dtype=np.uint8), (64, 36))
    p = TransitionParams()
    assert mad(bright.rgb, dim.rgb) > 40  # a big step in colour ...
    assert mad(bright.z, dim.z) < p.light_max < mad(bright.z, other.z)  # ... but the same picture
    moved = bright.rgb.copy()
    moved[:10, :16] = 255 - moved[:10, :16]  # a subject over 7 % of the frame
    assert trimmed_mad(bright.rgb, moved, 0.7) == 0.0 < mad(bright.rgb, moved)
