"""Shot detectors by name: the registry with the built-in detectors in it.

Importing this module imports every built-in detector module, each of which
registers itself (:func:`reelsim.extractors.shots.register_detector`), so
:data:`DETECTORS` is complete; the CLI's ``--shot-detector`` choices are
:func:`names`.

Examples
--------
>>> names()
['adaptive', 'content', 'ensemble', 'reelsim', 'transnetv2']
"""

from __future__ import annotations

from reelsim.config import ShotConfig
from reelsim.errors import UsageError
from reelsim.extractors import scenedetect_detectors, transitions, transnet  # noqa: F401  (they register themselves)
from reelsim.extractors.shots import DETECTORS, ShotDetector


def names() -> list[str]:
    """Registered detector names, sorted."""
    return sorted(DETECTORS)


def make_detector(cfg: ShotConfig, fps: float) -> ShotDetector:
    """Build the detector named by ``cfg.detector`` for a stream at ``fps`` frames/s."""
    try:
        factory = DETECTORS[cfg.detector]
    except KeyError:
        raise UsageError(f"unknown shot detector {cfg.detector!r}; available: {', '.join(names())}") from None
    return factory(cfg, fps)
