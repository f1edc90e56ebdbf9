"""Decode once: the prepare stage opens a video once and takes its frames and its audio from one demux pass,
with the same pixels and samples (so the same features) as a decode of each stream on its own."""

from __future__ import annotations

import numpy as np
import pytest

from reelsim.config import Config
from reelsim.pipeline import decode
from reelsim.pipeline.batcher import prepare_item
from reelsim.pipeline.item import Models, pool_audio, segment_pass
from reelsim.pipeline.synth import Segment, make_video
from reelsim.storage.manifest import Item

CFG = Config()


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("once")
    return make_video(folder / "v.mp4", [Segment("mandelbrot", 30, "sine=frequency=220"),
                                          Segment("testsrc2", 25, "anoisesrc=color=pink:amplitude=0.3:seed=2")])


def test_one_pass_gives_the_frames_and_samples_of_two(video):
    track = decode.AudioTrack(CFG.decode.audio_rate, chunk_s=0.5)  # small blocks: several of them
    with decode.MediaReader(str(video)) as reader:
        frames = [f.rgb for f in reader.frames(short_side=160, audio=track)]
        assert reader.info.has_audio and reader.info.fps == 25
    alone = [f.rgb for f in decode.iter_frames(str(video), short_side=160)]
    assert len(frames) == len(alone) == 55 and all(np.array_equal(a, b) for a, b in zip(frames, alone))
    samples = np.concatenate(list(track.chunks()))
    assert len(list(track.chunks())) > 2 and track.samples == samples.size and track.truncated is None
    np.testing.assert_array_equal(samples, np.concatenate(list(decode.iter_audio(str(video), rate=16000))))


def test_prepare_opens_the_file_once_and_pools_the_same_audio(video, monkeypatch):
    import av

    opened = []
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    models = Models(CFG, device="cpu")
    prep = prepare_item(Item(id="v", video=str(video)), CFG, models, clip_len=8)
    assert opened == [str(video)]  # probe, frames and audio: one container
    monkeypatch.setattr(av, "open", real_open)

    warnings: list[str] = []
    seg = segment_pass(str(video), CFG, clip_len=8, on_clips=lambda clips: None, warnings=warnings)
    assert seg.audio is None  # not asked for: pooled from a decode of its own below
    two_pass = pool_audio(str(video), prep.features.video.shot_times, CFG, models, warnings, seg.errors)
    one_pass = prep.features.embeddings["audio"]
    np.testing.assert_array_equal(one_pass.shot, two_pass.shot)
    np.testing.assert_array_equal(one_pass.item, two_pass.item)
    assert prep.features.video.shots.tolist() == [[0, 30], [30, 55]]
