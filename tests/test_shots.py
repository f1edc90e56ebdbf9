"""Shot detection and clip sampling on our own decoded frames."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BIKES_CUTS, VIDEOS, cut_frames

from reelsim.config import ClipConfig, Config, ShotConfig
from reelsim.extractors.shots import colour_signature, group_scenes
from reelsim.pipeline.segment import ShotClipSampler, ShotPass


def segment(path, clips=ClipConfig(clip_len=8), shots=ShotConfig()):
    """(sampler, clips, keyframes) of one pass over ``path`` (analysis frames of 160 px)."""
    shot_pass = ShotPass(str(path), Config(shots=shots, clips=clips), clip_len=clips.clip_len)
    outs = [*shot_pass, shot_pass.finish()]
    return shot_pass.sampler, [c for cs, _ in outs for c in cs], [k for _, ks in outs for k in ks]


def starts(shots):
    return [s for s, _ in shots[1:]]


@pytest.mark.parametrize("vid", sorted(VIDEOS))
def test_synthetic_cuts_are_frame_exact(media, vid):
    sampler, clips, keys = segment(media / f"{vid}.mp4")
    assert starts(sampler.shots) == cut_frames(VIDEOS[vid])
    assert sampler.shots[-1][1] == sum(s.frames for s in VIDEOS[vid])


def test_bikes_cuts_found_within_one_frame(bikes):
    sampler, clips, keys = segment(bikes)
    found = starts(sampler.shots)
    assert len(found) == len(BIKES_CUTS)
    assert np.abs(np.array(found) - np.array(BIKES_CUTS)).max() <= 1


def test_clips_stay_inside_their_shot_and_every_shot_has_one(bikes):
    cfg = ClipConfig(clip_len=8, frame_stride=2, hop_s=0.5)
    sampler, clips, keys = segment(bikes, clips=cfg)
    span = (cfg.clip_len - 1) * cfg.frame_stride + 1
    shots = sampler.shots
    assert sorted({c.shot for c in clips}) == list(range(len(shots)))
    assert [k.shot for k in keys] == list(range(len(shots)))
    for c in clips:
        s, e = shots[c.shot]
        assert s <= c.start_frame and c.start_frame + min(span, e - s) <= e
        assert c.frames.dtype == np.uint8 and c.frames.shape[1:] == (160, 160, 3)
        assert 1 <= len(c.frames) <= cfg.clip_len
    # the last bikes shot (242..250) is shorter than a clip span: one short clip of its own frames
    last = [c for c in clips if c.shot == len(shots) - 1]
    assert len(last) == 1 and len(last[0].frames) == 4


class FixedCuts:
    """A detector with known cuts and a known report delay, to test the sampler alone."""

    def __init__(self, cuts, latency):
        self.cuts, self.latency = cuts, latency

    def process(self, index, rgb):
        return [c for c in self.cuts if c + self.latency == index]

    def finish(self, n):
        return [c for c in self.cuts if c + self.latency >= n]


def feed(sampler, n, size=8):
    clips, keys = [], []
    for i in range(n):
        c, k = sampler.push(i, np.full((size, size + 4, 3), i % 256, np.uint8))
        clips += c
        keys += k
    c, k = sampler.finish()
    return clips + c, keys + k


@pytest.mark.parametrize("latency", [0, 5, 17])
def test_late_reported_cuts_never_split_a_clip(latency):
    cfg = ClipConfig(clip_len=4, frame_stride=1, hop_s=0.2, max_clips_per_shot=100)
    sampler = ShotClipSampler(FixedCuts([3, 4, 20, 57], latency), cfg, fps=25.0)
    clips, keys = feed(sampler, 70)
    assert sampler.shots == [(0, 3), (3, 4), (4, 20), (20, 57), (57, 70)]
    for c in clips:
        s, e = sampler.shots[c.shot]
        frame_ids = c.frames[:, 0, 0, 0].astype(int)  # pixel value == frame index
        assert s <= frame_ids.min() and frame_ids.max() < e
    one_frame = [c for c in clips if c.shot == 1]
    assert len(one_frame) == 1 and len(one_frame[0].frames) == 1  # a 1-frame shot still gets its clip


def test_long_shot_clip_count_is_capped_and_memory_ring_bounded():
    cfg = ClipConfig(clip_len=4, frame_stride=2, hop_s=0.04, max_clips_per_shot=5)
    sampler = ShotClipSampler(FixedCuts([], 3), cfg, fps=25.0)
    clips, _ = feed(sampler, 5000)
    assert len(clips) == 5
    assert len(sampler._ring) <= sampler.span + 3 + 1


def test_scene_grouping_keeps_dialogue_together():
    a, b, c = np.eye(3, dtype=np.float32)
    sig = np.stack([a, b, a, b, c, c])
    assert group_scenes(sig, similarity=0.8, window=2) == [(0, 4), (4, 6)]
    assert group_scenes(sig, similarity=0.8, window=1) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 6)]


def test_colour_signature_is_a_distribution():
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    sig = colour_signature(rgb)
    assert sig.shape == (512,) and np.isclose(sig.sum(), 1.0)
    with pytest.raises(ValueError):
        colour_signature(rgb.astype(np.float32))
