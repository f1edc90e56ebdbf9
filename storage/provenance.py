"""One model per modality per store: which models made the stored features.

Every shard records, per modality, the model name and the sha256 of its
weights file (``/features/<modality>`` attrs ``model``, ``weights_sha256``).
:func:`guard_model_change` compares them with the models a run is about to
use, so features of different models (or of the same model with other
weights) never end up side by side in one store and its index.

Examples
--------
>>> from reelsim.storage.provenance import ModelStamp
>>> ModelStamp("r3d_18", "ab" * 32).describe()
'r3d_18 (weights sha256 abababababab...)'
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from reelsim.config import MODALITIES
from reelsim.errors import UsageError
from reelsim.storage.atomic import special_file_problem
from reelsim.storage.layout import StoreLayout
from reelsim.storage.shards import check_shard


@dataclass(frozen=True)
class ModelStamp:
    """What produced one modality's features: registry name and weights sha256 ('' = no weights)."""

    model: str
    weights_sha256: str

    def describe(self) -> str:
        return f"{self.model} (weights sha256 {self.weights_sha256[:12]}...)" if self.weights_sha256 else self.model


def shard_stamps(path: Path) -> tuple[str, dict[str, ModelStamp]]:
    """(item id, modality -> stamp) recorded in one shard; ("", {}) when it cannot be read."""
    import h5py

    if special_file_problem(path) is not None:
        return "", {}
    try:
        with h5py.File(path, "r") as f:
            feats = f.get("features", {})
            return str(f.attrs.get("item_id", "")), {
                m: ModelStamp(str(feats[m].attrs.get("model", "")), str(feats[m].attrs.get("weights_sha256", "")))
                for m in feats
            }
    except OSError:  # half-written or damaged: it is recomputed like any stale shard
        return "", {}


#: shards :func:`recorded_models` opens at most (one model per modality per store: any shard is representative)
RECORDED_SCAN = 256


def recorded_models(store: str | Path, *, scan: int = RECORDED_SCAN) -> dict[str, ModelStamp]:
    """modality -> the model the store's features of that modality came from (its shards' stamps).

    A store holds one model per modality (:func:`guard_model_change`), so the
    first shards that have each modality say it; at most ``scan`` shards are
    opened, lazily (``shards/`` is walked, never listed whole). ``{}`` for a
    store without shards (or a folder that is not one).
    """
    import itertools

    layout = StoreLayout(store)
    if not layout.shards_dir.is_dir():
        return {}
    out: dict[str, ModelStamp] = {}
    for path in itertools.islice(layout.shards_dir.glob("*/*.h5"), scan):
        for modality, stamp in shard_stamps(path)[1].items():
            if stamp.model:
                out.setdefault(modality, stamp)
        if set(out) >= set(MODALITIES):
            break
    return out


def usable_shards(store: Path, expected: dict[str, ModelStamp], *,
                  skip_keys: set[str] = frozenset()) -> dict[str, Path]:
    """{item id: shard} of every sound shard (:func:`~reelsim.storage.shards.check_shard`) whose features
    all come from the ``expected`` models (a damaged shard, or one of another model, is left out).

    Shards whose file name is one of ``skip_keys`` (:func:`~reelsim.storage.layout.item_key` of their
    items, e.g. a run's own items, whose rows say how they are) are not opened.
    """
    layout = StoreLayout(store)
    out = {}
    for path in layout.shard_files():
        if path.stem in skip_keys:
            continue
        item_id, wrong = check_shard(layout, path)
        if wrong is None and all(expected.get(m, s) == s for m, s in shard_stamps(path)[1].items()):
            out[item_id] = path
    return out


def model_conflicts(store: Path, expected: dict[str, ModelStamp]) -> dict[tuple[str, ModelStamp], list[tuple[str, Path]]]:
    """Shards whose features came from another model than ``expected``.

    Returns
    -------
    dict mapping (modality, stored stamp) -> [(item id, shard path), ...]
    """
    conflicts: dict[tuple[str, ModelStamp], list[tuple[str, Path]]] = defaultdict(list)
    for path in StoreLayout(store).shard_files():
        item_id, stamps = shard_stamps(path)
        for modality, stamp in stamps.items():
            if modality in expected and stamp != expected[modality]:
                conflicts[(modality, stamp)].append((item_id, path))
    return dict(conflicts)


def guard_model_change(store: Path, expected: dict[str, ModelStamp], item_ids: list[str], *,
                       re_extract: bool) -> list[str]:
    """Refuse to mix models in one store, or (``re_extract``) clear this run's stale shards.

    Parameters
    ----------
    store : the feature store folder
    expected : modality -> the stamp this run's features will carry
        (:func:`reelsim.extractors.registry.model_stamps`)
    item_ids : the items this run processes
    re_extract : when True, the shards of ``item_ids`` made by another model
        are removed so the run recomputes them (shards of other items stay).

    Returns
    -------
    list of str
        Ids of the items whose shards were removed for recomputation.

    Raises
    ------
    UsageError
        Without ``re_extract``, when any shard in the store came from another
        model or weights file; the message names both and the way out.
    """
    conflicts = model_conflicts(store, expected)
    if not conflicts:
        return []
    if not re_extract:
        lines = [f"{len(paths)} item(s) in {store} have {modality} features from {stamp.describe()} "
                 f"(e.g. {paths[0][0]!r}), but this run uses {expected[modality].describe()}"
                 for (modality, stamp), paths in sorted(conflicts.items(), key=lambda kv: kv[0][0])]
        raise UsageError("; ".join(lines) + ". Features of different models are never mixed in one store: "
                         "pass --re-extract to recompute them, or use another --store")
    wanted = set(item_ids)
    removed = sorted({item for paths in conflicts.values() for item, path in paths if item in wanted})
    for paths in conflicts.values():
        for item, path in paths:
            if item in wanted:
                path.unlink(missing_ok=True)
    return removed
