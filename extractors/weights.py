"""Pretrained weights described as data, and found on disk without downloading.

A :class:`WeightsSpec` says which file a model needs and where it comes from.
:func:`resolve_weights` only *finds* that file (an explicit path, else the
torch hub cache); nothing in reelsim downloads weights, so a batch job on an
offline worker fails early with a message that says how to fetch them.

Examples
--------
>>> from reelsim.extractors.weights import WeightsSpec
>>> spec = WeightsSpec(name="r3d_18", filename="r3d_18-b3b3357e.pth",
...                    url="https://download.pytorch.org/models/r3d_18-b3b3357e.pth")
>>> spec.filename
'r3d_18-b3b3357e.pth'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from reelsim.errors import ReelsimError, WeightsNotFoundError
from reelsim.storage.hashing import sha256_file


@dataclass(frozen=True)
class WeightsSpec:
    """One weights file a model needs.

    Parameters
    ----------
    name : str
        Model name the weights belong to (for messages).
    filename : str
        File name in the torch hub cache (``<hub dir>/checkpoints/<filename>``).
    url : str
        Where a person can download the file (reelsim never does).
    sha256 : str or None
        Full hex sha256 of the file; when given, a file that differs is an error.
    source : str
        Where this description was read from (e.g. a torchvision weights enum).
    flag : str
        The CLI flag that passes the file explicitly (for messages).
    """

    name: str
    filename: str
    url: str
    sha256: str | None = None
    source: str = "unspecified"
    flag: str = "--video-weights"


def cache_path(spec: WeightsSpec) -> Path:
    """Where torch's hub cache keeps ``spec``'s file: ``<hub dir>/checkpoints/<filename>``."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / spec.filename


def resolve_weights(spec: WeightsSpec, path: str | os.PathLike | None = None) -> Path:
    """The weights file for ``spec``: ``path`` when given, else the torch hub cache.

    Parameters
    ----------
    spec : WeightsSpec
    path : str or PathLike, optional
        An explicit weights file (``--video-weights``); it must exist.

    Returns
    -------
    Path
        An existing file.

    Raises
    ------
    WeightsNotFoundError
        The explicit file is missing, or no path was given and the cache has no
        such file; the message names the URL and both ways to supply it.
    ReelsimError
        ``spec.sha256`` is set and the file's hash differs.
    """
    if path is not None:
        found = Path(path).expanduser()
        if not found.is_file():
            raise WeightsNotFoundError(
                f"weights file for {spec.name} not found: {found} "
                f"(expected {spec.filename}, from {spec.url})"
            )
    else:
        found = cache_path(spec)
        if not found.is_file():
            raise WeightsNotFoundError(
                f"weights for {spec.name} not found: this machine has no {spec.filename}. "
                f"Download {spec.url} and pass {spec.flag} PATH or place the file at {found}"
            )
    if spec.sha256 is not None and sha256_file(found) != spec.sha256.lower():
        raise ReelsimError(
            f"weights file {found} has sha256 {sha256_file(found)}, "
            f"but {spec.name} expects {spec.sha256} ({spec.source})"
        )
    return found


def load_state_dict_file(path: str | os.PathLike, what: str) -> dict:
    """``torch.load(path, weights_only=True)`` on CPU; an unreadable file is a :class:`ReelsimError`."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise ReelsimError(f"cannot read {what} weights from {path} (safe tensor-only load): {e}") from None
