"""Where extractors run: device names in, ``torch.device`` out.

``torch`` is imported inside the functions, so importing this module is cheap.

Examples
--------
>>> from reelsim.extractors.device import resolve_device
>>> resolve_device("cpu")
device(type='cpu')
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ContextManager

from reelsim.errors import UsageError

if TYPE_CHECKING:
    import torch


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
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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


def autocast(device: "torch.device") -> ContextManager:
    """Mixed precision for inference: bf16 autocast on CUDA, a no-op on CPU.

    CPU inference stays fp32, so its features are bit-for-bit repeatable.
    """
    import torch

    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
