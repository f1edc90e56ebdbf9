"""Where extractors run and in which precision.

``resolve_device`` turns ``--device`` into a ``torch.device``; ``autocast``
gives mixed precision on CUDA (``--precision auto``); ``check_amp`` measures
mixed-precision features against fp32 ones on the same batch.

``torch`` is imported inside the functions, so importing this module is cheap.

Examples
--------
>>> from reelsim.extractors.device import resolve_device
>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, ContextManager

import numpy as np

from reelsim.errors import UsageError

if TYPE_CHECKING:
    import torch


#: a file that exists on every machine with an NVIDIA driver loaded
NVIDIA_CONTROL_DEVICE = "/dev/nvidiactl"


def cuda_may_be_present() -> bool:
    """False when this machine surely has no CUDA GPU (no NVIDIA driver device): then ``auto`` is the CPU
    and torch need not be imported to find out (the driver of a CPU run stays small)."""
    return os.path.exists(NVIDIA_CONTROL_DEVICE)


def device_name(name: str) -> str:
    """``resolve_device(name)`` as a string (``cpu``, ``cuda:0`` ...), without importing torch where the
    answer is the CPU anyway: ``cpu``, or ``auto`` on a machine with no NVIDIA driver
    (:func:`cuda_may_be_present`). A CPU run's driver then never loads torch.

    Examples
    --------
    >>> device_name("cpu")
    'cpu'
    """
    if name == "cpu" or (name == "auto" and not cuda_may_be_present()):
        return "cpu"
    return str(resolve_device(name))


def resolve_device(name: str) -> "torch.device":
    """Turn a ``--device`` value into a ``torch.device``.

    Parameters
    ----------
    name : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``.

    Returns
    -------
    torch.device

    Raises
    ------
    UsageError
        For an unknown name, or ``cuda`` asked for on a machine without CUDA
        (never a silent fall-back to CPU).
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if cuda_may_be_present() and torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(
                f"device {name!r} asked for, but this torch ({torch.__version__}) sees no CUDA "
                "device; use --device cpu or --device auto"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return device
    raise UsageError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N")


#: ``--precision`` choices: ``auto`` = mixed precision on CUDA (bf16, fp16 where
#: the GPU lacks bf16), fp32 on CPU; the others force one mode on any device.
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def amp_dtype(device: "torch.device", precision: str = "auto") -> "torch.dtype | None":
    """The autocast dtype for ``precision`` on ``device``, or None for plain fp32.

    ``auto``: bf16 on CUDA when the GPU supports it (Ampere and later), else
    fp16; None (fp32) on CPU, so CPU features are bit-for-bit repeatable.

    Examples
    --------
    >>> import torch
    >>> amp_dtype(torch.device("cpu")) is None
    True
    >>> amp_dtype(torch.device("cpu"), "bf16")
    torch.bfloat16
    """
    import torch

    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def precision_name(device: "torch.device", precision: str = "auto") -> str:
    """What ``precision`` means on ``device``: ``fp32``, ``bf16`` or ``fp16`` (for provenance)."""
    dtype = amp_dtype(device, precision)
    return "fp32" if dtype is None else {"torch.bfloat16": "bf16", "torch.float16": "fp16"}[str(dtype)]


def autocast(device: "torch.device", precision: str = "auto") -> ContextManager:
    """Mixed precision for inference per :func:`amp_dtype`; a no-op for fp32.

    Weights stay fp32; autocast runs convolutions and matmuls in the low
    precision dtype and keeps reductions and normalisation in fp32.
    """
    import torch

    dtype = amp_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class AmpCheck:
    """Mixed-precision features compared with fp32 ones on the same batch.

    cosine : float64 (B,) cosine similarity of each row, AMP vs fp32.
    fp32, amp : float32 (B, D) the two feature arrays compared.
    """

    device: str
    precision: str
    cosine: np.ndarray
    threshold: float
    fp32: np.ndarray
    amp: np.ndarray

    @property
    def min_cosine(self) -> float:
        return float(self.cosine.min())

    @property
    def passed(self) -> bool:
        return self.min_cosine >= self.threshold

    def describe(self) -> str:
        verdict = "ok" if self.passed else "BELOW THRESHOLD"
        return (f"{self.precision} on {self.device}: min cosine vs fp32 {self.min_cosine:.5f}, "
                f"mean {float(self.cosine.mean()):.5f} (threshold {self.threshold}): {verdict}")


def check_amp(extractor, batch, *, precision: str | None = None, threshold: float = 0.999) -> AmpCheck:
    """Run ``extractor.extract(batch)`` in fp32 and in mixed precision and compare rows.

    Parameters
    ----------
    extractor : an extractor with ``device``, a settable ``precision`` and ``extract``
    batch : what its ``extract`` takes (clips, waveforms ...)
    precision : ``bf16`` or ``fp16``; default: what ``auto`` picks on CUDA, bf16 on CPU
        (CPU autocast supports bf16; the check then measures it honestly).
    threshold : the cosine every row must reach to pass.

    Returns
    -------
    AmpCheck
        The measured cosines; ``passed`` is never forced.
    """
    device = extractor.device
    if precision is None:
        precision = precision_name(device, "auto") if device.type == "cuda" else "bf16"
    if precision == "fp32" or precision not in PRECISIONS:
        raise UsageError(f"check_amp needs bf16 or fp16, got {precision!r}")
    saved = extractor.precision
    try:
        extractor.precision = "fp32"
        ref = np.asarray(extractor.extract(batch), dtype=np.float32)
        extractor.precision = precision
        amp = np.asarray(extractor.extract(batch), dtype=np.float32)
    finally:
        extractor.precision = saved
    return AmpCheck(device=str(device), precision=precision, cosine=row_cosine(ref, amp), threshold=threshold,
                    fp32=ref, amp=amp)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 (B,) cosine similarity of matching rows of two (B, D) arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(1) / np.maximum(norms, 1e-30)
