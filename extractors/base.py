"""What every feature extractor shares: the registry it joins and one constructor.

An extractor is a small class registered by name for one modality::

    @register("visual", "my-3d-cnn")
    class My3DCnn(Extractor):
        dim = 512

        @classmethod
        def weights_spec(cls) -> WeightsSpec: ...       # the file it needs, as data

        def _load(self) -> None: ...                    # build self.model from self.weights_file
        def extract(self, batch) -> np.ndarray: ...     # float32 (B, dim)
        def _provenance(self) -> dict: ...              # what else produced these features

The constructor (:class:`Extractor`) checks the batch size, resolves the
device and the precision, finds the weights file (never downloading it) and
hashes it, then calls ``_load``. :meth:`Extractor.provenance` always records
the model name, the weights file's sha256 and the output dimension.
The CLI's model choices are read from :data:`REGISTRIES`
(:mod:`reelsim.extractors.registry` imports the built-in extractors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar, TypeVar

import numpy as np

from reelsim.config import MODALITIES
from reelsim.errors import ReelsimError, WeightsNotFoundError
from reelsim.extractors.device import amp_dtype, resolve_device
from reelsim.extractors.weights import WeightsSpec, cache_path, resolve_weights
from reelsim.storage.hashing import sha256_file

T = TypeVar("T", bound=type)

#: modality -> {name -> extractor class}
REGISTRIES: dict[str, dict[str, type]] = {m: {} for m in MODALITIES}


def register(modality: str, name: str) -> Callable[[T], T]:
    """Class decorator: register an extractor class under ``name`` for ``modality``."""
    if modality not in REGISTRIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {sorted(REGISTRIES)}")

    def deco(cls: T) -> T:
        if name in REGISTRIES[modality]:
            raise ValueError(f"{modality} extractor {name!r} registered twice")
        cls.name = name
        cls.modality = modality
        REGISTRIES[modality][name] = cls
        return cls

    return deco


class Extractor:
    """Base class: the shared constructor, weights lookup and provenance of an extractor.

    Parameters
    ----------
    device : str
        ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    weights_path : str, optional
        An explicit weights file (or folder, for the text model); default the
        file the model's package ships, or the torch hub cache.
    batch_size : int, optional
        Inputs per forward pass (default: the class's ``default_batch_size``).
    precision : str
        ``auto``, ``fp32``, ``bf16`` or ``fp16`` (used by the models that run
        under autocast; checked for all).

    Attributes set for subclasses: ``device`` (torch.device), ``precision``,
    ``batch_size``, ``weights_file`` (Path or None) and ``weights_sha256``
    (hex, "" without a weights file).

    Raises
    ------
    ReelsimError
        Batch size below 1, or an unusable weights file.
    WeightsNotFoundError
        The weights file is not on this machine (the message says where to get it).
    UsageError
        Unknown device or precision, or CUDA asked for where there is none.
    """

    name: ClassVar[str]
    modality: ClassVar[str]
    dim: ClassVar[int]
    default_batch_size: ClassVar[int] = 8
    #: what the weights were trained on, for ``reelsim models`` (e.g. ``Kinetics-400``)
    weights_kind: ClassVar[str] = "pretrained"

    def __init__(self, *, device: str = "cpu", weights_path: str | None = None, batch_size: int | None = None,
                 precision: str = "auto"):
        batch_size = self.default_batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise ReelsimError(f"batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        amp_dtype(self.device, precision)  # an unknown precision fails here, not at the first batch
        self.precision = precision
        self.batch_size = batch_size
        self.weights_path = weights_path
        self.weights_file: Path | None = self.weights_file_for(weights_path)
        self.weights_sha256 = sha256_file(self.weights_file) if self.weights_file else ""
        self._load()

    # -- weights -------------------------------------------------------------
    @classmethod
    def weights_spec(cls) -> WeightsSpec:
        """The weights file this model needs, as data (models without weights do not define it)."""
        raise NotImplementedError(f"{cls.__name__} has no weights spec")

    @classmethod
    def weights_file_for(cls, weights_path: str | None = None) -> Path | None:
        """The weights file this model would load for ``weights_path`` (explicit, else the torch cache)."""
        return resolve_weights(cls.weights_spec(), weights_path)

    @classmethod
    def usable(cls) -> tuple[bool, str]:
        """Whether this machine has the model's weights, and a one-line reason."""
        spec = cls.weights_spec()
        try:
            path = resolve_weights(spec)
        except WeightsNotFoundError:
            return False, (f"weights file {spec.filename} not found in {cache_path(spec).parent}; "
                           f"pass {spec.flag} PATH (download {spec.url})")
        return True, f"{cls.weights_kind} weights at {path}"

    # -- work ----------------------------------------------------------------
    def _load(self) -> None:
        """Build the model (``self.model``) from ``self.weights_file`` on ``self.device``."""

    def extract(self, batch) -> np.ndarray:
        """float32 (B, dim) features of a batch of inputs (the modality's kind of input)."""
        raise NotImplementedError

    def provenance(self) -> dict:
        """What produced these features (stored next to them in each shard)."""
        return {"model": self.name, "weights_sha256": self.weights_sha256, "dim": self.dim, **self._provenance()}

    def _provenance(self) -> dict:
        """Model-specific provenance fields (weights name, input size, pooling ...)."""
        return {}
