"""One item's analysis on awkward but valid inputs, in-process (no cluster)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from reelsim.errors import MediaError
from reelsim.pipeline.config import Config
from reelsim.pipeline.item import Models, analyse_item
from reelsim.pipeline.synth import Segment, ffmpeg_exe, make_video
from reelsim.storage.catalog import Item

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
