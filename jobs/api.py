"""reelsim's Python API, for notebooks and schedulers: the CLI is a thin layer over the same calls.

Examples
--------
>>> import reelsim                                                        # doctest: +SKIP
>>> report = reelsim.run(["catalog.jsonl"], "out/", workers=2)           # like `reelsim run`
>>> report.summary()
{'total': 21, 'ok': 19, 'cached': 0, 'failed': 2}
>>> store = reelsim.open_store("out/")
>>> [(n.item, round(n.score, 3)) for n in store.similar("trailer-042", k=3)]
[('trailer-042-mobile', 0.981), ('trailer-017', 0.612), ('trailer-099', 0.57)]
>>> store.shots("trailer-042")["shots"][0]["end_s"]                       # like `reelsim shots --json`
4.2
>>> store.lists().to_pandas().head()                                    # every list, as a pyarrow Table
>>> store.features("trailer-042")["visual"].shape                        # the item's stored embedding
(1280,)

A custom configuration is the same typed :class:`reelsim.Config` the CLI
builds (checked when built)::

    cfg = reelsim.Config().with_settings(["clips.hop_s=1.5", "fusion.k=20"])
    reelsim.run(["media/"], "out/", cfg)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reelsim.config import Config, FusionConfig, parse_weights
from reelsim.errors import StoreError, UnknownItemError
from reelsim.jobs.runner import RunReport, run_catalog
from reelsim.similarity.catalog import load_catalog
from reelsim.similarity.copies import Segment
from reelsim.similarity.copies import matches as copy_matches
from reelsim.similarity.incremental import check_can_add
from reelsim.similarity.lookup import Lookup
from reelsim.similarity.rebuild import relist
from reelsim.storage.layout import StoreLayout
from reelsim.storage.lists import Neighbor, read_parquet_table
from reelsim.storage.shards import read_item_features, read_shots


def run(inputs: str | os.PathLike | Sequence[str | os.PathLike], store: str | os.PathLike, config: Config | None = None,
        *, workers: int | None = None, scheduler: str | None = None, client=None, progress: bool = False,
        re_extract: bool = False) -> RunReport:
    """Process a catalog into ``store`` and write its lists (``reelsim run``).

    Parameters
    ----------
    inputs : path or list of paths
        Folders of media, ``.jsonl``/``.csv`` manifests or video files.
    store : path
        The store folder (created).
    config : Config, optional
        Default ``Config()``.
    workers, scheduler, client : where the items run: a new local cluster of
        ``workers`` processes (default), a scheduler address, or an existing
        ``distributed.Client`` (left open).
    progress : a progress bar on stderr.
    re_extract : allow a model change against the store's features.

    Returns
    -------
    RunReport
        Per-item rows (``.items``), ``.summary()``, ``.failed``, ``.exit_code``;
        also written to ``STORE/report.json``.
    """
    return run_catalog(_paths(inputs), Path(store), config or Config(), scheduler=scheduler, workers=workers,
                       progress=progress, re_extract=re_extract, client=client)


def add(inputs: str | os.PathLike | Sequence[str | os.PathLike], store: str | os.PathLike, config: Config | None = None,
        *, workers: int | None = None, scheduler: str | None = None, client=None, progress: bool = False) -> RunReport:
    """Analyse new items and add them to an existing store's index and lists (``reelsim add``)."""
    check_can_add(Path(store))
    return run_catalog(_paths(inputs), Path(store), config or Config(), scheduler=scheduler, workers=workers,
                       progress=progress, lists="add", client=client)


def _paths(inputs) -> list[str]:
    return [os.fspath(inputs)] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(p) for p in inputs]


class Store:
    """A finished store, read-only: neighbours, shots, lists and features of its items.

    Use :func:`open_store`. Every method reads the store's files when called,
    so a store that another process updates is seen as it is now.
    """

    def __init__(self, path: str | os.PathLike):
        self.layout = StoreLayout(path)
        self.path = self.layout.root
        self._lookups: dict[str, Lookup] = {}

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def ids(self) -> list[str]:
        """The ids of the indexed items, in catalog order."""
        return list(load_catalog(self.layout.require_catalog())[0].ids)

    def similar(self, item: str, k: int = 10, *, weights: dict[str, float] | str | None = None) -> list[Neighbor]:
        """``item``'s ``k`` nearest neighbours, best first (``reelsim similar``).

        ``weights`` re-weights the modalities for this query (a dict, or
        ``"text=0"`` as on the command line); default the catalog's weights.
        """
        if isinstance(weights, str):
            weights = parse_weights(weights)
        key = json.dumps(weights, sort_keys=True)
        if key not in self._lookups:
            self._lookups[key] = Lookup(self.path, weights)
        return self._lookups[key].neighbors(item, k)

    def matches(self, item: str, *, direction: str = "both") -> list[Segment]:
        """Copies of ``item``'s footage in other items and the footage it copies (``reelsim matches``), best first.

        Each :class:`~reelsim.similarity.copies.Segment` gives the other
        item, the ``relation`` (``copies``: ``item`` shows the other's
        footage; ``copied-by``: the other shows ``item``'s; ``duplicate``),
        the aligned spans in both (seconds), a score, the shots matched, the
        speed ratio and the kind of edit it looks like. ``direction="in"``:
        only where ``item`` comes from; ``"out"``: only where it is used.
        """
        return copy_matches(self.path, item, direction=direction)

    def shots(self, item: str) -> dict:
        """Shots and scenes of a video item, as ``reelsim shots --json`` prints them."""
        return read_shots(self.path, item)

    def lists(self):
        """Every item's list as a ``pyarrow.Table`` (columns :data:`reelsim.storage.lists.COLUMNS`)."""
        path = self.layout.list_file("parquet")
        if not path.is_file():
            raise StoreError(f"no lists in {self.path}: run `reelsim run INPUT --store {self.path}` first")
        return read_parquet_table(path)

    def features(self, item: str, *, level: str = "item") -> dict[str, np.ndarray]:
        """The stored embeddings of ``item``: modality -> float32 (D,) (``level="item"``) or (S, D) per shot.

        Raises :class:`UnknownItemError` when the store has no shard for ``item``.
        """
        return read_item_features(self.path, item, level=level)

    def run_report(self) -> dict:
        """``STORE/report.json`` of the last run."""
        try:
            return json.loads(self.layout.report.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StoreError(f"no report.json in {self.path}: no run has finished there") from None
        except (OSError, json.JSONDecodeError) as e:
            raise StoreError(f"cannot read {self.layout.report}: {e}") from e

    def rebuild_lists(self, fusion: FusionConfig | None = None, *, progress: bool = False) -> dict:
        """Rebuild the indexes and every list from the stored catalog (``reelsim lists``); a summary.

        Holds the store's lock meanwhile (:class:`~reelsim.storage.lock.StoreLockedError` when a run holds it).
        """
        self._lookups.clear()
        return relist(self.path, dataclasses.asdict(fusion) if fusion else None, progress=progress)


def open_store(path: str | os.PathLike) -> Store:
    """Open the store at ``path`` (:class:`StoreError` when it is not a reelsim store)."""
    layout = StoreLayout(path)
    if not layout.root.is_dir():
        raise StoreError(f"no store at {layout.root}: not a folder")
    if not (layout.shards_dir.is_dir() or layout.index_dir.is_dir()):
        raise StoreError(f"{layout.root} is not a reelsim store (no shards/ or index/ in it)")
    return Store(layout.root)


__all__ = ["Store", "UnknownItemError", "add", "open_store", "run"]
