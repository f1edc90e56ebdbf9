"""reelsim's shot detector on labelled synthetic clips: each transition found once, traps ignored."""

from __future__ import annotations

import numpy as np
import pytest
from test_shots import segment

from reelsim.config import ClipConfig, Config
from reelsim.extractors.shots import colour_signature, group_scenes
from reelsim.pipeline.segment import segment_video
from reelsim.pipeline.synth import Join, Shot, VideoSpec, build_video

CFG = Config()


def make(path, shots, joins=(), size=(320, 180)):
    """Encode a small labelled video; returns its true transitions as dicts (kind, frame, start, end)."""
    spec = VideoSpec(path.stem, tuple(shots), tuple(joins), size=size, crf=20)
    return [t._asdict() for t in build_video(spec, path).transitions]


def boundaries(path):
    """Detected boundaries other than the first shot's start."""
    return [b for b in segment_video(str(path), CFG).boundaries if b.kind != "start"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """name -> (path, true transitions)."""
    d = tmp_path_factory.mktemp("transitions")
    specs = {
        "dissolve": ([Shot(45, "mandelbrot"), Shot(45, "testsrc2")], [Join("dissolve", 20)]),
        "fade": ([Shot(45, "testsrc2"), Shot(45, "cellauto=rule=110:seed=3")], [Join("fadeblack", 16)]),
        "flash": ([Shot(40, "mandelbrot", flashes=((12, 1), (20, 2))), Shot(40, "smptehdbars", flashes=((12, 1),))],
                  [Join("cut")]),
        "grey-cut": ([Shot(30, "perlin=random_mode=seed:seed=4"), Shot(30, "cellauto=rule=30:seed=8"),
                      Shot(30, "life=seed=3:ratio=0.3:mold=10")], [Join("cut"), Join("cut")]),
        "mixed": ([Shot(40, "mandelbrot"), Shot(40, "testsrc2"), Shot(40, "cellauto=rule=110:seed=3"),
                   Shot(40, "smptehdbars")], [Join("dissolve", 12), Join("cut"), Join("fadeblack", 24)]),
    }
    out = {}
    for name, (shots, joins) in specs.items():
        path = d / f"{name}.mp4"
        out[name] = (path, make(path, shots, joins))
    return out


@pytest.mark.parametrize("kind", ["dissolve", "fade"])
def test_gradual_transition_is_one_boundary_inside_it(clips, kind):
    path, truth = clips[kind]
    (t,) = truth
    found = boundaries(path)
    assert len(found) == 1, found
    assert found[0].kind == kind and t["start"] <= found[0].frame < t["end"]


def test_flashes_do_not_split_shots_and_cut_stays_frame_exact(clips):
    path, truth = clips["flash"]
    found = boundaries(path)
    assert [(b.frame, b.kind) for b in found] == [(truth[0]["frame"], "cut")]


def test_cuts_between_greyscale_shots_are_frame_exact(clips):
    path, truth = clips["grey-cut"]
    assert [b.frame for b in boundaries(path)] == [t["frame"] for t in truth] == [30, 60]


def test_cut_dissolve_and_fade_in_one_video(clips):
    path, truth = clips["mixed"]
    found = boundaries(path)
    assert [b.kind for b in found] == ["dissolve", "cut", "fade"]
    for b, t in zip(found, truth):
        if t["kind"] == "cut":
            assert b.frame == t["frame"]
        else:
            assert t["start"] <= b.frame < t["end"] and b.start < b.end


def test_transition_kind_reaches_the_shots(clips):
    seg = segment_video(str(clips["mixed"][0]), CFG)
    assert [b.kind for b in seg.boundaries] == ["start", "dissolve", "cut", "fade"]
    assert len(seg.boundaries) == len(seg.shots)
    assert [s for s, _ in seg.shots] == [b.frame for b in seg.boundaries]


@pytest.mark.parametrize("source", [
    "testsrc2",  # static pattern with a small moving part
    "mandelbrot=end_scale=0.01",  # a long zoom in
    "rgbtestsrc",  # static
])
def test_one_continuous_shot_is_not_split(tmp_path, source):
    path = tmp_path / "one.mp4"
    make(path, [Shot(90, source)])
    assert boundaries(path) == []


def test_fast_pan_is_not_a_cut(tmp_path):
    """A pan across a large fractal at 12 px/frame, then a real cut."""
    import subprocess

    from reelsim.pipeline.synth import ffmpeg_exe

    path = tmp_path / "pan.mp4"
    graph = ("mandelbrot=size=960x540:rate=25,trim=end_frame=60,setpts=PTS-STARTPTS,"
             "crop=320:180:x='n*10':y='90+40*sin(n/9)',format=yuv420p[a];"
             "smptehdbars=size=320x180:rate=25,trim=end_frame=30,setpts=PTS-STARTPTS,format=yuv420p[b];"
             "[a][b]concat=n=2:v=1:a=0[out]")
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-filter_complex", graph, "-map", "[out]",
                    "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", str(path)], check=True)
    assert [(b.frame, b.kind) for b in boundaries(path)] == [(60, "cut")]


def test_very_short_videos(tmp_path):
    for n in (1, 3, 9):
        path = tmp_path / f"short{n}.mp4"
        make(path, [Shot(n, "testsrc2")])
        seg = segment_video(str(path), CFG)
        assert seg.shots == [(0, n)] and seg.n_frames == n and seg.n_clips == 1


def test_detector_never_reports_later_than_its_latency(clips):
    for path, _ in clips.values():
        sampler, _, _ = segment(path)
        assert sampler.late_cuts == []


def test_abab_dialogue_is_one_scene_and_a_new_place_starts_another(tmp_path):
    a, b = "smptehdbars", "testsrc2"
    c, d = "cellauto=rule=110:seed=3", "life=seed=3:ratio=0.3:mold=10"
    path = tmp_path / "dialogue.mp4"
    truth = make(path, [Shot(30, s) for s in (a, b, a, b, c, d, c)], [Join("cut")] * 6)
    sampler, _, keys = segment(path)
    assert [s for s, _ in sampler.shots[1:]] == [t["frame"] for t in truth]
    signatures = np.stack([colour_signature(k.rgb) for k in sorted(keys, key=lambda k: k.shot)])
    scenes = group_scenes(signatures, similarity=CFG.shots.scene_similarity, window=CFG.shots.scene_window)
    assert scenes == [(0, 4), (4, 7)]


def test_clips_of_a_shot_entered_by_a_dissolve_start_after_it(clips):
    path, _ = clips["dissolve"]
    sampler, found, _ = segment(path, clips=ClipConfig(clip_len=4))
    entered = sampler.boundaries[1]
    assert entered.kind == "dissolve" and entered.end > entered.frame
    second = [c.start_frame for c in found if c.shot == 1]
    assert second and min(second) == entered.end
