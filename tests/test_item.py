"""One item's analysis on awkward but valid inputs, in-process (no cluster)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from reelsim.config import Config
from reelsim.errors import MediaError
from reelsim.pipeline.item import Models, analyse_item
from reelsim.pipeline.synth import Segment, ffmpeg_exe, make_video
from reelsim.storage.manifest import Item

CFG = Config()


@pytest.fixture(scope="module")
def models():
    return Models(CFG)


def ffmpeg(*args):
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", *args], check=True)


def test_one_frame_video(tmp_path, models):
    path = tmp_path / "one.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-frames:v", "1", str(path))
    f = analyse_item(Item(id="one", video=str(path)), CFG, models)
    assert f.video.n_frames == 1 and f.video.shots.tolist() == [[0, 1]]
    assert f.embeddings["visual"].shot.shape == (1, 1280) and "audio" not in f.embeddings


def test_tiny_frames(tmp_path, models):
    path = tmp_path / "tiny.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=16x16:rate=25", "-t", "1", str(path))
    f = analyse_item(Item(id="tiny", video=str(path)), CFG, models)
    assert f.video.n_frames == 25 and np.isfinite(f.embeddings["visual"].item).all()


def test_truncated_file_keeps_what_decoded_and_warns(tmp_path, models):
    full = make_video(tmp_path / "full.mp4", [Segment("testsrc2", 100, "sine=frequency=300")])
    cut = tmp_path / "cut.mp4"
    ffmpeg("-i", str(full), "-c", "copy", "-movflags", "+faststart", str(tmp_path / "fast.mp4"))
    cut.write_bytes((tmp_path / "fast.mp4").read_bytes()[: full.stat().st_size // 3])
    f = analyse_item(Item(id="cut", video=str(cut)), CFG, models)
    assert 0 < f.video.n_frames < 100
    assert any("truncated" in w for w in f.warnings)


def test_audio_only_file_is_a_clear_error(tmp_path, models):
    path = tmp_path / "sound.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440", "-t", "1", "-c:a", "aac", str(path))
    with pytest.raises(MediaError, match="no video stream"):
        analyse_item(Item(id="sound", video=str(path)), CFG, models)


SHORT_SHOTS = [Segment("testsrc2", 20, "sine=frequency=300"), Segment("color=c=red", 1),
               Segment("color=c=blue", 3), Segment("mandelbrot", 20, "sine=frequency=900")]


@pytest.fixture(scope="module")
def short_shots_video(tmp_path_factory):
    """Shots of 20, 1, 3 and 20 frames (hard cuts at 20, 21 and 24)."""
    return make_video(tmp_path_factory.mktemp("short") / "short.mp4", SHORT_SHOTS, size=(160, 120))


def test_one_and_three_frame_shots(short_shots_video):
    cfg = CFG.with_overrides(shots={"min_shot_frames": 1})
    f = analyse_item(Item(id="short", video=str(short_shots_video)), cfg, Models(cfg))
    assert f.video.shots.tolist() == [[0, 20], [20, 21], [21, 24], [24, 44]]
    visual = f.embeddings["visual"]
    assert visual.shot.shape == (4, 1280) and np.isfinite(visual.shot).all()
    assert sorted(set(visual.extra["clip_shot"].tolist())) == [0, 1, 2, 3]  # every shot has its clip
    assert f.embeddings["audio"].shot.shape == (4, 128)
    # the 1-frame red shot and the 3-frame blue shot are different pictures
    assert not np.allclose(visual.shot[1], visual.shot[2])


_DUMP = """
import sys, numpy as np, torch
from reelsim.config import Config
from reelsim.pipeline.item import Models, analyse_item
from reelsim.storage.manifest import Item
torch.set_num_threads(int(sys.argv[3]))
cfg = Config().with_overrides(models={"device": "cpu"})
f = analyse_item(Item(id="v", video=sys.argv[1]), cfg, Models(cfg))
np.savez(sys.argv[2], **{f"{m}_{k}": getattr(e, k) for m, e in f.embeddings.items() for k in ("item", "shot")},
         clips=f.embeddings["visual"].extra["clips"])
"""


@pytest.mark.slow
def test_fp32_cpu_features_are_identical_run_to_run(short_shots_video, tmp_path):
    """Two fresh processes (fresh models, the same thread count) give bit-identical fp32 features.

    Both are new processes, run side by side: this test process's own state (whatever earlier tests
    loaded or set) must not decide the outcome.
    """
    import sys

    runs = [(tmp_path / f"run{i}.npz") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", _DUMP, str(short_shots_video), str(out), "1"]) for out in runs]
    assert [p.wait(timeout=600) for p in procs] == [0, 0]
    here, there = np.load(runs[0]), np.load(runs[1])
    assert set(there.files) == set(here.files) >= {"visual_item", "visual_shot", "audio_item", "image_shot", "clips"}
    for name in there.files:
        np.testing.assert_array_equal(there[name], here[name], err_msg=name)
