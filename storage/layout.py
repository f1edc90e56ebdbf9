"""Where everything lives inside a store: the one place that spells out its paths.

A store is a folder::

    STORE/
      run.lock                         the lock of the run or command writing the store (storage/lock.py)
      report.json                      the last run's per-item status (jobs/runner.py)
      shards/<2 hex>/<32 hex>.h5       one HDF5 file per item (storage/shards.py); the name hashes the id
      index/catalog.h5                 the normalised per-modality item embeddings + weights (+ PCA)
      index/items.json                 id -> {kind, title}, for readable tables
      index/index.json                 manifest of the FAISS indexes, one per modality signature
      index/group-<code>-<build>.faiss one FAISS index per modality signature (similarity/grouped.py)
      index/lists-state.npz            per item: the score a new item must reach to enter its list
      index/lists-arrays/              the lists as .npy arrays (rows into the catalog), for `reelsim add`
      index/fused.faiss                the single exact index of stores written before grouped indexes
      index/copies/                    the copy index: region vectors (regions.faiss), their rows (rows.npz)
                                       and every copy found between two items (matches.parquet)
      lists/neighbors.parquet          one row per (item, neighbour); also .jsonl / .h5 when asked for
      lists/.knn-checkpoint/           finished batches of an unfinished kNN-graph job
      lists/<space>/                   lists of a learned space (learned, blend; docs/learning.md)
      learned/                         the trained model of ``reelsim train`` (tower, ELSA, provenance)
      .dask-scratch/                   a local Dask cluster's scratch space

Every module asks a :class:`StoreLayout` for these paths instead of joining
names itself, so the layout can change in one place.

Examples
--------
>>> layout = StoreLayout("out")
>>> layout.catalog.as_posix(), layout.list_file("jsonl").as_posix()
('out/index/catalog.h5', 'out/lists/neighbors.jsonl')
>>> layout.shard("trailer-042").parent.parent.as_posix()
'out/shards'
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from reelsim.config import LIST_FORMATS
from reelsim.errors import StoreError, UsageError

#: ``--lists-format`` value (:data:`reelsim.config.LIST_FORMATS`) -> file name under ``STORE/lists/``
LIST_FILES = dict(zip(LIST_FORMATS, ("neighbors.parquet", "neighbors.jsonl", "neighbors.h5"), strict=True))


def item_key(item_id: str) -> str:
    """Stable file-system-safe key for an item id: the first 32 hex characters of its sha256.

    Ids are data (any unicode, ``/``, ``..``), never paths: a shard's file
    name is this key, so no id can name a file outside the store.

    Examples
    --------
    >>> item_key("a")
    'ca978112ca1bbdcafac231b39a23dc4d'
    """
    return hashlib.sha256(item_id.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class StoreLayout:
    """The paths of one store (nothing is created or checked on construction).

    Parameters
    ----------
    root : str or PathLike
        The store folder (``--store``).
    """

    root: Path

    def __init__(self, root: str | os.PathLike):
        object.__setattr__(self, "root", Path(root))

    # -- items -------------------------------------------------------------
    @property
    def shards_dir(self) -> Path:
        return self.root / "shards"

    def shard(self, item_id: str) -> Path:
        """The HDF5 shard of ``item_id``: ``shards/<key[:2]>/<key>.h5`` (:func:`item_key`)."""
        key = item_key(item_id)
        return self.shards_dir / key[:2] / f"{key}.h5"

    def shard_files(self) -> list[Path]:
        """Every ``*.h5`` file under ``shards/``, sorted (complete or not)."""
        return sorted(self.shards_dir.glob("*/*.h5")) if self.shards_dir.is_dir() else []

    def shard_count(self) -> int:
        """How many ``*.h5`` files are under ``shards/`` (counted, not listed)."""
        return sum(1 for _ in self.shards_dir.glob("*/*.h5")) if self.shards_dir.is_dir() else 0

    def shard_temp_files(self) -> list[Path]:
        """Temporary files that killed shard writers left behind."""
        return sorted(self.shards_dir.glob("*/.*.tmp"))

    # -- run bookkeeping -----------------------------------------------------
    @property
    def lock(self) -> Path:
        return self.root / "run.lock"

    @property
    def report(self) -> Path:
        return self.root / "report.json"

    @property
    def scratch(self) -> Path:
        """A local Dask cluster's scratch space (kept inside the store)."""
        return self.root / ".dask-scratch"

    # -- index ---------------------------------------------------------------
    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def catalog(self) -> Path:
        """The normalised catalog embeddings (``storage/catalog.py``)."""
        return self.index_dir / "catalog.h5"

    @property
    def items_meta(self) -> Path:
        return self.index_dir / "items.json"

    @property
    def lists_state(self) -> Path:
        return self.index_dir / "lists-state.npz"

    @property
    def list_arrays(self) -> Path:
        """The last lists as arrays (``I.npy``, ``S.npy``, ``cos-<modality>.npy``), read by ``reelsim add``."""
        return self.index_dir / "lists-arrays"

    @property
    def copies_dir(self) -> Path:
        """The copy index of ``reelsim matches`` (:mod:`reelsim.similarity.copies`)."""
        return self.index_dir / "copies"

    @property
    def copy_index(self) -> Path:
        """The FAISS index over every shot region vector of the catalog."""
        return self.copies_dir / "regions.faiss"

    @property
    def copy_rows(self) -> Path:
        """What each row of the copy index is (item, shot, region kind) and each item's shot times."""
        return self.copies_dir / "rows.npz"

    @property
    def copy_table(self) -> Path:
        """Every copy found between two items of the catalog, with the time spans in both (Parquet)."""
        return self.copies_dir / "matches.parquet"

    @property
    def legacy_index(self) -> Path:
        """The single fused exact index of stores written before grouped indexes."""
        return self.index_dir / "fused.faiss"

    # -- lists ---------------------------------------------------------------
    @property
    def lists_dir(self) -> Path:
        return self.root / "lists"

    def list_file(self, fmt: str = "parquet") -> Path:
        """The list file of format ``fmt`` (a key of :data:`LIST_FILES`)."""
        if fmt not in LIST_FILES:
            raise UsageError(f"unknown list format {fmt!r}; expected one of {', '.join(LIST_FILES)}")
        return self.lists_dir / LIST_FILES[fmt]

    @property
    def knn_checkpoint(self) -> Path:
        return self.lists_dir / ".knn-checkpoint"

    def space_lists_dir(self, space: str) -> Path:
        """The lists of a learned space (``learned``, ``blend``): ``lists/<space>/`` (docs/learning.md)."""
        return self.lists_dir / space

    # -- learned model ---------------------------------------------------------
    @property
    def learned_dir(self) -> Path:
        """The trained model (``reelsim train``): tower, ELSA embeddings, provenance."""
        return self.root / "learned"

    # -- checks --------------------------------------------------------------
    def check_root(self) -> None:
        """:class:`StoreError` when the store's path exists but is not a folder."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"the store path {self.root} is a file, not a folder")

    def make_root(self) -> Path:
        """Create the store folder (and its parents) if needed; :class:`StoreError` naming why it cannot be."""
        self.check_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot write to store {self.root}: cannot create it ({e.strerror})") from None
        return self.root

    def require_catalog(self) -> Path:
        """The catalog path; :class:`StoreError` telling how to make one when it is missing."""
        self.check_root()
        if not self.catalog.is_file():
            raise StoreError(f"no index in {self.root}: run `reelsim run INPUT --store {self.root}` first")
        return self.catalog
