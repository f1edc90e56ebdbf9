"""The shot benchmark's labelled-set generator and its scoring (benchmarks/shotset.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import shotset  # noqa: E402
from shotset import Detection, Join, Shot, VideoSpec  # noqa: E402

LABELS = {
    "name": "t",
    "transitions": [
        {"kind": "cut", "frame": 50, "start": 50, "end": 50, "tag": ""},
        {"kind": "dissolve", "frame": 105, "start": 100, "end": 110, "tag": ""},
        {"kind": "fade", "frame": 205, "start": 200, "end": 212, "tag": ""},
    ],
    "traps": [{"kind": "flash", "start": 150, "end": 151}, {"kind": "pan", "start": 253, "end": 300}],
}


def test_perfect_detections_score_one():
    dets = [Detection(50, "cut"), Detection(105, "dissolve"), Detection(210, "fade")]
    s = shotset.summary(shotset.score(LABELS, dets))
    assert s["cut"]["f1"] == s["gradual"]["f1"] == s["overall"]["f1"] == 1.0
    assert s["kind_agreement"] == 1.0 and s["flash_splits"] == 0


def test_tolerance_windows_and_one_to_one_matching():
    # cut 3 frames late: a miss and a false positive; the dissolve reported twice (as a cut 2 frames
    # before its start, and inside it): the nearer one matches, the other is a false positive in the
    # class it claims; the fade found by an unclassified detection
    dets = [Detection(53, "cut"), Detection(98, "cut"), Detection(104, "dissolve"), Detection(201)]
    s = shotset.summary(shotset.score(LABELS, dets))
    assert (s["cut"]["tp"], s["cut"]["fp"], s["cut"]["fn"]) == (0, 2, 1)
    assert (s["gradual"]["tp"], s["gradual"]["fp"], s["gradual"]["fn"]) == (2, 0, 0)
    assert s["duplicates"] == 1  # the second report of the dissolve
    assert s["kind_agreement"] == 1.0  # "dissolve" agrees; the unclassified match is not counted
    assert s["unmatched_fp"] == 0 and s["overall"]["fp"] == 2


def test_false_positives_on_traps_are_splits_by_kind():
    dets = [Detection(50, "cut"), Detection(151, "cut"), Detection(270), Detection(400)]
    s = shotset.summary(shotset.score(LABELS, dets))
    assert s["trap_splits"] == {"flash": 1, "pan": 1}
    assert s["flash_splits"] == 1
    assert s["cut"]["fp"] == 1 and s["unmatched_fp"] == 2


def test_layout_places_transitions_traps_and_lengths():
    spec = VideoSpec("t", (Shot(40, "testsrc2"), Shot(40, "mandelbrot", flashes=((20, 2),)),
                           Shot(40, "life"), Shot(40, "cellauto", strobe=(10, 3, 3))),
                     (Join("dissolve", 10), Join("cut"), Join("outin", 6)), size=(160, 90))
    lay = shotset.layout(spec)
    assert [(t.kind, t.start, t.end) for t in lay.transitions] == [
        ("dissolve", 30, 40), ("cut", 69, 69), ("fade", 103, 115)]
    assert lay.n_frames == 40 + 40 - 11 + 40 + 40
    assert lay.shot_starts == [0, 29, 69, 109]
    assert lay.flash_frames == [49, 50, 119, 122, 125]


def test_built_video_matches_its_labels_and_a_wrong_label_is_caught(tmp_path):
    spec = VideoSpec("tiny", (Shot(30, "testsrc2"), Shot(30, "mandelbrot=maxiter=200", flashes=((12, 1),)),
                              Shot(30, "life=seed=3:ratio=0.3:mold=10"), Shot(30, "cellauto=rule=110")),
                     (Join("fadeblack", 8), Join("cut"), Join("dissolve", 10)), size=(160, 90))
    lay = shotset.build_video(spec, tmp_path / "tiny.mp4", tmp_path / "photos")
    labels = shotset.labels_of(spec, lay, "tiny.mp4")
    assert shotset.verify(tmp_path / "tiny.mp4", labels) == []
    bad = dict(labels, transitions=[dict(t) for t in labels["transitions"]])
    cut = next(t for t in bad["transitions"] if t["kind"] == "cut")
    cut["frame"] += 3
    problems = shotset.verify(tmp_path / "tiny.mp4", bad)
    assert len(problems) == 1 and "not the peak" in problems[0]


def test_unknown_join_style_is_rejected():
    with pytest.raises(ValueError, match="unknown join style"):
        VideoSpec("x", (Shot(10, "testsrc2"), Shot(10, "life")), (Join("wipe", 5),))


def test_flicker_cycle_and_white_flash_traps_are_laid_out_and_painted():
    spec = VideoSpec("t", (Shot(30, "testsrc2", flicker=(2, 8, 4), cycle=(12, 6, 2)),
                           Shot(20, "mandelbrot", flashes=((0, 1, 0.0),))), (Join("cut"),), size=(160, 90))
    lay = shotset.layout(spec)
    assert [(t.kind, t.start, t.end) for t in lay.traps] == [("flicker", 2, 10), ("cycle", 12, 18), ("flash", 30, 31)]
    assert lay.painted["flicker"] == [2, 3, 6, 7]
    assert lay.painted["cycle"] == {12: 0, 13: 0, 14: 1, 15: 1, 16: 2, 17: 2}
    assert lay.painted["flash"] == {30: 0.0}
    irregular = shotset.layout(VideoSpec("i", (Shot(40, "testsrc2", flicker=(0, 40, -8)),), (), seed=3))
    assert 0 < len(irregular.painted["flicker"]) < 40


def test_heldout_copies_shift_every_seed_and_keep_the_labels():
    base, held = shotset.labelled_specs()[0], shotset.labelled_specs(seed=100)[0]
    assert held.name == f"{base.name}-s100" and held.seed == 100
    assert shotset.layout(held).transitions == shotset.layout(base).transitions
    from reelsim.pipeline.synth import _reseed

    assert _reseed("life=seed=7:ratio=0.25", 100) == "life=seed=107:ratio=0.25"
