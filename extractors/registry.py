"""One registry per modality: name -> extractor class.

An extractor is a small class with class attributes ``name`` and ``dim`` and
one ``extract(batch) -> np.ndarray`` method returning ``float32 (B, dim)``.
The CLI reads its choices from these dicts, so adding a model is one
decorated class.

Examples
--------
>>> from reelsim.extractors.registry import REGISTRIES
>>> sorted(REGISTRIES)
['audio', 'image', 'text', 'visual']
"""

from __future__ import annotations

import collections
import functools
from typing import Callable, TypeVar

from reelsim.errors import UsageError

T = TypeVar("T", bound=type)

#: modality -> {name -> extractor class}
REGISTRIES: dict[str, dict[str, type]] = {
    "visual": {},
    "audio": {},
    "image": {},
    "text": {},
}


def register(modality: str, name: str) -> Callable[[T], T]:
    """Class decorator: register an extractor class under ``name``."""
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


def _ensure_builtins_registered() -> None:
    # The built-in extractors register themselves on import; importing them
    # is cheap because each one imports torch & co. only when instantiated.
    from reelsim.extractors import audio, image, panns, text, video  # noqa: F401


def get_class(modality: str, name: str) -> type:
    """The extractor class registered as ``name`` for ``modality``."""
    _ensure_builtins_registered()
    table = REGISTRIES.get(modality)
    if table is None:
        raise UsageError(f"unknown modality {modality!r}; expected one of {sorted(REGISTRIES)}")
    if name not in table:
        raise UsageError(
            f"unknown {modality} model {name!r}; available: {', '.join(sorted(table))}"
        )
    return table[name]


#: "modality/name" -> how many times this process has built that extractor (1 when caching works).
LOADS: collections.Counter[str] = collections.Counter()


@functools.lru_cache(maxsize=None)
def load(modality: str, name: str, **kwargs) -> object:
    """Instantiate an extractor once per process (per Dask worker).

    ``kwargs`` must be hashable (strings, numbers, None); they are passed to
    the extractor's constructor (e.g. ``weights_path=``, ``device=``).
    Each real construction is counted in :data:`LOADS` (reported per item in
    report.json as ``model_loads``).
    """
    model = get_class(modality, name)(**kwargs)
    LOADS[f"{modality}/{name}"] += 1
    return model
