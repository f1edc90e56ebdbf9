"""PANNs CNN14 (16 kHz) audio embeddings, 2048-d, weights loaded by path only.

The network is PANNs' ``Cnn14_16k`` (Kong et al., "PANNs: Large-Scale
Pretrained Audio Neural Networks for Audio Pattern Recognition", 2020),
written here with the parameter names of the published checkpoint
``Cnn14_16k_mAP=0.438.pth`` so it loads with strict key checking.  The
checkpoint's own spectrogram front end (``spectrogram_extractor.*``,
``logmel_extractor.*``: fixed STFT and mel matrices) is not used: the same
log-mel is computed with librosa by :func:`cnn14_log_mel`.

Per shot: the shot's audio is cut into windows of at most ``window_s``
seconds (:class:`SpanWindows`), each window gives one embedding, and the
shot's embedding is the duration-weighted mean of its windows; the item's is
the duration-weighted mean of all windows.  Memory is bounded by one window
per pending batch item, never by the video's length.

Examples
--------
>>> from reelsim.extractors.panns import Cnn14Audio
>>> Cnn14Audio.dim, Cnn14Audio.sample_rate
(2048, 16000)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import numpy as np

from reelsim.errors import ReelsimError
from reelsim.extractors.base import Extractor, register
from reelsim.extractors.device import autocast, precision_name
from reelsim.extractors.weights import WeightsSpec, load_state_dict_file

if TYPE_CHECKING:
    from torch import nn

SAMPLE_RATE = 16000
WINDOW = 512  # 32 ms
HOP = 160  # 10 ms
N_MELS = 64
FMIN, FMAX = 50, 8000
AMIN = 1e-10

#: The published checkpoint (AudioSet, mAP 0.438), as data.
CNN14_16K_WEIGHTS = WeightsSpec(
    name="cnn14-16k",
    filename="Cnn14_16k_mAP=0.438.pth",
    url="https://zenodo.org/record/3987831/files/Cnn14_16k_mAP%3D0.438.pth?download=1",
    source="PANNs release (Kong et al. 2020), zenodo record 3987831",
    flag="--audio-weights",
)

#: Keys of the checkpoint's built-in front end; replaced by :func:`cnn14_log_mel`.
FRONT_END_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.")


# ---------------------------------------------------------------- pure functions


def cnn14_log_mel(*, y: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """The log-mel input of Cnn14_16k.

    Hann window 512, hop 160, centred frames with reflect padding, power
    spectrum, 64 Slaney mel bands 50-8000 Hz, ``10 * log10(max(S, 1e-10))``
    (reference 1.0, no top_db): the settings of PANNs' torchlibrosa front end.

    Parameters
    ----------
    y : np.ndarray [shape=(n,), dtype=float32] mono waveform in [-1, 1], n > 256
    sr : must be 16000

    Returns
    -------
    np.ndarray [shape=(1 + n // 160, 64), dtype=float32]
    """
    import librosa

    if sr != SAMPLE_RATE:
        raise ReelsimError(f"Cnn14_16k needs {SAMPLE_RATE} Hz audio, got {sr} Hz")
    y = np.nan_to_num(np.asarray(y, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if y.ndim != 1 or y.size <= WINDOW // 2:
        raise ReelsimError(f"expected mono audio of more than {WINDOW // 2} samples, got shape {y.shape}")
    S = librosa.feature.melspectrogram(
        y=y, sr=sr, n_fft=WINDOW, hop_length=HOP, win_length=WINDOW, window="hann", center=True,
        pad_mode="reflect", power=2.0, n_mels=N_MELS, fmin=FMIN, fmax=FMAX,
    )
    return (10.0 * np.log10(np.maximum(S, AMIN))).T.astype(np.float32)


def loop_to_length(y: np.ndarray, n: int) -> np.ndarray:
    """``y`` repeated end to end until it has at least ``n`` samples (as short video shots are looped).

    Examples
    --------
    >>> loop_to_length(np.arange(3.0), 7).tolist()
    [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0]
    """
    if len(y) == 0:
        raise ReelsimError("cannot loop an empty waveform")
    return y if len(y) >= n else np.resize(y, n)


def span_windows(spans_s: np.ndarray, *, sr: int, window_s: float) -> np.ndarray:
    """Sample ranges of the windows that tile each span.

    Span ``i`` = ``[spans_s[i, 0], spans_s[i, 1])`` seconds is cut into
    windows of ``window_s`` seconds from its start; the last one is shorter.

    Returns
    -------
    np.ndarray [shape=(W, 3), dtype=int64]: ``(span, start_sample, end_sample)``
        rows in time order; every span has at least one window.

    Examples
    --------
    >>> span_windows(np.array([[0.0, 2.5], [2.5, 3.0]]), sr=10, window_s=1.0).tolist()
    [[0, 0, 10], [0, 10, 20], [0, 20, 25], [1, 25, 30]]
    """
    rows = []
    step = max(1, int(round(window_s * sr)))
    for i, (t0, t1) in enumerate(np.asarray(spans_s, dtype=np.float64)):
        a, b = int(round(t0 * sr)), max(int(round(t1 * sr)), int(round(t0 * sr)) + 1)
        rows += [(i, s, min(s + step, b)) for s in range(a, b, step)]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


class SpanWindows:
    """Turns a stream of waveform chunks into the windows of :func:`span_windows`.

    Holds only the samples from the next window's start on (at most one
    window plus one chunk).  A window that the audio ends inside is cut where
    the audio ends; one that starts after the end is never produced.
    """

    def __init__(self, spans_s: np.ndarray, *, sr: int, window_s: float):
        self._windows = span_windows(spans_s, sr=sr, window_s=window_s)
        self._next = 0
        self._buf = np.zeros(0, np.float32)
        self._buf_start = 0  # sample index of _buf[0]

    def push(self, chunk: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Yields ``(span, waveform)`` for each window that ``chunk`` completes."""
        self._buf = np.concatenate([self._buf, np.asarray(chunk, dtype=np.float32)])
        yield from self._emit(final=False)

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yields the window the audio ended inside, if any."""
        yield from self._emit(final=True)

    def _emit(self, *, final: bool):
        end = self._buf_start + len(self._buf)
        while self._next < len(self._windows):
            span, a, b = (int(v) for v in self._windows[self._next])
            if b > end and not final:
                break
            b = min(b, end)
            if b > a:
                yield span, self._buf[a - self._buf_start : b - self._buf_start].copy()
            self._next += 1
        keep_from = int(self._windows[self._next][1]) if self._next < len(self._windows) else end
        drop = max(0, min(keep_from, end) - self._buf_start)
        self._buf, self._buf_start = self._buf[drop:], self._buf_start + drop


class WindowEmbeddingPooler:
    """Audio stream in, per-span and overall embeddings out (duration-weighted means).

    Parameters
    ----------
    extractor : has ``extract(list of waveforms) -> (B, D)``, ``dim``, ``batch_size``
    spans_s : float (S, 2) span start/end seconds from the start of the audio.
    sr, window_s : sample rate; window length in seconds.
    """

    def __init__(self, extractor, spans_s: np.ndarray, *, sr: int, window_s: float):
        self._model = extractor
        self._windows = SpanWindows(spans_s, sr=sr, window_s=window_s)
        n = len(spans_s)
        self._sum = np.zeros((n, extractor.dim))
        self._weight = np.zeros(n)
        self._pending: list[tuple[int, np.ndarray]] = []

    def push(self, chunk: np.ndarray) -> None:
        self._take(self._windows.push(chunk))

    def pooled(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(per-span (S, D), overall (D,)) float32, or None when there was no audio.

        A span without audio of its own (the track ended before it) gets the overall embedding.
        """
        self._take(self._windows.finish())
        self._run()
        total = self._weight.sum()
        if total == 0:
            return None
        overall = (self._sum.sum(0) / total).astype(np.float32)
        per = np.where(self._weight[:, None] > 0, self._sum / np.maximum(self._weight, 1e-30)[:, None], overall)
        return per.astype(np.float32), overall

    def _take(self, windows) -> None:
        for w in windows:
            self._pending.append(w)
            if len(self._pending) >= self._model.batch_size:
                self._run()

    def _run(self) -> None:
        if not self._pending:
            return
        emb = self._model.extract([y for _, y in self._pending]).astype(np.float64)
        for (span, y), e in zip(self._pending, emb):
            self._sum[span] += len(y) * e
            self._weight[span] += len(y)
        self._pending = []


# ---------------------------------------------------------------- network


def build_cnn14(classes: int = 527) -> "nn.Module":
    """Cnn14 without its front end: log-mel ``(N, 1, T, 64)`` -> embedding ``(N, 2048)``.

    Parameter names match PANNs' ``Cnn14_16k`` checkpoint (``bn0``,
    ``conv_block1..6.{conv1,conv2,bn1,bn2}``, ``fc1``, ``fc_audioset``).
    Six blocks of two 3x3 conv+BN+ReLU, average-pooled 2x2 after blocks
    1-5; the map is averaged over mel bands, then max + mean over time, then
    ``relu(fc1)``: the 2048-d embedding (the classifier ``fc_audioset`` is
    kept so the checkpoint loads strictly, but not run).  ``T >= 32``.
    """
    import torch.nn.functional as F
    from torch import nn

    class ConvBlock(nn.Module):
        def __init__(self, cin: int, cout: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.bn2 = nn.BatchNorm2d(cout)

        def forward(self, x, pool: int):
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(self.bn2(self.conv2(x)))
            return F.avg_pool2d(x, pool) if pool > 1 else x

    class Cnn14Embedding(nn.Module):
        def __init__(self):
            super().__init__()
            self.bn0 = nn.BatchNorm2d(N_MELS)
            widths = (1, 64, 128, 256, 512, 1024, 2048)
            for i in range(6):
                setattr(self, f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
            self.fc1 = nn.Linear(2048, 2048)
            self.fc_audioset = nn.Linear(2048, classes)

        def forward(self, x):  # (N, 1, T, mel)
            x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalise each mel band
            for i in range(6):
                x = getattr(self, f"conv_block{i + 1}")(x, 2 if i < 5 else 1)
            x = x.mean(dim=3)  # over mel
            x = x.max(dim=2).values + x.mean(dim=2)  # over time
            return F.relu(self.fc1(x))

    return Cnn14Embedding()


def cnn14_state(checkpoint) -> dict:
    """The network's state dict from a PANNs checkpoint: ``checkpoint['model']`` (or a
    bare state dict) without the front-end keys."""
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state, dict):
        raise ReelsimError(f"expected a state dict (or a dict with key 'model'), got {type(state).__name__}")
    return {k: v for k, v in state.items() if not k.startswith(FRONT_END_PREFIXES)}


# ---------------------------------------------------------------- extractor


@register("audio", "cnn14-16k")
class Cnn14Audio(Extractor):
    """PANNs CNN14 (16 kHz, AudioSet) embeddings; 2048-d; weights by path or torch cache.

    Parameters
    ----------
    device : ``auto``, ``cpu`` or ``cuda``
    weights_path : the ``Cnn14_16k_mAP=0.438.pth`` file (``--audio-weights``);
        default ``<torch hub dir>/checkpoints/Cnn14_16k_mAP=0.438.pth``.
    batch_size : windows per forward pass.
    precision : see :func:`reelsim.extractors.device.amp_dtype`.
    window_s, min_s : windows are at most ``window_s`` s (PANNs trained on 10 s
        clips); a shorter one is looped to ``min_s`` s so the five 2x poolings
        have frames to pool.
    """

    dim = 2048
    sample_rate = SAMPLE_RATE
    window_s = 10.0
    min_s = 1.0

    weights_kind = "AudioSet"

    def _load(self) -> None:
        model = build_cnn14()
        try:
            model.load_state_dict(cnn14_state(load_state_dict_file(self.weights_file, self.name)), strict=True)
        except RuntimeError as e:
            raise ReelsimError(f"{self.weights_file} is not a Cnn14_16k checkpoint: {e}") from None
        self.model = model.eval().to(self.device)

    @classmethod
    def weights_spec(cls) -> WeightsSpec:
        return CNN14_16K_WEIGHTS

    def extract(self, segments: list[np.ndarray]) -> np.ndarray:
        """float32 (B, 2048): one embedding per mono 16 kHz waveform in ``segments``.

        Waveforms shorter than ``min_s`` are looped to it; equal-length ones share a forward pass.
        """
        import torch

        mels = [cnn14_log_mel(y=loop_to_length(np.asarray(y, np.float32), int(self.min_s * self.sample_rate)))
                for y in segments]
        out = np.empty((len(mels), self.dim), np.float32)
        by_len: dict[int, list[int]] = {}
        for i, m in enumerate(mels):
            by_len.setdefault(len(m), []).append(i)
        with torch.inference_mode(), autocast(self.device, self.precision):
            for rows in by_len.values():
                for start in range(0, len(rows), self.batch_size):
                    idx = rows[start : start + self.batch_size]
                    x = torch.from_numpy(np.stack([mels[i] for i in idx]))[:, None].to(self.device)
                    out[idx] = self.model(x).float().cpu().numpy()
        return out

    def span_pooler(self, spans_s: np.ndarray, sr: int) -> WindowEmbeddingPooler:
        """A pooler of per-span embeddings over a streamed waveform at ``sr`` Hz."""
        if sr != self.sample_rate:
            raise ReelsimError(f"{self.name} needs audio decoded at {self.sample_rate} Hz, got {sr} Hz")
        return WindowEmbeddingPooler(self, spans_s, sr=sr, window_s=self.window_s)

    def _provenance(self) -> dict:
        return {
            "network": "PANNs Cnn14_16k (AudioSet)",
            "precision": precision_name(self.device, self.precision),
            "weights": self.weights_file.name,
            "sample_rate": self.sample_rate,
            "n_fft": WINDOW,
            "hop": HOP,
            "n_mels": N_MELS,
            "fmin": FMIN,
            "fmax": FMAX,
            "window_s": self.window_s,
            "min_s": self.min_s,
            "pooling": "window embeddings (<= window_s s, looped to min_s); shot and item = "
                       "duration-weighted mean of their windows",
        }
