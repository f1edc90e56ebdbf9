"""Audio features: log-mel statistics (no weights needed).

Every audio extractor offers ``span_pooler(spans_s, sr)``: an object that
takes the streamed waveform chunk by chunk (``push``) and returns per-span
(per-shot) and overall features (``pooled``).  The pretrained embedding
``cnn14-16k`` lives in :mod:`reelsim.extractors.panns`.

The maths is in pure functions over arrays; :class:`LogMelStats` wires them
and is registered as ``logmel-stats``.  Streaming use (long videos): call
:func:`log_mel_frames` on consecutive chunks carried over by
:class:`MelFrameStream`, and pool per time span with :class:`SpanPooler`.
"""

from __future__ import annotations

import numpy as np

from reelsim.errors import ParameterError
from reelsim.extractors.base import Extractor, register

N_FFT = 400  # 25 ms at 16 kHz
HOP = 160  # 10 ms at 16 kHz
N_MELS = 64
AMIN = 1e-10


def log_mel_frames(*, y: np.ndarray, sr: int, n_fft: int = N_FFT, hop: int = HOP, n_mels: int = N_MELS) -> np.ndarray:
    """Log-mel power spectrogram frames, no centring (frame i starts at sample i*hop).

    Parameters
    ----------
    y : np.ndarray [shape=(n,), dtype=float32] mono waveform in [-1, 1]
    sr : sample rate in Hz

    Returns
    -------
    np.ndarray [shape=(t, n_mels), dtype=float32]
        ``10 * log10(max(power, 1e-10))`` with a fixed reference of 1.0, so
        values do not depend on how the signal was chunked;
        ``t = 1 + (n - n_fft) // hop`` (0 when ``n < n_fft``).
    """
    import librosa

    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ParameterError(f"expected mono audio (n,), got shape {y.shape}")
    if y.size < n_fft:
        return np.zeros((0, n_mels), dtype=np.float32)
    if not np.all(np.isfinite(y)):
        y = np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0)
    S = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels, center=False, power=2.0
    )
    return (10.0 * np.log10(np.maximum(S, AMIN))).T.astype(np.float32)


def stats_from_moments(total: np.ndarray, total_sq: np.ndarray, count: int) -> np.ndarray:
    """Mean and standard deviation per band from running sums.

    Returns
    -------
    np.ndarray [shape=(2 * n_mels,), dtype=float32]: ``[mean..., std...]``.
    """
    if count <= 0:
        raise ParameterError("no frames to pool")
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)
    return np.concatenate([mean, np.sqrt(var)]).astype(np.float32)


class MelFrameStream:
    """Turns consecutive waveform chunks into log-mel frames with exact frame times.

    Frame ``i`` covers samples ``[i*hop, i*hop + n_fft)``; its time is its
    centre in seconds.
    """

    def __init__(self, sr: int, *, n_fft: int = N_FFT, hop: int = HOP):
        self.sr, self.n_fft, self.hop = sr, n_fft, hop
        self._carry = np.zeros(0, dtype=np.float32)
        self._next_frame = 0

    def push(self, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Returns (times_s (t,), frames (t, n_mels)) for the frames completed by ``chunk``."""
        buf = np.concatenate([self._carry, chunk.astype(np.float32, copy=False)])
        frames = log_mel_frames(y=buf, sr=self.sr, n_fft=self.n_fft, hop=self.hop)
        t = len(frames)
        self._carry = buf[t * self.hop :]
        idx = self._next_frame + np.arange(t)
        self._next_frame += t
        return (idx * self.hop + self.n_fft / 2) / self.sr, frames


class SpanPooler:
    """Accumulates frame moments per time span (e.g. per shot) and overall.

    Parameters
    ----------
    starts_s : np.ndarray [shape=(n_spans,)] span start times in seconds,
        increasing; span ``i`` covers ``[starts_s[i], starts_s[i+1])``.
    """

    def __init__(self, starts_s: np.ndarray, n_mels: int = N_MELS):
        self._starts = np.asarray(starts_s, dtype=np.float64)
        n = len(self._starts)
        self._sum = np.zeros((n, n_mels))
        self._sq = np.zeros((n, n_mels))
        self._count = np.zeros(n, dtype=np.int64)

    def add(self, times_s: np.ndarray, frames: np.ndarray) -> None:
        if len(frames) == 0:
            return
        span = np.clip(np.searchsorted(self._starts, times_s, side="right") - 1, 0, len(self._starts) - 1)
        f = frames.astype(np.float64)
        np.add.at(self._sum, span, f)
        np.add.at(self._sq, span, f * f)
        np.add.at(self._count, span, 1)

    @property
    def n_frames(self) -> int:
        return int(self._count.sum())

    def pooled(self) -> tuple[np.ndarray, np.ndarray]:
        """(per-span stats (n_spans, 2*n_mels), overall stats (2*n_mels,)).

        A span with no frame of its own (shorter than one 25 ms frame) gets
        the overall statistics.
        """
        overall = stats_from_moments(self._sum.sum(0), self._sq.sum(0), self.n_frames)
        per = np.stack(
            [
                stats_from_moments(s, q, c) if c > 0 else overall
                for s, q, c in zip(self._sum, self._sq, self._count)
            ]
        ) if len(self._count) else np.zeros((0, overall.size), np.float32)
        return per, overall


class StatsSpanPooler:
    """Waveform chunks in, per-span and overall log-mel statistics out.

    ``push(chunk)`` for each decoded chunk, then ``pooled()``:
    ``(per-span (S, 128), overall (128,))`` or None when no frame was complete.
    """

    def __init__(self, starts_s: np.ndarray, sr: int):
        self._stream = MelFrameStream(sr)
        self._pooler = SpanPooler(starts_s)

    def push(self, chunk: np.ndarray) -> None:
        self._pooler.add(*self._stream.push(chunk))

    def pooled(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self._pooler.pooled() if self._pooler.n_frames else None


@register("audio", "logmel-stats")
class LogMelStats(Extractor):
    """Per-segment log-mel statistics: mean and std of 64 log-mel bands.

    dim = 128; input: mono float32 waveform at ``sample_rate`` Hz.  Needs no
    weights; runs on CPU whatever the device.
    """

    dim = 2 * N_MELS
    sample_rate = 16000

    def __init__(self, *, device: str = "cpu", weights_path: str | None = None, batch_size: int | None = None,
                 precision: str = "auto"):
        super().__init__(device="cpu", weights_path=weights_path, batch_size=batch_size, precision=precision)

    def _load(self) -> None:
        # librosa's first call compiles numba code (seconds): pay it here, at load time, once per worker.
        log_mel_frames(y=np.zeros(self.sample_rate // 10, np.float32), sr=self.sample_rate)

    @classmethod
    def usable(cls) -> tuple[bool, str]:
        return True, "no weights needed"

    @classmethod
    def weights_file_for(cls, weights_path: str | None = None) -> None:
        """No weights file: these are statistics."""
        return None

    def span_pooler(self, spans_s: np.ndarray, sr: int) -> "StatsSpanPooler":
        """A pooler of per-span statistics over a streamed waveform at ``sr`` Hz."""
        return StatsSpanPooler(np.asarray(spans_s)[:, 0], sr)

    def extract(self, segments: list[np.ndarray]) -> np.ndarray:
        """float32 (B, 128) statistics, one row per waveform in ``segments``."""
        rows = []
        for y in segments:
            frames = log_mel_frames(y=y, sr=self.sample_rate)
            if len(frames) == 0:
                raise ParameterError("audio segment shorter than one 25 ms frame")
            f = frames.astype(np.float64)
            rows.append(stats_from_moments(f.sum(0), (f * f).sum(0), len(f)))
        return np.stack(rows)

    def _provenance(self) -> dict:
        return {"weights": "none", "sample_rate": self.sample_rate, "n_fft": N_FFT, "hop": HOP, "n_mels": N_MELS}
