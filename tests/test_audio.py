"""Log-mel statistics: streamed chunks give the same numbers as one pass."""

from __future__ import annotations

import numpy as np

from reelsim.extractors.audio import LogMelStats, MelFrameStream, SpanPooler, log_mel_frames


def tone(freq, seconds, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_chunked_frames_equal_one_pass():
    y = np.concatenate([tone(440, 1.3), tone(1000, 0.9)])
    whole = log_mel_frames(y=y, sr=16000)
    stream = MelFrameStream(16000)
    times, frames = zip(*(stream.push(c) for c in np.array_split(y, 7)))
    got = np.concatenate(frames)
    assert got.shape == whole.shape
    np.testing.assert_allclose(got, whole, atol=1e-3)
    t = np.concatenate(times)
    np.testing.assert_allclose(np.diff(t), 0.01)
    assert abs(t[0] - 0.0125) < 1e-9


def test_span_pooling_separates_tones_and_matches_direct_stats():
    y = np.concatenate([tone(300, 1.0), tone(3000, 1.0)])
    stream = MelFrameStream(16000)
    pooler = SpanPooler(np.array([0.0, 1.0]))
    pooler.add(*stream.push(y))
    per, overall = pooler.pooled()
    assert per.shape == (2, 128) and overall.shape == (128,)
    low, high = per[:, :64].argmax(1)
    assert low < high  # the 3 kHz shot has its energy in higher mel bands
    direct = LogMelStats().extract([y[:16000]])[0]
    np.testing.assert_allclose(per[0][:64], direct[:64], atol=1.0)  # frames straddling the change differ


def test_span_without_frames_gets_overall_stats():
    pooler = SpanPooler(np.array([0.0, 0.5, 0.501]))
    stream = MelFrameStream(16000)
    pooler.add(*stream.push(tone(500, 1.0)))
    per, overall = pooler.pooled()
    np.testing.assert_array_equal(per[1], overall)
