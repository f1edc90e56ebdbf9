"""The model registry: modality -> name -> extractor class, with the built-in extractors in it.

Every extractor registers itself with :func:`reelsim.extractors.base.register`;
this module imports the built-in ones, so that :data:`REGISTRIES` is complete
once it is imported (each class imports torch & co. only when constructed, so
this is cheap). The CLI reads its model choices from here, so adding a model
is one decorated class in a module listed below.

Examples
--------
>>> from reelsim.extractors.registry import REGISTRIES
>>> sorted(REGISTRIES)
['audio', 'image', 'text', 'visual']
>>> "effnet-lite0-inflated" in REGISTRIES["visual"]
True
"""

from __future__ import annotations

import collections
import functools

from reelsim.config import MODALITIES, ModelConfig
from reelsim.errors import UsageError
from reelsim.extractors import audio, image, panns, text, video  # noqa: F401  (they register themselves)
from reelsim.extractors.base import REGISTRIES as REGISTRIES
from reelsim.extractors.base import Extractor
from reelsim.storage.hashing import sha256_file
from reelsim.storage.provenance import ModelStamp


def names(modality: str) -> list[str]:
    """The registered model names of ``modality``, sorted (the CLI's choices)."""
    return sorted(REGISTRIES[modality])


def get_class(modality: str, name: str) -> type[Extractor]:
    """The extractor class registered as ``name`` for ``modality``."""
    table = REGISTRIES.get(modality)
    if table is None:
        raise UsageError(f"unknown modality {modality!r}; expected one of {sorted(REGISTRIES)}")
    if name not in table:
        raise UsageError(f"unknown {modality} model {name!r}; available: {', '.join(sorted(table))}")
    return table[name]


#: "modality/name" -> how many times this process has built that extractor (1 when caching works).
LOADS: collections.Counter[str] = collections.Counter()


@functools.lru_cache(maxsize=None)
def load(modality: str, name: str, **kwargs) -> Extractor:
    """Instantiate an extractor once per process (per Dask worker).

    ``kwargs`` must be hashable (strings, numbers, None); they are passed to
    the extractor's constructor (e.g. ``weights_path=``, ``device=``).
    Each real construction is counted in :data:`LOADS` (reported per item in
    report.json as ``model_loads``).
    """
    model = get_class(modality, name)(**kwargs)
    LOADS[f"{modality}/{name}"] += 1
    return model


def model_stamps(models: ModelConfig, modalities=MODALITIES) -> dict[str, ModelStamp]:
    """The stamp each of ``modalities``' features will carry in a run with ``models``.

    Resolves each model's weights file (explicit path, torch cache or the
    shipped file) and hashes it, without loading any model. A missing file
    raises :class:`~reelsim.errors.WeightsNotFoundError` naming where to get it.
    (A run passes the modalities its items have: a catalog without text needs no text model.)
    """
    paths = {"visual": models.video_weights, "audio": models.audio_weights}
    out = {}
    for modality in modalities:
        name = getattr(models, modality)
        weights = get_class(modality, name).weights_file_for(paths.get(modality))
        out[modality] = ModelStamp(name, sha256_file(weights) if weights else "")
    return out
